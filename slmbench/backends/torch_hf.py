"""transformers + torch backend. Greedy generation with a fixed new-token count; per-token timestamps come from one
perf_counter per token (TokenClock). Two decode paths (knob `decode`):

    fast      (default) the prompt and first token through `model.generate`, then a static KV cache and one
              single-token step per token, captured as TorchScript at load (backends/torch_fast.py), its matrix-
              vector products in slmbench's gemv kernel (float32 on CPU; backends/gemv_kernel.py) where it builds:
              logits equal to rounding, greedy tokens tested equal to generate's; models it cannot run use
              generate (the job's info says which ran: `decode_path`; capture time: `compile_s`, in build_s)
    exact     the same step over ATen's kernels: bit-identical logits to generate, by construction
    generate  the measured loop *is* `model.generate`, timed by its streamer (what every row before `decode` was)"""
from __future__ import annotations

import functools
from typing import Literal

from ..contracts import Engine, Knobs, register_backend
from ..contracts.adapter import RUNS_MODELS
from ..contracts.engine import (GENERATE, KV_CACHE, LM_EVAL, LOGITS, LOGLIKELIHOOD, PREFILL, TORCH_MODEL, WEIGHTS,
                                TokenClock)
from ..quant.ptq import TORCH_SCHEMES

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
FAST_PATHS = {"eager": "fast (static KV cache, one flat step per token)",
              "aten": "fast (static KV cache, one TorchScript-captured step per token)",
              "gemv": "fast (static KV cache, TorchScript step over the slmbench gemv kernel, packed weights)"}


@functools.cache
def cache_kw() -> str:
    """transformers 5.2x renamed the cache argument `past_key_values` → `cache`; support both."""
    import transformers.generation.utils as gu
    return "cache" if "cache" in getattr(gu, "ALL_CACHE_NAMES", ()) else "past_key_values"




class TorchKnobs(Knobs):
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    quantization: Literal[tuple(TORCH_SCHEMES)] = "none"  # slmbench.quant.ptq
    # compile: transformers' own compiled generate (static cache + torch.compile, compiled at the first call, i.e.
    # in the scenario's warm-up). It is generate's alternative to the fast path, not a layer on it: with compile:
    # true the decode path is the compiled generate whatever `decode` says.
    compile: bool = False
    load: Literal["mmap", "full"] = "mmap"  # weights memory-mapped, or read fully into memory
    # mha: a GQA/MQA model with each KV head repeated (the same function, more KV cache): what GQA saves
    attention: Literal["native", "mha"] = "native"
    # decode: fast — the static-cache flat-step greedy loop of backends/torch_fast.py over the gemv kernel
    # (backends/gemv_kernel.py; float32 CPU; logits equal generate's to rounding, greedy tokens tested equal);
    # exact — the same loop over ATen's own kernels (bit-identical logits to generate, ~2.7x slower on CPU fp32);
    # generate — transformers' model.generate. NOTE: stored rows from before this knob existed have the same job
    # keys (the default is left out of them) but were measured with generate: their decode tok/s, ITL and roofline
    # fraction are generate's, so a compare against them shows the fast path's gain, not a regression of either.
    decode: Literal["fast", "exact", "generate"] = "fast"


