"""Claims: each one a question, comparisons that decide it (one knob changed between arms), and a computed verdict.

A suite's `claims:` list names, per comparison, a metric and two arms (row selectors): `a`, the side the claim
favours, and `b`, what it is compared with (or a fixed `threshold`). The decision rule, stated in every report:

    effect d = mean(a) - mean(b), signed so that d > 0 favours the claim (relative: divided by |mean(b)|)
    paired   where every row of both arms carries per-unit values over the same units (held-out sequences, eval
             items: spread_kind `stderr_units`, same unit fingerprint): d_i = per-unit difference of the arms'
             seed means, se_units = sd(d_i)/sqrt(n); plus the seed spread of each arm, s²/k (k ≥ 2 rows)
    unpaired otherwise: se of an arm = the spread of its rows over seeds (k ≥ 2), never less than the rows' own
             stderr / sqrt(k)
    interval d ± t(0.975, df)·se, df by Welch-Satterthwaite over the parts (n-1 for units, k-1 for seeds)
    MDE      (t(0.975, df) + t(0.80, df))·se: the smallest true effect this comparison finds with 80% power
    better:    supported if the CI lies above 0 and every a row beats every b row (k ≥ 2 each);
               refuted   if the CI lies below 0 and every b row beats every a row — the same standard
    not_worse: supported if the CI lies above -margin; refuted if it lies below -margin
    fewer rows than the comparison's `min_rows` (seeds) in either arm: inconclusive, whatever the CI
    otherwise inconclusive. A claim is supported when all its primary comparisons are, refuted when any is.

Rows come from the store (`slmbench run`), plus derived `cost` rows from slmbench.analysis.cost (C8: $ per 1M tokens,
$ per correct answer, battery) so that money and battery are decided by the same rule. A cost comparison is also
decided at each end of the stated range of every assumption it rests on (suite/claim `assumptions`, cost.RANGES);
if the verdict changes there, it is labelled "by assumption": the assumption decides it, not the measurement."""
from __future__ import annotations

import fnmatch
import json
import math
import re
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
    return float(sp) if kind in ("stderr", UNITS) else float(sp) / Z  # CI / range half-widths: as if 95%


UNITS = "stderr_units"  # spread_kind of a row whose samples are per-unit values (sequences, items) of a named set
_FP = re.compile(r"units=([0-9a-f]{6,64})")


def _units(r) -> tuple[str, list[float]] | None:
    """(unit-set fingerprint, per-unit values) of a row that carries them, else None."""
    if r.get("spread_kind") != UNITS or not isinstance(r.get("samples"), str):
        return None
    m = _FP.search(str(r.get("note") or ""))
    vals = json.loads(r["samples"])
    return (m.group(1), [float(v) for v in vals]) if m and isinstance(vals, list) and len(vals) > 1 else None


def _tq(p: float, df: float) -> float:
    from scipy import stats as st
    return float(st.norm.ppf(p)) if not math.isfinite(df) or df > 1e6 else float(st.t.ppf(p, max(df, 1.0)))


def _welch(parts: list[tuple[float, float]]) -> tuple[float, float]:
    """se and Welch-Satterthwaite df from (variance of the mean, its df) parts; df inf for a known variance."""
    var = sum(v for v, _ in parts)
    den = sum(v * v / d for v, d in parts if math.isfinite(d) and d > 0 and v > 0)
    return math.sqrt(var), (var * var / den if den > 0 else math.inf)


@dataclass
class Arm:
    rows: pd.DataFrame
    mean: float | None = None
    se: float = 0.0
    values: list[float] = field(default_factory=list)
    df: float = math.inf  # degrees of freedom of se (k - 1 when the seed spread sets it)
    units: list[tuple[str, list[float]] | None] = field(default_factory=list)

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
        units = [_units(r) for _, r in rows.iterrows()]
        return cls(rows, mean, max(between, within), vals, k - 1 if between >= within and k > 1 else math.inf,
                   units)

    @property
    def seed_var(self) -> tuple[float, float]:
        """(variance of the arm's mean over its rows, df): the seed part of a paired comparison."""
        k = len(self.values)
        if k < 2:
            return 0.0, math.inf
        m = sum(self.values) / k
        return sum((v - m) ** 2 for v in self.values) / (k - 1) / k, k - 1


