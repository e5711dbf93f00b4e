"""llama.cpp backend (through llama-cpp-python): the runtime on-device users deploy, for every GGUF level.

The model's HF directory is exported to GGUF and quantized once (slmbench.quant.gguf, cached); a GGUF file of the
user's (`files.gguf_path`) runs as it is. The Engine runs it with the same interface as the torch backend, so
latency / memory / energy scenarios time it the same way (one perf_counter per token, greedy, fixed new-token
count). Token ids come from the model's HF tokenizer, so both backends see identical inputs; a GGUF that comes
without one uses its own vocabulary through llama.cpp.

Quality goes through log-likelihoods computed here from llama.cpp's full-vocabulary logits (llama-cpp-python's own
`echo=True` prompt logprobs are off by one position in 0.3.36): `loglikelihood(context_ids, continuation_ids)`
for lm-eval (see `lm_eval_model()`), and `engine.model(x).logits` shaped like a transformers output for the
perplexity scenario.

One llama.cpp context holds one sequence; a "past" is the token list that context holds, checked on use."""
from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from typing import Literal

from ..contracts import Engine, Knobs, register_backend
from ..contracts.adapter import HOST_CPU, RUNS_MODELS
from ..contracts.engine import GENERATE, KV_CACHE, LM_EVAL, LOGITS, LOGLIKELIHOOD, PREFILL, WEIGHTS
from ..errors import Unsupported
from ..quant.gguf import LEVELS
from .token_context import LogitsModel, Past, TokenContext, loglikelihood

N_CTX = 2048  # KV cells allocated at load (resident: llama.cpp clears the buffer), enough for the scenarios here


class LlamaCppKnobs(Knobs):
    # GGUF level (slmbench.quant.gguf); none = f32, or a GGUF file's own level
    quantization: Literal[("none", *LEVELS)] = "none"
    load: Literal["mmap", "full"] = "mmap"
    # llama.cpp's own default (llama-bench, llama-cli, llama-server) is auto: on wherever the device supports it,
    # which on CPU is every model here; llama-cpp-python's default is off (slower, most of all at longer contexts)
    flash_attn: Literal["auto", "on", "off"] = "auto"


