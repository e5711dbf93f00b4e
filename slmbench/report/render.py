"""Render a run: rich (terminal), Markdown (CI comments), HTML (self-contained, escaped), JSON."""
from __future__ import annotations

import html
import json

import pandas as pd

from .tables import failures, html_table, md_table, sources_note, summary


def to_rich(df: pd.DataFrame, title: str = "slmbench"):
    """Transposed for terminals: one row per metric, one column per model variant × device."""
    from rich.table import Table
    header, rows = summary(df)
    t = Table(title=title, show_lines=False)
    t.add_column("metric", style="bold")
    for r in rows:
        t.add_column(f"{r[0]}\n{r[1]}\n{r[2]}", overflow="fold")
    for i, h in enumerate(header[3:], start=3):
        t.add_row(h, *[r[i] for r in rows])
    return t


def sections(df: pd.DataFrame) -> list[tuple[str, str]]:
    """(Markdown, HTML) of each optional section whose rows the run holds: quality vs cost, speculative decoding,
    and the cloud-vs-device cost table when an endpoint was measured."""
    from . import cost, quality, speculative
    q_html, q_md = quality.quality_vs_cost(df)
    out = [(q_md, q_html), (speculative.to_markdown(df), speculative.to_html(df)), cost.section(df)]
    return [(md, h) for md, h in out if md or h]


def to_markdown(df: pd.DataFrame, run_id: str, manifest: dict) -> str:
    header, rows = summary(df)
    host = manifest.get("host", {})
    vers = manifest.get("versions", {})
    lines = [f"# slmbench run `{run_id}`", "",
             f"Host: {host.get('cpu_model', '?')}, {host.get('logical_cpus', '?')} CPUs, {host.get('ram_gb', '?')} GB; "
             f"torch {vers.get('torch', '?')}, transformers {vers.get('transformers', '?')}; "
             f"commit {(manifest.get('git') or {}).get('commit') or 'n/a'}", "",
             "Values are medians ± half-width of the 95% CI of the median (range when fewer than 6 repetitions).", ""]
    if rows:
        lines += [md_table(header, rows), ""]
    notes = sources_note(df)
    if notes:
        lines += ["**Not measured by a counter:**", ""] + [f"- {n}" for n in notes] + [""]
    for md, _ in sections(df):
        lines += [md, ""]
    fails = failures(df)
    if fails:
        lines += ["## Failed or unsupported jobs", "",
                  md_table(["model", "variant", "device", "scenario", "status", "error"], fails), ""]
    return "\n".join(lines)


def to_html(df: pd.DataFrame, run_id: str, manifest: dict, extra_html: str = "") -> str:
    header, rows = summary(df)

    parts = [f"<h1>slmbench run <code>{html.escape(run_id)}</code></h1>",
             "<p>Values are medians ± half-width of the 95% CI of the median.</p>", html_table(header, rows)]
    notes = sources_note(df)
    if notes:
        parts.append("<h2>Not measured by a counter</h2><ul>" +
                     "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    fails = failures(df)
    if fails:
        parts.append("<h2>Failed or unsupported jobs</h2>" +
                     html_table(["model", "variant", "device", "scenario", "status", "error"], fails))
    from .plots import depth_sweep
    parts.append(depth_sweep(df))
    parts += [h for _, h in sections(df)]
    parts.append(extra_html)
    parts.append("<h2>Environment manifest</h2><pre>" + html.escape(json.dumps(manifest, indent=1, default=str)) +
                 "</pre>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}th{background:#f3f3f3}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>slmbench {html.escape(run_id)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def to_json(df: pd.DataFrame, run_id: str, manifest: dict) -> str:
    return json.dumps({"run_id": run_id, "manifest": manifest,
                       "rows": json.loads(df.to_json(orient="records"))}, indent=1, default=str)
