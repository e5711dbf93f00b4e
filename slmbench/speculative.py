"""Speculative decoding (Leviathan et al. 2023; Chen et al. 2023), whole algorithm on one screen.

A cheap draft proposes up to g tokens; the target scores all of them in ONE forward pass; an accept/resample rule
keeps exactly the target's output: greedy accepts while the draft token is the target's argmax, sampling accepts
d with probability min(1, p(d)/q(d)) and otherwise resamples from norm(max(p - q, 0)). Both models keep their KV
cache across steps; rejected tokens are rolled back with DynamicCache.crop. The target alone is the same loop with
an empty draft, so baseline and speculative runs share every line of code except the draft.

Invariant between steps: each cache holds the KV of all of `seq` except its last token.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch


class Runner:
    """A causal LM and its KV cache: feed tokens, get their next-token logits; crop to roll back."""

    def __init__(self, model, vocab: int | None = None):
        from .backends.torch_hf import cache_kw
        self.model, self.kw = model, cache_kw()
        self.vocab = vocab or model.config.vocab_size  # logits are padded/cut to the target's vocabulary
        self.reset()

    def reset(self):
        from transformers import DynamicCache
        self.cache = DynamicCache(config=self.model.config)

    def __len__(self):
        return self.cache.get_seq_length()

    @torch.inference_mode()
    def feed(self, ids: list[int], last_only: bool = False) -> torch.Tensor:
        n = len(self)
        x = torch.tensor([ids], device=self.model.device)
        pos = torch.arange(n, n + len(ids), device=self.model.device)
        out = self.model(x, use_cache=True, cache_position=pos, logits_to_keep=1 if last_only else 0,
                         **{self.kw: self.cache})
        z = out.logits[0].float()
        if z.shape[-1] < self.vocab:  # a draft with a smaller head can never propose the missing ids
            z = torch.nn.functional.pad(z, (0, self.vocab - z.shape[-1]), value=float("-inf"))
        return z[:, :self.vocab]

    def crop(self, n: int):
        if len(self) > n:  # a negative count removes tokens in every transformers version (5.24 refuses n > 0)
            self.cache.crop(n - len(self))


class ModelDraft:
    """A small LM sharing the target's tokenizer; proposes g tokens autoregressively from its own cache."""

    def __init__(self, runner: Runner):
        self.r = runner

    def prefill(self, ids):
        self.r.reset()
        self.r.feed(ids, last_only=True)

    def propose(self, seq, g, temp, gen):
        toks, qs = [], []
        z = self.r.feed(seq[len(self.r):])[-1]  # 1 token, or 2 after a fully accepted step (its last draft)
        for i in range(g):
            if i:
                z = self.r.feed([toks[-1]])[-1]
            if temp == 0:
                toks.append(int(z.argmax()))
            else:
                q = torch.softmax(z / temp, -1)
                toks.append(int(torch.multinomial(q, 1, generator=gen)))
                qs.append(q)
        return toks, (qs or None)

    def rollback(self, n):
        self.r.crop(n)


class NGramDraft:
    """Prompt lookup (Saxena 2023): find the latest earlier occurrence of the last n tokens (n = max_n..min_n) in
    prompt + output and propose what followed it. No model, no cache; q is a point mass on the proposal."""

    def __init__(self, max_n: int = 3, min_n: int = 1):
        self.max_n, self.min_n = max_n, min_n

    def prefill(self, ids):
        pass

    def propose(self, seq, g, temp, gen):
        for n in range(min(self.max_n, len(seq) - 1), self.min_n - 1, -1):
            tail = seq[-n:]
            for s in range(len(seq) - n - 1, -1, -1):
                if seq[s:s + n] == tail:
                    return seq[s + n:s + n + g], None
        return [], None

    def rollback(self, n):
        pass


class NoDraft(NGramDraft):
    """The target alone: every step proposes nothing, so each target forward yields exactly one token."""

    def propose(self, seq, g, temp, gen):
        return [], None


