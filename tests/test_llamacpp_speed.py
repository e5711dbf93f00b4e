"""The llama.cpp backend's lean decode loop (backends/llamacpp.py `_decode_loop`: one reused one-token batch,
llama.cpp's greedy sampler) and its flash-attention knob: the same greedy tokens as a reference loop written here
with llama-cpp-python's public per-token path (Llama.eval + argmax over the last logits, what the backend did
before), on a tiny random llama exported to GGUF and on the real SmolLM2 Q4_0; the context bookkeeping after a
generate; the knob out of existing job keys. No timing here (benchmarks/llamabench.py measures speed)."""
from __future__ import annotations

import numpy as np
import pytest

from slmbench.plan import ModelSpec, Variant

pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (slmbench[llamacpp])")


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    return ad


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A saved tiny llama (hidden 64: GGUF Q4_0 blocks of 32 fit) with the byte tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32)
    d = tmp_path_factory.mktemp("tiny-hf")
    m.save_pretrained(d)
    AutoTokenizer.from_pretrained(str(byte_tokenizer_dir())).save_pretrained(d)
    return d


def _engine(spec, variant, adapter):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(spec), variant, adapter, progress=lambda m: None)


def _reference(eng, ids, n, depth=0):
    """Greedy the old way: Llama.eval per token, numpy argmax over the last row of logits."""
    llm = eng.llm
    llm.n_tokens = 0
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.eval(ids)
    out = []
    for i in range(n):
        row = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(eng.n_vocab,))
        out.append(int(row.argmax()))
        if i < n - 1:
            llm.eval([out[-1]])
    eng._tokens = list(ids) + out[:-1]  # what the context now holds
    return out


def _fast(eng, ids, n, past=None):
    from slmbench.contracts import TokenClock
    clock = TokenClock()
    out = eng.generate(ids, n, clock, past)
    assert len(clock.times) == n and clock._seen_prompt  # prompt once, then one put per new token
    assert eng._tokens == list(ids) + out[:-1] and eng.llm.n_tokens == len(ids) + n - 1
    return out


def test_flash_attn_knob_defaults_to_auto_and_stays_out_of_job_keys():
    assert Variant(backend="llamacpp").flash_attn == "auto"
    assert "flash_attn" not in Variant(backend="llamacpp").dump()
    assert Variant(backend="llamacpp", flash_attn="off").dump()["flash_attn"] == "off"
    assert Variant(flash_attn="off").problem  # a llama.cpp knob on the torch backend


@pytest.mark.parametrize("flash", ["auto", "off"])
@pytest.mark.parametrize("level", ["f32", "q4_0"])
def test_same_greedy_tokens_as_the_per_token_reference(flash, level, tiny_dir, adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    eng = _engine(ModelSpec(name="tiny", source="hf", path=str(tiny_dir)),
                  Variant(backend="llamacpp", quantization=level, flash_attn=flash), adapter)
    assert eng.llm.context_params.flash_attn_type == {"auto": -1, "off": 0}[flash]
    ids = eng.prompt_ids(40)
    ref = _reference(eng, ids, 24)
    assert _fast(eng, ids, 24) == ref
    # on top of a cached context (a depth), and again with everything cached but the last token
    assert _fast(eng, ids, 24, eng.prefill(ids[:16])) == ref
    assert _fast(eng, ids, 8, eng.prefill(ids)) == ref[:8]
    # the context is usable afterwards: scores agree with a fresh evaluation of the same tokens
    seq = ids + ref[:8]
    a = eng.logits(seq, keep=len(ids) + 7)[-1]
    eng.prefill([])
    b = eng.logits(seq)[-1]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_smollm2_q4_0_same_tokens_as_the_reference(adapter, slm_env):
    """The real SmolLM2-135M-Instruct at Q4_0 (the level where per-token overhead weighed most): 48 tokens after
    a 128-token prompt, identical to the per-token reference."""
    eng = _engine(ModelSpec(name="smollm2-135m", source="smollm2"), Variant(backend="llamacpp", quantization="q4_0"),
                  adapter)
    ids = eng.prompt_ids(128)
    assert _fast(eng, ids, 48) == _reference(eng, ids, 48)


def test_context_overflow_is_refused_before_decoding(tiny_dir, adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    eng = _engine(ModelSpec(name="tiny", source="hf", path=str(tiny_dir)), Variant(backend="llamacpp"), adapter)
    ids = eng.prompt_ids(16)
    with pytest.raises(ValueError, match="exceed the llama.cpp context"):
        eng.generate(ids, eng.llm.n_ctx())
    assert _fast(eng, ids, 4) == _reference(eng, ids, 4)
