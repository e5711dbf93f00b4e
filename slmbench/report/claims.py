"""The claims report (`slmbench report --claims`): per claim the question, the comparisons (arms, one knob changed),
numbers with 95% CIs and the minimum detectable effect, the computed verdict and the rule behind it, and a forest
plot; Markdown (+ PNGs) and one HTML file with links from every number to the raw rows it came from, and the
environment manifest. Verdicts are CSS badges (no emoji: they render as empty boxes without an emoji font); one
that an assumption decides has its own, dashed badge.

The report ships the rows it was computed from (rows.csv: `slmbench results --samples` columns, git columns
included; run.json: the run's manifest, job info, suite text), and `from_export` rebuilds it from them alone:

    python -m slmbench.report.claims ROWS.csv SUITE.yaml OUT_DIR"""
from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from .. import fmt
from ..analysis.claims import (Z, Claim, Result, break_even_acceptance, claim_basis, evaluate, select,
                               with_cost_rows)
from ..analysis.retention import retention
from .forest import forest
from .html import esc, page, pre_json, ul
from .plots import fig_to_png, png_to_html
from .tables import html_table, md_table

def badge_md(verdict: str, basis: str = "measured", bold: bool = True) -> str:
    """Text, not emoji: bold in headings; plain in table cells (the table renderer escapes Markdown)."""
    if not bold:
        return verdict.upper() + (" (by assumption)" if basis != "measured" else "")
    return f"**{verdict.upper()}**" + (" *(by assumption)*" if basis != "measured" else "")


def badge_html(verdict: str, basis: str = "measured") -> str:
    """A CSS badge; a verdict an assumption decides gets the dashed `by assumption` style and says so."""
    if basis != "measured":
        return (f"<span class='badge b-{esc(verdict)} b-assumed' title='{esc(basis)}'>{esc(verdict)} · by "
                f"assumption</span>")
    return f"<span class='badge b-{esc(verdict)}'>{esc(verdict)}</span>"


STYLE = ("td,th{padding:4px 8px}:target{background:#ffe}"
         ".badge{display:inline-block;padding:1px 8px;border-radius:9px;font-size:.85em;font-weight:600;"
         "border:2px solid transparent;color:#fff}.b-supported{background:#2e7d32}.b-refuted{background:#c62828}"
         ".b-inconclusive{background:#757575}.b-assumed{background:#fff;border-style:dashed}"
         ".b-assumed.b-supported{color:#2e7d32;border-color:#2e7d32}.b-assumed.b-refuted{color:#c62828;"
         "border-color:#c62828}.b-assumed.b-inconclusive{color:#757575;border-color:#757575}"
         ".changed{border-left:4px solid #e45756;padding-left:8px}")
RULE = ("Effect d = mean(a) − mean(b), signed so that d > 0 favours the claim (relative: ÷ |mean(b)|). Where every "
        "row of both arms carries per-unit values over the same units (held-out sequences, eval items), the "
        "comparison is *paired*: d_i per unit from the arms' seed means, se² = var(d_i)/n + the seed variance of "
        "each arm's mean (s²/k); else *unpaired*: an arm's se is the spread of its rows over seeds, never below "
        "the rows' own stderr. 95% CI = d ± t(0.975, df)·se, df by Welch–Satterthwaite (n−1 for units, k−1 for "
        "seeds); MDE = (t(0.975) + t(0.80))·se, the smallest true effect found with 80% power. *better*: supported "
        "if the CI lies above 0 and every a row beats every b row; refuted if the CI lies below 0 and every b row "
        "beats every a row (the same standard); *not_worse*: supported if the CI lies above −margin, refuted if "
        "below (margins are fixed in the suite before the run). An arm with fewer rows than the comparison's "
        "min_rows (seeds) is inconclusive. A claim is supported when all its primary comparisons are, refuted "
        "when any is. Paired 0/1 items also report an exact McNemar p. Cost comparisons are also decided at the "
        "ends of each assumption's stated range; a verdict that changes there, or rests on a definition, is "
        "labelled *by assumption* (dashed badge). Projected, estimated or published figures carry no error of "
        "their own: verdicts on them say so.")
