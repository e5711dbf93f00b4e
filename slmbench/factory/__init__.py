"""The SLM factory: build small students from a recipe (corpus → filter → synthetic data → cached teacher
logits → distillation with a curriculum → HF export), every artifact cached under the hash of its full spec."""
from .pipeline import Built, build, build_recipe  # noqa: F401
from .recipe import Recipe, load_recipe  # noqa: F401
