"""The torch backend's fast decode path (backends/torch_fast.py, knob `decode: fast|exact|generate`, default fast):
token-identical to `model.generate` under greedy decoding — `exact`: bit-identical logits per step on a tiny random
model; `fast` (the gemv kernel, backends/gemv_kernel.py): logits equal to rounding, the kernel itself against
F.linear on awkward shapes and independent of the thread count; the same tokens on the tiny model (with a KV context,
with torch quantization, with mha), the same tokens on the real SmolLM2 —
the TokenClock contract kept, the knob out of existing job keys, and unsupported models falling back to generate."""
from __future__ import annotations

import pytest

from slmbench.plan import ModelSpec, Variant

TINY = ModelSpec(name="tiny", source="random",  # the smoke suite's tiny-random model
                 config={"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2})


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


def _new_tokens(eng, ids, n, past=None):
    from slmbench.contracts import TokenClock
    clock = TokenClock()
    out = eng.generate(ids, n, clock, past)
    assert len(clock.times) == n and clock._seen_prompt  # prompt once, then one put per new token
    assert all(b >= a for a, b in zip(clock.times, clock.times[1:]))
    seq = out.sequences[0].tolist()
    assert seq[:len(ids)] == list(ids) and len(seq) == len(ids) + n
    return seq[len(ids):]


def test_knob_defaults_to_fast_and_stays_out_of_job_keys():
    assert "decode" not in Variant().dump() and "decode" not in Variant(dtype="bf16").dump()
    assert Variant(decode="generate").dump()["decode"] == "generate"
    assert Variant().decode == "fast"
    assert Variant(backend="llamacpp", decode="generate").problem  # a torch knob


@pytest.mark.parametrize("captured", [False, True])
@pytest.mark.parametrize("knobs", [{}, {"dtype": "bf16"}])
def test_step_logits_are_bit_identical_to_transformers(captured, knobs, adapter, slm_env):
    """Each fast step — eager or TorchScript-captured — computes exactly transformers' eager decode step
    (DynamicCache, sdpa): equal, not close."""
    from slmbench.backends.torch_fast import FastDecoder
    m = _engine(TINY, Variant(**knobs), adapter).model
    fd = FastDecoder(m)
    assert not captured or fd.capture(kernel=False) == "aten"
    _assert_steps(m, fd, list(range(3, 40)), 12)


def test_gemv_kernel_matches_linear_and_ignores_thread_count():
    """The kernel against F.linear on shapes with remainders everywhere (rows not a multiple of 4·threads, K not of
    16), bit-equal across thread counts (each row one fixed-order dot product), refusing what it does not do."""
    import torch
    from slmbench.backends import gemv_kernel
    if gemv_kernel.load() is None:
        pytest.skip(f"no gemv kernel here: {gemv_kernel.reason()}")
    g = torch.Generator().manual_seed(0)
    before = torch.get_num_threads()
    try:
        for n, k in ((1, 1), (3, 7), (5, 16), (37, 100), (576, 576), (1030, 1536), (4099, 33)):
            w, x = torch.randn(n, k, generator=g), torch.randn(1, 1, k, generator=g)
            outs = []
            for t in (1, 2, 3):
                torch.set_num_threads(t)
                outs.append(torch.ops.slmbench.gemv(x, w))
            ref = torch.nn.functional.linear(x.double(), w.double()).float()
            assert outs[0].shape == ref.shape
            torch.testing.assert_close(outs[0], ref, rtol=1e-5, atol=1e-5 * k ** 0.5)
            assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2]), (n, k)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(RuntimeError, match="float32 only"):
        torch.ops.slmbench.gemv(torch.ones(1, 4, dtype=torch.bfloat16), torch.ones(2, 4, dtype=torch.bfloat16))
    with pytest.raises(RuntimeError, match="contiguous"):
        torch.ops.slmbench.gemv(torch.ones(1, 4), torch.ones(4, 2).t())


