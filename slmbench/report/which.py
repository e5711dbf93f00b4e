""""Which SLM should I ship?": one row per model variant (family, runtime, level) with its quality — held-out
bits/byte (comparable across tokenizers), lm-eval accuracy per task — next to its cost: decode tok/s, peak RSS,
J/token, size of the deployable file; and the Pareto frontier of each quality against each cost, as interactive
SVG (hover a point: the variant and its numbers). Shown when a run holds quality and cost figures for two or more
model families (suites/which_slm.yaml); a one-family run keeps the plain quality-vs-cost section.

    section(df, infos) -> WhichSection | None
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pandas as pd

from .. import fmt
from .html import esc
from .plots import SVG_STYLE, Point, svg_scatter
from .quality import pareto
from .tables import html_table, md_table, variant_name

ACC_METRICS = ("acc_norm", "acc")  # lm-eval's headline where a task has it, else acc (as the quality section)
# cost axes: (key, column title, lower is better)
COSTS = [("decode_tok_s", "decode tok/s", False), ("peak_mem_mb", "peak RSS MB", True),
         ("decode_j_per_token", "J/token (decode)", True), ("file_mb", "file MB", True)]


def _info(infos: dict | None, job_ids) -> dict:
    for j in job_ids:
        m = ((infos or {}).get(j) or {}).get("model")
        if m:
            return m
    return {}


def _family(model: str, info: dict) -> str:
    return str(info.get("gguf_arch") or info.get("model_type") or model.split(":", 1)[0])


def _level(v: dict, info: dict) -> tuple[str, str]:
    """(runtime, level): a GGUF run as it is shows the file's own level."""
    if v.get("backend") == "llamacpp":
        q = v.get("quantization", "none")
        return "llama.cpp", (info.get("quantization") or "as shipped") if q == "none" else q
    q = v.get("quantization", "none")
    return v.get("backend", "torch"), v.get("dtype", "fp32") if q == "none" else q


def _first(g: pd.DataFrame, metric: str, scenario: str | None = None):
    x = g[g["metric"] == metric]
    if scenario:
        x = x[x["scenario"] == scenario]
    return x.iloc[0] if len(x) else None


def collect(df: pd.DataFrame, infos: dict | None = None) -> list[dict]:
    """One dict per (model, variant, device) with the figures this section shows (None where not measured)."""
    ok = df[df["status"] == "ok"]
    out = []
    for (model, var, dev), g in ok.groupby(["model", "variant", "device"], sort=False):
        info = _info(infos, dict.fromkeys(g["job_id"]))
        v = json.loads(var or "{}")
        runtime, level = _level(v, info)
        r = {"model": model, "variant": variant_name(var), "device": dev, "family": _family(model, info),
             "runtime": runtime, "level": level, "acc": {}, "sources": {}}

        for key, _, _ in COSTS:
            row = _first(g, key)
            r[key] = None if row is None or fmt.missing(row["value"]) else float(row["value"])
            if row is not None:
                r["sources"][key] = row["source"]
        if r["file_mb"] is None and info.get("file_bytes"):
            r["file_mb"], r["sources"]["file_mb"] = info["file_bytes"] / 1e6, "measured"
        bpb = _first(g, "bits_per_byte", "perplexity")
        r["bits_per_byte"] = None if bpb is None else float(bpb["value"])
        r["bpb_text"] = None if bpb is None else json.loads(bpb["labels"] or "{}").get("text")
        acc = g[(g["scenario"] == "accuracy") & g["metric"].isin(ACC_METRICS)]
        for task, t in acc.groupby(acc["labels"].map(lambda s: json.loads(s or "{}").get("task"))):
            row = next(t[t["metric"] == m].iloc[0] for m in ACC_METRICS if (t["metric"] == m).any())
            se = row["spread"] if str(row["spread_kind"] or "").startswith("stderr") and \
                not fmt.missing(row["spread"]) else None  # stderr, or stderr_units (per-item scores kept)
            r["acc"][task] = {"metric": row["metric"], "value": float(row["value"]), "stderr": se, "n": int(row["n"])}
        if r["bits_per_byte"] is not None or r["acc"]:
            out.append(r)
    return out


