"""Projection vs measurement (analysis/projection.py, report/device.py): the arithmetic by hand on rows shaped as the
store returns them. The same comparison on a real ssh-measured run: tests/test_ssh.py::test_rows_through_ssh..."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from slmbench.adapters import DeviceProfile
from slmbench.analysis.projection import compare, within_noise
from slmbench.report.device import section

VARIANT = json.dumps({"backend": "torch"})


def _row(device, metric, value, job="j1", spread=None, kind=None, n=5, source="measured", scenario="latency"):
    return {"run_id": "r", "job_id": job, "suite": "s", "model": "m", "variant": VARIANT, "device": device,
            "scenario": scenario, "params": "{}", "metric": metric, "labels": "{}", "value": value, "unit": "tok/s",
            "n": n, "spread": spread, "spread_kind": kind, "source": source, "higher_is_better": 1,
            "status": "ok", "error": None, "note": ""}


PROFILES = {"local-cpu": DeviceProfile(name="local-cpu", adapter="cpu", compute_gflops=200.0),
            "board": DeviceProfile(name="board", adapter="ssh", memory_bandwidth_gbs=10.0, compute_gflops=100.0,
                                   extra={"host": "h", "user": "u", "remote_workdir": "/w"}),
            "phone-profile": DeviceProfile(name="phone-profile", adapter="profile", memory_bandwidth_gbs=30.0)}


def test_projection_error_by_hand():
    df = pd.DataFrame([_row("local-cpu", "decode_tok_s", 50.0), _row("local-cpu", "prefill_tok_s", 400.0),
                       _row("local-cpu", "decode_roofline_frac", 0.25),
                       _row("board", "decode_tok_s", 20.0, job="j2", spread=1.0, kind="stderr"),
                       _row("board", "prefill_tok_s", 250.0, job="j2", spread=5.0, kind="ci95_median")])
    infos = {"j1": {"model": {"weights_per_token_bytes": 100e6}}}
    rows = {r["metric"]: r for r in compare(df, PROFILES, infos)}
    dec, pre = rows["decode_tok_s"], rows["prefill_tok_s"]
    # decode' = 0.25 × 10 GB/s ÷ 100 MB = 25 tok/s; measured 20 → +25%
    assert dec["projected"] == pytest.approx(25.0) and dec["error"] == pytest.approx(0.25)
    assert dec["host"] == "local-cpu" and "10 GB/s" in dec["basis"] and within_noise(dec) is False
    # prefill' = 400 × 100 ÷ 200 = 200 tok/s; measured 250 → −20%
    assert pre["projected"] == pytest.approx(200.0) and pre["error"] == pytest.approx(-0.2)
    assert "phone-profile" not in {r["device"] for r in rows.values()}  # projected-only: nothing to compare with
    s = section(df, infos, PROFILES)
    md = s.markdown()
    assert "+25.0%" in md and "-20.0%" in md and "(proj.)" in md and s.json()["data"][0]["device"] == "board"


def test_what_cannot_be_projected_says_why():
    no_bw = {**PROFILES, "board": PROFILES["board"].model_copy(update={"memory_bandwidth_gbs": None})}
    df = pd.DataFrame([_row("local-cpu", "decode_tok_s", 50.0), _row("board", "decode_tok_s", 20.0, job="j2")])
    (r,) = compare(df, no_bw, {})
    assert r["projected"] is None and r["error"] is None and "memory_bandwidth_gbs" in r["why"]
    (r,) = compare(df, PROFILES, {})  # no roofline rows on the host
    assert r["projected"] is None and "no roofline" in r["why"]
    assert "n/a" in section(df, {}, PROFILES).markdown()
    assert section(df[df["device"] == "local-cpu"], {}, PROFILES) is None  # nothing measured on a device: no section
