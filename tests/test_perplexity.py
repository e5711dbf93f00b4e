"""Perplexity / bits-per-byte: windowing scores every token once, bytes partition the text, the NLL equals a direct
computation, and the scenario runs end to end on a tiny random model."""
from __future__ import annotations

import json
import math
import sqlite3

import pytest
from conftest import TINY_MODEL, run_cli, tiny_suite

from slmbench.errors import UserError
from slmbench.scenarios.perplexity import PerplexityParams, nll_sum, resolve_text, token_bytes, windows


@pytest.mark.parametrize("n,context,stride,skip", [(10, 4, 4, 0), (10, 4, 2, 0), (37, 8, 3, 0), (5, 16, 16, 0)])
def test_windows_score_each_token_once(n, context, stride, skip):
    seen = []
    for s, e, first in windows(n, context, stride, skip):
        assert e - s <= context and s < first <= e
        seen += range(first, e)
    if stride < context:  # overlapping windows leave nothing out
        assert seen == list(range(1, n))
    else:  # non-overlapping: each window's first token has no context in its window
        assert seen == [i for i in range(1, n) if i % context]


def test_llama_perplexity_windowing():
    """-c 512: whole chunks only, scoring each chunk's second half (positions 257..511)."""
    w = list(windows(1100, 512, 512, 256))
    assert w == [(0, 512, 257), (512, 1024, 769)]


def test_token_bytes_partition_the_text(slm_env):
    from transformers import AutoTokenizer

    from slmbench.models.random_init import byte_tokenizer_dir
    tok = AutoTokenizer.from_pretrained(str(byte_tokenizer_dir()))
    text = "Plain words, then é, ü and — dashes.\nNew line."
    ids, tb = token_bytes(tok, text)
    assert len(ids) == len(tb) and sum(tb) == len(text.encode("utf-8"))


def test_nll_equals_direct_loss(slm_env):
    import torch
    from transformers import AutoModelForCausalLM
    from slmbench.models.random_init import make_config
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(TINY_MODEL["config"])).eval()
    ids = torch.randint(0, 256, (1, 50))
    with torch.no_grad():
        direct = model(ids, labels=ids).loss.item() * 49  # HF: mean NLL over tokens 1..49
    nats, scored = nll_sum(model, ids[0].tolist(), context=64, stride=64, skip=0)
    assert scored == list(range(1, 50)) and nats == pytest.approx(direct, rel=1e-5)


def test_text_resolution_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("SLMBENCH_DATA_DIR", raising=False)
    with pytest.raises(UserError, match="SLMBENCH_DATA_DIR, which is not set"):
        resolve_text("corpus/austen.txt")
    monkeypatch.setenv("SLMBENCH_DATA_DIR", str(tmp_path / "nope"))
    with pytest.raises(UserError, match="is not a directory"):
        resolve_text("corpus/austen.txt")
    with pytest.raises(UserError, match="not found"):
        resolve_text(str(tmp_path / "missing.txt"))
    with pytest.raises(UserError, match="skip"):
        (tmp_path / "t.txt").write_text("text")
        PerplexityParams.check(PerplexityParams(text=str(tmp_path / "t.txt"), context=8, skip=7), "f", "s")


def test_scenario_end_to_end(tmp_path):
    text = tmp_path / "held_out.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20 + "Naïve café.\n")
    suite = tiny_suite(tmp_path, scenarios=[{"name": "perplexity", "params": {"text": str(text), "context": 128,
                                                                              "stride": 64, "max_bytes": None}}])
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out")
    assert rc == 0, err
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    got = {m: (v, n, json.loads(lab)) for m, v, n, lab in db.execute("SELECT metric, value, n, labels FROM results")}
    ppl, n, lab = got["ppl"]
    assert lab == {"text": "held_out.txt"} and n == len(text.read_bytes()) - 1  # byte tokenizer: 1 token per byte
    # byte-level tokens and every token after the first scored: bits/byte == log2(ppl) up to the 1 unscored byte
    assert got["bits_per_byte"][0] == pytest.approx(math.log2(ppl), rel=1e-6)
    assert got["ppl_bytes"][0] == len(text.read_bytes())
    # the bad-path check runs at validation: exit 2 before any job
    bad = tiny_suite(tmp_path, "bad.yaml", scenarios=[{"name": "perplexity", "params": {"text": "/no/such.txt"}}])
    rc, _, err = run_cli("validate", bad)
    assert rc == 2 and "scenarios[0].params.text: text file /no/such.txt not found" in err
