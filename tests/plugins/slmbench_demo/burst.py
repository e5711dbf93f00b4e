"""Scenario `burst`: decode tokens/s of short greedy bursts, timed per token by the engine's clock."""
from __future__ import annotations

from pydantic import Field

from slmbench.contracts import JobContext, Params, Scenario, TokenClock, register_scenario
from slmbench.contracts.engine import GENERATE
from slmbench.metrics import Metric


class BurstParams(Params):
    prompt_tokens: int = Field(16, ge=1, le=4096)
    gen_tokens: int = Field(8, ge=2, le=4096)


@register_scenario
class Burst(Scenario):
    name, Params = "burst", BurstParams
    requires = frozenset({GENERATE})

    def run(self, ctx: JobContext, p: BurstParams) -> list[Metric]:
        ids = ctx.engine.prompt_ids(p.prompt_tokens)

        def once():
            clock = TokenClock()
            ctx.engine.generate(ids, p.gen_tokens, clock)
            return (p.gen_tokens - 1) / max(clock.times[-1] - clock.times[0], 1e-9)
        return [Metric.from_samples("burst_tok_s", ctx.repeat(once), "tok/s", higher_is_better=True,
                                    note=f"{p.gen_tokens} tokens per burst, first excluded")]
