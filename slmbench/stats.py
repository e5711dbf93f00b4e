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


# --- comparisons: shared by regression verdicts and claims ------------------------------------------------------
def rel_change(base: float, new: float) -> float:
    """(new - base) / |base|; nan when the base is 0 or missing."""
    if base is None or new is None or base == 0 or math.isnan(base) or math.isnan(new):
        return math.nan
    return (new - base) / abs(base)


def mann_whitney_p(a: list[float], b: list[float]) -> float:
    """Two-sided Mann-Whitney U p-value on raw samples (exact for small samples without ties). A rank test: one
    disturbed repetition moves it by one rank, not by its size, which is what a shared machine needs."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if len(set(a) | set(b)) == 1:  # identical constant samples: no evidence of any difference
        return 1.0
    return float(_st.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def min_mw_p(n1: int, n2: int) -> float:
    """The smallest two-sided p the exact Mann-Whitney test can give: 2 / C(n1+n2, n1). Below alpha, or the test
    can never fire (5 vs 5 gives 0.0079, 4 vs 4 gives 0.029)."""
    return 2 / math.comb(n1 + n2, n1) if n1 and n2 else 1.0


def change_points(nights: list[list[float]], min_change: float, alpha: float, max_points: int = 5
                  ) -> list[tuple[int, float, float, float]]:
    """Steps in a series of nights (each a list of raw samples, or one value), by binary segmentation.

    For each split k of a segment, the cost is the sum of absolute deviations of the per-night medians from their
    side's median (robust L1 segmentation: one odd night costs little, a persisting step a lot). The cheapest split
    is kept when the step between the two sides' medians is at least `min_change` and, where both sides have
    samples enough, a Mann-Whitney test on the pooled raw samples gives p < alpha.
    Returns [(index of the first night after the step, median before, median after, p or nan)], sorted.
    """
    meds = [statistics.median(x) if x else math.nan for x in nights]
    found: list[tuple[int, float, float, float]] = []

    def cost(xs: list[float]) -> float:
        m = statistics.median(xs)
        return sum(abs(x - m) for x in xs)

    def seg(lo: int, hi: int):
        if hi - lo < 2 or len(found) >= max_points:
            return
        best = None
        for k in range(lo + 1, hi):
            left = [m for m in meds[lo:k] if not math.isnan(m)]
            right = [m for m in meds[k:hi] if not math.isnan(m)]
            if not left or not right:
                continue
            ml, mr = statistics.median(left), statistics.median(right)
            rel = rel_change(ml, mr)
            if math.isnan(rel):
                continue
            c = cost(left) + cost(right)
            if best is None or c < best[0]:
                best = (c, k, ml, mr, rel)
        if best is None or abs(best[4]) < min_change:
            return
        _, k, ml, mr, _ = best
        a = [x for n in nights[lo:k] for x in n]
        b = [x for n in nights[k:hi] for x in n]
        p = mann_whitney_p(a, b)
        if not math.isnan(p) and min_mw_p(len(a), len(b)) < alpha and p >= alpha:
            return  # testable and not significant: no step
        found.append((k, ml, mr, p))
        seg(lo, k)
        seg(k, hi)

    seg(0, len(nights))
    return sorted(found)
