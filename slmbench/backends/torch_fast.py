"""The torch backend's fast greedy decode (`decode: fast`, the default): the "gpt-fast" recipe on a CPU, without a
compiler — a static KV cache and one flat single-token step per new token, no per-token Python beyond that step.

Why it is faster: `model.generate` spends most of a small model's decode step in Python, not in kernels — per token
it prepares inputs, builds a mask, walks ~30 decorated module calls per layer with keyword plumbing, grows a
DynamicCache by concatenation, runs logits processors and stopping criteria. The step here issues the same ATen
kernels (the same matmuls, one per projection; the same RMSNorm, rotary and SDPA calls) straight from one loop over
pre-fetched weights, writes K/V into a preallocated cache in place, and attends to a view of its filled part.

Token identity with `model.generate` (greedy, min = max new tokens) is by construction, not by tolerance:
- the prompt and the first new token ARE `model.generate(max_new_tokens=1)` (same prefill, same first token, and
  the TokenClock sees the prompt and the first token from transformers' own streamer calls);
- every decode step computes the same ops on the same values as transformers' eager decode step with its
  DynamicCache (keys of exactly the filled length, no mask, GQA inside SDPA), then masks EOS (as the
  min_new_tokens processor does) and takes the argmax of the float32 logits.
tests/test_fast_decode.py checks it bit for bit (logits) on a tiny random model and token for token on SmolLM2.

Where it does not apply (an architecture other than Llama-style decoder layers, a sliding window, logits
processors from the model's generation config, ...) `plan()` says why and the engine runs `model.generate`
(recorded in the job's info as `decode_path`)."""
from __future__ import annotations

from typing import Any

# Llama-style decoder layers: pre-norm RMSNorm, q/k/v/o projections (optional bias), default/scaled RoPE from the
# model's own rotary module, SDPA, gated MLP. Norm classes whose forward is LlamaRMSNorm's.
_ARCHS = {"llama", "mistral", "qwen2"}
_NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"}
# generation-config fields that add a logits processor under greedy decoding (the fast step adds only EOS masking)
_PROCESSOR_FIELDS = {"repetition_penalty": (None, 1.0), "no_repeat_ngram_size": (None, 0),
                     "encoder_no_repeat_ngram_size": (None, 0), "bad_words_ids": (None,), "sequence_bias": (None,),
                     "suppress_tokens": (None,), "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,),
                     "forced_eos_token_id": (None,), "forced_decoder_ids": (None,), "min_length": (None, 0),
                     "exponential_decay_length_penalty": (None,), "renormalize_logits": (None, False),
                     "guidance_scale": (None, 1.0), "watermarking_config": (None,), "epsilon_cutoff": (None, 0.0)}


