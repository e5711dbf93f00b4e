"""The cloud-vs-device cost section (slmbench.analysis.cost) as Markdown, HTML and JSON, with every assumption,
price date and profile source printed beside it — a reader can redo each number by hand."""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .. import fmt
from .html import esc, ul
from .tables import html_table, md_table

TITLE = "Cloud vs device: cost per token"

COLUMNS = [  # (key, title); "vendor pays" and "user pays" are separate on purpose: who pays is the question
    ("model", "model"), ("variant", "variant"), ("device", "device"), ("source", "source"),
    ("decode_tok_s", "decode tok/s"), ("prefill_tok_s", "prefill tok/s"), ("ttft_ms", "TTFT ms"),
    ("quality", "quality (acc_norm, else acc)"), ("quality_shared", "quality on the shared benchmark"),
    ("api_usd_per_m", "vendor pays: API $/1M tok"),
    ("electricity_usd_per_m", "user pays: electricity $/1M tok"),
    ("battery_wear_usd_per_m", "user pays: battery wear $/1M tok"),
    ("hardware_usd_per_m", "user pays: hardware $/1M tok"),
    ("marginal_usd_per_m", "marginal (owned device) $/1M tok"),
    ("dedicated_usd_per_m", "dedicated (device bought for this) $/1M tok"),
    ("j_per_token", "J/token"), ("battery_pct_per_1k", "battery %/1k tok"),
    ("usd_per_correct", "$ per 1k correct answers"),
]


def _cell(r: dict, key: str) -> str:
    v = r.get(key)
    proj = " (proj.)" if r.get("source") == "projected" and key not in ("model", "variant", "device", "source",
                                                                         "api_usd_per_m", "quality", "quality_shared") else ""
    if key in ("model", "variant", "device", "source"):
        return str(v)
    if key == "quality":
        return "n/a" if v is None else f"{v:.3f}"
    if key == "quality_shared":  # a cloud model's figure is its published one, never measured here
        if v is None:
            return "not provided" if r["kind"] == "cloud (price table)" else "n/a"
        return f"{v:.3f}" + (" (published)" if r["kind"] == "cloud (price table)" else "")
    if key == "usd_per_correct":  # per 1,000 answers: readable money
        if r.get("usd_per_correct_is_bound"):
            pa = r.get("usd_per_answer")
            return f"≥ {fmt.money(pa * 1000)} (acc not measured)" if pa else "n/a"
        return fmt.money(v * 1000) + proj
    if key == "api_usd_per_m":
        return fmt.money(v) + (" (self-hosted: server electricity, est.)" if r.get("self_hosted") else "")
    if key.endswith("usd_per_m"):
        return (fmt.money(v) + proj) if v is not None else "n/a"
    return fmt.num(v) + proj if not fmt.missing(v) else "n/a"


def table_rows(ct) -> tuple[list[str], list[list[str]]]:
    order = {"device (measured host)": 0, "device (projected)": 1, "cloud (measured endpoint)": 2,
             "cloud (price table)": 3}
    rows = sorted(ct.rows, key=lambda r: (order.get(r["kind"], 9), r["device"] if r["kind"] != "device (projected)"
                                          else "", r["device"], r["model"], str(r["variant"])))
    return [t for _, t in COLUMNS], [[_cell(r, k) for k, _ in COLUMNS] for r in rows]