@register_backend
class TorchEngine(Engine):
    """transformers + torch: `model.generate` timed by a streamer (one perf_counter per token)."""
    name = "torch"
    backend = "torch"
    Knobs = TorchKnobs
    requires_device = frozenset({RUNS_MODELS})  # cpu or cuda: adapter.torch_device says which
    capabilities = frozenset({GENERATE, PREFILL, KV_CACHE, WEIGHTS, LOGLIKELIHOOD, LOGITS, LM_EVAL, TORCH_MODEL})

    def __init__(self, model, tokenizer, variant, adapter, origin: str, n_params: int | None = None):
        self.model, self.tokenizer, self.variant, self.adapter, self.origin = model, tokenizer, variant, adapter, origin
        self._n_params = n_params  # counted before quantization (which may untie a shared embedding)
        self.config = model.config
        self.device = adapter.torch_device
        self._fast = None  # the FastDecoder (backends/torch_fast.py) over the model as loaded
        self.compile_s: float | None = None if variant.compile else 0.0  # None: compiled inside generate, untimed
        self.decode_path = "generate"
        if variant.compile:
            self.decode_path = "generate (compiled by transformers)"
        elif getattr(variant, "decode", "generate") in ("fast", "exact"):
            from .torch_fast import FastDecoder, unsupported_reason
            why = unsupported_reason(model)
            if why is None:
                self._fast = FastDecoder(model)
                step = self._fast.capture(kernel=variant.decode == "fast")
                self.decode_path = FAST_PATHS[step]
                if variant.decode == "fast" and step != "gemv" and self._fast.kernel_note:
                    self.decode_path += f" (gemv kernel: {self._fast.kernel_note})"
                self.compile_s = self._fast.compile_s  # TorchScript + warm-up: build time, not load time
            else:
                self.decode_path = f"generate (the fast path does not run {why})"

    # --- execution ------------------------------------------------------------------------------------------
    def generate(self, ids: list[int], n_new: int, clock: TokenClock | None = None, past=None):
        """Greedy, exactly n_new new tokens; returns an object with `.sequences` (1, len(ids) + n_new)."""
        if self._fast is not None:
            from transformers.generation.utils import GenerateDecoderOnlyOutput
            seq, _ = self._fast.generate(lambda cache: self._generate(ids, 1, clock, cache, min_new=1), ids, n_new,
                                         clock, past, eos=self._eos_ids())
            self.adapter.sync()
            return GenerateDecoderOnlyOutput(sequences=seq)
        return self._generate(ids, n_new, clock, past)

    def _eos_ids(self) -> tuple[int, ...]:
        """The ids transformers' min_new_tokens processor masks (generation_config.eos_token_id)."""
        e = self.model.generation_config.eos_token_id
        return () if e is None else tuple(int(i) for i in (e if isinstance(e, (list, tuple)) else [e]))

    def _generate(self, ids: list[int], n_new: int, clock: TokenClock | None = None, past=None, min_new=None):
        import torch
        x = torch.tensor([ids], device=self.device)
        kw = {cache_kw(): past} if past is not None else {}
        with torch.inference_mode():
            out = self.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n_new,
                                      min_new_tokens=n_new if min_new is None else min_new, do_sample=False,
                                      streamer=clock, pad_token_id=self._pad_id(), return_dict_in_generate=True,
                                      **kw)
        self.adapter.sync()
        if self.variant.compile and not hasattr(self.model, "_compiled_call"):  # never time eager as "compiled"
            from ..errors import Unsupported
            raise Unsupported("compile: true, but transformers' generate did not compile the forward pass here "
                              "(it needs a compilable cache: a KV context passed in is a dynamic cache)")
        return out

    def prefill(self, ids: list[int], past=None):
        """One forward pass over `ids` on top of `past` (a fresh KV cache if None); returns the cache."""
        import torch
        from transformers import DynamicCache
        cache = past if past is not None else DynamicCache(config=self.config)
        start = cache.get_seq_length()
        x = torch.tensor([ids], device=self.device)
        pos = torch.arange(start, start + len(ids), device=self.device)
        with torch.inference_mode():
            self.model(x, use_cache=True, cache_position=pos, **{cache_kw(): cache})
        self.adapter.sync()
        return cache

    def _pad_id(self):
        t = self.tokenizer
        return t.pad_token_id if t.pad_token_id is not None else t.eos_token_id

    # --- static facts ---------------------------------------------------------------------------------------
    def param_count(self) -> int:
        return self._n_params or sum(t.numel() for t in _weights(self.model))

    def weight_bytes(self) -> int:
        """Bytes stored for weights (unique tensors, so tied embeddings count once; quantized ones as stored)."""
        return sum(tensor_bytes(t) for t in _weights(self.model))

    def weight_bytes_per_token(self) -> int:
        """Bytes a batch-1 decode step must read: all weights, except an input embedding the output head does
        not share (one row of it is read). Quantizing a tied lm_head unties it: the float embedding is then
        only looked up."""
        total = self.weight_bytes()
        emb, head = self.model.get_input_embeddings(), self.model.get_output_embeddings()
        if head is None or getattr(head, "weight", None) is not emb.weight:
            total -= tensor_bytes(emb.weight)
        return total

    def file_bytes(self) -> int:
        """Size of this variant as a deployable file: torch.save(state_dict) counted, not written (for a
        quantized variant that is what a user would ship; safetensors cannot hold torchao tensors)."""
        import torch

        class _Count:
            n = 0

            def write(self, b):
                self.n += len(b)
                return len(b)

            def flush(self):
                pass
        sink = _Count()
        torch.save(self.model.state_dict(), sink)
        return sink.n

    def kv_bytes_per_token_formula(self, tokens: int | None = None) -> int:
        """2·layers·kv_heads·head_dim·bytes; for a sequence of `tokens`, a sliding-window layer holds at most the
        window (transformers' cache keeps window − 1 tokens), averaged over the tokens. None: no window reached."""
        c = self.config
        c = c.get_text_config() if hasattr(c, "get_text_config") else c
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        kv_heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
        import torch
        elem = getattr(torch, _DTYPES[self.variant.dtype]).itemsize  # the KV cache is in the activation dtype
        local, window = sliding_layers(c)
        return windowed_kv_per_token(2 * kv_heads * head_dim * elem, c.num_hidden_layers, local,
                                     window - 1 if window else 0, tokens)

    @staticmethod
    def kv_bytes_measured(cache) -> tuple[int, int]:
        """(bytes held by the cache's key/value tensors, cached sequence length)."""
        total = 0
        for layer in cache.layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total, cache.get_seq_length()

    def describe(self) -> dict:
        c = self.config
        return {"backend": self.backend, "origin": self.origin, "model_type": c.model_type,
                "params": self.param_count(), "weight_bytes": self.weight_bytes(),
                "layers": c.num_hidden_layers, "heads": c.num_attention_heads,
                "kv_heads": getattr(c, "num_key_value_heads", None), "vocab": c.vocab_size,
                "dtype": self.variant.dtype, "quantization": self.variant.quantization,
                "file_bytes": self.file_bytes(), "weights_per_token_bytes": self.weight_bytes_per_token(),
                "decode_path": self.decode_path,
                # fast: TorchScript capture + warm-up at load (in build_s, so not in load_s; 0 for the eager
                # step); compile: true compiles inside generate's first call (the scenario's warm-up): None
                "compile_s": self.compile_s}

    # --- scores (quality through the same interface as the llama.cpp engine) ------------------------------
    def loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """(Σ log p(continuation | context), whether greedy decoding would produce the continuation)."""
        import torch
        ids = list(context_ids) + list(continuation_ids)
        x = torch.tensor([ids], device=self.device)
        with torch.inference_mode():
            logits = self.model(x).logits[0, len(context_ids) - 1:-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        tgt = torch.tensor(continuation_ids, device=self.device)
        return float(logp.gather(1, tgt[:, None]).sum()), bool((logp.argmax(-1) == tgt).all())

    def lm_eval_model(self, batch_size=1, **kw):
        from ..lmeval_model import lm_class  # lm-eval's HFLM over this engine (keeps quantized heads)
        return lm_class()(engine=self, batch_size=batch_size, **kw)

    @classmethod
    def load(cls, files, variant, adapter, progress=print) -> "TorchEngine":
        return _load(files, variant, adapter, progress)


def sliding_layers(c) -> tuple[int, int]:
    """(layers with sliding-window attention, the window) from a transformers config: `layer_types` where the
    config lists them (Gemma 2/3: 5 local layers to 1 global), else every layer when `sliding_window` is on
    (Mistral), else none. Qwen2 configs carry a window they do not use (use_sliding_window false)."""
    w = getattr(c, "sliding_window", None)
    if not w or getattr(c, "use_sliding_window", True) is False:
        return 0, 0
    types = getattr(c, "layer_types", None)
    if types:
        return sum(t == "sliding_attention" for t in types), int(w)
    return c.num_hidden_layers, int(w)


def windowed_kv_per_token(per_layer: int, layers: int, local: int, keep: int, tokens: int | None) -> int:
    """KV bytes per token over a sequence of `tokens`: global layers hold every token, the `local` ones at most
    `keep`. Without tokens (or windows), every layer holds every token: the short-sequence value."""
    if not tokens or not local or not keep:
        return per_layer * layers
    return round(per_layer * ((layers - local) * tokens + local * min(tokens, keep)) / tokens)


def tensor_bytes(t) -> int:
    """Bytes a tensor stores: a torchao quantized tensor is the sum of its inner tensors (int data, scales...)."""
    import torch
    if hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n, None) is not None)
    n = t.numel() * t.element_size()
    if getattr(t, "is_quantized", False) and t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        n += t.q_per_channel_scales().numel() * 8 + t.q_per_channel_zero_points().numel() * 8  # float64, int64
    return n


