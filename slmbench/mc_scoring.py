"""Multiple-choice log-likelihoods that encode each shared context once.

lm-eval scores every (context, continuation) request as its own sequence: a 4-way ARC item runs its question through
the model four times. Here requests are grouped by their (effective) context; each group's context is encoded once,
together with the continuations' common prefix (scored once), its KV cache is copied to one row per continuation,
and what is left of each continuation is scored in one padded batch on it.
Groups are length-sorted into batches under a token budget, and the LM head runs only on the positions that are
scored (lm-eval computes — and log-softmaxes — the full vocabulary at every context position too).

The numbers are lm-eval's own definition (HFLM._loglikelihood_tokens, lm-eval 0.4.13):
- the window is (context + continuation)[-(max_length + 1):] and the continuation is its last len(cont) tokens, so
  a too-long request loses context from the left (`effective`);
- logprob = Σ log_softmax(logits)[token] over the continuation; is_greedy = every continuation token is the argmax.
Only the batch shapes differ, so values agree to float rounding (~1e-5), not bit for bit.

Backend-neutral grouping is at the top; `TorchScorer` runs a transformers causal LM; `LlamaCppScorer` runs the
llama.cpp engine's model with one llama.cpp sequence per continuation on a scoring context of its own.

llama.cpp's log-likelihoods depend on how many tokens go into one llama_decode: on SmolLM2, decodes of up to 48
tokens and of 64 or more give different values for the same continuation — up to 0.85 nats over ~11 tokens with
Q4_0/Q4_1 weights, 0.004 with F32 (measured: the quantized matmul takes another kernel path for larger batches).
The engine's per-request path decodes a whole request at once, so it sits on one side or the other depending on
the request's length. Decoding in chunks of at most 32 tokens (`DECODE_CHUNK`), this scorer equals the per-request
path exactly wherever the per-request decodes stay under the boundary too (contexts tagged with several sequences,
several contexts per decode and all). It stays off unless SLMBENCH_MC_LLAMACPP=1: for longer requests the two paths
legitimately differ, and which kernel path is "right" is llama.cpp's choice, not ours.
"""
from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

Pair = tuple[tuple[int, ...], tuple[int, ...]]  # (effective context, continuation)
DECODE_CHUNK = 32  # llama.cpp tokens per decode in LlamaCppScorer: under the batch size where its kernels change


def effective(context: list[int], continuation: list[int], max_length: int) -> Pair:
    """lm-eval's left truncation: the last max_length + 1 tokens of context + continuation; the context is what is
    left of them before the continuation (always ≥ 1 token since len(continuation) ≤ max_length)."""
    if not context or not continuation:
        raise ValueError("a log-likelihood request needs a non-empty context and continuation")
    if len(continuation) > max_length:
        raise ValueError(f"continuation of {len(continuation)} tokens exceeds the model's max_length {max_length}")
    window = (list(context) + list(continuation))[-(max_length + 1):]
    return tuple(window[:len(window) - len(continuation)]), tuple(continuation)


