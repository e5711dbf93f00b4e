"""Quantization: torch/torchao PTQ schemes, QAT phase, GGUF export, llama.cpp backend — on a tiny random model.

llama.cpp tests skip when llama-cpp-python is not installed (pip install 'slmbench[llamacpp]')."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from slmbench.errors import Unsupported
from slmbench.plan import ModelSpec, Variant

SCHEMES = ["none", "int8_dynamic", "int8_weight_only", "int8_dynamic_ao", "intx8_weight_only", "intx4_weight_only",
           "int8da_int4w"]


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    return ad


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny llama (hidden 64 → GGUF Q4_0/Q8_0 blocks of 32 fit) with the byte tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32)
    d = tmp_path_factory.mktemp("tiny-hf")
    m.save_pretrained(d)
    AutoTokenizer.from_pretrained(str(byte_tokenizer_dir())).save_pretrained(d)
    return d


def _engine(files_spec, variant, adapter):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(files_spec), variant, adapter)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_torch_scheme_runs_and_reports_its_bytes(scheme, tiny_dir, adapter):
    spec = ModelSpec(name="tiny", source="hf", path=str(tiny_dir))
    eng = _engine(spec, Variant(quantization=scheme), adapter)
    ref = _engine(spec, Variant(), adapter)
    ids = eng.prompt_ids(12)
    from slmbench.contracts import TokenClock
    clock = TokenClock()
    eng.generate(ids, 4, clock)
    assert len(clock.times) == 4
    assert eng.param_count() == ref.param_count()  # quantizing a tied head must not count it twice
    lp, _ = eng.loglikelihood(ids[:6], ids[6:])
    lp_ref, _ = ref.loglikelihood(ids[:6], ids[6:])
    assert math.isfinite(lp) and abs(lp - lp_ref) < 0.5  # quantized, not broken
    if scheme in ("int8_dynamic", "int8_weight_only", "int8_dynamic_ao", "intx8_weight_only"):
        # int8 Linear weights: the bytes a decode step reads shrink by well over half (the tied embedding's
        # float copy is looked up, not read whole)
        assert eng.weight_bytes_per_token() < 0.45 * ref.weight_bytes_per_token()
    assert eng.describe()["file_bytes"] > 0


@pytest.mark.parametrize("scheme,why", [("int4_weight_only", "no CPU kernel"),
                                        ("q4_0", "not a torch value .*; backends? .*llamacpp.* accepts? it"),
                                        ("int8da_int4w_packed", "no kernel here"), ("nonsense", "not a torch value")])
def test_unsupported_is_an_answer_not_a_crash(scheme, why, tiny_dir, adapter):
    spec = ModelSpec(name="tiny", source="hf", path=str(tiny_dir))
    with pytest.raises(Unsupported, match=why):
        _engine(spec, Variant(quantization=scheme), adapter)


def test_unsupported_job_is_recorded_as_unsupported(tiny_dir):
    """Through the real worker: the job's status says `unsupported` and why."""
    from slmbench.executors.worker import run_job
    from slmbench.plan import Job, RunSettings
    job = Job("t", ModelSpec(name="tiny", source="hf", path=str(tiny_dir)),
              Variant(quantization="int4_weight_only"), "local-cpu", 1, "memory", {"prompt_tokens": 8,
                                                                                    "gen_tokens": 2},
              RunSettings(), 0)
    res = run_job(job)
    assert res.status == "unsupported" and "Int4WeightOnlyConfig" in res.error


