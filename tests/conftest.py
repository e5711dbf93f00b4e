"""Shared test helpers (small and generic): a tiny-suite writer, the real CLI in a subprocess, the cache env.

    from conftest import run_cli, tiny_suite
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CACHE_DIR = os.environ.get("SLMBENCH_CACHE_DIR") or str(Path(os.environ.get("TMPDIR", "/tmp")) / "slmbench-test-cache")

TINY_MODEL = {"name": "tiny", "source": "random",
              "config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "num_key_value_heads": 1}}
FAST = {"warmup": 0, "repetitions": 1, "min_duration_s": 0, "timeout_s": 120}


def tiny_suite(tmp_path: Path, filename: str = "suite.yaml", **overrides) -> Path:
    """Write a valid one-job suite (tiny random model, local CPU, short latency) with top-level overrides."""
    suite = {"name": "tiny", "settings": dict(FAST), "models": [TINY_MODEL], "devices": ["local-cpu"],
             "scenarios": [{"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}}]}
    suite.update(overrides)
    p = Path(tmp_path) / filename
    p.write_text(yaml.safe_dump(suite, sort_keys=False))
    return p


def cli_env(**extra) -> dict:
    return {**os.environ, "SLMBENCH_CACHE_DIR": CACHE_DIR, "PYTHONWARNINGS": "ignore", **extra}


def run_cli(*args, env: dict | None = None, timeout: float = 300) -> tuple[int, str, str]:
    """`python -m slmbench.cli ARGS` in a subprocess (the real entry point); returns (rc, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "slmbench.cli", *map(str, args)], capture_output=True, text=True,
                       cwd=REPO, env=cli_env(**(env or {})), timeout=timeout)
    return r.returncode, r.stdout, r.stderr


@pytest.fixture
def slm_env(monkeypatch):
    """In-process tests: the shared artifact cache (bandwidth figure, byte tokenizer)."""
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", CACHE_DIR)
    return CACHE_DIR
