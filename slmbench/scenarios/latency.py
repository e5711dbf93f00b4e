"""Latency: load time, TTFT, prefill tok/s, decode tok/s over the 2nd+ tokens, inter-token latency percentiles,
at a prompt length, a generation length and a context depth (tokens already in the KV cache, as llama-bench -d).

The timed loop is `model.generate` itself; the only instrumentation is one perf_counter() per token."""
from __future__ import annotations

import time

from pydantic import Field

from ..metrics import Metric
from ..stats import percentile
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import GENERATE, PREFILL, WEIGHTS


class LatencyParams(Params):
    prompt_tokens: int = Field(128, ge=1, le=131072)
    gen_tokens: int = Field(32, ge=2, le=65536, description="fixed: min = max new tokens")
    depth: int = Field(0, ge=0, le=131072, description="tokens already in the KV cache before the prompt")


@register_scenario
class Latency(Scenario):
    name, Params = 'latency', LatencyParams
    requires = frozenset({GENERATE, PREFILL})

    def run(self, ctx: JobContext, p: LatencyParams) -> list[Metric]:
        eng = ctx.engine
        ids = eng.prompt_ids(p.depth + p.prompt_tokens)
        from ..contracts import TokenClock
        delay = ctx.variant.inject_decode_delay_ms / 1000

        def once():
            past = eng.prefill(ids[:p.depth]) if p.depth else None  # untimed: the context already there
            t0 = time.perf_counter()
            eng.prefill(ids[p.depth:], past)
            prefill_s = time.perf_counter() - t0
            past = eng.prefill(ids[:p.depth]) if p.depth else None  # generate() extends the cache: use a fresh one
            clock = TokenClock(delay)
            t0 = time.perf_counter()
            eng.generate(ids, p.gen_tokens, clock, past)
            ts = clock.times
            itl = [b - a for a, b in zip(ts, ts[1:])]
            return {"prefill_s": prefill_s, "ttft_s": ts[0] - t0, "decode_s": ts[-1] - ts[0], "itl": itl}

        reps = ctx.repeat(once)
        n_dec = p.gen_tokens - 1
        decode = [n_dec / r["decode_s"] for r in reps]
        itls = [x * 1000 for r in reps for x in r["itl"]]
        out = [
            Metric("load_s", ctx.load_s, "s", higher_is_better=False, note="model load to ready, once per job"),
            Metric.from_samples("ttft_ms", [r["ttft_s"] * 1000 for r in reps], "ms", higher_is_better=False),
            Metric.from_samples("prefill_tok_s", [p.prompt_tokens / r["prefill_s"] for r in reps], "tok/s",
                                higher_is_better=True, note="one forward pass over the prompt, tokenization excluded"),
            Metric.from_samples("decode_tok_s", decode, "tok/s", higher_is_better=True,
                                note=f"(gen_tokens-1)/time from 1st to last token, over {len(reps)} reps"),
        ]
        for q in (50, 90, 99):
            out.append(Metric(f"itl_p{q}_ms", percentile(itls, q), "ms", n=len(itls), higher_is_better=False))
        bw = ctx.adapter.bandwidth()
        if bw and bw.get("gbs") and WEIGHTS in eng.capabilities:  # a roofline needs the bytes read per token
            bpt = eng.weight_bytes_per_token()
            roof = bw["gbs"] * 1e9 / bpt
            out.append(Metric("decode_roofline_tok_s", roof, "tok/s", note=f"bandwidth {bw['gbs']:.1f} GB/s "
                              f"({bw.get('method', '')}) ÷ weight bytes/token (info.model.weights_per_token_bytes)"))
            out.append(Metric.from_samples("decode_roofline_frac", [d / roof for d in decode], "fraction",
                                           higher_is_better=True, note="decode tok/s × bytes/token ÷ bandwidth"))
        return out