def test_qat_phase_trains_strips_and_quantizes_like_ptq():
    import copy

    import torch
    from transformers import AutoModelForCausalLM

    from slmbench.factory.recipe import Train
    from slmbench.factory.train import fit
    from slmbench.models.random_init import make_config
    from slmbench.quant import ptq, qat
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32)
    before = m.model.layers[0].mlp.up_proj.weight.detach().clone()
    x = torch.randint(0, 256, (4, 32))
    st = fit(m, iter(lambda: x, None), 4, Train(lr=1e-2, warmup_steps=1), scheme="int8da_int4w")  # QAT from step 0
    losses = [r["loss"] for r in st["log"]]
    assert len(losses) == 4 and losses[-1] < losses[0] and st["qat"]["start_step"] == 0
    lin = m.model.layers[0].mlp.up_proj
    assert type(lin) is torch.nn.Linear and not torch.equal(lin.weight, before)  # stripped, and trained
    assert m.lm_head.weight is m.model.embed_tokens.weight  # still tied: exports like any float model
    # torchao's convert step == the PTQ the torch backend applies to the exported weights
    a, b = copy.deepcopy(m), copy.deepcopy(m)
    qat.prepare(a, "int8da_int4w")
    qat.convert(a, "int8da_int4w")
    ptq.apply(b, "int8da_int4w")
    with torch.inference_mode():
        assert torch.allclose(a(x).logits, b(x).logits)


