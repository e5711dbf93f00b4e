"""One small dataclass per measured figure. It knows its unit, source and spread, and renders itself."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from . import fmt
from .stats import summarize

PROVENANCE = ("measured", "estimated", "projected")  # how a figure was obtained: a row's `source` column


@dataclass
class Metric:
    name: str
    value: float | None
    unit: str
    source: str = "measured"  # measured counter/timer, estimated (model of a counter), projected (other device)
    n: int = 1
    spread: float | None = None  # half-width, meaning given by spread_kind
    spread_kind: str | None = None  # "ci95_median" | "stderr" | "range" | "stderr_units" (stderr; samples are per unit)
    higher_is_better: bool | None = None
    samples: list[float] | None = None
    labels: dict = field(default_factory=dict)  # e.g. {"phase": "decode"}; part of the row's identity
    note: str = ""  # how it was obtained, one line

    def __post_init__(self):
        if self.source not in PROVENANCE:
            raise ValueError(f"metric {self.name}: source must be one of {PROVENANCE}, not {self.source!r}")

    @classmethod
    def from_samples(cls, name: str, samples: list[float], unit: str, **kw) -> "Metric":
        s = summarize(samples)
        kind = "ci95_median" if s.n >= 6 else "range"
        return cls(name, s.median, unit, n=s.n, spread=s.half_width, spread_kind=kind,
                   samples=[float(x) for x in samples], **kw)

    def render(self) -> str:
        if fmt.missing(self.value):
            return "n/a"
        tag = "" if self.source == "measured" else f" ({self.source})"
        return f"{fmt.with_spread(self.value, self.spread)} {self.unit}{tag}".strip()

    def to_dict(self) -> dict:
        return asdict(self)