def groups(pairs: list[Pair]) -> dict[tuple, dict[tuple, list[int]]]:
    """context -> continuation -> the request indices asking for it (duplicates are scored once)."""
    out: dict[tuple, dict[tuple, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (ctx, cont) in enumerate(pairs):
        out[ctx][cont].append(i)
    return out


class Group(NamedTuple):
    """One context and its continuations, split where the continuations part: `shared` is their common prefix
    (PIQA's two solutions share ~8 of ~23 tokens; a lone continuation shares all but its last token), encoded and
    scored once with the context; `tails` maps each continuation to what is left of it (never empty)."""
    ctx: tuple
    shared: tuple
    tails: dict

    @property
    def prefix(self) -> tuple:
        return self.ctx + self.shared


def split(ctx: tuple, conts) -> Group:
    conts = list(conts)
    n, short = 0, min(map(len, conts)) - 1  # every tail keeps ≥ 1 token: the prefix's last position predicts it
    while n < short and all(k[n] == conts[0][n] for k in conts):
        n += 1
    return Group(ctx, conts[0][:n], {k: k[n:] for k in conts})


def batches(grouped: list[Group], budget: int) -> list[list[Group]]:
    """Groups in length order, cut into batches of at most `budget` padded tokens per forward (prefix pass and
    tail pass each). Sorted on the side that holds most tokens, so padding stays small."""
    pre_tok = sum(len(g.prefix) for g in grouped)
    tail_tok = sum(len(t) for g in grouped for t in g.tails.values())
    if tail_tok > pre_tok:
        key = lambda g: (max(map(len, g.tails.values())), len(g.prefix), g.prefix)
    else:
        key = lambda g: (len(g.prefix), max(map(len, g.tails.values())), g.prefix)
    out, cur, cmax, rmax, rows = [], [], 0, 0, 0
    for g in sorted(grouped, key=key, reverse=True):  # longest first: a memory problem shows at once
        longest = max(map(len, g.tails.values()))
        c2, r2, n2 = max(cmax, len(g.prefix)), max(rmax, longest), rows + len(g.tails)
        if cur and ((len(cur) + 1) * c2 > budget or n2 * r2 > budget or n2 * c2 > 4 * budget):
            out.append(cur)
            cur, c2, r2, n2 = [], len(g.prefix), longest, len(g.tails)
        cur.append(g)
        cmax, rmax, rows = c2, r2, n2
    if cur:
        out.append(cur)
    return out


class TorchScorer:
    """Grouped scoring on a transformers causal LM (any dtype / quantization: only its decoder and head are called).

    Per batch of contexts: pass 1 runs the right-padded contexts (causal, so padding never reaches a real token) and
    keeps the KV cache; the last context position gives each continuation's first token. Pass 2 copies each
    context's cache to its continuations' rows and runs continuation[:-1] on it, with the context padding masked
    out and positions continuing from each context's own length."""

    def __init__(self, model, device=None, batch_tokens: int = 2048, head_rows: int = 256):
        self.model, self.batch_tokens, self.head_rows = model, int(batch_tokens), head_rows
        self.device = device if device is not None else next(model.parameters()).device
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def score(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        import torch
        grouped = groups(pairs)
        out: list = [None] * len(pairs)
        with torch.inference_mode():
            for batch in batches([split(c, k) for c, k in grouped.items()], self.batch_tokens):
                for (ctx, cont), ans in self._batch(batch).items():
                    for i in grouped[ctx][cont]:
                        out[i] = ans
        return out

    def _batch(self, gs: list[Group]) -> dict:
        import torch
        from transformers import DynamicCache
        dev, clen = self.device, [len(g.prefix) for g in gs]
        cmax = max(clen)
        ids = torch.zeros(len(gs), cmax, dtype=torch.long)
        for b, g in enumerate(gs):
            ids[b, :clen[b]] = torch.tensor(g.prefix)
        cache = DynamicCache(config=self.model.config)
        h1 = self.decoder(input_ids=ids.to(dev), past_key_values=cache, use_cache=True).last_hidden_state
        # pass 2 rows: tail[:-1] of every tail longer than one token
        rows = [(b, k) for b, g in enumerate(gs) for k, t in g.tails.items() if len(t) > 1]
        h2 = None
        if rows:
            rmax = max(len(gs[b].tails[k]) for b, k in rows) - 1
            x = torch.zeros(len(rows), rmax, dtype=torch.long)
            mask = torch.ones(len(rows), cmax + rmax, dtype=torch.long)
            pos = torch.empty(len(rows), rmax, dtype=torch.long)
            for r, (b, k) in enumerate(rows):
                t = gs[b].tails[k]
                x[r, :len(t) - 1] = torch.tensor(t[:-1])
                mask[r, clen[b]:cmax] = 0
                pos[r] = torch.arange(clen[b], clen[b] + rmax)
            cache.batch_select_indices(torch.tensor([b for b, _ in rows], device=dev))
            h2 = self.decoder(input_ids=x.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                              past_key_values=cache, use_cache=True).last_hidden_state
        del cache
        # every scored position's hidden state, its target and who it counts for: one head call (in chunks)
        sel, tgt, owner = [], [], []
        r_of = {(b, k): r for r, (b, k) in enumerate(rows)}
        for b, g in enumerate(gs):
            every = [(g.ctx, k) for k in g.tails]
            for j, t in enumerate(g.shared):  # the shared prefix, scored once for all its continuations
                sel.append(h1[b, len(g.ctx) - 1 + j])
                tgt.append(t)
                owner.append(every)
            for k, t in g.tails.items():
                sel.append(h1[b, clen[b] - 1])
                tgt.append(t[0])
                owner.append([(g.ctx, k)])
                if len(t) > 1:
                    sel.extend(h2[r_of[(b, k)], :len(t) - 1])
                    tgt.extend(t[1:])
                    owner.extend([[(g.ctx, k)]] * (len(t) - 1))
        h = torch.stack(sel)
        tgt_t = torch.tensor(tgt, device=dev)
        lp, greedy = [], []
        for s in range(0, len(h), self.head_rows):
            logits = self.head(h[s:s + self.head_rows]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            t = tgt_t[s:s + self.head_rows]
            lp.append(torch.log_softmax(logits, -1).gather(1, t[:, None])[:, 0])
            greedy.append(logits.argmax(-1) == t)
        lp_l, greedy_l = torch.cat(lp).tolist(), torch.cat(greedy).tolist()
        res: dict = {}
        for keys, v, g in zip(owner, lp_l, greedy_l):
            for key in keys:
                s, a = res.get(key, (0.0, True))
                res[key] = (s + v, a and g)
        return res


class LlamaCppScorer:
    """Grouped scoring on a llama.cpp model, in a scoring context of its own (the engine's context holds one
    sequence and stays as the engine left it). Each context's tokens go into the KV cache once, tagged with the
    sequence ids of all its continuations (unified KV: one cell serves every sequence); each continuation[:-1] is
    its own sequence on top. Several contexts share one llama_decode, up to n_seq sequences and n_batch tokens."""

    def __init__(self, llm, n_seq: int = 16, n_ctx: int | None = None):
        import llama_cpp
        from llama_cpp._internals import LlamaBatch, LlamaContext
        self.np = __import__("numpy")
        src = llm.context_params
        p = llama_cpp.llama_context_default_params()
        for f in ("n_batch", "n_ubatch", "n_threads", "n_threads_batch", "type_k", "type_v", "flash_attn_type"):
            setattr(p, f, getattr(src, f))
        self.n_seq, self.n_batch = int(n_seq), min(int(src.n_batch), DECODE_CHUNK)
        p.n_ctx = int(n_ctx or 2 * llm.n_ctx())  # a context and all its continuations
        p.n_seq_max, p.kv_unified = self.n_seq, True
        self.llama_cpp, self.n_vocab = llama_cpp, llm.n_vocab()
        self.ctx = LlamaContext(model=llm._model, params=p, verbose=False)
        self.n_ctx = self.ctx.n_ctx()
        self.batch = LlamaBatch(n_tokens=self.n_batch, embd=0, n_seq_max=self.n_seq, verbose=False)

    def score(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        grouped = groups(pairs)
        out: list = [None] * len(pairs)
        for pack in self._packs(grouped):
            for (ctx, cont), ans in self._pack(pack).items():
                for i in grouped[ctx][cont]:
                    out[i] = ans
        return out

    def _packs(self, grouped: dict):
        """Lists of (context, [continuations]) fitting n_seq sequences and n_ctx KV cells; a context with more
        continuations than fit is split into parts (its context then encoded once per part)."""
        pack, seqs, cells = [], 0, 0
        for ctx in sorted(grouped, key=lambda c: (len(c), c)):
            parts, part = [], []
            for k in grouped[ctx]:
                if part and (len(part) >= self.n_seq or
                             len(ctx) + sum(len(x) - 1 for x in part) + len(k) - 1 > self.n_ctx):
                    parts.append(part)
                    part = []
                part.append(k)
            parts.append(part)
            for part in parts:
                size = len(ctx) + sum(len(x) - 1 for x in part)
                if pack and (seqs + len(part) > self.n_seq or cells + size > self.n_ctx):
                    yield pack
                    pack, seqs, cells = [], 0, 0
                pack.append((ctx, part))
                seqs, cells = seqs + len(part), cells + size
        if pack:
            yield pack

    def _pack(self, pack: list) -> dict:
        """One pack: tokens (token, pos, seq ids, scored as (key, target) or None), decoded n_batch at a time."""
        np, b = self.np, self.batch.batch
        toks, seq = [], 0
        for ctx, conts in pack:
            ids = list(range(seq, seq + len(conts)))
            for p, t in enumerate(ctx):
                last = p == len(ctx) - 1
                toks.append((t, p, ids, [((ctx, k), k[0]) for k in conts] if last else None))
            for j, k in enumerate(conts):
                for p, t in enumerate(k[:-1]):
                    toks.append((t, len(ctx) + p, [seq + j], [((ctx, k), k[p + 1])]))
            seq += len(conts)
        self.ctx.kv_cache_clear()
        res: dict = {}
        for s in range(0, len(toks), self.n_batch):
            chunk = toks[s:s + self.n_batch]
            b.n_tokens = len(chunk)
            for i, (t, p, ids, scored) in enumerate(chunk):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, p, len(ids), scored is not None
                for m, q in enumerate(ids):
                    b.seq_id[i][m] = q
            self.ctx.decode(self.batch)
            for i, (_, _, _, scored) in enumerate(chunk):
                if scored is None:
                    continue
                row = np.ctypeslib.as_array(self.ctx.get_logits_ith(i), shape=(self.n_vocab,)).astype(np.float64)
                m = row.max()
                lse = m + np.log(np.exp(row - m).sum())
                top = int(row.argmax())
                for key, tgt in scored:
                    v, g = res.get(key, (0.0, True))
                    res[key] = (v + float(row[tgt] - lse), g and top == tgt)
        return res
