"""The claims report (`slmbench report --claims`): per claim the question, the comparisons (arms, one knob changed),
numbers with 95% CIs, the computed verdict and the rule behind it, and a plot; Markdown (+ PNGs) and one HTML file
with links from every number to the raw rows it came from, and the environment manifest."""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from .. import fmt
from ..analysis.claims import Z, Claim, Result, evaluate, select, with_cost_rows
from .html import esc, page, pre_json, ul
from .plots import fig_to_png, new_figure, png_to_html
from .tables import html_table, md_table

BADGE = {"supported": "✅ supported", "refuted": "❌ refuted", "inconclusive": "❔ inconclusive"}
RULE = ("Effect d = mean(a) − mean(b), signed so that d > 0 favours the claim (relative: ÷ |mean(b)|); 95% CI = "
        "d ± 1.96·√(se_a² + se_b²), where an arm's se is the spread of its rows over seeds/settings, never below "
        "the rows' own stderr. *better*: supported if the CI lies above 0 and every a row beats every b row; "
        "*not_worse*: supported if the CI lies above −margin; refuted if the CI lies wholly on the other side; "
        "otherwise inconclusive. A claim is supported when all its primary comparisons are, refuted when any is. "
        "With 2 seeds per arm the seed spread rests on one degree of freedom, so the normal-quantile interval is "
        "optimistic; the all-rows gate guards against a lucky seed (by chance alone 1 in 6 for 2 vs 2). Figures "
        "that are projected or estimated (cost, battery) carry no error of their own: verdicts on them say so.")


def _num(x, rel=False) -> str:
    return fmt.pct(x) if rel else fmt.sig(x)


def _arm_text(arm, link=None) -> str:
    if arm is None or arm.mean is None:
        return "no rows"
    vals = ", ".join(_num(v) for v in arm.values[:6]) + (" …" if len(arm.values) > 6 else "")
    core = f"{_num(arm.mean)} ± {_num(Z * arm.se)}"
    return f"{core} (k={len(arm.values)}: {vals})" if len(arm.values) > 1 else core


def _desc(sel) -> str:
    if sel is None:
        return ""
    bits = [sel.model if isinstance(sel.model, str) else ",".join(sel.model)] + [f"{k}={v}" for k, v in {**sel.params, **sel.labels, **sel.variant}.items()]
    if sel.device:
        bits.append(f"@{sel.device}")
    if sel.reduce != "rows":
        bits.append(f"({sel.reduce} row)")
    return " ".join(bits)


def _cmp_rows(res: list[Result], link) -> list[list[str]]:
    out = []
    for r in res:
        c = r.cmp
        b = _arm_text(r.b) if r.b is not None else f"threshold {_num(c.threshold)}"
        test = c.test + (f" (margin {_num(c.margin)}{' rel.' if c.relative else ''})" if c.test == "not_worse" else "")
        eff = "n/a" if r.effect is None else (f"{_num(r.effect, c.relative)} [{_num(r.lo, c.relative)}, "
                                              f"{_num(r.hi, c.relative)}]")
        out.append([c.label or c.metric, f"{c.metric} ({c.better} is better)", link(r.a, _desc(c.a)),
                    _arm_text(r.a), link(r.b, _desc(c.b)) if r.b is not None else "—", b, test, eff,
                    ("" if c.primary else "(context) ") + r.verdict, r.why])
    return out


CMP_HEADER = ["comparison", "metric", "a (claim's side)", "a: mean ± 95% CI", "b", "b: mean ± 95% CI", "test",
              "effect [95% CI]", "verdict", "why"]


def _series(v) -> str:
    """A param naming a line: a dict (e.g. a draft spec) by its name, else its short JSON."""
    if isinstance(v, dict):
        return str(v.get("name") or json.dumps(v, sort_keys=True))
    return str(v)


