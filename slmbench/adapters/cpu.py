"""Local CPU: thread count set and recorded; peak RSS from the kernel's high-water mark; energy from RAPL or an
estimate. Nothing runs beside the model while it is measured: no sampler thread, no tracker process."""
from __future__ import annotations

import resource
from pathlib import Path

from ..contracts import Adapter, effective_threads, register_adapter
from ..contracts.adapter import BANDWIDTH, ENERGY, HOST_CPU, MEMORY, RUNS_MODELS
from . import host_info
from .energy import rapl_or_estimate


def rss_bytes() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0: write 5 to clear_refs). False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Kernel-tracked peak resident set (VmHWM): exact, and costs nothing while the model runs."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@register_adapter
class CpuAdapter(Adapter):
    name = "cpu"
    capabilities = frozenset({RUNS_MODELS, HOST_CPU, MEMORY, ENERGY, BANDWIDTH})
    torch_device = "cpu"
    memory_kind = "rss"

    def __init__(self, profile, threads: int | None = None):
        super().__init__(profile, effective_threads(profile, threads))

    def setup(self) -> None:
        import torch
        torch.set_num_threads(self.threads)

    def energy_meter(self):
        return rapl_or_estimate(self.profile.per_core_active_w)

    def reset_peak_memory(self) -> bool:
        return reset_peak_rss()

    def peak_memory_bytes(self) -> int:
        return peak_rss_bytes()

    def memory_bytes(self) -> int:
        return rss_bytes()

    def bandwidth(self) -> dict | None:
        from .bandwidth import cached
        return cached(self.threads)

    def info(self) -> dict:
        import torch
        return {**host_info(), "adapter": "cpu", "threads": self.threads, "torch_threads": torch.get_num_threads(),
                "profile": self.profile.name}
