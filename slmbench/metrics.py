"""One small dataclass per measured figure. It knows its unit, source and spread, and renders itself."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from .stats import summarize

SOURCES = ("measured", "estimated", "projected")


@dataclass
class Metric:
    name: str
    value: float | None
    unit: str
    source: str = "measured"  # measured counter/timer, estimated (model of a counter), projected (other device)
    n: int = 1
    spread: float | None = None  # half-width, meaning given by spread_kind
    spread_kind: str | None = None  # "ci95_median" | "stderr" | "range"
    higher_is_better: bool | None = None
    samples: list[float] | None = None
    labels: dict = field(default_factory=dict)  # e.g. {"phase": "decode"}; part of the row's identity
    note: str = ""  # how it was obtained, one line

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"metric {self.name}: source must be one of {SOURCES}, not {self.source!r}")

    @classmethod
    def from_samples(cls, name: str, samples: list[float], unit: str, **kw) -> "Metric":
        s = summarize(samples)
        kind = "ci95_median" if s.n >= 6 else "range"
        return cls(name, s.median, unit, n=s.n, spread=s.half_width, spread_kind=kind,
                   samples=[float(x) for x in samples], **kw)

    def render(self) -> str:
        if self.value is None or (isinstance(self.value, float) and math.isnan(self.value)):
            return "n/a"
        v = fmt_num(self.value)
        sp = f" ± {fmt_spread(self.spread)}" if self.spread else ""
        tag = "" if self.source == "measured" else f" ({self.source})"
        return f"{v}{sp} {self.unit}{tag}".strip()

    def to_dict(self) -> dict:
        return asdict(self)


def fmt_num(x: float) -> str:
    if x is None:
        return "n/a"
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


def fmt_spread(x: float) -> str:
    """Spreads need two significant digits, not more."""
    return f"{x:.2g}" if abs(x) < 100 else f"{x:,.0f}"
