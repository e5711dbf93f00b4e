"""Render a run: rich (terminal), Markdown (CI comments), HTML (self-contained, escaped), JSON. The optional parts
are report sections (report.section.Section); each page lists them once and asks each for its own format."""
from __future__ import annotations

import json

import pandas as pd

from .html import esc, page, pre_json, ul
from .section import Section
from .tables import FAILURE_HEADER, failures, html_table, md_table, sources_note, summary

CI_NOTE = "Values are medians ± half-width of the 95% CI of the median"


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


def sections(df: pd.DataFrame, infos: dict | None = None, manifest: dict | None = None,
             cost: bool = False) -> list[Section]:
    """The optional sections whose rows the run holds: quality vs cost (for two or more model families, the
    "which SLM" section, which also shows file size and interactive frontiers), the runtime shoot-out (two or more
    runtimes, one model family), speculative decoding, projection vs
    measurement (devices with a profile and rows measured on them), and the cloud-vs-device cost table (when an
    endpoint was measured, or always with `cost`: `report --cost`)."""
    from . import cost as rc, device, quality, runtimes, speculative, which
    w = which.section(df, infos)  # two model families: it has a runtime column, so it stands in for the shoot-out
    out = [w or quality.section(df), None if w else runtimes.section(df), speculative.section(df),
           device.section(df, infos), rc.section(df, infos, manifest, force=cost)]
    return [s for s in out if s is not None]


def _header_line(manifest: dict) -> str:
    host, vers = manifest.get("host", {}), manifest.get("versions", {})
    return (f"Host: {host.get('cpu_model', '?')}, {host.get('logical_cpus', '?')} CPUs, {host.get('ram_gb', '?')} GB; "
            f"torch {vers.get('torch', '?')}, transformers {vers.get('transformers', '?')}; "
            f"commit {(manifest.get('git') or {}).get('commit') or 'n/a'}")


def to_markdown(df: pd.DataFrame, run_id: str, manifest: dict, infos: dict | None = None, cost: bool = False) -> str:
    header, rows = summary(df)
    lines = [f"# slmbench run `{run_id}`", "", _header_line(manifest), "",
             f"{CI_NOTE} (range when fewer than 6 repetitions).", ""]
    if rows:
        lines += [md_table(header, rows), ""]
    notes = sources_note(df)
    if notes:
        lines += ["**Not measured by a counter:**", ""] + [f"- {n}" for n in notes] + [""]
    for s in sections(df, infos, manifest, cost):
        lines += [s.markdown(), ""]
    fails = failures(df)
    if fails:
        lines += ["## Failed or unsupported jobs", "", md_table(FAILURE_HEADER, fails), ""]
    return "\n".join(lines)


def to_html(df: pd.DataFrame, run_id: str, manifest: dict, infos: dict | None = None, cost: bool = False) -> str:
    from .plots import depth_sweep
    parts = [f"<h1>slmbench run <code>{esc(run_id)}</code></h1>", f"<p>{esc(CI_NOTE)}.</p>",
             html_table(*summary(df))]
    notes = sources_note(df)
    if notes:
        parts.append("<h2>Not measured by a counter</h2>" + ul(notes))
    fails = failures(df)
    if fails:
        parts.append("<h2>Failed or unsupported jobs</h2>" + html_table(FAILURE_HEADER, fails))
    parts.append(depth_sweep(df))
    parts += [s.html() for s in sections(df, infos, manifest, cost)]
    parts.append("<h2>Environment manifest</h2>" + pre_json(manifest))
    return page(f"slmbench {run_id}", "".join(parts), "td,th{padding:4px 8px;font-size:13px}")


def to_json(df: pd.DataFrame, run_id: str, manifest: dict, infos: dict | None = None, cost: bool = False) -> str:
    """The rows and manifest, plus each section's own data under its key (e.g. `cost`)."""
    d = {"run_id": run_id, "manifest": manifest, "rows": json.loads(df.to_json(orient="records"))}
    for s in sections(df, infos, manifest, cost):
        d[s.key] = s.json()
    return json.dumps(d, indent=1, default=str)
