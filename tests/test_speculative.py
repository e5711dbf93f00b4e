"""Speculative decoding on tiny random-init models: lossless greedy, the exact target distribution under sampling
(chi-square against enumerated probabilities, with a negative control that the test must reject), the theory's
formulas, KV rollback, the tokenizer check at validate, and one real suite run through the CLI into the report."""
from __future__ import annotations

import copy
import json
import sqlite3

import pytest
import torch
import yaml
from conftest import FAST, run_cli
from scipy import stats

from slmbench.speculative import (ModelDraft, NGramDraft, NoDraft, Runner, acceptance, expected_tokens, generate,
                                  predicted_speedup)

PEAKY = {"initializer_range": 0.5}  # large random weights → peaked next-token distributions (few bins suffice)


@pytest.fixture(scope="module")
def pair():
    """A tiny target and a draft that is the target plus noise: accepts often, but not always."""
    from transformers import AutoModelForCausalLM

    from slmbench.models.random_init import make_config
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add overhead
    torch.manual_seed(0)
    target = AutoModelForCausalLM.from_config(make_config(PEAKY)).eval()
    draft = copy.deepcopy(target)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # random nets are chaotic: small noise, a ≈ 0.5
    yield target, draft
    torch.set_num_threads(threads)


PROMPT = [72, 101, 108, 108, 111, 32, 72, 101, 108]  # "Hello Hel": a repeat for the n-gram draft to find


def test_formulas():
    assert expected_tokens(0.5, 2) == pytest.approx(1.75)
    assert expected_tokens(1.0, 4) == 5
    assert expected_tokens(0.0, 8) == 1
    assert predicted_speedup(0.8, 4, 0.05) == pytest.approx((1 - 0.8 ** 5) / 0.2 / 1.2)
    # steps (g in force, proposed, accepted): full acceptance; rejection at position 2; empty n-gram proposal
    a, pos, n = acceptance([(2, 2, 2), (2, 2, 1), (2, 0, 0)])
    assert (a, pos, n) == (pytest.approx(3 / 5), [pytest.approx(2 / 3), 0.5], 3)


@pytest.mark.parametrize("g", [1, 3, 8])
def test_greedy_is_token_identical_and_caches_roll_back(pair, g):
    target, draft_model = pair
    t = Runner(target)
    base, b = generate(t, NoDraft(), PROMPT, 24, 0)
    assert all(k == 0 and n == 0 for k, _, n in b.steps) and len(b.steps) == 24
    for draft in (ModelDraft(Runner(draft_model, target.config.vocab_size)), NGramDraft(3, 1)):
        for adaptive in (False, True):
            out, st = generate(t, draft, PROMPT, 24, g, adaptive=adaptive)
            assert out == base
            assert len(t) == len(PROMPT) + 24 - 1  # invariant: cache = all tokens but the last
            if isinstance(draft, ModelDraft):
                assert len(draft.r) <= len(PROMPT) + 24 - 1
    st = generate(t, ModelDraft(Runner(draft_model, target.config.vocab_size)), PROMPT, 24, g)[1]
    a = acceptance(st.steps)[0]
    assert 0 < a < 1  # a noisy copy: both the accept and the reject branch ran
    assert len(st.steps) < 24  # accepted drafts saved target passes


def exact_joint(model, prompt, horizon, temp, min_p):
    """Exact probabilities of every length-`horizon` continuation with probability ≥ min_p (a pruned prefix tree:
    a prefix below min_p cannot have a continuation above it)."""
    probs = {(): 1.0}
    for _ in range(horizon):
        front = list(probs)
        with torch.no_grad():
            logits = model(torch.tensor([prompt + list(f) for f in front])).logits[:, -1].double()
        P = torch.softmax(logits / temp, -1)
        probs = {f + (int(t),): probs[f] * float(P[i, t])
                 for i, f in enumerate(front) for t in torch.nonzero(P[i] * probs[f] >= min_p).flatten()}
    return probs


def chi2_pvalue(samples, probs):
    n = len(samples)
    bins = list(probs)
    idx = {b: i for i, b in enumerate(bins)}
    obs = [0] * (len(bins) + 1)
    for s in samples:
        obs[idx.get(tuple(s), len(bins))] += 1
    exp = [probs[b] * n for b in bins] + [max(n * (1 - sum(probs.values())), 1e-9)]
    return stats.chisquare(obs, exp).pvalue, len(bins)


class PointMassDraft(ModelDraft):
    """Proposes the draft model's argmax: q is a point mass, the path an n-gram draft takes under sampling."""

    def propose(self, seq, g, temp, gen):
        return super().propose(seq, g, 0, gen)


@pytest.mark.parametrize("kind,g,n", [("model", 2, 1000), ("point-mass", 2, 600)])
def test_sampling_keeps_the_target_distribution(pair, kind, g, n):
    """Speculative sampling must reproduce the target's joint distribution over the next 3 tokens exactly."""
    target, draft_model = pair
    temp, horizon = 1.0, 3
    probs = exact_joint(target, PROMPT, horizon, temp, min_p=5 / n)
    draft = (ModelDraft if kind == "model" else PointMassDraft)(Runner(draft_model, target.config.vocab_size))
    t = Runner(target)
    samples, steps = [], []
    for seed in range(n):
        out, st = generate(t, draft, PROMPT, horizon, g, temp=temp, seed=seed)
        samples.append(out)
        steps += st.steps
    p, nbins = chi2_pvalue(samples, probs)
    assert nbins >= 5
    a = acceptance(steps)[0]
    assert 0.05 < a < 0.98, a  # both branches of the accept/resample rule were exercised
    assert p > 1e-3, f"speculative samples do not follow the target distribution (chi-square p={p:.2g})"

    if kind == "model":  # negative control: the draft's own distribution must fail the same test
        d = Runner(draft_model, target.config.vocab_size)
        wrong = [generate(d, NoDraft(), PROMPT, horizon, 0, temp=temp, seed=s)[0] for s in range(n)]
        assert chi2_pvalue(wrong, probs)[0] < 1e-6


