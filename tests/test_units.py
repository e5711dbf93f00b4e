"""Small units: statistics, metric rendering, the byte tokenizer, the CPU adapter's readers."""
from __future__ import annotations

import pytest

from slmbench.metrics import Metric
from slmbench.stats import median_ci, percentile, summarize


def test_median_ci_order_statistics():
    xs = list(range(1, 21))  # n=20: the 95% CI of the median is [x(6), x(15)] (binomial order statistics)
    assert median_ci(xs) == (6, 15)
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # n<6: full range, labelled 'range'
    s = summarize(xs)
    assert s.median == 10.5 and s.n == 20


def test_percentile_interpolates():
    assert percentile([0, 10], 50) == 5
    assert percentile([1, 2, 3, 4, 5], 99) == pytest.approx(4.96)


def test_metric_renders_value_spread_unit_and_source():
    m = Metric.from_samples("decode_tok_s", [10, 11, 12, 13, 14, 15, 16], "tok/s")
    assert m.value == 13 and m.spread_kind == "ci95_median" and m.n == 7
    assert m.render().startswith("13.0 ± ") and m.render().endswith("tok/s")
    e = Metric("decode_j_per_token", 0.42, "J/token", source="estimated")
    assert e.render() == "0.420 J/token (estimated)"
    with pytest.raises(ValueError):
        Metric("x", 1.0, "u", source="guessed")


def test_byte_tokenizer_round_trips_text(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    from transformers import AutoTokenizer
    from slmbench.models.random_init import byte_tokenizer_dir
    tok = AutoTokenizer.from_pretrained(str(byte_tokenizer_dir()))
    text = "Héllo, wörld — 42!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text.encode()) and max(ids) < 256
    assert tok.decode(ids) == text


def test_peak_rss_reset_and_read():
    from slmbench.adapters.cpu import peak_rss_bytes, reset_peak_rss, rss_bytes
    before = peak_rss_bytes()
    assert before >= rss_bytes() * 0.9
    if reset_peak_rss():
        buf = bytearray(64 * 2**20)
        for i in range(0, len(buf), 4096):
            buf[i] = 1
        assert peak_rss_bytes() >= 64 * 2**20
        del buf


def test_cpu_time_energy_estimate_is_labelled():
    from slmbench.adapters.energy import CpuTimeEstimate
    m = CpuTimeEstimate(5.0, "no RAPL counters")
    a = m.read()
    sum(i * i for i in range(200_000))
    assert m.read() > a and m.source == "estimated" and "5 W/core" in m.note
