"""The model Source contract: where a model's files come from (a hard-wired download, a local HF directory, a
random config, a factory recipe, ...). A source checks a suite's model entry at `validate` (cheaply, no weights)
and resolves it in the job process to ModelFiles a backend can load."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar


@dataclass
class ModelFiles:
    """What a backend loads: an HF directory, or an in-memory config for random-init test models."""
    hf_dir: Path | None = None
    config: object | None = None  # transformers PretrainedConfig
    tokenizer_dir: Path | None = None
    origin: str = ""  # human description for the manifest (e.g. the GGUF it came from)
    build_dir: Path | None = None  # a factory artifact (manifest.json, held-out split): the heldout scenario reads it
    trust_remote_code: bool = False
    gguf_path: Path | None = None  # a GGUF file: llama.cpp runs it as it is; torch converts it once to an HF dir


class Source(ABC):
    name: ClassVar[str]
    # ModelSpec fields this source reads besides name/source/knobs: any other field set in a suite is refused
    fields: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def check(cls, spec, file: str, field: str, base: Path) -> None:
        """Validate the suite's entry (spec: plan.ModelSpec) without loading weights; raise UserError."""

    @classmethod
    @abstractmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        """Fetch/build (cached) and return the files. Runs in the job process."""
