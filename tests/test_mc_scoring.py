"""Grouped multiple-choice scoring (slmbench.mc_scoring) gives lm-eval's own per-request log-likelihoods.

Real SmolLM2-135M-Instruct on real ARC-Easy / PIQA items (skipped without $SLMBENCH_DATA_DIR/eval), including
lm-eval's left truncation at a small max_length, an empty context, a continuation as long as max_length, duplicate
requests and shuffled request order; and the llama.cpp batched path against its own per-request path."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

DATA = os.environ.get("SLMBENCH_DATA_DIR")
needs_data = pytest.mark.skipif(not (DATA and Path(DATA, "eval").is_dir()), reason="needs $SLMBENCH_DATA_DIR/eval")
ITEMS = 3  # per task: ARC-Easy (3-5 choices) and PIQA (2 long choices)


def _items():
    out = []
    for f, fn in [("arc_easy/test.jsonl", lambda d: (f"Question: {d['question']}\nAnswer:", d["choices"])),
                  ("piqa/validation.jsonl", lambda d: (f"Question: {d['goal']}\nAnswer:", [d["sol1"], d["sol2"]]))]:
        with open(Path(DATA, "eval", f)) as fh:
            out += [fn(json.loads(fh.readline())) for _ in range(ITEMS)]
    return out


def _requests(lm, items):
    """lm-eval's own tokenisation (TemplateLM._encode_pair; an empty context becomes the prefix token), shuffled,
    with one duplicate."""
    reqs = []
    for ctx, choices in items:
        for c in choices:
            reqs.append(((ctx, " " + c), *lm._encode_pair(ctx, " " + c)))
    cont = lm.tok_encode(" " + items[0][1][0], add_special_tokens=False)
    reqs.append((("", " " + items[0][1][0]), [lm.prefix_token_id], cont))
    reqs.append(reqs[3])
    random.Random(0).shuffle(reqs)
    return reqs


@pytest.fixture(scope="module")
def smollm2():
    from slmbench.models.smollm2 import hf_dir
    from slmbench.settings import cache_dir
    if not (cache_dir() / "smollm2" / "hf-fp32" / "model.safetensors").is_file():
        pytest.skip("real SmolLM2 not in the slmbench cache (any real_model test builds it)")
    return hf_dir()


@needs_data
@pytest.mark.parametrize("tree", [True, False], ids=["tree-mask", "two-pass"])
def test_torch_grouped_scores_equal_lm_eval_per_request(smollm2, tree, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends.torch_hf import TorchEngine
    from slmbench.lmeval_model import lm_class
    from slmbench.mc_scoring import TorchScorer
    from slmbench.plan import Variant
    monkeypatch.setattr(TorchScorer, "tree", tree)
    model = AutoModelForCausalLM.from_pretrained(str(smollm2), dtype="float32").eval()
    eng = TorchEngine(model, AutoTokenizer.from_pretrained(str(smollm2)), Variant(),
                      make_adapter(load_profile("local-cpu")), "test")  # no decode capture: scoring only
    lm = lm_class()(engine=eng, batch_size=8)
    reqs = _requests(lm, _items())
    # plus a continuation that is the model's own greedy token: is_greedy must come out True there too
    import torch
    ctx = reqs[0][1]
    with torch.no_grad():
        top = int(eng.model(torch.tensor([ctx])).logits[0, -1].argmax())
    reqs.append((("greedy", ""), ctx, [top]))
    for max_length in (None, 12):  # the model's own (8192), then one that truncates nearly every request
        if max_length:
            lm._max_length = max_length
            reqs = [r for r in reqs if len(r[2]) <= max_length]  # lm-eval asserts this
            longest = max(reqs, key=lambda r: len(r[2]))
            reqs.append((("edge", "cont == max_length"), longest[1], (longest[1] + longest[2])[-max_length:]))
            assert max(len(c) + len(k) for _, c, k in reqs) > max_length + 1  # left truncation happens
        lm.mc_scoring = False
        want = lm._loglikelihood_tokens(reqs, disable_tqdm=True)
        lm.mc_scoring, lm.mc_batch_tokens = True, 64  # small budget: several batches, padding everywhere
        got = lm._loglikelihood_tokens(reqs)
        assert len(got) == len(want) == len(reqs)
        for (key, _, _), (a, ga), (b, gb) in zip(reqs, got, want):
            assert a == pytest.approx(b, abs=1e-4, rel=1e-5), key
            assert ga == gb, key
        if max_length is None:
            assert want[-1][1]  # the model's own greedy token: is_greedy comes out True as well as False
        assert not all(g for _, g in want)


def test_effective_is_lm_eval_truncation():
    from slmbench.mc_scoring import effective
    assert effective([1, 2, 3], [4, 5], 8) == ((1, 2, 3), (4, 5))
    # window = last max_length + 1 tokens of context + continuation; the continuation keeps all its tokens
    assert effective([1, 2, 3, 4, 5], [6, 7], 4) == ((3, 4, 5), (6, 7))
    assert effective([1, 2, 3], [4, 5, 6, 7], 4) == ((3,), (4, 5, 6, 7))  # continuation == max_length
    with pytest.raises(ValueError):
        effective([1], [2, 3, 4], 2)


@pytest.mark.skipif(not os.environ.get("SLMBENCH_MC_LLAMACPP"), reason="llama.cpp batched scoring is off by default: "
                    "it does not yet equal the per-request path (set SLMBENCH_MC_LLAMACPP=1 to run)")
def test_llamacpp_batched_equals_per_request(slm_env):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (slmbench[llamacpp])")
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends.llamacpp import _load
    from slmbench.contracts import ModelFiles
    from slmbench.models.smollm2 import _installed_gguf
    from slmbench.plan import Variant
    from slmbench.settings import cache_dir
    gguf = _installed_gguf() or cache_dir() / "smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not gguf.is_file():
        pytest.skip("the real SmolLM2 GGUF is not cached")
    adapter = make_adapter(load_profile("local-cpu"), None)
    eng = _load(ModelFiles(gguf_path=gguf, origin="test"), Variant(backend="llamacpp"), adapter)
    lm = eng.lm_eval_model()
    items = _items() if DATA and Path(DATA, "eval").is_dir() else [
        ("Question: Which is a liquid at room temperature?\nAnswer:", ["water", "iron", "salt", "a stone wall"])]
    reqs = _requests(lm, items)
    lm.mc_scoring = False
    want = lm._loglikelihood_tokens(reqs)
    lm.mc_scoring, lm.n_seq = True, 3  # few sequences per decode: contexts split across packs too
    got = lm._loglikelihood_tokens(reqs)
    for (key, _, _), (a, ga), (b, gb) in zip(reqs, got, want):
        assert a == pytest.approx(b, abs=2e-3, rel=1e-4), key
        assert ga == gb, key


def test_split_scores_the_shared_prefix_once():
    from slmbench.mc_scoring import split
    g = split((1, 2), [(3, 4, 5), (3, 4, 6), (3, 7)])
    assert g.shared == (3,) and g.prefix == (1, 2, 3)
    assert g.tails == {(3, 4, 5): (4, 5), (3, 4, 6): (4, 6), (3, 7): (7,)}
    assert split((1,), [(3, 4, 5)]).tails == {(3, 4, 5): (5,)}  # a lone continuation: all but its last token shared
    g = split((1,), [(3, 4), (3, 4, 5)])  # one continuation is a prefix of the other: each tail keeps a token
    assert g.shared == (3,) and g.tails == {(3, 4): (4,), (3, 4, 5): (4, 5)}
    assert split((1,), [(3,), (4,)]).shared == ()
