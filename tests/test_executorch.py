"""ExecuTorch backend (backends/executorch.py): knobs and refusals always; on a tiny Llama exported by ExecuTorch's
own Llama export, the exported program's scores agree with torch fp32, generation, pasts, KV bytes, lm-eval and
the scenarios through the CLI.

The export tests skip unless the runtime is installed (pip install 'slmbench[executorch]') AND either
SLMBENCH_EXECUTORCH_TESTS=1 is set or the tiny programs are already in the test cache: one export of the tiny
model takes ~50 s of CPU (mostly executorch/torchao import and lowering passes, not the model), and the tests need
three (fp32 last/all-position logits, 8da4w). They are cached in the test cache dir (conftest.CACHE_DIR), so a
second run costs only the tests themselves."""
from __future__ import annotations

import importlib.util
import os
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml
from conftest import CACHE_DIR, FAST, run_cli

from slmbench.errors import Unsupported
from slmbench.plan import ModelSpec, Variant

HAVE_ET = importlib.util.find_spec("executorch") is not None


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    return ad


def _engine(spec, variant, adapter):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(spec), variant, adapter)


def _tiny_dir() -> Path:
    """A saved tiny Llama (hidden 64: 8da4w groups of 32 fit) with the byte tokenizer, at a stable path in the
    test cache, written once: the export cache key includes its files' mtimes."""
    d = Path(CACHE_DIR) / "executorch-test" / "tiny-llama"
    if not (d / "tokenizer_config.json").is_file():
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from slmbench.models.random_init import byte_tokenizer_dir, make_config
        torch.manual_seed(0)
        m = AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32)
        tmp = d.with_name(f"tiny-llama.tmp{os.getpid()}")
        m.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(byte_tokenizer_dir())).save_pretrained(tmp)
        tmp.rename(d)
    return d


def _exported(level: str, logits: str) -> bool:
    from slmbench.backends.executorch_export import _source_key
    from slmbench.settings import cache_dir
    d = _tiny_dir()
    return (cache_dir() / "executorch" / f"{d.name}-{_source_key(d, level, logits)}" / "facts.json").is_file()


@pytest.fixture
def tiny(monkeypatch):
    """(spec of the tiny model, cache dir) when exports may run here; skips otherwise (see the module note)."""
    if not HAVE_ET:
        pytest.skip("executorch not installed (pip install 'slmbench[executorch]')")
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", CACHE_DIR)
    if not os.environ.get("SLMBENCH_EXECUTORCH_TESTS") and not all(
            _exported(lv, lg) for lv, lg in (("none", "last"), ("none", "all"), ("8da4w", "last"))):
        pytest.skip("ExecuTorch exports take minutes of CPU: set SLMBENCH_EXECUTORCH_TESTS=1 (cached afterwards)")
    return ModelSpec(name="tiny", source="hf", path=str(_tiny_dir()))


# --- always: knobs and what the backend refuses --------------------------------------------------------------

def test_knobs_and_refusals(adapter, tmp_path, monkeypatch):
    assert not Variant(backend="executorch").problem
    assert not Variant(backend="executorch", quantization="8da4w").problem
    assert Variant(backend="executorch", quantization="q4_0").problem  # a llama.cpp level
    assert Variant(backend="executorch", decode="generate").problem  # a torch knob
    from slmbench.backends.executorch_export import check_model
    (tmp_path / "config.json").write_text('{"model_type": "gemma3_text"}')
    with pytest.raises(Unsupported, match="Llama-architecture.*gemma3_text"):
        check_model(tmp_path)
    # a random-init model has no directory to export
    with pytest.raises(Unsupported, match="executorch|HF directory"):
        _engine(ModelSpec(name="r", source="random", config={"hidden_size": 32}), Variant(backend="executorch"),
                adapter)
    # without the runtime: unsupported with what to install, never an ImportError
    monkeypatch.setitem(sys.modules, "executorch.runtime", None)
    with pytest.raises(Unsupported, match=r"slmbench\[executorch\]"):
        _engine(ModelSpec(name="r", source="random", config={"hidden_size": 32}), Variant(backend="executorch"),
                adapter)


# --- on the exported program ---------------------------------------------------------------------------------

