"""Multiple-choice log-likelihoods that encode each shared context once.

lm-eval scores every (context, continuation) request as its own sequence: a 4-way ARC item runs its question through
the model four times. Here requests are grouped by their (effective) context; each group's context is encoded once,
together with the continuations' common prefix (scored once), its KV cache is copied to one row per continuation,
and what is left of each continuation is scored in one padded batch on it.
Prefixes and continuation tails are batched apart, each sorted on its own length under a token budget, and the LM
head runs only on the positions that are scored (lm-eval computes — and log-softmaxes — the full vocabulary at
every context position too).

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


def cut(items: list, length, budget: int, rows=lambda x: 1) -> list[list]:
    """`items` sorted by `length` (longest first: a memory problem shows at once) and cut into batches of at most
    `budget` padded tokens (rows × the longest length in the batch)."""
    out, cur, longest, n = [], [], 0, 0
    for it in sorted(items, key=length, reverse=True):
        ln, r = length(it), rows(it)
        if cur and (n + r) * max(longest, ln) > budget:
            out.append(cur)
            cur, longest, n = [], 0, 0
        cur.append(it)
        longest, n = max(longest, ln), n + r
    if cur:
        out.append(cur)
    return out


def _tree_len(g: Group) -> int:
    """Tokens of a group packed as one sequence: its prefix and every continuation's tail[:-1]."""
    return len(g.prefix) + sum(len(t) - 1 for t in g.tails.values())


def chunks(grouped: list[Group], tokens: int) -> list[list[Group]]:
    """Groups in runs of at most `tokens` prefix tokens, each run scored whole: its prefixes' KV caches are held
    until its continuations are scored (~46 KB per position for SmolLM2 fp32), so the run bounds memory."""
    out, cur, n = [], [], 0
    for g in sorted(grouped, key=lambda g: (len(g.prefix), g.prefix)):
        if cur and n + len(g.prefix) > tokens:
            out.append(cur)
            cur, n = [], 0
        cur.append(g)
        n += len(g.prefix)
    if cur:
        out.append(cur)
    return out


