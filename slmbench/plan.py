"""Suite files: schema, validation with one-line errors, and matrix expansion into jobs (the plan)."""
from __future__ import annotations

import fnmatch
import hashlib
import inspect
import itertools
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSettings(_Strict):
    warmup: int = Field(1, ge=0, le=100)
    repetitions: int = Field(5, ge=1, le=10_000, description="minimum number of timed repetitions")
    min_duration_s: float = Field(3.0, ge=0, le=3600, description="minimum total timed duration")
    max_repetitions: int = Field(200, ge=1, le=100_000)
    timeout_s: float = Field(900, gt=0, le=86_400, description="wall-clock limit per job")
    memory_limit_gb: float | None = Field(None, gt=0, le=4096,
                                         description="per-job resident memory cap (default: 90% of RAM)")

    @model_validator(mode="after")
    def _reps(self):
        if self.max_repetitions < self.repetitions:
            raise ValueError(f"max_repetitions ({self.max_repetitions}) is below repetitions ({self.repetitions})")
        return self


# Fields added after results were first stored: left out of a job's identity while at their default, so that the
# keys of existing runs (resume, baselines) do not change when a field is added.
LATER_FIELDS = {"overrides", "attention"}


def _stable_dump(m: BaseModel) -> dict:
    d = m.model_dump()
    for k in LATER_FIELDS & set(d):
        if d[k] == type(m).model_fields[k].get_default(call_default_factory=True):
            del d[k]
    return d


class Variant(_Strict):
    """Knobs that change what is measured. Every result row carries all of them."""
    backend: str = "torch"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    quantization: str = Field("none", description="torch: none|int8_dynamic|int8_weight_only|intx4_weight_only|"
                              "int8da_int4w|...; llamacpp: f32|f16|q8_0|q4_0|q4_k_m|... (slmbench.quant)")
    compile: bool = False
    load: Literal["mmap", "full"] = Field("mmap", description="weights memory-mapped, or read fully into memory")
    attention: Literal["native", "mha"] = Field("native", description="mha: a GQA/MQA model with each KV head "
                                                "repeated (the same function, more KV cache): what GQA saves")
    threads: int | None = Field(None, ge=1, le=1024)
    # Test-only knobs that inject a known regression, so detection can be proven on real runs.
    inject_decode_delay_ms: float = Field(0.0, ge=0, le=10_000)
    inject_alloc_mb: float = Field(0.0, ge=0, le=1_000_000)


class ModelSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:+-]+$")
    source: str = Field(description="smollm2 | hf | random (see slmbench.models)")
    path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="random-init config overrides")
    overrides: dict[str, Any] = Field(default_factory=dict, description="source recipe: fields deep-merged into "
                                      "the recipe (one knob changed, e.g. {train: {alpha: 1.0}, seed: 1})")
    trust_remote_code: bool = False
    knobs: dict[str, Any] = Field(default_factory=dict, description="fixed variant knobs for this model")


DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a file stem in devices/: no paths


class DeviceRef(_Strict):
    name: str = Field(min_length=1, pattern=DEVICE_NAME, description="a profile in devices/ (without .yaml)")
    threads: int | None = Field(None, ge=1, le=1024)


class ScenarioSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="each combination is its own job")
    models: list[str] = Field(default_factory=list, description="run only on these models (names or globs); "
                                                                "empty: every model")

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
    regression: dict[str, Any] = Field(default_factory=dict, description="verdict thresholds (slmbench.analysis.regression)")
    claims: list[dict[str, Any]] = Field(default_factory=list, description="claims and the comparisons that decide "
                                                                           "them (slmbench.analysis.claims)")
    quick: dict[str, Any] = Field(default_factory=dict, description="patch applied by `--quick` (apply_quick)")


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
        ident = {"model": _stable_dump(self.model), "variant": _stable_dump(self.variant), "device": self.device,
                 "threads": self.device_threads, "scenario": self.scenario, "params": self.params, "seed": self.seed}
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        knobs = ",".join(f"{k}={v}" for k, v in self.variant_knobs().items())
        ps = ",".join(f"{k}={v}" for k, v in self.params.items() if not isinstance(v, (list, dict)))
        return f"{self.model.name}[{knobs}] @{self.device} {self.scenario}" + (f"({ps})" if ps else "")

    def variant_dump(self) -> dict:
        """All knobs, except later-added ones at their default (rows stay comparable with older runs)."""
        return _stable_dump(self.variant)

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
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return _loc(err["loc"]), msg


MAX_YAML_BYTES = 1 << 20


class _SafeLoader(yaml.SafeLoader):
    """yaml.safe_load (no Python objects, ever) that also refuses a key given twice — YAML would keep the last."""


