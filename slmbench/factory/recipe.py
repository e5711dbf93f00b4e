"""Build recipes: what the SLM factory makes. A YAML file validated before any work (pydantic, extra=forbid), so a
typo fails in a second with `error: FILE: FIELD: why` (exit 2) instead of after ten minutes of teacher logits."""
from __future__ import annotations

import sysconfig
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import UserError
from ..plan import ModelSpec
from ..yamlio import deep_merge, load_yaml, parse_model
from ..settings import data_dir


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not a silently ignored key


class Source(_Strict):
    """One corpus source: exactly one of `path` (file or folder), `data` (under $SLMBENCH_DATA_DIR), `stdlib`."""
    path: str | None = None
    data: str | None = None
    stdlib: bool = False
    glob: str = Field("*", description="files to take from a folder (e.g. *.txt, *.py)")
    max_bytes: int = Field(2_000_000, ge=1, description="read at most this much text from the source")
    optional: bool = Field(False, description="skip (with a note) when absent, e.g. `data:` without the data dir")

    @model_validator(mode="after")
    def _one(self):
        if sum([self.path is not None, self.data is not None, self.stdlib]) != 1:
            raise ValueError("give exactly one of path, data, stdlib")
        return self


class Corpus(_Strict):
    sources: list[Source] = Field(min_length=1)
    doc_chars: int = Field(2000, ge=50, description="documents are paragraphs merged up to this many characters")
    min_doc_chars: int = Field(100, ge=1, description="shorter pieces are dropped as fragments")
    pool_tokens: int = Field(200_000, ge=64, description="training pool (before filtering), in tokens")
    heldout_fraction: float = Field(0.05, gt=0, lt=0.5)
    heldout_tokens: int = Field(16_384, ge=64, description="held-out evaluation tokens (cap)")
    seq_len: int = Field(128, ge=8, le=4096)
    seed: int = Field(0, description="document order and split; kept apart from the training seed so that seeds "
                                     "of one recipe share one corpus and one teacher-logit cache")


class Filter(_Strict):
    keep: float = Field(1.0, gt=0, le=1, description="fraction of pool tokens kept (1 = no filtering)")
    method: Literal["quality", "random"] = Field("quality", description="random: a same-size random subset")
    perplexity_weight: float = Field(1.0, ge=0, description="weight of the teacher-perplexity score")
    heuristic_weight: float = Field(1.0, ge=0, description="weight of the symbol/repetition score")
    score_tokens: int = Field(64, ge=8, description="teacher perplexity is scored on each document's first N tokens")
    min_chars: int = Field(0, ge=0, description="hard drop: documents shorter than this")
    max_symbol_ratio: float = Field(1.0, gt=0, le=1, description="hard drop: more non-alphanumeric characters")
    max_repetition: float = Field(1.0, gt=0, le=1, description="hard drop: more duplicated lines / word 3-grams")


class Synth(_Strict):
    tokens: int = Field(0, ge=0, description="token budget for generated passages (0 = none)")
    ratio: float = Field(0.1, ge=0, lt=1, description="share of training tokens that are synthetic")
    topics: list[str] = Field(default_factory=lambda: ["photosynthesis", "prime numbers", "the water cycle"])
    max_new_tokens: int = Field(192, ge=4, le=2048)
    batch_size: int = Field(8, ge=1, le=256)
    temperature: float = Field(0.8, gt=0, le=2)


class Logits(_Strict):
    top_k: int = Field(32, ge=1, le=1024)
    batch_size: int = Field(8, ge=1, le=1024)
    shard_seqs: int = Field(64, ge=1, description="sequences per atomically written shard (the resume unit)")


class Depth(_Strict):
    keep_layers: int = Field(ge=1, description="decoder layers kept (the rest are dropped)")
    score: Literal["block_influence", "last"] = Field(
        "block_influence", description="block_influence: drop the layers whose output is most similar (cosine) to "
        "their input on calibration tokens (ShortGPT); last: drop the layers just before the final one (no scoring)")


