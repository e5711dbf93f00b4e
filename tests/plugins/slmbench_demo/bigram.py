"""Backend `bigram`: a real (if tiny) runtime — greedy decoding from bigram counts of the prompt passage, over the
model's own tokenizer. Declares generate and prefill only, so scenarios needing more are recorded unsupported."""
from __future__ import annotations

from collections import Counter, defaultdict

from pydantic import Field

from slmbench.contracts import Engine, Knobs, register_backend
from slmbench.contracts.adapter import RUNS_MODELS
from slmbench.contracts.engine import GENERATE, PREFILL, PROMPT_TEXT


class BigramKnobs(Knobs):
    smoothing: float = Field(0.0, ge=0)  # a knob this backend owns; validated by `slmbench validate`


@register_backend
class BigramEngine(Engine):
    name = "bigram"
    backend = "bigram"
    Knobs = BigramKnobs
    requires_device = frozenset({RUNS_MODELS})
    capabilities = frozenset({GENERATE, PREFILL})

    def __init__(self, tokenizer, variant):
        self.tokenizer, self.variant = tokenizer, variant
        ids = tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
        table: dict[int, Counter] = defaultdict(Counter)
        for a, b in zip(ids, ids[1:]):
            table[a][b] += 1
        self.next = {a: c.most_common(1)[0][0] for a, c in table.items()}
        self.fallback = Counter(ids).most_common(1)[0][0]

    @classmethod
    def load(cls, files, variant, adapter, progress=print):
        from transformers import AutoTokenizer
        return cls(AutoTokenizer.from_pretrained(str(files.tokenizer_dir)), variant)

    def describe(self) -> dict:
        return {"backend": self.name, "bigrams": len(self.next), "smoothing": self.variant.knobs.smoothing}

    def prefill(self, ids, past=None):
        return list(past or []) + list(ids)

    def generate(self, ids, n_new, clock=None, past=None):
        if clock is not None:
            clock.put(None)
        tok, out = (list(ids) or [self.fallback])[-1], []
        for _ in range(n_new):
            tok = self.next.get(tok, self.fallback)
            out.append(tok)
            if clock is not None:
                clock.put(tok)
        return out
