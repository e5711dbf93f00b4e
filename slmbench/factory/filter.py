"""Data quality filtering: score each pool document by the teacher's perplexity (on its first N tokens) and by cheap
heuristics (symbol ratio, repetition), drop hard failures, keep the best-scoring documents up to a token fraction.
`method: random` keeps a same-size random subset instead — the unfiltered baseline."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .progress import bar


def symbol_ratio(doc: str) -> float:
    return sum(not (c.isalnum() or c.isspace()) for c in doc) / max(1, len(doc))


def repetition(doc: str) -> float:
    """The larger of: share of non-empty lines that repeat an earlier line, share of repeated word 3-grams."""
    lines = [ln.strip() for ln in doc.splitlines() if ln.strip()]
    dup_lines = 1 - len(set(lines)) / len(lines) if lines else 0.0
    w = doc.split()
    grams = list(zip(w, w[1:], w[2:]))
    dup_grams = 1 - len(set(grams)) / len(grams) if grams else 0.0
    return max(dup_lines, dup_grams)


def teacher_nll(teacher, ids: list[list[int]], n: int, batch: int = 16) -> np.ndarray:
    """Mean next-token NLL (nats) of each document's first n tokens under the teacher."""
    import torch
    pad = teacher.tokenizer.pad_token_id or 0
    out = np.zeros(len(ids))
    with bar("teacher perplexity scoring", len(ids)) as adv:
        for b in range(0, len(ids), batch):
            chunk = [x[:n] for x in ids[b:b + batch]]
            L = max(len(x) for x in chunk)
            x = torch.tensor([c + [pad] * (L - len(c)) for c in chunk])
            m = torch.tensor([[1] * len(c) + [0] * (L - len(c)) for c in chunk])
            with torch.inference_mode():
                z = teacher.model(x, attention_mask=m).logits.float()
            nll = torch.nn.functional.cross_entropy(z[:, :-1].transpose(1, 2), x[:, 1:], reduction="none")
            valid = m[:, 1:].float()
            out[b:b + len(chunk)] = ((nll * valid).sum(1) / valid.sum(1).clamp(min=1)).numpy()
            adv(len(chunk))
    return out


def _z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-9)


def select(docs: list[tuple[str, str]], ids: list[list[int]], f, teacher, rng) -> tuple[list[int], dict]:
    """Indices of the documents kept, and a report of what was kept and dropped (and why)."""
    n_tok = np.array([len(x) for x in ids])
    budget = f.keep * n_tok.sum()
    rep = {"method": f.method if f.keep < 1 else "none", "pool_docs": len(docs), "pool_tokens": int(n_tok.sum())}
    if f.method == "random" or f.keep >= 1 and f.min_chars == 0 and f.max_symbol_ratio >= 1 and f.max_repetition >= 1:
        order = rng.permutation(len(docs)) if f.keep < 1 else np.arange(len(docs))
        keep = _fill(order, n_tok, budget)
        return keep, _report(rep, docs, n_tok, keep, {})
    sym = np.array([symbol_ratio(d) for _, d in docs])
    rpt = np.array([repetition(d) for _, d in docs])
    hard = {"too_short": np.array([len(d) < f.min_chars for _, d in docs]),
            "symbols": sym > f.max_symbol_ratio, "repetition": rpt > f.max_repetition}
    ok = ~(hard["too_short"] | hard["symbols"] | hard["repetition"])
    score = -f.heuristic_weight * (_z(sym) + _z(rpt)) / 2
    metrics = {"symbol_ratio": sym, "repetition": rpt}
    if f.perplexity_weight > 0 and ok.any():
        nll = np.full(len(docs), np.nan)
        idx = np.flatnonzero(ok)
        nll[idx] = teacher_nll(teacher, [ids[i] for i in idx], f.score_tokens)
        z = np.zeros(len(docs))
        z[idx] = _z(nll[idx])
        score = score - f.perplexity_weight * z  # low teacher perplexity = dense, fluent text (CCNet-style)
        metrics["teacher_ppl"] = np.exp(nll)
    order = [i for i in np.argsort(-score, kind="stable") if ok[i]]
    keep = _fill(order, n_tok, budget)
    rep["hard_dropped"] = {k: int(v.sum()) for k, v in hard.items()}
    dropped = sorted(set(range(len(docs))) - set(keep), key=lambda i: score[i])[:3]
    rep["worst_dropped"] = [docs[i][1][:120] for i in dropped]
    return keep, _report(rep, docs, n_tok, keep, metrics)


def _fill(order, n_tok, budget) -> list[int]:
    keep, n = [], 0
    for i in order:
        if n >= budget:
            break
        keep.append(int(i))
        n += n_tok[i]
    return sorted(keep)


def _report(rep, docs, n_tok, keep, metrics):
    kept = np.zeros(len(docs), bool)
    kept[keep] = True
    rep.update(kept_docs=int(kept.sum()), kept_tokens=int(n_tok[kept].sum()), dropped_docs=int((~kept).sum()),
               dropped_tokens=int(n_tok[~kept].sum()))
    src = Counter(), Counter()
    for i, (lab, _) in enumerate(docs):
        src[0][lab] += int(n_tok[i])
        src[1][lab] += int(n_tok[i]) if kept[i] else 0
    rep["per_source_tokens"] = {lab: {"pool": src[0][lab], "kept": src[1][lab]} for lab in src[0]}
    for k, v in metrics.items():
        fin = np.isfinite(v)
        mean = (lambda m: None if not m.any() else round(float(v[m].mean()), 4))
        rep[f"mean_{k}"] = {"kept": mean(kept & fin), "dropped": mean(~kept & fin)}
    return rep
