"""The device Adapter contract: where a job runs and how its cost is read. Profiles (devices/*.yaml) are data; an
adapter is code, chosen by a profile's `adapter:` field.

An adapter declares what it can do (`capabilities`); a backend runs only on adapters that have what it requires
(contracts.engine), and scenarios that require a capability it lacks are recorded `unsupported` for jobs on it
(memory on an HTTP endpoint, say).

    runs_models  models execute in the job process (cpu, cuda)      host_cpu  ... on this machine's CPU cores
    endpoint     requests go to a server elsewhere (cloud)          memory / energy / bandwidth  what it can read
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ..errors import Unsupported

RUNS_MODELS, HOST_CPU, ENDPOINT = "runs_models", "host_cpu", "endpoint"
MEMORY, ENERGY, BANDWIDTH = "memory", "energy", "bandwidth"
KNOWN = (RUNS_MODELS, HOST_CPU, ENDPOINT, MEMORY, ENERGY, BANDWIDTH)


class DeviceProfile(BaseModel):
    """A device's figures. Every number that is not measured here names its source in `sources`."""
    model_config = ConfigDict(extra="forbid")
    name: str
    adapter: str = Field(description="a registered device adapter: cpu | cuda | profile | cloud | ...")
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


def effective_threads(profile: DeviceProfile, requested: int | None) -> int:
    """The one rule for a CPU job's thread count: asked for, else the profile's cores, else this process's CPUs."""
    return requested or profile.cores or len(os.sched_getaffinity(0))


class Adapter(ABC):
    name: ClassVar[str]
    capabilities: ClassVar[frozenset[str]] = frozenset()
    torch_device: str = "cpu"
    memory_kind: str = "none"
    Settings: ClassVar[type[BaseModel] | None] = None  # a pydantic model of the profile's `extra:`, if it has one

    def __init__(self, profile: DeviceProfile, threads: int | None = None):
        self.profile, self.threads = profile, threads

    @classmethod
    def check_profile(cls, profile: DeviceProfile, file: str) -> None:
        """Adapter-specific settings in a profile (its `extra:`): raise UserError naming the file and field. An
        adapter that declares `Settings` (a pydantic model of its `extra:`) gets them validated here."""
        if cls.Settings is None:
            return
        from pydantic import ValidationError
        from ..errors import UserError
        from ..yamlio import first_error
        try:
            cls.Settings(**profile.extra)
        except ValidationError as e:
            loc, msg = first_error(e)
            raise UserError(msg, file=file, field=f"extra.{loc}" if loc else "extra")

    @classmethod
    def check_plugin(cls) -> None:
        unknown = set(cls.capabilities) - set(KNOWN)
        if unknown:
            raise TypeError(f"adapter {cls.name!r} declares unknown capabilities {sorted(unknown)} "
                            f"(known: {', '.join(KNOWN)})")

    @abstractmethod
    def setup(self) -> None:
        """Prepare the device for this job (threads, visibility); raise Unsupported if it cannot run here."""

    @abstractmethod
    def info(self) -> dict:
        """What the job ran on, for the job's info (model of CPU/GPU, threads, profile name)."""

    def sync(self) -> None:
        """Wait for queued device work (a GPU stream) so timers read finished work."""

    def energy_meter(self):
        """An object with read() -> joules, `source` and `note`; None when nothing can be read or estimated."""
        return None

    def reset_peak_memory(self) -> bool:
        return False

    def peak_memory_bytes(self) -> int:
        raise Unsupported(f"adapter {self.name!r} has no memory capability")

    def memory_bytes(self) -> int:
        raise Unsupported(f"adapter {self.name!r} has no memory capability")

    def bandwidth(self) -> dict | None:
        """{'gbs': sustained read GB/s, 'method': how obtained} or None."""
        return None
