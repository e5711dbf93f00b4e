"""Distillation loss over the teacher's cached top-k logits plus one tail bucket, per sequence (so a curriculum can
weight samples). Buckets: the teacher's top-k ids, and "every other id" whose logit is the log-sum-exp of the
logits there (the teacher's is cached as `tail`; the student's is computed over its own full vocabulary):

    b_t = [z_t[top-k], tail_t]            b_s = [z_s[top-k], logsumexp(z_s[not top-k])]
    L   = a·CE(y, z_s) + (1-a)·t²·KL(softmax(b_t/t) ‖ softmax(b_s/t))

At t = 1 (the default) softmax(b) is the exact probability of each bucket, so the KL term is the forward KL of the
two models' distributions over k+1 events: a student equal to the teacher minimises it (KL = 0, gradient 0), and
with k = vocabulary it is the full-vocabulary KL. Without the tail bucket (the old loss: teacher top-k renormalised,
no mass elsewhere) every id outside the top-k is pushed towards zero and the teacher itself is not the optimum.
At t ≠ 1 the tail is tempered as one aggregated logit (the cache cannot know each tail id): still minimised by the
teacher, but no longer the exact tempered KL. The t² keeps the KL gradients on CE's scale (Hinton et al. 2015).
a = 1 is plain CE; a = 0 is pure KD."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(s_logits, targets, t_vals, t_idx, alpha: float, T: float, t_tail=None):
    """s_logits (B,L,V); targets (B,L); t_vals/t_idx (B,L,k); t_tail (B,L) teacher log-sum-exp over the ids outside
    its top-k (None: k = vocabulary, no tail). Returns per-sequence (loss, ce, kl), each (B,)."""
    ce = F.cross_entropy(s_logits.transpose(1, 2), targets, reduction="none").mean(1)
    if alpha >= 1 or t_vals is None:
        return ce, ce, torch.zeros_like(ce)
    idx = t_idx.long()
    b_t, b_s = t_vals.to(s_logits.dtype), s_logits.gather(-1, idx)
    if idx.shape[-1] < s_logits.shape[-1]:
        if t_tail is None:
            raise ValueError("k < vocabulary needs the teacher's tail log-sum-exp (t_tail)")
        rest = s_logits.scatter(-1, idx, float("-inf")).logsumexp(-1, keepdim=True)  # exact, no 1 - Σp cancellation
        b_t, b_s = torch.cat([b_t, t_tail.to(b_t.dtype)[..., None]], -1), torch.cat([b_s, rest], -1)
    log_p, log_q = F.log_softmax(b_t / T, -1), F.log_softmax(b_s / T, -1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1).mean(1)
    return alpha * ce + (1 - alpha) * T * T * kl, ce, kl
