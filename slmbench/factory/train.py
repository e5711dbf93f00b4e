"""The one training loop (nanoGPT-style) for the factory and for QAT: AdamW, linear warmup + cosine, gradient
clipping, held-out evals and a resumable checkpoint every N steps (written atomically into the artifact's .partial/
dir), and an optional fake-quantized tail: from step `qat_start` on, the model trains through quant.qat.prepare's
fake quantization (same batches, schedule and loss) and is stripped back to plain nn.Linear at the end.

    loop(model, t, steps, loss_at, qat=(scheme, start))  # t: a recipe Train; loss_at(step) -> the step's loss
    train(model, tokens, logits, t, ...)                 # the factory's phase: loop + kd_step (KD, curriculum, MoE)
    fit(model, batches, steps, t, scheme=..., qat_from=k)  # loop on plain (B, T) batches, next-token CE

So float runs, QAT runs (factory.ptq_vs_qat) and a recipe's `train.qat` phase share one optimizer, one schedule and
one meaning of "the last N steps train fake-quantized". quant.qat holds only the QAT primitives (prepare, strip)."""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from . import cache
from .curriculum import Curriculum
from .kd import kd_loss
from .progress import bar


def lr_at(t, step: int, steps: int) -> float:
    """Linear warmup over t.warmup_steps, then cosine from t.lr down to t.min_lr_ratio·t.lr at the last step."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    q = (step - t.warmup_steps) / max(1, steps - t.warmup_steps)
    return t.lr * (t.min_lr_ratio + (1 - t.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * q)))


def optimizer(model, t) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # no weight decay on norms and biases
    other = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay}, {"params": other, "weight_decay": 0}],
                             lr=t.lr, betas=(0.9, 0.95))


def fake_quantize(model, scheme: str) -> None:
    """Every nn.Linear (lm_head too) fake-quantized in place, as PTQ quantizes at load time."""
    from ..quant import qat
    before = [id(p) for p in model.parameters()]
    qat.prepare(model, scheme)
    # torchao's FakeQuantizedLinear.from_linear keeps the nn.Linear's weight Parameter, so AdamW (and its state)
    # goes on updating the same tensors, and lm_head stays tied to the (float) embedding
    if [id(p) for p in model.parameters()] != before:
        raise RuntimeError("qat.prepare replaced parameters; the optimizer would train stale tensors")


def loop(model, t, steps: int, loss_at: Callable, *, qat: tuple[str, int] | None = None, ckpt: Path | None = None,
         eval_fn: Callable | None = None, desc: str = "training", log: Callable[[str], None] | None = None) -> dict:
    """`steps` optimizer steps; t is a recipe Train (its optimizer, schedule, eval and checkpoint fields are read).
    loss_at(step) -> (loss, tokens in the batch, {name: float} to log); the batch must be a function of the step,
    so that a run resumed from `ckpt` sees the batches the interrupted one would have. qat = (scheme, first step).
    Returns the state: step, tokens, train_s, log (a row per step), evals, and qat (where it began)."""
    opt = optimizer(model, t)
    scheme, qat_start = qat or (None, steps)
    st = {"step": 0, "tokens": 0, "train_s": 0.0, "log": [], "evals": []}
    if ckpt is not None and ckpt.exists():  # resume an interrupted run where its last checkpoint left off
        c = torch.load(ckpt, weights_only=False)
        if c["state"]["step"] > qat_start:  # written inside the QAT phase: the same module tree before loading
            fake_quantize(model, scheme)
        model.load_state_dict(c["model"]), opt.load_state_dict(c["opt"])
        st = c["state"]
    model.train()
    with bar(desc, steps) as adv:
        adv(st["step"])
        for step in range(st["step"], steps):
            if step == qat_start:
                fake_quantize(model, scheme)
                st["qat"] = {"scheme": scheme, "start_step": step, "start_tokens": st["tokens"], "steps": steps - step}
            t0 = time.perf_counter()
            lr = lr_at(t, step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            loss, n, parts = loss_at(step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            opt.step()
            dt, lv = time.perf_counter() - t0, loss.item()
            st["step"], st["tokens"], st["train_s"] = step + 1, st["tokens"] + n, st["train_s"] + dt
            st["log"].append({"step": step + 1, "tokens": st["tokens"], "loss": lv, **parts, "lr": lr, "step_s": dt})
            adv(1, info=f"loss {lv:.3f} {n / dt:,.0f} tok/s")
            if log and (step % 10 == 0 or step + 1 == steps):
                log(f"{desc} step {step + 1}/{steps} loss {lv:.3f}")
            if eval_fn and t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < steps:
                st["evals"].append({"step": step + 1, "tokens": st["tokens"], **eval_fn(model)})
            if ckpt is not None and (step + 1) % t.checkpoint_every == 0 and step + 1 < steps:
                state = {"model": model.state_dict(), "opt": opt.state_dict(), "state": st}
                cache.atomic_write(ckpt, lambda p: torch.save(state, p))
    if qat_start < steps:
        from ..quant import qat as q
        q.strip(model)  # plain nn.Linear with the QAT-trained weights: saves and exports as a float HF model
    return st


def train(model, tokens: np.ndarray, logits, t, seed: int, part: Path, teacher=None, top_k: int = 0,
          eval_fn=None) -> dict:
    """The factory's training phase: t.tokens input tokens of `tokens` (N, L), the KD loss of kd_step, checkpoints
    in `part`. With t.qat, the last ceil(qat.tokens / tokens per step) steps train fake-quantized."""
    L = tokens.shape[1]
    steps = max(1, math.ceil(t.tokens / (t.batch_size * L)))
    qat = (t.qat.scheme, steps - min(steps, math.ceil(t.qat.tokens / (t.batch_size * L)))) if t.qat else None
    st = loop(model, t, steps, kd_step(model, tokens, logits, t, seed, steps, teacher, top_k), qat=qat,
              ckpt=part / "ckpt.pt", eval_fn=eval_fn, desc="training student")
    if t.qat:
        st["qat"] = {"scheme": t.qat.scheme, "tokens": t.qat.tokens, **st["qat"]}
    return st


def kd_step(model, tokens: np.ndarray, logits, t, seed: int, steps: int, teacher=None, top_k: int = 0) -> Callable:
    """loss_at(step) for the factory: the step's rows of `tokens`, the teacher's top-k and tail for them (cached:
    logits = load_logits(d, tail=True); or computed now when `teacher` is given), the per-sequence KD loss weighted
    by the curriculum, plus MoE router aux loss."""
    vals, idxs, nll, tails = logits
    N, B = len(tokens), t.batch_size
    cur = Curriculum(t.curriculum, nll[:, :-1].mean(1))  # difficulty = the teacher's mean loss on the sample
    moe = getattr(model.config, "num_local_experts", 0) > 0
    perms: dict[int, np.ndarray] = {}  # epoch → order; a function of (seed, epoch), so resuming needs no RNG state

    def batch_idx(step):
        ps = range(step * B, step * B + B)
        return np.array([perms.setdefault(p // N, np.random.default_rng([seed, p // N]).permutation(N))[p % N]
                         for p in ps])

    def loss_at(step):
        idx = batch_idx(step)
        x = torch.from_numpy(tokens[idx].astype(np.int64))
        if t.alpha >= 1:
            v = i = tail = None
        elif teacher is not None:  # teacher in the loop: the cost the cache removes
            v, i, tail, _ = teacher.topk(x, top_k)
            v, i, tail = v[:, :-1], i[:, :-1], tail[:, :-1]
        else:
            v, i = torch.from_numpy(vals[idx][:, :-1]), torch.from_numpy(idxs[idx][:, :-1])
            tail = torch.from_numpy(tails[idx][:, :-1])
        out = model(x[:, :-1], **({"output_router_logits": True} if moe else {}))
        per_seq, ce, kl = kd_loss(out.logits.float(), x[:, 1:], v, i, t.alpha, t.temperature, tail)
        loss = (cur.weights(idx, step / steps) * per_seq).mean()
        if moe and out.aux_loss is not None:
            loss = loss + model.config.router_aux_loss_coef * out.aux_loss
        return loss, x.numel(), {"ce": ce.mean().item(), "kl": kl.mean().item()}
    return loss_at


def lm_loss(model, batch):
    """Next-token cross-entropy on a (B, T) LongTensor."""
    return model(batch, labels=batch).loss


def fit(model, batches: Iterable, steps: int, t=None, *, scheme: str | None = None, qat_from: int = 0,
        loss_fn: Callable = lm_loss, log: Callable[[str], None] | None = None, desc: str = "train") -> dict:
    """`steps` steps of `loop`, each on the next batch of `batches`. t: a recipe Train (default: the factory's
    defaults). With `scheme`, the steps from `qat_from` on train fake-quantized, and the model comes back stripped
    to float. Returns the loop's state (its "log" has a row per step)."""
    from .recipe import Train
    it = iter(batches)

    def loss_at(step):
        b = next(it)
        return loss_fn(model, b), b.numel(), {}
    st = loop(model, t or Train(), steps, loss_at, qat=(scheme, qat_from) if scheme else None, desc=desc, log=log)
    model.eval()
    return st
