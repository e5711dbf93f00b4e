"""Forest plot of a claim's comparisons: each effect as a point with its 95% CI, against the bar it must clear (0, or
-margin for not_worse), the minimum detectable effect shaded around 0. One row per comparison, each on its own
axis (their units differ: bits/byte, fractions, relative changes), never a bar from zero."""
from __future__ import annotations

import textwrap

COLOR = {"supported": "#2e7d32", "refuted": "#c62828", "inconclusive": "#757575"}


def forest(results, title: str = ""):
    """A figure with one row per comparison that has an effect (a one-line panel saying so when none has)."""
    from .plots import new_figure
    shown = [r for r in results if r.effect is not None and r.lo is not None]
    if not shown:
        fig, ax = new_figure(7.2, 0.9)
        ax.axis("off")
        ax.text(0.01, 0.5, f"{title}: no comparison has rows on both sides (nothing to plot)", fontsize=8)
        return fig
    fig, _ = new_figure(7.2, 0.75 * len(shown) + 0.7)
    fig.clf()
    for i, r in enumerate(shown):
        ax = fig.add_subplot(len(shown), 1, i + 1)
        c = r.cmp
        floor = -(c.margin or 0.0) if c.test == "not_worse" else 0.0
        col = COLOR.get(r.verdict, "#757575")
        if r.mde:
            ax.axvspan(-r.mde, r.mde, color="#eeeeee", zorder=0, label="± MDE (80% power)")
        ax.axvline(0, color="#333333", lw=0.8)
        if floor:
            ax.axvline(floor, color="#e45756", ls="--", lw=1, label=f"margin {floor:+g}")
        ax.hlines(0, r.lo, r.hi, color=col, lw=2.5)
        ax.plot([r.effect], [0], "o", color=col, ms=6, mfc="white" if r.basis != "measured" else col)
        lo, hi = min(r.lo, floor, -(r.mde or 0)), max(r.hi, 0, r.mde or 0)
        pad = (hi - lo) * 0.08 or abs(r.effect) * 0.1 or 1e-9
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_yticks([])
        unit = " (relative)" if c.relative else ""
        label = "\n".join(textwrap.wrap(f"{c.label or c.metric}{unit}: {r.verdict}"
                                        + ("" if c.primary else " (context)"), 70))
        ax.set_title(label, fontsize=7, loc="left")
        ax.tick_params(axis="x", labelsize=6)
        for s in ("left", "right", "top"):
            ax.spines[s].set_visible(False)
    if title:
        fig.suptitle(title + " — effect (d > 0 favours the claim) with 95% CI", fontsize=8)
    return fig
