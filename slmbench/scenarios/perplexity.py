"""Perplexity and bits-per-byte on a held-out text file.

Windows of `context` tokens advance by `stride` (default: non-overlapping, as llama-perplexity -c). In each window
the tokens after position `skip` that no earlier window scored are scored (llama-perplexity scores only the second
half: skip = context/2). ppl is per token of this model's tokenizer; bits-per-byte divides the same total NLL (in
bits) by the UTF-8 bytes those tokens cover, so models with different tokenizers compare fairly."""
from __future__ import annotations

import math
import os
import time
from pathlib import Path

from pydantic import Field

from ..errors import UserError
from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import LOGITS


class PerplexityParams(Params):
    text: str = Field("corpus/austen.txt", description="absolute, or relative to $SLMBENCH_DATA_DIR")
    max_bytes: int | None = Field(51_200, ge=16, description="first N bytes of the file (cut at a character)")
    context: int = Field(512, ge=2, le=131072, description="tokens per window")
    stride: int | None = Field(None, ge=1, description="tokens between window starts; None: context")
    skip: int = Field(0, ge=0, description="window positions used as context only (llama-perplexity: context/2)")

    @classmethod
    def check(cls, p: "PerplexityParams", file: str, field: str, part: str = "params") -> None:
        resolve_text(p.text, file, f"{field}.{part}.text")
        if p.skip >= p.context - 1:
            raise UserError("skip must be less than context - 1", file=file, field=f"{field}.{part}.skip")


def resolve_text(text: str, file: str | None = None, field: str | None = None) -> Path:
    p = Path(text).expanduser()
    if not p.is_absolute():
        dd = os.environ.get("SLMBENCH_DATA_DIR")
        if not dd:
            raise UserError(f"{text} is relative to $SLMBENCH_DATA_DIR, which is not set", file=file, field=field)
        if not Path(dd).is_dir():
            raise UserError(f"SLMBENCH_DATA_DIR={dd} is not a directory", file=file, field=field)
        p = Path(dd) / p
    if not p.is_file():
        raise UserError(f"text file {p} not found", file=file, field=field)
    return p


def read_text(path: Path, max_bytes: int | None) -> str:
    data = path.read_bytes()[:max_bytes] if max_bytes else path.read_bytes()
    return data.decode("utf-8", errors="ignore")  # a cut multi-byte character is dropped


def token_bytes(tok, text: str) -> tuple[list[int], list[int] | None]:
    """Token ids and the UTF-8 bytes each token covers (from character offsets; the bytes of a character split
    across tokens go to the first token ending at it), or None for tokenizers without offsets."""
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, ValueError):
        return tok(text, add_special_tokens=False)["input_ids"], None
    cum = [0]
    for ch in text:
        cum.append(cum[-1] + len(ch.encode("utf-8")))
    out, done = [], 0
    for _, end in enc["offset_mapping"]:
        b = cum[max(end, 0)]
        out.append(max(b - done, 0))
        done = max(done, b)
    return enc["input_ids"], out


def windows(n: int, context: int, stride: int, skip: int):
    """(start, end, first scored position) for each window; every scored token is scored once."""
    scored_to, start = 1, 0  # token 0 has no left context
    while scored_to < n:
        end = min(start + context, n)
        first = max(start + skip + 1, scored_to)
        if first < end:
            yield start, end, first
            scored_to = end
        if end == n:
            break
        start += stride


def decoded_bytes(tok, ids: list[int], spans) -> int:
    """UTF-8 bytes the scored spans [first, end) decode to, for tokenizers without character offsets (a GGUF's own
    vocabulary through llama.cpp): prefix decodes, so a leading-space rule cancels out, and a character split
    across tokens (byte fallback) counts once, in the span of the token that completes it (a cut prefix decodes
    its partial character as U+FFFD, dropped). One decode per span boundary; spans that tile the text sum to its
    bytes exactly."""
    n = {}
    for a, b in spans:
        for k in (a, b):
            if k not in n:
                n[k] = len(tok.decode(ids[:k]).rstrip("\ufffd").encode("utf-8")) if k else 0
    return sum(n[b] - n[a] for a, b in spans)


ROWS = 128  # log-softmax this many positions at a time: a 262k vocabulary makes one 512-row copy 0.5 GB


def nll_sum(model, ids: list[int], context: int, stride: int, skip: int, device="cpu", progress=None):
    """Σ NLL (nats) and the scored positions, window by window (batch 1: no padding)."""
    import torch
    total, scored = 0.0, []
    wins = list(windows(len(ids), context, stride, skip))
    for i, (s, e, first) in enumerate(wins):
        x = torch.tensor([ids[s:e]], device=device)
        with torch.inference_mode():
            logits = model(x).logits[0]
            for a in range(first - s - 1, e - s - 1, ROWS):
                b = min(a + ROWS, e - s - 1)
                logp = torch.log_softmax(logits[a:b].float(), dim=-1)
                total -= logp.gather(1, x[0, a + 1:b + 1, None]).sum().item()
            del logits
        scored.extend(range(first, e))
        if progress and i % 8 == 0:
            progress(f"window {i + 1}/{len(wins)}")
    return total, scored


@register_scenario
class Perplexity(Scenario):
    name, Params = 'perplexity', PerplexityParams
    requires = frozenset({LOGITS})

    def run(self, ctx: JobContext, p: PerplexityParams) -> list[Metric]:
        path = resolve_text(p.text)
        text = read_text(path, p.max_bytes)
        eng = ctx.engine
        ids, tb = token_bytes(eng.tokenizer, text)
        if len(ids) < 2:
            raise UserError(f"text {path} has fewer than 2 tokens", field="params.text")
        stride = p.stride or p.context
        t0 = time.perf_counter()
        nats, scored = nll_sum(eng.model, ids, p.context, stride, p.skip, eng.device, ctx.progress)
        wall = time.perf_counter() - t0
        n_bytes = len(text.encode("utf-8"))
        if tb is not None:
            scored_bytes, how = sum(tb[i] for i in scored), "UTF-8 bytes covered by the scored tokens"
        else:  # no offsets: the scored spans decoded (each window scores one contiguous span)
            spans = [(first, e) for _, e, first in windows(len(ids), p.context, stride, p.skip)]
            scored_bytes, how = decoded_bytes(eng.tokenizer, ids, spans), "UTF-8 bytes of the scored spans, decoded"
        lab = {"text": path.name}
        win = f"context {p.context}, stride {stride}, skip {p.skip}; {len(scored)} of {len(ids)} tokens scored"
        return [
            Metric("ppl", math.exp(nats / len(scored)), "", n=len(scored), higher_is_better=False, labels=lab,
                   note=f"exp(mean NLL per token) over {path.name}[:{n_bytes} B], {win}"),
            Metric("bits_per_byte", nats / math.log(2) / scored_bytes, "bits/B", n=len(scored), higher_is_better=False,
                   labels=lab, note=f"total NLL in bits / {scored_bytes:.0f} {how}; {win}"),
            Metric("ppl_tokens", len(scored), "tokens", labels=lab, note=f"{len(ids)} tokens in the text"),
            Metric("ppl_bytes", n_bytes, "B", labels=lab, note="UTF-8 bytes of the text read"),
            Metric("ppl_s", wall, "s", higher_is_better=False, labels=lab, note="wall time of the forward passes"),
        ]