def _tasks(rows) -> list[str]:
    return list(dict.fromkeys(t for r in rows for t in r["acc"]))


def mean_acc(r: dict, tasks: list[str]) -> float | None:
    """Mean headline accuracy over `tasks` (all must be present, so every point averages the same items)."""
    vals = [r["acc"][t]["value"] for t in tasks if t in r["acc"]]
    return sum(vals) / len(vals) if tasks and len(vals) == len(tasks) else None


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    tasks = _tasks(rows)
    header = ["#", "model", "family", "runtime", "level", "bits/B (held-out)"] + \
        [f"{t} % ({next(r['acc'][t]['metric'] for r in rows if t in r['acc'])})" for t in tasks] + \
        [title for _, title, _ in COSTS]
    out = []
    for i, r in enumerate(rows, 1):
        cells = [str(i), r["model"], r["family"], r["runtime"], r["level"], fmt.fixed(r["bits_per_byte"], ".3f")]
        for t in tasks:
            a = r["acc"].get(t)
            cells.append(fmt.pct_points(a["value"], a["stderr"]) + f" (n={a['n']})" if a else "")
        for key, _, _ in COSTS:
            s = fmt.fixed(r[key], ".3f" if key == "decode_j_per_token" else ".1f")
            src = r["sources"].get(key)
            cells.append(s + (f" ({src[:3]}.)" if r[key] is not None and src and src != "measured" else ""))
        out.append(cells)
    return header, out


def axes(rows: list[dict]) -> list[tuple[str, str, bool, list[float | None]]]:
    """The quality axes: (key, label, higher is better, value per row)."""
    tasks = _tasks(rows)
    out = []
    if any(r["bits_per_byte"] is not None for r in rows):
        text = next((r["bpb_text"] for r in rows if r["bpb_text"]), "held-out text")
        out.append(("bits_per_byte", f"bits/B on {text} (lower is better)", False, [r["bits_per_byte"] for r in rows]))
    accs = [mean_acc(r, tasks) for r in rows]
    if any(a is not None for a in accs):
        out.append(("accuracy", f"accuracy % (mean of {', '.join(tasks)})", True,
                    [None if a is None else a * 100 for a in accs]))
    return out


def frontiers(rows: list[dict]) -> dict:
    """{(quality key, cost key): indices of the rows on the Pareto frontier} over rows having both figures."""
    out = {}
    for qk, _, q_hib, qv in axes(rows):
        for ck, _, c_lower in COSTS:
            idx = [i for i, r in enumerate(rows) if r[ck] is not None and qv[i] is not None]
            pts = [(rows[i][ck], qv[i] if q_hib else -qv[i]) for i in idx]
            out[(qk, ck)] = [idx[k] for k in pareto(pts, c_lower)] if pts else []
    return out


def _tip(i: int, r: dict, rows: list[dict]) -> str:
    tasks = _tasks(rows)
    parts = [f"#{i + 1} {r['model']} — {r['runtime']} {r['level']} @{r['device']}",
             f"bits/B {fmt.fixed(r['bits_per_byte'], '.3f')}"]
    parts += [f"{t} {fmt.pct_points(r['acc'][t]['value'], r['acc'][t]['stderr'])}% (n={r['acc'][t]['n']})"
              for t in tasks if t in r["acc"]]
    parts += [f"{title} {fmt.fixed(r[k], '.3g')}" + (f" ({r['sources'].get(k)})" if r["sources"].get(k) not in
                                                       (None, "measured") else "") for k, title, _ in COSTS]
    return "\n".join(parts)


