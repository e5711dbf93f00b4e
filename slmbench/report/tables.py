"""The one table renderer (Markdown and HTML, every cell escaped) and the run's summary table: one row per model
variant × device, one column per headline metric, each cell value ± spread, unit and (when not measured) its
source."""
from __future__ import annotations

import html

import pandas as pd

from .. import fmt
from ..analysis.rows import params_name, variant_name  # noqa: F401  (report modules import them from here)

# (metric, column title) in display order; a column appears only if some row has it.
HEADLINE = [
    ("load_s", "load s"), ("ttft_ms", "TTFT ms"), ("prefill_tok_s", "prefill tok/s"),
    ("decode_tok_s", "decode tok/s"), ("itl_p50_ms", "ITL p50 ms"), ("itl_p99_ms", "ITL p99 ms"),
    ("decode_roofline_frac", "roofline"), ("peak_mem_mb", "peak MB"), ("weights_mb", "weights MB"), ("file_mb", "file MB"),
    ("kv_bytes_per_token", "KV B/tok"), ("prefill_j_per_token", "prefill J/tok"),
    ("decode_j_per_token", "decode J/tok"),
]
FAILURE_HEADER = ["model", "variant", "device", "scenario", "status", "error"]


def md_escape(s) -> str:
    """Safe inside a GitHub Markdown table cell: no HTML, no cell breaks, no code spans or links."""
    s = html.escape(str(s), quote=False)
    for c in "|`*[]":  # not "_": intraword underscores (metric names) are literal in GitHub Markdown
        s = s.replace(c, "\\" + c)
    return s.replace("\n", " ")


def md_table(header, rows) -> str:
    out = ["| " + " | ".join(map(md_escape, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(md_escape, r)) + " |" for r in rows]
    return "\n".join(out)


def html_table(header, rows, raw_cols=(), row_attrs=None) -> str:
    """Every cell escaped (strings from suites, errors and model names reach the page), except the columns in
    `raw_cols`, which the caller built as HTML (links). `row_attrs`: per row, a dict of attributes (id, style).
    In a scroll box: a wide table scrolls by itself, not the page."""
    th = "".join(f"<th>{html.escape(str(x))}</th>" for x in header)
    trs = []
    for i, r in enumerate(rows):
        attrs = "".join(f" {k}='{html.escape(str(v))}'" for k, v in (row_attrs[i] if row_attrs else {}).items())
        tds = "".join(f"<td>{c if j in raw_cols else html.escape(str(c))}</td>" for j, c in enumerate(r))
        trs.append(f"<tr{attrs}>{tds}</tr>")
    return f"<div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{''.join(trs)}</tbody></table></div>"


def cell(r: pd.Series) -> str:
    if fmt.missing(r["value"]):
        return "n/a"
    s = fmt.with_spread(r["value"], r.get("spread"))
    if r.get("source") and r["source"] != "measured":
        s += f" ({r['source'][:3]}.)"
    return s


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
        row = [model, var, dev]
        for m, _ in present:
            sub = g[g["metric"] == m]
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
