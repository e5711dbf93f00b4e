"""Regression reports: a Markdown summary fit for a CI comment, and a self-contained HTML page with a trend plot
per metric (base64 PNG). Every string from the store is escaped."""
from __future__ import annotations

import base64
import html
import io
import math
import time

from ..metrics import fmt_num

ICON = {"regressed": "🔴 regressed", "improved": "🟢 improved", "unchanged": "unchanged",
        "inconclusive": "🟡 inconclusive"}
ORDER = {"regressed": 0, "inconclusive": 1, "improved": 2, "unchanged": 3}

RULES_TEXT = [
    "Repeated metrics (raw samples kept): Mann-Whitney U on the raw samples, p < alpha, **and** the median moved by "
    "at least the metric's minimum change → regressed or improved by the metric's direction. A smaller move is "
    "unchanged even when significant (run-to-run drift on a shared machine); a larger move without significance "
    "is inconclusive.",
    "Single values (memory peaks, load time, ITL percentiles: no samples kept): the relative change alone decides "
    "(no test is possible), with thresholds set from A/A runs — tight for memory (near-deterministic), loose for "
    "load time and tail latency.",
    "Tail latency (ITL p90, p99) is informational: on a shared machine two or three interrupts set it, so a big "
    "move is reported as inconclusive, never as a regression.",
    "A job that ran in the base and fails in the new run is a regression of metric `job`.",
    "With --rerun-suspects, jobs with a regressed metric run once more; a regression is confirmed only if the "
    "rerun regresses too. The exit code is 1 when a regression is confirmed.",
]


def md_escape(s) -> str:
    """Safe inside a GitHub Markdown table cell: no HTML, no cell breaks, no code spans."""
    s = html.escape(str(s), quote=False)
    for c in "|`*[]":  # not "_": intraword underscores (metric names) are literal in GitHub Markdown
        s = s.replace(c, "\\" + c)
    return s.replace("\n", " ")


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:+.1%}"


def _p(x: float) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.2g}"


def _num(x) -> str:
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt_num(x)


def _commit(c) -> str:
    return (c or "?")[:10]


def _range(commits) -> str:
    a, b = commits
    if a and a == b:
        return f"{_commit(a)} (same commit: the change came from the environment, data or knobs)"
    return f"{_commit(a)}..{_commit(b)}"


def _dir(h) -> str:
    return "↑ better" if h else ("↓ better" if h is not None else "?")


def _rows(cmp):
    vs = sorted(cmp.verdicts, key=lambda v: (ORDER.get(v.verdict, 9), v.where, v.metric))
    for v in vs:
        rr = v.rerun
        rerun = "" if not rr else f"{rr['verdict']} ({_pct(rr['rel'])}, p {_p(rr['p'])})"
        status = ICON.get(v.verdict, v.verdict)
        if cmp.rerun_run and v.verdict == "regressed":
            status += " (confirmed)" if v.confirmed else " (not reproduced)"
        yield v, [status, v.where, v.metric, _dir(v.higher_is_better), f"{_num(v.base)} → {_num(v.new)} {v.unit}",
                  _pct(v.rel), _p(v.p), f"{v.n_base}/{v.n_new}", f"{v.rule.min_change * 100:g}%",
                  v.reason + (" [single value]" if v.single and "single" not in v.reason else ""), rerun]


HEADER = ["verdict", "job", "metric", "direction", "base → new", "change", "p", "n", "min change", "why", "rerun"]


def _headline(cmp) -> str:
    n = {k: cmp.count(k) for k in ORDER}
    conf = len(cmp.confirmed)
    if conf:
        head = f"**{conf} regression{'s' if conf > 1 else ''} confirmed**"
    elif n["regressed"]:
        head = "**no regression confirmed** (suspects not reproduced on rerun)"
    else:
        head = "**no regression**"
    return (f"{head} — {n['regressed']} regressed, {n['improved']} improved, {n['inconclusive']} inconclusive, "
            f"{n['unchanged']} unchanged")