def plots_html(rows: list[dict]) -> str:
    front = frontiers(rows)
    figs = []
    for qk, qlabel, _, qv in axes(rows):
        for ck, ctitle, c_lower in COSTS:
            pts = [Point(r[ck], qv[i], f"#{i + 1}", _tip(i, r, rows), r["family"], i in front[(qk, ck)])
                   for i, r in enumerate(rows) if r[ck] is not None and qv[i] is not None]
            if len(pts) >= 2:
                figs.append(svg_scatter(pts, ctitle + (" (lower is better)" if c_lower else " (higher is better)"),
                                        qlabel.split(" (")[0] if qk == "accuracy" else "bits/B (lower is better)",
                                        f"{'accuracy' if qk == 'accuracy' else 'bits/B'} vs {ctitle}"))
    if not figs:
        return ""
    return (f"<figure><div class='plots'>{''.join(figs)}</div><figcaption>Pareto frontiers (dashed red; ringed "
            "points): no other variant is better on both axes. Hover a point for its variant and numbers; # as in "
            "the table. Colour: model family.</figcaption></figure>")


def frontier_lines(rows: list[dict]) -> list[str]:
    """The frontiers in words, for Markdown (no plot there)."""
    names = {qk: ql.split(" (")[0] for qk, ql, _, _ in axes(rows)}
    out = []
    for (qk, ck), idx in frontiers(rows).items():
        if idx:
            title = next(t for k, t, _ in COSTS if k == ck)
            out.append(f"{names[qk]} vs {title}: " + ", ".join(f"#{i + 1} {rows[i]['model']}" for i in idx))
    return out


def note(rows: list[dict]) -> str:
    tasks = _tasks(rows)
    ns = sorted({r["acc"][t]["n"] for r in rows for t in tasks if t in r["acc"]})
    srcs = sorted({r["sources"].get("decode_j_per_token") for r in rows} - {None})
    parts = ["Quality: held-out bits per byte (total NLL in bits over the UTF-8 bytes scored: comparable across "
             "tokenizers, lower is better)"]
    if tasks:
        parts.append(f"lm-eval 0-shot accuracy ± stderr on {', '.join(tasks)} "
                     f"({'a fixed-seed subsample of ' + '/'.join(map(str, ns)) + ' items per task' if ns else ''}; "
                     "acc_norm where the task defines it)")
    parts.append("cost: decode tok/s (latency scenario, median), peak RSS (memory scenario), J/token while decoding "
                 f"(energy scenario; {'/'.join(srcs) or 'not measured'}: est. = estimated from the device profile, "
                 "not a counter), file MB (the deployable file)")
    return "; ".join(parts) + ". Same device and threads for every row."


@dataclass
class WhichSection:
    rows: list[dict]
    key: str = "which_slm"
    title: str = "Which SLM: quality × cost"
    header: list[str] = field(default_factory=list)
    cells: list[list[str]] = field(default_factory=list)

    def __post_init__(self):
        self.header, self.cells = table(self.rows)

    def markdown(self) -> str:
        front = frontier_lines(self.rows)
        return "\n".join([f"## {self.title}", "", note(self.rows), "", md_table(self.header, self.cells), ""] +
                         (["Pareto frontier (no other variant better on both):", ""] + [f"- {x}" for x in front]
                          if front else []))

    def html(self) -> str:
        return (f"<style>{SVG_STYLE}</style><h2 id='{self.key}'>{esc(self.title)}</h2><p>{esc(note(self.rows))}</p>"
                + html_table(self.header, self.cells) + plots_html(self.rows))

    def json(self) -> dict:
        front = {f"{q}|{c}": [self.rows[i]["model"] for i in idx] for (q, c), idx in frontiers(self.rows).items()}
        clean = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()} for r in self.rows]
        return {"title": self.title, "header": self.header, "rows": self.cells, "variants": clean,
                "frontiers": front, "note": note(self.rows)}


def section(df: pd.DataFrame, infos: dict | None = None) -> WhichSection | None:
    """The section, when two or more model families have a quality figure and at least one cost."""
    if df.empty:
        return None
    rows = collect(df, infos)
    if len({r["family"] for r in rows}) < 2 or not any(r[k] is not None for r in rows for k, _, _ in COSTS):
        return None
    return WhichSection(rows)
