"""The roofline's denominator, measured before the jobs that need it (per machine and thread count, cached): the C
read kernel of adapters/bandwidth.py (compiled at first use), or the labelled torch-sum fallback without a compiler."""
from __future__ import annotations

from collections.abc import Callable


def ensure_bandwidth(jobs, say: Callable[[str], None] = lambda m: None) -> None:
    """Measure memory bandwidth once per machine and thread count (cached), in its own process, before any job
    that runs on this machine's CPU. A remote node calls this for its own jobs."""
    from ..adapters.bandwidth import cached, ensure
    from ..contracts import ADAPTERS, SCENARIOS, effective_threads, load_profile
    from ..contracts.adapter import BANDWIDTH
    for j in jobs:
        if j.unsupported or not SCENARIOS.get(j.scenario).needs_engine:  # nothing measured: no roofline to compute
            continue
        prof = load_profile(j.device)
        if prof.adapter != "cpu" or BANDWIDTH not in ADAPTERS.get(prof.adapter).capabilities:
            continue
        threads = effective_threads(prof, j.variant.threads or j.device_threads)
        if not cached(threads):
            say(f"measuring memory read bandwidth ({threads} threads, once per machine and thread count)…")
            bw = ensure(threads)
            if bw:
                say(f"  {bw['gbs']:.1f} GB/s ({bw['method']})")