class Width(_Strict):
    mlp: int | None = Field(None, ge=1, description="MLP channels kept per layer, by activation importance")
    heads: int | None = Field(None, ge=1, description="attention heads kept per layer, by activation importance "
                              "(an equal number in each KV group)")


class Prune(_Strict):
    """The student is the teacher itself, pruned (Minitron / Sheared-LLaMA style); `prune: {}` keeps it whole."""
    depth: Depth | None = None
    width: Width | None = None
    calib_tokens: int = Field(4096, ge=8, description="training-split tokens the importance scores are measured on")


class Student(_Strict):
    arch: Literal["llama", "moe"] = "llama"
    hidden_size: int = Field(192, ge=8)
    layers: int = Field(4, ge=1, le=64)
    heads: int = Field(6, ge=1)
    kv_heads: int | None = Field(None, ge=1, description="= heads: MHA; fewer: GQA; 1: MQA (default: heads)")
    intermediate_size: int = Field(512, ge=4, description="MLP width (per expert for moe)")
    experts: int = Field(4, ge=2, description="moe only")
    experts_per_token: int = Field(2, ge=1, description="moe only")
    router_aux_loss_coef: float = Field(0.01, ge=0, description="moe only: load-balancing loss weight")
    init: Literal["random", "teacher"] = Field("random", description="teacher: embeddings (projected) + layers")
    teacher_layers: list[int] = Field(default_factory=list, description="init=teacher: teacher layer per layer")
    prune: Prune | None = Field(None, description="init=teacher: start from the teacher's own architecture and "
                                "weights, pruned (factory/prune.py); kv_heads then mean-pools its KV heads")

    @model_validator(mode="after")
    def _shapes(self):
        if self.prune is not None:  # the architecture comes from the teacher: shape fields would be ignored
            if self.init != "teacher":
                raise ValueError("prune needs init: teacher")
            clash = sorted(self.model_fields_set & {"arch", "hidden_size", "layers", "heads", "intermediate_size",
                                                    "experts", "experts_per_token", "teacher_layers"})
            if clash:
                raise ValueError(f"prune takes the architecture from the teacher; remove {', '.join(clash)}")
            return self
        kv = self.kv_heads or self.heads
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads {self.heads}")
        if kv > self.heads or self.heads % kv:
            raise ValueError(f"kv_heads {kv} must divide heads {self.heads}")
        if self.arch == "moe" and self.experts_per_token > self.experts:
            raise ValueError("experts_per_token exceeds experts")
        if self.teacher_layers and len(self.teacher_layers) != self.layers:
            raise ValueError(f"teacher_layers names {len(self.teacher_layers)} layers, the student has {self.layers}")
        return self


class Curriculum(_Strict):
    kind: Literal["uniform", "teacher_loss"] = "uniform"
    strength: float = Field(1.0, ge=0, le=10, description="how strongly easy/hard samples are up-weighted")


class Qat(_Strict):
    """The last `tokens` of the train budget run with fake quantization (quant.qat): same batches, schedule, loss."""
    scheme: str = Field(description="a quant.qat scheme; the export is float, loaded with `quantization: <scheme>`")
    tokens: int = Field(ge=1, description="the final N tokens of train.tokens (QAT starts where they begin)")

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, v):
        from ..quant.qat import SCHEMES
        if v not in SCHEMES:
            raise ValueError(f"unknown QAT scheme {v!r} (known: {', '.join(SCHEMES)})")
        return v