def _weights(model):
    """Unique weight tensors (by identity: tied embeddings once), including torch dynamic-int8 Linear layers,
    whose packed weights are not parameters."""
    import torch
    seen = set()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            yield p
    dyn = torch.ao.nn.quantized.dynamic.Linear
    for m in model.modules():
        if isinstance(m, dyn):
            w, b = m._packed_params._weight_bias()
            yield w
            if b is not None:
                yield b


def expand_kv_heads(model) -> None:
    """attention: mha — a GQA/MQA model turned into MHA with identical outputs: what GQA saves is then exactly the
    difference in KV cache (bytes per token, decode time at long context), nothing else."""
    cfg = model.config
    h, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    if kv == h:
        return
    from ..errors import Unsupported
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(hasattr(getattr(l, "self_attn", None), "num_key_value_groups") for l in layers):
        raise Unsupported(f"attention: mha needs Llama-style attention layers ({cfg.model_type} has none)")
    import torch

    class RepeatKVHeads(torch.nn.Module):
        """The k/v projection with each KV head repeated for its query group (as GQA attention does inside):
        cached after this, the KV cache is MHA-sized; weights and outputs stay the same."""

        def __init__(self, proj):
            super().__init__()
            self.proj = proj

        def forward(self, x):
            return self.proj(x).unflatten(-1, (kv, -1)).repeat_interleave(h // kv, dim=-2).flatten(-2)

    for layer in layers:
        att = layer.self_attn
        att.k_proj, att.v_proj = RepeatKVHeads(att.k_proj), RepeatKVHeads(att.v_proj)
        att.num_key_value_groups = 1
    cfg.num_key_value_heads = h


def _load(files, variant, adapter, progress=print) -> TorchEngine:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..quant import ptq

    dtype = getattr(torch, _DTYPES[variant.dtype])
    ptq.check(variant.quantization, variant.dtype, adapter.torch_device)  # refuse before loading anything
    build_s = 0.0
    if files.config is None and files.hf_dir is None and getattr(files, "gguf_path", None) is not None:
        import dataclasses

        from ..models.gguf import hf_dir_for  # transformers' GGUF loader, dequantized once to a cached dir
        d, build_s = hf_dir_for(files.gguf_path, progress)
        files = dataclasses.replace(files, hf_dir=d, tokenizer_dir=files.tokenizer_dir or d,
                                    origin=f"{files.origin} → fp32 safetensors")
    if files.config is not None:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(files.config, dtype=dtype)
    else:
        # load: mmap maps the safetensors file (pages come in on first touch); full reads it into memory first.
        model = AutoModelForCausalLM.from_pretrained(str(files.hf_dir), dtype=dtype,
                                                     disable_mmap=variant.load == "full",
                                                     trust_remote_code=getattr(files, "trust_remote_code", False))
    model.eval().to(adapter.torch_device)
    tok = AutoTokenizer.from_pretrained(str(files.tokenizer_dir))
    n_params = sum(t.numel() for t in _weights(model))
    if variant.attention == "mha":
        expand_kv_heads(model)
    model = ptq.apply(model, variant.quantization, variant.dtype, adapter.torch_device)
    if variant.compile:
        # Static cache + torch.compile. On CPU transformers only auto-compiles when the compile config says
        # _compile_all_devices, and a model's generation_config has no compile config at all by default.
        from transformers.generation.configuration_utils import CompileConfig
        gc = model.generation_config
        gc.cache_implementation = "static"
        gc.compile_config = gc.compile_config or CompileConfig()
        gc.compile_config._compile_all_devices = True
    eng = TorchEngine(model, tok, variant, adapter, files.origin, n_params)
    eng.build_s = build_s + (eng.compile_s or 0.0)  # a one-off conversion / capture is not load time
    return eng
