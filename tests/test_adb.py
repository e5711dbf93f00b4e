"""Android over adb (adapters/adb.py, executors/adb.py). Parsers on output samples in tests/data/adb/: those samples
were WRITTEN for these tests in the formats llama.cpp prints (llama-bench -o json fields; llama-perplexity's
`Final estimate: PPL = X +/- Y` line) and Android's dumpsys prints — not captured from a phone. The transport runs
against a FAKE `adb` (tests/data/adb/fake_phone_adb.py: a fake phone that runs the commands on this machine) with
FAKE tools that print those samples, and, when llama.cpp's real tools are built (SLMBENCH_LLAMA_TOOLS, default
~/.cache/slmbench/llama-tools/bin), with the real tools. adb itself and a real phone: unchecked on hardware."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from slmbench.adapters.adb import (ParseError, battery_thermal_rows, llama_bench_rows, parse_battery,
                                   parse_thermal, perplexity_rows)

DATA = Path(__file__).parent / "data" / "adb"


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


# --- the transport, with a FAKE adb (tests/data/adb/fake_phone_adb.py) that runs the phone's commands here ----------

def _smol_gguf() -> dict:
    """SmolLM2-135M-Instruct's own Q4_1 GGUF (the smollm2 source's file) as a `gguf` model entry: pushed as it is."""
    from slmbench.models.smollm2 import gguf_path
    return {"name": "smol", "source": "gguf", "path": str(gguf_path(progress=lambda m: None))}


def _fake_phone(tmp_path: Path, monkeypatch, tools: Path | None = None):
    """A FAKE phone: an `adb` executable running commands on this machine, a remote_dir in tmp_path, and (unless
    real tools are given) FAKE llama-bench / llama-perplexity that print the recorded outputs and log their args."""
    import stat
    import sys
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    adb = bin_dir / "adb"
    adb.write_text(f"#!/bin/sh\nexec {sys.executable} {DATA / 'fake_phone_adb.py'} \"$@\"\n")
    adb.chmod(0o755)
    if tools is None:
        tools = tmp_path / "fake-llama-build"
        tools.mkdir()
        for name, out in (("llama-bench", "llama_bench_pixel.json"), ("llama-perplexity", "llama_perplexity_pixel.txt")):
            f = tools / name
            f.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'tool-args.log'}\n"
                         f"echo 'fake load log [on stderr]' >&2\ncat {DATA / out}\n")
            f.chmod(f.stat().st_mode | stat.S_IEXEC)
        (tools / "libggml.so").write_bytes(b"fake library")
    state = tmp_path / "phone-state"
    state.mkdir()
    monkeypatch.setenv("FAKE_PHONE_DATA", str(DATA))
    monkeypatch.setenv("FAKE_PHONE_STATE", str(state))
    monkeypatch.setenv("FAKE_PHONE_LOG", str(tmp_path / "adb.log"))
    remote = tmp_path / "phone" / "data" / "local" / "tmp" / "slmbench"
    remote.mkdir(parents=True)
    devs = tmp_path / "devices"
    devs.mkdir()
    import yaml
    (devs / "phone-fake.yaml").write_text(yaml.safe_dump({
        "name": "phone-fake", "adapter": "adb", "cores": 2, "memory_bandwidth_gbs": 20.0,
        "extra": {"adb": str(adb), "serial": "FAKE0001", "llama_build_dir": str(tools), "remote_dir": str(remote),
                  "repetitions": 2}}))
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devs))
    monkeypatch.delenv("FAKE_PHONE_GONE", raising=False)
    return remote


def _jobs(tmp_path: Path, scenarios: list[dict], backend: str = "llamacpp"):
    import yaml
    from slmbench.plan import expand, load_suite
    suite = tmp_path / "phone.yaml"
    suite.write_text(yaml.safe_dump({"name": "phone", "models": [_smol_gguf()], "devices": ["phone-fake"],
                                     "matrix": {"backend": [backend]}, "scenarios": scenarios,
                                     "settings": {"repetitions": 2, "warmup": 0}}))
    return expand(load_suite(str(suite)), tmp_path)


LAT = {"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}}
PPL = {"name": "perplexity", "params": {"context": 64, "max_bytes": 2000}}


def test_transport_pushes_once_runs_tools_and_parses(tmp_path, monkeypatch, slm_env):
    from slmbench.contracts import load_profile
    from slmbench.executors.adb import run_job_adb
    remote = _fake_phone(tmp_path, monkeypatch)
    prof = load_profile("phone-fake")
    lat, ppl = _jobs(tmp_path, [LAT, PPL])
    res = run_job_adb(lat, prof, tmp_path / "logs")
    assert res.status == "ok", res.error
    rows = {m["name"]: m for m in res.metrics}
    assert rows["decode_tok_s"]["value"] == pytest.approx(69.265018) and rows["decode_tok_s"]["source"] == "measured"
    assert rows["battery_charge_used_mah"]["value"] == pytest.approx(33.0) and "thermal_status" in rows
    assert all("on the device" in m["note"] for m in res.metrics)
    args = (tmp_path / "tool-args.log").read_text().split()
    assert args[args.index("-p") + 1] == "8" and args[args.index("-n") + 1] == "4" and "json" in args
    assert args[args.index("-t") + 1] == "2" and args[args.index("-r") + 1] == "2"  # profile cores; settings reps
    assert (tmp_path / "logs" / f"{lat.key}.log").read_text().count("$ ") >= 5  # every adb command, logged
    res = run_job_adb(ppl, prof, tmp_path / "logs")
    assert res.status == "ok", res.error
    assert {m["name"] for m in res.metrics} >= {"ppl", "ppl_chunks", "battery_level_drop_pct"}
    # the GGUF and the build went over once: the second job found them by their content hash
    pushes = [ln for ln in (tmp_path / "adb.log").read_text().splitlines() if " push " in ln]
    assert sum(ln.endswith(".gguf") for ln in pushes) == 1 and sum("llama-bench" in ln for ln in pushes) == 1
    assert sum("libggml.so" in ln for ln in pushes) == 1 and list((remote / "models").glob("*/.complete"))


def test_transport_faults_are_one_line(tmp_path, monkeypatch, slm_env):
    from slmbench.contracts import load_profile
    from slmbench.executors.adb import run_job_adb
    _fake_phone(tmp_path, monkeypatch)
    prof = load_profile("phone-fake")
    (lat,) = _jobs(tmp_path, [LAT])
    monkeypatch.setenv("FAKE_PHONE_GONE", "1")
    res = run_job_adb(lat, prof, tmp_path / "logs")
    assert res.status == "lost" and "no devices" in res.error and "\n" not in res.error
    monkeypatch.delenv("FAKE_PHONE_GONE")
    (tmp_path / "fake-llama-build" / "llama-bench").write_text("#!/bin/sh\necho 'error: unknown model arch' >&2\n"
                                                                "exit 1\n")
    res = run_job_adb(lat, prof, tmp_path / "logs")  # a new build (new hash): pushed again, then it fails
    assert res.status == "error" and "llama-bench failed on the phone: error: unknown model arch" in res.error
    (torch_job,) = _jobs(tmp_path, [LAT], backend="torch")
    res = run_job_adb(torch_job, prof, tmp_path / "logs")
    assert res.status == "unsupported" and "llamacpp" in res.error


def test_adb_profile_validation(tmp_path, monkeypatch):
    import yaml
    from slmbench.contracts import load_profile
    from slmbench.errors import UserError
    devs = tmp_path / "devices"
    devs.mkdir()
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devs))
    (devs / "p.yaml").write_text(yaml.safe_dump({"name": "p", "adapter": "adb", "extra": {"serial": "X"}}))
    with pytest.raises(UserError) as e:
        load_profile("p")
    assert "p.yaml" in e.value.line() and "exactly one of llama_build_dir" in e.value.line()


LLAMA_TOOLS = Path(os.environ.get("SLMBENCH_LLAMA_TOOLS", "~/.cache/slmbench/llama-tools/bin")).expanduser()


@pytest.mark.skipif(not all((LLAMA_TOOLS / t).is_file() for t in ("llama-bench", "llama-perplexity")),
                    reason=f"no llama-bench/llama-perplexity built in {LLAMA_TOOLS} (SLMBENCH_LLAMA_TOOLS)")
@pytest.mark.skipif(not os.environ.get("SLMBENCH_DATA_DIR"), reason="needs $SLMBENCH_DATA_DIR (its perplexity text)")
def test_transport_with_real_llama_tools(tmp_path, monkeypatch, slm_env):
    """The same path with llama.cpp's REAL tools (built from the llama.cpp that llama-cpp-python vendors) run by the
    FAKE phone on this machine: their real output goes through the parsers."""
    from slmbench.contracts import load_profile
    from slmbench.executors.adb import run_job_adb
    _fake_phone(tmp_path, monkeypatch, tools=LLAMA_TOOLS)
    prof = load_profile("phone-fake")
    lat, ppl = _jobs(tmp_path, [LAT, PPL])
    res = run_job_adb(lat, prof, tmp_path / "logs")
    assert res.status == "ok", res.error
    rows = {m["name"]: m for m in res.metrics}
    assert rows["decode_tok_s"]["value"] > 0 and rows["prefill_tok_s"]["value"] > 0
    assert rows["decode_tok_s"]["labels"] == {"test": "tg4"} and rows["decode_tok_s"]["n"] == 2
    res = run_job_adb(ppl, prof, tmp_path / "logs")
    assert res.status == "ok", res.error
    ppl_row = {m["name"]: m for m in res.metrics}["ppl"]
    print(f"\n  real tools on the fake phone: decode {rows['decode_tok_s']['value']:.1f} tok/s, "
          f"ppl {ppl_row['value']:.2f} ± {ppl_row['spread']:.2f}")
    assert 1 < ppl_row["value"] < 1000 and ppl_row["spread"] > 0


def test_parsers_on_real_llama_cpp_outputs():
    """REAL outputs, recorded on this machine (x86, not a phone) from llama-bench and llama-perplexity built from the
    llama.cpp source llama-cpp-python 0.3.36 vendors, on SmolLM2-135M Q4_1 (2 threads): the parsers read what the
    tools really print, not only the documented format."""
    import json
    bench = json.loads(read("llama_bench_smollm2.json"))
    rows = {r.name: r for r in llama_bench_rows(read("llama_bench_smollm2.json"))}
    for rec, name in zip(sorted(bench, key=lambda r: r["n_gen"]), ("prefill_tok_s", "decode_tok_s")):
        r = rows[name]
        assert r.value == pytest.approx(rec["avg_ts"]) and r.samples == pytest.approx(rec["samples_ts"])
        assert r.n == len(rec["samples_ts"]) and "2 threads" in r.note
    ppl = {r.name: r for r in perplexity_rows(read("llama_perplexity_smollm2.txt"))}
    assert ppl["ppl"].value == pytest.approx(20.2805) and ppl["ppl"].spread == pytest.approx(3.16939)
    assert ppl["ppl_chunks"].value == 5
