"""ExecuTorch backend: PyTorch's on-device runtime (XNNPACK delegate on CPU), through its Python runtime.

The model's HF directory is exported once per level by ExecuTorch's own Llama export (backends/executorch_export.py,
cached by spec hash like GGUF exports): `quantization: none` is fp32, `8da4w` ExecuTorch's 8-bit-dynamic-activation
/ 4-bit-weight scheme. The program is run by `executorch.runtime` (the portable_lib pybindings: the same C++ runtime
and XNNPACK kernels an app links), one `forward(tokens, input_pos)` call per prompt chunk or new token; the KV cache
is state inside the program, preallocated for MAX_CONTEXT positions.

Generation and prefill run the program that returns the last position's logits (as ExecuTorch's own runner);
scores (log-likelihoods for lm-eval, `model(x).logits` for the perplexity scenario) run a second export that
returns every position's logits, loaded the first time a score is asked, so the exported program itself is scored.

A "past" is the token list the program's KV cache holds. Attention covers positions < input_pos + len(tokens)
only, so rewinding to a prefix is free: the next call just writes from that position on."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..contracts import Engine, Knobs, register_backend
from ..contracts.adapter import HOST_CPU, RUNS_MODELS
from ..contracts.engine import GENERATE, KV_CACHE, LM_EVAL, LOGITS, LOGLIKELIHOOD, PREFILL, WEIGHTS
from ..errors import Unsupported
from .executorch_export import LEVELS
from .token_context import LogitsModel, Past, loglikelihood


class _Program:
    """One loaded .pte: forward(ids, pos) → float32 logits (numpy), in chunks of at most max_seq - 1 tokens."""

    def __init__(self, path: Path, facts: dict):
        from executorch.runtime import Runtime
        _register_kernels()
        self.path, self.facts = path, facts
        self.method = Runtime.get().load_program(path).load_method("forward")
        # ExecuTorch's builder bounds the dynamic token dimension at max_seq_len - 1 (extension/llm/export/builder.py):
        # a call of max_seq tokens fails to resize its input
        self.max_seq, self.max_context = facts["max_seq"] - 1, facts["max_context"]
        self.tokens: list[int] = []  # what its KV cache holds

    def run(self, ids: list[int], keep: int, copy: bool = True) -> list:
        """Append ids after the first `keep` cached tokens; the logits tensor of each call. copy=False returns the
        runtime's output tensors as they are (valid until the next call: enough for an argmax)."""
        import torch
        if keep + len(ids) > self.max_context:
            raise ValueError(f"{keep + len(ids)} tokens exceed the ExecuTorch program's KV cache "
                             f"({self.max_context} positions)")
        del self.tokens[keep:]
        out = []
        for i in range(0, len(ids), self.max_seq):
            chunk = list(ids[i:i + self.max_seq])
            x = torch.tensor([chunk], dtype=torch.long)
            pos = torch.tensor([len(self.tokens)], dtype=torch.long)
            y = self.method.execute([x, pos])[0]
            out.append(y.clone() if copy else y)
            self.tokens += chunk
        return out


def _register_kernels() -> None:
    """The kernels of the LLM custom ops (sdpa_with_kv_cache, update_cache) and of the quantized ops (the 4-bit
    embedding) in the runtime's registry, imported in the order ExecuTorch's own Python runner does."""
    from executorch.extension.pybindings import portable_lib  # noqa: F401  first: the registry they join
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    from executorch.kernels import quantized  # noqa: F401


class ExecuTorchKnobs(Knobs):
    # none: fp32; 8da4w: int8 dynamic activations, int4 weights (group 32), 4-bit embedding (ExecuTorch's recipe)
    quantization: Literal[LEVELS] = "none"


