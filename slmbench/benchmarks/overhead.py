"""Harness overhead: decode tok/s as the latency scenario measures it vs a bare `engine.generate` loop (on torch the
variant's decode path: `fast` by default, `generate` = `model.generate`), same process, same model and settings,
interleaved A/B so drift hits both equally. Decode paths against each other: benchmarks/decode.py.

Bare:    decode tok/s = (N-1) / (median T(generate N) - median T(generate 1))   (no instrumentation at all)
Harness: decode tok/s = (N-1) / (t_last - t_first) from the per-token clock       (what `latency` reports)
"""
from __future__ import annotations

import statistics
import time


def measure(engine, prompt_tokens: int = 128, gen_tokens: int = 64, pairs: int = 10, warmup: int = 2) -> dict:
    from ..contracts import TokenClock
    ids = engine.prompt_ids(prompt_tokens)

    def bare(n):
        t0 = time.perf_counter()
        engine.generate(ids, n)
        return time.perf_counter() - t0

    def harness():
        clock = TokenClock()
        engine.generate(ids, gen_tokens, clock)
        return (gen_tokens - 1) / (clock.times[-1] - clock.times[0])

    for _ in range(warmup):
        bare(gen_tokens), bare(1), harness()
    t_n, t_1, h = [], [], []
    for _ in range(pairs):
        t_n.append(bare(gen_tokens))
        t_1.append(bare(1))
        h.append(harness())
    bare_tok_s = (gen_tokens - 1) / (statistics.median(t_n) - statistics.median(t_1))
    harness_tok_s = statistics.median(h)
    return {"bare_decode_tok_s": bare_tok_s, "harness_decode_tok_s": harness_tok_s,
            "harness_vs_bare": harness_tok_s / bare_tok_s - 1, "pairs": pairs,
            "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "harness_samples": h}