@register_backend
class LlamaCppEngine(TokenContext, Engine):
    """llama.cpp through llama-cpp-python, on a GGUF exported from the model's HF directory at the asked level."""
    name = "llamacpp"
    backend = "llamacpp"
    holder = "the llama.cpp context"
    Knobs = LlamaCppKnobs
    requires_device = frozenset({RUNS_MODELS, HOST_CPU})  # the CPU build of llama.cpp
    capabilities = frozenset({GENERATE, PREFILL, KV_CACHE, WEIGHTS, LOGLIKELIHOOD, LOGITS, LM_EVAL})

    def __init__(self, llm, tokenizer, variant, adapter, origin: str, gguf_path, level: str, build_s: float):
        import numpy as np
        self.llm, self.tokenizer, self.variant, self.adapter, self.origin = llm, tokenizer, variant, adapter, origin
        self.gguf_path, self.level, self.build_s = gguf_path, level, build_s
        self.device = "cpu"
        self.n_vocab = llm.n_vocab()
        self._tokens: list[int] = []  # what the context holds
        self._np = np
        self.model = LogitsModel(self)
        self._empty_state = self._seq_state_bytes()
        self._one = _one_token_batch()

    # --- the context ----------------------------------------------------------------------------------------
    def _truncate(self, n: int) -> None:
        self.llm.n_tokens = n  # Llama.eval drops KV cells from n_tokens on before it decodes
        self.llm._ctx.kv_cache_seq_rm(-1, n, -1)
        del self._tokens[n:]

    def _eval(self, ids: list[int]) -> None:
        """Append ids to the context; logits of the last token only (as llama-bench / generation do)."""
        if len(self._tokens) + len(ids) > self.llm.n_ctx():
            raise ValueError(f"{len(self._tokens) + len(ids)} tokens exceed the llama.cpp context ({self.llm.n_ctx()})")
        self.llm.eval(ids)
        self._tokens += list(ids)

    # --- execution ------------------------------------------------------------------------------------------
    def generate(self, ids: list[int], n_new: int, clock=None, past: Past | None = None) -> list[int]:
        """Greedy: evaluate what `past` lacks of `ids`, then n_new tokens; clock.put once for the prompt and once
        per token (the torch backend's streamer contract)."""
        left = self._prompt_left(ids, past)
        if len(ids) + n_new - 1 > self.llm.n_ctx():
            raise ValueError(f"{len(ids) + n_new - 1} tokens exceed the llama.cpp context ({self.llm.n_ctx()})")
        self._eval(left)
        if clock is not None:
            clock.put(None)
        return self._decode_loop(n_new, clock)

    def _decode_loop(self, n_new: int, clock) -> list[int]:
        """The per-token loop, as lean as llama-bench's own: one llama_decode on a one-token batch set up once, and
        the argmax read in place from llama.cpp's logits row (a numpy view, rebuilt only when llama.cpp moves its
        output buffer). Measured on this VM (contended, best of 5 × 2000 calls, SmolLM2 vocabulary 49,152):
        llama.cpp's own greedy sampler (llama_sampler_sample) 1.1 ms per token, numpy argmax 0.13 ms; and
        Llama.eval's per-call KV trim 0.04 ms, dropped here."""
        import ctypes

        import llama_cpp
        np = self._np
        ctx, b, nv = self.llm._ctx.ctx, self._one, self.n_vocab
        decode, get_logits, void_p = llama_cpp.llama_decode, llama_cpp.llama_get_logits, ctypes.c_void_p
        token, pos = b.token, b.pos
        put = clock.put if clock is not None else None
        p = len(self._tokens)
        out: list[int] = []
        view, addr = None, None
        try:
            for i in range(n_new):
                ptr = get_logits(ctx)  # the last decode's single output row
                a = ctypes.cast(ptr, void_p).value
                if a != addr:
                    view, addr = np.ctypeslib.as_array(ptr, shape=(nv,)), a
                tok = int(view.argmax())  # first maximum on ties, as before
                out.append(tok)
                if put is not None:
                    put(tok)
                if i < n_new - 1:
                    token[0], pos[0] = tok, p
                    rc = decode(ctx, b)
                    if rc != 0:
                        raise RuntimeError(f"llama_decode returned {rc}")
                    p += 1
        finally:  # the context holds the prompt and every token decoded: keep the bookkeeping in step
            self._tokens += out[:p - len(self._tokens)]
            self.llm.n_tokens = len(self._tokens)
        return out

    # --- scores ---------------------------------------------------------------------------------------------
    def logits(self, ids: list[int], keep: int = 0):
        """Full-vocabulary logits (float32, [len(ids) - keep, vocab]) for ids[keep:], reusing the first `keep`
        tokens when the context already holds them. Row i is the prediction after ids[keep + i]."""
        np = self._np
        if keep and self._tokens[:keep] == list(ids[:keep]):
            self._truncate(keep)
        else:
            self._truncate(0)
            keep = 0
        rows = []
        llm, b = self.llm, self.llm.n_batch
        for i in range(keep, len(ids), b):
            chunk = list(ids[i:i + b])
            llm._batch.set_batch(batch=chunk, n_past=len(self._tokens), logits_all=True)
            llm._ctx.decode(llm._batch)
            rows.append(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(chunk), self.n_vocab)).copy())
            self._tokens += chunk
            llm.n_tokens = len(self._tokens)
        return np.concatenate(rows) if rows else np.zeros((0, self.n_vocab), np.float32)

    def loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """(Σ log p(continuation | context), whether greedy decoding would produce it); the context's KV is reused
        when the previous request had the same context (multiple-choice tasks)."""
        return loglikelihood(self.logits, self._tokens, context_ids, continuation_ids)

    def lm_eval_model(self, batch_size=1, **_):
        """An lm-eval LM scoring through this engine (loglikelihood tasks; generation is greedy)."""
        from .llamacpp_lm import lm_class
        return lm_class()(self)

    @classmethod
    def load(cls, files, variant, adapter, progress=print) -> "LlamaCppEngine":
        return _load(files, variant, adapter, progress)

    # --- static facts ---------------------------------------------------------------------------------------
    def param_count(self) -> int:
        import llama_cpp
        return int(llama_cpp.llama_model_n_params(self.llm._model.model))

    def weight_bytes(self) -> int:
        import llama_cpp
        return int(llama_cpp.llama_model_size(self.llm._model.model))

    def weight_bytes_per_token(self) -> int:
        """All tensors, except a token_embd that is not also the output matrix (one row of it is read)."""
        tb = {t[0]: t[3] for t in self._header().tensors}
        total = self.weight_bytes()
        if "output.weight" in tb:
            total -= tb.get("token_embd.weight", 0)
        return total

    def file_bytes(self) -> int:
        return self.gguf_path.stat().st_size

    def kv_bytes_per_token_formula(self, tokens: int | None = None) -> int:
        """2·layers·kv_heads·head_dim·2 (llama.cpp's default KV type is F16); for a sequence of `tokens`, a
        sliding-window layer holds at most the window (the cells llama.cpp keeps), averaged over the tokens.
        None: no window reached."""
        import llama_cpp
        c = self._hparams()
        per_layer = 2 * c["kv_heads"] * c["head_dim"] * 2
        window = int(llama_cpp.llama_model_n_swa(self.llm._model.model))
        local = swa_layers(c["arch"], c["layers"], self.llm.metadata) if window else 0
        if not tokens or not local:
            return per_layer * c["layers"]
        return round(per_layer * ((c["layers"] - local) * tokens + local * min(tokens, window)) / tokens)

    def kv_bytes_measured(self, cache: Past) -> tuple[int, int]:
        """(bytes of this sequence's state in llama.cpp — its KV cells — beyond an empty one, tokens held)."""
        self._resume(cache)
        return self._seq_state_bytes() - self._empty_state, len(cache.tokens)

    def _seq_state_bytes(self) -> int:
        import llama_cpp
        return int(llama_cpp.llama_state_seq_get_size(self.llm._ctx.ctx, 0))

    def _hparams(self) -> dict:
        md = self.llm.metadata
        arch = md.get("general.architecture", "llama")
        heads = int(md[f"{arch}.attention.head_count"])
        emb = int(md[f"{arch}.embedding_length"])
        return {"layers": int(md[f"{arch}.block_count"]), "heads": heads, "vocab": self.n_vocab,
                "kv_heads": int(md.get(f"{arch}.attention.head_count_kv", heads)),
                "head_dim": int(md.get(f"{arch}.attention.key_length", emb // heads)), "arch": arch}

    def _header(self):
        """The file's own metadata and tensor table (read once, no weights)."""
        if getattr(self, "_hdr", None) is None:
            from ..models.gguf import read_header
            self._hdr = read_header(self.gguf_path)
        return self._hdr

    def describe(self) -> dict:
        import llama_cpp
        h = self._hparams()
        return {"backend": self.backend, "origin": self.origin, "model_type": h["arch"], "params": self.param_count(),
                "weight_bytes": self.weight_bytes(), "weights_per_token_bytes": self.weight_bytes_per_token(),
                "file_bytes": self.file_bytes(), "layers": h["layers"], "heads": h["heads"],
                "kv_heads": h["kv_heads"], "vocab": h["vocab"], "quantization": self.level,
                "gguf": str(self.gguf_path), "gguf_build_s": round(self.build_s, 2), **self._header().facts(),
                "n_ctx": self.llm.n_ctx(), "n_batch": self.llm.n_batch, "threads": self.adapter.threads,
                "mmap": self.variant.load == "mmap", "flash_attn": self.variant.flash_attn,
                "llama_cpp_python": llama_cpp.__version__,
                "system_info": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}


# llama.cpp's per-architecture sliding-window layout (llama-model.cpp, set_swa_pattern(n): of every n layers the
# last is global), for files whose metadata does not list it
SWA_PATTERN = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "exaone4": 4, "llama4": 4}


def swa_layers(arch: str, layers: int, md: dict) -> int:
    """How many of the `layers` attend through the sliding window: the file's own pattern where it has one, else
    llama.cpp's for the architecture; 0 when unknown (the formula then counts every layer: an upper bound)."""
    pat = md.get(f"{arch}.attention.sliding_window_pattern")
    if isinstance(pat, str) and pat.strip().lstrip("-").isdigit():  # llama-cpp-python gives metadata as strings
        pat = int(pat)
    if isinstance(pat, int) and pat > 0:
        return sum(i % pat < pat - 1 for i in range(layers))
    n = SWA_PATTERN.get(arch)
    return sum(i % n < n - 1 for i in range(layers)) if n else 0


def _one_token_batch():
    """A one-token batch (sequence 0, logits on), set up once per engine: the decode loop writes only the token and
    its position."""
    import llama_cpp
    b = llama_cpp.llama_batch_init(1, 0, 1)
    b.n_tokens, b.n_seq_id[0], b.seq_id[0][0], b.logits[0] = 1, 1, 0, 1
    return b


def _load(files, variant, adapter, progress=print) -> LlamaCppEngine:
    from ..quant.gguf import gguf_for
    try:
        import llama_cpp
    except ImportError as e:
        raise Unsupported(f"backend 'llamacpp' needs llama-cpp-python (pip install 'slmbench[llamacpp]'): {e}")
    if getattr(files, "gguf_path", None) is not None:
        path, level, build_s = _own_file(Path(files.gguf_path), variant.quantization, adapter.threads, progress)
        origin = files.origin if path == Path(files.gguf_path) else f"{files.origin} → GGUF {level}"
    elif files.hf_dir is None:
        raise Unsupported("backend 'llamacpp' needs a model with files (a random-init config must be saved first)")
    else:
        level = "f32" if variant.quantization == "none" else variant.quantization
        path, build_s = gguf_for(files.hf_dir, level, adapter.threads, progress)
        origin = f"{files.origin} → GGUF {level}"
    llm = _open(llama_cpp, path, variant.flash_attn, n_ctx=N_CTX, n_batch=512, n_ubatch=512,
                n_threads=adapter.threads, n_threads_batch=adapter.threads, use_mmap=variant.load == "mmap",
                logits_all=False, verbose=False)
    if files.tokenizer_dir is not None:
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(files.tokenizer_dir))
    else:
        tok = GGUFTokenizer(llm)
    return LlamaCppEngine(llm, tok, variant, adapter, origin, path, level, build_s)


def _own_file(path: Path, quantization: str, threads, progress) -> tuple[Path, str, float]:
    """A user's GGUF: as it is for `none` (or its own level); full-precision files are quantized once by llama.cpp
    (as exports are). A quantized file is not quantized again: llama.cpp refuses that unless forced, and the result
    would carry two rounding errors, measuring neither level."""
    from ..models.gguf import file_key, read_header
    from ..quant.gguf import quantize
    from ..settings import cache_dir
    h = read_header(path)
    if quantization in ("none", h.level):
        return path, h.level or h.file_type, 0.0  # info says q4_k_m, not "none"
    if h.file_type not in ("ALL_F32", "MOSTLY_F16", "MOSTLY_BF16"):
        raise Unsupported(f"{path.name} is already quantized ({h.level or h.file_type}); requantizing it to "
                          f"{quantization} would compound two quantization errors: use quantization: none (the "
                          "file's own level), or start from an F32/F16/BF16 GGUF")
    out = cache_dir() / "gguf" / f"{path.stem}-{file_key(path)}" / f"model-{quantization}.gguf"
    if out.is_file():
        return out, quantization, 0.0
    t0 = time.perf_counter()
    progress(f"llama.cpp: quantizing {path.name} to {quantization} (once)")
    out.parent.mkdir(parents=True, exist_ok=True)
    quantize(path, out, quantization, threads)
    return out, quantization, time.perf_counter() - t0


def _open(llama_cpp, path: Path, flash_attn: str = "auto", **kw):
    """llama_cpp.Llama with llama.cpp's own log kept while it loads: on failure that log says why (an architecture
    this llama.cpp does not know is `unsupported`; anything else an error). flash_attn auto | on | off."""
    import ctypes

    from ..errors import JobError
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def keep(level, text, user_data):
        lines.append(text.decode("utf-8", errors="replace"))
    llama_cpp.llama_log_set(keep, ctypes.c_void_p(0))
    try:
        with _flash_attn_type(llama_cpp, flash_attn):
            return llama_cpp.Llama(model_path=str(path), flash_attn=flash_attn != "off", **kw)
    except ValueError as e:
        said = [ln.strip() for ln in lines if "error" in ln.lower()] or [str(e)]
        why = said[-1].split("error loading model: ", 1)[-1]
        if "unknown model architecture" in why:
            raise Unsupported(f"llama.cpp (llama-cpp-python {llama_cpp.__version__}) cannot run {path.name}: {why}")
        raise JobError("error", f"llama.cpp could not load {path.name}: {why}")
    finally:
        from llama_cpp import _logger  # llama-cpp-python's own callback back in place
        llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))


