"""The regression rule schema: per metric, how large a move counts and at what significance. Core level, so the
suite validator (slmbench.plan) and the verdicts (slmbench.analysis.regression) share one definition.

A suite's `regression:` mapping, or --threshold on the command line:
    {alpha: 0.01, metrics: {decode_tok_s: {min_change: 0.05, higher_is_better: true}, peak_mem_mb: 0.02}}
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError


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
RULE_FIELDS = {"min_change", "alpha", "higher_is_better", "gate"}


def default_rule(metric: str, unit: str) -> Rule:
    if metric in DEFAULT_RULES:
        return Rule(DEFAULT_RULES[metric], DEFAULT_ALPHA, gate=metric not in INFORMATIONAL)
    return Rule(0.02 if unit in MEMORY_UNITS else 0.05, DEFAULT_ALPHA)


# Confirmation by an interleaved A/B rerun (analysis.regression.decide_paired): drift cancels in each pair, so the
# minimum change sits far below the unpaired thresholds. The confirmation's test is one-sided (is the new code
# worse, as the suspect said?) at alpha 0.05: at most 5% of A/A confirmations can regress by chance, fewer with the
# 2% minimum. A/A and 5%-injection study on the shared 2-core VM (load 12-29, reports/examples/regression/
# ab-study.md): 0 / 25 A/A trials regressed; a calibrated 5% slowdown (measured -4.6%) was confirmed in 6 / 20
# trials of 8 pairs of 12-token runs — per-pair noise there was 13.7%, which needs ~68 pairs; quieter machines or
# longer arms need far fewer (sd 5% → ~9 pairs). PAIRED_PAIRS is the default, --confirm-ab PAIRS overrides it.
PAIRED_ALPHA = 0.05
PAIRED_MIN_CHANGE: dict[str, float] = {"decode_tok_s": 0.02, "decode_roofline_frac": 0.02, "itl_p50_ms": 0.02,
                                       "prefill_tok_s": 0.03, "ttft_ms": 0.03}
PAIRED_PAIRS = 8  # pairs a confirmation runs by default (min two-sided p 2/2^8 = 0.008)


def paired_rule(metric: str, unit: str, rules: dict[str, "Rule"] | None = None) -> Rule:
    """The rule for an interleaved A/B confirmation: the paired minimum change for the metric (a suite's or the
    command line's rule for the metric when tighter), alpha 0.05; gate and direction as the unpaired rule."""
    base = rule_for(metric, unit, rules or {})
    mc = PAIRED_MIN_CHANGE.get(metric, min(base.min_change, 0.02))
    return Rule(min(mc, base.min_change), PAIRED_ALPHA, base.higher_is_better, base.gate)


def parse_rules(mapping: dict | None, src: str = "regression") -> dict[str, Rule]:
    """The `regression:` mapping → metric → Rule ("*" carries the alpha default). Bad input: UserError naming the
    field."""
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
        out[m] = _metric_rule(m, v, float(alpha), f"{src}.metrics.{m}")
    return out


def _metric_rule(metric: str, v, alpha: float, where: str) -> Rule:
    v = {"min_change": v} if isinstance(v, (int, float)) else v
    if not isinstance(v, dict) or set(v) - RULE_FIELDS:
        raise UserError("expected a number or {min_change, alpha, higher_is_better, gate}", field=where)
    mc = v.get("min_change")
    if mc is not None and (not isinstance(mc, (int, float)) or not 0 <= mc < 10):
        raise UserError("min_change must be a relative change, e.g. 0.05 for 5%", field=where)
    return Rule(float(mc) if mc is not None else math.nan, float(v.get("alpha", alpha)),
                v.get("higher_is_better"), bool(v.get("gate", metric not in INFORMATIONAL)))


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
