"""Distillation loss over the teacher's cached top-k logits, per sequence (so a curriculum can weight samples):

    L = a·CE(y, s) + (1-a)·t²·KL(softmax(z_t/t) ‖ softmax(z_s/t))

The teacher distribution is its top-k renormalised at temperature t (the rest of its mass is not stored). The
student side is the full-vocabulary log-softmax at temperature t, gathered at those k ids — not a softmax restricted
to the k ids. Why: restricted, the student could put any mass outside the teacher's top-k at no cost; over the full
vocabulary the loss is a cross-entropy against a proper distribution and pushes that mass back into the top-k.
The t² keeps the KL gradients on CE's scale as t changes (Hinton et al. 2015). a = 1 is plain CE."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(s_logits, targets, t_vals, t_idx, alpha: float, T: float):
    """s_logits (B,L,V); targets (B,L); t_vals/t_idx (B,L,k). Returns per-sequence (loss, ce, kl), each (B,)."""
    ce = F.cross_entropy(s_logits.transpose(1, 2), targets, reduction="none").mean(1)
    if alpha >= 1 or t_vals is None:
        return ce, ce, torch.zeros_like(ce)
    p_t = F.softmax(t_vals.float() / T, dim=-1)
    log_q = F.log_softmax(s_logits / T, dim=-1).gather(-1, t_idx.long())
    kl = (p_t * (torch.log(p_t.clamp_min(1e-12)) - log_q)).sum(-1).mean(1)
    return alpha * ce + (1 - alpha) * T * T * kl, ce, kl
