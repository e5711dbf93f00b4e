"""ONNX Runtime GenAI backend on a tiny random llama built by onnxruntime-genai's own model builder (real builder,
real runtime), checked against transformers on the same weights; and the runtime shoot-out report section.

Engine tests skip when onnxruntime-genai is not installed (pip install 'slmbench[onnx]'). Each build runs the
builder in a child process (~10-25 s: it imports torch); artifacts go to a per-module cache dir."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from slmbench.errors import Unsupported
from slmbench.plan import ModelSpec, Variant


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    return ad


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A saved tiny llama (hidden 64: int4 blocks of 32 fit) with the byte tokenizer, and a cache dir for builds."""
    pytest.importorskip("onnxruntime_genai", reason="onnxruntime-genai not installed (slmbench[onnx])")
    pytest.importorskip("onnx_ir", reason="onnx-ir not installed (slmbench[onnx]: the model builder needs it)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-hf")
    AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32).save_pretrained(d)
    AutoTokenizer.from_pretrained(str(byte_tokenizer_dir())).save_pretrained(d)
    return ModelSpec(name="tiny", source="hf", path=str(d)), tmp_path_factory.mktemp("cache")


def _engine(spec, variant, adapter):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(spec), variant, adapter)


@pytest.fixture(scope="module")
def pair(tiny, adapter):
    spec, cache = tiny
    old = os.environ.get("SLMBENCH_CACHE_DIR")
    os.environ["SLMBENCH_CACHE_DIR"] = str(cache)
    try:
        yield _engine(spec, Variant(backend="onnx_genai"), adapter), _engine(spec, Variant(), adapter), spec
    finally:
        os.environ.pop("SLMBENCH_CACHE_DIR") if old is None else os.environ.__setitem__("SLMBENCH_CACHE_DIR", old)


def test_fp32_matches_torch_and_honours_the_engine_contract(pair):
    eng, ref, _ = pair
    ids = ref.prompt_ids(24)
    for n in (5, 16):  # same weights, same ids: log-likelihoods agree (fp32 graph vs fp32 torch)
        assert eng.loglikelihood(ids[:n], ids[n:])[0] == pytest.approx(ref.loglikelihood(ids[:n], ids[n:])[0],
                                                                       abs=2e-3)
    from slmbench.contracts import TokenClock
    clock = TokenClock()
    out = eng.generate(ids, 6, clock)  # genai's own greedy loop: the same tokens as transformers
    assert out == ref.generate(ids, 6).sequences[0, len(ids):].tolist() and len(clock.times) == 6
    past = eng.prefill(ids[8:], eng.prefill(ids[:8]))  # a depth-8 context, then the prompt on top
    assert len(past.tokens) == 24
    assert eng.generate(ids, 3, None, eng.prefill(ids[:-1])) == out[:3]
    with pytest.raises(RuntimeError, match="stale past"):
        eng.prefill([1, 2], eng.prefill(ids[:4]).__class__(tuple(ids[:3]) + (999,)))
    import torch
    x = torch.tensor([ids])  # the perplexity scenario's view
    assert torch.allclose(eng.model(x).logits, ref.model(x).logits, atol=1e-3)
    kv, n = eng.kv_bytes_measured(eng.prefill(ids))
    assert n == 24 and kv / n == eng.kv_bytes_per_token_formula()  # fp32 KV, from the present tensors
    d = eng.describe()
    assert d["params"] == ref.param_count() and d["precision"] == "fp32"
    assert 0 < d["weights_per_token_bytes"] < d["weight_bytes"] <= d["file_bytes"]
    assert (Path(d["onnx_dir"]) / "genai_config.json").is_file()


def test_lm_eval_requests_score_like_torch(pair):
    from lm_eval.api.instance import Instance
    eng, ref, _ = pair
    lm = eng.lm_eval_model()
    conts = [" the mat", " a dog"]
    got = lm.loglikelihood([Instance("loglikelihood", {}, ("The cat sat on", c), i) for i, c in enumerate(conts)])
    tok = ref.tokenizer
    for (lp, _), c in zip(got, conts):
        ctx = tok("The cat sat on", add_special_tokens=False)["input_ids"]
        cont = tok("The cat sat on" + c, add_special_tokens=False)["input_ids"][len(ctx):]
        assert lp == pytest.approx(ref.loglikelihood(ctx, cont)[0], abs=2e-3)


