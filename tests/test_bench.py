"""`slmbench bench MODEL`: one line builds a suite, validates it as a file is, runs it and prints the table;
`--print-suite` gives the YAML to keep. Models from tests/test_sources.py's fixtures (a real, offline Hub cache)."""
from __future__ import annotations


import pytest
import yaml
from conftest import run_cli
from test_sources import COMMIT, hf_home, tiny_dir, tiny_gguf  # noqa: F401  (fixtures)

from slmbench import bench, cli
from slmbench.errors import UserError

TINY_RUN = ["--prompt-tokens", "16", "--gen-tokens", "8", "--repetitions", "1", "--min-duration", "0"]


def test_suite_from_the_arguments(tiny_gguf, tiny_dir):
    s = bench.make_suite(str(tiny_gguf), prompt_tokens=16, gen_tokens=8)
    assert s["models"] == [{"name": "tiny-f32", "source": "gguf", "path": str(tiny_gguf)}]
    assert s["matrix"] == {"backend": ["llamacpp"]}  # a GGUF runs on llama.cpp unless told otherwise
    assert [sc["name"] for sc in s["scenarios"]] == ["latency", "memory"]
    assert s["scenarios"][0]["params"] == {"prompt_tokens": 16, "gen_tokens": 8} and "settings" not in s
    s = bench.make_suite("HuggingFaceTB/SmolLM2-360M-Instruct", backends=["torch,llamacpp"], quants=["none"],
                         threads=["1,2"], tasks=["slmbench_tiny"], limit=5, revision="main", repetitions=1,
                         min_duration_s=0)
    assert s["name"] == "bench-SmolLM2-360M-Instruct" and s["models"][0] == {
        "name": "SmolLM2-360M-Instruct", "source": "hub", "path": "HuggingFaceTB/SmolLM2-360M-Instruct",
        "revision": "main"}
    assert s["matrix"] == {"backend": ["torch", "llamacpp"], "quantization": ["none"], "threads": [1, 2]}
    assert s["scenarios"][-1] == {"name": "accuracy", "params": {"tasks": ["slmbench_tiny"], "limit": 5}}
    assert s["settings"] == {"repetitions": 1, "min_duration_s": 0}
    assert bench.make_suite("smollm2")["models"] == [{"name": "smollm2", "source": "smollm2"}]
    assert bench.make_suite(str(tiny_dir))["models"][0]["source"] == "hf"
    with pytest.raises(UserError, match="expected a whole number"):
        bench.make_suite("smollm2", threads=["two"])


def test_print_suite_is_a_suite_file(tiny_gguf, tmp_path):
    rc, out, err = run_cli("bench", tiny_gguf, "--quant", "none,q8_0", *TINY_RUN, "--print-suite")
    assert rc == 0, err
    saved = tmp_path / "bench.yaml"
    saved.write_text(out)
    assert yaml.safe_load(out)["matrix"] == {"backend": ["llamacpp"], "quantization": ["none", "q8_0"]}
    rc, out, err = run_cli("validate", saved)
    assert rc == 0 and "4 jobs" in out, err


@pytest.mark.parametrize("model, why", [
    ("{tmp}", "bench: models[0].path: no Hugging Face model directory (config.json) at {tmp}"),
    ("{tmp}/absent.gguf", "MODEL: '{tmp}/absent.gguf' is not a file, a directory, a Hugging Face Hub id"),
    ("{tmp}/cut.gguf", "bench: models[0].path: {tmp}/cut.gguf: truncated: its tensors need"),
    ("org/absent", "bench: models[0].path: org/absent is not in the Hugging Face cache"),
])
def test_bad_models_are_one_line_and_exit_2(model, why, hf_home, tiny_gguf, tmp_path, capsys):
    (tmp_path / "cut.gguf").write_bytes(tiny_gguf.read_bytes()[:-100])
    rc = cli.main(["bench", model.format(tmp=tmp_path), *TINY_RUN, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: " + why.format(tmp=tmp_path)) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before any work


def test_bench_runs_a_hub_model_offline_and_keeps_its_suite(hf_home, tmp_path):
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    rc, out, err = run_cli("bench", "org/tiny", "--scenarios", "latency", "--threads", "1", *TINY_RUN,
                           "--out", tmp_path, env=env)
    assert rc == 0, err[-3000:]
    assert "decode tok/s" in err and "1 jobs, 0 not ok" in err  # the run's table, as `slmbench run` prints it
    kept = list((tmp_path / "bench").glob("bench-tiny-*.yaml"))
    assert len(kept) == 1 and f"slmbench run {kept[0]}" in err
    from slmbench.store import Store
    st = Store(tmp_path)
    rid = st.latest_run()
    assert st.run_meta(rid)["suite_path"] == str(kept[0])
    rows = st.rows(rid)
    assert set(rows["status"]) == {"ok"} and "decode_tok_s" in set(rows["metric"])
    info = next(iter(st.job_info(rid).values()))["model"]
    assert info["origin"] == f"Hugging Face Hub org/tiny@{COMMIT}"