def _mapping_no_dups(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(k, deep=True)
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            break
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_dups)


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if p.is_dir():
        raise UserError("is a directory, expected a YAML file", file=str(path))
    if not p.is_file():
        raise UserError("file not found", file=str(path))
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"file is larger than {MAX_YAML_BYTES >> 20} MiB; not a suite", file=str(path))
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte {e.start})", file=str(path))
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror or e}", file=str(path))
    if not text.strip():
        raise UserError("empty file", file=str(path))
    try:
        return yaml.load(text, Loader=_SafeLoader)
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


def parse_suite(path: str | Path, quick: bool = False) -> Suite:
    """The schema only (no model, device or data checks): for reading a suite back, e.g. its claims."""
    data = load_yaml(path)
    return parse_model(Suite, apply_quick(data, str(path)) if quick else data, str(path))


def suite_sha(path: str | Path, quick: bool = False) -> str:
    """The identity of a suite file as run (its --quick variant is another suite): resume and reports check it."""
    return hashlib.sha256(Path(path).read_bytes() + (b"+quick" if quick else b"")).hexdigest()[:16]


def load_suite(path: str | Path, quick: bool = False) -> Suite:
    """Parse and check a suite: schema, then references (models, devices, scenarios, knobs) — before any work.
    quick: apply the suite's `quick:` patch first (a smaller variant of the same experiments, e.g. for CI)."""
    file = str(path)
    data = load_yaml(path)
    if quick:
        data = apply_quick(data, file)
    suite = parse_model(Suite, data, file)
    _check_refs(suite, file, Path(path).resolve().parent, quick)
    return suite


QUICK_KEYS = {"name", "description", "settings", "seed", "devices", "matrix", "exclude", "models", "scenarios"}


def apply_quick(data: Any, file: str) -> dict:
    """The `quick:` patch. settings/matrix merge; `models` and `scenarios` map a name glob to a patch deep-merged
    into every model / scenario it matches (null drops them); other keys replace. The suite is renamed NAME-quick
    so that its runs, --resume and baselines never mix with the full suite's."""
    import fnmatch
    from .factory.recipe import deep_merge
    if not isinstance(data, dict) or not isinstance(data.get("quick"), dict) or not data["quick"]:
        raise UserError("--quick: this suite has no `quick:` patch", file=file, field="quick")
    q, out = data["quick"], {k: v for k, v in data.items() if k != "quick"}
    for k, v in q.items():
        if k not in QUICK_KEYS:
            raise UserError(f"unknown key (known: {', '.join(sorted(QUICK_KEYS))})", file=file, field=f"quick.{k}")
        if k in ("models", "scenarios"):
            if not isinstance(v, dict):
                raise UserError("expected a mapping: name glob -> patch (or null to drop)", file=file,
                                field=f"quick.{k}")
            items = [x if isinstance(x, dict) else {"name": x} for x in out.get(k, [])]
            # scenario keys may say which of several same-named scenarios: "latency#2" is the second latency
            nth = [sum(y.get("name") == x.get("name") for y in items[:i + 1]) for i, x in enumerate(items)]
            for glob, patch in v.items():
                g, _, n = str(glob).partition("#")
                hits = [id(x) for x, c in zip(items, nth) if fnmatch.fnmatchcase(str(x.get("name")), g)
                        and (not n or str(c) == n)]
                if not hits:
                    raise UserError(f"matches no {k[:-1]}", file=file, field=f"quick.{k}.{glob}")
                keep = [(x if id(x) not in hits else (None if patch is None else deep_merge(x, patch)), c)
                        for x, c in zip(items, nth)]
                items, nth = [x for x, _ in keep if x is not None], [c for x, c in keep if x is not None]
            out[k] = items
        elif k in ("settings", "matrix") and isinstance(v, dict):
            out[k] = deep_merge(out.get(k) or {}, v)
        else:
            out[k] = v
    if isinstance(q.get("models"), dict):  # a dropped model leaves the scenarios that named it
        left = {m.get("name") for m in out.get("models", []) if isinstance(m, dict)}
        kept = []
        for sc in out.get("scenarios", []):
            if isinstance(sc, dict) and isinstance(sc.get("models"), list) and sc["models"]:
                sc["models"] = [g for g in sc["models"] if g in left or any(c in str(g) for c in "*?[")]
                if not sc["models"]:
                    continue  # every model it named is gone (an empty list would mean every model)
            kept.append(sc)
        out["scenarios"] = kept
    out.setdefault("name", "suite")
    if "name" not in q:
        out["name"] = f"{out['name']}-quick"
    return out


