"""Memory: peak resident memory (load, generation), weight bytes, and KV-cache bytes per token — measured from
the cache tensors and computed as 2·layers·kv_heads·head_dim·bytes."""
from __future__ import annotations

from pydantic import Field

from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import GENERATE, KV_CACHE, PREFILL, WEIGHTS
from ..contracts.adapter import MEMORY


class MemoryParams(Params):
    prompt_tokens: int = Field(128, ge=1, le=131072)
    gen_tokens: int = Field(32, ge=2, le=65536)


@register_scenario
class Memory(Scenario):
    name, Params = 'memory', MemoryParams
    requires = frozenset({GENERATE, PREFILL, KV_CACHE, WEIGHTS})
    requires_device = frozenset({MEMORY})

    def run(self, ctx: JobContext, p: MemoryParams) -> list[Metric]:
        eng, ad = ctx.engine, ctx.adapter
        kind = ad.memory_kind
        ids = eng.prompt_ids(p.prompt_tokens)
        ad.reset_peak_memory()
        eng.generate(ids, p.gen_tokens)
        peak_gen = ad.peak_memory_bytes()
        cache = eng.prefill(ids)
        kv_bytes, seq = eng.kv_bytes_measured(cache)
        MB = 1e6
        out = [
            Metric("peak_mem_mb", peak_gen / MB, "MB", higher_is_better=False, labels={"kind": kind},
                   note=f"peak {kind} over load + generate({p.prompt_tokens}+{p.gen_tokens}) (kernel high-water mark)"),
            Metric("weights_mb", eng.weight_bytes() / MB, "MB", higher_is_better=False, note="unique weight tensors"),
            Metric("file_mb", eng.file_bytes() / MB, "MB", higher_is_better=False, note="size of the deployable file"),
            Metric("params_m", eng.param_count() / 1e6, "M params"),
            Metric("kv_bytes_per_token", kv_bytes / seq, "B/token", higher_is_better=False,
                   note=f"measured: cache tensors after a {seq}-token prefill"),
            Metric("kv_bytes_per_token_formula", eng.kv_bytes_per_token_formula(seq), "B/token",
                   note=f"2·layers·kv_heads·head_dim·bytes over {seq} tokens; sliding-window layers: at most the window"),
        ]
        if ctx.load_peak_bytes is not None:
            out.insert(0, Metric("load_peak_mem_mb", ctx.load_peak_bytes / MB, "MB", higher_is_better=False,
                                 labels={"kind": kind}, note="peak during model load"))
        if ctx.baseline_rss_bytes is not None:
            out.append(Metric("baseline_rss_mb", ctx.baseline_rss_bytes / MB, "MB",
                              note="process RSS before loading (python + libraries)"))
        return out
