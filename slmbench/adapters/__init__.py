"""Device adapters (contracts.adapter.Adapter): where a job runs and how its cost is read. Profiles
(devices/*.yaml) are data; an adapter is code, picked by a profile's `adapter:` field through the ADAPTERS registry.

    cpu      this machine's CPU: threads, peak RSS, RAPL energy or an estimate, measured bandwidth (cpu.py)
    cuda     a CUDA GPU: synchronised timing, torch peak memory, NVML energy (cuda.py)
    cloud    an OpenAI-compatible endpoint: requests only (cloud.py; its runtime is backends/openai.py)
    profile  a device that is not here: its figures feed projections only (profile.py)
"""
from __future__ import annotations

import platform
from pathlib import Path

from ..contracts import DeviceProfile, load_profile, make_adapter  # noqa: F401  (the usual entry points)


def host_info() -> dict:
    cpu_model = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    import psutil
    return {"hostname": platform.node(), "cpu_model": cpu_model, "logical_cpus": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": f"{platform.system()} {platform.release()}", "machine": platform.machine()}
