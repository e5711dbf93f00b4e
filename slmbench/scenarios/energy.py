"""Energy: joules per token by phase (prefill, decode), average power, with the reader's source label.
Decode energy is read around generate() on a prefilled cache, so it holds only decode steps."""
from __future__ import annotations

import time

from pydantic import Field

from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import GENERATE, PREFILL
from ..contracts.adapter import ENERGY


class EnergyParams(Params):
    prompt_tokens: int = Field(128, ge=2, le=131072)
    gen_tokens: int = Field(32, ge=2, le=65536)


@register_scenario
class Energy(Scenario):
    name, Params = 'energy', EnergyParams
    requires = frozenset({GENERATE, PREFILL})
    requires_device = frozenset({ENERGY})

    def run(self, ctx: JobContext, p: EnergyParams) -> list[Metric]:
        eng = ctx.engine
        meter = ctx.adapter.energy_meter()
        if meter is None:
            return [Metric("energy_j_per_token", None, "J/token", note="no energy counter and no power figure in the "
                           "device profile to estimate from")]
        ids = eng.prompt_ids(p.prompt_tokens)

        def once():
            e0, t0 = meter.read(), time.perf_counter()
            eng.prefill(ids)
            e1, t1 = meter.read(), time.perf_counter()
            past = eng.prefill(ids[:-1])  # untimed: the decode phase starts from a warm cache
            e2, t2 = meter.read(), time.perf_counter()
            eng.generate(ids, p.gen_tokens, None, past)
            e3, t3 = meter.read(), time.perf_counter()
            return {"prefill_j": e1 - e0, "prefill_s": t1 - t0, "decode_j": e3 - e2, "decode_s": t3 - t2}

        reps = ctx.repeat(once)
        src, note = meter.source, meter.note
        n = p.gen_tokens
        return [
            Metric.from_samples("prefill_j_per_token", [r["prefill_j"] / p.prompt_tokens for r in reps], "J/token",
                                source=src, higher_is_better=False, labels={"phase": "prefill"}, note=note),
            Metric.from_samples("decode_j_per_token", [r["decode_j"] / n for r in reps], "J/token", source=src,
                                higher_is_better=False, labels={"phase": "decode"}, note=note),
            Metric.from_samples("decode_power_w", [r["decode_j"] / r["decode_s"] for r in reps], "W", source=src,
                                higher_is_better=False, labels={"phase": "decode"}, note=note),
        ]
