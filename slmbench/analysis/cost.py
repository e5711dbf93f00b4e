"""Cost of a token, cloud vs device: money, energy, battery, time, and cost per *correct* answer.

Inputs: a run's tidy rows (measured latency / accuracy / serving rows), device profiles (devices/*.yaml: the
measured host, and phones, boards, laptops that are not here), price tables (devices/cloud/*.yaml) and the
stated assumptions (devices/cloud/_assumptions.yaml: blend ratio, electricity price, duty cycle, answer size).

The workload unit is one *blended* token: `blend_in` prompt tokens per `blend_out` generated ones (3:1 unless
the assumptions say otherwise), the ratio cloud list prices are usually blended at. So on a device
    seconds/token = (f_in / prefill tok/s + f_out / decode tok/s),   f_in = in/(in+out), f_out = out/(in+out)
    J/token       = active W × seconds/token
    battery %/1k  = 1000 × J/token ÷ (battery Wh × 3600) × 100
    $ electricity = J/token × 1e6 / 3.6e6 × $/kWh                    (per 1M tokens)
    $ hardware    = price ÷ (lifetime × 365 × duty h/day × 3600) × seconds/token × 1e6   (amortised)
and in the cloud $ = f_in × input price + f_out × output price (per 1M tokens).

Three framings, each its own row (the cloud side is its list price in every one: no hardware of the user's):
    marginal  = electricity + battery wear    (the device is already owned: what one more token costs)
    dedicated = electricity + hardware share  (a device bought for this work, amortised over duty h/day)
    API bill  = what the vendor pays a provider: 0 on the device by definition
battery wear $ = Wh drawn × replacement price ÷ (cycles × battery Wh). Every assumed input (duty, electricity
price, battery cycles and price, device price) is a suite parameter (a claim's `assumptions`), and RANGES gives
the plausible ends a verdict is also decided at (analysis.claims labels a verdict that flips there "by assumption").

Cloud answer quality is never measured here: a price entry may carry `published` scores (benchmark, setting, value,
citation), shown with source `published`, never as measured; absent, it reads "not provided".

Projection to a device that is not here (always labelled `projected`): batch-1 decode streams every weight once
per token, so it is bandwidth-bound. The host's efficiency e = decode tok/s × bytes/token ÷ host bandwidth (the
latency scenario's `decode_roofline_frac`) is assumed to carry over: decode' = e × bandwidth' ÷ bytes/token.
Prefill is compute-bound: prefill' = prefill × compute' ÷ host compute (same fraction of peak).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError
from ..settings import devices_dir
from .rows import job_threads, variant_name, weights_per_token_bytes


class Assumptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    blend_in: float = Field(3, ge=0)
    blend_out: float = Field(1, gt=0)
    answer_prompt_tokens: int = Field(300, ge=0, description="tokens of one question (cost per correct answer)")
    answer_output_tokens: int = Field(100, ge=1)
    electricity_usd_per_kwh: float = Field(0.165, ge=0, description="default where a profile gives none")
    duty_hours_per_day: float = Field(1.0, gt=0, le=24, description="hours/day of generation the hardware's "
                                      "price is charged to")
    host_compute_gflops: float | None = Field(None, gt=0, description="peak FP32 of the measured host's cores")
    host_device: str = "local-cpu"
    project_to: list[str] = Field(default_factory=list, description="profiles to project onto (default: all "
                                  "profile-adapter devices)")
    battery_cycles: float = Field(500, gt=0, description="full cycles to end of battery life (wear)")
    battery_replacement_usd: float = Field(100, ge=0, description="price of a battery replacement (wear)")
    quality_benchmark: str = Field("arc_challenge", description="the benchmark both sides share for quality")
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict, description="plausible [lo, hi] of an "
                                                   "assumed field; the verdict is also decided at each end")
    sources: dict[str, str] = Field(default_factory=dict)

    def range_of(self, name: str) -> tuple[float, float] | None:
        return tuple(self.ranges[name]) if name in self.ranges else RANGES.get(name)

    @property
    def f_in(self) -> float:
        return self.blend_in / (self.blend_in + self.blend_out)

    @property
    def f_out(self) -> float:
        return self.blend_out / (self.blend_in + self.blend_out)

    def blend_text(self) -> str:
        return f"{self.blend_in:g}:{self.blend_out:g} (prompt:generated)"


# Plausible ends of the assumed inputs (a claim's `assumptions.ranges` overrides): duty from a few minutes to a
# working day of generation; residential electricity from cheap to expensive markets; battery cycle life from a
# worn-fast to a long-life cell; battery replacement from a DIY part to a vendor repair.
RANGES: dict[str, tuple[float, float]] = {"duty_hours_per_day": (0.05, 8.0), "electricity_usd_per_kwh": (0.05, 0.40),
                                          "battery_cycles": (300, 1500), "battery_replacement_usd": (30, 150)}


class PublishedScore(BaseModel):
    """A cloud model's quality as its maker or a cited evaluation published it: never measured here."""
    model_config = ConfigDict(extra="forbid")
    benchmark: str = Field(description="e.g. arc_challenge")
    value: float = Field(ge=0, le=1, description="accuracy as a fraction")
    setting: str = Field(min_length=1, description="shots, prompt, metric (e.g. '25-shot, acc')")
    citation: str = Field(min_length=1, description="where it is published (paper, table, page, date)")


class PriceEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    input_usd_per_m: float = Field(ge=0)
    output_usd_per_m: float = Field(ge=0)
    date: str = Field(description="when the price was valid (YYYY-MM-DD or YYYY-MM)")
    source: str = Field(min_length=1)
    note: str = ""
    published: list[PublishedScore] = Field(default_factory=list, description="published quality, cited")

    def published_on(self, benchmark: str) -> PublishedScore | None:
        return next((p for p in self.published if p.benchmark == benchmark), None)


class PriceTable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: str
    currency: str = "USD"
    note: str = ""
    models: list[PriceEntry] = Field(min_length=1)


def cloud_dir() -> Path:
    return devices_dir() / "cloud"


def load_assumptions(path: Path | None = None) -> Assumptions:
    from ..plan import load_yaml, parse_model
    p = path or cloud_dir() / "_assumptions.yaml"
    return parse_model(Assumptions, load_yaml(p), str(p)) if p.is_file() else Assumptions()


def load_prices(d: Path | None = None) -> dict[str, tuple[PriceTable, PriceEntry]]:
    """'<provider>/<model>' -> (table, entry), from every devices/cloud/*.yaml not starting with '_'."""
    from ..plan import load_yaml, parse_model
    out = {}
    for f in sorted((d or cloud_dir()).glob("*.yaml")):
        if f.name.startswith("_"):
            continue
        t = parse_model(PriceTable, load_yaml(f), str(f))
        for e in t.models:
            out[f"{t.provider}/{e.model}"] = (t, e)
    return out


def load_profiles() -> dict:
    from ..adapters import DeviceProfile
    from ..plan import load_yaml, parse_model
    return {f.stem: parse_model(DeviceProfile, load_yaml(f), str(f)) for f in sorted(devices_dir().glob("*.yaml"))}


# --- the arithmetic (one screen; tests check it by hand) ---------------------------------------------------------

def seconds_per_token(a: Assumptions, prefill_tok_s: float | None, decode_tok_s: float) -> float:
    if a.f_in and not prefill_tok_s:
        return math.nan
    return (a.f_in / prefill_tok_s if a.f_in else 0.0) + a.f_out / decode_tok_s


