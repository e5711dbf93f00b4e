"""Quantization-aware training: the factory's final phase.

    prepare(model, scheme)   # nn.Linear -> FakeQuantizedLinear: the forward pass rounds weights (and activations,
                             # for int8da_int4w) exactly as the scheme's PTQ will, gradients pass straight through
    ...train as usual...
    strip(model)             # back to plain nn.Linear with the QAT-trained float weights: save / export as usual

The exported float model is loaded with `quantization: <scheme>`; the torch backend's PTQ then applies the same
torchao config that `QATConfig(base, step="convert")` would — so "QAT" and "PTQ" rows differ only in the weights
they quantize. `train()` is the whole phase for callers that have batches and a loss (the factory passes its KD
loss; the default is next-token cross-entropy)."""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable

from ..errors import Unsupported

# Schemes torchao's QATConfig can fake here (it infers fake-quantizers from these PTQ configs). Int8WeightOnly
# has no QAT mapping in torchao 0.18 and Int4WeightOnly no CPU kernel: intx8 / intx4 are the int8 / int4 routes.
SCHEMES = ("intx8_weight_only", "intx4_weight_only", "int8da_int4w")


def _config(scheme: str, step: str):
    if scheme not in SCHEMES:
        raise Unsupported(f"QAT scheme {scheme!r} not available (known: {', '.join(SCHEMES)})")
    from torchao.quantization.qat import QATConfig

    from .ptq import torchao_config
    return QATConfig(torchao_config(scheme), step=step)


def prepare(model, scheme: str):
    from torchao.quantization import quantize_
    quantize_(model, _config(scheme, "prepare"))
    return model


def convert(model, scheme: str):
    """Fake-quantized model -> really quantized (torchao tensors), for in-process evaluation."""
    from torchao.quantization import quantize_
    quantize_(model, _config(scheme, "convert"))
    return model


def strip(model):
    """Replace every FakeQuantizedLinear by a plain nn.Linear sharing its (trained) weight: the model saves and
    exports like any float model, and keeps tied embeddings tied."""
    from torchao.quantization.qat.linear import FakeQuantizedLinear
    for name, mod in list(model.named_modules()):
        for cname, child in list(mod.named_children()):
            if isinstance(child, FakeQuantizedLinear):
                setattr(mod, cname, child.to_linear())
    return model


def lm_loss(model, batch):
    """Next-token cross-entropy on a (B, T) LongTensor."""
    return model(batch, labels=batch).loss


def fit(model, it, steps: int, lr: float = 3e-4, warmup: int = 5, loss_fn: Callable = lm_loss,
        log: Callable[[str], None] | None = None, tag: str = "train") -> list[float]:
    """`steps` AdamW steps with a short warm-up and cosine decay. Shared by the float and QAT branches, so their
    budgets and schedules are the same by construction."""
    import torch
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    losses = []
    for step in range(steps):
        loss = loss_fn(model, next(it))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step % 10 == 0 or step == steps - 1):
            log(f"{tag} step {step + 1}/{steps} loss {losses[-1]:.3f}")
    model.eval()
    return losses


def train(model, batches: Iterable, scheme: str, steps: int, lr: float = 3e-4, warmup: int = 5,
          loss_fn: Callable = lm_loss, log: Callable[[str], None] | None = None, strip_after: bool = True) -> dict:
    """The QAT phase: prepare, fit, then strip (default). Returns {"scheme", "steps", "losses", "seconds"}."""
    prepare(model, scheme)
    t0 = time.perf_counter()
    losses = fit(model, iter(batches), steps, lr, warmup, loss_fn, log, tag=f"qat {scheme}")
    if strip_after:
        strip(model)
    return {"scheme": scheme, "steps": steps, "losses": losses, "seconds": time.perf_counter() - t0}
