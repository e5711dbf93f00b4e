"""Post-training quantization of a loaded torch model, by scheme name.

Weight-only schemes keep activations in float and store int8/int4 weights (decode is bandwidth-bound, so fewer
bytes per token is the point); dynamic schemes also quantize activations per token at run time (int8 GEMMs).
torchao covers the int8/intx schemes; `int8_dynamic` is PyTorch's own (fbgemm) dynamic quantization.
Only nn.Linear layers are quantized (lm_head included; a tied embedding then keeps a float copy for lookups)."""
from __future__ import annotations

from ..errors import Unsupported

# name -> what it is (shown in reports and errors)
TORCH_SCHEMES = {
    "none": "no quantization",
    "int8_dynamic": "torch.ao dynamic int8: int8 per-channel weights, activations quantized per call (fbgemm)",
    "int8_weight_only": "torchao Int8WeightOnlyConfig: int8 per-channel weights, float activations",
    "int8_dynamic_ao": "torchao Int8DynamicActivationInt8WeightConfig: int8 weights, int8 per-token activations",
    "intx8_weight_only": "torchao IntxWeightOnlyConfig(int8, per-channel)",
    "intx4_weight_only": "torchao IntxWeightOnlyConfig(int4, group 32, symmetric)",
    "int8da_int4w": "torchao Int8DynamicActivationIntxWeightConfig(int4 weights, group 32; int8 per-token acts)",
    "int8da_int4w_packed": "int8da_int4w with int4 packed two per byte for torchao's low-bit CPU kernels",
    "int4_weight_only": "torchao Int4WeightOnlyConfig(group 32): the packed int4 GEMM kernels",
}
# torchao's "unpacked_to_int8" layout keeps each int4 value in a byte: right numerics, no size win. Packed int4 on
# CPU needs torchao's own kernel library (ARM/KleidiAI builds; the x86 wheel loads none) — checked by trying.
GROUP = 32


def torchao_config(scheme: str):
    """The torchao PTQ config for a scheme (also the QAT base config: QATConfig(base) fakes exactly this)."""
    import torch
    from torchao.quantization import (Int4WeightOnlyConfig, Int8DynamicActivationInt8WeightConfig,
                                      Int8DynamicActivationIntxWeightConfig, Int8WeightOnlyConfig,
                                      IntxWeightOnlyConfig)
    from torchao.quantization.granularity import PerAxis, PerGroup
    return {
        "int8_weight_only": lambda: Int8WeightOnlyConfig(),
        "int8_dynamic_ao": lambda: Int8DynamicActivationInt8WeightConfig(),
        "intx8_weight_only": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)),
        "intx4_weight_only": lambda: IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(GROUP)),
        "int8da_int4w": lambda: Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                      weight_granularity=PerGroup(GROUP)),
        "int8da_int4w_packed": lambda: Int8DynamicActivationIntxWeightConfig(
            weight_dtype=torch.int4, weight_granularity=PerGroup(GROUP), intx_packing_format="opaque_torchao_auto"),
        "int4_weight_only": lambda: Int4WeightOnlyConfig(group_size=GROUP),
    }[scheme]()


def check(scheme: str, dtype: str, device: str) -> None:
    """Refuse, before loading anything, what has no kernel here. Raises Unsupported with the reason."""
    from . import gguf
    if scheme in gguf.LEVELS:
        raise Unsupported(f"quantization {scheme!r} is a GGUF level: it runs on backend 'llamacpp'")
    if scheme not in TORCH_SCHEMES:
        raise Unsupported(f"quantization {scheme!r} is not a torch scheme (known: {', '.join(TORCH_SCHEMES)}; "
                          f"GGUF levels on backend 'llamacpp': {', '.join(gguf.LEVELS)})")
    if scheme == "int8_dynamic" and (device != "cpu" or dtype != "fp32"):
        raise Unsupported("torch dynamic int8 (fbgemm) runs on CPU with fp32 activations only")
    if scheme == "int4_weight_only" and device == "cpu":
        # torchao 0.18: 'plain' needs the CUDA mslk library, 'tile_packed_to_4d' CUDA tinygemm, 'plain_int32'
        # XPU/NPU; the CPU int4 packing of older releases is gone. intx4_weight_only is the CPU int4 path.
        raise Unsupported("torchao 0.18 has no CPU kernel for Int4WeightOnlyConfig (packed int4 GEMMs are "
                          "CUDA/XPU only); use intx4_weight_only on torch, or q4_0/q4_k_m on llamacpp")


def apply(model, scheme: str, dtype: str = "fp32", device: str = "cpu"):
    """Quantize `model` in place (returns it). Raises Unsupported for a scheme with no kernel here."""
    check(scheme, dtype, device)
    if scheme == "none":
        return model
    import torch
    if scheme == "int8_dynamic":
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    try:
        from torchao.quantization import quantize_
    except ImportError as e:
        raise Unsupported(f"quantization {scheme!r} needs torchao (pip install torchao==0.18.0): {e}")
    try:
        quantize_(model, torchao_config(scheme))
    except (ImportError, NotImplementedError, AssertionError) as e:  # torchao's "no kernel for this device"
        raise Unsupported(f"torchao {scheme} has no kernel here: {type(e).__name__}: {e}")
    return model
