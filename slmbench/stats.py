"""Statistics shared by scenarios, regression verdicts and claims: summaries with honest spread."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats as _st


@dataclass(frozen=True)
class Summary:
    median: float
    lo: float  # 95% CI of the median (distribution-free, order statistics)
    hi: float
    mean: float
    stdev: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def median_ci(samples: list[float], conf: float = 0.95) -> tuple[float, float]:
    """Distribution-free CI for the median from the binomial(n, 1/2) order statistics.
    With n < 6 no pair of order statistics reaches 95%, so the full range is returned (stated as such)."""
    xs = sorted(samples)
    n = len(xs)
    if n == 0:
        return (math.nan, math.nan)
    if n < 6:
        return (xs[0], xs[-1])
    k = int(_st.binom.ppf((1 - conf) / 2, n, 0.5))  # lower rank (0-based after -1 below)
    lo_i, hi_i = max(k - 1, 0), min(n - k, n - 1)
    return (xs[lo_i], xs[hi_i])


def summarize(samples: list[float]) -> Summary:
    xs = [float(x) for x in samples]
    if not xs:
        raise ValueError("no samples")
    lo, hi = median_ci(xs)
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return Summary(statistics.median(xs), lo, hi, statistics.fmean(xs), sd, len(xs))


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