def unsupported_reason(model) -> str | None:
    """Why the fast step cannot run this model (None: it can)."""
    cfg = model.config
    if cfg.model_type not in _ARCHS:
        return f"model_type {cfg.model_type!r} (the fast step knows {', '.join(sorted(_ARCHS))})"
    if getattr(cfg, "_attn_implementation", "sdpa") != "sdpa":
        return f"attention implementation {cfg._attn_implementation!r} (the fast step reproduces sdpa)"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "a sliding-window attention"
    base = getattr(model, "model", None)
    layers = getattr(base, "layers", None)
    if layers is None or not hasattr(base, "rotary_emb") or not hasattr(base, "embed_tokens"):
        return "no model.layers / rotary_emb / embed_tokens"
    for l in layers:
        att, mlp = getattr(l, "self_attn", None), getattr(l, "mlp", None)
        if att is None or mlp is None or not all(hasattr(att, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return f"decoder layer {type(l).__name__} is not Llama-style"
        if not all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return f"MLP {type(mlp).__name__} is not a gated MLP"
        for norm in (l.input_layernorm, l.post_attention_layernorm):
            if type(norm).__name__ not in _NORMS:
                return f"norm {type(norm).__name__}"
    if type(base.norm).__name__ not in _NORMS:
        return f"norm {type(base.norm).__name__}"
    gc = model.generation_config
    for f, neutral in _PROCESSOR_FIELDS.items():
        if getattr(gc, f, None) not in neutral:
            return f"generation_config.{f}={getattr(gc, f)!r} (a logits processor)"
    return None


def _linear(m):
    """A projection as one call: F.linear on a plain nn.Linear (weights fetched once), else the module itself
    (torchao tensor subclasses go through F.linear too; torch dynamic-int8 Linear, mha's RepeatKVHeads are modules)."""
    import torch
    if type(m) is torch.nn.Linear:
        linear, w, b = torch.nn.functional.linear, m.weight, m.bias

        def proj(x):  # positional: torchao's F.linear overrides read args[1]
            return linear(x, w, b)
        return proj
    return m


class FastDecoder:
    """Greedy decode with a static KV cache and one flat step per token, over a loaded transformers model."""

    def __init__(self, model):
        import torch
        import torch.nn.functional as F
        self.model, self.config = model, model.config
        base = model.model
        self.dtype = base.embed_tokens.weight.dtype
        self.embed = base.embed_tokens
        self.rotary = base.rotary_emb
        self.layers = []
        silu = getattr(model.config, "hidden_act", None) == "silu"
        for l in base.layers:
            att, mlp = l.self_attn, l.mlp
            act = F.silu if silu and type(mlp.act_fn).__name__ in ("SiLU", "SiLUActivation") else mlp.act_fn
            self.layers.append((
                l.input_layernorm.weight, l.input_layernorm.variance_epsilon,
                _linear(att.q_proj), _linear(att.k_proj), _linear(att.v_proj), _linear(att.o_proj),
                att.head_dim, att.scaling, att.num_key_value_groups > 1,
                l.post_attention_layernorm.weight, l.post_attention_layernorm.variance_epsilon,
                _linear(mlp.gate_proj), _linear(mlp.up_proj), _linear(mlp.down_proj), act))
        self.norm = (base.norm.weight, base.norm.variance_epsilon)
        self.head = _linear(model.lm_head)
        self.n_heads = model.config.num_attention_heads
        self.n_kv = getattr(model.config, "num_key_value_heads", None) or self.n_heads
        self.head_dim = self.layers[0][6]
        self._cache: list[tuple[Any, Any]] = []
        self._cache_len = 0
        self._torch = torch

    # --- the static cache ---------------------------------------------------------------------------------------
    def _ensure_cache(self, n: int, device) -> None:
        if self._cache and self._cache_len >= n and self._cache[0][0].device == device:
            return
        torch = self._torch
        n = max(n, 2 * self._cache_len)  # amortised growth across calls with longer contexts
        shape = (1, self.n_kv, n, self.head_dim)
        self._cache = [(torch.empty(shape, dtype=self.dtype, device=device),
                        torch.empty(shape, dtype=self.dtype, device=device)) for _ in self.layers]
        self._cache_len = n

    def _load_cache(self, dyn) -> int:
        """Copy a transformers DynamicCache's keys/values into the static cache; returns its length."""
        n = dyn.get_seq_length()
        for (kc, vc), layer in zip(self._cache, dyn.layers):
            kc[:, :, :n].copy_(layer.keys)
            vc[:, :, :n].copy_(layer.values)
        return n

    # --- one token ------------------------------------------------------------------------------------------------
    def _rms(self, h, w, eps):
        """LlamaRMSNorm.forward, op for op."""
        torch = self._torch
        dt = h.dtype
        x = h.to(torch.float32)
        var = x.pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(var + eps)
        return w * x.to(dt)

    def step(self, tok, pos: int, pos_t):
        """Logits (1, 1, vocab) of token tensor `tok` (1, 1) at position `pos` (pos_t: the same as a (1, 1) tensor);
        K/V of this position are written into the static cache. The ops of transformers' eager decode step."""
        torch = self._torch
        F = torch.nn.functional
        rms = self._rms
        h = self.embed(tok)
        cos, sin = self.rotary(h, pos_t)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        hd = self.head_dim
        half = hd // 2
        n = pos + 1
        for (w1, e1, q_proj, k_proj, v_proj, o_proj, _, scaling, gqa, w2, e2, gate, up, down, act), (kc, vc) \
                in zip(self.layers, self._cache):
            x = rms(h, w1, e1)
            q = q_proj(x).view(1, 1, -1, hd).transpose(1, 2)
            k = k_proj(x).view(1, 1, -1, hd).transpose(1, 2)
            v = v_proj(x).view(1, 1, -1, hd).transpose(1, 2)
            q = (q * cos) + (torch.cat((-q[..., half:], q[..., :half]), dim=-1) * sin)
            k = (k * cos) + (torch.cat((-k[..., half:], k[..., :half]), dim=-1) * sin)
            kc.narrow(2, pos, 1).copy_(k)
            vc.narrow(2, pos, 1).copy_(v)
            a = F.scaled_dot_product_attention(q, kc.narrow(2, 0, n), vc.narrow(2, 0, n), attn_mask=None,
                                               dropout_p=0.0, scale=scaling, is_causal=False, enable_gqa=gqa)
            a = a.reshape(1, -1, 1, hd).transpose(1, 2).contiguous().reshape(1, 1, -1).contiguous()
            h = h + o_proj(a)
            x = rms(h, w2, e2)
            h = h + down(act(gate(x)) * up(x))
        return self.head(rms(h, *self.norm))

    # --- generate -------------------------------------------------------------------------------------------------
    def generate(self, prefill_generate, ids: list[int], n_new: int, clock=None, past=None, eos=()):
        """prefill_generate(cache) → model.generate's output for 1 new token over `ids`, filling `cache` (a
        DynamicCache: `past`, or a fresh one). Returns (sequences tensor (1, len(ids) + n_new), new tokens)."""
        torch = self._torch
        from transformers import DynamicCache
        cache = past if past is not None else DynamicCache(config=self.config)
        out = prefill_generate(cache)  # the prompt + first token: model.generate itself (clock: prompt, token 1)
        first = int(out.sequences[0, -1])
        toks = [first]
        if n_new == 1:
            return out.sequences, toks
        device = out.sequences.device
        n0 = cache.get_seq_length()
        if n0 != len(ids):
            raise RuntimeError(f"fast decode: the prefill cache holds {n0} positions, expected {len(ids)}")
        self._ensure_cache(len(ids) + n_new, device)
        self._load_cache(cache)
        eos_t = torch.tensor(sorted(eos), dtype=torch.long, device=device) if eos else None
        tok = torch.tensor([[first]], dtype=torch.long, device=device)
        put = clock.put if clock is not None else None
        with torch.inference_mode():
            for i in range(n_new - 1):
                pos = n0 + i
                logits = self.step(tok, pos, torch.tensor([[pos]], device=device))
                scores = logits[:, -1].to(dtype=torch.float32)
                if eos_t is not None:
                    scores.index_fill_(-1, eos_t, float("-inf"))  # min_new_tokens = n_new: EOS never chosen
                tok = scores.argmax(-1, keepdim=True)
                t = int(tok)  # one sync per token, as transformers' streamer
                toks.append(t)
                if put is not None:
                    put(tok[0])
        seq = torch.cat([out.sequences, torch.tensor([toks[1:]], dtype=out.sequences.dtype, device=device)], 1)
        return seq, toks
