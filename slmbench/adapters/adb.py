"""Android over adb: PARSERS ONLY, for now. They turn what the phone's own tools print into the same Metric rows
the host's scenarios emit (source "measured", note "... on the device"):

    llama-bench -o json                      prefill_tok_s (pp tests), decode_tok_s (tg tests), with samples
    llama-perplexity ... (its last line)     ppl with its ± (stderr), and the per-chunk running estimates
    dumpsys battery, before and after        battery level drop (%), charge used (mAh, from Charge counter),
                                             voltage, battery temperature rise (°C)
    dumpsys thermalservice, before and after thermal status and the hottest CPU/skin/battery sensor

Nothing here runs adb yet (no adapter class is registered: a phone profile stays `adapter: profile` until the
adb transport exists). The formats are those llama.cpp documents (tools/llama-bench/README.md, perplexity's
`Final estimate: PPL = X +/- Y`) and Android's dumpsys; UNCHECKED on a real phone.
"""
from __future__ import annotations

import json
import math
import re

from ..metrics import Metric

ON_DEVICE = "on the device"


class ParseError(ValueError):
    """Output that is not what the tool prints: one line saying what was expected."""


# --- llama-bench -o json ---------------------------------------------------------------------------------------

def llama_bench_rows(text: str) -> list[Metric]:
    """llama-bench's JSON array (one object per test) → prefill_tok_s / decode_tok_s rows, labelled by test."""
    try:
        tests = json.loads(text)
    except ValueError as e:
        raise ParseError(f"llama-bench output is not JSON (run it with -o json): {e}")
    if isinstance(tests, dict):
        tests = [tests]
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise ParseError("llama-bench JSON: expected an array of test objects")
    out = []
    for t in tests:
        try:
            n_prompt, n_gen = int(t["n_prompt"]), int(t["n_gen"])
            avg, sd = float(t["avg_ts"]), float(t.get("stddev_ts") or 0.0)
        except (KeyError, TypeError, ValueError) as e:
            raise ParseError(f"llama-bench JSON: a test lacks {e} (fields n_prompt, n_gen, avg_ts)")
        depth = int(t.get("n_depth") or 0)
        samples = [float(x) for x in t.get("samples_ts") or []]
        if n_gen == 0 and n_prompt > 0:
            name, labels = "prefill_tok_s", {"test": f"pp{n_prompt}"}
        elif n_prompt == 0 and n_gen > 0:
            name, labels = "decode_tok_s", {"test": f"tg{n_gen}"}
        else:  # -pg: prompt and generation together; llama-bench's t/s is over both
            name, labels = "pp_tg_tok_s", {"test": f"pp{n_prompt}+tg{n_gen}"}
        if depth:
            labels["depth"] = depth
        note = (f"llama-bench {t.get('build_commit', '?')}, {t.get('model_type', '?')}, {t.get('backends', '?')}, "
                f"{t.get('n_threads', '?')} threads, {ON_DEVICE}")
        n = len(samples) or 1  # llama-bench's stddev_ts over its repetitions → the mean's standard error
        se = sd / math.sqrt(n) if sd and n > 1 else None
        out.append(Metric(name, avg, "tok/s", n=n, spread=se, spread_kind="stderr" if se else None,
                          higher_is_better=True, samples=samples or None, labels=labels,
                          note=note + (f"; stddev {sd:.3g} tok/s" if sd else "")))
    return out


# --- llama-perplexity ------------------------------------------------------------------------------------------

_FINAL = re.compile(r"Final estimate:\s*PPL\s*=\s*([0-9.]+(?:e[+-]?\d+)?)\s*\+/-\s*([0-9.]+(?:e[+-]?\d+)?)")
_CHUNK = re.compile(r"\[(\d+)\]\s*([0-9.]+|nan|inf)")


def perplexity_rows(text: str) -> list[Metric]:
    """llama-perplexity's output → ppl (± its standard error) and the number of chunks it ran."""
    m = _FINAL.search(text)
    if not m:
        if re.search(r"\[\d+\]\s*nan", text):
            raise ParseError("llama-perplexity reported nan (broken weights or a bad quantization)")
        raise ParseError("no 'Final estimate: PPL = X +/- Y' line in llama-perplexity's output (did it finish?)")
    ppl, unc = float(m.group(1)), float(m.group(2))
    if not math.isfinite(ppl):
        raise ParseError(f"llama-perplexity's estimate is not finite: {m.group(1)}")
    chunks = [(int(i), v) for i, v in _CHUNK.findall(text)]
    n = max((i for i, _ in chunks), default=0)
    note = f"llama-perplexity, final estimate over {n or '?'} chunks, {ON_DEVICE}"
    rows = [Metric("ppl", ppl, "", n=n or 1, spread=unc, spread_kind="stderr", higher_is_better=False, note=note)]
    if n:
        rows.append(Metric("ppl_chunks", n, "chunks", note=f"llama-perplexity, {ON_DEVICE}"))
    return rows


