"""The Scenario contract: what is measured. A scenario is one class: a pydantic model of its parameters, the engine
and adapter capabilities it requires, and run(ctx, params) -> list[Metric].

    @register_scenario
    class Latency(Scenario):
        name, Params = "latency", LatencyParams
        requires = frozenset({GENERATE, PREFILL})

        def run(self, ctx: JobContext, p: LatencyParams) -> list[Metric]: ...

Scenarios don't know which executor runs them, nor which device: they use ctx.engine and ctx.adapter.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from .adapter import KNOWN as ADAPTER_CAPS
from .engine import CAPABILITY_METHODS


class Params(BaseModel):
    """A scenario's parameters. Optional deeper checks at validate: a classmethod
    `check(p, file, field, part="params", models=())` raising UserError."""
    model_config = ConfigDict(extra="forbid")


class Scenario:
    name: ClassVar[str]
    Params: ClassVar[type[Params]] = Params
    requires: ClassVar[frozenset[str]] = frozenset()  # engine capabilities
    requires_device: ClassVar[frozenset[str]] = frozenset()  # adapter capabilities
    needs_engine: ClassVar[bool] = True  # False: no model is loaded (e.g. fault injection)

    @classmethod
    def check_plugin(cls) -> None:
        bad = (set(cls.requires) - set(CAPABILITY_METHODS)) | (set(cls.requires_device) - set(ADAPTER_CAPS))
        if bad:
            raise TypeError(f"scenario {cls.name!r} requires unknown capabilities {sorted(bad)}")
        if not issubclass(cls.Params, Params):
            raise TypeError(f"scenario {cls.name!r}: Params must subclass contracts.scenario.Params")

    def run(self, ctx: "JobContext", p: Params) -> list:
        raise NotImplementedError

    @classmethod
    def missing(cls, engine_cls, adapter_cls) -> str | None:
        """Why this scenario cannot run on that backend/adapter pair, or None."""
        if cls.needs_engine and engine_cls is not None:
            lack = sorted(set(cls.requires) - set(engine_cls.capabilities))
            if lack:
                return (f"scenario {cls.name!r} needs {', '.join(lack)}; backend {engine_cls.name!r} has "
                        f"{', '.join(sorted(engine_cls.capabilities)) or 'none'}")
        lack = sorted(set(cls.requires_device) - set(adapter_cls.capabilities))
        if lack:
            return (f"scenario {cls.name!r} needs device capability {', '.join(lack)}; adapter {adapter_cls.name!r} "
                    f"has {', '.join(sorted(adapter_cls.capabilities)) or 'none'}")
        return None


@dataclass
class JobContext:
    engine: Any
    adapter: Any
    settings: Any  # plan.RunSettings
    seed: int
    variant: Any
    load_s: float = 0.0
    load_peak_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    progress: Callable[[str], None] = lambda msg: None  # reaches the user's terminal (executors relay it)
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
