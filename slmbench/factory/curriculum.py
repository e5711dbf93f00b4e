"""Curriculum as per-sample loss weights w_i(t) that change over training (t = progress in [0, 1]).

teacher_loss: difficulty d_i = the teacher's mean next-token loss on sample i, standardised over the corpus (z_i).
    w_i(t) = exp(-s·(1 - 2t)·z_i), renormalised to mean 1 in the batch:
    at the start easy samples (z < 0) weigh more, at the middle all weigh the same, at the end hard ones weigh more.
uniform: w_i = 1 (the baseline). Weights keep the mean at 1, so the loss scale and learning rate stay comparable."""
from __future__ import annotations

import numpy as np
import torch


class Curriculum:
    def __init__(self, cfg, difficulty: np.ndarray | None):
        self.kind, self.s = cfg.kind, cfg.strength
        d = difficulty if difficulty is not None else np.zeros(1)
        self.z = (d - d.mean()) / (d.std() + 1e-9)

    def weights(self, idx: np.ndarray, progress: float) -> torch.Tensor:
        if self.kind == "uniform":
            return torch.ones(len(idx))
        w = np.exp(-self.s * (1 - 2 * progress) * self.z[idx])
        return torch.from_numpy(w / w.mean()).float()
