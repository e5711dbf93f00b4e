"""Regression verdicts: compare two runs metric by metric, confirm suspects by rerunning them, find steps in the
nightly series.

Rule per metric (direction from the row, thresholds from DEFAULT_RULES, the suite's `regression:` mapping, or the
command line):
  - repeated metrics (raw samples kept): Mann-Whitney U on the raw samples of both runs, p < alpha, AND the median
    moved by at least `min_change` (relative) → regressed / improved by direction; a move below `min_change` is
    unchanged whatever p says (2-3% run-to-run drift on a shared machine is real but not a regression); a move
    beyond `min_change` without significance is inconclusive.
  - single values (n=1 or no samples kept: memory peaks, load time, ITL percentiles): no test is possible, so the
    relative change alone decides, with thresholds set from A/A runs (memory is near-deterministic → tight; load
    time and tail latencies are noisy → loose). Flagged "single value" in the report.
  - tail latency (ITL p90/p99) is informational: beyond its threshold it is inconclusive, never regressed.
  - a job that ran in the base and failed in the new run is a regression of the metric `job`.
With --rerun-suspects, every job with a regressed metric is executed once more (a new run linked to the new one)
and a regression is confirmed only if the rerun regresses too.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..stats import change_points, mann_whitney_p, min_mw_p, rel_change

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")
INJECT = ("inject_decode_delay_ms", "inject_alloc_mb")  # test-only knobs: same variant, injected regression


@dataclass(frozen=True)
class Rule:
    min_change: float  # minimum relative change of the median to count
    alpha: float = 0.01  # significance level of the rank test (repeated metrics only)
    higher_is_better: bool | None = None  # None: from the result row
    gate: bool = True  # False: informational, a big move is "inconclusive", never "regressed"


# Defaults from 17 A/A runs of suites/nightly.yaml on the shared 2-core VM (reports/examples/regression/
# aa-detection.md). Largest change of a run's median between consecutive identical nights: decode 6.0%, ITL p50
# 6.0%, prefill 16%, TTFT 21% (whole runs slowed by other users' work), load 7.5%, peak memory 0.03%; ITL p99 moved
# up to 6x (two or three interrupts set the tail of ~250 gaps). Thresholds sit above the A/A maxima, except TTFT
# and prefill, where the rerun of suspects does the rest.
DEFAULT_ALPHA = 0.01
DEFAULT_RULES: dict[str, float] = {
    "decode_tok_s": 0.07, "decode_roofline_frac": 0.07, "itl_p50_ms": 0.07, "prefill_tok_s": 0.15, "ttft_ms": 0.15,
    "load_s": 0.20, "peak_mem_mb": 0.01, "load_peak_mem_mb": 0.01, "weights_mb": 0.005, "kv_bytes_per_token": 0.005,
    "prefill_j_per_token": 0.15, "decode_j_per_token": 0.07,
    "itl_p90_ms": 0.10, "itl_p99_ms": 0.25,
}
INFORMATIONAL = {"itl_p90_ms", "itl_p99_ms"}  # tail latency on a shared machine: reported, never a verdict
MEMORY_UNITS = ("MB", "GB", "B", "B/token", "bytes")


def default_rule(metric: str, unit: str) -> Rule:
    if metric in DEFAULT_RULES:
        return Rule(DEFAULT_RULES[metric], DEFAULT_ALPHA, gate=metric not in INFORMATIONAL)
    return Rule(0.02 if unit in MEMORY_UNITS else 0.05, DEFAULT_ALPHA)


def parse_rules(mapping: dict | None, src: str = "regression") -> dict[str, Rule]:
    """`{alpha: 0.01, metrics: {decode_tok_s: {min_change: 0.05, higher_is_better: true}, peak_mem_mb: 0.02}}`,
    as the suite's `regression:` mapping or from --threshold. Returns metric → Rule ("*" for the alpha default)."""
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise UserError("expected a mapping", field=src)
    unknown = set(mapping) - {"alpha", "metrics"}
    if unknown:
        raise UserError("unknown field", field=f"{src}.{sorted(unknown)[0]}")
    alpha = mapping.get("alpha", DEFAULT_ALPHA)
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise UserError("alpha must be a number in (0, 1)", field=f"{src}.alpha")
    out = {"*": Rule(math.nan, float(alpha))}
    for m, v in (mapping.get("metrics") or {}).items():
        v = {"min_change": v} if isinstance(v, (int, float)) else v
        if not isinstance(v, dict) or set(v) - {"min_change", "alpha", "higher_is_better", "gate"}:
            raise UserError("expected a number or {min_change, alpha, higher_is_better, gate}",
                            field=f"{src}.metrics.{m}")
        mc = v.get("min_change")
        if mc is not None and (not isinstance(mc, (int, float)) or not 0 <= mc < 10):
            raise UserError("min_change must be a relative change, e.g. 0.05 for 5%", field=f"{src}.metrics.{m}")
        out[m] = Rule(float(mc) if mc is not None else math.nan, float(v.get("alpha", alpha)),
                      v.get("higher_is_better"), bool(v.get("gate", m not in INFORMATIONAL)))
    return out


