"""The malformed-input corpus (tests/bad_inputs/index.yaml) through the real CLI: every case exits 2 with one line
`error: FILE: FIELD: why` on stderr and no traceback. Cases run concurrently (one subprocess each) to stay fast."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli_env

HERE = Path(__file__).resolve().parent / "bad_inputs"
CASES = yaml.safe_load((HERE / "index.yaml").read_text())
REL = HERE.relative_to(REPO)


def _case_id(c: dict) -> str:
    return Path(c["file"]).stem + ("-" + c["args"][0] if "args" in c else "")


def _run(case: dict, out: str) -> tuple[list[str], subprocess.CompletedProcess]:
    file = str(REL / case["file"])
    sub = lambda a: a.replace("{file}", file).replace("{out}", out)
    args = [sub(a) for a in case["args"]] if "args" in case else ["validate", file]
    args = [str(REL / a) if a == "corrupt_store" else a for a in args]
    env = {k: sub(v) for k, v in case.get("env", {}).items()}
    r = subprocess.run([sys.executable, "-m", "slmbench.cli", *args], capture_output=True, text=True, cwd=REPO,
                       env=cli_env(SLMBENCH_DEVICES_DIR=str(HERE / "devices"), **env), timeout=120)
    return args, r


@pytest.fixture(scope="module")
def results():
    with tempfile.TemporaryDirectory(prefix="slmbench-bad-") as tmp:
        outs = [os.path.join(tmp, f"out{i}") for i in range(len(CASES))]
        with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
            yield list(ex.map(_run, CASES, outs)), outs


def test_corpus_is_large_enough():
    assert len(CASES) >= 30
    assert len({c["file"] for c in CASES}) >= 30  # distinct malformed files, not one file many ways


@pytest.mark.parametrize("i", range(len(CASES)), ids=[_case_id(c) for c in CASES])
def test_bad_input_exits_2_with_one_clear_line(results, i):
    case = CASES[i]
    (args, r), out = results[0][i], results[1][i]
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    names = case.get("names", case["file"]).replace("{out}", out)
    if names:
        assert names in lines[0], (names, lines[0])
    assert case["field"] in lines[0], lines[0]
    assert case["expect"] in lines[0], lines[0]
    print(f"{' '.join(args[:1])} {case['file']}: {lines[0]}")


def test_python_tag_in_yaml_is_not_executed(results):
    assert not Path("/tmp/slmbench-pwned").exists()  # yaml_python_tag.yaml would `touch` it if loaded unsafely


def test_gguf_of_an_unsupported_architecture_is_a_recorded_unsupported_job(tmp_path):
    """A well-formed GGUF whose architecture llama.cpp does not know: the run goes on, its job is recorded
    `unsupported` with the reason, and the other model's rows are all there."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (slmbench[llamacpp])")
    from slmbench.store import Store
    r = subprocess.run([sys.executable, "-m", "slmbench.cli", "run", str(REL / "suites/gguf_unsupported_arch.yaml"),
                        "--out", str(tmp_path)], capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
    st = Store(tmp_path)
    rows = st.rows(st.latest_run())
    status = dict(zip(rows["model"], rows["status"]))
    assert status == {"foo": "unsupported", "tiny": "ok"}
    why = rows[rows["model"] == "foo"]["error"].iloc[0]
    assert "foo_arch.gguf" in why and "unknown model architecture: 'foo'" in why
    assert (rows[rows["model"] == "tiny"]["metric"] == "decode_tok_s").any()