# --- dumpsys battery / thermalservice, before and after --------------------------------------------------------

def parse_battery(text: str) -> dict:
    """`dumpsys battery` → {level, scale, voltage_mv, temperature_c, charge_counter_uah, status, powered}."""
    kv = {}
    for line in text.splitlines():
        k, sep, v = line.strip().partition(":")
        if sep:
            kv[k.strip().lower()] = v.strip()
    if "level" not in kv:
        raise ParseError("not `dumpsys battery` output (no 'level:' line)")

    def num(k, f=float):
        try:
            return f(kv[k])
        except (KeyError, ValueError):
            return None
    return {"level": num("level"), "scale": num("scale") or 100.0, "voltage_mv": num("voltage"),
            "temperature_c": (num("temperature") / 10.0) if num("temperature") is not None else None,
            "charge_counter_uah": num("charge counter"), "status": num("status", int),
            "powered": any(kv.get(f"{s} powered") == "true" for s in ("ac", "usb", "wireless", "dock"))}


_TEMP = re.compile(r"Temperature\{mValue=([-0-9.]+), mType=(-?\d+), mName=([^,]+), mStatus=(\d+)\}")
THERMAL_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin"}


def parse_thermal(text: str) -> dict:
    """`dumpsys thermalservice` → {status, temps: {name: (°C, type)}} from 'Current temperatures from HAL'
    (else the cached ones)."""
    st = re.search(r"Thermal Status:\s*(\d+)", text)
    if not st:
        raise ParseError("not `dumpsys thermalservice` output (no 'Thermal Status:' line)")
    part = text.split("Current temperatures from HAL:", 1)
    block = part[1] if len(part) == 2 else text
    temps = {}
    for v, typ, name, _ in _TEMP.findall(block):
        temps[name.strip()] = (float(v), THERMAL_TYPES.get(int(typ), f"type{typ}"))
    return {"status": int(st.group(1)), "temps": temps}


def battery_thermal_rows(bat_before: str, bat_after: str, th_before: str | None = None,
                         th_after: str | None = None, seconds: float | None = None) -> list[Metric]:
    """Before/after snapshots around a run → rows. Charge used comes from the fuel gauge's Charge counter (µAh);
    average power from it × mean voltage over `seconds`, only while unplugged (on a charger it is not the draw)."""
    a, b = parse_battery(bat_before), parse_battery(bat_after)
    rows = []
    plugged = a["powered"] or b["powered"]
    why = f"dumpsys battery before/after, {ON_DEVICE}" + ("; ON A CHARGER: not the phone's draw" if plugged else "")
    if a["level"] is not None and b["level"] is not None:
        rows.append(Metric("battery_level_drop_pct", (a["level"] - b["level"]) * 100.0 / a["scale"], "%",
                           higher_is_better=False, note=why + " (1% steps)"))
    if a["charge_counter_uah"] is not None and b["charge_counter_uah"] is not None:
        mah = (a["charge_counter_uah"] - b["charge_counter_uah"]) / 1000.0
        rows.append(Metric("battery_charge_used_mah", mah, "mAh", higher_is_better=False, note=why))
        if seconds and a["voltage_mv"] and b["voltage_mv"] and not plugged:
            v = (a["voltage_mv"] + b["voltage_mv"]) / 2 / 1000.0
            rows.append(Metric("battery_power_w", mah * 3.6 * v / seconds, "W", higher_is_better=False,
                               note=f"charge counter × mean voltage {v:.2f} V over {seconds:g} s, {ON_DEVICE}"))
    if a["temperature_c"] is not None and b["temperature_c"] is not None:
        rows.append(Metric("battery_temp_rise_c", b["temperature_c"] - a["temperature_c"], "°C",
                           higher_is_better=False, note=why))
    if th_before and th_after:
        ta, tb = parse_thermal(th_before), parse_thermal(th_after)
        rows.append(Metric("thermal_status", tb["status"], "", higher_is_better=False,
                           note=f"Android thermal status after the run (0 none … 6 shutdown; before: {ta['status']}), "
                                f"{ON_DEVICE}"))
        for kind in ("cpu", "skin"):
            after = [t for t, k in tb["temps"].values() if k == kind]
            before = [t for t, k in ta["temps"].values() if k == kind]
            if after and before:
                rows.append(Metric(f"{kind}_temp_max_c", max(after), "°C", higher_is_better=False,
                                   labels={"when": "after"}, note=f"hottest {kind} sensor after the run "
                                   f"(before: {max(before):.1f} °C), dumpsys thermalservice, {ON_DEVICE}"))
    return rows
