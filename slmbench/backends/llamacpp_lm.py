"""lm-eval's TemplateLM over a llama.cpp engine: tokenization by the engine's tokenizer, scores from llama.cpp's
full-vocabulary logits (loglikelihood tasks; generation is greedy). Kept apart so the backend file stays small."""
from __future__ import annotations

_LM = None


def lm_class():
    """lm-eval's TemplateLM over an Engine: tokenization by the HF tokenizer, scores from llama.cpp logits."""
    global _LM
    if _LM is not None:
        return _LM
    from lm_eval.api.model import TemplateLM

    class LlamaCppLM(TemplateLM):
        def __init__(self, engine):
            super().__init__()
            self.engine, self.tokenizer = engine, engine.tokenizer

        @property
        def eot_token_id(self):
            return self.tokenizer.eos_token_id

        @property
        def max_length(self):
            return self.engine.llm.n_ctx()

        def tok_encode(self, string, add_special_tokens=None, **kw):
            return self.tokenizer(string, add_special_tokens=bool(add_special_tokens))["input_ids"]

        def _loglikelihood_tokens(self, requests, disable_tqdm=False, **kw):
            # Same context next to each other, so its KV is reused; results go back in request order.
            order = sorted(range(len(requests)), key=lambda i: (requests[i][1], requests[i][2]))
            out = [None] * len(requests)
            for i in order:
                _, ctx, cont = requests[i]
                ctx = ctx[-(self.max_length - len(cont)):]  # left-truncate like HFLM
                out[i] = self.engine.loglikelihood(ctx, cont)
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
