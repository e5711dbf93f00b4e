"""Source `recipe`: a student from the SLM factory, built on first use (cached under the hash of its full spec)."""
from __future__ import annotations

from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import UserError


@register_source
class Recipe(Source):
    name = "recipe"
    fields = frozenset({"path", "overrides"})

    @classmethod
    def check(cls, spec, file, field, base):
        if not spec.path:
            raise UserError("source 'recipe' needs a path to a build recipe (suites/recipes/*.yaml)", file=file,
                            field=f"{field}.path")
        from .recipe import load_recipe
        p = Path(spec.path)
        load_recipe(p if p.is_absolute() else base / p, spec.overrides or None)  # errors name the recipe's field

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        from .pipeline import build
        b = build(spec.path, spec.overrides or None)
        over = f" + {spec.overrides}" if spec.overrides else ""
        return ModelFiles(hf_dir=b.model_dir, tokenizer_dir=b.model_dir,
                          origin=f"recipe {spec.path}{over} → {b.path.name}", build_dir=b.path)
