"""Plots for HTML reports: matplotlib (Agg) figures embedded as base64 PNG, so a report is one self-contained file."""
from __future__ import annotations

import base64
import html
import io
import json

import pandas as pd


def new_figure(w: float = 6.4, h: float = 3.6, dpi: int = 110):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=(w, h), dpi=dpi)


def fig_to_png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def fig_to_html(fig, alt: str) -> str:
    return png_to_html(fig_to_png(fig), alt)


def png_to_html(png: bytes | None, alt: str) -> str:
    """A PNG embedded in the page as base64, with its caption; "" when there is no plot."""
    if not png:
        return ""
    data = base64.b64encode(png).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(alt)}</figcaption></figure>"


def depth_sweep(df: pd.DataFrame, metric: str = "decode_tok_s") -> str:
    """Decode speed against context depth, one line per model variant (only when a depth sweep was run)."""
    from .tables import variant_name
    d = df[(df["metric"] == metric) & (df["status"] == "ok")].copy()
    if d.empty:
        return ""
    d["depth"] = d["params"].map(lambda p: json.loads(p or "{}").get("depth"))
    d = d.dropna(subset=["depth"])
    if d["depth"].nunique() < 2:
        return ""
    fig, ax = new_figure()
    for (model, var, dev), g in d.groupby([d["model"], d["variant"].map(variant_name), d["device"]]):
        g = g.sort_values("depth")
        ax.errorbar(g["depth"], g["value"], yerr=g["spread"].fillna(0), marker="o", capsize=3,
                    label=f"{model} [{var}] @{dev}")
    ax.set_xlabel("context depth (tokens in KV cache)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig_to_html(fig, f"{metric} vs context depth (median ± 95% CI)")
