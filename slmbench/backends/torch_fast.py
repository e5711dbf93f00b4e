"""The torch backend's fast greedy decode (`decode: fast`, the default; `decode: exact`): the "gpt-fast" recipe on a
CPU without an optimising compiler — a static KV cache and one single-token step per new token whose layer loop is
captured once as TorchScript (`capture()`, at load: `compile_s`), no per-token Python beyond that call.

Why it is faster: `model.generate` spends most of a small model's decode step in Python, not in kernels — per token
it prepares inputs, builds a mask, walks ~30 decorated module calls per layer with keyword plumbing, grows a
DynamicCache by concatenation, runs logits processors and stopping criteria. The step here issues the same ATen
kernels (the same RMSNorm, rotary and SDPA calls) straight from one loop over pre-fetched weights (one TorchScript
call; an eager Python loop where capture does not apply: quantized or wrapped projections), writes K/V into a
preallocated cache in place, and attends to a view of its filled part. Why not torch.compile: inductor fuses
RMSNorm/rotary into its own kernels (other rounding) and the matmuls stay the same MKL calls.

The matrix-vector products are the rest of the story. torch's one-row F.linear is MKL's sgemv, single-threaded at
~15 GB/s here, 35 of a 40 ms SmolLM2 step. `decode: fast` on a float32 CPU model runs them in slmbench's gemv
kernel (backends/gemv_kernel.py) over weights fused (q|k|v, gate|up) and packed on huge pages: 2.4x the ATen step.

Token identity with `model.generate` (greedy, min = max new tokens):
- the prompt and the first new token ARE `model.generate(max_new_tokens=1)` (same prefill, same first token, and
  the TokenClock sees the prompt and the first token from transformers' own streamer calls);
- `decode: exact` (and `fast` where the kernel does not apply): every decode step computes the same ops on the same
  values as transformers' eager decode step with its DynamicCache (keys of exactly the filled length, no mask, GQA
  inside SDPA), then masks EOS (as the min_new_tokens processor does) and takes the argmax of the float32 logits —
  identity by construction, tested bit for bit;
- `decode: fast` with the kernel: the same step except each dot product's summation order, so logits equal to
  rounding and the same tokens on every tested prompt (tests/test_fast_decode.py: the tiny model, and SmolLM2 on
  synthetic, chat and text prompts) — by test, not by construction.

Where it does not apply (an architecture other than Llama-style decoder layers, a sliding window, logits
processors from the model's generation config, ...) `unsupported_reason()` says why and the engine runs `model.generate`
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
                     "guidance_scale": (None, 1.0), "watermarking_config": (None,)}


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


# Rotary, the K/V write into the static cache and SDPA over its filled part: one decode step's attention, shared by
# both captured layer loops below (TorchScript inlines the call: the same ops as the eager loop in `step`).
_ATTEND_TS = """
def attend(q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor, kc: Tensor, vc: Tensor, pos: int, half: int,
           scaling: float, gqa: bool) -> Tensor:
    q = (q * cos) + (q.roll(half, -1) * sin)
    k = (k * cos) + (k.roll(half, -1) * sin)
    kc.narrow(2, pos, 1).copy_(k)
    vc.narrow(2, pos, 1).copy_(v)
    return torch.nn.functional.scaled_dot_product_attention(q, kc.narrow(2, 0, pos + 1), vc.narrow(2, 0, pos + 1),
                                                            None, 0.0, False, scale=scaling, enable_gqa=gqa)
"""

# The layer loop of `FastDecoder.step` as TorchScript (when every projection is a plain bias-free nn.Linear and the
# activation is SiLU): one interpreter call per token instead of ~40 Python→ATen calls per layer. The same ATen ops
# as the eager loop below (no fusion: the CPU fuser is off by default), so the same values, bit for bit.
_LAYERS_TS = """
def layers(h: Tensor, cos: Tensor, sin: Tensor, ws: List[Tensor], eps: List[float], kcs: List[Tensor],
           vcs: List[Tensor], pos: int, hd: int, scaling: float, gqa: bool, f32: bool) -> Tensor:
    half = hd // 2
    for i in range(len(kcs)):
        x = h if f32 else h.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps[2 * i])
        x = ws[9 * i] * (x if f32 else x.to(h.dtype))
        q = torch.nn.functional.linear(x, ws[9 * i + 1]).view(1, -1, 1, hd)
        k = torch.nn.functional.linear(x, ws[9 * i + 2]).view(1, -1, 1, hd)
        v = torch.nn.functional.linear(x, ws[9 * i + 3]).view(1, -1, 1, hd)
        a = attend(q, k, v, cos, sin, kcs[i], vcs[i], pos, half, scaling, gqa)
        h = h + torch.nn.functional.linear(a.reshape(1, 1, -1), ws[9 * i + 4])
        x = h if f32 else h.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps[2 * i + 1])
        x = ws[9 * i + 5] * (x if f32 else x.to(h.dtype))
        g = torch.nn.functional.silu(torch.nn.functional.linear(x, ws[9 * i + 6]))
        h = h + torch.nn.functional.linear(g * torch.nn.functional.linear(x, ws[9 * i + 7]), ws[9 * i + 8])
    return h
