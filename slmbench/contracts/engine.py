"""The Engine contract: what a runtime (torch, llama.cpp, an HTTP endpoint, ...) must and may do.

A backend is ONE class: it owns its knobs (a pydantic `Knobs` model, as optimum-benchmark's backend configs), says
which devices it runs on (`requires_device`: adapter capabilities) and what it can do (`capabilities`); `load()` returns an instance that
scenarios drive. A scenario declares the capabilities it requires; a job whose engine lacks one is recorded
`unsupported` with the reason, before any model is loaded. A capability declared here must be implemented: the
registry refuses a class that declares one without overriding its methods.

Request/return shapes (token ids are lists of ints from the engine's own tokenizer):

    prompt_ids(n) -> list[int]                    n ids of a fixed real-text passage (tokenized before timing)
    describe() -> dict                            static facts for the job's info (params, bytes, layers, ...)
  GENERATE
    generate(ids, n_new, clock=None, past=None)   greedy, exactly n_new new tokens; clock.put(None) once when the
                                                  prompt is done and clock.put(tok) per new token (TokenClock)
  PREFILL
    prefill(ids, past=None) -> past               one pass over ids on top of past (None: empty); an opaque past
  KV_CACHE
    kv_bytes_measured(past) -> (bytes, tokens)    what the KV cache holds for that past
    kv_bytes_per_token_formula(tokens=None) -> int  2·layers·kv_heads·head_dim·bytes; with tokens, a sliding-window
                                                  layer counts at most its window (averaged over the tokens)
  WEIGHTS
    param_count(), weight_bytes(), weight_bytes_per_token(), file_bytes() -> int
  LOGLIKELIHOOD
    loglikelihood(context_ids, continuation_ids) -> (Σ log p, greedy-match bool)
  LOGITS
    model(x).logits                               x: LongTensor (1, T) → FloatTensor (1, T, vocab); .tokenizer
  LM_EVAL
    lm_eval_model(batch_size) -> lm_eval.api.model.LM
  TORCH_MODEL
    model: a transformers causal LM in this process (speculative decoding, held-out scoring)
  REQUESTS
    request(ids, n_new, stream) / client: an OpenAI-compatible endpoint (the serving scenario)
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import Unsupported

GENERATE, PREFILL, KV_CACHE, WEIGHTS = "generate", "prefill", "kv_cache", "weights"
LOGLIKELIHOOD, LOGITS, LM_EVAL, TORCH_MODEL, REQUESTS = "loglikelihood", "logits", "lm_eval", "torch_model", "requests"

# capability -> the methods a class declaring it must define itself (attributes are checked on instances)
CAPABILITY_METHODS: dict[str, tuple[str, ...]] = {
    GENERATE: ("generate",), PREFILL: ("prefill",),
    KV_CACHE: ("kv_bytes_measured", "kv_bytes_per_token_formula"),
    WEIGHTS: ("param_count", "weight_bytes", "weight_bytes_per_token", "file_bytes"),
    LOGLIKELIHOOD: ("loglikelihood",), LOGITS: (), LM_EVAL: ("lm_eval_model",), TORCH_MODEL: (), REQUESTS: (),
}

# A fixed public-domain passage (Austen, Pride and Prejudice, ch. 1) tiled to any prompt length; real text keeps
# attention patterns and token statistics realistic. Tokenization is done before timing.
PROMPT_TEXT = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of "
    "a wife. However little known the feelings or views of such a man may be on his first entering a neighbourhood, "
    "this truth is so well fixed in the minds of the surrounding families, that he is considered the rightful "
    "property of some one or other of their daughters. \"My dear Mr. Bennet,\" said his lady to him one day, \"have "
    "you heard that Netherfield Park is let at last?\" Mr. Bennet replied that he had not. \"But it is,\" returned "
    "she; \"for Mrs. Long has just been here, and she told me all about it.\" Mr. Bennet made no answer. "
)


class Knobs(BaseModel):
    """A backend's own variant knobs. Subclass and add fields; unknown keys are refused at `slmbench validate`.
    A field added later must default to what runs did before it existed (job keys leave it out at its default)."""
    model_config = ConfigDict(extra="forbid")


class TokenClock:
    """Timestamps each new token (a transformers streamer, and the contract every engine's generate honours).
    The first put() is the prompt itself."""

    def __init__(self, delay_s: float = 0.0):
        self.times: list[float] = []
        self._seen_prompt = False
        self._delay = delay_s  # test-only injected slowdown per decoded token

    def put(self, value):
        if not self._seen_prompt:
            self._seen_prompt = True
            return
        if self._delay and self.times:
            time.sleep(self._delay)
        self.times.append(time.perf_counter())

    def end(self):
        pass


class Engine(ABC):
    name: ClassVar[str]
    Knobs: ClassVar[type[Knobs]] = Knobs
    requires_device: ClassVar[frozenset[str]] = frozenset({"runs_models"})  # adapter capabilities it runs on
    capabilities: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""

    tokenizer: Any = None
    build_s: float = 0.0  # one-off artifact build inside load() (e.g. a GGUF export): not counted as load time

    @classmethod
    @abstractmethod
    def load(cls, files, variant, adapter, progress=print) -> "Engine":
        """files: contracts.source.ModelFiles; variant: plan.Variant (variant.knobs is an instance of cls.Knobs);
        adapter: the job's contracts.adapter.Adapter (already set up)."""

    @abstractmethod
    def describe(self) -> dict:
        """Static facts recorded in the job's info: backend, origin, params, weight and file bytes, shapes."""

    @classmethod
    def check_plugin(cls) -> None:
        """Called by the registry: a declared capability must be implemented by the class itself."""
        unknown = set(cls.capabilities) - set(CAPABILITY_METHODS)
        if unknown:
            raise TypeError(f"backend {cls.name!r} declares unknown capabilities {sorted(unknown)} "
                            f"(known: {', '.join(sorted(CAPABILITY_METHODS))})")
        from .adapter import KNOWN
        if set(cls.requires_device) - set(KNOWN):
            raise TypeError(f"backend {cls.name!r} requires unknown device capabilities "
                            f"{sorted(set(cls.requires_device) - set(KNOWN))} (known: {', '.join(KNOWN)})")
        for cap in cls.capabilities:
            for meth in CAPABILITY_METHODS[cap]:
                if getattr(cls, meth, None) is getattr(Engine, meth, None):
                    raise TypeError(f"backend {cls.name!r} declares {cap!r} but does not define {meth}()")

    @classmethod
    def check_knobs(cls, knobs: dict) -> "Knobs":
        """The backend's knob model over the variant's knobs (raises pydantic.ValidationError)."""
        return cls.Knobs(**knobs)

    # --- inputs ---------------------------------------------------------------------------------------------
    def prompt_ids(self, n: int) -> list[int]:
        ids = self.tokenizer(PROMPT_TEXT, add_special_tokens=False)["input_ids"]
        while len(ids) < n:
            ids = ids + ids
        return ids[:n]

    # --- optional capabilities: the default says which capability is missing -------------------------------
    def _lacks(self, cap: str):
        raise Unsupported(f"backend {self.name!r} has no {cap!r} capability")

    def generate(self, ids, n_new, clock=None, past=None):
        self._lacks(GENERATE)

    def prefill(self, ids, past=None):
        self._lacks(PREFILL)

    def kv_bytes_measured(self, past):
        self._lacks(KV_CACHE)

    def kv_bytes_per_token_formula(self, tokens: int | None = None) -> int:
        self._lacks(KV_CACHE)

    def param_count(self) -> int:
        self._lacks(WEIGHTS)

    def weight_bytes(self) -> int:
        self._lacks(WEIGHTS)

    def weight_bytes_per_token(self) -> int:
        self._lacks(WEIGHTS)

    def file_bytes(self) -> int:
        self._lacks(WEIGHTS)

    def loglikelihood(self, context_ids, continuation_ids):
        self._lacks(LOGLIKELIHOOD)

    def lm_eval_model(self, batch_size=1, **kw):
        self._lacks(LM_EVAL)
