"""Quality vs cost: per model variant × device, accuracy / bits-per-byte next to decode tok/s, peak RSS and J/token,
and the Pareto frontier of quality against each cost (matplotlib, embedded as a PNG).

    section(df) -> TableSection | None       # df: tidy rows from Store.rows(...)
"""
from __future__ import annotations

import json

import pandas as pd

from .. import fmt
from .plots import fig_to_png
from .section import TableSection
from .tables import variant_name

# cost columns: (metric, title, lower is better?)
COSTS = [("decode_tok_s", "decode tok/s", False), ("peak_mem_mb", "peak RSS MB", True),
         ("decode_j_per_token", "decode J/tok", True)]
ACC = ("acc_norm", "acc")  # headline per task: acc_norm where the task has it (lm-eval's convention), else acc


def _key(df):
    return list(zip(df["model"], df["variant"].map(variant_name), df["device"]))


def quality_columns(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(metric, task/text label, column title) for each quality figure present."""
    ok = df[(df["status"] == "ok")]
    cols = []
    acc = ok[ok["scenario"] == "accuracy"]
    tasks = list(dict.fromkeys(json.loads(x).get("task") for x in acc["labels"]))
    groups = {t for t in tasks if t and any(u != t and u.startswith(f"{t}_") for u in tasks if u)}
    for task in tasks:
        if not task or any(task.startswith(f"{g}_") for g in groups):  # a group's subtasks: the group stands
            continue
        have = set(acc[acc["labels"].map(lambda s: json.loads(s).get("task") == task)]["metric"])
        m = next((m for m in ACC if m in have), None)
        if m:
            cols.append((m, task, f"{task} {m}"))
        if "perplexity" in have:
            cols.append(("perplexity", task, f"{task} ppl"))
    ppl = ok[(ok["scenario"] == "perplexity") & (ok["metric"] == "bits_per_byte")]
    for text in dict.fromkeys(json.loads(x).get("text") for x in ppl["labels"]):
        cols.append(("bits_per_byte", text, f"{text} bits/B"))
    return cols


def join(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, variant, device): quality values (+ _se, _n) and cost values. Sweeps of a cost metric
    (several prompt lengths) keep the first value; the note says so."""
    ok = df[df["status"] == "ok"].copy()
    ok["key"] = _key(ok)
    ok["label"] = ok["labels"].map(lambda s: (json.loads(s or "{}").get("task") or json.loads(s or "{}").get("text")))
    rows = {}
    for k in dict.fromkeys(ok["key"]):
        rows[k] = {"model": k[0], "variant": k[1], "device": k[2]}
    for m, lab, title in quality_columns(df):
        sub = ok[(ok["metric"] == m) & (ok["label"] == lab)]
        for _, r in sub.iterrows():
            rows[r["key"]].setdefault(title, r["value"])
            rows[r["key"]].setdefault(title + " _se", r["spread"])
            rows[r["key"]].setdefault(title + " _n", r["n"])
    for m, title, _ in COSTS:
        for _, r in ok[ok["metric"] == m].iterrows():
            rows[r["key"]].setdefault(title, r["value"])
    out = pd.DataFrame(list(rows.values()))
    qual = [t for _, _, t in quality_columns(df)]
    keep = [c for c in out.columns if c in qual or c.split(" _")[0] in qual]
    has_q = out[[c for c in qual if c in out.columns]].notna().any(axis=1) if qual else pd.Series(False, out.index)
    return out[has_q].reset_index(drop=True) if len(keep) else out.iloc[0:0]


def _fmt(v, se=None, pct=False) -> str:
    return fmt.pct_points(v, se) if pct else fmt.with_spread(v, se, none="")


def table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    j = join(df)
    if j.empty:
        return [], []
    qcols = [(m, t) for m, _, t in quality_columns(df) if t in j.columns]
    ccols = [(t, m) for m, t, _ in COSTS if t in j.columns]
    ns = {t: set(j[t + " _n"].dropna().astype(int)) for _, t in qcols}  # items: in the title when all agree
    header = ["model", "variant", "device"] + [t + (" %" if m in ACC else "") + (f" (n={min(ns[t])})" if
                                               len(ns[t]) == 1 else "") for m, t in qcols] + [t for t, _ in ccols]
    rows = []
    for _, r in j.iterrows():
        row = [r["model"], r["variant"], r["device"]]
        row += [_fmt(r.get(t), r.get(t + " _se"), pct=m in ACC) +
                (f" (n={int(r[t + ' _n'])})" if len(ns[t]) > 1 and not pd.isna(r.get(t + " _n")) else "")
                for m, t in qcols]
        row += [_fmt(r.get(t)) for t, _ in ccols]
        rows.append(row)
    return header, rows


def pareto(points: list[tuple[float, float]], cost_lower_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both quality (higher) and cost."""
    idx = []
    for i, (c, q) in enumerate(points):
        better = (lambda a, b: a <= b) if cost_lower_better else (lambda a, b: a >= b)
        dominated = any(better(c2, c) and q2 >= q and (c2, q2) != (c, q) for c2, q2 in points)
        if not dominated:
            idx.append(i)
    return idx


def quality_score(j: pd.DataFrame, df: pd.DataFrame) -> tuple[pd.Series, str]:
    """The y axis: mean headline accuracy over the tasks every plotted variant has; else -bits/byte."""
    acc = [t for m, _, t in quality_columns(df) if m in ACC and t in j.columns and j[t].notna().all()]
    if acc:
        return j[acc].mean(axis=1) * 100, "accuracy %" + (f" (mean of {len(acc)} tasks)" if len(acc) > 1 else
                                                         f" ({acc[0]})")
    bpb = [t for m, _, t in quality_columns(df) if m == "bits_per_byte" and t in j.columns and j[t].notna().all()]
    if bpb:
        return -j[bpb[0]], f"− {bpb[0]} (higher is better)"
    return pd.Series(dtype=float), ""


def plot_png(df: pd.DataFrame) -> bytes | None:
    j = join(df)
    q, qlabel = quality_score(j, df) if not j.empty else (pd.Series(dtype=float), "")
    costs = [(t, lower) for _, t, lower in COSTS if t in j.columns and j[t].notna().any()]
    if q.empty or not costs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(costs), figsize=(4.2 * len(costs), 3.6), squeeze=False, dpi=110)
    short = lambda v: ",".join(kv.split("=", 1)[-1] for kv in v.split(","))  # knob values only, to fit
    names = [f"{m}\n{short(v)}" if v != "default" else m for m, v in zip(j["model"], j["variant"])]
    for ax, (t, lower) in zip(axes[0], costs):
        ok = j[t].notna() & q.notna()
        pts = [(float(c), float(y)) for c, y in zip(j[t][ok], q[ok])]
        labs = [n for n, o in zip(names, ok) if o]
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], color="tab:blue")
        for (c, y), n in zip(pts, labs):
            ax.annotate(n, (c, y), fontsize=7, xytext=(3, 3), textcoords="offset points", annotation_clip=False)
        ax.margins(x=0.25, y=0.15)
        front = sorted((pts[i] for i in pareto(pts, lower)), key=lambda p: p[0])
        if len(front) > 1:
            ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:red", label="Pareto frontier")
            ax.legend(fontsize=7)
        ax.set_xlabel(t + (" (lower is better)" if lower else " (higher is better)"))
        ax.set_ylabel(qlabel, fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle("quality vs cost", fontsize=10)
    return fig_to_png(fig)


NOTE = ("Accuracy in % ± stderr over n items (lm-eval; acc_norm where the task defines it, else acc); bits/B: "
        "held-out bits per byte (lower is better); cost columns from the latency, memory and energy scenarios "
        "of the same model variant and device.")


def section(df: pd.DataFrame) -> TableSection | None:
    """The table and the Pareto plot; None when the rows hold no quality figure."""
    header, rows = table(df)
    if not rows:
        return None
    return TableSection("quality_vs_cost", "Quality vs cost", header, rows, NOTE, note_first=True,
                        plot=lambda: plot_png(df), alt="quality vs cost, Pareto frontier")


def quality_vs_cost(df: pd.DataFrame) -> tuple[str, str]:
    """(HTML fragment, Markdown); both empty when the rows hold no quality figure."""
    s = section(df)
    return (s.html(), s.markdown()) if s else ("", "")
