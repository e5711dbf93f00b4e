"""Suite files: schema, validation with one-line errors, and matrix expansion into jobs (the plan)."""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSettings(_Strict):
    warmup: int = Field(1, ge=0, le=100)
    repetitions: int = Field(5, ge=1, le=10_000, description="minimum number of timed repetitions")
    min_duration_s: float = Field(3.0, ge=0, le=3600, description="minimum total timed duration")
    max_repetitions: int = Field(200, ge=1, le=100_000)
    timeout_s: float = Field(900, gt=0, le=86_400, description="wall-clock limit per job")
    memory_limit_gb: float | None = Field(None, gt=0, le=4096, description="per-job resident memory cap")


class Variant(_Strict):
    """Knobs that change what is measured. Every result row carries all of them."""
    backend: str = "torch"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    quantization: str = "none"
    compile: bool = False
    threads: int | None = Field(None, ge=1, le=1024)
    # Test-only knobs that inject a known regression, so detection can be proven on real runs.
    inject_decode_delay_ms: float = Field(0.0, ge=0, le=10_000)
    inject_alloc_mb: float = Field(0.0, ge=0, le=1_000_000)


class ModelSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:+-]+$")
    source: str = Field(description="smollm2 | hf | random (see slmbench.models)")
    path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="random-init config overrides")
    trust_remote_code: bool = False
    knobs: dict[str, Any] = Field(default_factory=dict, description="fixed variant knobs for this model")


class DeviceRef(_Strict):
    name: str = Field(min_length=1, description="a profile in devices/ (without .yaml)")
    threads: int | None = Field(None, ge=1, le=1024)


class ScenarioSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="each combination is its own job")

    @field_validator("sweep")
    @classmethod
    def _nonempty(cls, v):
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"sweep '{k}' is an empty list")
        return v


class Suite(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    settings: RunSettings = Field(default_factory=RunSettings)
    models: list[ModelSpec] = Field(min_length=1)
    devices: list[DeviceRef | str] = Field(min_length=1)
    scenarios: list[ScenarioSpec | str] = Field(min_length=1)
    matrix: dict[str, list[Any]] = Field(default_factory=dict, description="variant knob -> values")
    exclude: list[dict[str, Any]] = Field(default_factory=list)


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
    key: str = field(init=False)

    def __post_init__(self):
        ident = {"model": self.model.model_dump(), "variant": self.variant.model_dump(), "device": self.device,
                 "threads": self.device_threads, "scenario": self.scenario, "params": self.params, "seed": self.seed}
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        knobs = ",".join(f"{k}={v}" for k, v in self.variant_knobs().items())
        ps = ",".join(f"{k}={v}" for k, v in self.params.items() if not isinstance(v, (list, dict)))
        return f"{self.model.name}[{knobs}] @{self.device} {self.scenario}" + (f"({ps})" if ps else "")

    def variant_knobs(self) -> dict:
        """Knobs that differ from the defaults: the short, readable variant name."""
        return self.variant.model_dump(exclude_defaults=True)

    def to_json(self) -> dict:
        return {"suite": self.suite, "model": self.model.model_dump(), "variant": self.variant.model_dump(),
                "device": self.device, "device_threads": self.device_threads, "scenario": self.scenario,
                "params": self.params, "settings": self.settings.model_dump(), "seed": self.seed, "key": self.key}

    @classmethod
    def from_json(cls, d: dict) -> "Job":
        return cls(d["suite"], ModelSpec(**d["model"]), Variant(**d["variant"]), d["device"], d["device_threads"],
                   d["scenario"], d["params"], RunSettings(**d["settings"]), d["seed"])


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("DeviceRef", "ScenarioSpec", "str"):  # union branch names are noise to the user
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _first_error(e: ValidationError) -> tuple[str, str]:
    errs = e.errors()
    # Prefer errors from the structured branch of `str | Model` unions over "should be a string".
    errs.sort(key=lambda x: ("str" in x["loc"] or x["type"] == "string_type"))
    err = errs[0]
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return _loc(err["loc"]), msg


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if not p.is_file():
        raise UserError("file not found", file=str(path))
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read: {e}", file=str(path))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", file=str(path), field=where)


