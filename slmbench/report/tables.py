"""The summary table: one row per model variant × device, one column per headline metric, each cell rendering
value ± spread, unit and (when not measured) its source."""
from __future__ import annotations

import html
import json

import pandas as pd

from ..metrics import fmt_num, fmt_spread

# (metric, column title) in display order; a column appears only if some row has it.
HEADLINE = [
    ("load_s", "load s"), ("ttft_ms", "TTFT ms"), ("prefill_tok_s", "prefill tok/s"),
    ("decode_tok_s", "decode tok/s"), ("itl_p50_ms", "ITL p50 ms"), ("itl_p99_ms", "ITL p99 ms"),
    ("decode_roofline_frac", "roofline"), ("peak_mem_mb", "peak MB"), ("weights_mb", "weights MB"), ("file_mb", "file MB"),
    ("kv_bytes_per_token", "KV B/tok"), ("prefill_j_per_token", "prefill J/tok"),
    ("decode_j_per_token", "decode J/tok"),
]


def variant_name(variant_json: str) -> str:
    from ..plan import Variant
    v = json.loads(variant_json)
    defaults = Variant().model_dump()
    diff = {k: x for k, x in v.items() if defaults.get(k) != x}
    return ",".join(f"{k}={x}" for k, x in diff.items()) or "default"


def cell(r: pd.Series) -> str:
    if r["value"] is None or pd.isna(r["value"]):
        return "n/a"
    s = fmt_num(r["value"])
    if r.get("spread") is not None and not pd.isna(r["spread"]) and r["spread"]:
        s += f" ± {fmt_spread(r['spread'])}"
    if r.get("source") and r["source"] != "measured":
        s += f" ({r['source'][:3]}.)"
    return s


def params_name(params_json: str) -> str:
    p = json.loads(params_json or "{}")
    return ",".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (list, dict)))


def summary(df: pd.DataFrame, metrics=HEADLINE) -> tuple[list[str], list[list[str]]]:
    """Pivot tidy rows into the headline table. Returns (header, rows) of strings."""
    ok = df[(df["status"] == "ok") & df["metric"].isin([m for m, _ in metrics])].copy()
    if ok.empty:
        return [], []
    ok["variant_name"] = ok["variant"].map(variant_name)
    present = [(m, t) for m, t in metrics if m in set(ok["metric"])]
    header = ["model", "variant", "device"] + [t for _, t in present]
    rows = []
    for (model, var, dev), g in ok.groupby(["model", "variant_name", "device"], sort=False):
        by = {m: g[g["metric"] == m] for m, _ in present}
        row = [model, var, dev]
        for m, _ in present:
            sub = by[m]
            if sub.empty:
                row.append("")
            elif len(sub) == 1:
                row.append(cell(sub.iloc[0]))
            else:  # several sweep points: show them all, labelled
                row.append("; ".join(f"{params_name(r['params'])}: {cell(r)}" for _, r in sub.iterrows()))
        rows.append(row)
    return header, rows


def failures(df: pd.DataFrame) -> list[list[str]]:
    bad = df[df["status"] != "ok"].drop_duplicates("job_id")
    return [[r["model"], variant_name(r["variant"]), r["device"], r["scenario"], r["status"], str(r["error"])]
            for _, r in bad.iterrows()]


def sources_note(df: pd.DataFrame) -> list[str]:
    """One line per non-measured figure kind, so no estimate is read as a counter."""
    notes = df[(df["source"] != "measured") & (df["status"] == "ok")][["metric", "source", "note"]]
    notes = notes.drop_duplicates(["metric", "source"])  # one line per kind; per-row notes stay in the rows
    return [f"{r['metric']}: {r['note']}" for _, r in notes.iterrows()]


def md_table(header, rows) -> str:
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    out = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(out)


def html_table(header, rows) -> str:
    """Every cell escaped: strings from suites, errors and model names reach the page."""
    th = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"