class TorchScorer:
    """Grouped scoring on a transformers causal LM (any dtype / quantization: only its decoder and head are called).

    Default (`_tree`): each group is ONE packed sequence — prefix, then every continuation's tail[:-1] — under a
    tree attention mask, in batches sorted by packed length: every token is computed once, nothing is copied, and
    padding is only the batch's length spread. Measured on ARC-Easy (300 items, 2 threads) the two-pass scheme below
    spent as long copying, concatenating and GQA-repeating the per-row KV caches as in its matmuls.

    Where one mask cannot serve every layer — a sliding-window model whose packed sequence is longer than the
    window — the two-pass scheme (`_run`) runs instead. Per run of groups (`chunks`): pass 1 encodes the prefixes
    (context + shared continuation prefix) in batches sorted by prefix length, right-padded (causal: padding never
    reaches a real token), and keeps each prefix's KV cache and the hidden states of its scored positions. Pass 2
    scores every continuation's tail[:-1] in batches sorted by TAIL length — each row on a copy of its own prefix's
    cache, padded to the batch's longest prefix and masked there, positions continuing from the prefix's length.
    Sorting each pass on its own length keeps padding small in both (sorting both on one key padded ARC-Easy's
    tails 3.1x and PIQA's prefixes 2.8x)."""

    tree = True  # False: every group through the two-pass scheme (tests compare both)

    def __init__(self, model, device=None, batch_tokens: int = 2048, head_rows: int = 256,
                 run_tokens: int = 16384):
        self.model, self.batch_tokens, self.head_rows = model, int(batch_tokens), head_rows
        self.run_tokens = max(int(run_tokens), self.batch_tokens)
        self.device = device if device is not None else next(model.parameters()).device
        self.decoder = model.get_decoder()
        self.head = model.get_output_embeddings()
        self.softcap = getattr(model.config, "final_logit_softcapping", None)

    def score(self, pairs: list[Pair]) -> list[tuple[float, bool]]:
        import torch
        grouped = groups(pairs)
        gs = [split(c, k) for c, k in grouped.items()]
        out: list = [None] * len(pairs)
        window = getattr(self.model.config, "sliding_window", None)
        fits = (lambda g: self.tree and (not window or _tree_len(g) <= window))  # one mask serves every layer
        with torch.inference_mode():
            results = [self._tree(batch) for batch in cut([g for g in gs if fits(g)], _tree_len, self.batch_tokens)]
            rest = [g for g in gs if not fits(g)]
            results += [self._run(run) for run in chunks(rest, self.run_tokens)]
        for res in results:
            for (ctx, cont), ans in res.items():
                for i in grouped[ctx][cont]:
                    out[i] = ans
        return out

    def _tree(self, gs: list[Group]) -> dict:
        """One forward over packed sequences: a group's prefix, then each continuation's tail[:-1], under a tree mask
        (a prefix token sees the prefix before it; a tail token sees the whole prefix and its own tail up to itself)
        with each tail's positions continuing from the prefix's length. No KV cache is copied or kept."""
        import torch
        dev, lens = self.device, [_tree_len(g) for g in gs]
        T = max(lens)
        ids = torch.zeros(len(gs), T, dtype=torch.long)
        pos = torch.zeros(len(gs), T, dtype=torch.long)
        mask = torch.zeros(len(gs), 1, T, T, dtype=torch.bool)
        mask[:, 0, :, 0] = True  # padding rows attend to the first token (never scored; no empty softmax)
        starts: list[dict] = []
        for b, g in enumerate(gs):
            c = len(g.prefix)
            toks, seg, at = list(g.prefix), [-1] * c, {}
            for j, (k, t) in enumerate(g.tails.items()):
                at[k] = len(toks)
                toks += t[:-1]
                seg += [j] * (len(t) - 1)
            p = torch.cat([torch.arange(c)] + [torch.arange(c, c + len(t) - 1) for t in g.tails.values()])
            sg = torch.tensor(seg)
            n = len(toks)
            ids[b, :n], pos[b, :n] = torch.tensor(toks), p
            mask[b, 0, :n, :n] = (p[None, :] <= p[:, None]) & ((sg[None, :] == -1) | (sg[None, :] == sg[:, None]))
            starts.append(at)
        h = self.decoder(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                         use_cache=False).last_hidden_state
        return self._head(gs, lambda b: h[b, len(gs[b].ctx) - 1:len(gs[b].prefix)],
                          lambda b, k: h[b, starts[b][k]:starts[b][k] + len(gs[b].tails[k]) - 1])

    def _run(self, gs: list[Group]) -> dict:
        import torch
        from transformers import DynamicCache
        dev = self.device
        kv: dict = {}   # group index -> per layer (keys, values) of its prefix, (heads, len, head_dim) views
        hid: dict = {}  # group index -> hidden states of its prefix's scored positions (shared + last)
        for batch in cut(list(range(len(gs))), lambda i: len(gs[i].prefix), self.batch_tokens):
            clen = [len(gs[i].prefix) for i in batch]
            ids = torch.zeros(len(batch), max(clen), dtype=torch.long)
            for b, i in enumerate(batch):
                ids[b, :clen[b]] = torch.tensor(gs[i].prefix)
            cache = DynamicCache(config=self.model.config)
            h1 = self.decoder(input_ids=ids.to(dev), past_key_values=cache, use_cache=True).last_hidden_state
            for b, i in enumerate(batch):
                kv[i] = [(lay.keys[b, :, :clen[b]], lay.values[b, :, :clen[b]]) for lay in cache.layers]
                hid[i] = h1[b, len(gs[i].ctx) - 1:clen[b]]
        # pass 2: rows (group, continuation) with a tail longer than one token
        rows = [(i, k) for i, g in enumerate(gs) for k, t in g.tails.items() if len(t) > 1]
        tail_h: dict = {}
        for batch in cut(rows, lambda r: len(gs[r[0]].tails[r[1]]), self.batch_tokens):
            clen = [len(gs[i].prefix) for i, _ in batch]
            cmax, rmax = max(clen), max(len(gs[i].tails[k]) for i, k in batch) - 1
            x = torch.zeros(len(batch), rmax, dtype=torch.long)
            mask = torch.ones(len(batch), cmax + rmax, dtype=torch.long)
            pos = torch.empty(len(batch), rmax, dtype=torch.long)
            for r, (i, k) in enumerate(batch):
                t = gs[i].tails[k]
                x[r, :len(t) - 1] = torch.tensor(t[:-1])
                mask[r, clen[r]:cmax] = 0
                pos[r] = torch.arange(clen[r], clen[r] + rmax)
            cache = DynamicCache(config=self.model.config)
            for li in range(len(kv[batch[0][0]])):
                k0 = kv[batch[0][0]][li][0]
                keys = k0.new_zeros(len(batch), k0.shape[0], cmax, k0.shape[-1])
                vals = torch.zeros_like(keys)
                for r, (i, _) in enumerate(batch):
                    keys[r, :, :clen[r]] = kv[i][li][0]
                    vals[r, :, :clen[r]] = kv[i][li][1]
                cache.update(keys, vals, li)
            h2 = self.decoder(input_ids=x.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                              past_key_values=cache, use_cache=True).last_hidden_state
            for r, (i, k) in enumerate(batch):
                tail_h[(i, k)] = h2[r, :len(gs[i].tails[k]) - 1]
        del kv
        return self._head(gs, hid.__getitem__, lambda i, k: tail_h[(i, k)])

    def _head(self, gs: list[Group], prefix_h, tail_h) -> dict:
        """Log-likelihoods of every group's continuations, from the hidden states of its scored positions:
        prefix_h(b) = group b's prefix from its context's last token on (one row per shared token, then the row that
        predicts each tail's first token), tail_h(b, k) = the rows of tail k[:-1]. One head call (in chunks)."""
        import torch
        sel, tgt, owner = [], [], []
        for b, g in enumerate(gs):
            every, hp = [(g.ctx, k) for k in g.tails], prefix_h(b)
            for j, t in enumerate(g.shared):  # the shared prefix, scored once for all its continuations
                sel.append(hp[j])
                tgt.append(t)
                owner.append(every)
            for k, t in g.tails.items():
                sel.append(hp[-1])
                tgt.append(t[0])
                owner.append([(g.ctx, k)])
                if len(t) > 1:
                    sel.extend(tail_h(b, k))
                    tgt.extend(t[1:])
                    owner.extend([[(g.ctx, k)]] * (len(t) - 1))
        h = torch.stack(sel)
        tgt_t = torch.tensor(tgt, device=self.device)
        lp, greedy = [], []
        for s in range(0, len(h), self.head_rows):
            logits = self.head(h[s:s + self.head_rows]).float()
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            t = tgt_t[s:s + self.head_rows]
            # lm-eval's own float32 log_softmax. x[t] - logsumexp(x) is closer to float64 (2e-6 vs 2e-5 per token)
            # and 1.5% faster on PIQA, but it drifted from lm-eval's values by up to 4.1e-3 on long continuations
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
