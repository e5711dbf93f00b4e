"""The training loop (nanoGPT-style): fixed token budget, AdamW, warmup + cosine, the KD loss over cached teacher
top-k (or the teacher run every step, to measure what caching saves), curriculum weights per sample, MoE router
aux loss, and a resumable checkpoint every N steps (written atomically into the artifact's .partial/ dir).
With `t.qat`, the last qat.tokens of the same budget train fake-quantized (quant.qat.prepare at the step where that
phase begins; nothing else changes), and the model is stripped back to plain nn.Linear at the end."""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from . import cache
from .curriculum import Curriculum
from .kd import kd_loss
from .progress import bar


def train(model, tokens: np.ndarray, logits, t, seed: int, part: Path, teacher=None, top_k: int = 0,
          eval_fn=None) -> dict:
    vals, idxs, nll = logits
    N, L = tokens.shape
    B, steps = t.batch_size, max(1, math.ceil(t.tokens / (t.batch_size * L)))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": other, "weight_decay": 0}],
                            lr=t.lr, betas=(0.9, 0.95))
    cur = Curriculum(t.curriculum, nll[:, :-1].mean(1))  # difficulty = the teacher's mean loss on the sample
    st = {"step": 0, "tokens": 0, "train_s": 0.0, "log": [], "evals": []}
    # QAT: the final ceil(qat.tokens / tokens-per-step) steps; same batches, LR schedule and loss as without it
    qat_start = steps - min(steps, math.ceil(t.qat.tokens / (B * L))) if t.qat else steps
    fq = False

    def enter_qat():
        nonlocal fq
        from ..quant import qat
        before = [id(p) for p in model.parameters()]
        qat.prepare(model, t.qat.scheme)  # every nn.Linear (lm_head too), as PTQ quantizes at load time
        # torchao's FakeQuantizedLinear.from_linear keeps the nn.Linear's weight Parameter, so AdamW (and its
        # state) goes on updating the same tensors, and lm_head stays tied to the (float) embedding
        if [id(p) for p in model.parameters()] != before:
            raise RuntimeError("qat.prepare replaced parameters; the optimizer would train stale tensors")
        fq = True

    ckpt = part / "ckpt.pt"
    if ckpt.exists():  # resume an interrupted build where its last checkpoint left off
        c = torch.load(ckpt, weights_only=False)
        if c["state"]["step"] > qat_start:  # written inside the QAT phase: the same module tree before loading
            enter_qat()
        model.load_state_dict(c["model"]), opt.load_state_dict(c["opt"])
        st = c["state"]
    perms: dict[int, np.ndarray] = {}  # epoch → order; a function of (seed, epoch), so resuming needs no RNG state

    def batch_idx(step):
        ps = range(step * B, step * B + B)
        return np.array([perms.setdefault(p // N, np.random.default_rng([seed, p // N]).permutation(N))[p % N]
                         for p in ps])

    def lr_at(step):
        if step < t.warmup_steps:
            return t.lr * (step + 1) / t.warmup_steps
        q = (step - t.warmup_steps) / max(1, steps - t.warmup_steps)
        return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * q)))

    moe = getattr(model.config, "num_local_experts", 0) > 0
    model.train()
    with bar("training student", steps) as adv:
        adv(st["step"])
        for step in range(st["step"], steps):
            if step >= qat_start and not fq:
                enter_qat()
                st["qat"] = {"scheme": t.qat.scheme, "tokens": t.qat.tokens, "start_step": step,
                             "start_tokens": st["tokens"], "steps": steps - step}
            t0 = time.perf_counter()
            idx = batch_idx(step)
            x = torch.from_numpy(tokens[idx].astype(np.int64))
            if t.alpha >= 1:
                v = i = None
            elif teacher is not None:  # teacher in the loop: the cost the cache removes
                v, i, _ = teacher.topk(x, top_k)
                v, i = v[:, :-1], i[:, :-1]
            else:
                v, i = torch.from_numpy(vals[idx][:, :-1]), torch.from_numpy(idxs[idx][:, :-1])
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            out = model(x[:, :-1], **({"output_router_logits": True} if moe else {}))
            per_seq, ce, kl = kd_loss(out.logits.float(), x[:, 1:], v, i, t.alpha, t.temperature)
            loss = (cur.weights(idx, step / steps) * per_seq).mean()
            if moe and out.aux_loss is not None:
                loss = loss + model.config.router_aux_loss_coef * out.aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            dt = time.perf_counter() - t0
            st["step"], st["tokens"], st["train_s"] = step + 1, st["tokens"] + x.numel(), st["train_s"] + dt
            st["log"].append({"step": step + 1, "tokens": st["tokens"], "loss": loss.item(), "ce": ce.mean().item(),
                              "kl": kl.mean().item(), "lr": lr_at(step), "step_s": dt})
            adv(1, info=f"loss {loss.item():.3f} ce {ce.mean().item():.3f} {x.numel() / dt:,.0f} tok/s")
            if eval_fn and t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < steps:
                st["evals"].append({"step": step + 1, "tokens": st["tokens"], **eval_fn(model)})
            if (step + 1) % t.checkpoint_every == 0 and step + 1 < steps:
                state = {"model": model.state_dict(), "opt": opt.state_dict(), "state": st}
                cache.atomic_write(ckpt, lambda p: torch.save(state, p))
    if fq:
        from ..quant import qat
        qat.strip(model)  # plain nn.Linear with the QAT-trained weights: exports as a float HF model
    return st
