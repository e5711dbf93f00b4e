"""Backends (contracts.engine.Engine): the runtime that executes a model. One class per file, registered in the
BACKENDS registry; a variant's `backend:` knob names one, and the backend owns the variant's other knobs.

    torch       transformers + torch (torch_hf.py)
    executorch  ExecuTorch (XNNPACK) through executorch.runtime, fp32 and 8da4w (executorch.py)
    llamacpp    llama.cpp through llama-cpp-python, every GGUF level (llamacpp.py)
    onnx_genai  ONNX Runtime GenAI, its model builder's fp32/int8/int4 CPU models (onnx_genai.py)
    openai      any OpenAI-compatible HTTP endpoint (openai.py)
"""
from __future__ import annotations

from ..contracts import BACKENDS


def load_engine(files, variant, adapter, progress=print):
    """The variant's backend loaded with `files` on `adapter` (raises Unsupported for what it cannot run)."""
    from ..errors import Unsupported
    if variant.problem:
        raise Unsupported(variant.problem)
    return BACKENDS.get(variant.backend).load(files, variant, adapter, progress)