def test_int4_is_smaller_and_close_and_unknown_levels_are_unsupported(pair, tiny, adapter, monkeypatch):
    eng, _, spec = pair
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tiny[1]))
    q = _engine(spec, Variant(backend="onnx_genai", quantization="int4"), adapter)
    assert q.describe()["matmul_nbits"].get("bits") == 4
    assert q.file_bytes() < 0.6 * eng.file_bytes() and q.weight_bytes() < eng.weight_bytes()
    ids = eng.prompt_ids(16)
    lp, ref = q.loglikelihood(ids[:8], ids[8:])[0], eng.loglikelihood(ids[:8], ids[8:])[0]
    assert math.isfinite(lp) and abs(lp - ref) < 1.0  # quantized, not broken
    with pytest.raises(Unsupported, match="not a onnx_genai value"):
        _engine(spec, Variant(backend="onnx_genai", quantization="q4_0"), adapter)


# --- the shoot-out report section (no runtime needed) ---------------------------------------------------------

def _row(model, variant, scenario, metric, value, status="ok", error="", spread=None, labels=None, n=None):
    return {"model": model, "variant": json.dumps(variant), "device": "local-cpu", "scenario": scenario,
            "metric": metric, "value": value, "spread": spread, "source": "measured",
            "labels": json.dumps(labels or {}), "status": status, "error": error, "n": n}


def test_runtimes_section_flags_an_fp32_disagreement_and_lists_unsupported_rows():
    import pandas as pd

    from slmbench.report import runtimes
    torch32, onnx32 = {"backend": "torch", "quantization": "none"}, {"backend": "onnx_genai", "quantization": "none"}
    onnx4, et = {"backend": "onnx_genai", "quantization": "int4"}, {"backend": "executorch", "quantization": "none"}
    df = pd.DataFrame([
        _row("torch:fp32", torch32, "perplexity", "bits_per_byte", 1.00),
        _row("torch:fp32", torch32, "latency", "decode_tok_s", 20.0),
        _row("torch:fp32", torch32, "memory", "file_mb", 540.0),
        _row("onnx:fp32", onnx32, "perplexity", "bits_per_byte", 1.03),
        _row("onnx:fp32", onnx32, "memory", "file_mb", 540.0),
        _row("onnx:int4", onnx4, "perplexity", "bits_per_byte", 1.10),
        _row("onnx:int4", onnx4, "memory", "file_mb", 86.0),
        _row("onnx:int4", onnx4, "accuracy", "acc_norm", 0.5, spread=0.08, labels={"task": "arc_easy"}, n=40),
        _row("executorch:fp32", et, "latency", None, None, status="unsupported", error="executorch not installed"),
    ])
    s = runtimes.section(df)
    md = s.markdown()
    assert "Runtime shoot-out" in md and "ONNX Runtime GenAI" in md
    by = {(r[0], r[1]): r for r in s.rows}
    assert by[("ONNX Runtime GenAI", "fp32")][11] == "+3.00%"  # Δ bits/B vs torch fp32
    assert "more than 1%" in s.note and "ONNX Runtime GenAI +3.00%" in s.note
    assert by[("ExecuTorch", "fp32")][-1] == "unsupported" and "executorch not installed" in s.note
    assert s.plot() is not None  # two series with bits/byte and artifact MB
    assert runtimes.section(df[df["model"].str.startswith("onnx")]) is None  # one runtime: no shoot-out


def test_runtimes_suite_validates():
    from slmbench.contracts import BACKENDS
    from slmbench.plan import expand, load_suite
    if not os.environ.get("SLMBENCH_DATA_DIR") or not Path(os.environ["SLMBENCH_DATA_DIR"]).is_dir():
        pytest.skip("SLMBENCH_DATA_DIR not set (the perplexity text and the accuracy task need it)")
    if "executorch" not in BACKENDS.names():
        pytest.skip("the executorch backend is not registered in this tree (slmbench/backends/executorch.py)")
    path = Path(__file__).resolve().parents[1] / "suites" / "runtimes.yaml"
    jobs = expand(load_suite(path), path.parent)
    have = {(j.variant.backend, j.variant.quantization) for j in jobs}
    assert {("onnx_genai", q) for q in ("none", "int8", "int4")} <= have
    assert {("torch", "none"), ("llamacpp", "f32"), ("executorch", "none")} <= have
