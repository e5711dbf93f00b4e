"""Device adapter `pinned`: this machine's CPU with the job pinned to the profile's first `cores` CPUs
(sched_setaffinity). It reuses the built-in CPU adapter's readers (peak RSS) and declares less: no energy or
bandwidth figures, so scenarios needing them are recorded unsupported on it."""
from __future__ import annotations

import os

from slmbench.adapters.cpu import CpuAdapter
from slmbench.contracts import register_adapter
from slmbench.contracts.adapter import HOST_CPU, MEMORY, RUNS_MODELS


@register_adapter
class PinnedCpu(CpuAdapter):
    name = "pinned"
    capabilities = frozenset({RUNS_MODELS, HOST_CPU, MEMORY})

    def setup(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))[: self.profile.cores or 1]
        os.sched_setaffinity(0, cpus)
        self.threads = len(cpus)
        super().setup()

    def bandwidth(self) -> dict | None:
        return None

    def info(self) -> dict:
        return {"adapter": self.name, "profile": self.profile.name, "cpus": sorted(os.sched_getaffinity(0)),
                "threads": self.threads}