def break_even_rows(ct) -> tuple[list[str], list[list[str]]]:
    """One row per device (its fastest variant), one column per priced cloud model: "M tokens (days)", with a
    mark where the device pays for itself within its lifetime at the stated duty cycle."""
    fastest, priced = {}, {b["device"] for b in ct.break_even}
    for r in ct.rows:
        if r["kind"].startswith("device") and r.get("decode_tok_s") and r["device"] in priced:
            if r["device"] not in fastest or r["decode_tok_s"] > fastest[r["device"]]["decode_tok_s"]:
                fastest[r["device"]] = r
    clouds = sorted({b["cloud"] for b in ct.break_even})
    cell = {(b["device"], b["model"], b["variant"], b["cloud"]): b for b in ct.break_even}
    out = []
    for dev, r in fastest.items():
        row = [dev, f"{r['model']} [{r['variant']}]"]
        for c in clouds:
            b = cell.get((dev, r["model"], r["variant"], c))
            if not b:
                row.append("n/a")
            elif not math.isfinite(b["break_even_m_tokens"]):
                row.append("never")
            else:
                row.append(f"{fmt.num(b['break_even_m_tokens'])} M ({fmt.num(b['days_at_duty'])} d)"
                           + (" ✓" if b["within_lifetime"] else ""))
        out.append(row)
    return ["device", "variant (fastest)"] + clouds, out


def cost_ranges(a) -> list[str]:
    from ..analysis.cost import RANGES
    return [k for k in {**RANGES, **a.ranges} if a.range_of(k)]


def assumptions_lines(ct) -> list[str]:
    a = ct.assumptions
    lines = [
        f"Blend: {a.blend_text()} — every $/1M tok, J/token and battery figure is for tokens in this mix: "
        f"{a.f_in:.0%} prompt tokens (at prefill speed / input price) and {a.f_out:.0%} generated tokens (at decode "
        f"speed / output price).",
        f"One answer = {a.answer_prompt_tokens} prompt + {a.answer_output_tokens} generated tokens; $ per 1k correct "
        "answers = 1,000 × $ per answer ÷ accuracy (for a cloud model whose accuracy was not measured here it is shown as a "
        "lower bound: accuracy ≤ 1).",
        f"Electricity: ${a.electricity_usd_per_kwh:g}/kWh unless a profile sets its own; hardware is amortised over "
        f"its lifetime at {a.duty_hours_per_day:g} h/day of generation (a device bought anyway costs the user only "
        "the electricity and battery columns).",
        f"Framings: marginal = electricity + battery wear (the device is already owned; wear = Wh drawn × "
        f"${a.battery_replacement_usd:g} ÷ ({a.battery_cycles:g} cycles × battery Wh)); dedicated = electricity + "
        f"the device's price amortised at the duty above; the vendor's API bill is zero on a device by definition. "
        f"The cloud side is its list price in every framing. Assumed inputs and their plausible ranges: "
        + "; ".join(f"{k} {a.range_of(k)[0]:g}-{a.range_of(k)[1]:g}" for k in cost_ranges(a)) + ".",
        "Projected rows: decode = (host decode tok/s × bytes/token ÷ host bandwidth) × profile bandwidth ÷ "
        "bytes/token; prefill = host prefill × profile peak FP32 ÷ host peak FP32; energy = profile active W × "
        "seconds/token. Projections, not measurements.",
        "Measured host energy is an estimate (no RAPL counter on this VM): active W = threads × per-core W of the "
        "host profile; the host profile has no purchase price (a VM), so its hardware column is n/a.",
        "Cloud rows: list prices only — their energy, battery drain on the phone's radio and speed were not measured "
        "(no network from this machine); the vendor pays the API bill, the user's device does almost no work.",
    ]
    lines += [f"{k}: {v}" for k, v in a.sources.items()]
    return lines


def quality_lines(ct) -> list[str]:
    seen, out = set(), []
    for r in ct.rows:
        key = (r["model"], r["variant"], r["quality_text"])
        if r.get("quality_text") and key not in seen and r["kind"] != "device (projected)":
            seen.add(key)
            out.append(f"{r['model']} [{r['variant']}] @{r['device']}: {r['quality_text']}")
    return out + ["Projected rows carry the quality measured on the host: the same file on the same runtime computes "
                  "the same answers on another device."]


