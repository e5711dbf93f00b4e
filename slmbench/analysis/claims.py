"""Claims: each one a question, comparisons that decide it (one knob changed between arms), and a computed verdict.

A suite's `claims:` list names, per comparison, a metric and two arms (row selectors): `a`, the side the claim
favours, and `b`, what it is compared with (or a fixed `threshold`). The decision rule, stated in every report:

    effect d = mean(a) - mean(b), signed so that d > 0 favours the claim (relative: divided by |mean(b)|)
    se(d)    = sqrt(se_a² + se_b²); se of an arm = the spread of its rows over seeds/settings (k ≥ 2 rows), and
               never less than the rows' own stderr (evaluation / timing noise) / √k
    test better:    supported  if d - 1.96·se > 0 and every a row beats every b row (seeds agree)
                    refuted    if d + 1.96·se < 0
    test not_worse: supported  if d - 1.96·se ≥ -margin  (a is at most `margin` worse than b)
                    refuted    if d + 1.96·se < -margin
    otherwise inconclusive. A claim is supported when all its primary comparisons are, refuted when any is.
With 2 seeds per arm the seed spread rests on one degree of freedom and the normal quantile makes the interval
optimistic; the "every a row beats every b row" gate is the guard (by chance alone: 1 in 6 for 2 vs 2).

Rows come from the store (`slmbench run`), plus derived `cost` rows from slmbench.analysis.cost (C8: $ per 1M tokens,
$ per correct answer, battery) so that money and battery are decided by the same rule."""
from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, field

import pandas as pd

from ..plan import Claim, Comparison, Plot, Select, check_claims  # noqa: F401  (the schema)
from ..plan import parse_claims as parse  # noqa: F401

Z = 1.959964


# --- evidence ---------------------------------------------------------------------------------------------------

