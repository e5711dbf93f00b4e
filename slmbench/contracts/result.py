"""The typed result of one job: what the worker writes, the executor yields and the store records, unchanged."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

FINAL = ("ok", "crashed", "timeout", "oom", "error", "unsupported")
# Recorded with its reason but not final: the job never finished through no fault of its own (an SSH device
# unreachable or its link lost mid-job); `--resume` runs it again.
RETRY = ("lost",)


@dataclass
class JobResult:
    status: str  # one of FINAL or RETRY
    error: str | None = None
    metrics: list[dict] = field(default_factory=list)  # Metric.to_dict() rows
    info: dict = field(default_factory=dict)  # device, model facts, effective threads, limits, traceback

    def __post_init__(self):
        if self.status not in FINAL + RETRY:
            raise ValueError(f"job status must be one of {FINAL + RETRY}, not {self.status!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "JobResult":
        return cls(d["status"], d.get("error"), list(d.get("metrics") or []), dict(d.get("info") or {}))

    def with_info(self, **more) -> "JobResult":
        return JobResult(self.status, self.error, self.metrics, {**more, **self.info})