def parse_model(cls: type[BaseModel], data: Any, file: str) -> BaseModel:
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", file=file)
    try:
        return cls(**data)
    except ValidationError as e:
        loc, msg = _first_error(e)
        raise UserError(msg, file=file, field=loc)


def load_suite(path: str | Path) -> Suite:
    """Parse and check a suite: schema, then references (models, devices, scenarios, knobs) — before any work."""
    file = str(path)
    suite = parse_model(Suite, load_yaml(path), file)
    _check_refs(suite, file, Path(path).resolve().parent)
    return suite


def _check_refs(suite: Suite, file: str, base: Path) -> None:
    from . import models, scenarios  # registries
    from .adapters import load_profile

    names = [m.name for m in suite.models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"duplicate model name {sorted(dup)[0]!r}", file=file, field="models")
    for i, m in enumerate(suite.models):
        models.check_spec(m, file, f"models[{i}]", base)
        try:
            Variant(**m.knobs)
        except ValidationError as e:
            loc, msg = _first_error(e)
            raise UserError(msg, file=file, field=f"models[{i}].knobs.{loc}")
    for i, d in enumerate(suite.devices):
        load_profile(d if isinstance(d, str) else d.name, file=file, field=f"devices[{i}]")
    for i, s in enumerate(suite.scenarios):
        spec = ScenarioSpec(name=s) if isinstance(s, str) else s
        scenarios.check_spec(spec, file, f"scenarios[{i}]")
    for k, vals in suite.matrix.items():
        if k not in Variant.model_fields:
            raise UserError(f"unknown knob (known: {', '.join(Variant.model_fields)})", file=file, field=f"matrix.{k}")
        if not isinstance(vals, list) or not vals:
            raise UserError("expected a non-empty list of values", file=file, field=f"matrix.{k}")
        for j, v in enumerate(vals):
            try:
                Variant(**{k: v})
            except ValidationError as e:
                raise UserError(e.errors()[0]["msg"], file=file, field=f"matrix.{k}[{j}]")
    if not expand(suite):
        raise UserError("the matrix expands to no jobs (everything excluded)", file=file, field="exclude")


def _resolve_model(m: ModelSpec, base: Path) -> ModelSpec:
    if m.path and not Path(m.path).is_absolute() and (base / m.path).exists():
        return m.model_copy(update={"path": str((base / m.path).resolve())})
    return m


def expand(suite: Suite, base: Path | None = None) -> list[Job]:
    """suite → plan: models × matrix × devices × scenarios × sweeps, minus `exclude`."""
    base = base or Path.cwd()
    keys = list(suite.matrix)
    combos = [dict(zip(keys, vs)) for vs in itertools.product(*(suite.matrix[k] for k in keys))] or [{}]
    jobs: list[Job] = []
    for m in suite.models:
        m = _resolve_model(m, base)
        for combo in combos:
            knobs = {**combo, **m.knobs}  # a model's fixed knobs win over the matrix
            variant = Variant(**knobs)
            for d in suite.devices:
                dname, dthreads = (d, None) if isinstance(d, str) else (d.name, d.threads)
                for s in suite.scenarios:
                    s = ScenarioSpec(name=s) if isinstance(s, str) else s
                    skeys = list(s.sweep)
                    for svals in itertools.product(*(s.sweep[k] for k in skeys)) if skeys else [()]:
                        params = {**s.params, **dict(zip(skeys, svals))}
                        row = {"model": m.name, "device": dname, "scenario": s.name, **variant.model_dump(), **params}
                        if any(all(row.get(k) == v for k, v in ex.items()) for ex in suite.exclude):
                            continue
                        jobs.append(Job(suite.name, m, variant, dname, dthreads, s.name, params,
                                        suite.settings, suite.seed))
    return jobs