# --- suite level: validation and one real run through the CLI ------------------------------------------------

TINY = {"name": "tiny", "source": "random", "config": {"hidden_size": 32, "intermediate_size": 64,
                                                       "num_hidden_layers": 3, "num_attention_heads": 2,
                                                       "num_key_value_heads": 1, **PEAKY}}


def spec_suite(path, sweep, params=None):
    s = {"name": "spec-tiny", "settings": {**FAST, "repetitions": 2}, "models": [TINY], "devices": ["local-cpu"],
         "scenarios": [{"name": "speculative", "params": {"prompt_tokens": 16, "gen_tokens": 12, **(params or {})},
                        "sweep": sweep}]}
    path.write_text(yaml.safe_dump(s, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def draft_dirs(tmp_path_factory):
    """Two HF dirs with the same tiny model: one with the byte tokenizer, one whose vocabulary has an extra token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    root = tmp_path_factory.mktemp("drafts")
    model = AutoModelForCausalLM.from_config(make_config({**TINY["config"], "num_hidden_layers": 1}))
    tok = AutoTokenizer.from_pretrained(str(byte_tokenizer_dir()))
    same, other = root / "same-tok", root / "other-tok"
    for d in (same, other):
        model.save_pretrained(d)
        tok.save_pretrained(d)
    tok2 = AutoTokenizer.from_pretrained(str(other))
    tok2.add_tokens(["<extra>"])
    tok2.save_pretrained(other)
    return same, other


def test_validate_refuses_a_draft_with_another_tokenizer(tmp_path, draft_dirs, slm_env):
    same, other = draft_dirs
    ok = spec_suite(tmp_path / "ok.yaml", {"draft": [{"source": "hf", "path": str(same)}, "ngram"]})
    rc, out, err = run_cli("validate", ok)
    assert rc == 0, err
    bad = spec_suite(tmp_path / "bad.yaml", {"draft": ["ngram", {"source": "hf", "path": str(other)}]})
    rc, out, err = run_cli("validate", bad)
    assert rc == 2
    line = err.strip().splitlines()[-1]
    assert "scenarios[0].sweep.draft" in line and "draft 'hf:other-tok' and model 'tiny' have different tokenizers" in line
    assert "vocabularies differ" in line
    typo = spec_suite(tmp_path / "typo.yaml", {"g": [1]}, {"draft": {"source": "ngram", "max_n": 2, "min_n": 3}})
    rc, _, err = run_cli("validate", typo)
    assert rc == 2 and "min_n (3) is above max_n (2)" in err


def test_suite_run_records_statistics_and_renders_the_report(tmp_path, draft_dirs):
    same, _ = draft_dirs
    drafts = ["ngram", {"source": "random", "config": TINY["config"], "truncate_layers": 1},
              {"source": "hf", "path": str(same), "name": "student"}]
    suite = spec_suite(tmp_path / "s.yaml", {"draft": drafts, "g": [3]})
    rc, out, err = run_cli("run", suite, "--out", tmp_path / "out", timeout=600)
    assert rc == 0, err[-2000:]
    import pandas as pd
    with sqlite3.connect(tmp_path / "out" / "results.sqlite") as db:
        df = pd.read_sql("SELECT * FROM results", db)
    assert set(df["status"]) == {"ok"}, df[df["status"] != "ok"][["error"]].to_string()
    v = lambda m: df[df["metric"] == m]["value"]
    assert len(v("speedup")) == 3 and (v("speedup") > 0).all()
    assert (v("greedy_identical") == 1).all()  # lossless: identical tokens to the target alone, every job
    assert v("acceptance_rate").between(0, 1).all()
    assert (v("cost_ratio_c") >= 0).all() and (v("speedup_predicted") > 0).all()
    assert (v("hf_assisted_identical") == 1).all() and (v("hf_plain_matches_ours") == 1).all()
    pos = df[df["metric"] == "acceptance_rate_pos"]
    assert {json.loads(x)["pos"] for x in pos["labels"]} == {1, 2, 3}

    from slmbench.report import speculative as rep
    md = rep.to_markdown(df)
    assert "| tiny | ngram(n=1..3) | 3 |" in md and "student" in md and "random/L1" in md
    frag = rep.to_html(df)
    assert "<table" in frag and "data:image/png;base64," in frag


@pytest.mark.real_model
def test_smollm2_with_its_truncated_self_is_lossless(slm_env):
    """The real target with its first 8 layers as draft: token-identical greedy output, some drafts accepted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.contracts.engine import PROMPT_TEXT
    from slmbench.models import smollm2
    d = str(smollm2.hf_dir())
    target = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    draft = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, num_hidden_layers=8).eval()
    prompt = AutoTokenizer.from_pretrained(d)(PROMPT_TEXT)["input_ids"][:64]
    t = Runner(target)
    base = generate(t, NoDraft(), prompt, 24, 0)[0]
    out, st = generate(t, ModelDraft(Runner(draft, target.config.vocab_size)), prompt, 24, 4)
    assert out == base
    assert acceptance(st.steps)[0] > 0