BADGE = {v: badge_md(v) for v in ("supported", "refuted", "inconclusive")}


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
        mde = "n/a" if r.mde is None else _num(r.mde, c.relative)
        verdict = ("" if c.primary else "(context) ") + r.verdict + (" (by assumption)" if r.basis != "measured"
                                                                     else "")
        why = r.why + (f" [{r.basis}]" if r.basis != "measured" else "")
        out.append([c.label or c.metric, f"{c.metric} ({c.better} is better)", link(r.a, _desc(c.a)),
                    _arm_text(r.a), link(r.b, _desc(c.b)) if r.b is not None else "—", b, test, r.how or "—", eff,
                    mde, verdict, why])
    return out


CMP_HEADER = ["comparison", "metric", "a (claim's side)", "a: mean ± 95% CI", "b", "b: mean ± 95% CI", "test",
              "pairing", "effect [95% CI]", "MDE (80% power)", "verdict", "why"]


def _series(v) -> str:
    """A param naming a line: a dict (e.g. a draft spec) by its name, else its short JSON."""
    if isinstance(v, dict):
        return str(v.get("name") or json.dumps(v, sort_keys=True))
    return str(v)


def _line_plot(claim: Claim, df: pd.DataFrame):
    """The claim's own line plot (e.g. speed vs context depth, speedup vs g), None when it has none or no rows."""
    if not claim.plot:
        return None
    from .plots import new_figure
    p = claim.plot
    fig, ax = new_figure(6.4, 3.4)
    drew = False
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
            drew = True
    if not drew:
        import matplotlib.pyplot as plt
        plt.close(fig)
        return None
    ax.set_xlabel(p.x, fontsize=8)
    ax.set_title(f"{claim.id}: {p.metric} vs {p.x}", fontsize=8)
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


SUMMARY_HEADER = ["claim", "title", "regime", "verdict", "comparisons"]
SOURCES = ("Sources: *measured* (timers, counters, lm-eval), *estimated* (energy from CPU time × W/core where no "
           "counter exists; list prices), *projected* (another device, from the host's roofline).")


def _env(manifest: dict) -> str:
    host, vers, git = manifest.get("host", {}), manifest.get("versions", {}), manifest.get("git") or {}
    return (f"{host.get('cpu_model', '?')}, {host.get('logical_cpus', '?')} CPUs, {host.get('ram_gb', '?')} GB; "
            f"torch {vers.get('torch', '?')}, transformers {vers.get('transformers', '?')}, "
            f"lm-eval {vers.get('lm_eval', vers.get('lm-eval', '?'))}; commit {git.get('commit') or 'n/a'}"
            f"{' (dirty)' if git.get('dirty') else ''}")


def _break_even_rows(claim: Claim, df: pd.DataFrame) -> list[list[str]]:
    """Per draft and g of a speculative claim: measured acceptance a, cost ratio c, verify cost v, and a*."""
    if not any(cmp.metric == "speedup" for cmp in claim.comparisons):
        return []
    sp = df[(df["scenario"] == "speculative") & (df["status"] == "ok")]
    out = []
    for (model, params), g in sp.groupby(["model", "params"], sort=False):
        val = {m: float(x) for m, x in zip(g["metric"], g["value"]) if x is not None and not pd.isna(x)}
        if "cost_ratio_c" not in val or "acceptance_rate" not in val:
            continue
        p = json.loads(params)
        ge = val.get("g_effective", p.get("g", 1))
        v = val.get("verify_cost_ratio", 1.0)
        ast = break_even_acceptance(ge, val["cost_ratio_c"], v)
        out.append([model, _series(p.get("draft")), fmt.sig(p.get("g")), fmt.sig(val["acceptance_rate"]),
                    fmt.sig(val["cost_ratio_c"]), fmt.sig(v), "unreachable (g+1 < g·c+v)" if ast is None else
                    fmt.sig(ast), fmt.sig(val.get("speedup"))])
    return out