"""

# The same layer loop over the gemv kernel (backends/gemv_kernel.py) and fused weights packed on huge pages:
# per layer ws = [input norm, q|k|v (nq + 2·nkv rows), o, post norm, gate|up (2·ffn rows), down]. float32 only.
_LAYERS_GEMV = """
def layers(h: Tensor, cos: Tensor, sin: Tensor, ws: List[Tensor], eps: List[float], kcs: List[Tensor],
           vcs: List[Tensor], pos: int, hd: int, scaling: float, gqa: bool, nq: int, nkv: int, ffn: int) -> Tensor:
    half = hd // 2
    for i in range(len(kcs)):
        x = ws[6 * i] * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps[2 * i]))
        qkv = torch.ops.slmbench.gemv(x, ws[6 * i + 1])
        q = qkv.narrow(-1, 0, nq).view(1, -1, 1, hd)
        k = qkv.narrow(-1, nq, nkv).view(1, -1, 1, hd)
        v = qkv.narrow(-1, nq + nkv, nkv).view(1, -1, 1, hd)
        a = attend(q, k, v, cos, sin, kcs[i], vcs[i], pos, half, scaling, gqa)
        h = h + torch.ops.slmbench.gemv(a.reshape(1, 1, -1), ws[6 * i + 2])
        x = ws[6 * i + 3] * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps[2 * i + 1]))
        gu = torch.ops.slmbench.gemv(x, ws[6 * i + 4])
        h = h + torch.ops.slmbench.gemv(torch.nn.functional.silu(gu.narrow(-1, 0, ffn)) * gu.narrow(-1, ffn, ffn),
                                        ws[6 * i + 5])
    return h