def device_costs(a: Assumptions, s_per_tok: float, active_w: float | None, battery_wh: float | None,
                 price_usd: float | None, lifetime_years: float | None, usd_per_kwh: float) -> dict:
    j = active_w * s_per_tok if active_w else None
    hw_s = price_usd / (lifetime_years * 365 * a.duty_hours_per_day * 3600) if price_usd and lifetime_years else None
    elec = j * 1e6 / 3.6e6 * usd_per_kwh if j is not None else None
    wear = (j * 1e6 / 3600 * a.battery_replacement_usd / (a.battery_cycles * battery_wh)
            if j is not None and battery_wh else None)  # Wh per 1M tokens × $ per Wh of cycle life
    hw = hw_s * s_per_tok * 1e6 if hw_s else None
    return {"j_per_token": j,
            "battery_pct_per_1k": 1000 * j / (battery_wh * 3600) * 100 if j and battery_wh else None,
            "electricity_usd_per_m": elec, "battery_wear_usd_per_m": wear, "hardware_usd_per_m": hw,
            "marginal_usd_per_m": (elec or 0.0) + (wear or 0.0) if elec is not None else None,
            "dedicated_usd_per_m": (elec or 0.0) + hw if hw is not None and elec is not None else None}


def cloud_usd_per_m(a: Assumptions, e: PriceEntry) -> float:
    return a.f_in * e.input_usd_per_m + a.f_out * e.output_usd_per_m


def project(decode_tok_s: float, prefill_tok_s: float | None, roofline_frac: float, bytes_per_token: float,
            host_compute: float | None, profile) -> dict:
    """Host measurements → a profile. Decode: same fraction of the bandwidth roofline; prefill: same fraction of
    peak compute (None when either compute figure is missing)."""
    dec = roofline_frac * profile.memory_bandwidth_gbs * 1e9 / bytes_per_token
    pre = prefill_tok_s * profile.compute_gflops / host_compute if prefill_tok_s and host_compute and \
        profile.compute_gflops else None
    return {"decode_tok_s": dec, "prefill_tok_s": pre}


def break_even_tokens(hw_price: float, cloud_usd_per_tok: float, elec_usd_per_tok: float) -> float:
    """Tokens after which buying the device for this work costs less than the API: price / (cloud − electricity)."""
    gap = cloud_usd_per_tok - elec_usd_per_tok
    return hw_price / gap if gap > 0 else math.inf


# --- from the store to the table --------------------------------------------------------------------------------

@dataclass
class CostTable:
    rows: list[dict]
    break_even: list[dict]
    assumptions: Assumptions
    notes: list[str] = field(default_factory=list)
    profiles: dict = field(default_factory=dict, repr=False)  # name -> DeviceProfile, for the sources list


def _val(g: pd.DataFrame, metric: str, scenario: str | None = None):
    sub = g[(g["metric"] == metric) & (g["status"] == "ok")]
    if scenario:
        sub = sub[sub["scenario"] == scenario]
    sub = sub[sub["value"].notna()]
    return float(sub.iloc[0]["value"]) if len(sub) else None


def _quality(g: pd.DataFrame) -> tuple[float | None, str]:
    """Mean over tasks of acc_norm where the task reports it, else acc (the convention of the quality table)."""
    rows = g[g["metric"].isin(["acc", "acc_norm"]) & (g["status"] == "ok") & g["value"].notna()].copy()
    if rows.empty:
        return None, ""
    rows["task"] = [json.loads(x).get("task", "?") for x in rows["labels"]]
    acc = rows.sort_values("metric", ascending=False).drop_duplicates("task")  # acc_norm sorts before acc
    parts = []
    for _, r in acc.iterrows():
        se = f" ± {r['spread']:.3f} (stderr)" if r.get("spread") is not None and not pd.isna(r["spread"]) else ""
        parts.append(f"{r['task']} {r['metric']} {r['value']:.3f}{se}, n={int(r['n'] or 0)}")
    return float(acc["value"].mean()), "lm-eval: " + "; ".join(parts) + (" (mean used)" if len(parts) > 1 else "")


def _on_benchmark(g: pd.DataFrame, bench: str) -> float | None:
    """The variant's measured accuracy on the benchmark both sides share (acc_norm, else acc), None if not run."""
    rows = g[g["metric"].isin(["acc", "acc_norm"]) & (g["status"] == "ok") & g["value"].notna()]
    rows = rows[[json.loads(x).get("task") == bench for x in rows["labels"]]]
    if rows.empty:
        return None
    return float(rows.sort_values("metric", ascending=False).iloc[0]["value"])