def _paired(a: Arm, b: Arm) -> tuple[list[float], list[float], str] | None:
    """Per-unit seed means of both arms when every row of both carries values over the same units, else None."""
    us = a.units + b.units
    if not us or any(u is None for u in us) or len({u[0] for u in us}) != 1 or len({len(u[1]) for u in us}) != 1:
        return None
    n = len(us[0][1])
    mean = lambda arm: [sum(u[1][i] for u in arm.units) / len(arm.units) for i in range(n)]  # noqa: E731
    return mean(a), mean(b), us[0][0]


def mcnemar_p(n01: int, n10: int) -> float:
    """Exact two-sided McNemar test on the discordant pairs (a wrong/b right, a right/b wrong): binomial(n, 1/2)."""
    from scipy import stats as st
    n = n01 + n10
    return 1.0 if n == 0 else float(min(1.0, 2 * st.binom.cdf(min(n01, n10), n, 0.5)))


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
    mde: float | None = None  # minimum detectable effect at 80% power (same units as the effect)
    how: str = ""  # paired over N units / unpaired, seeds
    basis: str = "measured"  # or "by assumption: <field>": the verdict flips within an assumption's stated range


def decide(cmp: Comparison, df: pd.DataFrame) -> Result:
    hib = cmp.better == "higher"
    sign = 1.0 if hib else -1.0
    a = Arm.of(df, cmp.metric, cmp.a)
    b = Arm.of(df, cmp.metric, cmp.b) if cmp.b else None
    if a.mean is None or (b is not None and b.mean is None):
        missing = "a" if a.mean is None else "b"
        return Result(cmp, a, b, why=f"no rows for arm {missing} (not run, failed, or unsupported here)")
    ref = b.mean if b is not None else cmp.threshold
    pair = _paired(a, b) if (b is not None and cmp.paired) else None
    extra, raw = "", a.mean - ref
    if pair:
        ua, ub, _ = pair
        diffs = [x - y for x, y in zip(ua, ub)]
        n = len(diffs)
        md = sum(diffs) / n
        parts = [(sum((x - md) ** 2 for x in diffs) / (n - 1) / n, n - 1), a.seed_var, b.seed_var]
        se, dfree, raw = *_welch(parts), md  # the effect is the mean per-unit difference
        how = f"paired over {n} shared units, {len(a.values)} vs {len(b.values)} rows"
        if all(v in (0.0, 1.0) for v in ua + ub) and len(a.values) == len(b.values) == 1:
            n01 = sum(1 for x, y in zip(ua, ub) if x < y)
            n10 = sum(1 for x, y in zip(ua, ub) if x > y)
            extra = f"; McNemar (exact) p = {mcnemar_p(n01, n10):.3g} on {n01}+{n10} discordant items"
    else:
        parts = [(a.se ** 2, a.df)] + ([(b.se ** 2, b.df)] if b is not None else [])
        se, dfree = _welch(parts)
        how = f"unpaired, {len(a.values)}" + (f" vs {len(b.values)} rows" if b is not None else " row(s) vs a threshold")
    d = sign * raw
    if cmp.relative:
        if not ref:
            return Result(cmp, a, b, why="relative effect with a zero reference", how=how)
        d, se = d / abs(ref), se / abs(ref)
    q = _tq(0.975, dfree)
    lo, hi = d - q * se, d + q * se
    mde = (q + _tq(0.80, dfree)) * se
    floor = -(cmp.margin or 0.0) if cmp.test == "not_worse" else 0.0
    clears = lo >= floor if cmp.test == "not_worse" else lo > floor  # not_worse: equal is not worse
    below = hi < floor
    gate_for = gate_against = True  # "better": every row on the winning side beats every row on the other
    if cmp.test == "better" and b is not None and len(a.values) > 1 and len(b.values) > 1:
        gate_for = min(sign * x for x in a.values) > max(sign * y for y in b.values)
        gate_against = max(sign * x for x in a.values) < min(sign * y for y in b.values)
    ci = f"95% CI of the effect [{lo:+.4g}, {hi:+.4g}]"
    few = [n for n, arm in (("a", a), ("b", b)) if arm is not None and len(arm.values) < cmp.min_rows]
    if few:
        v, why = "inconclusive", (f"arm {'/'.join(few)} has fewer than {cmp.min_rows} rows (seeds): the seed spread "
                                  f"is not estimated ({ci})")
    elif clears and gate_for:
        v, why = "supported", f"{ci} lies above {floor:+.4g}"
    elif below and gate_against:
        v, why = "refuted", f"{ci} lies below {floor:+.4g}"
    elif clears or below:
        v, why = "inconclusive", (f"{ci} clears the bar but the seeds disagree (not every row of the "
                                  f"{'a' if clears else 'b'} arm beats every row of the other)")
    else:
        v, why = "inconclusive", f"{ci} contains {floor:+.4g}; could detect |effect| ≥ {mde:.3g} (80% power)"
    why += extra
    src = sorted(set(a.rows["source"]) | (set(b.rows["source"]) if b is not None else set()))
    if any(x != "measured" for x in src):
        why += f" — from {'/'.join(src)} figures, whose own error is not in the interval"
    return Result(cmp, a, b, d, lo, hi, v, why, mde, how)


