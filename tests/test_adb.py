"""Android parsers (adapters/adb.py) on output samples in tests/data/. The samples were WRITTEN for these tests in
the formats llama.cpp documents (llama-bench -o json fields; llama-perplexity's `Final estimate: PPL = X +/- Y`
line) and Android's dumpsys prints — not captured from a phone: the adb path is unchecked on hardware."""
from __future__ import annotations

from pathlib import Path

import pytest

from slmbench.adapters.adb import (ParseError, battery_thermal_rows, llama_bench_rows, parse_battery,
                                   parse_thermal, perplexity_rows)

DATA = Path(__file__).parent / "data"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_llama_bench_json_to_rows():
    rows = {r.name: r for r in llama_bench_rows(read("llama_bench_pixel.json"))}
    pp, tg = rows["prefill_tok_s"], rows["decode_tok_s"]
    assert pp.value == pytest.approx(424.538776) and pp.labels == {"test": "pp128"} and pp.unit == "tok/s"
    assert tg.value == pytest.approx(69.265018) and tg.labels == {"test": "tg32"} and tg.n == 5
    assert tg.samples == [70.1954, 69.8215, 66.7332, 70.4861, 69.1292]
    assert tg.spread_kind == "stderr" and tg.spread == pytest.approx(1.472046 / 5 ** 0.5)
    for r in rows.values():
        assert r.source == "measured" and "on the device" in r.note and "4 threads" in r.note


def test_llama_bench_refuses_other_output():
    with pytest.raises(ParseError, match="-o json"):
        llama_bench_rows("| model | size |")
    with pytest.raises(ParseError, match="n_prompt"):
        llama_bench_rows('[{"avg_ts": 1}]')


def test_perplexity_final_estimate():
    rows = {r.name: r for r in perplexity_rows(read("llama_perplexity_pixel.txt"))}
    assert rows["ppl"].value == pytest.approx(23.2149) and rows["ppl"].spread == pytest.approx(0.88317)
    assert rows["ppl"].spread_kind == "stderr" and rows["ppl"].n == 8 and rows["ppl_chunks"].value == 8
    assert rows["ppl"].source == "measured" and "on the device" in rows["ppl"].note
    with pytest.raises(ParseError, match="Final estimate"):
        perplexity_rows("perplexity: calculating perplexity over 8 chunks\n[1]17.4283,[2]21.9954,")
    with pytest.raises(ParseError, match="nan"):
        perplexity_rows("[1]nan,[2]nan,")


def test_battery_and_thermal_before_after():
    b = parse_battery(read("dumpsys_battery_before.txt"))
    assert (b["level"], b["voltage_mv"], b["temperature_c"], b["charge_counter_uah"], b["powered"]) == \
        (84, 4211, 28.7, 3876000, False)
    th = parse_thermal(read("dumpsys_thermal_after.txt"))
    assert th["status"] == 1 and th["temps"]["cpu-1-0-usr"] == (47.3, "cpu")
    rows = {r.name: r for r in battery_thermal_rows(read("dumpsys_battery_before.txt"),
                                                    read("dumpsys_battery_after.txt"),
                                                    read("dumpsys_thermal_before.txt"),
                                                    read("dumpsys_thermal_after.txt"), seconds=60.0)}
    assert rows["battery_level_drop_pct"].value == pytest.approx(1.0)
    assert rows["battery_charge_used_mah"].value == pytest.approx(33.0)
    assert rows["battery_power_w"].value == pytest.approx(33.0 * 3.6 * 4.192 / 60.0)  # mAh·3.6 = C; × V / s
    assert rows["battery_temp_rise_c"].value == pytest.approx(2.5)
    assert rows["thermal_status"].value == 1 and "before: 0" in rows["thermal_status"].note
    assert rows["cpu_temp_max_c"].value == pytest.approx(47.3) and "before: 33.1" in rows["cpu_temp_max_c"].note
    assert rows["skin_temp_max_c"].value == pytest.approx(35.6)
    assert all(r.source == "measured" and "on the device" in r.note for r in rows.values())


def test_battery_on_a_charger_says_so_and_gives_no_power():
    plugged = read("dumpsys_battery_after.txt").replace("USB powered: false", "USB powered: true")
    rows = {r.name: r for r in battery_thermal_rows(read("dumpsys_battery_before.txt"), plugged, seconds=60.0)}
    assert "battery_power_w" not in rows and "ON A CHARGER" in rows["battery_charge_used_mah"].note
    with pytest.raises(ParseError, match="dumpsys battery"):
        parse_battery("nothing here")
