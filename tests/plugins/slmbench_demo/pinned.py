"""Device adapter `pinned`: this machine's CPU, with the job pinned to the profile's first `cores` CPUs
(sched_setaffinity) — peak RSS from the kernel's high-water mark, no energy or bandwidth figures."""
from __future__ import annotations

import os

from slmbench.adapters.cpu import peak_rss_bytes, reset_peak_rss, rss_bytes
from slmbench.contracts import Adapter, register_adapter
from slmbench.contracts.adapter import HOST_CPU, MEMORY, RUNS_MODELS


@register_adapter
class PinnedCpu(Adapter):
    name = "pinned"
    capabilities = frozenset({RUNS_MODELS, HOST_CPU, MEMORY})
    memory_kind = "rss"

    def setup(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))[: self.profile.cores or 1]
        os.sched_setaffinity(0, cpus)
        self.threads = len(cpus)
        import torch
        torch.set_num_threads(self.threads)

    def info(self) -> dict:
        return {"adapter": self.name, "profile": self.profile.name, "cpus": sorted(os.sched_getaffinity(0))}

    def reset_peak_memory(self) -> bool:
        return reset_peak_rss()

    def peak_memory_bytes(self) -> int:
        return peak_rss_bytes()

    def memory_bytes(self) -> int:
        return rss_bytes()