def _plot(claim: Claim, res: list[Result], df: pd.DataFrame):
    """One panel per primary comparison (context ones too while few), bars = arm means ± 95% CI, dots = rows;
    plus the claim's line plot (e.g. speed vs context depth)."""
    import textwrap
    shown = res if len(res) <= 3 else [r for r in res if r.cmp.primary]
    n = len(shown) + (1 if claim.plot else 0)
    cols = min(3, n)
    rows_n = -(-n // cols)
    fig, _ = new_figure(4.2 * cols, 3.3 * rows_n)
    fig.clf()
    axes = [fig.add_subplot(rows_n, cols, i + 1) for i in range(n)]
    wrap = lambda t, w=34: "\n".join(textwrap.wrap(t, w))  # noqa: E731
    for ax, r in zip(axes, shown):
        arms = [("a", r.a)] + ([("b", r.b)] if r.b is not None else [])
        for i, (name, arm) in enumerate(arms):
            if arm.mean is None:
                continue
            ax.bar(i, arm.mean, yerr=Z * arm.se, color="#4c78a8" if name == "a" else "#bbbbbb", capsize=4)
            ax.scatter([i] * len(arm.values), arm.values, color="k", s=10, zorder=3)
        if r.cmp.threshold is not None:
            ax.axhline(r.cmp.threshold, color="#e45756", ls="--", lw=1, label=f"threshold {r.cmp.threshold:g}")
            ax.legend(fontsize=6)
        ax.set_xticks(range(len(arms)), [wrap(_desc(getattr(r.cmp, k)), 22) for k, _ in arms], fontsize=6)
        ax.set_title(wrap(f"{r.cmp.label or r.cmp.metric}: {r.verdict}"), fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    if claim.plot:
        ax, p = axes[-1], claim.plot
        for metric, ls in ((p.metric, "-"), (p.also, "--")):
            if not metric:
                continue
            rows = select(df, metric, p.select).copy()
            if rows.empty:
                continue
            rows["x"] = [json.loads(x).get(p.x) for x in rows["params"]]
            rows["s"] = rows["model"] if p.series == "model" else [_series(json.loads(x).get(p.series))
                                                                    for x in rows["params"]]
            for s, g in rows.groupby("s"):
                g = g.dropna(subset=["x"]).sort_values("x")
                ax.plot(g["x"].astype(float), g["value"], ls, marker="o", ms=3, label=f"{s[:28]} {metric}"[:48])
        ax.set_xlabel(p.x, fontsize=8)
        ax.set_title(f"{p.metric} vs {p.x}", fontsize=8)
        ax.legend(fontsize=6)
        ax.tick_params(labelsize=7)
    return fig


def _settings(claim: Claim, res: list[Result], suite) -> list[str]:
    """The exact settings of each arm: its models' source, recipe overrides and knobs, from the suite."""
    import fnmatch
    lines = []
    seen = set()
    for r in res:
        for sel in (r.cmp.a, r.cmp.b):
            if sel is None or sel.scenario == "cost":
                continue
            for m in getattr(suite, "models", []):
                globs = [sel.model] if isinstance(sel.model, str) else sel.model
                if any(fnmatch.fnmatchcase(m.name, g) for g in globs) and m.name not in seen:
                    seen.add(m.name)
                    extra = {k: v for k, v in (("path", m.path), ("overrides", m.overrides), ("knobs", m.knobs)) if v}
                    lines.append(f"`{m.name}`: source {m.source}" + "".join(
                        f"; {k} {json.dumps(v) if isinstance(v, dict) else v}" for k, v in extra.items()))
    return lines


SUMMARY_HEADER = ["claim", "title", "verdict", "comparisons"]
SOURCES = ("Sources: *measured* (timers, counters, lm-eval), *estimated* (energy from CPU time × W/core where no "
           "counter exists; list prices), *projected* (another device, from the host's roofline).")


def _env(manifest: dict) -> str:
    host, vers, git = manifest.get("host", {}), manifest.get("versions", {}), manifest.get("git") or {}
    return (f"{host.get('cpu_model', '?')}, {host.get('logical_cpus', '?')} CPUs, {host.get('ram_gb', '?')} GB; "
            f"torch {vers.get('torch', '?')}, transformers {vers.get('transformers', '?')}, "
            f"lm-eval {vers.get('lm_eval', vers.get('lm-eval', '?'))}; commit {git.get('commit') or 'n/a'}"
            f"{' (dirty)' if git.get('dirty') else ''}")


def _md_claim(c: Claim, res: list[Result], v: str, sets: list[str], png: str) -> list[str]:
    md = [f"## {c.id} — {c.title}: {BADGE[v]}", "", f"**Question.** {c.question}", ""]
    md += [f"**Framing.** {c.framing}", ""] if c.framing else []
    md += [f"**Settings.** {c.settings}", ""] if c.settings else []
    md += [md_table(CMP_HEADER, _cmp_rows(res, lambda arm, text: text)), ""]
    md += ["Arms:", ""] + [f"- {s}" for s in sets] + [""] if sets else []
    return md + [f"![{c.id}](plots/{png})", ""]


def _html_claim(c: Claim, res: list[Result], v: str, sets: list[str], fig_html: str, link) -> list[str]:
    hp = [f"<h2 id='{esc(c.id)}'>{esc(c.id)} — {esc(c.title)}: {BADGE[v]}</h2>",
          f"<p><b>Question.</b> {esc(c.question)}</p>"]
    hp += [f"<p><b>Framing.</b> {esc(c.framing)}</p>"] if c.framing else []
    hp += [f"<p><b>Settings.</b> {esc(c.settings)}</p>"] if c.settings else []
    hp.append(html_table(CMP_HEADER, _cmp_rows(res, link), raw_cols={2, 4}))
    return hp + ([ul(sets)] if sets else []) + [fig_html]


def write(df: pd.DataFrame, suite, claims: list[Claim], out_dir: Path, run_id: str, manifest: dict,
          wall: str = "", infos: dict | None = None) -> tuple[Path, Path]:
    """claims.md + plots/, claims.html, verdicts.json in `out_dir`. `infos`: the run's job info (Store.job_info),
    which the cost rows need (threads, bytes per token)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    df = with_cost_rows(df, infos, manifest).reset_index(drop=True)
    results = evaluate(claims, df, add_cost=False)
    ids = {i: f"row-{i}" for i in df.index}

    def html_link(arm, text):
        if arm is None or arm.rows is None or arm.rows.empty:
            return html.escape(text)
        return f"{html.escape(text)} " + " ".join(f"<a href='#{ids[i]}'>[{i}]</a>" for i in arm.rows.index if i in ids)

    env, walls = _env(manifest), (f" Wall time: {wall}." if wall else "")
    summary = [[c.id, c.title, BADGE[v], "; ".join(f"{r.cmp.label or r.cmp.metric}: {r.verdict}" for r in res)]
               for c, res, v in results]
    md = [f"# SLM claims: run `{run_id}`", "", f"Environment: {env}.{walls}", "",
          "Every verdict below is computed from the stored rows by the rule at the end; none is written by hand. "
          + SOURCES, "", md_table(SUMMARY_HEADER, summary), ""]
    hp = [f"<h1>SLM claims: run <code>{esc(run_id)}</code></h1>", f"<p>Environment: {esc(env + '.' + walls)}</p>",
          "<p>Every verdict is computed from the stored rows by the rule below; each number links to its raw rows."
          "</p>", html_table(SUMMARY_HEADER, summary)]
    for c, res, v in results:
        png = out_dir / "plots" / f"{c.id}.png"
        png.write_bytes(data := fig_to_png(_plot(c, res, df)))  # drawn once: the file and the HTML share it
        sets = _settings(c, res, suite)
        md += _md_claim(c, res, v, sets, png.name)
        hp += _html_claim(c, res, v, sets, png_to_html(data, f"{c.id}: {c.title}"), html_link)
    md += ["## The rule", "", RULE, "", "Raw rows: `slmbench results --run " + run_id + "` (CSV), or the HTML "
           "report's appendix, where every number links to its rows.", ""]
    hp += ["<h2>The rule</h2>", f"<p>{esc(RULE)}</p>", "<h2>Raw rows</h2>", _rows_html(df, ids),
           "<h2>Environment manifest</h2>" + pre_json(manifest)]
    mdp, hpath = out_dir / "claims.md", out_dir / "claims.html"
    mdp.write_text("\n".join(md) + "\n", encoding="utf-8")
    hpath.write_text(page(f"slmbench claims {run_id}", "".join(hp), "td,th{padding:4px 8px}:target{background:#ffe}"),
                     encoding="utf-8")
    (out_dir / "verdicts.json").write_text(_json_safe(_verdicts(results)), encoding="utf-8")
    return mdp, hpath


def _verdicts(results) -> list[dict]:
    return [{"id": c.id, "verdict": v, "comparisons": [
        {"label": r.cmp.label or r.cmp.metric, "metric": r.cmp.metric, "a": r.a.mean,
         "b": r.b.mean if r.b is not None else None, "effect": r.effect, "ci": [r.lo, r.hi], "verdict": r.verdict,
         "why": r.why} for r in res]} for c, res, v in results]


def _json_safe(obj) -> str:
    """Valid JSON: a non-finite number (e.g. an infinite speedup) is written as null."""
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return [clean(v) for v in x] if isinstance(x, list) else x
    return json.dumps(clean(obj), indent=1)


def _rows_html(df: pd.DataFrame, ids: dict) -> str:
    """The appendix: every ok row, each with an anchor the numbers above link to."""
    cols = ["model", "variant", "device", "scenario", "params", "metric", "labels", "value", "unit", "n", "spread",
            "spread_kind", "source", "note"]
    cols = [c for c in cols if c in df.columns]
    ok = [(i, r) for i, r in df.iterrows() if r.get("status") == "ok"]
    rows = [[i] + ["" if pd.isna(r[c]) else r[c] for c in cols] for i, r in ok]
    return html_table(["#"] + cols, rows, row_attrs=[{"id": ids[i]} for i, _ in ok])
