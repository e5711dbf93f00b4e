"""lm-eval's TemplateLM over an engine that holds one token sequence (llama.cpp; also ONNX Runtime GenAI and
ExecuTorch): tokenization by the engine's tokenizer, scores from its full-vocabulary logits through
engine.loglikelihood (loglikelihood tasks; generation is greedy). Kept apart so the backend files stay small.
On llama.cpp, log-likelihoods can be batched per shared context (slmbench.mc_scoring.LlamaCppScorer)."""
from __future__ import annotations

import os

from ..mc_scoring import LlamaCppScorer, effective

_LM = None


def lm_class():
    """lm-eval's TemplateLM over an Engine: tokenization by the HF tokenizer, scores from llama.cpp logits."""
    global _LM
    if _LM is not None:
        return _LM
    from lm_eval.api.model import TemplateLM

    class LlamaCppLM(TemplateLM):
        def __init__(self, engine, mc_scoring=None, n_seq: int = 16, max_length: int | None = None):
            # mc_scoring (llama.cpp only): contexts shared by several continuations decoded once, continuations
            # batched as llama.cpp sequences (mc_scoring.LlamaCppScorer); false = one request at a time through
            # engine.loglikelihood. max_length: the engine's context (default: llama.cpp's n_ctx).
            super().__init__()
            self.engine, self.tokenizer, self._max_length = engine, engine.tokenizer, max_length
            if not hasattr(engine, "llm"):
                mc_scoring = False
            # Off by default for now: on SmolLM2 Q4_1 its values differ from the per-request path by 0.05-0.7 nats
            # (an open question: multi-sequence batch numerics or a masking bug); SLMBENCH_MC_LLAMACPP=1 turns it on.
            if mc_scoring is None:
                mc_scoring = os.environ.get("SLMBENCH_MC_LLAMACPP", "0")
            self.mc_scoring = str(mc_scoring).lower() not in ("0", "false", "no", "off")
            self.n_seq, self._scorer = int(n_seq), None

        @property
        def eot_token_id(self):
            return self.tokenizer.eos_token_id

        @property
        def max_length(self):
            return self._max_length or self.engine.llm.n_ctx()

        def tok_encode(self, string, add_special_tokens=None, **kw):
            return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kw):
            # lm-eval's left truncation, with a window of n_ctx tokens (the per-request path evaluates all of them)
            pairs = [effective(ctx, cont, self.max_length - 1) for _, ctx, cont in requests]
            if self.mc_scoring:
                if self._scorer is None:
                    self._scorer = LlamaCppScorer(self.engine.llm, n_seq=self.n_seq)
                return self._scorer.score(pairs)
            # per request; same context next to each other, so the engine reuses its KV; request order kept
            order = sorted(range(len(pairs)), key=lambda i: pairs[i])
            out = [None] * len(pairs)
            for i in order:
                out[i] = self.engine.loglikelihood(*pairs[i])
            return out

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
            res = []
            for (text,) in [r.args for r in requests]:
                total = 0.0
                for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                        token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length, context_len=1)):
                    total += self.engine.loglikelihood(ctx, cont)[0]
                res.append(total)
            return res

        def generate_until(self, requests, disable_tqdm=False):
            outs = []
            for context, gen_kwargs in [r.args for r in requests]:
                until = gen_kwargs.get("until") or [self.tokenizer.decode([self.eot_token_id])]
                until = [until] if isinstance(until, str) else until
                n = int(gen_kwargs.get("max_gen_toks", 256))
                ids = self.tok_encode(context)[-(self.max_length - n):]
                text = self.tokenizer.decode(self.engine.generate(ids, n))
                cut = min([text.find(u) for u in until if u and u in text] or [len(text)])
                outs.append(text[:cut])
            return outs

    _LM = LlamaCppLM
    return _LM