def claim_verdict(results: list[Result]) -> str:
    prim = [r.verdict for r in results if r.cmp.primary] or [r.verdict for r in results]
    if "refuted" in prim:
        return "refuted"
    return "supported" if all(v == "supported" for v in prim) else "inconclusive"


def claim_basis(results: list[Result]) -> str:
    """"measured", or "by assumption: ..." when a primary comparison's verdict rests on an assumption alone."""
    prim = [r for r in results if r.cmp.primary] or results
    ass = sorted({r.basis for r in prim if r.basis != "measured"})
    return "; ".join(ass) if ass else "measured"


def break_even_acceptance(g: float, c: float, v: float = 1.0) -> float | None:
    """The per-token acceptance a* at which speculative decoding breaks even: E[tokens](a*, g) = g·c + v, with
    E = (1 - a^(g+1)) / (1 - a); None when even a = 1 cannot pay for the draft (g + 1 < g·c + v)."""
    from ..speculative import expected_tokens
    need = g * c + v
    if expected_tokens(1.0, g) < need:
        return None
    if expected_tokens(0.0, g) >= need:
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(60):  # E is increasing in a: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if expected_tokens(mid, g) < need else (lo, mid)
    return (lo + hi) / 2


COST_METRICS = (("api_usd_per_m", "$/1M tok"), ("total_usd_per_m", "$/1M tok"), ("marginal_usd_per_m", "$/1M tok"),
                ("dedicated_usd_per_m", "$/1M tok"), ("electricity_usd_per_m", "$/1M tok"),
                ("battery_wear_usd_per_m", "$/1M tok"), ("hardware_usd_per_m", "$/1M tok"),
                ("usd_per_correct", "$/answer"), ("usd_per_correct_marginal", "$/answer"),
                ("usd_per_correct_dedicated", "$/answer"), ("usd_per_answer", "$/answer"),
                ("j_per_token", "J/token"), ("battery_pct_per_1k", "%/1k tok"), ("decode_tok_s", "tok/s"),
                ("quality", "fraction"), ("quality_published", "fraction"), ("quality_shared", "fraction"))


def assumptions_for(overrides: dict | None, where: str = "claims", file: str = ""):
    """The cost assumptions (devices/cloud/_assumptions.yaml) with a claim's `assumptions` over them."""
    from pydantic import ValidationError

    from ..errors import UserError
    from .cost import Assumptions, load_assumptions
    base = load_assumptions()
    if not overrides:
        return base
    try:
        return Assumptions.model_validate({**base.model_dump(), **overrides})
    except ValidationError as e:
        err = e.errors()[0]
        raise UserError(err["msg"], file=file, field=f"{where}.assumptions." + ".".join(str(x) for x in err["loc"]))


