"""Quantization-aware training: the factory's final phase.

    prepare(model, scheme)   # nn.Linear -> FakeQuantizedLinear: the forward pass rounds weights (and activations,
                             # for int8da_int4w) exactly as the scheme's PTQ will, gradients pass straight through
    ...train as usual...
    strip(model)             # back to plain nn.Linear with the QAT-trained float weights: save / export as usual

The exported float model is loaded with `quantization: <scheme>`; the torch backend's PTQ then applies the same
torchao config that `QATConfig(base, step="convert")` would — so "QAT" and "PTQ" rows differ only in the weights
they quantize. The training in between is the factory's one loop (factory.train.loop / factory.train.fit, with
`qat=(scheme, first step)`): this module holds only the primitives, so that quant never imports the factory."""
from __future__ import annotations

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
