"""Speculative decoding report: a table per (target, draft, g) and measured vs predicted speedup against g.

    section(df) -> TableSection | None   # the report section (Markdown, HTML with the plot, JSON)
    to_markdown(df), to_html(df) -> str  # the section alone ("" when the run has no speculative rows)
    plot_png(df) -> bytes | None

`df` holds tidy result rows (Store.rows); only ok rows of the `speculative` scenario are used.
"""
from __future__ import annotations

import json

import pandas as pd

from .. import fmt
from ..analysis.claims import break_even_acceptance
from .html import page
from .plots import fig_to_png
from .section import TableSection

COLUMNS = [  # (metric, header)
    ("acceptance_rate", "a"), ("mean_accepted_len", "accepted/step"), ("tokens_per_step", "tok/step"),
    ("tokens_per_step_predicted", "tok/step pred."), ("cost_ratio_c", "c"), ("verify_cost_ratio", "verify cost"),
    ("speedup_predicted", "speedup pred."), ("speedup", "speedup meas."), ("speedup_vs_predicted", "meas./pred."),
    ("speedup_predicted_verify", "pred. w/ meas. verify"),
    ("target_tok_s", "target tok/s"), ("spec_tok_s", "spec tok/s"), ("draft_tok_s", "draft tok/s"),
    ("a_star", "break-even a*"),
    ("hf_assisted_speedup", "HF assisted speedup"), ("greedy_identical", "lossless"),
]


def _draft_label(d) -> str:
    if d is None or d == "ngram":
        d = {"source": "ngram"}
    if isinstance(d, str):
        d = {"source": d}
    if d.get("name"):
        return d["name"]
    if d["source"] == "ngram":
        return f"ngram(n={d.get('min_n', 1)}..{d.get('max_n', 3)})"
    s = d["source"] + (f":{d['path'].rstrip('/').split('/')[-1]}" if d.get("path") else "")
    return s + (f"/L{d['truncate_layers']}" if d.get("truncate_layers") else "")


def frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per job: target, draft, g, mode, the metrics (value and spread), acceptance per position."""
    ok = df[(df["scenario"] == "speculative") & (df["status"] == "ok")]
    rows = []
    for job, g in ok.groupby("job_id", sort=False):
        p = json.loads(g["params"].iloc[0])
        r = {"target": g["model"].iloc[0], "draft": _draft_label(p.get("draft")), "g": p.get("g", 4),
             "mode": ("adaptive " if p.get("adaptive") else "") + (
                 f"T={p['temperature']}" if p.get("temperature") else "greedy")}
        for _, m in g.iterrows():
            if m["metric"] == "acceptance_rate_pos":
                r[f"pos{json.loads(m['labels'])['pos']}"] = m["value"]
            else:
                r[m["metric"]], r[m["metric"] + ":spread"] = m["value"], m["spread"]
        if r.get("cost_ratio_c") is not None and not pd.isna(r["cost_ratio_c"]):
            # the acceptance this draft would need to break even at its measured c and verify cost (None: never)
            v = r.get("verify_cost_ratio")
            r["a_star"] = break_even_acceptance(r.get("g_effective") or r["g"], r["cost_ratio_c"],
                                                1.0 if v is None or pd.isna(v) else v)
        rows.append(r)
    out = pd.DataFrame(rows)
    return out.sort_values(["target", "draft", "mode", "g"]).reset_index(drop=True) if len(out) else out


def _cell(r, metric) -> str:
    return fmt.with_spread(r.get(metric), r.get(metric + ":spread"), none="")


def table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    f = frame(df)
    if f.empty:
        return [], []
    cols = [(m, h) for m, h in COLUMNS if m in f.columns]
    header = ["target", "draft", "g", "mode"] + [h for _, h in cols] + ["a per position"]
    rows = []
    for _, r in f.iterrows():
        pos = [r[c] for c in sorted((c for c in f.columns if c.startswith("pos")), key=lambda c: int(c[3:]))
               if not pd.isna(r[c])]
        rows.append([r["target"], r["draft"], str(r["g"]), r["mode"]] + [_cell(r, m) for m, _ in cols] +
                    [" ".join(f"{x:.2f}" for x in pos)])
    return header, rows


def plot_png(df: pd.DataFrame) -> bytes | None:
    """Measured (points, CI bars) and predicted (dashed) speedup against g, one colour per (target, draft)."""
    f = frame(df)
    if f.empty:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    for i, ((target, draft, mode), g) in enumerate(f.groupby(["target", "draft", "mode"], sort=False)):
        g = g.sort_values("g")
        color = f"C{i % 10}"
        label = f"{draft} → {target}" + ("" if mode == "greedy" else f" ({mode})")
        ax.errorbar(g["g"], g["speedup"], yerr=g.get("speedup:spread"), fmt="o-", color=color, capsize=3,
                    label=f"{label}: measured")
        ax.plot(g["g"], g["speedup_predicted"], "x--", color=color, alpha=0.8, label=f"{label}: predicted")
        if "speedup_predicted_verify" in g:
            ax.plot(g["g"], g["speedup_predicted_verify"], "+:", color=color, alpha=0.8,
                    label=f"{label}: predicted, measured verify cost")
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(f["g"].unique()), labels=[str(x) for x in sorted(f["g"].unique())])
    ax.set_xlabel("draft length g")
    ax.set_ylabel("speedup over the target alone (×)")
    ax.set_title("Speculative decoding: measured vs (1-a^(g+1))/((1-a)(gc+1))", fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig_to_png(fig)


NOTE = ("a: acceptance rate (accepted ÷ draft positions reached); c: draft cost per drafted position ÷ target "
        "one-token step; verify cost: one target pass over g+1 tokens ÷ a one-token step (the formula assumes 1); "
        "speedup pred.: Leviathan et al. (1-a^(g+1))/((1-a)(g·c+1)) from the measured a and c; pred. w/ meas. "
        "verify: the same with the measured verify cost in place of 1; speedup meas.: "
        "wall clock, target alone ÷ speculative, same loop, runtime, prompt and new-token count; lossless: fraction "
        "of repetitions whose output equals the target alone token for token; HF assisted: transformers' "
        "assisted/prompt-lookup generation on the same pair, once, end to end.")


def section(df: pd.DataFrame) -> TableSection | None:
    header, rows = table(df)
    if not rows:
        return None
    return TableSection("speculative", "Speculative decoding", header, rows, NOTE, plot=lambda: plot_png(df),
                        alt="measured and predicted speedup vs draft length g")


def to_markdown(df: pd.DataFrame) -> str:
    s = section(df)
    return s.markdown() if s else ""


def to_html(df: pd.DataFrame) -> str:
    s = section(df)
    return s.html() if s else ""


def write(df: pd.DataFrame, dest) -> list:
    """Write speculative.md, speculative.html (a standalone page around the section) and speedup_vs_g.png."""
    from pathlib import Path
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "speculative.md").write_text(to_markdown(df) + "\n![speedup vs g](speedup_vs_g.png)\n")
    (dest / "speculative.html").write_text(page("slmbench speculative", to_html(df)))
    png = plot_png(df)
    if png:
        (dest / "speedup_vs_g.png").write_bytes(png)
    return sorted(dest.iterdir())


if __name__ == "__main__":  # python -m slmbench.report.speculative RESULTS_DIR DEST  (all runs in the store)
    import sys

    from ..store import Store
    for p in write(Store(sys.argv[1]).rows(), sys.argv[2]):
        print(p)