def accept(logits, d, qs, temp, gen) -> tuple[int, int]:
    """Target logits (len(d)+1, V) after each draft prefix → (draft tokens accepted, the token that follows them)."""
    if temp == 0:
        best = logits.argmax(-1).tolist()
        n = 0
        while n < len(d) and d[n] == best[n]:
            n += 1
        return n, best[n]
    p = torch.softmax(logits / temp, -1)
    for i, t in enumerate(d):
        q = qs[i] if qs is not None else torch.nn.functional.one_hot(torch.tensor(t), p.shape[-1]).float()
        if torch.rand((), generator=gen) * q[t] < p[i, t]:  # accept with probability min(1, p/q)
            continue
        r = (p[i] - q).clamp_min(0)  # the residual: exactly the mass the draft under-proposes
        r = r if r.sum() > 0 else p[i]
        return i, int(torch.multinomial(r / r.sum(), 1, generator=gen))
    return len(d), int(torch.multinomial(p[-1], 1, generator=gen))  # all accepted: a free token from the target


@dataclass
class Stats:
    steps: list = field(default_factory=list)  # per target step: (g in force, tokens proposed, tokens accepted)
    draft_s: float = 0.0
    verify_s: float = 0.0
    total_s: float = 0.0


def generate(target: Runner, draft, prompt: list[int], n_new: int, g: int, temp: float = 0.0, seed: int = 0,
             adaptive: bool = False, g_max: int = 16) -> tuple[list[int], Stats]:
    """Decode exactly n_new tokens after `prompt` (prefill untimed); with NoDraft this is plain decoding."""
    gen = torch.Generator().manual_seed(seed)
    target.reset()
    target.feed(prompt[:-1], last_only=True)
    draft.prefill(prompt[:-1])
    seq, st, end = list(prompt), Stats(), len(prompt) + n_new
    t0 = time.perf_counter()
    while len(seq) < end:
        k = min(g, end - len(seq) - 1)  # the target adds one token itself: never draft past the end
        ta = time.perf_counter()
        d, qs = draft.propose(seq, k, temp, gen) if k > 0 else ([], None)
        tb = time.perf_counter()
        n, nxt = accept(target.feed([seq[-1]] + d), d, qs, temp, gen)  # one target pass verifies all of d
        st.draft_s += tb - ta
        st.verify_s += time.perf_counter() - tb
        seq += d[:n] + [nxt]
        target.crop(len(seq) - 1)
        draft.rollback(len(seq) - 1)
        st.steps.append((k, len(d), n))
        if adaptive and k == g:  # grow after a fully accepted draft, shrink after a rejection in its first half
            g = min(g + 1, g_max) if n == k else max(1, g - 1) if n < k / 2 else g
    st.total_s = time.perf_counter() - t0
    return seq[len(prompt):end], st


# --- Leviathan et al. (2023), eq. 1 and Theorem 3.8 -------------------------------------------------------------

def expected_tokens(a: float, g: float) -> float:
    """Expected tokens per target step with i.i.d. acceptance a and draft length g: (1 - a^(g+1)) / (1 - a)."""
    return g + 1 if a >= 1 else (1 - a ** (g + 1)) / (1 - a)


def predicted_speedup(a: float, g: float, c: float) -> float:
    """Walltime improvement (1 - a^(g+1)) / ((1 - a)(g·c + 1)), c = draft step cost / target step cost."""
    return expected_tokens(a, g) / (g * c + 1)


def acceptance(steps) -> tuple[float, list[float], int]:
    """(overall a, acceptance per draft position, target steps). A position counts once reached (all earlier
    drafts accepted) within the g in force; a position the draft left empty (n-gram found nothing) counts as
    rejected — the target step then yields one token, exactly as if the draft had been wrong."""
    gmax = max((k for k, _, _ in steps), default=0)
    reached, acc = [0] * gmax, [0] * gmax
    for k, _, n in steps:
        for i in range(min(n + 1, k)):
            reached[i] += 1
            acc[i] += i < n
    a = sum(acc) / sum(reached) if sum(reached) else float("nan")
    return a, [x / r if r else float("nan") for x, r in zip(acc, reached)], len(steps)