def to_markdown(cmp) -> str:
    gb = (cmp.base_manifest.get("git") or {}).get("commit")
    gn = (cmp.new_manifest.get("git") or {}).get("commit")
    host = cmp.new_manifest.get("host", {})
    lines = [f"## slmbench regression check: `{md_escape(cmp.base_run)}` → `{md_escape(cmp.new_run)}`", "",
             _headline(cmp), "",
             f"Suite {md_escape(cmp.suite)}; commits {_commit(gb)} → {_commit(gn)}; host "
             f"{md_escape(host.get('cpu_model', '?'))}, {host.get('logical_cpus', '?')} CPUs"
             + (f"; suspects rerun as `{md_escape(cmp.rerun_run)}`" if cmp.rerun_run else ""), ""]
    lines += [f"> {md_escape(n)}" for n in cmp.notes] + ([""] if cmp.notes else [])
    rows = list(_rows(cmp))
    flagged = [r for v, r in rows if v.verdict != "unchanged"]
    table = lambda rs: ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)] + \
        ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rs]
    if flagged:
        lines += table(flagged) + [""]
    steps = [(t, s) for t in cmp.trends for s in t.steps if t.gate]  # informational metrics: in the HTML only
    if steps:
        lines += ["### Steps in the nightly series", "",
                  "| metric | job | night | before → after | change | commits |", "|---|---|---|---|---|---|"]
        for t, s in steps:
            night = time.strftime("%Y-%m-%d %H:%M", time.localtime(s.created))
            lines.append(f"| {md_escape(t.metric)} | {md_escape(t.where)} | {night} (`{md_escape(s.run_id)}`"
                         f"{', latest night' if s.nights_after == 1 else ''}) | {_num(s.before)} → {_num(s.after)} "
                         f"{md_escape(t.unit)} | {_pct(s.rel)} {s.verdict} | {md_escape(_range(s.commits))} |")
        lines.append("")
    lines += ["<details><summary>All metrics</summary>", ""] + table([r for _, r in rows]) + ["", "</details>", "",
              "<details><summary>How verdicts are decided</summary>", ""] + [f"- {md_escape(t)}" for t in RULES_TEXT] \
        + ["", "</details>", ""]
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------------------------
def _plot(t, base_run: str, new_run: str) -> str:
    """One trend: per-night median with its CI half-width, steps marked, base/new nights highlighted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = list(range(len(t.values)))
    fig, ax = plt.subplots(figsize=(6.4, 2.4), dpi=80)
    ax.errorbar(x, t.values, yerr=t.spread, fmt="o-", ms=3, lw=1, capsize=2, color="#3465a4")
    for i, r in enumerate(t.runs):
        if r in (base_run, new_run):
            ax.plot([i], [t.values[i]], "s", ms=8, mfc="none", color="#cc0000" if r == new_run else "#555")
    for s in t.steps:
        k = t.runs.index(s.run_id)
        ax.axvline(k - 0.5, color="#cc0000" if s.verdict == "regressed" else "#4e9a06", ls="--", lw=1)
        ax.hlines([s.before], 0, k - 0.5, color="#888", lw=0.8)
        ax.hlines([s.after], k - 0.5, len(x) - 1, color="#888", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels([time.strftime("%m-%d\n%H:%M", time.localtime(c)) for c in t.created], fontsize=6)
    ax.set_ylabel(t.unit, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title(f"{t.metric} ({_dir(t.higher_is_better)})", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def to_html(cmp) -> str:
    e = lambda s: html.escape(str(s))
    gb = (cmp.base_manifest.get("git") or {}).get("commit")
    gn = (cmp.new_manifest.get("git") or {}).get("commit")
    color = {"regressed": "#fdd", "improved": "#dfd", "inconclusive": "#ffd", "unchanged": "#fff"}
    trs = "".join(f"<tr style='background:{color.get(v.verdict, '#fff')}'>" + "".join(f"<td>{e(c)}</td>" for c in r)
                  + "</tr>" for v, r in _rows(cmp))
    parts = [f"<h1>Regression check <code>{e(cmp.base_run)}</code> → <code>{e(cmp.new_run)}</code></h1>",
             f"<p>{e(_headline(cmp).replace('**', ''))}</p>",
             f"<p>Suite {e(cmp.suite)}; commits {e(_commit(gb))} → {e(_commit(gn))}"
             + (f"; suspects rerun as <code>{e(cmp.rerun_run)}</code>" if cmp.rerun_run else "") + "</p>"]
    parts += [f"<p class='note'>{e(n)}</p>" for n in cmp.notes]
    parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + f"</tr></thead><tbody>{trs}"
                 "</tbody></table>")
    parts.append("<h2>How verdicts are decided</h2><ul>" + "".join(f"<li>{e(t)}</li>" for t in RULES_TEXT) + "</ul>")
    if cmp.trends:
        parts.append(f"<h2>Trends ({len(cmp.trends[0].runs)} nights of suite {e(cmp.suite)})</h2><p>Each point: "
                     "the night's median ± CI half-width. Dashed line: a step found by change-point detection "
                     "(binary segmentation on nightly medians, same thresholds). Squares: base (grey) and new (red)."
                     "</p>")
        by_metric: dict[str, list] = {}
        flat = [t for t in cmp.trends if max(t.values) == min(t.values)]  # nothing to see: named, not plotted
        for t in cmp.trends:
            if t not in flat:
                by_metric.setdefault(t.metric, []).append(t)
        if flat:
            parts.append("<p>Constant over every night: " + ", ".join(
                f"{e(t.metric)} = {e(_num(t.values[0]))} {e(t.unit)}" for t in flat) + "</p>")
        for metric, ts in by_metric.items():
            for t in ts:
                steps = "".join(
                    f"<li>{e(s.verdict)} {e(_pct(s.rel))} on the night of {e(time.strftime('%Y-%m-%d %H:%M', time.localtime(s.created)))}"
                    f" (run <code>{e(s.run_id)}</code>), commits {e(_range(s.commits))}"
                    f"</li>" for s in t.steps)
                parts.append(f"<div class='trend'><h3>{e(metric)} — {e(t.where)}</h3>"
                             f"<img alt='{e(metric)} trend' src='data:image/png;base64,{_plot(t, cmp.base_run, cmp.new_run)}'>"
                             + (f"<ul>{steps}</ul>" if steps else "") + "</div>")
    style = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:1500px}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}th{background:#f3f3f3}"
             ".note{background:#ffd;padding:4px}.trend{display:inline-block;vertical-align:top;margin:4px}"
             ".trend h3{font-size:12px;margin:2px}.trend ul{font-size:12px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>slmbench regression {e(cmp.new_run)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def to_text(cmp) -> list[str]:
    """A few lines for the terminal."""
    out = [_headline(cmp).replace("**", "")]
    for v, r in _rows(cmp):
        if v.verdict in ("regressed", "improved", "inconclusive"):
            out.append(f"  {v.verdict:<12} {v.metric:<22} {r[4]:<28} {r[5]:>7}  {v.where}"
                       + (f"  [rerun: {r[10]}]" if r[10] else ""))
    return out