def _get(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _match(d: dict, want: dict) -> bool:
    """Every wanted key (dotted for nested params, e.g. draft.name) has the wanted value."""
    return all(_get(d, k) == v for k, v in want.items())


def select(df: pd.DataFrame, metric: str, s: Select) -> pd.DataFrame:
    if df.empty:
        return df
    m = (df["metric"] == metric) & (df["status"] == "ok") & df["value"].notna()
    globs = [s.model] if isinstance(s.model, str) else s.model
    m &= df["model"].map(lambda x: any(fnmatch.fnmatchcase(str(x), g) for g in globs))
    if s.scenario:
        m &= df["scenario"] == s.scenario
    if s.device:
        m &= df["device"].map(lambda x: fnmatch.fnmatchcase(str(x), s.device))
    for col, want in (("params", s.params), ("labels", s.labels), ("variant", s.variant)):
        if want:
            m &= df[col].map(lambda x: _match(json.loads(x or "{}"), want))
    return df[m]


def _se_row(r) -> float:
    sp, kind = r.get("spread"), r.get("spread_kind")
    if sp is None or pd.isna(sp):
        return 0.0
    return float(sp) if kind == "stderr" else float(sp) / Z  # CI / range half-widths: as if 95%


@dataclass
class Arm:
    rows: pd.DataFrame
    mean: float | None = None
    se: float = 0.0
    values: list[float] = field(default_factory=list)

    @classmethod
    def of(cls, df: pd.DataFrame, metric: str, s: Select) -> "Arm":
        rows = select(df, metric, s)
        if rows.empty:
            return cls(rows)
        if s.reduce != "rows":
            best = rows["value"].idxmax() if (s.reduce == "max") else rows["value"].idxmin()
            rows = rows.loc[[best]]
        vals = [float(v) for v in rows["value"]]
        k = len(vals)
        mean = sum(vals) / k
        between = math.sqrt(sum((v - mean) ** 2 for v in vals) / (k - 1) / k) if k > 1 else 0.0
        within = math.sqrt(sum(_se_row(r) ** 2 for _, r in rows.iterrows()) / k) / math.sqrt(k)
        return cls(rows, mean, max(between, within), vals)


@dataclass
class Result:
    cmp: Comparison
    a: Arm
    b: Arm | None
    effect: float | None = None
    lo: float | None = None
    hi: float | None = None
    verdict: str = "inconclusive"
    why: str = ""


def decide(cmp: Comparison, df: pd.DataFrame) -> Result:
    hib = cmp.better == "higher"
    sign = 1.0 if hib else -1.0
    a = Arm.of(df, cmp.metric, cmp.a)
    b = Arm.of(df, cmp.metric, cmp.b) if cmp.b else None
    if a.mean is None or (b is not None and b.mean is None):
        missing = "a" if a.mean is None else "b"
        return Result(cmp, a, b, why=f"no rows for arm {missing} (not run, failed, or unsupported here)")
    ref = b.mean if b is not None else cmp.threshold
    se = math.sqrt(a.se ** 2 + (b.se ** 2 if b is not None else 0.0))
    d = sign * (a.mean - ref)
    if cmp.relative:
        if not ref:
            return Result(cmp, a, b, why="relative effect with a zero reference")
        d, se = d / abs(ref), se / abs(ref)
    lo, hi = d - Z * se, d + Z * se
    floor = -cmp.margin if cmp.test == "not_worse" else 0.0
    clears = lo >= floor if cmp.test == "not_worse" else lo > floor  # not_worse: equal is not worse
    seeds_agree = True
    if cmp.test == "better" and b is not None and len(a.values) > 1 and len(b.values) > 1:
        seeds_agree = min(sign * x for x in a.values) > max(sign * y for y in b.values)
    if clears and seeds_agree:
        v, why = "supported", f"95% CI of the effect [{lo:+.4g}, {hi:+.4g}] lies above {floor:+.4g}"
    elif hi < floor:
        v, why = "refuted", f"95% CI of the effect [{lo:+.4g}, {hi:+.4g}] lies below {floor:+.4g}"
    elif clears:
        v, why = "inconclusive", "the CI clears the bar but the seeds disagree (not every a row beats every b row)"
    else:
        v, why = "inconclusive", f"95% CI of the effect [{lo:+.4g}, {hi:+.4g}] contains {floor:+.4g}"
    src = sorted(set(a.rows["source"]) | (set(b.rows["source"]) if b is not None else set()))
    if any(x != "measured" for x in src):
        why += f" — from {'/'.join(src)} figures, whose own error is not in the interval"
    return Result(cmp, a, b, d, lo, hi, v, why)


def claim_verdict(results: list[Result]) -> str:
    prim = [r.verdict for r in results if r.cmp.primary] or [r.verdict for r in results]
    if "refuted" in prim:
        return "refuted"
    return "supported" if all(v == "supported" for v in prim) else "inconclusive"


def cost_rows(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None) -> pd.DataFrame:
    """C8's money and battery figures (slmbench.analysis.cost) as rows: model = MODEL/VARIANT@DEVICE, scenario = cost.
    `infos`, `manifest`: the run's job info and manifest (threads, bytes per token), as cost.build takes them."""
    from .cost import build
    if df.empty or not (df["scenario"] == "latency").any():
        return df.iloc[0:0]
    ct = build(df, infos=infos, manifest=manifest)
    out = []
    for r in ct.rows:
        name = f"{r['model']}/{r['variant']}@{r['device']}"
        for metric, unit in (("api_usd_per_m", "$/1M tok"), ("total_usd_per_m", "$/1M tok"),
                             ("electricity_usd_per_m", "$/1M tok"), ("hardware_usd_per_m", "$/1M tok"),
                             ("usd_per_correct", "$/answer"), ("usd_per_answer", "$/answer"),
                             ("j_per_token", "J/token"), ("battery_pct_per_1k", "%/1k tok"),
                             ("decode_tok_s", "tok/s"), ("quality", "fraction")):
            v = r.get(metric)
            if (metric == "usd_per_correct" and v is None and r.get("usd_per_correct_is_bound")
                    and r["kind"].startswith("cloud")):  # conservative only on the cloud side (accuracy ≤ 1)
                v = r.get("usd_per_answer")  # accuracy not measured: a lower bound (accuracy ≤ 1)
                metric_note = "lower bound: cost per answer (accuracy not measured)"
            else:
                metric_note = ""
            if v is None:
                continue
            out.append({"run_id": df["run_id"].iloc[0], "job_id": "", "model": name, "variant": "{}",
                        "device": r["device"], "scenario": "cost", "params": "{}",
                        "labels": json.dumps({"kind": r["kind"]}), "metric": metric, "value": float(v), "unit": unit,
                        "n": 1, "spread": None, "spread_kind": None, "status": "ok",
                        "source": r["source"],
                        "note": metric_note or f"slmbench.analysis.cost: {r['kind']}"})
    return pd.DataFrame(out)


def with_cost_rows(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None) -> pd.DataFrame:
    extra = cost_rows(df, infos, manifest)
    return pd.concat([df, extra], ignore_index=True) if len(extra) else df


def evaluate(claims: list[Claim], df: pd.DataFrame, add_cost: bool = True, infos: dict | None = None,
             manifest: dict | None = None) -> list[tuple[Claim, list[Result], str]]:
    full = with_cost_rows(df, infos, manifest) if add_cost else df
    out = []
    for c in claims:
        res = [decide(cmp, full) for cmp in c.comparisons]
        out.append((c, res, claim_verdict(res)))
    return out