def test_gguf_export_layout(tiny_dir, tmp_path):
    """Names, shapes and GGML's rotary row order: un-permuting attn_q gives back the HF q_proj."""
    import numpy as np
    from gguf import GGUFReader
    from safetensors.numpy import load_file

    from slmbench.quant import gguf
    out = gguf.export(tiny_dir, tmp_path / "t.gguf")
    r = GGUFReader(str(out))
    t = {x.name: x for x in r.tensors}
    assert "output.weight" not in t  # tied: llama.cpp reuses token_embd
    assert len(t) == 2 + 2 * 9
    hf = load_file(str(tiny_dir / "model.safetensors"))
    q = np.asarray(t["blk.0.attn_q.weight"].data).reshape(64, 64)
    n_head = 4
    unperm = q.reshape(n_head, q.shape[0] // n_head // 2, 2, 64).swapaxes(1, 2).reshape(64, 64)
    assert np.array_equal(unperm, hf["model.layers.0.self_attn.q_proj.weight"])
    assert r.fields["tokenizer.ggml.tokens"].data and len(r.fields["tokenizer.ggml.tokens"].data) == 320


# --- llama.cpp ------------------------------------------------------------------------------------------------

def _llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (slmbench[llamacpp])")


def test_llamacpp_engine_matches_torch_and_runs_the_scenario_contract(tiny_dir, adapter, tmp_path, monkeypatch):
    _llama_cpp()
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    spec = ModelSpec(name="tiny", source="hf", path=str(tiny_dir))
    eng = _engine(spec, Variant(backend="llamacpp", quantization="f32"), adapter)
    ref = _engine(spec, Variant(), adapter)
    ids = ref.prompt_ids(24)
    # same weights, same ids: log-likelihoods agree (F32 GGUF vs fp32 torch)
    for ctx_n in (5, 16):
        a, _ = eng.loglikelihood(ids[:ctx_n], ids[ctx_n:])
        b, _ = ref.loglikelihood(ids[:ctx_n], ids[ctx_n:])
        assert a == pytest.approx(b, abs=2e-3)
    # greedy generation agrees with transformers on the first tokens
    from slmbench.contracts import TokenClock
    clock = TokenClock()
    out = eng.generate(ids, 6, clock)
    hf = ref.generate(ids, 6).sequences[0, len(ids):].tolist()
    assert out[:3] == hf[:3] and len(clock.times) == 6
    # pasts: a depth-8 context, then the prompt on top, equals the prompt in one go
    past = eng.prefill(ids[:8])
    past = eng.prefill(ids[8:], past)
    assert len(past.tokens) == 24
    assert eng.generate(ids, 3, None, eng.prefill(ids[:-1])) == out[:3]
    # perplexity scenario's view: model(x).logits like transformers
    import torch
    x = torch.tensor([ids])
    assert torch.allclose(eng.model(x).logits, ref.model(x).logits, atol=1e-3)
    # KV bytes: measured from llama.cpp's sequence state vs 2·layers·kv_heads·head_dim·2 (F16 cache)
    kv, n = eng.kv_bytes_measured(eng.prefill(ids))
    assert n == 24 and kv / n == pytest.approx(eng.kv_bytes_per_token_formula(), rel=0.1)
    d = eng.describe()
    assert d["file_bytes"] == eng.gguf_path.stat().st_size and d["quantization"] == "f32"


def test_llamacpp_quantized_levels_shrink_and_stay_close(tiny_dir, adapter, tmp_path, monkeypatch):
    _llama_cpp()
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    spec = ModelSpec(name="tiny", source="hf", path=str(tiny_dir))
    f32 = _engine(spec, Variant(backend="llamacpp", quantization="f32"), adapter)
    ids = f32.prompt_ids(16)
    ref, _ = f32.loglikelihood(ids[:8], ids[8:])
    for level, ratio in (("f16", 0.55), ("q8_0", 0.32), ("q4_0", 0.32)):
        e = _engine(spec, Variant(backend="llamacpp", quantization=level), adapter)
        assert e.file_bytes() < ratio * f32.file_bytes() + 200_000  # metadata (tokenizer) is not quantized
        assert e.weight_bytes() < f32.weight_bytes()
        lp, _ = e.loglikelihood(ids[:8], ids[8:])
        assert abs(lp - ref) < 1.0, level
    with pytest.raises(Unsupported, match="not a llamacpp value .*; backends? .*torch.* accepts? it"):
        _engine(spec, Variant(backend="llamacpp", quantization="int8_dynamic"), adapter)


def test_llamacpp_through_lm_eval(tiny_dir, adapter, tmp_path, monkeypatch):
    """lm-eval's own request flow (tokenize, empty-context prefix, per-request scores) on the engine's LM."""
    _llama_cpp()
    from lm_eval.api.instance import Instance
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    spec = ModelSpec(name="tiny", source="hf", path=str(tiny_dir))
    eng = _engine(spec, Variant(backend="llamacpp", quantization="f32"), adapter)
    ref = _engine(spec, Variant(), adapter)
    lm = eng.lm_eval_model()
    reqs = [Instance("loglikelihood", {}, ("The cat sat on", c), i) for i, c in enumerate([" the mat", " a dog"])]
    got = lm.loglikelihood(reqs)
    tok = ref.tokenizer
    for (lp, _), c in zip(got, [" the mat", " a dog"]):
        ctx = tok("The cat sat on", add_special_tokens=False)["input_ids"]
        cont = tok("The cat sat on" + c, add_special_tokens=False)["input_ids"][len(ctx):]
        assert lp == pytest.approx(ref.loglikelihood(ctx, cont)[0], abs=2e-3)
    # rolling log-likelihood (perplexity tasks) = Σ over disjoint windows; generation stops at `until`
    roll = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, ("The cat sat on the mat",), 0)])
    assert math.isfinite(roll[0]) and roll[0] < 0
    gen = lm.generate_until([Instance("generate_until", {}, ("The cat", {"until": ["\n"], "max_gen_toks": 5}), 0)])
    assert isinstance(gen[0], str) and "\n" not in gen[0]


def test_quantization_suite_validates():
    import os

    from slmbench.plan import expand, load_suite
    if not os.environ.get("SLMBENCH_DATA_DIR") or not Path(os.environ["SLMBENCH_DATA_DIR"]).is_dir():
        pytest.skip("SLMBENCH_DATA_DIR not set (the perplexity text and the accuracy task need it)")
    path = Path(__file__).resolve().parents[1] / "suites" / "quantization.yaml"
    jobs = expand(load_suite(path), path.parent)
    levels = {(j.variant.backend, j.variant.quantization) for j in jobs}
    assert {("llamacpp", x) for x in ("f16", "q8_0", "q4_0", "q4_k_m")} <= levels
    assert {("torch", "none"), ("torch", "int8_dynamic"), ("torch", "int8_weight_only")} <= levels