def _knobs(vname: str) -> frozenset:
    """A variant name as a set of knob=value: equal whatever order the knobs were written in."""
    return frozenset(vname.split(","))


def _info(g: pd.DataFrame, infos: dict, scenario: str) -> dict:
    """What the group's `scenario` job recorded about itself (Store.job_info), {} when unknown."""
    ids = g.loc[g["scenario"] == scenario, "job_id"]
    return next((infos[j] for j in ids if j in infos), {})


@dataclass
class _Inputs:
    """Everything a cost row is computed from, besides the run's rows."""
    a: Assumptions
    profiles: dict
    prices: dict
    infos: dict  # job_id → the job's info (Store.job_info)
    manifest: dict | None
    quality_of: dict = field(default_factory=dict)  # (model, variant) → (quality, text), measured on the host

    @property
    def host(self):
        return self.profiles.get(self.a.host_device)

    @property
    def host_elec(self) -> float:
        h = self.host
        return h.electricity_usd_per_kwh if h and h.electricity_usd_per_kwh is not None else \
            self.a.electricity_usd_per_kwh

    def threads(self, g: pd.DataFrame, scenario: str, variant: dict, cores: int | None) -> int | None:
        return job_threads(_info(g, self.infos, scenario), variant, cores, self.manifest)


def build(df: pd.DataFrame, a: Assumptions | None = None, profiles: dict | None = None,
          prices: dict | None = None, infos: dict | None = None, manifest: dict | None = None) -> CostTable:
    """`infos`: job_id → the job's info (Store.job_info), for the threads it ran with and the bytes a decode step
    reads; `manifest`: the run's, for runs older than those records."""
    x = _Inputs(a or load_assumptions(), profiles if profiles is not None else load_profiles(),
                prices if prices is not None else load_prices(), infos or {}, manifest)
    df = df.copy()
    df["vname"] = df["variant"].map(variant_name)
    groups = list(df.groupby(["model", "vname", "device"], sort=False))
    rows, notes = [], []
    for (model, vname, dev), g in groups:  # measured host variants first: endpoints borrow their quality
        rows += _host_rows(x, model, vname, dev, g, notes)
    for (model, vname, dev), g in groups:
        rows += _endpoint_rows(x, model, vname, dev, g)
    rows += _price_rows(x)
    _totals(x.a, rows)
    return CostTable(rows, _break_even(x.a, rows, x.prices, x.profiles), x.a, notes, x.profiles)


def _host_rows(x: _Inputs, model: str, vname: str, dev: str, g: pd.DataFrame, notes: list) -> list[dict]:
    """A variant measured on the host (cpu/cuda adapter), then its projection onto each target profile."""
    a, prof = x.a, x.profiles.get(dev)
    if not prof or prof.adapter not in ("cpu", "cuda"):
        return []
    dec, pre = _val(g, "decode_tok_s", "latency"), _val(g, "prefill_tok_s", "latency")
    q, qtext = _quality(g)
    x.quality_of[(model, _knobs(vname))] = (q, qtext)
    if dec is None:
        return []
    shared = _on_benchmark(g, a.quality_benchmark)
    threads = x.threads(g, "latency", json.loads(g.iloc[0]["variant"]), prof.cores)
    active_w = prof.active_w or (prof.per_core_active_w * threads if prof.per_core_active_w and threads else None)
    base = {"model": model, "variant": vname, "quality": q, "quality_text": qtext, "api_usd_per_m": 0.0,
            "quality_shared": shared}
    out = [{**base, "device": dev, "kind": "device (measured host)", "source": "measured",
            "decode_tok_s": dec, "prefill_tok_s": pre, "ttft_ms": _val(g, "ttft_ms", "latency"),
            **device_costs(a, seconds_per_token(a, pre, dec), active_w, prof.battery_wh, prof.price_usd,
                           prof.lifetime_years, x.host_elec),
            "power_source": f"estimated: {threads} cores × {prof.per_core_active_w:g} W" if not prof.active_w
            and active_w else "profile"}]
    frac, bpt = _val(g, "decode_roofline_frac", "latency"), weights_per_token_bytes(_info(g, x.infos, "latency"))
    if not (frac and bpt):
        why = "no roofline rows (bandwidth not measured)" if not frac else "no bytes/token in the job's info"
        notes.append(f"{model} [{vname}]: {why}: not projected")
        return out
    targets = [x.profiles[n] for n in (a.project_to or sorted(x.profiles))
               if n in x.profiles and x.profiles[n].adapter == "profile"]
    for p in targets:
        if not p.memory_bandwidth_gbs:
            continue
        pj = project(dec, pre, frac, bpt, a.host_compute_gflops, p)
        spt = seconds_per_token(a, pj["prefill_tok_s"], pj["decode_tok_s"])
        elec = p.electricity_usd_per_kwh if p.electricity_usd_per_kwh is not None else a.electricity_usd_per_kwh
        out.append({**base, "device": p.name, "kind": "device (projected)", "source": "projected", **pj,
                    "ttft_ms": None, "power_source": "profile",
                    **device_costs(a, spt, p.active_w, p.battery_wh, p.price_usd, p.lifetime_years, elec)})
    return out


