"""Cost arithmetic checked by hand, the shipped profiles and price tables, and the table built from store rows."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from slmbench.analysis import cost
from slmbench.adapters import DeviceProfile
from slmbench.report import cost as rc
from slmbench.store import ROW_COLS

A = cost.Assumptions(blend_in=3, blend_out=1, answer_prompt_tokens=300, answer_output_tokens=100,
                     electricity_usd_per_kwh=0.2, duty_hours_per_day=1.0, host_compute_gflops=400,
                     host_device="local-cpu", project_to=["phone-x"])


def test_arithmetic_by_hand():
    spt = cost.seconds_per_token(A, prefill_tok_s=400, decode_tok_s=100)
    assert spt == pytest.approx(0.75 / 400 + 0.25 / 100)  # 0.004375 s per blended token
    c = cost.device_costs(A, spt, active_w=10, battery_wh=20, price_usd=1000, lifetime_years=2, usd_per_kwh=0.2)
    assert c["j_per_token"] == pytest.approx(0.04375)
    assert c["battery_pct_per_1k"] == pytest.approx(1000 * 0.04375 / (20 * 3600) * 100)  # 0.0608 %
    assert c["electricity_usd_per_m"] == pytest.approx(0.04375 * 1e6 / 3.6e6 * 0.2)  # $0.00243
    assert c["hardware_usd_per_m"] == pytest.approx(1000 / (2 * 365 * 3600) * 0.004375 * 1e6)  # $1.66
    e = cost.PriceEntry(model="m", input_usd_per_m=0.15, output_usd_per_m=0.60, date="2024-07", source="s")
    assert cost.cloud_usd_per_m(A, e) == pytest.approx(0.2625)
    prof = DeviceProfile(name="p", adapter="profile", memory_bandwidth_gbs=50, compute_gflops=200)
    pj = cost.project(decode_tok_s=90, prefill_tok_s=400, roofline_frac=0.5, bytes_per_token=100e6,
                      host_compute=400, profile=prof)
    assert pj == {"decode_tok_s": pytest.approx(250.0), "prefill_tok_s": pytest.approx(200.0)}
    assert cost.break_even_tokens(1000, 0.2625e-6, 0.00243e-6) == pytest.approx(1000 / (0.2625e-6 - 0.00243e-6))
    assert math.isinf(cost.break_even_tokens(1000, 1e-9, 2e-9))  # electricity dearer than the API: never


def test_shipped_profiles_and_prices_carry_sources():
    profs = cost.load_profiles()
    kinds = {n.split("-")[0] for n, p in profs.items() if p.adapter == "profile"}
    assert {"phone", "board", "laptop"} <= kinds
    cost.require_sources(profs)  # raises on any figure without a source
    for n, p in profs.items():
        if p.adapter == "profile":
            assert p.memory_bandwidth_gbs and p.active_w and p.price_usd and p.lifetime_years, n
    prices = cost.load_prices()
    assert len({k.split("/")[0] for k in prices}) >= 3
    for k, (t, e) in prices.items():
        assert e.date[:4].isdigit() and e.source, k
    a = cost.load_assumptions()
    assert a.blend_in > 0 and set(a.project_to) <= set(profs)


def _row(metric, value, device="local-cpu", scenario="latency", variant=None, labels=None, note="", model="m"):
    r = dict.fromkeys(ROW_COLS)
    r.update(run_id="r", job_id=f"{device}{scenario}", model=model, device=device, scenario=scenario, metric=metric,
             value=value, status="ok", source="measured", labels=json.dumps(labels or {}), note=note,
             variant=json.dumps(variant or {"backend": "torch", "quantization": "none"}), params="{}")
    return r


def test_table_from_rows():
    profs = {"local-cpu": DeviceProfile(name="local-cpu", adapter="cpu", per_core_active_w=5, cores=2),
             "phone-x": DeviceProfile(name="phone-x", adapter="profile", memory_bandwidth_gbs=25, compute_gflops=200,
                                      active_w=5, battery_wh=18, price_usd=900, lifetime_years=3),
             "ep": DeviceProfile(name="ep", adapter="cloud", extra={"price": "openai/mini",
                                                                    "same_weights_as": {"model": "m"}})}
    prices = {"openai/mini": (cost.PriceTable(provider="openai", models=[
        cost.PriceEntry(model="mini", input_usd_per_m=0.15, output_usd_per_m=0.6, date="2024-07", source="page")]),
        cost.PriceEntry(model="mini", input_usd_per_m=0.15, output_usd_per_m=0.6, date="2024-07", source="page"))}
    df = pd.DataFrame([
        _row("decode_tok_s", 100), _row("prefill_tok_s", 400), _row("ttft_ms", 30),
        _row("decode_roofline_frac", 0.5),
        _row("decode_roofline_tok_s", 200, note="bandwidth 50.0 GB/s (x) ÷ weight bytes/token"),
        _row("acc", 0.9, scenario="accuracy", labels={"task": "t"}),
        _row("acc_norm", 0.5, scenario="accuracy", labels={"task": "t"}),  # preferred where the task has it
        _row("decode_tok_s", 80, device="ep", scenario="serving", variant={"backend": "openai"}),
        _row("requests_ok", 8, device="ep", scenario="serving", variant={"backend": "openai"}),
    ])
    infos = {"local-cpulatency": {"model": {"weights_per_token_bytes": 250e6}, "threads": 2}}  # as the worker stores
    ct = cost.build(df, A, profs, prices, infos)
    by = {(r["device"], r["kind"]): r for r in ct.rows}
    host = by[("local-cpu", "device (measured host)")]
    assert host["j_per_token"] == pytest.approx(10 * 0.004375)  # 2 cores × 5 W, estimated
    assert host["quality"] == 0.5 and host["api_usd_per_m"] == 0
    ph = by[("phone-x", "device (projected)")]
    assert ph["source"] == "projected"
    assert ph["decode_tok_s"] == pytest.approx(0.5 * 25e9 / 250e6)  # 50 tok/s
    assert ph["prefill_tok_s"] == pytest.approx(400 * 200 / 400)
    per_answer = (ph["electricity_usd_per_m"] + ph["hardware_usd_per_m"]) * 400 / 1e6
    assert ph["usd_per_correct"] == pytest.approx(per_answer / 0.5)
    ep = by[("ep", "cloud (measured endpoint)")]
    assert ep["quality"] == 0.5 and "same weights" in ep["quality_text"]
    assert ep["api_usd_per_m"] == pytest.approx(0.2625)
    cl = by[("cloud", "cloud (price table)")]
    assert cl["usd_per_correct_is_bound"] and cl["usd_per_answer"] == pytest.approx(0.2625 * 400 / 1e6)
    md = rc.to_markdown(ct)
    assert "vendor pays: API $/1M tok" in md and "user pays: hardware $/1M tok" in md
    assert "3:1 (prompt:generated)" in md and "(proj.)" in md and "≥ $0.105" in md  # per 1k answers, a bound
    assert "<table>" in rc.to_html(ct)
    assert any(b["device"] == "phone-x" and b["cloud"] == "openai/mini" for b in ct.break_even)


def test_a_projection_profile_never_runs_on_the_host():
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.errors import Unsupported
    with pytest.raises(Unsupported, match="projections"):
        make_adapter(load_profile("phone-galaxy-s24-ultra")).setup()


def test_threads_and_bytes_per_token_come_from_the_job_not_the_reader():
    """The job's own record decides (info.threads, info.model.weights_per_token_bytes); an older run without it
    falls back to the profile's cores, then to the CPUs of the machine that ran it (its manifest), never to the
    machine rendering the report. No bytes/token recorded: no projection, and a note says why."""
    prof = {"local-cpu": DeviceProfile(name="local-cpu", adapter="cpu", per_core_active_w=5),
            "phone-x": DeviceProfile(name="phone-x", adapter="profile", memory_bandwidth_gbs=25, active_w=5)}
    df = pd.DataFrame([_row("decode_tok_s", 100), _row("prefill_tok_s", 400), _row("decode_roofline_frac", 0.5)])
    spt = 0.75 / 400 + 0.25 / 100

    def host(infos=None, manifest=None):
        ct = cost.build(df, A, prof, {}, infos, manifest)
        return next(r for r in ct.rows if r["kind"] == "device (measured host)"), ct
    r, ct = host({"local-cpulatency": {"threads": 3, "model": {"weights_per_token_bytes": 100e6}}})
    assert r["j_per_token"] == pytest.approx(3 * 5 * spt) and "3 cores" in r["power_source"]
    assert any(x["device"] == "phone-x" for x in ct.rows)
    r, ct = host({"local-cpulatency": {"device": {"threads": 6}}})  # older runs: the cpu adapter's record
    assert r["j_per_token"] == pytest.approx(6 * 5 * spt)
    assert not any(x["device"] == "phone-x" for x in ct.rows) and "no bytes/token" in " ".join(ct.notes)
    r, _ = host(manifest={"host": {"logical_cpus": 64}})  # nothing recorded: the run's machine
    assert r["j_per_token"] == pytest.approx(64 * 5 * spt)


def _claim_rows():
    """A measured host variant (latency, roofline, ARC-Challenge accuracy) and its job info, as the store holds them."""
    df = pd.DataFrame([_row("decode_tok_s", 100), _row("prefill_tok_s", 400), _row("decode_roofline_frac", 0.5),
                       _row("acc_norm", 0.5, scenario="accuracy", labels={"task": "arc_challenge"})])
    return df, {"local-cpulatency": {"model": {"weights_per_token_bytes": 100e6}, "threads": 2}}


def test_framings_are_separate_rows_and_an_assumption_decided_verdict_is_labelled(tmp_path):
    """Shipped profiles and price tables: marginal/dedicated/API rows; a verdict that flips within the duty range is
    labelled "by assumption" (and drawn with the dashed badge), the API bill "by definition"."""
    from slmbench.analysis import claims as ac
    df, infos = _claim_rows()
    rows = ac.cost_rows(df, infos)
    get = lambda m, g: rows[(rows["metric"] == m) & rows["model"].str.fullmatch(g)]["value"]  # noqa: E731
    pi, cloud = "m/.*@board-raspberry-pi-5", ".*@cloud"
    assert (get("api_usd_per_m", pi) == 0).all() and (get("marginal_usd_per_m", cloud).values ==
                                                      get("api_usd_per_m", cloud).values).all()
    # the Pi's dedicated cost sits between the cloud's cheapest at 1 h/day and at 8 h/day: the duty decides it
    lo_duty = ac.cost_rows(df, infos, a=ac.assumptions_for({"duty_hours_per_day": 0.05}))
    hi_duty = ac.cost_rows(df, infos, a=ac.assumptions_for({"duty_hours_per_day": 8}))
    cmin = get("usd_per_correct_dedicated", cloud).min()
    sel = lambda r: r[(r["metric"] == "usd_per_correct_dedicated") & r["model"].str.fullmatch(pi)]["value"].iloc[0]  # noqa: E731
    assert sel(lo_duty) > cmin > sel(hi_duty)
    claim = ac.parse([{"id": "C8", "title": "t", "question": "q", "assumptions": {"duty_hours_per_day": 1.0},
                       "comparisons": [
                           {"metric": "usd_per_correct_dedicated", "better": "lower", "label": "dedicated",
                            "a": {"scenario": "cost", "model": "m/*@board-*"},
                            "b": {"scenario": "cost", "device": "cloud", "reduce": "min"}},
                           {"metric": "api_usd_per_m", "better": "lower", "primary": False,
                            "a": {"scenario": "cost", "model": "m/*@board-*"},
                            "b": {"scenario": "cost", "device": "cloud", "reduce": "min"}}]}])
    (_, res, v), = ac.evaluate(claim, df, infos=infos)
    assert res[0].basis.startswith("by assumption: duty_hours_per_day (0.05: ")
    assert res[1].basis == "by assumption: the API bill is zero on the device by definition"
    assert ac.claim_basis(res).startswith("by assumption")
    from slmbench.report import claims as rcl
    html = rcl.badge_html(v, ac.claim_basis(res))
    assert "b-assumed" in html and "by assumption" in html and "b-assumed" not in rcl.badge_html(v)
    assert rcl.badge_md(v, "by assumption: x").endswith("*(by assumption)*")
    # a bad assumption name is one line naming the field
    from slmbench.errors import UserError
    with pytest.raises(UserError, match="claims.assumptions.duty_hourz"):
        ac.assumptions_for({"duty_hourz": 1})


def test_cloud_quality_is_published_never_measured_and_not_provided_without_a_citation():
    a = cost.Assumptions(quality_benchmark="arc_challenge")
    e = cost.PriceEntry(model="x", input_usd_per_m=1, output_usd_per_m=2, date="2023-03", source="page",
                        published=[{"benchmark": "arc_challenge", "value": 0.963, "setting": "25-shot",
                                    "citation": "paper, table 2"}])
    row = cost._published(a, e)
    assert row["quality_shared"] == 0.963 and "published: paper, table 2; not measured here" in row["quality_text"]
    bare = cost._published(a, e.model_copy(update={"published": []}))
    assert bare["quality_shared"] is None and bare["quality_text"] == "arc_challenge: not provided"


def test_framings_by_hand():
    a = A.model_copy(update={"battery_cycles": 500, "battery_replacement_usd": 100})
    c = cost.device_costs(a, 0.01, 5, 18, 900, 3, 0.2)  # 0.05 J/token on an 18 Wh battery
    wh_per_m = 0.05 * 1e6 / 3600
    assert c["electricity_usd_per_m"] == pytest.approx(wh_per_m / 1000 * 0.2)
    assert c["battery_wear_usd_per_m"] == pytest.approx(wh_per_m * 100 / (500 * 18))
    assert c["marginal_usd_per_m"] == pytest.approx(c["electricity_usd_per_m"] + c["battery_wear_usd_per_m"])
    assert c["dedicated_usd_per_m"] == pytest.approx(c["electricity_usd_per_m"] + 900 / (3 * 365 * 3600) * 0.01 * 1e6)
    assert cost.device_costs(a, 0.01, 5, None, None, None, 0.2)["battery_wear_usd_per_m"] is None  # no battery