def price_lines(ct) -> list[str]:
    """Each priced cloud model: its blended price and source, and its published quality on the shared benchmark
    (setting and citation; source `published`, never measured here) or "not provided"."""
    return [f"{r['variant']}/{r['model']}: {fmt.money(r['api_usd_per_m'])}/1M blended tok — {r.get('price_source')}"
            f"; quality {r.get('quality_text') or 'not provided'}"
            for r in ct.rows if r["kind"] == "cloud (price table)"]


def profile_lines(ct) -> list[str]:
    profs = ct.profiles
    used = {r["device"] for r in ct.rows if r["kind"] == "device (projected)"}
    out = []
    for n in sorted(used):
        p = profs[n]
        out.append(f"{n} ({p.description}): " + "; ".join(f"{k} = {getattr(p, k)} — {v}" for k, v in p.sources.items()
                                                             if hasattr(p, k)))
    return out


@dataclass
class CostSection:
    """The report section: the table, break-even, and every figure's source."""
    ct: object  # analysis.cost.CostTable
    key: str = "cost"
    title: str = TITLE

    def _lists(self) -> list[tuple[str, list[str]]]:
        ct = self.ct
        return [(t, xs) for t, xs in (
            ("Quality (the tasks behind the acc column)", quality_lines(ct)), ("Assumptions", assumptions_lines(ct)),
            ("Prices (vendor pays)", price_lines(ct)), ("Device profiles (sources of every figure)", profile_lines(ct)),
            ("Notes", ct.notes)) if xs or t.startswith(("Quality", "Assumptions", "Prices"))]

    def markdown(self) -> str:
        h, rows = table_rows(self.ct)
        parts = [f"## {self.title}", "", md_table(h, rows), ""]
        bh, brows = break_even_rows(self.ct)
        if brows:
            parts += [f"### {BREAK_EVEN}", "", BREAK_EVEN_NOTE.format(self.ct.assumptions.duty_hours_per_day), "",
                      md_table(bh, brows), ""]
        for t, xs in self._lists():
            parts += [f"### {t}", ""] + [f"- {x}" for x in xs] + [""]
        return "\n".join(parts)

    def html(self) -> str:
        parts = [f"<h2>{esc(self.title)}</h2>", html_table(*table_rows(self.ct))]
        bh, brows = break_even_rows(self.ct)
        if brows:
            parts += [f"<h3>{BREAK_EVEN}</h3>", html_table(bh, brows)]
        parts += [f"<h3>{esc(t)}</h3>" + ul(xs) for t, xs in self._lists()]
        return "<section class='cost'>" + "".join(parts) + "</section>"

    def json(self) -> dict:
        ct = self.ct
        return {"rows": ct.rows, "break_even": ct.break_even, "notes": ct.notes,
                "assumptions": ct.assumptions.model_dump()}


BREAK_EVEN = "Break-even: buying the device for this work vs paying the API"
BREAK_EVEN_NOTE = ("Blended tokens after which the device's price plus its electricity costs less than the cloud bill "
                   "(price ÷ (cloud $/token − electricity $/token)), and the days that takes at {:g} h/day of "
                   "generation; ✓ = within the device's lifetime.")


def to_markdown(ct) -> str:
    return CostSection(ct).markdown()


def to_html(ct) -> str:
    return CostSection(ct).html()


def has_endpoint(df: pd.DataFrame, profiles: dict) -> bool:
    """Did the run measure an endpoint (a device with adapter `cloud`)? Then its report carries the cost section."""
    return any(getattr(profiles.get(d), "adapter", None) == "cloud" for d in set(df["device"]))


def section(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None,
            force: bool = False) -> CostSection | None:
    """The cost section when the run measured an endpoint, or always with `force` (`slmbench report --cost`)."""
    from ..analysis.cost import build, load_profiles
    profs = load_profiles()
    if not (force or has_endpoint(df, profs)):
        return None
    return CostSection(build(df, profiles=profs, infos=infos, manifest=manifest))
