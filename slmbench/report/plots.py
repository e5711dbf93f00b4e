"""Plots for HTML reports, so a report is one self-contained file: matplotlib (Agg) figures embedded as base64 PNG,
and interactive scatter plots as inline SVG: each point carries a <title> (the browser shows it on hover: which
variant, its numbers), so a plot whose labels overlap still tells which point is which — no script, no
dependency."""
from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass

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


# --- inline SVG scatter plots -------------------------------------------------------------------------------------

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class Point:
    x: float
    y: float
    label: str  # drawn next to the point (short)
    tip: str  # the hover text (full)
    group: str = ""  # same group, same colour (a model family)
    front: bool = False  # on the Pareto frontier: joined by the dashed line


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if hi <= lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    t = math.ceil(lo / step) * step
    out = []
    while t <= hi + step * 1e-9:
        out.append(round(t, 12))
        t += step
    return out


def _num(v: float) -> str:
    return f"{v:.4g}"


def svg_scatter(points: list[Point], xlabel: str, ylabel: str, title: str, w: int = 300, h: int = 230) -> str:
    """One scatter plot as an <svg> element ("" without points). The frontier points are joined in x order."""
    pts = [p for p in points if p.x is not None and p.y is not None and not (math.isnan(p.x) or math.isnan(p.y))]
    if not pts:
        return ""
    xs, ys = [p.x for p in pts], [p.y for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    padx, pady = (x1 - x0) * 0.15 or abs(x0) * 0.1 or 1, (y1 - y0) * 0.15 or abs(y0) * 0.1 or 1
    x0, x1, y0, y1 = x0 - padx, x1 + padx, y0 - pady, y1 + pady
    L, R, T, B = 46, 10, 22, 40  # margins: axis labels and ticks
    sx = lambda v: L + (v - x0) / (x1 - x0) * (w - L - R)
    sy = lambda v: h - B - (v - y0) / (y1 - y0) * (h - T - B)
    esc = html.escape
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'role="img" aria-label="{esc(title)}"><title>{esc(title)}</title>',
           f'<rect x="{L}" y="{T}" width="{w - L - R}" height="{h - T - B}" fill="none" stroke="#999"/>',
           f'<text x="{w / 2}" y="14" font-size="11" text-anchor="middle">{esc(title)}</text>']
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{L}" x2="{w - R}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" stroke="#eee"/>'
                   f'<text x="{L - 3}" y="{sy(t) + 3:.1f}" font-size="9" text-anchor="end">{_num(t)}</text>')
    for t in _ticks(x0, x1):
        X = sx(t)
        if L <= X <= w - R:
            out.append(f'<line x1="{X:.1f}" x2="{X:.1f}" y1="{T}" y2="{h - B}" stroke="#eee"/>'
                       f'<text x="{X:.1f}" y="{h - B + 11}" font-size="9" text-anchor="middle">{_num(t)}</text>')
    out.append(f'<text x="{(L + w - R) / 2}" y="{h - 6}" font-size="10" text-anchor="middle">{esc(xlabel)}</text>'
               f'<text transform="translate(11 {(T + h - B) / 2}) rotate(-90)" font-size="10" '
               f'text-anchor="middle">{esc(ylabel)}</text>')
    front = sorted((p for p in pts if p.front), key=lambda p: p.x)
    if len(front) > 1:
        path = " ".join(f"{sx(p.x):.1f},{sy(p.y):.1f}" for p in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-dasharray="4 3">'
                   "<title>Pareto frontier: no other point is better on both axes</title></polyline>")
    groups = list(dict.fromkeys(p.group for p in pts))
    for p in pts:
        c = COLOURS[groups.index(p.group) % len(COLOURS)]
        X, Y = sx(p.x), sy(p.y)
        out.append(f'<g class="pt"><title>{esc(p.tip)}</title>'
                   f'<circle cx="{X:.1f}" cy="{Y:.1f}" r="5" fill="{c}" fill-opacity="0.85" '
                   f'stroke="{"#000" if p.front else "#fff"}"/>'
                   f'<text x="{X + 7:.1f}" y="{Y - 5:.1f}" font-size="10">{esc(p.label)}</text></g>')
    out.append("</svg>")
    return "".join(out)


SVG_STYLE = ("svg.plot{max-width:100%;height:auto;font-family:system-ui,sans-serif}svg.plot g.pt:hover circle{r:7}"
         ".plots{display:flex;flex-wrap:wrap;gap:8px}")