"""


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
        self._ts = None  # the TorchScript layer loop, where it applies (capture())
        self._gemv = None  # the same over the gemv kernel and packed weights (capture(kernel=True))
        self.kernel_note = ""  # how the gemv kernel loaded, or why not
        self.compile_s = 0.0

    def capture(self, kernel: bool = True) -> str:
        """Capture the layer loop as TorchScript and warm it up (the profiling executor settles after a few calls).
        kernel=True (`decode: fast`): over the gemv kernel with fused q|k|v and gate|up weights packed on huge pages
        (float32 on CPU, when the kernel builds: backends/gemv_kernel.py); else, or where the kernel does not apply,
        the ATen loop (`decode: exact`: bit-identical to transformers) where every projection is a plain bias-free
        nn.Linear over a plain tensor (no quantized tensor subclass) and the MLP a SiLU one; else the eager loop.
        Time spent: `compile_s`. Returns which step runs: "gemv", "aten" or "eager"."""
        import time

        import torch
        t0 = time.perf_counter()
        base = self.model.model
        plain = all(type(m) is torch.nn.Linear and m.bias is None and type(m.weight.data) is torch.Tensor
                    for l in base.layers for m in (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj,
                                                   l.self_attn.o_proj, l.mlp.gate_proj, l.mlp.up_proj,
                                                   l.mlp.down_proj))
        if torch._C._jit_can_fuse_on_cpu() or base.embed_tokens.weight.device.type != "cpu":
            return "eager"  # a fuser (on GPUs by default, on CPUs if turned on) rounds differently: stay eager
        if not plain or any(layer[14] is not torch.nn.functional.silu for layer in self.layers) \
                or len({(layer[7], layer[8]) for layer in self.layers}) != 1:
            return "eager"
        step = "aten"
        if kernel and self.dtype == torch.float32:
            from . import gemv_kernel
            if gemv_kernel.load() is not None:
                self._capture_gemv()
                step = "gemv"
            self.kernel_note = gemv_kernel.reason()
        if step == "aten":
            ws = []
            for l in base.layers:
                a, m = l.self_attn, l.mlp
                ws += [l.input_layernorm.weight, a.q_proj.weight, a.k_proj.weight, a.v_proj.weight, a.o_proj.weight,
                       l.post_attention_layernorm.weight, m.gate_proj.weight, m.up_proj.weight, m.down_proj.weight]
            self._ts = (torch.jit.CompilationUnit(_ATTEND_TS + _LAYERS_TS).layers, ws, self._eps(),
                        float(self.layers[0][7]), bool(self.layers[0][8]))
        device = base.embed_tokens.weight.device
        self._ensure_cache(4, device)
        with torch.inference_mode():
            for pos in range(3):  # profiling runs: the executor optimizes the graph after them
                self.step(torch.zeros(1, 1, dtype=torch.long, device=device), pos,
                          torch.tensor([[pos]], device=device))
        self.compile_s = time.perf_counter() - t0
        return step

    def _capture_gemv(self) -> None:
        """Pack the projection weights (fused q|k|v, gate|up; the LM head) into one huge-page buffer, re-point the
        model's own parameters to views of it (model.generate reads the same values from there, and no second copy
        stays resident), and compile the gemv layer loop."""
        import torch
        base, head = self.model.model, self.model.lm_head
        groups = []  # (fused source modules, ...) in buffer order
        for l in base.layers:
            a, m = l.self_attn, l.mlp
            groups += [(a.q_proj, a.k_proj, a.v_proj), (a.o_proj,), (m.gate_proj, m.up_proj), (m.down_proj,)]
        fuse_head = type(head) is torch.nn.Linear and head.bias is None and type(head.weight.data) is torch.Tensor
        if fuse_head:
            groups.append((head,))
        from .gemv_kernel import pack
        shapes = [torch.empty(sum(m.weight.shape[0] for m in g), g[0].weight.shape[1], device="meta") for g in groups]
        packed = pack(shapes)
        with torch.no_grad():
            for g, dst in zip(groups, packed):
                r = 0
                for m in g:
                    n = m.weight.shape[0]
                    part = dst.narrow(0, r, n)
                    part.copy_(m.weight)
                    m.weight.data = part  # the old storage goes (a tied embedding follows: same Parameter)
                    r += n
            # the rest (norms, an untied embedding) out of a memory-mapped checkpoint too, so its mapping — and
            # the resident copy of the weights in it — is released: steady RSS as without packing (measured
            # 1,046 MB both on SmolLM2; 1,585 MB if the mapping is kept). The load's peak holds both copies.
            buf = packed[0].untyped_storage().data_ptr()
            for p in self.model.parameters():
                if p.untyped_storage().data_ptr() != buf:
                    p.data = p.data.clone()
        ws = []
        for i, l in enumerate(base.layers):
            ws += [l.input_layernorm.weight, packed[4 * i], packed[4 * i + 1], l.post_attention_layernorm.weight,
                   packed[4 * i + 2], packed[4 * i + 3]]
        a0, m0 = base.layers[0].self_attn, base.layers[0].mlp
        dims = (a0.q_proj.weight.shape[0], a0.k_proj.weight.shape[0], m0.gate_proj.weight.shape[0])
        self._gemv = (torch.jit.CompilationUnit(_ATTEND_TS + _LAYERS_GEMV).layers, ws, self._eps(),
                      float(self.layers[0][7]),
                      bool(self.layers[0][8]), dims, packed[-1] if fuse_head else None)

    def _eps(self) -> list[float]:
        """The two RMSNorm epsilons of every layer, in layer order (the captured loops' `eps`)."""
        return [float(e) for layer in self.layers for e in (layer[1], layer[10])]

    # --- the static cache ---------------------------------------------------------------------------------------
    def _ensure_cache(self, n: int, device) -> None:
        if self._cache and self._cache_len >= n and self._cache[0][0].device == device:
            return
        torch = self._torch
        n = max(n, 2 * self._cache_len)  # amortised growth across calls with longer contexts
        shape = (1, self.n_kv, n, self.head_dim)
        self._cache = [(torch.empty(shape, dtype=self.dtype, device=device),
                        torch.empty(shape, dtype=self.dtype, device=device)) for _ in self.layers]
        self._kcs, self._vcs = [k for k, _ in self._cache], [v for _, v in self._cache]
        self._cache_len = n

    def _load_cache(self, dyn) -> int:
        """Copy a transformers DynamicCache's keys/values into the static cache; returns its length."""
        n = dyn.get_seq_length()
        for (kc, vc), layer in zip(self._cache, dyn.layers):
            kc[:, :, :n].copy_(layer.keys)
            vc[:, :, :n].copy_(layer.values)
        return n

    # --- one token ------------------------------------------------------------------------------------------------
    def step(self, tok, pos: int, pos_t):
        """Logits (1, 1, vocab) of token tensor `tok` (1, 1) at position `pos` (pos_t: the same as a (1, 1) tensor);
        K/V of this position are written into the static cache.

        The values of transformers' eager decode step, op for op where an op rounds; where it only moves data the
        cheapest equivalent: q/k/v are viewed as (1, heads, 1, head_dim) without transposes (q_len is 1), RMSNorm
        skips its float32 round trip when the model is float32, and rotate_half(q)·sin is roll(q)·(±sin) — the same
        products, as (-a)·b == a·(-b) exactly in IEEE arithmetic."""
        torch = self._torch
        sdpa = torch.nn.functional.scaled_dot_product_attention
        rsqrt = torch.rsqrt
        f32 = self.dtype == torch.float32
        h = self.embed(tok)
        cos, sin = self.rotary(h, pos_t)
        hd = self.head_dim
        half = hd // 2
        cos = cos.unsqueeze(1)
        sin = (sin * self._sign(sin)).unsqueeze(1)  # rotate_half's sign folded into sin: [-sin₁, sin₂]
        n = pos + 1
        if self._gemv is not None:
            fn, ws, eps, scaling, gqa, (nq, nkv, ffn), head = self._gemv
            h = fn(h, cos, sin, ws, eps, self._kcs, self._vcs, pos, hd, scaling, gqa, nq, nkv, ffn)
            if head is None:
                return self._final(h)
            w, e = self.norm
            return torch.ops.slmbench.gemv(w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + e)), head)
        if self._ts is not None:
            fn, ws, eps, scaling, gqa = self._ts
            h = fn(h, cos, sin, ws, eps, self._kcs, self._vcs, pos, hd, scaling, gqa, f32)
            return self._final(h)
        for (w1, e1, q_proj, k_proj, v_proj, o_proj, _, scaling, gqa, w2, e2, gate, up, down, act), (kc, vc) \
                in zip(self.layers, self._cache):
            x = h if f32 else h.to(torch.float32)  # RMSNorm (input)
            x = x * rsqrt(x.pow(2).mean(-1, keepdim=True) + e1)
            x = w1 * (x if f32 else x.to(h.dtype))
            q = q_proj(x).view(1, -1, 1, hd)
            k = k_proj(x).view(1, -1, 1, hd)
            v = v_proj(x).view(1, -1, 1, hd)
            q = (q * cos) + (q.roll(half, -1) * sin)
            k = (k * cos) + (k.roll(half, -1) * sin)
            kc.narrow(2, pos, 1).copy_(k)
            vc.narrow(2, pos, 1).copy_(v)
            a = sdpa(q, kc.narrow(2, 0, n), vc.narrow(2, 0, n), attn_mask=None, dropout_p=0.0, scale=scaling,
                     is_causal=False, enable_gqa=gqa)
            h = h + o_proj(a.reshape(1, 1, -1))
            x = h if f32 else h.to(torch.float32)  # RMSNorm (post-attention)
            x = x * rsqrt(x.pow(2).mean(-1, keepdim=True) + e2)
            x = w2 * (x if f32 else x.to(h.dtype))
            h = h + down(act(gate(x)) * up(x))
        return self._final(h)

    def _final(self, h):
        """The final RMSNorm and the LM head."""
        torch = self._torch
        w, eps = self.norm
        x = h.to(torch.float32)
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return self.head(w * x.to(h.dtype))

    def _sign(self, like):
        """[-1]*half + [1]*half in `like`'s dtype and device (cached)."""
        s = getattr(self, "_sign_t", None)
        if s is None or s.dtype != like.dtype or s.device != like.device:
            torch, half = self._torch, self.head_dim // 2
            s = torch.cat([torch.full((half,), -1.0), torch.ones(self.head_dim - half)]).to(like.dtype).to(like.device)
            self._sign_t = s
        return s

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
