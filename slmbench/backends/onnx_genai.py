"""ONNX Runtime GenAI backend (onnxruntime-genai): the runtime of Windows / Copilot+ PCs and its mobile builds.

The model's HF directory goes through onnxruntime-genai's own model builder once per precision (fp32, and its
MatMulNBits weight-only int8 / int4 for CPU), cached (onnx_genai_build.py). The job runs it through `og.Generator`:

  - latency: the prompt through `append_tokens`, then `generate_next_token` / `get_next_tokens` per token — the
    runtime's own greedy loop (do_sample false), with min_length = the buffer length so EOS never ends it early
    (the fixed new-token count every backend honours, as torch's min_new_tokens); one perf_counter per token.
  - quality: full-vocabulary logits of every appended position (`get_output("logits")`), so log-likelihoods for
    lm-eval and `engine.model(x).logits` for the perplexity scenario come from the exported graph itself.

One generator holds one sequence; its KV cache is one buffer of N_CTX positions (genai's past/present shared
buffer), and a "past" is the token list it holds, checked on use; `rewind_to` drops what a past does not hold."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from ..contracts import Engine, Knobs, register_backend
from ..contracts.adapter import HOST_CPU, RUNS_MODELS
from ..contracts.engine import GENERATE, KV_CACHE, LM_EVAL, LOGITS, LOGLIKELIHOOD, PREFILL, WEIGHTS
from ..errors import Unsupported
from .onnx_genai_build import PRECISION
from .token_context import LogitsModel, Past, TokenContext, loglikelihood

N_CTX = 2048  # positions of the KV buffer allocated at load (as llama.cpp's n_ctx here)
CHUNK = 512  # positions per append when scoring long inputs (bounds the logits output: CHUNK × vocab floats)


class OnnxGenaiKnobs(Knobs):
    # none = fp32 weights; int8 / int4 = the builder's MatMulNBits weight-only quantization (block 32, symmetric)
    quantization: Literal[tuple(PRECISION)] = "none"


@register_backend
class OnnxGenaiEngine(TokenContext, Engine):
    """onnxruntime-genai on CPU, on a model built from the HF directory by its own builder at the asked precision."""
    name = "onnx_genai"
    backend = "onnx_genai"
    holder = "the generator"
    Knobs = OnnxGenaiKnobs
    requires_device = frozenset({RUNS_MODELS, HOST_CPU})  # the CPU execution provider of the PyPI wheel
    capabilities = frozenset({GENERATE, PREFILL, KV_CACHE, WEIGHTS, LOGLIKELIHOOD, LOGITS, LM_EVAL})

    def __init__(self, og, model, tokenizer, variant, adapter, origin: str, model_dir: Path, build_s: float,
                 n_params: int | None):
        import numpy as np
        self.og, self.og_model, self.tokenizer, self.variant, self.adapter = og, model, tokenizer, variant, adapter
        self.origin, self.model_dir, self.build_s, self._n_params = origin, model_dir, build_s, n_params
        self.device = "cpu"
        self.cfg = json.loads((model_dir / "genai_config.json").read_text())
        self.facts = _facts(model_dir)
        self._np = np
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=N_CTX, min_length=N_CTX, do_sample=False)
        self.gen = og.Generator(model, params)
        self._tokens: list[int] = []  # what the generator holds (computed positions)
        self.model = LogitsModel(self)

    # --- the sequence ---------------------------------------------------------------------------------------
    def _truncate(self, n: int) -> None:
        if n < self.gen.token_count() or n < len(self._tokens):
            self.gen.rewind_to(n)
        del self._tokens[n:]

    def _eval(self, ids: list[int]) -> None:
        if len(self._tokens) + len(ids) > N_CTX:
            raise ValueError(f"{len(self._tokens) + len(ids)} tokens exceed the generator's buffer ({N_CTX})")
        self.gen.append_tokens(self._np.asarray(ids, dtype=self._np.int32))
        self._tokens += list(ids)

    # --- execution ------------------------------------------------------------------------------------------
    def generate(self, ids: list[int], n_new: int, clock=None, past: Past | None = None) -> list[int]:
        """Greedy through genai's own search: exactly n_new tokens; clock.put once when the prompt is done and once
        per token (the torch backend's streamer contract)."""
        left = self._prompt_left(ids, past)
        if len(ids) + n_new > N_CTX:
            raise ValueError(f"{len(ids)} + {n_new} tokens exceed the generator's buffer ({N_CTX})")
        self._eval(left)
        if clock is not None:
            clock.put(None)
        out = []
        for _ in range(n_new):
            self.gen.generate_next_token()  # runs the previous token (if any), then picks the next greedily
            tok = int(self.gen.get_next_tokens()[0])
            out.append(tok)
            if clock is not None:
                clock.put(tok)
        # the last token is picked, not yet run: keep what the KV cache holds
        self._tokens = list(ids) + out[:-1]
        self.gen.rewind_to(len(self._tokens))
        return out

    # --- scores ---------------------------------------------------------------------------------------------
    def logits(self, ids: list[int], keep: int = 0):
        """Full-vocabulary logits (float32, [len(ids) - keep, vocab]) for ids[keep:], reusing the first `keep`
        positions when the generator holds them. Row i is the prediction after ids[keep + i]."""
        np = self._np
        if keep and self._tokens[:keep] == list(ids[:keep]):
            self._truncate(keep)
        else:
            self._truncate(0)
            keep = 0
        rows = []
        for i in range(keep, len(ids), CHUNK):
            chunk = list(ids[i:i + CHUNK])
            self._eval(chunk)
            rows.append(np.array(self.gen.get_output("logits")[0, -len(chunk):], dtype=np.float32))
        return np.concatenate(rows) if rows else np.zeros((0, self.cfg["model"]["vocab_size"]), np.float32)

    def loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """(Σ log p(continuation | context), whether greedy decoding would produce it); the context's KV is reused
        when the previous request had the same context (multiple-choice tasks)."""
        return loglikelihood(self.logits, self._tokens, context_ids, continuation_ids)

    def lm_eval_model(self, batch_size=1, **_):
        """lm-eval's TemplateLM over this engine (llamacpp_lm.py, engine-generic): loglikelihood tasks, greedy
        generation."""
        from .llamacpp_lm import lm_class
        return lm_class()(self, mc_scoring=False, max_length=N_CTX - 1)  # a position left for generate's last token

    @classmethod
    def load(cls, files, variant, adapter, progress=print) -> "OnnxGenaiEngine":
        return _load(cls, files, variant, adapter, progress)

    # --- static facts ---------------------------------------------------------------------------------------
    def param_count(self) -> int:
        return int(self._n_params or 0)

    def weight_bytes(self) -> int:
        return self.facts["weight_bytes"]

    def weight_bytes_per_token(self) -> int:
        return self.facts["weights_per_token_bytes"]

    def file_bytes(self) -> int:
        return self.facts["file_bytes"]

    def kv_bytes_per_token_formula(self, tokens: int | None = None) -> int:
        d = self.cfg["model"]["decoder"]
        return 2 * d["num_hidden_layers"] * d["num_key_value_heads"] * d["head_size"] * self.facts["kv_dtype_bytes"]

    def kv_bytes_measured(self, cache: Past) -> tuple[int, int]:
        """(bytes the present K/V tensors give these tokens, tokens held): each layer's tensors as the generator
        returns them ([batch, kv_heads, buffer positions, head_dim]), per position × positions held. The buffer
        itself is allocated for all N_CTX positions at load (kv_buffer_bytes in the job's info)."""
        self._resume(cache)
        per_pos = 0
        for i in range(self.cfg["model"]["decoder"]["num_hidden_layers"]):
            for kind in ("key", "value"):
                t = self.gen.get_output(f"present.{i}.{kind}")
                per_pos += t.nbytes / t.shape[2]
        return int(round(per_pos * len(cache.tokens))), len(cache.tokens)

    def describe(self) -> dict:
        d = self.cfg["model"]["decoder"]
        f = self.facts
        return {"backend": self.backend, "origin": self.origin, "model_type": self.cfg["model"].get("type"),
                "params": self.param_count(), "weight_bytes": f["weight_bytes"],
                "weights_per_token_bytes": f["weights_per_token_bytes"], "file_bytes": f["file_bytes"],
                "layers": d["num_hidden_layers"], "heads": d["num_attention_heads"],
                "kv_heads": d["num_key_value_heads"], "vocab": self.cfg["model"]["vocab_size"],
                "quantization": self.variant.quantization, "precision": PRECISION[self.variant.quantization],
                "matmul_nbits": f["matmul_nbits"], "onnx_ops": f["ops"], "onnx_dir": str(self.model_dir),
                "onnx_build_s": round(self.build_s, 2), "n_ctx": N_CTX, "threads": self.adapter.threads,
                "kv_buffer_bytes": self.kv_bytes_per_token_formula() * N_CTX,
                "decode_loop": "og.Generator generate_next_token (greedy, min_length = buffer)",
                "onnxruntime_genai": self.og.__version__, "onnxruntime": _ort_version()}


def _ort_version() -> str | None:
    try:
        import onnxruntime
        return onnxruntime.__version__
    except ImportError:
        return None


def _facts(model_dir: Path) -> dict:
    from .onnx_genai_build import graph_facts
    return graph_facts(model_dir, json.loads((model_dir / "genai_config.json").read_text())["model"]["decoder"]
                       ["filename"])


def _load(cls, files, variant, adapter, progress=print) -> OnnxGenaiEngine:
    from .onnx_genai_build import artifact_for, hf_param_count
    if files.hf_dir is None:
        raise Unsupported("backend 'onnx_genai' needs a model with an HF directory (its builder reads one; a "
                          "random-init config must be saved first, a GGUF file of the user's is not built)")
    model_dir, build_s = artifact_for(Path(files.hf_dir), variant.quantization, progress)
    import onnxruntime_genai as og
    cfg = og.Config(str(model_dir))
    cfg.clear_providers()  # the CPU execution provider
    if adapter.threads:  # ONNX Runtime's intra-op pool, as the other backends' thread count
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": adapter.threads,
                                                                          "inter_op_num_threads": 1}}}}))
    model = og.Model(cfg)
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(files.tokenizer_dir or files.hf_dir))
    origin = f"{files.origin} → onnxruntime-genai {PRECISION[variant.quantization]}"
    return cls(og, model, tok, variant, adapter, origin, model_dir, build_s, hf_param_count(Path(files.hf_dir)))