class Train(_Strict):
    tokens: int = Field(200_000, ge=1, description="token budget: input tokens seen by the student")
    batch_size: int = Field(8, ge=1)
    lr: float = Field(2e-3, gt=0, le=1)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="L = a·CE + (1-a)·t²·KL (teacher top-k + tail bucket, "
                         "factory/kd.py); 1 = plain CE, 0 = pure KD")
    temperature: float = Field(1.0, gt=0, le=100, description="t of the KL term; 1 = the exact forward KL")
    curriculum: Curriculum = Field(default_factory=Curriculum)
    teacher_in_loop: bool = Field(False, description="run the teacher every step instead of reading cached logits")
    checkpoint_every: int = Field(100, ge=1, description="steps between resumable checkpoints")
    eval_every: int = Field(0, ge=0, description="held-out eval every N steps (0: only at the end)")
    qat: Qat | None = Field(None, description="quantization-aware final phase (absent: none; then it is left "
                                              "out of the student's hash, so older artifacts keep theirs)")

    @model_validator(mode="after")
    def _qat_budget(self):
        if self.qat is not None and self.qat.tokens > self.tokens:
            raise ValueError(f"qat.tokens {self.qat.tokens} exceeds train.tokens {self.tokens} (QAT is its final part)")
        return self


class Export(_Strict):
    gguf: list[str] = Field(default_factory=list, description="also write GGUFs at these levels (f32, f16, q8_0, "
                            "q4_0, ...; llama students only; quantized levels need llama-cpp-python)")


class Recipe(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:+-]+$")
    description: str = ""
    seed: int = 0
    threads: int | None = Field(None, ge=1, le=1024)
    teacher: ModelSpec = Field(default_factory=lambda: ModelSpec(name="teacher", source="smollm2"))
    corpus: Corpus
    filter: Filter = Field(default_factory=Filter)
    synth: Synth = Field(default_factory=Synth)
    logits: Logits = Field(default_factory=Logits)
    student: Student = Field(default_factory=Student)
    train: Train = Field(default_factory=Train)
    export: Export = Field(default_factory=Export)


def _teacher_dict(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("teacher"), dict):
        data["teacher"] = {"name": "teacher", **data["teacher"]}
    return data


def load_recipe(path: str | Path, overrides: dict | None = None) -> tuple[Recipe, Path]:
    """Parse and check a recipe (schema, teacher, corpus paths). Returns it and the folder relative paths use."""
    file, base = str(path), Path(path).resolve().parent
    data = _teacher_dict(load_yaml(path))
    if overrides and isinstance(data, dict):
        data = deep_merge(data, overrides)
    r = parse_model(Recipe, data, file)
    check_recipe(r, file, base)
    return r, base


def check_recipe(r: Recipe, file: str, base: Path) -> None:
    from .. import models
    models.check_spec(r.teacher, file, "teacher", base)
    for i, s in enumerate(r.corpus.sources):
        if s.stdlib:
            continue
        p = source_path(s, base)
        if p is None or not p.exists():
            if s.optional:
                continue
            why = ("$SLMBENCH_DATA_DIR is not set or missing" if s.data is not None and data_dir() is None
                   else f"no such file or folder: {p}")
            raise UserError(f"corpus source not found ({why})", file=file, field=f"corpus.sources[{i}]")
    if r.export.gguf:
        from ..quant.gguf import LEVELS
        for i, lv in enumerate(r.export.gguf):
            if lv not in LEVELS:
                raise UserError(f"unknown GGUF level {lv!r} (known: {', '.join(LEVELS)})", file=file,
                                field=f"export.gguf[{i}]")
        if r.student.arch != "llama":
            raise UserError("GGUF export supports llama students only", file=file, field="export.gguf")
    if r.student.init == "teacher" and r.teacher.source == "random" and r.student.teacher_layers:
        n = (r.teacher.config or {}).get("num_hidden_layers", 2)
        if max(r.student.teacher_layers) >= n:
            raise UserError(f"teacher has {n} layers", file=file, field="student.teacher_layers")


def source_path(s: Source, base: Path) -> Path | None:
    if s.stdlib:
        return Path(sysconfig.get_paths()["stdlib"])
    if s.data is not None:
        d = data_dir()
        return (d / s.data) if d else None
    p = Path(s.path).expanduser()
    return p if p.is_absolute() else base / p