def _endpoint_rows(x: _Inputs, model: str, vname: str, dev: str, g: pd.DataFrame) -> list[dict]:
    """An endpoint measured through the cloud adapter (e.g. the local llama.cpp server standing in for a cloud
    model)."""
    a, prof = x.a, x.profiles.get(dev)
    if not prof or prof.adapter != "cloud":
        return []
    ex = prof.extra
    srv = g[g["scenario"] == "serving"]
    same = ex.get("same_weights_as") or {}
    q, qtext = _quality(g)
    if q is None and same:
        knobs = variant_name(json.dumps({k: v for k, v in same.items() if k != "model"}))
        q, qtext = x.quality_of.get((same.get("model", model), _knobs(knobs)), (None, ""))
        qtext = f"{qtext} (same weights, measured on the host)" if qtext else ""
    entry = x.prices.get(ex.get("price") or "")
    api = cloud_usd_per_m(a, entry[1]) if entry else None
    dec = _val(srv, "decode_tok_s") or _val(g, "decode_tok_s", "latency")
    pre = _val(g, "prefill_tok_s", "latency")
    ok = _val(srv, "requests_ok")
    fails = srv[(srv["metric"] == "requests_failed") & (srv["status"] == "ok")]["value"].sum()
    row = {"model": model, "variant": ex.get("stands_in_for") or vname, "device": dev,
           "kind": "cloud (measured endpoint)", "source": "measured", "quality": q, "quality_text": qtext,
           "decode_tok_s": dec, "prefill_tok_s": pre, "ttft_ms": _val(srv, "ttft_ms") or _val(g, "ttft_ms"),
           "e2e_ms": _val(srv, "e2e_ms"), "api_usd_per_m": api, "j_per_token": None, "battery_pct_per_1k": None,
           "electricity_usd_per_m": None, "hardware_usd_per_m": None,
           "requests": f"{int(ok or 0)} ok, {int(fails)} failed" if len(srv) else ""}
    host = x.host
    if entry and entry[0].provider == "local" and host and dec:
        # Self-hosted on this machine: no bill, but the operator pays the host's electricity (estimated from
        # the host profile's power at the endpoint's measured speed, HTTP included). Vendor side, not the user's.
        t = x.threads(g, "serving", {}, host.cores)
        w = host.active_w or (host.per_core_active_w * t if host.per_core_active_w and t else None)
        c = device_costs(a, seconds_per_token(a, pre, dec), w, None, None, None, x.host_elec)
        row.update(j_per_token=c["j_per_token"], api_usd_per_m=(api or 0) + (c["electricity_usd_per_m"] or 0),
                   self_hosted=True)
    return [row]


def _published(a: Assumptions, e: PriceEntry) -> dict:
    p = e.published_on(a.quality_benchmark)
    if p is None:
        return {"quality_published": None, "quality_shared": None,
                "quality_text": f"{a.quality_benchmark}: not provided"}
    return {"quality_published": p.value, "quality_shared": p.value,
            "quality_text": f"{p.benchmark} {p.value:.3f}, {p.setting} (published: {p.citation}; not measured here)"}


