"""The environment manifest stored with every run: enough to tell whether two rows are comparable."""
from __future__ import annotations

import importlib.metadata as md
import platform
import subprocess
import sys
from pathlib import Path

from . import __version__
from .adapters import host_info
from .settings import REPO_DIR

LIBS = ["torch", "transformers", "lm_eval", "numpy", "pandas", "gguf", "accelerate", "torchao", "psutil", "pyRAPL",
        "llama_cpp_python", "nvidia-ml-py", "ray"]


def git_commit(path: Path = REPO_DIR) -> dict:
    def git(*a):
        r = subprocess.run(["git", "-C", str(path), *a], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() if r.returncode == 0 else None
    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else None
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def versions() -> dict:
    out = {"python": platform.python_version(), "slmbench": __version__}
    for lib in LIBS:
        try:
            out[lib] = md.version(lib)
        except md.PackageNotFoundError:
            pass
    return out


def collect(seed: int, threads: int | None = None) -> dict:
    import os
    return {"host": host_info(), "versions": versions(), "git": git_commit(), "seed": seed,
            "threads": threads, "argv": sys.argv,
            "env": {k: v for k, v in os.environ.items() if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                                  "SLMBENCH_CACHE_DIR", "SLMBENCH_DATA_DIR")}}
