"""Regression reports: a Markdown summary fit for a CI comment, a self-contained HTML page with a trend plot per
metric, a few terminal lines, and `publish`, which writes and prints them. Every string from the store is
escaped (by the table renderer and the page shell)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .. import fmt
from .html import esc, page, ul
from .plots import fig_to_png, new_figure, png_to_html
from .tables import html_table, md_escape, md_table

# words, not emoji (an emoji font is not everywhere: they render as empty boxes); the HTML rows are coloured
ICON = {"regressed": "regressed", "improved": "improved", "unchanged": "unchanged", "inconclusive": "inconclusive"}
ORDER = {"regressed": 0, "inconclusive": 1, "improved": 2, "unchanged": 3}
COLOR = {"regressed": "#fdd", "improved": "#dfd", "inconclusive": "#ffd", "unchanged": "#fff"}
HEADER = ["verdict", "job", "metric", "direction", "base → new", "change", "p", "n", "min change", "why", "rerun"]
STEP_HEADER = ["metric", "job", "night", "before → after", "change", "commits"]

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
TRENDS_NOTE = ("Each point: the night's median ± CI half-width. Dashed line: a step found by change-point detection "
               "(binary segmentation on nightly medians, same thresholds). Squares: base (grey) and new (red).")


def _num(x) -> str:
    return fmt.num(x, none="—")


def _commit(c) -> str:
    return (c or "?")[:10]


def _commits(cmp) -> tuple[str, str]:
    return tuple(_commit((m.get("git") or {}).get("commit")) for m in (cmp.base_manifest, cmp.new_manifest))


def _range(commits) -> str:
    a, b = commits
    if a and a == b:
        return f"{_commit(a)} (same commit: the change came from the environment, data or knobs)"
    return f"{_commit(a)}..{_commit(b)}"


def _dir(h) -> str:
    return "↑ better" if h else ("↓ better" if h is not None else "?")


def _night(created: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(created))


def _rows(cmp):
    vs = sorted(cmp.verdicts, key=lambda v: (ORDER.get(v.verdict, 9), v.where, v.metric))
    for v in vs:
        rr = v.rerun
        rerun = "" if not rr else f"{rr['verdict']} ({fmt.pct(rr['rel'])}, p {fmt.p_value(rr['p'])})"
        status = ICON.get(v.verdict, v.verdict)
        if cmp.rerun_run and v.verdict == "regressed":
            status += " (confirmed)" if v.confirmed else " (not reproduced)"
        yield v, [status, v.where, v.metric, _dir(v.higher_is_better), f"{_num(v.base)} → {_num(v.new)} {v.unit}",
                  fmt.pct(v.rel), fmt.p_value(v.p), f"{v.n_base}/{v.n_new}", f"{v.rule.min_change * 100:g}%",
                  v.reason + (" [single value]" if v.single and "single" not in v.reason else ""), rerun]


def _step_rows(cmp) -> list[list[str]]:
    """Steps of gating metrics (informational ones are in the HTML only)."""
    return [[t.metric, t.where, f"{_night(s.created)} ({s.run_id}{', latest night' if s.nights_after == 1 else ''})",
             f"{_num(s.before)} → {_num(s.after)} {t.unit}", f"{fmt.pct(s.rel)} {s.verdict}", _range(s.commits)]
            for t in cmp.trends for s in t.steps if t.gate]


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
    gb, gn = _commits(cmp)
    host = cmp.new_manifest.get("host", {})
    lines = [f"## slmbench regression check: `{md_escape(cmp.base_run)}` → `{md_escape(cmp.new_run)}`", "",
             _headline(cmp), "",
             f"Suite {md_escape(cmp.suite)}; commits {gb} → {gn}; host "
             f"{md_escape(host.get('cpu_model', '?'))}, {host.get('logical_cpus', '?')} CPUs"
             + (f"; suspects rerun as `{md_escape(cmp.rerun_run)}`" if cmp.rerun_run else ""), ""]
    lines += [f"> {md_escape(n)}" for n in cmp.notes] + ([""] if cmp.notes else [])
    rows = list(_rows(cmp))
    flagged = [r for v, r in rows if v.verdict != "unchanged"]
    if flagged:
        lines += [md_table(HEADER, flagged), ""]
    steps = _step_rows(cmp)
    if steps:
        lines += ["### Steps in the nightly series", "", md_table(STEP_HEADER, steps), ""]
    lines += ["<details><summary>All metrics</summary>", "", md_table(HEADER, [r for _, r in rows]), "",
              "</details>", "", "<details><summary>How verdicts are decided</summary>", ""]
    lines += [f"- {md_escape(t)}" for t in RULES_TEXT] + ["", "</details>", ""]
    return "\n".join(lines)


# --- HTML ---------------------------------------------------------------------------------------------------------
def _plot(t, base_run: str, new_run: str) -> bytes:
    """One trend: per-night median with its CI half-width, steps marked, base/new nights highlighted."""
    x = list(range(len(t.values)))
    fig, ax = new_figure(6.4, 2.4, dpi=80)
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
    return fig_to_png(fig)


def _trends_html(cmp) -> list[str]:
    parts = [f"<h2>Trends ({len(cmp.trends[0].runs)} nights of suite {esc(cmp.suite)})</h2><p>{esc(TRENDS_NOTE)}</p>"]
    flat = [t for t in cmp.trends if max(t.values) == min(t.values)]  # nothing to see: named, not plotted
    if flat:
        parts.append("<p>Constant over every night: " + ", ".join(
            f"{esc(t.metric)} = {esc(_num(t.values[0]))} {esc(t.unit)}" for t in flat) + "</p>")
    by_metric: dict[str, list] = {}
    for t in cmp.trends:
        if t not in flat:
            by_metric.setdefault(t.metric, []).append(t)
    for metric, ts in by_metric.items():
        for t in ts:
            steps = [f"{s.verdict} {fmt.pct(s.rel)} on the night of {_night(s.created)} (run {s.run_id}), commits "
                     f"{_range(s.commits)}" for s in t.steps]
            parts.append(f"<div class='trend'><h3>{esc(metric)} — {esc(t.where)}</h3>"
                         + png_to_html(_plot(t, cmp.base_run, cmp.new_run), f"{metric} trend")
                         + (ul(steps) if steps else "") + "</div>")
    return parts


def to_html(cmp) -> str:
    gb, gn = _commits(cmp)
    rows = list(_rows(cmp))
    parts = [f"<h1>Regression check <code>{esc(cmp.base_run)}</code> → <code>{esc(cmp.new_run)}</code></h1>",
             f"<p>{esc(_headline(cmp).replace('**', ''))}</p>",
             f"<p>Suite {esc(cmp.suite)}; commits {esc(gb)} → {esc(gn)}"
             + (f"; suspects rerun as <code>{esc(cmp.rerun_run)}</code>" if cmp.rerun_run else "") + "</p>"]
    parts += [f"<p class='note'>{esc(n)}</p>" for n in cmp.notes]
    parts.append(html_table(HEADER, [r for _, r in rows],
                            row_attrs=[{"style": f"background:{COLOR.get(v.verdict, '#fff')}"} for v, _ in rows]))
    parts.append("<h2>How verdicts are decided</h2>" + ul([t.replace("**", "") for t in RULES_TEXT]))
    if cmp.trends:
        parts += _trends_html(cmp)
    style = (".note{background:#ffd;padding:4px}.trend{display:inline-block;vertical-align:top;margin:4px}"
             ".trend h3{font-size:12px;margin:2px}.trend ul{font-size:12px}")
    return page(f"slmbench regression {cmp.new_run}", "".join(parts), style)


def to_text(cmp) -> list[str]:
    """A few lines for the terminal."""
    out = [_headline(cmp).replace("**", "")]
    for v, r in _rows(cmp):
        if v.verdict in ("regressed", "improved", "inconclusive"):
            out.append(f"  {v.verdict:<12} {v.metric:<22} {r[4]:<28} {r[5]:>7}  {v.where}"
                       + (f"  [rerun: {r[10]}]" if r[10] else ""))
    return out


def publish(cmp, md: str | None, html_path: str | None, console, md_stdout: bool = True) -> None:
    """Write the Markdown (to `md`, else stdout when `md_stdout`) and the HTML page, print the summary lines."""
    text = to_markdown(cmp)
    if md:
        _write(md, text)
    elif md_stdout:
        sys.stdout.write(text + "\n")
    if html_path:
        _write(html_path, to_html(cmp))
    for line in to_text(cmp):
        console.print(line, markup=False, highlight=False)
    for p in (md, html_path):
        if p:
            console.print(f"wrote {p}", markup=False)


def _write(path: str, text: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
