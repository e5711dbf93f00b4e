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
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError

Z = 1.959964


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Select(_Strict):
    """Rows of one arm. Every given field must match; `reduce` turns several rows into one value first."""
    model: str | list[str] = Field("*", description="model name glob(s) (cost rows: MODEL/VARIANT@DEVICE)")
    scenario: str | None = None
    device: str | None = Field(None, description="device name glob")
    params: dict[str, Any] = Field(default_factory=dict, description="job params that must match")
    labels: dict[str, Any] = Field(default_factory=dict, description="row labels that must match")
    variant: dict[str, Any] = Field(default_factory=dict, description="variant knobs that must match")
    reduce: Literal["rows", "min", "max"] = Field("rows", description="rows: each row is one unit (seeds); min/"
                                                                       "max: the best/worst row stands for the arm")


class Comparison(_Strict):
    metric: str
    a: Select
    b: Select | None = None
    threshold: float | None = Field(None, description="compare a with this fixed value instead of b")
    better: Literal["higher", "lower"]
    test: Literal["better", "not_worse"] = "better"
    margin: float = Field(0.0, ge=0, description="not_worse: how much worse a may be (metric units, or relative)")
    relative: bool = False
    primary: bool = True
    label: str = ""


class Plot(_Strict):
    metric: str
    x: str = Field(description="a job param on the x axis (e.g. depth, g)")
    select: Select = Field(default_factory=Select)
    series: str = Field("model", description="model, or a job param that names each line")
    also: str | None = Field(None, description="a second metric drawn dashed (e.g. the predicted speedup)")


class Claim(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str
    question: str
    framing: str = ""
    comparisons: list[Comparison] = Field(min_length=1)
    plot: Plot | None = None
    settings: str = Field("", description="the fixed settings in words (budgets, sizes)")


def parse(claims: list[dict], file: str = "", field: str = "claims") -> list[Claim]:
    out = []
    for i, c in enumerate(claims):
        try:
            cl = Claim.model_validate(c)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise UserError(err["msg"], file=file, field=f"{field}[{i}]" + (f".{loc}" if loc else ""))
        for j, cmp in enumerate(cl.comparisons):
            if (cmp.b is None) == (cmp.threshold is None):
                raise UserError("give exactly one of b and threshold", file=file,
                                field=f"{field}[{i}].comparisons[{j}]")
        out.append(cl)
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise UserError("duplicate claim id", file=file, field=field)
    return out


def check_claims(suite, file: str, models_required: bool = True) -> None:
    """At validate: the claims parse; every arm's scenario exists and its params are that scenario's (or a suite
    scenario's) parameters; every model glob matches a model of the suite (not in --quick, which may drop some)."""
    from .. import scenarios
    names = [m.name for m in suite.models]
    used = {s if isinstance(s, str) else s.name for s in suite.scenarios} | {"cost"}
    for i, c in enumerate(parse(suite.claims, file)):
        for j, cmp in enumerate(c.comparisons):
            for side, sel in (("a", cmp.a), ("b", cmp.b)):
                if sel is None:
                    continue
                where = f"claims[{i}].comparisons[{j}].{side}"
                if sel.scenario and sel.scenario not in used:
                    raise UserError(f"no scenario {sel.scenario!r} in this suite (has: {', '.join(sorted(used))})",
                                    file=file, field=f"{where}.scenario")
                fields = set()
                for sc in ([sel.scenario] if sel.scenario and sel.scenario != "cost" else used - {"cost"}):
                    fields |= set(scenarios.get(sc).params.model_fields)
                for k in sel.params:
                    if k.split(".")[0] not in fields:
                        raise UserError("not a parameter of the selected scenario(s)", file=file,
                                        field=f"{where}.params.{k}")
                if sel.scenario == "cost" or not models_required:
                    continue
                for g in [sel.model] if isinstance(sel.model, str) else sel.model:
                    if not any(fnmatch.fnmatchcase(n, g) for n in names):
                        raise UserError(f"model {g!r} matches no model of this suite", file=file,
                                        field=f"{where}.model")


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


def cost_rows(df: pd.DataFrame) -> pd.DataFrame:
    """C8's money and battery figures (slmbench.analysis.cost) as rows: model = MODEL/VARIANT@DEVICE, scenario = cost."""
    from .cost import build
    if df.empty or not (df["scenario"] == "latency").any():
        return df.iloc[0:0]
    ct = build(df)
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


def with_cost_rows(df: pd.DataFrame) -> pd.DataFrame:
    extra = cost_rows(df)
    return pd.concat([df, extra], ignore_index=True) if len(extra) else df


def evaluate(claims: list[Claim], df: pd.DataFrame, add_cost: bool = True) -> list[tuple[Claim, list[Result], str]]:
    full = with_cost_rows(df) if add_cost else df
    out = []
    for c in claims:
        res = [decide(cmp, full) for cmp in c.comparisons]
        out.append((c, res, claim_verdict(res)))
    return out
