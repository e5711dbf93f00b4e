"""Device adapters: where a job runs and how its cost is read. Profiles (devices/*.yaml) are data; this is code.

One registry: `@register_adapter("cpu")` on a class; a profile's `adapter:` field picks it.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..settings import devices_dir


class DeviceProfile(BaseModel):
    """A device's figures. Every number that is not measured here names its source in `sources`."""
    model_config = ConfigDict(extra="forbid")
    name: str
    adapter: str = Field(description="cpu | cuda | profile | cloud")
    description: str = ""
    cores: int | None = Field(None, ge=1)
    per_core_active_w: float | None = Field(None, gt=0, description="for energy estimates from CPU time")
    active_w: float | None = Field(None, gt=0, description="whole-device power while generating")
    idle_w: float | None = Field(None, ge=0)
    memory_bandwidth_gbs: float | None = Field(None, gt=0, description="sustained read bandwidth")
    compute_gflops: float | None = Field(None, gt=0)
    memory_gb: float | None = Field(None, gt=0)
    battery_wh: float | None = Field(None, gt=0)
    price_usd: float | None = Field(None, ge=0)
    lifetime_years: float | None = Field(None, gt=0)
    electricity_usd_per_kwh: float | None = Field(None, ge=0)
    sources: dict[str, str] = Field(default_factory=dict, description="field -> where the figure comes from")
    extra: dict[str, Any] = Field(default_factory=dict)


ADAPTERS: dict[str, type] = {}


def register_adapter(name: str):
    def deco(cls):
        cls.adapter_name = name
        ADAPTERS[name] = cls
        return cls
    return deco


def load_profile(name: str, file: str | None = None, field: str | None = None) -> DeviceProfile:
    from ..plan import load_yaml, parse_model
    path = devices_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in devices_dir().glob("*.yaml"))
        raise UserError(f"unknown device {name!r} (profiles in {devices_dir()}: {', '.join(known) or 'none'})",
                        file=file, field=field)
    prof = parse_model(DeviceProfile, load_yaml(path), str(path))
    _load_adapters()
    if prof.adapter not in ADAPTERS:
        raise UserError(f"unknown adapter {prof.adapter!r} (known: {', '.join(sorted(ADAPTERS))})",
                        file=str(path), field="adapter")
    if hasattr(ADAPTERS[prof.adapter], "check_profile"):  # adapter-specific settings (e.g. a cloud endpoint's)
        ADAPTERS[prof.adapter].check_profile(prof, str(path))
    return prof


def make_adapter(profile: DeviceProfile, threads: int | None = None):
    _load_adapters()
    return ADAPTERS[profile.adapter](profile, threads)


@register_adapter("profile")
class ProfileAdapter:
    """A device that is not here (phone, board, laptop): its figures feed projections (slmbench.analysis.cost), labelled
    `projected`. Nothing runs on it: a job naming it is recorded as unsupported, never silently run on the host."""

    def __init__(self, profile, threads: int | None = None):
        self.profile, self.threads = profile, threads

    def setup(self) -> None:
        from ..errors import Unsupported
        raise Unsupported(f"{self.profile.name} is a device profile for projections (slmbench report --cost), "
                          "not a device on this machine")


def _load_adapters() -> None:
    from . import cloud, cpu, cuda  # noqa: F401  (registration side effect; cloud also registers backend openai)


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