def test_kernel_step_logits_equal_to_rounding(adapter, slm_env):
    """`decode: fast` on float32: the gemv step against transformers' eager step, and its parameters re-pointed to
    the packed buffer without changing a value (the model's own forward is unchanged bit for bit)."""
    import torch
    from slmbench.backends import gemv_kernel
    from slmbench.backends.torch_fast import FastDecoder
    if gemv_kernel.load() is None:
        pytest.skip(f"no gemv kernel here: {gemv_kernel.reason()}")
    m = _engine(TINY, Variant(decode="generate"), adapter).model
    x = torch.tensor([list(range(3, 30))])
    with torch.inference_mode():
        before = m(x).logits
    fd = FastDecoder(m)
    assert fd.capture() == "gemv", fd.kernel_note
    with torch.inference_mode():
        assert torch.equal(m(x).logits, before)
    assert m.lm_head.weight.data_ptr() == fd._gemv[-1].data_ptr()
    _assert_steps(m, fd, list(range(3, 40)), 12, exact=False)


def _assert_steps(m, fd, ids, steps, exact=True):
    import torch
    from transformers import DynamicCache
    with torch.inference_mode():
        cache = DynamicCache(config=m.config)
        x = torch.tensor([ids])
        tok = m(x, attention_mask=torch.ones_like(x), cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        fd._ensure_cache(len(ids) + steps, x.device)
        fd._load_cache(cache)
        for i in range(steps):
            pos = len(ids) + i
            ref = m(tok, attention_mask=torch.ones(1, pos + 1, dtype=torch.long), cache=cache, use_cache=True).logits
            got = fd.step(tok, pos, torch.tensor([[pos]]))
            if exact:
                assert torch.equal(ref, got), f"step {i}: max |diff| {(ref - got).abs().max().item()}"
            else:
                torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
            tok = ref[:, -1:].argmax(-1)


@pytest.mark.parametrize("knobs", [{}, {"decode": "exact"}, {"attention": "mha"}, {"quantization": "int8_dynamic"},
                                   {"quantization": "int8_weight_only"}, {"quantization": "intx4_weight_only"},
                                   {"dtype": "bf16"}])
def test_same_tokens_as_generate_on_the_tiny_model(knobs, adapter, slm_env):
    fast = _engine(TINY, Variant(**knobs), adapter)
    gen = _engine(TINY, Variant(**{**knobs, "decode": "generate"}), adapter)
    assert fast.describe()["decode_path"].startswith("fast") and gen.describe()["decode_path"] == "generate"
    d = fast.describe()
    # captured (TorchScript) where every projection is a plain Linear, else the eager step; capture time is build time
    plain = "quantization" not in knobs and "attention" not in knobs  # mha wraps k/v projections in modules
    assert ("TorchScript" in d["decode_path"]) == (d["compile_s"] > 0) == plain
    assert fast.build_s >= d["compile_s"]
    from slmbench.backends import gemv_kernel
    kernel = plain and knobs.get("decode") != "exact" and "dtype" not in knobs and gemv_kernel.load() is not None
    assert ("gemv kernel" in d["decode_path"]) == kernel, d["decode_path"]
    for n_prompt, n_new in ((1, 2), (8, 1), (24, 40)):
        ids = fast.prompt_ids(n_prompt)
        assert _new_tokens(fast, ids, n_new) == _new_tokens(gen, ids, n_new), (n_prompt, n_new)
    # a KV context already there (the latency scenario's depth): prefill(ids[:d]), then generate on top of it
    ids = fast.prompt_ids(40)
    a = _new_tokens(fast, ids, 16, fast.prefill(ids[:24]))
    assert a == _new_tokens(gen, ids, 16, gen.prefill(ids[:24])) == _new_tokens(gen, ids, 16)
    # the static cache is reused and grown across calls: a longer context after a shorter one
    ids = fast.prompt_ids(200)
    assert _new_tokens(fast, ids, 30) == _new_tokens(gen, ids, 30)


def test_eos_is_masked_as_min_new_tokens_does(adapter, slm_env):
    """min = max new tokens: transformers never picks EOS; a fast path that did would stop early elsewhere."""
    import torch
    fast = _engine(TINY, Variant(), adapter)
    gen = _engine(TINY, Variant(decode="generate"), adapter)
    eos = fast.model.generation_config.eos_token_id
    for eng in (fast, gen):  # make EOS the argmax everywhere: only the mask keeps it out
        with torch.no_grad():
            eng.model.lm_head.weight[eos] = eng.model.lm_head.weight.abs().max() * 50
    ids = fast.prompt_ids(10)
    a = _new_tokens(fast, ids, 12)
    assert eos not in a and a == _new_tokens(gen, ids, 12)


def test_unsupported_models_fall_back_to_generate(adapter, slm_env):
    eng = _engine(TINY, Variant(), adapter)
    eng.model.generation_config.repetition_penalty = 1.3
    from slmbench.backends.torch_fast import unsupported_reason
    assert "repetition_penalty" in unsupported_reason(eng.model)
    eng2 = _engine(TINY, Variant(), adapter)
    assert eng2.decode_path.startswith("fast")
    gemma = _engine(ModelSpec(name="g", source="random", config={
        "model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}), Variant(), adapter)
    d = gemma.describe()["decode_path"]
    assert d.startswith("generate (the fast path does not run model_type 'gemma3_text'"), d
    ids = gemma.prompt_ids(8)
    assert len(_new_tokens(gemma, ids, 3)) == 3
    comp = _engine(TINY, Variant(compile=True), adapter)  # transformers' compiled generate, not the fast path
    assert comp.decode_path == "generate (compiled by transformers)" and comp.describe()["compile_s"] is None


@pytest.mark.real_model
def test_same_tokens_as_generate_on_smollm2(slm_env):
    """The real SmolLM2-135M-Instruct fp32 (the smoke suite's default variant): the same 48 greedy tokens after a
    128-token prompt, after a 64-token KV context, and after chat and text prompts; `exact` bit-identical logits."""
    from slmbench.adapters import load_profile, make_adapter
    ad = make_adapter(load_profile("local-cpu"))
    ad.setup()
    spec = ModelSpec(name="smollm2-135m", source="smollm2")
    from slmbench.backends import gemv_kernel
    fast = _engine(spec, Variant(), ad)
    exact = _engine(spec, Variant(decode="exact"), ad)
    gen = _engine(spec, Variant(decode="generate"), ad)
    assert "TorchScript" in fast.decode_path and "TorchScript" in exact.decode_path
    assert ("gemv kernel" in fast.decode_path) == (gemv_kernel.load() is not None)
    ids = fast.prompt_ids(128)
    _assert_steps(exact.model, exact._fast, ids, 8)
    _assert_steps(fast.model, fast._fast, ids, 8, exact=False)
    a = _new_tokens(fast, ids, 48)
    assert a == _new_tokens(gen, ids, 48) == _new_tokens(exact, ids, 48)
    ids = fast.prompt_ids(96)
    assert _new_tokens(fast, ids, 24, fast.prefill(ids[:64])) == _new_tokens(gen, ids, 24, gen.prefill(ids[:64]))
    tok = fast.tokenizer
    for text in ("<|im_start|>user\nWhat is the tallest mountain on Earth?<|im_end|>\n<|im_start|>assistant\n",
                 "<|im_start|>user\nWrite a short poem about the sea.<|im_end|>\n<|im_start|>assistant\n",
                 "def fibonacci(n):", "The history of the Roman empire"):
        ids = tok(text)["input_ids"]
        assert _new_tokens(fast, ids, 48) == _new_tokens(gen, ids, 48), text