@register_backend
class ExecuTorchEngine(Engine):
    """ExecuTorch (XNNPACK) through executorch.runtime, on its own Llama export of the model at the asked level."""
    name = "executorch"
    backend = "executorch"
    Knobs = ExecuTorchKnobs
    requires_device = frozenset({RUNS_MODELS, HOST_CPU})  # the pip wheel's runtime runs XNNPACK on this host's CPU
    capabilities = frozenset({GENERATE, PREFILL, KV_CACHE, WEIGHTS, LOGLIKELIHOOD, LOGITS, LM_EVAL})

    def __init__(self, files, variant, adapter, pte: Path, facts: dict, tokenizer, progress=print):
        import numpy as np
        self.files, self.variant, self.adapter, self.pte, self.facts = files, variant, adapter, pte, facts
        self.tokenizer, self.progress, self._np = tokenizer, progress, np
        self.origin = f"{files.origin} → ExecuTorch {variant.quantization} (XNNPACK)"
        self.device = "cpu"
        self.gen = _Program(pte, facts)
        self._score: _Program | None = None  # the all-positions program, loaded on the first score
        self.score_build_s = None
        self.model = LogitsModel(self)

    # --- execution ------------------------------------------------------------------------------------------
    def _resume(self, past: Past | None) -> int:
        if past is None:
            return 0
        n = len(past.tokens)
        if tuple(self.gen.tokens[:n]) != past.tokens:
            raise RuntimeError("stale past: the ExecuTorch program's KV cache no longer holds these tokens")
        return n

    def prefill(self, ids: list[int], past: Past | None = None) -> Past:
        """Evaluate `ids` on top of `past` (an empty cache if None); returns the new past."""
        self.gen.run(ids, self._resume(past))
        return Past(tuple(self.gen.tokens))

    def generate(self, ids: list[int], n_new: int, clock=None, past: Past | None = None) -> list[int]:
        """Greedy: evaluate what `past` lacks of `ids`, then n_new tokens; clock.put once for the prompt and once
        per token. The argmax is taken on the runtime's output tensor (a numpy view, no copy of the vocabulary row;
        first maximum on ties, as torch's)."""
        have = min(self._resume(past), len(ids) - 1)  # the last prompt token is always run: its logits are needed
        if list(ids[:have]) != self.gen.tokens[:have]:
            raise RuntimeError("past is not a prefix of the prompt")
        last = self.gen.run(ids[have:], have, copy=False)[-1]
        if clock is not None:
            clock.put(None)
        out = []
        for i in range(n_new):
            tok = int(last.numpy().reshape(-1, last.shape[-1])[-1].argmax())  # numpy: 4 us, torch's: 110 us
            out.append(tok)
            if clock is not None:
                clock.put(tok)
            if i < n_new - 1:
                last = self.gen.run([tok], len(self.gen.tokens), copy=False)[-1]
        return out

    # --- scores ---------------------------------------------------------------------------------------------
    def _scorer(self) -> _Program:
        if self._score is None:
            from .executorch_export import program_for
            pte, facts, self.score_build_s = program_for(self.files.hf_dir, self.variant.quantization, "all",
                                                         self.progress)
            self._score = _Program(pte, facts)
        return self._score

    def logits(self, ids: list[int], keep: int = 0):
        """Full-vocabulary logits (float32, [len(ids) - keep, vocab]) for ids[keep:], reusing the first `keep`
        tokens when the scoring program's cache holds them. Row i is the prediction after ids[keep + i]."""
        np, p = self._np, self._scorer()
        if not (keep and p.tokens[:keep] == list(ids[:keep])):
            keep = 0
        rows = [r.numpy().reshape(-1, r.shape[-1]) for r in p.run(list(ids[keep:]), keep)]
        return np.concatenate(rows) if rows else np.zeros((0, self.facts["config"]["vocab_size"]), np.float32)

    def loglikelihood(self, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
        """(Σ log p(continuation | context), whether greedy decoding would produce it); the scoring program's KV is
        reused when the previous request had the same context (multiple-choice tasks)."""
        return loglikelihood(self.logits, self._score.tokens if self._score is not None else [], context_ids,
                             continuation_ids)

    def lm_eval_model(self, batch_size=1, **_):
        """An lm-eval LM scoring through this engine (llamacpp_lm.py's TemplateLM: it only calls the Engine contract),
        over the program's KV-cache positions."""
        from .llamacpp_lm import lm_class
        return lm_class()(self, mc_scoring=False, max_length=self.gen.max_context)

    @classmethod
    def load(cls, files, variant, adapter, progress=print) -> "ExecuTorchEngine":
        try:
            import executorch.runtime  # noqa: F401
        except ImportError as e:
            raise Unsupported(f"backend 'executorch' needs the executorch runtime (pip install "
                              f"'slmbench[executorch]'): {e}")
        if files.hf_dir is None and getattr(files, "gguf_path", None) is not None:
            import dataclasses

            from ..models.gguf import hf_dir_for  # a GGUF dequantized once to a cached HF dir (as torch does)
            d, _ = hf_dir_for(files.gguf_path, progress)
            files = dataclasses.replace(files, hf_dir=d, tokenizer_dir=files.tokenizer_dir or d,
                                        origin=f"{files.origin} → fp32 safetensors")
        if files.hf_dir is None:
            raise Unsupported("backend 'executorch' exports a model's HF directory (a random-init config or a "
                              "GGUF file must be saved as one first)")
        from .executorch_export import program_for
        pte, facts, build_s = program_for(Path(files.hf_dir), variant.quantization, "last", progress)
        from executorch.extension.pybindings import portable_lib
        if adapter.threads:
            portable_lib._unsafe_reset_threadpool(int(adapter.threads))  # XNNPACK's pool: the job's threads
        from transformers import AutoTokenizer
        tok = AutoTokenizer.from_pretrained(str(files.tokenizer_dir or files.hf_dir))
        eng = cls(files, variant, adapter, pte, facts, tok, progress)
        eng.build_s = build_s  # the one-off export is not load time
        return eng

    # --- static facts ---------------------------------------------------------------------------------------
    def param_count(self) -> int:
        return int(self.facts["params"])

    def file_bytes(self) -> int:
        return self.pte.stat().st_size

    def weight_bytes(self) -> int:
        """The .pte's size: its weights (XNNPACK-packed inside the delegate blobs, plus the embedding table) are
        all but a few hundred KB of it. Holds the tied embedding twice (as embedding and as output layer)."""
        return self.file_bytes()

    def weight_bytes_per_token(self) -> int:
        """All weights except the embedding table, of which one row is read per token."""
        return self.weight_bytes() - int(self.facts["embedding_bytes"])

    def kv_bytes_per_token_formula(self, tokens: int | None = None) -> int:
        """2·layers·kv_heads·head_dim·4 (the exported cache is fp32); Llama has no sliding window: `tokens` is moot."""
        c = self.facts["config"]
        hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
        return 2 * c["num_hidden_layers"] * (c["num_key_value_heads"] or c["num_attention_heads"]) * hd * 4  # fp32

    def kv_bytes_measured(self, cache: Past) -> tuple[int, int]:
        """(bytes of the program's KV-cache buffers for the positions this past holds, tokens held). The buffers
        (measured on the exported model: k_cache/v_cache of every layer) are preallocated for max_context
        positions; describe() records the whole allocation."""
        n = self._resume(cache)
        return int(self.facts["kv_bytes_per_position"]) * n, n

    def describe(self) -> dict:
        import executorch.version as ev
        from executorch.extension.pybindings import portable_lib
        c, f = self.facts["config"], self.facts
        return {"backend": self.backend, "origin": self.origin, "model_type": c["model_type"],
                "params": self.param_count(), "weight_bytes": self.weight_bytes(),
                "weights_per_token_bytes": self.weight_bytes_per_token(), "file_bytes": self.file_bytes(),
                "layers": c["num_hidden_layers"], "heads": c["num_attention_heads"],
                "kv_heads": c["num_key_value_heads"], "vocab": c["vocab_size"],
                "quantization": self.variant.quantization, "pte": str(self.pte), "export_s": f["export_s"],
                "export_recipe": f["recipe"], "max_context": f["max_context"], "max_seq": f["max_seq"],
                "kv_cache_allocated_bytes": f["kv_cache_bytes"], "executorch": ev.__version__,
                "threads": portable_lib._threadpool_get_thread_count(), "score_build_s": self.score_build_s}