def parse_threshold_args(items: list[str] | None) -> dict:
    """--threshold decode_tok_s=0.03 --threshold alpha=0.005 → the `regression:` mapping."""
    out: dict = {"metrics": {}}
    for it in items or []:
        k, sep, v = it.partition("=")
        try:
            val = float(v)
        except ValueError:
            val = None
        if not sep or not k or val is None:
            raise UserError(f"expected METRIC=RELATIVE_CHANGE or alpha=P, got {it!r}", field="--threshold")
        if k == "alpha":
            out["alpha"] = val
        else:
            out["metrics"][k] = val
    return out


def suite_rules(suite_path: str | None) -> dict:
    """The optional `regression:` mapping of the suite file (read raw, so it works before the schema names it)."""
    if not suite_path or not Path(suite_path).is_file():
        return {}
    import yaml
    try:
        data = yaml.safe_load(Path(suite_path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return {}
    return (data or {}).get("regression") or {} if isinstance(data, dict) else {}


def merge_rules(*mappings: dict) -> dict[str, Rule]:
    """Later mappings win, metric by metric (suite file, then command line)."""
    merged: dict = {"metrics": {}}
    for m in mappings:
        if not m:
            continue
        if "alpha" in m:
            merged["alpha"] = m["alpha"]
        merged["metrics"].update(m.get("metrics") or {})
    return parse_rules(merged)


def rule_for(metric: str, unit: str, rules: dict[str, Rule]) -> Rule:
    base = default_rule(metric, unit)
    alpha = rules.get("*", Rule(math.nan)).alpha
    r = rules.get(metric)
    return Rule(r.min_change if r and not math.isnan(r.min_change) else base.min_change,
                r.alpha if r else alpha, r.higher_is_better if r else None, base.gate if r is None else r.gate)


# --- one metric ---------------------------------------------------------------------------------------------------
def decide(base: list[float], new: list[float], higher_is_better: bool | None, rule: Rule
           ) -> tuple[str, float, float, str]:
    """(verdict, relative change of the median, p or nan, reason) for one metric."""
    mb, mn = statistics.median(base), statistics.median(new)
    rel = rel_change(mb, mn)
    if math.isnan(rel):
        return ("unchanged" if mb == mn else "inconclusive"), rel, math.nan, "base is zero"
    repeated = len(base) >= 2 and len(new) >= 2
    p = mann_whitney_p(base, new) if repeated else math.nan
    big = abs(rel) >= rule.min_change
    if not big:
        sig = repeated and p < rule.alpha
        return "unchanged", rel, p, (f"below the {rule.min_change * 100:g}% minimum change"
                                     + (" (significant but small)" if sig else ""))
    if higher_is_better is None:
        return "inconclusive", rel, p, "changed, but no direction is known for this metric"
    if not rule.gate:
        return "inconclusive", rel, p, "informational only: too noisy here to decide (see the A/A data)"
    if repeated:
        if min_mw_p(len(base), len(new)) >= rule.alpha:
            return "inconclusive", rel, p, f"too few samples ({len(base)} vs {len(new)}) to reach p < {rule.alpha}"
        if not p < rule.alpha:
            return "inconclusive", rel, p, f"not significant (p = {p:.2g} ≥ {rule.alpha})"
        why = f"p = {p:.2g} < {rule.alpha}, change ≥ {rule.min_change * 100:g}%"
    else:
        why = f"single value: change ≥ {rule.min_change * 100:g}% (no test possible)"
    worse = (rel < 0) if higher_is_better else (rel > 0)
    return ("regressed" if worse else "improved"), rel, p, why


@dataclass
class Verdict:
    key: tuple  # (model, variant, device, scenario, params, metric, labels) with test-only knobs removed
    metric: str
    unit: str
    base: float | None
    new: float | None
    n_base: int
    n_new: int
    rel: float
    p: float
    verdict: str
    reason: str
    higher_is_better: bool | None
    rule: Rule
    job_id: str = ""  # the new run's job, for reruns
    single: bool = False
    rerun: dict | None = None  # {value, rel, p, verdict, reason} from the rerun
    confirmed: bool = False

    @property
    def where(self) -> str:
        model, variant, device, scenario, params, _, labels = self.key
        ps = ",".join(f"{k}={v}" for k, v in json.loads(params).items() if not isinstance(v, (list, dict)))
        lb = ",".join(f"{k}={v}" for k, v in json.loads(labels).items())
        var = _variant_name(variant)
        return f"{model}[{var}] @{device} {scenario}" + (f"({ps})" if ps else "") + (f" {{{lb}}}" if lb else "")


def _variant_name(variant_json: str) -> str:
    from ..report.tables import variant_name  # reading rows, not measuring: the table's short variant name
    return variant_name(variant_json)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `key`: equal for the same model variant, device, scenario, params, metric and labels across runs.
    Test-only inject_* knobs are dropped from the variant: an injected slowdown is the same variant, slower."""
    df = df.copy()

    from ..plan import LATER_FIELDS, Variant

    def var(v):
        d = json.loads(v)
        for k in INJECT:
            d.pop(k, None)
        for k in LATER_FIELDS & set(d):  # a knob added later, at its default: the same variant as before it
            if d[k] == Variant.model_fields[k].default:
                d.pop(k)
        return json.dumps(d, sort_keys=True)
    df["key"] = [(m, var(v), d, s, p, me, lb) for m, v, d, s, p, me, lb in
                 zip(df["model"], df["variant"], df["device"], df["scenario"], df["params"], df["metric"],
                     df["labels"])]
    return df


def _samples(r) -> list[float]:
    s = r.get("samples")
    if isinstance(s, str) and s:
        xs = [float(x) for x in json.loads(s) if x is not None]
        if xs:
            return xs
    return [float(r["value"])]


def _hib(r, rule: Rule) -> bool | None:
    if rule.higher_is_better is not None:
        return rule.higher_is_better
    h = r.get("higher_is_better")
    return None if h is None or (isinstance(h, float) and math.isnan(h)) else bool(h)


def compare_frames(base: pd.DataFrame, new: pd.DataFrame, rules: dict[str, Rule]) -> list[Verdict]:
    """Every comparable metric of the new run against the base run (rows as from Store.rows(samples=True))."""
    base, new = comparable(base), comparable(new)
    b_ok = base[(base["status"] == "ok") & base["value"].notna()]
    bmap = {k: r for k, r in zip(b_ok["key"], b_ok.to_dict("records"))}
    b_jobs = {k[:5] for k in bmap}
    out: list[Verdict] = []
    for r in new.to_dict("records"):
        k = r["key"]
        if r["status"] != "ok":  # a job that worked and now fails is a regression of the whole job
            if k[:5] in b_jobs:
                out.append(Verdict((*k[:5], "job", "{}"), "job", "", None, None, 0, 0, math.nan, math.nan,
                                   "regressed", f"job {r['status']} (was ok): {str(r.get('error'))[:200]}", None,
                                   Rule(0.0), r["job_id"]))
            continue
        if k not in bmap or r["value"] is None or pd.isna(r["value"]):
            continue  # a metric the base did not have: nothing to compare
        br = bmap[k]
        rule = rule_for(r["metric"], r["unit"], rules)
        bs, ns = _samples(br), _samples(r)
        hib = _hib(r, rule)
        v, rel, p, why = decide(bs, ns, hib, rule)
        single = len(bs) < 2 or len(ns) < 2
        out.append(Verdict(k, r["metric"], r["unit"], float(br["value"]), float(r["value"]), len(bs), len(ns), rel,
                           p, v, why, hib, rule, r["job_id"], single))
    new_keys = set(new["key"])
    for k, br in bmap.items():  # metrics the new run lost while its job is ok
        if k not in new_keys and k[:5] in {kk[:5] for kk in new_keys}:
            rule = rule_for(br["metric"], br["unit"], rules)
            out.append(Verdict(k, br["metric"], br["unit"], float(br["value"]), None, 0, 0, math.nan, math.nan,
                               "inconclusive", "missing in the new run", _hib(br, rule), rule))
    return out


# --- runs ---------------------------------------------------------------------------------------------------------
def _runs(store) -> pd.DataFrame:
    return pd.read_sql_query("SELECT run_id, suite, suite_path, created, status FROM runs ORDER BY created", store.db)


def resolve(store, ref: str, suite: str | None = None, before: str | None = None, field: str = "BASE") -> str:
    """A run id, `last` (latest run) or `prev` (the one before last); with `before`, both mean the latest run
    before that one (so `compare prev last` and `run --baseline last` pick the previous night),
    restricted to `suite` when given. Rerun runs (suite `X~rerun`) are never picked by name."""
    runs = _runs(store)
    runs = runs[~runs["suite"].str.endswith("~rerun", na=False)]
    if ref not in ("last", "prev"):
        if ref not in set(_runs(store)["run_id"]):
            raise UserError(f"no run {ref!r} in the store", file=str(store.path), field=field)
        return ref
    if suite:
        runs = runs[runs["suite"] == suite]
    if before:
        created = store.db.execute("SELECT created FROM runs WHERE run_id=?", (before,)).fetchone()[0]
        runs = runs[runs["created"] < created]
    ids = list(runs["run_id"])
    need = 1 if ref == "last" or before else 2  # before NEW, last and prev are the same run
    if len(ids) < need:
        what = f"suite {suite!r}" if suite else "the store"
        raise UserError(f"no {'earlier ' if before else ''}run of {what} to use as {ref!r}", file=str(store.path),
                        field=field)
    return ids[-need]


def _suite_of(store, run_id: str) -> tuple[str, str]:
    r = store.db.execute("SELECT suite, suite_path FROM runs WHERE run_id=?", (run_id,)).fetchone()
    return (r[0], r[1]) if r else ("", "")


@dataclass
class Comparison:
    base_run: str
    new_run: str
    suite: str
    base_manifest: dict
    new_manifest: dict
    verdicts: list[Verdict]
    rerun_run: str | None = None
    notes: list[str] = field(default_factory=list)
    trends: list = field(default_factory=list)  # [Trend]

    @property
    def confirmed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.confirmed]

    def count(self, verdict: str) -> int:
        return sum(v.verdict == verdict for v in self.verdicts)


def compare_runs(store, base: str, new: str, thresholds: dict | None = None, rerun_suspects: bool = False,
                 out: Path | None = None, trends: bool = True, console=None) -> Comparison:
    suite, suite_path = _suite_of(store, new)
    bsuite, _ = _suite_of(store, base)
    rules = merge_rules(suite_rules(suite_path), thresholds or {})
    vs = compare_frames(store.rows(base, samples=True), store.rows(new, samples=True), rules)
    notes = []
    if bsuite != suite:
        notes.append(f"the runs are of different suites ({bsuite!r} vs {suite!r}): only equal jobs are compared")
    if not vs:
        notes.append("no comparable metrics: the runs share no model variant × device × scenario × params")
    inj = _injected(store.rows(new))
    if inj:
        notes.append(f"the new run carries test-only injected regressions ({inj}); compared as the same variant")
    for v in vs:
        v.confirmed = v.verdict == "regressed"
    cmp = Comparison(base, new, suite, store.manifest(base), store.manifest(new), vs, notes=notes)
    if rerun_suspects and any(v.verdict == "regressed" for v in vs):
        rerun(store, cmp, rules, out or store.path.parent, console)
    if trends and suite:
        cmp.trends = trend_report(store, suite, rules, upto=new)
    return cmp


def _injected(df: pd.DataFrame) -> str:
    knobs = set()
    for v in df["variant"].dropna().unique():
        d = json.loads(v)
        knobs |= {f"{k}={d[k]:g}" for k in INJECT if d.get(k)}
    return ", ".join(sorted(knobs))


def rerun(store, cmp: Comparison, rules: dict[str, Rule], out: Path, console=None) -> None:
    """Execute each job with a regressed metric once more, as its own run `<new>-rerun` (suite `X~rerun`, manifest
    `rerun_of`), and confirm a regression only when the rerun, compared with the same base, regresses too.
    Jobs are re-executed from their stored specs through the local executor: exactly the same job, one process
    each, with no need for a filtered suite file."""
    import time
    from .. import manifest as mf
    from ..executors.local import run_job_process
    from ..plan import Job
    suspects = sorted({v.job_id for v in cmp.verdicts if v.verdict == "regressed" and v.job_id})
    rid = f"{cmp.new_run}-rerun"
    done = store.done_jobs(rid)  # a report rendered again reuses the rerun already made
    if set(suspects) - done:
        man = {**mf.build(cmp.new_manifest.get("seed", 0), cmp.new_manifest.get("threads")), "rerun_of": cmp.new_run}
        store.start_run(rid, f"{cmp.suite}~rerun", "", "", man)
    for jid in (j for j in suspects if j not in done):
        row = store.db.execute("SELECT spec, label FROM jobs WHERE run_id=? AND job_id=?",
                               (cmp.new_run, jid)).fetchone()
        if not row:
            continue
        job = Job.from_json(json.loads(row[0]))
        if console:
            console.print(f"rerunning suspect: {row[1]}")
        started = time.time()
        status, error, metrics, info = run_job_process(job, out / "logs" / rid)
        store.record_job(rid, job, status, error, metrics, started, info)
    if set(suspects) - done:
        store.finish_run(rid, "finished")
    cmp.rerun_run = rid
    again = {v.key: v for v in compare_frames(store.rows(cmp.base_run, samples=True), store.rows(rid, samples=True),
                                              rules)}
    rows = comparable(store.rows(rid))
    for v in cmp.verdicts:
        if v.verdict != "regressed":
            continue
        a = again.get(v.key)
        if a is None:  # job failed again: no metrics, so look for its `job` row
            a = next((x for x in again.values() if x.key[:5] == v.key[:5] and x.metric == "job"), None)
        if a is None and v.key[:5] in {k[:5] for k in rows["key"]}:
            a = replace(v, verdict="unchanged", reason="the job succeeds on rerun", new=None)
        v.rerun = {"value": a.new, "rel": a.rel, "p": a.p, "verdict": a.verdict, "reason": a.reason} if a else None
        v.confirmed = bool(a and a.verdict == "regressed")
        if not v.confirmed:
            v.reason += "; not reproduced on rerun"


def exit_code(cmp: Comparison) -> int:
    return 1 if cmp.confirmed else 0


# --- trends over nights -----------------------------------------------------------------------------------------
@dataclass
class Step:
    run_id: str  # first night after the step
    created: float
    before: float
    after: float
    rel: float
    p: float
    verdict: str  # regressed | improved
    commits: tuple[str | None, str | None]  # last commit before, first commit with the step
    nights_after: int


@dataclass
class Trend:
    key: tuple
    metric: str
    unit: str
    higher_is_better: bool | None
    runs: list[str]
    created: list[float]
    values: list[float]  # per-night median
    spread: list[float]
    steps: list[Step]
    gate: bool = True  # False: an informational metric (its steps are shown, not reported)

    @property
    def where(self) -> str:
        return Verdict(self.key, self.metric, self.unit, None, None, 0, 0, 0, 0, "", "", None, Rule(0)).where


def trend_report(store, suite: str, rules: dict[str, Rule], upto: str | None = None, last: int = 60) -> list[Trend]:
    """The nightly series of every metric of a suite (finished runs, oldest first, up to `upto`), with steps."""
    runs = _runs(store)
    runs = runs[(runs["suite"] == suite) & (runs["status"] == "finished")]
    if upto and upto in set(runs["run_id"]):
        runs = runs[runs["created"] <= float(runs.loc[runs["run_id"] == upto, "created"].iloc[0])]
    runs = runs.tail(last)
    if len(runs) < 2:
        return []
    ids = list(runs["run_id"])
    q = (f"SELECT run_id, model, variant, device, scenario, params, metric, labels, value, unit, spread, samples, "
         f"higher_is_better, status FROM results WHERE run_id IN ({','.join('?' * len(ids))})")
    df = pd.read_sql_query(q, store.db, params=ids)
    df = comparable(df[(df["status"] == "ok") & df["value"].notna()])
    df = df[~df[["run_id", "key"]].astype(str).duplicated()]  # one value per night and key
    created = dict(zip(runs["run_id"], runs["created"]))
    commits = {rid: ((store.manifest(rid).get("git") or {}).get("commit")) for rid in ids}
    out = []
    for key, g in df.groupby("key", sort=False):
        g = g.set_index("run_id")
        present = [r for r in ids if r in g.index]
        if len(present) < 2:
            continue
        first = g.loc[present[0]]
        rule = rule_for(first["metric"], first["unit"], rules)
        hib = _hib(first, rule)
        nights = [_samples(g.loc[r]) for r in present]
        steps = []
        for k, before, after, p in change_points(nights, rule.min_change, rule.alpha):
            rel = rel_change(before, after)
            worse = None if hib is None else ((rel < 0) if hib else (rel > 0))
            steps.append(Step(present[k], created[present[k]], before, after, rel, p,
                              "changed" if worse is None else ("regressed" if worse else "improved"),
                              (commits.get(present[k - 1]), commits.get(present[k])), len(present) - k))
        out.append(Trend(key, first["metric"], first["unit"], hib, present, [created[r] for r in present],
                         [float(g.loc[r, "value"]) for r in present],
                         [float(g.loc[r, "spread"]) if pd.notna(g.loc[r, "spread"]) else 0.0 for r in present],
                         steps, rule.gate))
    return out


# --- command line ---------------------------------------------------------------------------------------------------
def check_ref(store, ref: str | None, field: str) -> None:
    """Bad input is reported before a run starts, not after it."""
    if ref and ref not in ("last", "prev") and store.db.execute("SELECT 1 FROM runs WHERE run_id=?",
                                                                (ref,)).fetchone() is None:
        raise UserError(f"no run {ref!r} in the store", file=str(store.path), field=field)


def report(store, base: str, new: str, thresholds: list[str] | None, rerun_suspects: bool, out: Path,
           md: str | None, html_path: str | None, console, md_stdout: bool = True) -> int:
    """Compare, write the Markdown and HTML reports, print a summary; the exit code (1: regression confirmed)."""
    import sys
    from ..report import regression as rr
    cmp = compare_runs(store, base, new, parse_threshold_args(thresholds), rerun_suspects, out, console=console)
    text = rr.to_markdown(cmp)
    if md:
        Path(md).parent.mkdir(parents=True, exist_ok=True)
        Path(md).write_text(text, encoding="utf-8")
    elif md_stdout:
        sys.stdout.write(text + "\n")
    if html_path:
        Path(html_path).parent.mkdir(parents=True, exist_ok=True)
        Path(html_path).write_text(rr.to_html(cmp), encoding="utf-8")
    for line in rr.to_text(cmp):
        console.print(line, markup=False, highlight=False)
    for p in (md, html_path):
        if p:
            console.print(f"wrote {p}", markup=False)
    return exit_code(cmp)


def after_run(store, run_id: str, baseline: str, thresholds, rerun_suspects: bool, out: Path, md, html_path,
              console) -> int:
    """`slmbench run SUITE --baseline BASE|last`: compare the finished run with its baseline."""
    suite, _ = _suite_of(store, run_id)
    try:
        base = resolve(store, baseline, suite=suite, before=run_id, field="--baseline")
    except UserError as e:
        if baseline in ("last", "prev"):  # the first night has nothing to compare with: not an error
            console.print(f"no baseline: {e.message}", markup=False)
            return 0
        raise
    console.print(f"comparing with baseline {base}", markup=False)
    return report(store, base, run_id, thresholds, rerun_suspects, out, md, html_path, console, md_stdout=False)
