"""Projection vs measurement: a device that has both a profile (figures a projection can use) and rows measured on
the device itself (an `ssh` board, an `adb` phone) is projected from the host the same way the cost table projects a
profile-only device (analysis.cost.project), and the projection is set beside the measurement with its error.

    decode'  = host decode_roofline_frac × profile memory_bandwidth_gbs ÷ bytes/token      (bandwidth-bound)
    prefill' = host prefill tok/s × profile compute_gflops ÷ host compute_gflops           (compute-bound)
    error    = projected ÷ measured − 1     (+: the projection was optimistic)

Pure: rows, profiles and job infos in, dicts out (no I/O). Hosts are the devices measured here (adapter cpu/cuda);
a device is compared when its adapter runs jobs elsewhere and it has measured rows of the same model and variant.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from .cost import project
from .rows import variant_name, weights_per_token_bytes

HOST_ADAPTERS = ("cpu", "cuda")
NOT_MEASURED_THERE = ("cpu", "cuda", "profile", "cloud")  # projected-only, the host itself, or an HTTP endpoint


def _row(g: pd.DataFrame, metric: str):
    """The first ok row of `metric` with a value, the latency scenario's first (other scenarios, e.g. an adb
    device's llama-bench rows, when it has none)."""
    sub = g[(g["metric"] == metric) & (g["status"] == "ok") & g["value"].notna()]
    lat = sub[sub["scenario"] == "latency"]
    sub = lat if len(lat) else sub
    return sub.iloc[0] if len(sub) else None


def _spread(r) -> tuple[float | None, str | None]:
    s = r.get("spread")
    return (None, None) if s is None or pd.isna(s) else (float(s), r.get("spread_kind"))


def compare(df: pd.DataFrame, profiles: dict, infos: dict | None = None,
            host_compute_gflops: float | None = None) -> list[dict]:
    """One dict per (device measured on itself, host, model, variant, metric): projected, measured, error; or,
    where a projection cannot be made, the reason (`why`)."""
    if df.empty:
        return []
    infos = infos or {}
    df = df.assign(vname=df["variant"].map(variant_name))
    groups = list(df.groupby(["model", "vname", "device"], sort=False))
    hosts: dict = {}
    for (model, vname, dev), g in groups:
        p = profiles.get(dev)
        if p is None or p.adapter not in HOST_ADAPTERS:
            continue
        dec, pre, frac = _row(g, "decode_tok_s"), _row(g, "prefill_tok_s"), _row(g, "decode_roofline_frac")
        bpt = weights_per_token_bytes(infos.get(frac["job_id"])) if frac is not None else None
        if dec is not None:
            hosts.setdefault((model, vname), []).append(
                {"device": dev, "decode": float(dec["value"]), "prefill": float(pre["value"]) if pre is not None
                 else None, "frac": float(frac["value"]) if frac is not None else None, "bpt": bpt,
                 "compute": p.compute_gflops or host_compute_gflops})
    out = []
    for (model, vname, dev), g in groups:
        p = profiles.get(dev)
        if p is None or p.adapter in NOT_MEASURED_THERE:
            continue
        measured = {m: _row(g, m) for m in ("decode_tok_s", "prefill_tok_s")}
        measured = {m: r for m, r in measured.items() if r is not None and r.get("source") == "measured"}
        if not measured:
            continue
        for h in hosts.get((model, vname), []):
            base = {"model": model, "variant": vname, "device": dev, "host": h["device"]}
            why = None
            if not p.memory_bandwidth_gbs:
                why = f"profile {dev} has no memory_bandwidth_gbs: nothing to project decode from"
            elif not (h["frac"] and h["bpt"]):
                why = f"no roofline on {h['device']} (bandwidth or bytes/token not recorded): not projected"
            pj = {"decode_tok_s": None, "prefill_tok_s": None} if why else \
                project(h["decode"], h["prefill"], h["frac"], h["bpt"], h["compute"], p)
            for m, r in measured.items():
                spread, kind = _spread(r)
                row = {**base, "metric": m, "measured": float(r["value"]), "spread": spread, "spread_kind": kind,
                       "n": int(r["n"]) if r.get("n") is not None and not pd.isna(r["n"]) else None,
                       "projected": pj[m], "error": None, "why": why}
                if pj[m] is None and not why:
                    row["why"] = ("no compute_gflops in the host's or the device's profile: prefill not projected"
                                  if m == "prefill_tok_s" else "not projected")
                elif pj[m] is not None and row["measured"] > 0:
                    row["error"] = pj[m] / row["measured"] - 1
                    row["basis"] = _basis(m, h, p)
                out.append(row)
    return out


def _basis(metric: str, h: dict, p) -> str:
    if metric == "decode_tok_s":
        return (f"{h['device']} roofline fraction {h['frac']:.3g} × {p.name} {p.memory_bandwidth_gbs:g} GB/s ÷ "
                f"{h['bpt'] / 1e6:.4g} MB/token")
    return (f"{h['device']} prefill {h['prefill']:.4g} tok/s × {p.name} {p.compute_gflops:g} GFLOP/s ÷ "
            f"{h['compute']:g} GFLOP/s")


def within_noise(row: dict) -> bool | None:
    """Whether |projected − measured| is inside the measurement's own 95% interval (stderr × 1.96, or a CI half
    width); None when the measurement carries no spread."""
    if row.get("error") is None or not row.get("spread"):
        return None
    half = row["spread"] * (1.96 if row.get("spread_kind") == "stderr" else 1.0)
    return abs(row["projected"] - row["measured"]) <= half


def as_json(rows: list[dict]) -> list[dict]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in json.loads(json.dumps(rows, default=str))]
