"""Matrix expansion: suite → the plan, a list of Jobs (models × matrix × devices × scenarios × sweeps, minus
`exclude`). A job's key is the hash of what it measures, stable across releases (stored runs compare and resume).

Combinations that cannot run are decided here, before any process starts: a backend on a device adapter it does
not run on is not planned (`Plan.skipped` says which and why); a scenario needing a capability its backend or
device lacks, or a knob the backend does not own, becomes a job recorded `unsupported` with the reason."""
from __future__ import annotations

import fnmatch
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..contracts import ADAPTERS, SCENARIOS, load_profile
from .schema import ModelSpec, RunSettings, ScenarioSpec, Suite, model_identity
from .variant import Variant


@dataclass
class Job:
    """One isolated process: a model variant on a device running one scenario with fixed params."""
    suite: str
    model: ModelSpec
    variant: Variant
    device: str
    device_threads: int | None
    scenario: str
    params: dict
    settings: RunSettings
    seed: int
    unsupported: str | None = None  # decided at planning: recorded without running (not part of the identity)
    key: str = field(init=False)

    def __post_init__(self):
        ident = {"model": model_identity(self.model), "variant": self.variant.dump(), "device": self.device,
                 "threads": self.device_threads, "scenario": self.scenario, "params": self.params, "seed": self.seed}
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        knobs = ",".join(f"{k}={v}" for k, v in self.variant.short().items())
        ps = ",".join(f"{k}={v}" for k, v in self.params.items() if not isinstance(v, (list, dict)))
        return f"{self.model.name}[{knobs}] @{self.device} {self.scenario}" + (f"({ps})" if ps else "")

    def variant_dump(self) -> dict:
        return self.variant.dump()

    def variant_knobs(self) -> dict:
        return self.variant.short()

    def to_json(self) -> dict:
        return {"suite": self.suite, "model": self.model.model_dump(), "variant": self.variant.dump(),
                "device": self.device, "device_threads": self.device_threads, "scenario": self.scenario,
                "params": self.params, "settings": self.settings.model_dump(), "seed": self.seed, "key": self.key,
                "unsupported": self.unsupported}

    @classmethod
    def from_json(cls, d: dict) -> "Job":
        return cls(d["suite"], ModelSpec(**d["model"]), Variant(**d["variant"]), d["device"], d["device_threads"],
                   d["scenario"], d["params"], RunSettings(**d["settings"]), d["seed"], d.get("unsupported"))


@dataclass
class Plan:
    jobs: list[Job]
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> combinations not planned

    def summary(self) -> str:
        n_un = sum(j.unsupported is not None for j in self.jobs)
        parts = [f"{len(self.jobs)} jobs"]
        if n_un:
            parts.append(f"{n_un} recorded unsupported without running")
        parts += [f"{n} not planned: {why}" for why, n in self.skipped.items()]
        return "; ".join(parts)


def _resolve_model(m: ModelSpec, base: Path) -> ModelSpec:
    if m.path and not Path(m.path).is_absolute() and (base / m.path).exists():
        return m.model_copy(update={"path": str((base / m.path).resolve())})
    return m


def plan(suite: Suite, base: Path | None = None) -> Plan:
    base = base or Path.cwd()
    keys = list(suite.matrix)
    combos = [dict(zip(keys, vs)) for vs in itertools.product(*(suite.matrix[k] for k in keys))] or [{}]
    adapters = {}
    for d in suite.devices:
        name = d if isinstance(d, str) else d.name
        adapters[name] = ADAPTERS.get(load_profile(name).adapter)
    out = Plan([])
    for m in suite.models:
        m = _resolve_model(m, base)
        for combo in combos:
            variant = Variant(**{**combo, **m.knobs})  # a model's fixed knobs win over the matrix
            for d in suite.devices:
                dname, dthreads = (d, None) if isinstance(d, str) else (d.name, d.threads)
                ad = adapters[dname]
                lack = sorted(set(variant.engine_cls.requires_device) - set(ad.capabilities))
                if lack:
                    why = (f"backend {variant.backend!r} needs a device with {', '.join(lack)}; {dname!r} "
                           f"(adapter {ad.name}) has {', '.join(sorted(ad.capabilities)) or 'none'}")
                    out.skipped[why] = out.skipped.get(why, 0) + 1
                    continue
                for s in suite.scenarios:
                    s = ScenarioSpec(name=s) if isinstance(s, str) else s
                    if s.models and not any(fnmatch.fnmatchcase(m.name, g) for g in s.models):
                        continue
                    why = variant.problem or SCENARIOS.get(s.name).missing(variant.engine_cls, ad)
                    skeys = list(s.sweep)
                    for svals in itertools.product(*(s.sweep[k] for k in skeys)) if skeys else [()]:
                        params = {**s.params, **dict(zip(skeys, svals))}
                        row = {"model": m.name, "device": dname, "scenario": s.name, **variant.dump(), **params}
                        if any(all(row.get(k) == v for k, v in ex.items()) for ex in suite.exclude):
                            continue
                        out.jobs.append(Job(suite.name, m, variant, dname, dthreads, s.name, params,
                                            suite.settings, suite.seed, why))
    return out


def expand(suite: Suite, base: Path | None = None) -> list[Job]:
    return plan(suite, base).jobs
