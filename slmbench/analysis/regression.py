"""Regression verdicts: compare two runs metric by metric and confirm suspects from a rerun. Pure: rows in
(DataFrames as Store.rows(samples=True) returns them), dataclasses out; no store, no files, no processes.

Rule per metric (direction from the row, thresholds from slmbench.regression_rules, the suite's `regression:`
mapping, or the command line):
  - repeated metrics (raw samples kept): Mann-Whitney U on the raw samples of both runs, p < alpha, AND the median
    moved by at least `min_change` (relative) → regressed / improved by direction; a move below `min_change` is
    unchanged whatever p says (2-3% run-to-run drift on a shared machine is real but not a regression); a move
    beyond `min_change` without significance is inconclusive.
  - single values (n=1 or no samples kept: memory peaks, load time, ITL percentiles): no test is possible, so the
    relative change alone decides, with thresholds set from A/A runs. Flagged "single value" in the report.
  - tail latency (ITL p90/p99) is informational: beyond its threshold it is inconclusive, never regressed.
  - a job that ran in the base and failed in the new run is a regression of the metric `job`.
A suspect (a job with a regressed metric) executed once more confirms its regression only if the rerun regresses
too (`confirm`); the command line (slmbench.cli) orchestrates compare → rerun → confirm → publish.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field, replace

import pandas as pd

from ..regression_rules import (DEFAULT_RULES, Rule, default_rule, merge_rules, parse_rules,  # noqa: F401
                                parse_threshold_args, rule_for)
from ..stats import mann_whitney_p, min_mw_p, rel_change
from .rows import key_where

VERDICTS = ("regressed", "improved", "unchanged", "inconclusive")
INJECT = ("inject_decode_delay_ms", "inject_alloc_mb")  # test-only knobs: same variant, injected regression


def decide(base: list[float], new: list[float], higher_is_better: bool | None, rule: Rule
           ) -> tuple[str, float, float, str]:
    """(verdict, relative change of the median, p or nan, reason) for one metric."""
    mb, mn = statistics.median(base), statistics.median(new)
    rel = rel_change(mb, mn)
    if math.isnan(rel):
        return ("unchanged" if mb == mn else "inconclusive"), rel, math.nan, "base is zero"
    repeated = len(base) >= 2 and len(new) >= 2
    p = mann_whitney_p(base, new) if repeated else math.nan
    if abs(rel) < rule.min_change:
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
        return key_where(self.key)


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Adds `key`: equal for the same model variant, device, scenario, params, metric and labels across runs.
    Test-only inject_* knobs are dropped from the variant: an injected slowdown is the same variant, slower."""
    from ..plan import canonical
    df = df.copy()
    seen: dict[str, str] = {}  # a run has few distinct variants and many rows: canonicalise each once

    def var(v):
        if v not in seen:
            d = canonical(json.loads(v))  # a knob added later, at its default: the same variant as before it
            for k in INJECT:
                d.pop(k, None)
            seen[v] = json.dumps(d, sort_keys=True)
        return seen[v]
    df["key"] = [(m, var(v), d, s, p, me, lb) for m, v, d, s, p, me, lb in
                 zip(df["model"], df["variant"], df["device"], df["scenario"], df["params"], df["metric"],
                     df["labels"])]
    return df


def samples(r) -> list[float]:
    """A row's raw samples, else its value alone. Per-unit values (spread_kind `stderr_units`: per held-out sequence,
    per eval item, kept for paired claims) are not repetitions: such a row is a single value here."""
    if r.get("spread_kind") == "stderr_units":
        return [float(r["value"])]
    s = r.get("samples")
    if isinstance(s, str) and s:
        xs = [float(x) for x in json.loads(s) if x is not None]
        if xs:
            return xs
    return [float(r["value"])]


def direction(r, rule: Rule) -> bool | None:
    """higher_is_better: the rule's, else the row's, else unknown."""
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
        out.append(_verdict(bmap[k], r, rules))
    new_keys = set(new["key"])
    new_jobs = {kk[:5] for kk in new_keys}
    for k, br in bmap.items():  # metrics the new run lost while its job is ok
        if k not in new_keys and k[:5] in new_jobs:
            rule = rule_for(br["metric"], br["unit"], rules)
            out.append(Verdict(k, br["metric"], br["unit"], float(br["value"]), None, 0, 0, math.nan, math.nan,
                               "inconclusive", "missing in the new run", direction(br, rule), rule))
    return out


