"""The one number formatter: every figure in a terminal line, table cell or report goes through here, so the same
value reads the same everywhere. Core level (metrics.Metric.render uses it); no imports beyond the standard library."""
from __future__ import annotations

import math


def missing(x) -> bool:
    """None, NaN, or pandas' missing value (NaN as float)."""
    if x is None:
        return True
    try:
        return isinstance(x, float) and math.isnan(x) or bool(x != x)
    except (TypeError, ValueError):  # pd.NA and friends: no truth value
        return True


def num(x, none: str = "n/a") -> str:
    """Three significant-ish digits, thousands separated; tiny and huge values in g-notation."""
    if missing(x):
        return none
    ax = abs(x)
    if ax == 0:
        return "0"
    if ax >= 1e6:
        return f"{x:.3g}"
    if ax >= 100:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.01:
        return f"{x:.3f}"
    return f"{x:.3g}"


def spread(x) -> str:
    """Spreads need two significant digits, not more."""
    return f"{x:.2g}" if abs(x) < 100 else f"{x:,.0f}"


def with_spread(value, sp=None, none: str = "n/a") -> str:
    """`value ± spread`; the spread is left out when missing or zero."""
    if missing(value):
        return none
    return num(value) + (f" ± {spread(sp)}" if not missing(sp) and sp else "")


def pct(x, none: str = "n/a", signed: bool = True, digits: int = 1) -> str:
    """A fraction as a percentage: 0.031 → +3.1%."""
    if missing(x):
        return none
    return f"{x:{'+' if signed else ''}.{digits}%}"


def pct_points(x, se=None, none: str = "") -> str:
    """A fraction as percent points without the sign: 0.512 ± 0.03 → 51.2 ± 3.0 (accuracy columns)."""
    if missing(x):
        return none
    return f"{100 * x:.1f}" + (f" ± {100 * se:.1f}" if not missing(se) else "")


def p_value(x, none: str = "—") -> str:
    return none if missing(x) else f"{x:.2g}"


def sig(x, none: str = "n/a") -> str:
    """Four significant digits, scientific below 1e-3 (effects and arm means of claims)."""
    if missing(x):
        return none
    return f"{x:.4g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.3e}"


def money(x, none: str = "n/a") -> str:
    if missing(x):
        return none
    if x == 0:
        return "$0"
    return f"${x:,.2f}" if x >= 1 else f"${x:.3g}"


def fixed(x, spec: str, none: str = "—") -> str:
    """A fixed format (".1f", ".0%") for columns whose precision is part of the table's design."""
    return none if missing(x) else format(x, spec)