def _retention_rows(claim: Claim, df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """The claim's retention table (analysis.retention): header and rows, or ([], []) when it has none."""
    if claim.retention is None:
        return [], []
    rs = retention(df, claim.retention.teacher, claim.retention.students, claim.retention.metric)
    tasks = sorted({t for r in rs for t in r["tasks"]}, key=str)
    pct = lambda x: "—" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    header = ["student arm", "budget (tokens)", "seeds", "bits/B (teacher)", "bits/B kept"]
    header += [f"{t} {claim.retention.metric} (teacher)" for t in tasks] + [f"{t} kept (of lead over chance)"
                                                                            for t in tasks]
    rows = []
    for r in rs:
        row = [r["arm"], "—" if r["budget"] is None else f"{int(r['budget']):,}", str(r["seeds"]), f"{fmt.sig(r['bpb'])} ({fmt.sig(r['teacher_bpb'])})",
               pct(r["bpb_kept"])]
        row += [f"{fmt.sig(r['tasks'][t]['student'])} ({fmt.sig(r['tasks'][t]['teacher'])})" if t in r["tasks"]
                else "—" for t in tasks]
        row += [f"{pct(r['tasks'][t]['kept'])} ({pct(r['tasks'][t]['lead_kept'])})" if t in r["tasks"] else "—"
                for t in tasks]
        rows.append(row)
    return header, rows


RETENTION_TEXT = ("How much of the teacher's quality each student keeps, per training budget (measured; seeds "
                  "averaged). bits/B kept = teacher ÷ student on the same held-out split; accuracy kept = student ÷ "
                  "teacher on the same items, and in brackets the share of the teacher's lead over chance "
                  "(1 / choices) the student keeps.")


BE_HEADER = ["target", "draft", "g", "acceptance a (measured)", "c = draft step / target step", "verify cost v",
             "break-even a*", "speedup"]


def suite_changes(old_text: str | None, new_text: str | None, quick: bool = False) -> list[str]:
    """What changed between the suite as the run started and the file scored now: per claim (added, removed,
    changed: margins included), and whether anything else did. [] when nothing did or no old text is stored."""
    if not old_text or new_text is None or old_text == new_text:
        return []
    import yaml
    try:
        old, new = yaml.safe_load(old_text) or {}, yaml.safe_load(new_text) or {}
    except Exception:  # noqa: BLE001 — an unreadable old text: say the file changed, nothing finer
        return ["the suite file changed since the run (its stored text could not be parsed)"]
    oc = {c.get("id"): c for c in old.get("claims") or []}
    nc = {c.get("id"): c for c in new.get("claims") or []}
    out = [f"claim {i}: added after the run" for i in nc if i not in oc]
    out += [f"claim {i}: removed since the run" for i in oc if i not in nc]
    out += [f"claim {i}: its definition (comparisons, margins, arms, assumptions) changed since the run"
            for i in nc if i in oc and oc[i] != nc[i]]
    rest = lambda d: {k: v for k, v in d.items() if k != "claims"}  # noqa: E731
    if rest(old) != rest(new):
        out.append("the suite outside `claims:` (models, scenarios, settings) changed since the run")
    return out or ["the suite file changed since the run (formatting or comments only)"]


def _md_claim(c: Claim, res: list[Result], v: str, basis: str, sets: list[str], pngs: list[str],
              be: list[list[str]]) -> list[str]:
    md = [f"## {c.id} — {c.title}: {badge_md(v, basis)}", "", f"**Question.** {c.question}", ""]
    md += [f"**Regime.** {c.regime}", ""] if c.regime else []
    md += [f"**Framing.** {c.framing}", ""] if c.framing else []
    md += [f"**Settings.** {c.settings}", ""] if c.settings else []
    md += [f"**Basis.** {basis}", ""] if basis != "measured" else []
    md += [md_table(CMP_HEADER, _cmp_rows(res, lambda arm, text: text)), ""]
    if be:
        md += ["Break-even acceptance: speculative decoding pays only when the draft's acceptance a exceeds a*, "
               "where E[tokens](a*, g) = g·c + v at the measured cost ratio c and verify cost v.", "",
               md_table(BE_HEADER, be), ""]
    md += ["Arms:", ""] + [f"- {s}" for s in sets] + [""] if sets else []
    return md + [f"![{c.id}](plots/{p})" for p in pngs] + [""]


def _html_claim(c: Claim, res: list[Result], v: str, basis: str, sets: list[str], figs: list[str], link,
                be: list[list[str]]) -> list[str]:
    hp = [f"<h2 id='{esc(c.id)}'>{esc(c.id)} — {esc(c.title)}: {badge_html(v, basis)}</h2>",
          f"<p><b>Question.</b> {esc(c.question)}</p>"]
    hp += [f"<p><b>Regime.</b> {esc(c.regime)}</p>"] if c.regime else []
    hp += [f"<p><b>Framing.</b> {esc(c.framing)}</p>"] if c.framing else []
    hp += [f"<p><b>Settings.</b> {esc(c.settings)}</p>"] if c.settings else []
    hp += [f"<p><b>Basis.</b> {esc(basis)}</p>"] if basis != "measured" else []
    hp.append(html_table(CMP_HEADER, _cmp_rows(res, link), raw_cols={2, 4}))
    if be:
        hp += ["<p>Break-even acceptance a*: E[tokens](a*, g) = g·c + v at the measured c and v.</p>",
               html_table(BE_HEADER, be)]
    return hp + ([ul(sets)] if sets else []) + figs


def write(df: pd.DataFrame, suite, claims: list[Claim], out_dir: Path, run_id: str, manifest: dict,
          wall: str = "", infos: dict | None = None, changes: list[str] | None = None,
          suite_text: str | None = None, file: str = "") -> tuple[Path, Path]:
    """claims.md + plots/, claims.html, verdicts.json, and the rows behind them (rows.csv, run.json) in `out_dir`.
    `infos`: the run's job info (Store.job_info), which the cost rows need (threads, bytes per token); `changes`:
    suite_changes() since the run, stated at the top; `suite_text`: the suite as the run started (shipped)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "plots").mkdir(exist_ok=True)
    df = df.reset_index(drop=True)
    _export(df, out_dir, run_id, manifest, infos, suite_text, wall)
    results = evaluate(claims, df, add_cost=True, infos=infos, manifest=manifest, file=file)
    df = with_cost_rows(df, infos, manifest).reset_index(drop=True)
    ids = {i: f"row-{i}" for i in df.index}

    def html_link(arm, text):
        if arm is None or arm.rows is None or arm.rows.empty:
            return html.escape(text)
        return f"{html.escape(text)} " + " ".join(f"<a href='#{ids[i]}'>[{i}]</a>" for i in arm.rows.index if i in ids)

    env, walls = _env(manifest), (f" Wall time: {wall}." if wall else "")
    commits = _commits(df)
    bases = {c.id: claim_basis(res) for c, res, _ in results}
    summary = [[c.id, c.title, c.regime or "—", badge_md(v, bases[c.id], bold=False),
                "; ".join(f"{r.cmp.label or r.cmp.metric}: {r.verdict}" for r in res)] for c, res, v in results]
    hsummary = [[c.id, c.title, c.regime or "—", badge_html(v, bases[c.id]),
                 "; ".join(f"{r.cmp.label or r.cmp.metric}: {r.verdict}" for r in res)] for c, res, v in results]
    md = [f"# SLM claims: run `{run_id}`", "", f"Environment: {env}.{walls}", "", f"Code: {commits}.", ""]
    hp = [f"<h1>SLM claims: run <code>{esc(run_id)}</code></h1>", f"<p>Environment: {esc(env + '.' + walls)}</p>",
          f"<p>Code: {esc(commits)}.</p>"]
    if changes:
        md += ["**The suite changed since this run** (scored against the rows the run stored, by the claims as "
               "they read now):", ""] + [f"- {x}" for x in changes] + [""]
        hp += ["<div class='changed'><p><b>The suite changed since this run</b> (scored against the rows the run "
               "stored, by the claims as they read now):</p>" + ul(changes) + "</div>"]
    md += ["Every verdict below is computed from the stored rows by the rule at the end; none is written by hand. "
           + SOURCES + " A verdict marked *(by assumption)* follows from an assumption or a definition, not from "
           "a measurement.", "", md_table(SUMMARY_HEADER, summary), ""]
    hp += ["<p>Every verdict is computed from the stored rows by the rule below; each number links to its raw rows. "
           "A dashed badge marks a verdict decided by an assumption, not by a measurement.</p>",
           html_table(SUMMARY_HEADER, hsummary, raw_cols={3})]
    for c, res, v in results:
        pngs, figs = [], []
        for suffix, fig in (("", forest(res, f"{c.id}")), ("-" + (c.plot.x if c.plot else ""), _line_plot(c, df))):
            if fig is None:
                continue
            png = out_dir / "plots" / f"{c.id}{suffix}.png"
            png.write_bytes(data := fig_to_png(fig))  # drawn once: the file and the HTML share it
            pngs.append(png.name)
            figs.append(png_to_html(data, f"{c.id}: {c.title}" + (" — effects with 95% CIs" if not suffix else "")))
        sets = _settings(c, res, suite)
        be = _break_even_rows(c, df)
        md += _md_claim(c, res, v, bases[c.id], sets, pngs, be)
        hp += _html_claim(c, res, v, bases[c.id], sets, figs, html_link, be)
        rh, rr = _retention_rows(c, df)
        if rr:
            md += [RETENTION_TEXT, "", md_table(rh, rr), ""]
            hp += [f"<p>{esc(RETENTION_TEXT)}</p>", html_table(rh, rr)]
    md += ["## The rule", "", RULE, "", f"Raw rows: `rows.csv` beside this file (the columns of `slmbench results "
           f"--run {run_id} --samples`, with each job's git commit), `run.json` (manifest, job info, the suite as "
           "the run started). Re-derive every number: `python -m slmbench.report.claims rows.csv SUITE OUT`.", ""]
    hp += ["<h2>The rule</h2>", f"<p>{esc(RULE)}</p>", "<h2>Raw rows</h2>", _rows_html(df, ids),
           "<h2>Environment manifest</h2>" + pre_json(manifest)]
    mdp, hpath = out_dir / "claims.md", out_dir / "claims.html"
    mdp.write_text("\n".join(md) + "\n", encoding="utf-8")
    hpath.write_text(page(f"slmbench claims {run_id}", "".join(hp), STYLE), encoding="utf-8")
    (out_dir / "verdicts.json").write_text(_json_safe(_verdicts(results)), encoding="utf-8")
    return mdp, hpath


def _commits(df: pd.DataFrame) -> str:
    """Which code produced the rows: each commit (dirty or not) with its row count."""
    if "git_commit" not in df.columns:
        return "per-job commit not recorded (rows from before it was)"
    meas = df[df["scenario"] != "cost"]
    keys = [(str(c)[:12] if isinstance(c, str) and c else "not recorded",
             bool(d) if d is not None and not pd.isna(d) else None)
            for c, d in zip(meas["git_commit"], meas.get("git_dirty", [None] * len(meas)))]
    counts: dict = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return ", ".join(f"{c}{' (dirty)' if d else ''}: {n} rows" for (c, d), n in counts.items()) or "no rows"


def _export(df: pd.DataFrame, out_dir: Path, run_id: str, manifest: dict, infos: dict | None,
            suite_text: str | None, wall: str) -> None:
    """The rows this report is computed from, as `slmbench results --samples` writes them, and the rest of what
    it reads (manifest, job info, the suite as the run started), so it can be rebuilt from the directory alone."""
    df.to_csv(out_dir / "rows.csv", index=False)
    (out_dir / "run.json").write_text(json.dumps({"run_id": run_id, "manifest": manifest, "job_info": infos or {},
                                                  "suite_text": suite_text, "wall": wall}, indent=1, default=str),
                                      encoding="utf-8")


def load_export(rows_path: Path) -> tuple[pd.DataFrame, dict]:
    """Rows from a CSV or Parquet export (`slmbench results --samples [--format parquet]`), and the run.json beside
    it when there is one ({} otherwise: then cost rows are computed without job info)."""
    from ..errors import UserError
    rows_path = Path(rows_path)
    try:
        df = pd.read_parquet(rows_path) if rows_path.suffix == ".parquet" else pd.read_csv(rows_path)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the exported rows: {e}", file=str(rows_path))
    need = {"run_id", "model", "scenario", "metric", "value", "status", "params", "labels", "variant", "source"}
    if missing := sorted(need - set(df.columns)):
        raise UserError(f"not a `slmbench results` export: no column {', '.join(missing)}", file=str(rows_path))
    for col in ("params", "labels", "variant", "note", "samples", "spread_kind", "job_id", "git_commit"):
        if col in df.columns:  # empty JSON/text cells read back as NaN
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    for col in ("params", "labels", "variant"):
        df[col] = df[col].fillna("{}")
    run = rows_path.parent / "run.json"
    return df, json.loads(run.read_text(encoding="utf-8")) if run.is_file() else {}


def from_export(rows_path: Path, suite_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """The claims report rebuilt from an export alone (no results store): every number re-derived from its rows."""
    from ..plan import parse_suite
    df, run = load_export(rows_path)
    rid = str(run.get("run_id") or df["run_id"].iloc[0])
    quick = str(run.get("manifest", {}).get("suite", "")).endswith("-quick") or rid.endswith("-quick") or \
        df.get("suite", pd.Series(dtype=str)).astype(str).str.endswith("-quick").any()
    suite = parse_suite(str(suite_path), quick=bool(quick))
    from ..analysis.claims import parse
    changes = suite_changes(run.get("suite_text"), Path(suite_path).read_text(encoding="utf-8"), bool(quick))
    return write(df, suite, parse(suite.claims, str(suite_path)), Path(out_dir), rid, run.get("manifest", {}),
                 run.get("wall", ""), infos=run.get("job_info") or {}, changes=changes,
                 suite_text=run.get("suite_text"), file=str(suite_path))


def from_store(st, rid: str, suite_path: str, out_dir: Path, suite, wall: str = "") -> tuple[Path, Path]:
    """The report from a results store (what `slmbench report --claims` calls): rows with their per-unit samples
    (paired comparisons), and a stated note when the suite changed since the run."""
    from ..analysis.claims import parse
    text = st.suite_text(rid)
    try:
        now = Path(suite_path).read_text(encoding="utf-8")
    except OSError:
        now = None
    changes = suite_changes(text, now)
    return write(st.rows(rid, samples=True), suite, parse(suite.claims, str(suite_path)), out_dir, rid,
                 st.manifest(rid), wall, infos=st.job_info(rid), changes=changes, suite_text=text,
                 file=str(suite_path))


def _verdicts(results) -> list[dict]:
    return [{"id": c.id, "verdict": v, "basis": claim_basis(res), "regime": c.regime, "comparisons": [
        {"label": r.cmp.label or r.cmp.metric, "metric": r.cmp.metric, "a": r.a.mean,
         "b": r.b.mean if r.b is not None else None, "effect": r.effect, "ci": [r.lo, r.hi], "mde": r.mde,
         "pairing": r.how, "verdict": r.verdict, "basis": r.basis, "why": r.why} for r in res]}
        for c, res, v in results]


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
            "spread_kind", "source", "note", "git_commit", "git_dirty"]
    cols = [c for c in cols if c in df.columns]
    ok = [(i, r) for i, r in df.iterrows() if r.get("status") == "ok"]
    rows = [[i] + ["" if pd.isna(r[c]) else r[c] for c in cols] for i, r in ok]
    return html_table(["#"] + cols, rows, row_attrs=[{"id": ids[i]} for i, _ in ok])


def main(argv: list[str]) -> int:
    """python -m slmbench.report.claims ROWS.csv|.parquet SUITE.yaml OUT_DIR"""
    import sys
    from ..errors import UserError
    if len(argv) != 3:
        print("usage: python -m slmbench.report.claims ROWS.csv SUITE.yaml OUT_DIR", file=sys.stderr)
        return 2
    try:
        md, hp = from_export(Path(argv[0]), Path(argv[1]), Path(argv[2]))
    except UserError as e:
        print(e.line(), file=sys.stderr)
        return 2
    print(f"wrote {md} and {hp}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
