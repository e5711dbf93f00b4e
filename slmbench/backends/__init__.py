"""Backends: the runtime that executes a model: transformers/torch, or llama.cpp (GGUF levels).

A backend loads ModelFiles under a Variant onto a device adapter and returns an Engine (see torch_hf.Engine for
the interface scenarios rely on). One registry: `@register_backend("torch")`.
"""
from __future__ import annotations

BACKENDS: dict = {}


def register_backend(name: str):
    def deco(fn):
        BACKENDS[name] = fn
        return fn
    return deco


def load_engine(files, variant, adapter, progress=print):
    from . import llamacpp, torch_hf  # noqa: F401  (llamacpp imports llama_cpp only when loading)
    from ..adapters import cloud  # noqa: F401  (registers backend openai: an OpenAI-compatible endpoint)
    from ..errors import Unsupported
    if variant.backend not in BACKENDS:
        raise Unsupported(f"backend {variant.backend!r} is not available (known: {', '.join(sorted(BACKENDS))})")
    return BACKENDS[variant.backend](files, variant, adapter, progress)