def _price_rows(x: _Inputs) -> list[dict]:
    """Price-table models: list prices only (not reachable from here), with published quality where cited."""
    return [{"model": e.model, "variant": t.provider, "device": "cloud", "kind": "cloud (price table)",
             "source": "price table", "quality": None, **_published(x.a, e), "decode_tok_s": None,
             "prefill_tok_s": None, "ttft_ms": None, "api_usd_per_m": cloud_usd_per_m(x.a, e),
             "j_per_token": None, "battery_pct_per_1k": None, "electricity_usd_per_m": None,
             "hardware_usd_per_m": None, "price_date": e.date, "price_source": e.source}
            for t, e in x.prices.values() if t.provider != "local"]


def _totals(a: Assumptions, rows: list[dict]) -> None:
    tokens_per_answer = a.answer_prompt_tokens + a.answer_output_tokens
    for r in rows:
        user = sum(x for x in (r.get("electricity_usd_per_m"), r.get("hardware_usd_per_m")) if x is not None)
        total = (r.get("api_usd_per_m") or 0.0) + user
        r["total_usd_per_m"] = total
        if r["kind"].startswith("cloud"):  # the cloud side: its bill in every framing (no hardware of the user's)
            r["marginal_usd_per_m"] = r["dedicated_usd_per_m"] = r.get("api_usd_per_m")
        q = r.get("quality")
        per_answer = total * tokens_per_answer / 1e6
        r["usd_per_answer"] = per_answer
        r["usd_per_correct"] = per_answer / q if q else None
        r["usd_per_correct_is_bound"] = not q  # ≥ per-answer cost: accuracy ≤ 1
        for f in ("marginal", "dedicated"):
            v = r.get(f"{f}_usd_per_m")
            r[f"usd_per_answer_{f}"] = v * tokens_per_answer / 1e6 if v is not None else None
            r[f"usd_per_correct_{f}"] = r[f"usd_per_answer_{f}"] / q if q and v is not None else None


def _break_even(a: Assumptions, rows: list[dict], prices: dict, profiles: dict) -> list[dict]:
    """Per device row with a hardware price: tokens after which buying it beats each priced cloud model."""
    out = []
    clouds = [(k, cloud_usd_per_m(a, e) / 1e6) for k, (t, e) in prices.items() if t.provider != "local"]
    for r in rows:
        p = profiles.get(r["device"])
        if not r["kind"].startswith("device") or not p or not p.price_usd or r.get("electricity_usd_per_m") is None:
            continue
        elec = r["electricity_usd_per_m"] / 1e6
        spt = seconds_per_token(a, r.get("prefill_tok_s"), r["decode_tok_s"])
        per_day = a.duty_hours_per_day * 3600 / spt if spt and not math.isnan(spt) else None
        for k, c in clouds:
            v = break_even_tokens(p.price_usd, c, elec)
            days = v / per_day if per_day and math.isfinite(v) else math.inf
            out.append({"model": r["model"], "variant": r["variant"], "device": r["device"], "cloud": k,
                        "break_even_m_tokens": v / 1e6, "days_at_duty": days,
                        "within_lifetime": days <= (p.lifetime_years or 0) * 365})
    return out


def check_sources(profile) -> list[str]:
    """Figures a cost table uses that the profile gives without a source."""
    used = ("memory_bandwidth_gbs", "compute_gflops", "active_w", "idle_w", "battery_wh", "price_usd",
            "lifetime_years", "electricity_usd_per_kwh")
    return [f for f in used if getattr(profile, f) is not None and f not in profile.sources]


def require_sources(profiles: dict) -> None:
    for name, p in profiles.items():
        missing = check_sources(p)
        if missing and p.adapter == "profile":
            raise UserError(f"figures without a source: {', '.join(missing)}", file=str(devices_dir() / f"{name}.yaml"),
                            field="sources")
