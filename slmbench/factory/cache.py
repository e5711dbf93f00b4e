"""The artifact cache: every artifact lives in `<cache>/build/<kind>-<hash of its full spec>/` (the folder is named
after the `slmbench build` command, not this package: renaming it would orphan every cached artifact). A directory
exists only when complete (built in a temporary sibling, then os.replace), so an interrupted build never leaves a
half-written artifact; resumable work-in-progress (logit shards, checkpoints) lives in `<artifact>.partial/`."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..settings import cache_dir


def spec_hash(spec) -> str:
    blob = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def root() -> Path:
    p = cache_dir() / "build"
    p.mkdir(parents=True, exist_ok=True)
    return p


def artifact_path(kind: str, spec) -> Path:
    return root() / f"{kind}-{spec_hash(spec)}"


def partial_dir(final: Path) -> Path:
    p = final.with_name(final.name + ".partial")
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextmanager
def building(final: Path, spec):
    """Yield a temp dir to fill; on success it becomes `final` (with spec.json), on any error it is removed."""
    tmp = Path(tempfile.mkdtemp(dir=root(), prefix=f".tmp-{final.name}-"))
    try:
        yield tmp
        (tmp / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
        if final.exists():  # someone else finished first: theirs is as good as ours
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
        part = final.with_name(final.name + ".partial")
        if part.exists():
            shutil.rmtree(part, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write(path: Path, write) -> None:
    """write(tmp_path) then rename: a reader sees the old file or the whole new one, never a prefix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
