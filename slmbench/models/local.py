"""Source `hf`: a local Hugging Face model directory (config.json, weights, tokenizer)."""
from __future__ import annotations

from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import UserError


@register_source
class LocalHF(Source):
    name = "hf"
    fields = frozenset({"path", "trust_remote_code"})

    @classmethod
    def check(cls, spec, file, field, base):
        if not spec.path:
            raise UserError("source 'hf' needs a path to a local Hugging Face model directory", file=file,
                            field=f"{field}.path")
        p = Path(spec.path)
        p = p if p.is_absolute() else base / p
        if not (p / "config.json").is_file():
            raise UserError(f"no Hugging Face model directory (config.json) at {spec.path}", file=file,
                            field=f"{field}.path")

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        p = Path(spec.path)
        return ModelFiles(hf_dir=p, tokenizer_dir=p, origin=f"local HF dir {p}")