@contextmanager
def _flash_attn_type(llama_cpp, mode: str):
    """llama-cpp-python 0.3.36 turns its flash_attn bool into ENABLED or DISABLED only; for llama.cpp's own AUTO,
    the ENABLED constant it reads while building the context params stands for AUTO during the call."""
    lc = llama_cpp.llama_cpp
    saved = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
    if mode == "auto":
        lc.LLAMA_FLASH_ATTN_TYPE_ENABLED = lc.LLAMA_FLASH_ATTN_TYPE_AUTO
    try:
        yield
    finally:
        lc.LLAMA_FLASH_ATTN_TYPE_ENABLED = saved


class GGUFTokenizer:
    """The GGUF's own vocabulary through llama.cpp, for a file that comes without a Hugging Face tokenizer: the
    calls scenarios and lm-eval make of a transformers tokenizer (no offsets: bits-per-byte goes pro rata)."""

    def __init__(self, llm):
        self.llm = llm
        self.vocab_size = llm.n_vocab()
        bos, eos = llm.token_bos(), llm.token_eos()
        self.bos_token_id, self.eos_token_id = (bos if bos >= 0 else None), (eos if eos >= 0 else None)
        self.pad_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False, **_):
        if return_offsets_mapping:
            raise NotImplementedError("llama.cpp's tokenizer gives no character offsets")
        add = bool(add_special_tokens) and self.bos_token_id is not None
        return {"input_ids": self.llm.tokenize(text.encode("utf-8"), add_bos=add, special=False)}

    def encode(self, text: str, add_special_tokens: bool = True, **_) -> list[int]:
        return self(text, add_special_tokens)["input_ids"]

    def decode(self, ids, skip_special_tokens: bool = False, **_) -> str:
        return self.llm.detokenize(list(ids), special=not skip_special_tokens).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return self.vocab_size
