"""Held-out evaluation of a student against the cached teacher: bits per byte (sum of next-token NLL in bits over
the UTF-8 bytes of the predicted tokens — comparable across tokenizers and models) and top-1 agreement (the share of
positions where the student's argmax is the teacher's argmax)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, heldout: np.ndarray, token_bytes: np.ndarray, teacher_top1: np.ndarray | None,
             batch: int = 8, per_seq: bool = False) -> dict:
    """Held-out bits/byte (+ stderr over sequences) and top-1 agreement. per_seq=True adds seq_bits / seq_bytes /
    seq_agreement (one value per held-out sequence, in order) for paired comparisons between models."""
    was = model.training
    model.eval()
    nll, nbytes, agree = [], [], []  # per held-out sequence: the stderr comes from their spread
    for b in range(0, len(heldout), batch):
        x = torch.from_numpy(heldout[b:b + batch].astype(np.int64))
        z = model(x[:, :-1]).logits.float()
        y = x[:, 1:]
        nll += F.cross_entropy(z.transpose(1, 2), y, reduction="none").sum(1).tolist()
        nbytes += token_bytes[y.numpy()].sum(1).tolist()
        if teacher_top1 is not None:
            agree += (z.argmax(-1).numpy() == teacher_top1[b:b + batch, :-1]).mean(1).tolist()
    model.train(was)
    bits, nb = np.array(nll) / math.log(2), np.array(nbytes, dtype=float)
    n, bpb = len(heldout) * (heldout.shape[1] - 1), bits.sum() / nb.sum()
    out = {"heldout_bpb": float(bpb), "heldout_nll": float(sum(nll) / n), "heldout_tokens": int(n),
           "heldout_bytes": int(nb.sum()), "heldout_seqs": len(heldout),
           # ratio-estimator stderr over sequences (bits_i - bpb*bytes_i) / mean bytes / sqrt(k)
           "heldout_bpb_stderr": float(np.std(bits - bpb * nb, ddof=1) / nb.mean() / math.sqrt(len(nb)))
           if len(nb) > 1 else None}
    if per_seq:
        out.update(seq_bits=bits.tolist(), seq_bytes=nb.astype(int).tolist(), seq_agreement=list(agree))
    if teacher_top1 is not None:
        a = np.array(agree)
        out["top1_agreement"] = float(a.mean())
        out["top1_agreement_stderr"] = float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else None
    return out


def teacher_bpb(nll: np.ndarray, heldout: np.ndarray, token_bytes: np.ndarray) -> float:
    """The teacher's own held-out bits per byte, from the NLL cached with its logits (a reference point)."""
    return float(nll[:, :-1].sum() / math.log(2) / token_bytes[heldout[:, 1:]].sum())