def _verdict(br: dict, r: dict, rules: dict[str, Rule]) -> Verdict:
    rule = rule_for(r["metric"], r["unit"], rules)
    bs, ns = samples(br), samples(r)
    hib = direction(r, rule)
    v, rel, p, why = decide(bs, ns, hib, rule)
    return Verdict(r["key"], r["metric"], r["unit"], float(br["value"]), float(r["value"]), len(bs), len(ns), rel,
                   p, v, why, hib, rule, r["job_id"], len(bs) < 2 or len(ns) < 2)


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
    trends: list = field(default_factory=list)  # [analysis.trends.Trend]

    @property
    def confirmed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.confirmed]

    def count(self, verdict: str) -> int:
        return sum(v.verdict == verdict for v in self.verdicts)


def compare(base_run: str, new_run: str, base_rows: pd.DataFrame, new_rows: pd.DataFrame, rules: dict[str, Rule],
            suites: tuple[str, str] = ("", ""), manifests: tuple[dict, dict] = ({}, {})) -> Comparison:
    """The verdicts of the new run against the base run, with notes on what makes them less comparable.
    `suites`, `manifests`: (base, new). Until a rerun says otherwise, every regression counts as confirmed."""
    vs = compare_frames(base_rows, new_rows, rules)
    notes = []
    if suites[0] != suites[1]:
        notes.append(f"the runs are of different suites ({suites[0]!r} vs {suites[1]!r}): only equal jobs are "
                     "compared")
    if not vs:
        notes.append("no comparable metrics: the runs share no model variant × device × scenario × params")
    inj = injected(new_rows)
    if inj:
        notes.append(f"the new run carries test-only injected regressions ({inj}); compared as the same variant")
    for v in vs:
        v.confirmed = v.verdict == "regressed"
    return Comparison(base_run, new_run, suites[1], manifests[0], manifests[1], vs, notes=notes)


def injected(df: pd.DataFrame) -> str:
    knobs = set()
    for v in df["variant"].dropna().unique():
        d = json.loads(v)
        knobs |= {f"{k}={d[k]:g}" for k in INJECT if d.get(k)}
    return ", ".join(sorted(knobs))


def suspects(cmp: Comparison) -> list[str]:
    """The new run's jobs with a regressed metric: what a rerun executes again."""
    return sorted({v.job_id for v in cmp.verdicts if v.verdict == "regressed" and v.job_id})


def confirm(cmp: Comparison, rerun_run: str, base_rows: pd.DataFrame, rerun_rows: pd.DataFrame,
            rules: dict[str, Rule]) -> None:
    """Each regression is confirmed only when the rerun, compared with the same base, regresses too."""
    cmp.rerun_run = rerun_run
    again = {v.key: v for v in compare_frames(base_rows, rerun_rows, rules)}
    rerun_jobs = {k[:5] for k in comparable(rerun_rows)["key"]}
    for v in cmp.verdicts:
        if v.verdict != "regressed":
            continue
        a = again.get(v.key)
        if a is None:  # job failed again: no metrics, so look for its `job` row
            a = next((x for x in again.values() if x.key[:5] == v.key[:5] and x.metric == "job"), None)
        if a is None and v.key[:5] in rerun_jobs:
            a = replace(v, verdict="unchanged", reason="the job succeeds on rerun", new=None)
        v.rerun = {"value": a.new, "rel": a.rel, "p": a.p, "verdict": a.verdict, "reason": a.reason} if a else None
        v.confirmed = bool(a and a.verdict == "regressed")
        if not v.confirmed:
            v.reason += "; not reproduced on rerun"


# --- confirmation by an interleaved A/B rerun ----------------------------------------------------------------------
# Run-to-run drift on a shared machine (whole runs 5-20% slower) swamps a 5% regression when two runs made at
# different times are compared. Re-running the base code (A) and the new code (B) alternately on the same machine,
# A B B A A B ..., puts each pair within seconds of each other: drift hits both members alike and cancels in the
# pair's ratio. The test is on those ratios: Wilcoxon's signed-rank test on the log-ratios (exact for the few pairs
# a confirmation runs; a rank test, so one disturbed pair moves it by one rank, not by its size) and the
# Hodges-Lehmann estimate of the typical ratio (median of the pairwise (Walsh) averages of the log-ratios).

def paired_ratio(a: list[float], b: list[float], alternative: str = "two-sided") -> tuple[float, float, int]:
    """(B/A typical ratio - 1 by Hodges-Lehmann, exact signed-rank p, pairs where B > A) for paired values a[i], b[i]
    measured back to back. alternative: two-sided, less (B below A) or greater."""
    from scipy import stats as st
    if len(a) != len(b):
        raise ValueError(f"paired samples need equal lengths ({len(a)} vs {len(b)})")
    d = [math.log(y / x) for x, y in zip(a, b) if x > 0 and y > 0]
    if not d:
        return math.nan, math.nan, 0
    walsh = [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]
    hl = math.expm1(statistics.median(walsh))
    nz = [x for x in d if x != 0]
    if len(nz) < 2:
        p = 1.0
    else:
        p = float(st.wilcoxon(nz, alternative=alternative, method="auto").pvalue)  # exact: n ≤ 50, no ties
    return hl, p, sum(x > 0 for x in d)


