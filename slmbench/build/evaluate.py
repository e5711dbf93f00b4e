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
             batch: int = 8) -> dict:
    was = model.training
    model.eval()
    nll = agree = n = 0.0
    nbytes = 0
    for b in range(0, len(heldout), batch):
        x = torch.from_numpy(heldout[b:b + batch].astype(np.int64))
        z = model(x[:, :-1]).logits.float()
        y = x[:, 1:]
        nll += F.cross_entropy(z.transpose(1, 2), y, reduction="sum").item()
        nbytes += int(token_bytes[y.numpy()].sum())
        if teacher_top1 is not None:
            agree += (z.argmax(-1).numpy() == teacher_top1[b:b + batch, :-1]).sum()
        n += y.numel()
    model.train(was)
    out = {"heldout_bpb": nll / math.log(2) / nbytes, "heldout_nll": nll / n, "heldout_tokens": int(n),
           "heldout_bytes": nbytes}
    if teacher_top1 is not None:
        out["top1_agreement"] = float(agree / n)
    return out


def teacher_bpb(nll: np.ndarray, heldout: np.ndarray, token_bytes: np.ndarray) -> float:
    """The teacher's own held-out bits per byte, from the NLL cached with its logits (a reference point)."""
    return float(nll[:, :-1].sum() / math.log(2) / token_bytes[heldout[:, 1:]].sum())
