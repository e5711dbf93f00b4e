"""Scenarios: what is measured. One registry; a scenario is a function + a pydantic model of its params.

    @register_scenario("latency", Params)
    def run(ctx: JobContext, p: Params) -> list[Metric]: ...

Scenarios don't know which executor runs them, nor which device: they use ctx.engine and ctx.adapter.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserError


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class ScenarioDef:
    name: str
    fn: Callable
    params: type[Params]
    needs_engine: bool = True


SCENARIOS: dict[str, ScenarioDef] = {}


def register_scenario(name: str, params: type[Params] = Params, needs_engine: bool = True):
    def deco(fn):
        SCENARIOS[name] = ScenarioDef(name, fn, params, needs_engine)
        return fn
    return deco


def _load_builtins() -> None:
    from . import energy, faults, heldout, latency, memory  # noqa: F401  (faults: test-only fault injection)
    for optional in ("accuracy", "perplexity", "speculative", "serving"):
        try:
            __import__(f"{__name__}.{optional}")
        except ImportError as e:  # a scenario whose module is absent or whose optional deps are missing
            if f"{__name__}.{optional}" not in str(e):
                raise


def get(name: str) -> ScenarioDef:
    _load_builtins()
    return SCENARIOS[name]


def check_spec(spec, file: str, field: str, models=()) -> None:
    _load_builtins()
    if spec.name not in SCENARIOS:
        raise UserError(f"unknown scenario {spec.name!r} (known: {', '.join(sorted(SCENARIOS))})",
                        file=file, field=f"{field}.name")
    P = SCENARIOS[spec.name].params
    for k in spec.sweep:
        if k not in P.model_fields:
            raise UserError("unknown parameter", file=file, field=f"{field}.sweep.{k}")
    combos = [{}] + [{k: v} for k, vals in spec.sweep.items() for v in vals]
    for c in combos:
        try:
            P(**{**spec.params, **c})
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            part = "sweep" if key in c else "params"
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            raise UserError(msg, file=file, field=f"{field}.{part}.{key}")
    if hasattr(P, "check"):  # deeper checks (files, task names, tokenizers vs the suite's models) before any job runs
        accepts = inspect.signature(P.check).parameters
        for c in combos:
            kw = {k: v for k, v in (("models", models), ("part", "sweep" if c else "params")) if k in accepts}
            P.check(P(**{**spec.params, **c}), file, field, **kw)


@dataclass
class JobContext:
    engine: Any
    adapter: Any
    settings: Any  # suite.RunSettings
    seed: int
    variant: Any
    load_s: float = 0.0
    load_peak_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    progress: Callable[[str], None] = lambda msg: None
    extra: dict = field(default_factory=dict)

    def repeat(self, once: Callable[[], Any]) -> list[Any]:
        """Warm-up, then repetitions until both the minimum count and the minimum duration are met."""
        s = self.settings
        for _ in range(s.warmup):
            once()
        out, t0 = [], time.perf_counter()
        while len(out) < s.max_repetitions and (len(out) < s.repetitions or time.perf_counter() - t0 < s.min_duration_s):
            out.append(once())
            self.progress(f"rep {len(out)}")
        return out
