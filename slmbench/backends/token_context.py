"""What the runtimes that hold one token sequence share (llama.cpp, ONNX Runtime GenAI, ExecuTorch).

A `past` (the Engine contract's opaque prefix) is the token list the runtime's KV cache held when it was returned;
reusing it checks the runtime still holds that prefix and rewinds to it, so a stale past fails loudly instead of
scoring on the wrong context. `LogitsModel` gives such an engine the `model(x).logits` call the perplexity scenario
makes on a transformers model."""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace


@dataclass(frozen=True)
class Past:
    tokens: tuple  # what the runtime's context held when this was returned


def common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def loglikelihood(logits, held, context_ids: list[int], continuation_ids: list[int]) -> tuple[float, bool]:
    """(Σ log p(continuation | context), whether greedy decoding would produce the continuation) from
    `logits(ids, keep)` (float32 rows for ids[keep:], keep reused from what the runtime holds, or 0 when it does not
    hold them). The shared prefix of `held` is reused (multiple-choice requests share their context), except the
    last context token: its logits are needed."""
    import numpy as np
    ids = list(context_ids) + list(continuation_ids)
    rows = logits(ids, min(common_prefix(held, ids), len(context_ids) - 1))
    keep = len(ids) - len(rows)  # what the runtime really reused
    rows = rows[len(context_ids) - 1 - keep:len(ids) - 1 - keep].astype(np.float64)
    m = rows.max(axis=1, keepdims=True)
    logp = rows - m - np.log(np.exp(rows - m).sum(axis=1, keepdims=True))
    tgt = np.asarray(continuation_ids)
    return float(logp[np.arange(len(tgt)), tgt].sum()), bool((rows.argmax(axis=1) == tgt).all())


class LogitsModel:
    """`model(x).logits` over a (1, T) tensor, like a transformers causal LM, from engine.logits(ids) (numpy)."""

    def __init__(self, engine):
        self.engine = engine

    def __call__(self, x, **_):
        import torch
        return SimpleNamespace(logits=torch.from_numpy(self.engine.logits(x[0].tolist()))[None])


class TokenContext:
    """Mixin: `_tokens` mirrors what the runtime holds; the engine defines `_truncate(n)` (drop positions n…) and
    `_eval(ids)` (append ids); prefill and past checks are the same for every such runtime."""
    _tokens: list
    holder = "the runtime's context"  # named in the stale-past error

    def _truncate(self, n: int) -> None:
        raise NotImplementedError

    def _eval(self, ids: list[int]) -> None:
        raise NotImplementedError

    def _resume(self, past: Past | None) -> None:
        if past is None:
            self._truncate(0)
            return
        n = len(past.tokens)
        if tuple(self._tokens[:n]) != past.tokens:
            raise RuntimeError(f"stale past: {self.holder} no longer holds these tokens")
        self._truncate(n)

    def _prompt_left(self, ids: list[int], past: Past | None) -> list[int]:
        """Before generating from `ids`: resume `past` and return what of `ids` the context still lacks (at least
        the last prompt token, whose logits give the first new token)."""
        self._resume(past)
        have = len(self._tokens)
        if have >= len(ids):  # all cached: re-evaluate the last prompt token to get its logits
            self._truncate(len(ids) - 1)
            have = len(ids) - 1
        elif ids[:have] != self._tokens:
            raise RuntimeError("past is not a prefix of the prompt")
        return ids[have:]

    def prefill(self, ids: list[int], past: Past | None = None) -> Past:
        """Evaluate `ids` on top of `past` (an empty context if None); returns the new past."""
        self._resume(past)
        self._eval(ids)
        return Past(tuple(self._tokens))
