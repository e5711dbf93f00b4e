"""Energy readers. A counter when the hardware has one (RAPL via pyRAPL, NVML on GPUs); otherwise an estimate
from the process's CPU time × the profile's per-core power — always labelled `estimated`."""
from __future__ import annotations

import time


class CpuTimeEstimate:
    """E ≈ (CPU seconds of this process, all threads) × W per active core. No sampler thread: one clock read."""
    source = "estimated"

    def __init__(self, per_core_w: float, why: str):
        self.per_core_w = per_core_w
        self.note = f"estimated: process CPU time × {per_core_w:g} W/core (device profile); {why}"

    def read(self) -> float:
        return time.process_time() * self.per_core_w  # CLOCK_PROCESS_CPUTIME_ID: ns resolution, unlike os.times


class RaplMeter:
    """Package energy from the RAPL counters through pyRAPL (measured). Reads are sysfs files: no sampling."""
    source = "measured"
    note = "measured: RAPL package counter (pyRAPL)"

    def __init__(self):
        import pyRAPL
        pyRAPL.setup()  # raises where there are no counters (e.g. these VMs)
        self._m = pyRAPL.Measurement("slmbench")
        self._total = 0.0
        self._m.begin()

    def read(self) -> float:
        # pyRAPL's Measurement reports µJ between begin() and end(); end() then re-begin gives a running counter.
        self._m.end()
        j = sum(self._m.result.pkg or [0.0]) / 1e6
        self._total += j
        self._m.begin()
        return self._total


def rapl_or_estimate(per_core_w: float | None) -> object:
    try:
        return RaplMeter()
    except Exception as e:  # pyRAPL raises its own types, or OSError/PermissionError on sysfs
        why = f"no RAPL counters ({type(e).__name__})"
    if per_core_w is None:
        return None
    return CpuTimeEstimate(per_core_w, why)