def _check_refs(suite: Suite, file: str, base: Path, quick: bool = False) -> None:
    """Cheap checks first; model sources last (a random-init config check imports transformers)."""

    from . import scenarios  # registry
    from .adapters import load_profile

    from .analysis.regression import parse_rules
    try:
        parse_rules(suite.regression)
    except UserError as e:
        raise UserError(e.message, file=file, field=e.field)
    names = [m.name for m in suite.models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"duplicate model name {sorted(dup)[0]!r}", file=file, field="models")
    for i, d in enumerate(suite.devices):
        dname = d if isinstance(d, str) else d.name
        if not re.match(DEVICE_NAME, dname):
            raise UserError(f"expected a device profile name (letters, digits, '_.-'), got {dname!r}", file=file,
                            field=f"devices[{i}]")
        load_profile(dname, file=file, field=f"devices[{i}]")
    kw = {"models": suite.models} if "models" in inspect.signature(scenarios.check_spec).parameters else {}
    for i, s in enumerate(suite.scenarios):
        spec = ScenarioSpec(name=s) if isinstance(s, str) else s
        scenarios.check_spec(spec, file, f"scenarios[{i}]", **kw)  # models: e.g. draft vs target tokenizers
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
    _check_exclude(suite, file)
    for i, s in enumerate(suite.scenarios):
        for g in [] if isinstance(s, str) else s.models:
            if not any(fnmatch.fnmatchcase(n, g) for n in names):
                raise UserError(f"matches no model of this suite ({', '.join(names)})", file=file,
                                field=f"scenarios[{i}].models")
    if suite.claims:
        from .analysis.claims import check_claims
        check_claims(suite, file, models_required=not quick)  # quick may drop a model: its claim is inconclusive
    if not expand(suite):
        raise UserError("the matrix expands to no jobs (everything excluded)", file=file, field="exclude")
    with _quiet_transformers(any(m.source == "random" for m in suite.models)):
        _check_models(suite, file, base)


@contextmanager
def _quiet_transformers(active: bool):
    """Config checks must not print transformers' warnings: a bad suite gives exactly one line."""
    if not active:
        yield
        return
    from transformers.utils import logging as tl
    old = tl.get_verbosity()
    tl.set_verbosity_error()
    try:
        yield
    finally:
        tl.set_verbosity(old)


def _check_models(suite: Suite, file: str, base: Path) -> None:
    from . import models
    for i, m in enumerate(suite.models):
        if m.config and m.source != "random":  # a mismatch that would otherwise be silently ignored
            raise UserError(f"config (random-init overrides) does not apply to source {m.source!r}; only to "
                            "source 'random'", file=file, field=f"models[{i}].config")
        if m.overrides and m.source != "recipe":
            raise UserError(f"overrides (recipe fields) do not apply to source {m.source!r}; only to source 'recipe'",
                            file=file, field=f"models[{i}].overrides")
        if m.path and m.source == "random":
            raise UserError("path does not apply to source 'random' (a random-init model has no files)",
                            file=file, field=f"models[{i}].path")
        models.check_spec(m, file, f"models[{i}]", base)
        try:
            Variant(**m.knobs)
        except ValidationError as e:
            loc, msg = _first_error(e)
            raise UserError(msg, file=file, field=f"models[{i}].knobs.{loc}")
        _check_remote_code(m, file, f"models[{i}]", base)


def _check_exclude(suite: Suite, file: str) -> None:
    """An exclude key that matches nothing is a typo that silently runs everything: refuse it."""
    from . import scenarios
    known = {"model", "device", "scenario", *Variant.model_fields}
    for s in suite.scenarios:
        known |= set(scenarios.get(s if isinstance(s, str) else s.name).params.model_fields)
    for i, ex in enumerate(suite.exclude):
        for k in ex:
            if k not in known:
                raise UserError(f"unknown key (known: {', '.join(sorted(known))})", file=file,
                                field=f"exclude[{i}].{k}")


def _check_remote_code(m: ModelSpec, file: str, field: str, base: Path) -> None:
    """A model directory that ships Python (auto_map) runs it only if the suite says trust_remote_code: true."""
    if m.trust_remote_code or not m.path:
        return
    d = Path(m.path) if Path(m.path).is_absolute() else base / m.path
    for name in ("config.json", "tokenizer_config.json"):
        f = d / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"unreadable {name}: {e}", file=file, field=f"{field}.path")
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            raise UserError(f"{d / name} asks to run the model's own Python code (auto_map); refused unless this "
                            "model sets trust_remote_code: true", file=file, field=f"{field}.trust_remote_code")


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
                    if s.models and not any(fnmatch.fnmatchcase(m.name, g) for g in s.models):
                        continue
                    skeys = list(s.sweep)
                    for svals in itertools.product(*(s.sweep[k] for k in skeys)) if skeys else [()]:
                        params = {**s.params, **dict(zip(skeys, svals))}
                        row = {"model": m.name, "device": dname, "scenario": s.name, **variant.model_dump(), **params}
                        if any(all(row.get(k) == v for k, v in ex.items()) for ex in suite.exclude):
                            continue
                        jobs.append(Job(suite.name, m, variant, dname, dthreads, s.name, params,
                                        suite.settings, suite.seed))
    return jobs