def cost_rows(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None, a=None) -> pd.DataFrame:
    """C8's money and battery figures (slmbench.analysis.cost) as rows: model = MODEL/VARIANT@DEVICE, scenario = cost.
    `infos`, `manifest`: the run's job info and manifest (threads, bytes per token), as cost.build takes them;
    `a`: the cost assumptions (default: devices/cloud/_assumptions.yaml)."""
    from .cost import build
    if df.empty or not (df["scenario"] == "latency").any():
        return df.iloc[0:0]
    ct = build(df, a=a, infos=infos, manifest=manifest)
    out = []
    for r in ct.rows:
        name = f"{r['model']}/{r['variant']}@{r['device']}"
        for metric, unit in COST_METRICS:
            v, src, metric_note = r.get(metric), r["source"], ""
            if metric.startswith("usd_per_correct") and v is None and r["kind"].startswith("cloud"):
                per = r.get(metric.replace("usd_per_correct", "usd_per_answer"))
                pub = r.get("quality_published")
                if per is not None and pub:  # the cloud model's published accuracy on the shared benchmark
                    v, src, metric_note = per / pub, "published", f"÷ published accuracy ({r['quality_text']})"
                elif per is not None and r.get("usd_per_correct_is_bound"):  # conservative on the cloud side only
                    v, metric_note = per, "lower bound: cost per answer (accuracy not measured)"
            if metric == "quality_published" or (metric == "quality_shared" and r["kind"] == "cloud (price table)"):
                src, metric_note = "published", r.get("quality_text", "")  # cited, never measured here
            elif metric == "quality_shared":
                metric_note = "accuracy on the benchmark both sides share (acc_norm, else acc)"
            if v is None:
                continue
            out.append({"run_id": df["run_id"].iloc[0], "job_id": "", "model": name, "variant": "{}",
                        "device": r["device"], "scenario": "cost", "params": "{}",
                        "labels": json.dumps({"kind": r["kind"]}), "metric": metric, "value": float(v), "unit": unit,
                        "n": 1, "spread": None, "spread_kind": None, "status": "ok", "source": src,
                        "note": metric_note or f"slmbench.analysis.cost: {r['kind']}"})
    return pd.DataFrame(out)


def with_cost_rows(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None, a=None) -> pd.DataFrame:
    extra = cost_rows(df, infos, manifest, a)
    return pd.concat([df, extra], ignore_index=True) if len(extra) else df


DEFINITIONAL = {"api_usd_per_m": "the API bill is zero on the device by definition"}


def _uses_cost(c: Claim) -> bool:
    return any(s is not None and s.scenario == "cost" for cmp in c.comparisons for s in (cmp.a, cmp.b))


def _by_assumption(cmp: Comparison, res: Result, df: pd.DataFrame, a, infos, manifest) -> str:
    """"measured", or what the verdict rests on: a definition, or an assumption whose stated range flips it."""
    if cmp.metric in DEFINITIONAL:
        return f"by assumption: {DEFINITIONAL[cmp.metric]}"
    flips = []
    for name in ("duty_hours_per_day", "electricity_usd_per_kwh", "battery_cycles", "battery_replacement_usd"):
        rng = a.range_of(name)
        if not rng:
            continue
        got = []
        for end in rng:
            alt = a.model_copy(update={name: end})
            got.append(decide(cmp, with_cost_rows(df, infos, manifest, alt)).verdict)
        if any(v != res.verdict for v in got):
            flips.append(f"{name} ({rng[0]:g}: {got[0]}, {rng[1]:g}: {got[1]})")
    return "by assumption: " + "; ".join(flips) if flips else "measured"


def evaluate(claims: list[Claim], df: pd.DataFrame, add_cost: bool = True, infos: dict | None = None,
             manifest: dict | None = None, file: str = "") -> list[tuple[Claim, list[Result], str]]:
    """Each claim decided on the rows; cost rows (add_cost) built with the claim's own assumptions, and every cost
    comparison also decided at the ends of its assumptions' ranges (Result.basis)."""
    out = []
    base = with_cost_rows(df, infos, manifest) if add_cost else df
    for i, c in enumerate(claims):
        a = assumptions_for(c.assumptions, f"claims[{i}]", file) if add_cost and _uses_cost(c) else None
        full = with_cost_rows(df, infos, manifest, a) if c.assumptions and a is not None else base
        res = [decide(cmp, full) for cmp in c.comparisons]
        if a is not None:
            for cmp, r in zip(c.comparisons, res):
                if r.effect is not None and any(s is not None and s.scenario == "cost" for s in (cmp.a, cmp.b)):
                    r.basis = _by_assumption(cmp, r, df, a, infos, manifest)
        out.append((c, res, claim_verdict(res)))
    return out