def min_signed_rank_p(n: int, one_sided: bool = False) -> float:
    """The smallest p the exact signed-rank test reaches with n pairs (all one sign): 2 / 2^n two-sided, 1 / 2^n
    one-sided. Below alpha or the confirmation can never fire (two-sided: 5 pairs 0.0625, 6 pairs 0.031)."""
    return (1 if one_sided else 2) / 2 ** n if n else 1.0


def decide_paired(a: list[float], b: list[float], higher_is_better: bool | None, rule: Rule,
                  one_sided: bool = False) -> tuple[str, float, float, str]:
    """(verdict, B/A - 1, p, reason) for interleaved pairs of one metric (A: base code, B: new code). Regressed or
    improved: p < alpha and the typical ratio moved by at least rule.min_change; below it unchanged; else
    inconclusive. one_sided: the test asks only whether B is worse (a confirmation of a suspected regression, a
    direction stated before the rerun); a better B is then never `improved`, only not confirmed."""
    alternative = "two-sided"
    if one_sided and higher_is_better is not None:
        alternative = "less" if higher_is_better else "greater"
    rel, p, up = paired_ratio(a, b, alternative)
    n = len(a)
    if math.isnan(rel):
        return "inconclusive", rel, p, "no positive values to pair"
    where = f"{n} interleaved pairs, B > A in {up}"
    if abs(rel) < rule.min_change:
        return "unchanged", rel, p, f"{where}; below the {rule.min_change * 100:g}% minimum paired change"
    if higher_is_better is None:
        return "inconclusive", rel, p, f"{where}; changed, but no direction is known for this metric"
    if min_signed_rank_p(n, alternative != "two-sided") >= rule.alpha:
        return "inconclusive", rel, p, f"{where}: too few pairs to reach p < {rule.alpha}"
    if not p < rule.alpha:
        return "inconclusive", rel, p, f"{where}; not significant (p = {p:.2g} ≥ {rule.alpha})"
    worse = (rel < 0) if higher_is_better else (rel > 0)
    test = "one-sided" if alternative != "two-sided" else "two-sided"
    return ("regressed" if worse else "improved"), rel, p, (f"{where}; {test} p = {p:.2g} < {rule.alpha}, paired "
                                                           f"change ≥ {rule.min_change * 100:g}%")


def confirm_paired(cmp: Comparison, pairs: dict[tuple, tuple[list[float], list[float]]], rules: dict[str, Rule],
                   label: str = "A/B") -> None:
    """Each regression is confirmed only when the interleaved A/B rerun of its job regresses too. `pairs`: verdict
    key → (A values, B values), one per round, from executors.interleave. A suspect without pairs is not
    confirmed (its job could not be rerun)."""
    from ..regression_rules import paired_rule
    cmp.rerun_run = cmp.rerun_run or label
    for v in cmp.verdicts:
        if v.verdict != "regressed":
            continue
        ab = pairs.get(v.key)
        if ab is None:
            v.rerun, v.confirmed = None, False
            v.reason += "; not rerun A/B (no pairs)"
            continue
        verdict, rel, p, why = decide_paired(ab[0], ab[1], v.higher_is_better, paired_rule(v.metric, v.unit, rules),
                                             one_sided=True)
        v.rerun = {"value": statistics.median(ab[1]), "rel": rel, "p": p, "verdict": verdict,
                   "reason": f"A/B: {why}"}
        v.confirmed = verdict == "regressed"
        if not v.confirmed:
            v.reason += f"; not reproduced A/B ({why})"


def ab_pairs(cmp: Comparison, per_job: dict) -> dict:
    """executors.interleave.rerun_ab's {job id: {(metric, labels json): (A, B)}} → {verdict key: (A, B)}."""
    out = {}
    for v in cmp.verdicts:
        for (name, labels), ab in (per_job.get(v.job_id) or {}).items():
            if name == v.metric and _labels(labels) == _labels(v.key[6]):
                out[v.key] = ab
    return out


def _labels(s) -> dict:
    if isinstance(s, dict):
        return s
    try:
        return json.loads(s) if s else {}
    except (TypeError, ValueError):
        return {}


def exit_code(cmp: Comparison) -> int:
    return 1 if cmp.confirmed else 0