def test_exported_program_matches_torch_and_runs_the_engine_contract(tiny, adapter):
    import torch

    from slmbench.contracts import TokenClock
    eng = _engine(tiny, Variant(backend="executorch"), adapter)
    ref = _engine(tiny, Variant(), adapter)
    ids = ref.prompt_ids(24)
    # same weights, same ids: the all-positions program's log-likelihoods and logits agree with torch fp32
    for ctx_n in (5, 16):
        assert eng.loglikelihood(ids[:ctx_n], ids[ctx_n:])[0] == pytest.approx(
            ref.loglikelihood(ids[:ctx_n], ids[ctx_n:])[0], abs=2e-3)
    x = torch.tensor([ids])
    assert torch.allclose(eng.model(x).logits, ref.model(x).logits, atol=1e-3)
    # more tokens than one call takes (export bounds the dynamic dim at max_seq_len - 1): scored in chunks
    long = ref.prompt_ids(300)
    assert len(long) > eng.facts["max_seq"]
    assert eng.loglikelihood(long[:10], long[10:])[0] == pytest.approx(
        ref.loglikelihood(long[:10], long[10:])[0], abs=2e-2)
    # greedy generation (the last-position program) agrees with transformers; one clock tick per token
    clock = TokenClock()
    out = eng.generate(ids, 6, clock)
    assert out[:3] == ref.generate(ids, 6).sequences[0, len(ids):].tolist()[:3] and len(clock.times) == 6
    # pasts: a depth-8 context then the rest equals one go; a stale past is refused
    past = eng.prefill(ids[8:], eng.prefill(ids[:8]))
    assert len(past.tokens) == 24
    assert eng.generate(ids, 3, None, eng.prefill(ids[:-1])) == out[:3]
    eng.prefill(ids[:4])  # the cache now holds 4 tokens: the 24-token past is gone
    with pytest.raises(RuntimeError, match="stale past"):
        eng.generate(ids, 1, None, past)
    # KV bytes: the program's k/v buffers per position vs 2·layers·kv_heads·head_dim·4 (fp32 cache)
    kv, n = eng.kv_bytes_measured(eng.prefill(ids))
    assert n == 24 and kv / n == eng.kv_bytes_per_token_formula()
    d = eng.describe()
    assert d["file_bytes"] == eng.pte.stat().st_size and d["quantization"] == "none" and d["threads"] == 1
    assert d["kv_cache_allocated_bytes"] == eng.kv_bytes_per_token_formula() * d["max_context"]
    # lm-eval's request flow on the engine's LM
    from lm_eval.api.instance import Instance
    lm = eng.lm_eval_model()
    got = lm.loglikelihood([Instance("loglikelihood", {}, ("The cat sat on", " the mat"), 0)])
    ctx = ref.tokenizer("The cat sat on", add_special_tokens=False)["input_ids"]
    cont = ref.tokenizer("The cat sat on the mat", add_special_tokens=False)["input_ids"][len(ctx):]
    assert got[0][0] == pytest.approx(ref.loglikelihood(ctx, cont)[0], abs=2e-3)


def test_8da4w_is_smaller_and_stays_close(tiny, adapter):
    f32 = _engine(tiny, Variant(backend="executorch"), adapter)
    q = _engine(tiny, Variant(backend="executorch", quantization="8da4w"), adapter)
    assert q.file_bytes() < 0.5 * f32.file_bytes() and q.describe()["quantization"] == "8da4w"
    ids = f32.prompt_ids(16)
    assert len(q.generate(ids, 4)) == 4
    assert q.prefill(ids).tokens == tuple(ids)


def test_scenarios_through_the_cli(tiny, tmp_path):
    """latency, memory and perplexity jobs on the executorch backend through `slmbench run` (the job process)."""
    data = os.environ.get("SLMBENCH_DATA_DIR")
    if not data or not Path(data, "corpus", "austen.txt").is_file():
        pytest.skip("SLMBENCH_DATA_DIR with corpus/austen.txt needed (the perplexity text)")
    suite = tmp_path / "et.yaml"
    suite.write_text(yaml.safe_dump({
        "name": "et", "settings": FAST, "devices": ["local-cpu"],
        "models": [{"name": "tiny", "source": "hf", "path": tiny.path}],
        "matrix": {"backend": ["executorch"]},
        "scenarios": [{"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}},
                      {"name": "memory", "params": {"prompt_tokens": 8, "gen_tokens": 4}},
                      {"name": "perplexity", "params": {"max_bytes": 2000, "context": 64}}]}))
    rc, out, err = run_cli("run", suite, "--out", tmp_path / "out", "--run-id", "e1")
    assert rc == 0, err
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    st = dict(db.execute("SELECT label, status FROM jobs WHERE run_id='e1'").fetchall())
    assert len(st) == 3 and set(st.values()) == {"ok"}, st
