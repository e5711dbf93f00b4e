"""Contracts: the base classes a plugin implements and the one registry per plugin kind.

    backend   contracts.engine.Engine      BACKENDS   @register_backend     slmbench/backends/*.py
    adapter   contracts.adapter.Adapter    ADAPTERS   @register_adapter     slmbench/adapters/*.py
    scenario  contracts.scenario.Scenario  SCENARIOS  @register_scenario    slmbench/scenarios/*.py
    source    contracts.source.Source      SOURCES    @register_source      slmbench/models/*.py

To add one, write one file with one class and the decorator, plus its test: a built-in goes in the kind's package
(found by the registry), a third-party one anywhere, with an entry point in group `slmbench.<kind>s` (registry.py).
"""
from __future__ import annotations

from ..errors import UserError
from ..settings import devices_dir
from ..yamlio import load_yaml, parse_model
from .adapter import Adapter, DeviceProfile, effective_threads
from .engine import Engine, Knobs, TokenClock
from .registry import Registry, RegistryError
from .result import JobResult
from .scenario import JobContext, Params, Scenario
from .source import ModelFiles, Source

BACKENDS: Registry[Engine] = Registry("backend", Engine, "slmbench.backends")
ADAPTERS: Registry[Adapter] = Registry("adapter", Adapter, "slmbench.adapters")
SCENARIOS: Registry[Scenario] = Registry("scenario", Scenario, "slmbench.scenarios")
SOURCES: Registry[Source] = Registry("source", Source, "slmbench.models", "slmbench.factory.source",
                                           label="model source")

register_backend, register_adapter = BACKENDS.register, ADAPTERS.register
register_scenario, register_source = SCENARIOS.register, SOURCES.register

def load_profile(name: str, file: str | None = None, field: str | None = None) -> DeviceProfile:
    path = devices_dir() / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in devices_dir().glob("*.yaml"))
        raise UserError(f"unknown device {name!r} (profiles in {devices_dir()}: {', '.join(known) or 'none'})",
                        file=file, field=field)
    prof = parse_model(DeviceProfile, load_yaml(path), str(path))
    ADAPTERS.get(prof.adapter, file=str(path), field="adapter").check_profile(prof, str(path))
    return prof


def make_adapter(profile: DeviceProfile, threads: int | None = None) -> Adapter:
    return ADAPTERS.get(profile.adapter)(profile, threads)


__all__ = ["ADAPTERS", "BACKENDS", "SCENARIOS", "SOURCES", "Adapter", "DeviceProfile", "Engine", "JobContext",
           "JobResult", "Knobs", "ModelFiles", "Params", "Registry", "RegistryError", "Scenario", "Source",
           "TokenClock", "effective_threads", "load_profile", "make_adapter", "register_adapter",
           "register_backend", "register_scenario", "register_source"]
