"""The runtime shoot-out (suites/runtimes.yaml): one row per runtime × level with speed, memory, artifact, energy
and quality, and a Pareto plot in which each runtime is one series (its levels joined, fp32 → 8-bit → 4-bit).

    section(df) -> TableSection | None       # df: tidy rows (Store.rows); None when no two runtimes are present
    python -m slmbench.report.runtimes --out DIR [--out DIR2 ...] [--suite 'runtimes*'] [--md F] [--html F]
                                                  [--png F] [--json F]

The fp32 rows of every runtime carry the same weights, so their bits/byte must agree with torch fp32 (the column
"Δ bits/B vs torch fp32"; the note says when one is off by more than 1%: a bug, not a finding)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from .. import fmt
from .plots import fig_to_png
from .section import TableSection

RUNTIMES = {"torch": "torch", "llamacpp": "llama.cpp", "onnx_genai": "ONNX Runtime GenAI", "executorch": "ExecuTorch"}
FP32 = {"none", "fp32", "f32"}
ACC = ("acc_norm", "acc")  # lm-eval's headline: acc_norm where the task has it
METRICS = ["file_mb", "load_s", "ttft_ms", "prefill_tok_s", "decode_tok_s", "decode_roofline_frac", "peak_mem_mb",
           "decode_j_per_token", "bits_per_byte"]
HEADER = ["runtime", "level", "artifact MB", "load s", "TTFT ms", "prefill tok/s", "decode tok/s", "decode / BW limit",
          "peak RSS MB", "J/token (decode)", "bits/B (held-out)", "Δ bits/B vs torch fp32", "accuracy"]
AGREE = 0.01  # fp32 bits/byte of every runtime within 1% of torch fp32: same weights


def _level(v: dict) -> str:
    q = v.get("quantization", "none")
    if q in FP32:
        return "fp32" if v.get("dtype", "fp32") == "fp32" else v["dtype"]
    return q


def rows(df: pd.DataFrame) -> list[dict]:
    """One dict per (model, variant, device): runtime, level, the METRICS, accuracy (± stderr, task), and what did
    not run (scenario: status: reason)."""
    out = []
    if df.empty:
        return out
    for (model, var, dev), d in df.groupby(["model", "variant", "device"], sort=False):
        v = json.loads(var)
        ok = d[d["status"] == "ok"]
        r = {"model": model, "device": dev, "backend": v.get("backend", "torch"),
             "runtime": RUNTIMES.get(v.get("backend", "torch"), v.get("backend", "torch")), "level": _level(v)}
        for m in METRICS:
            x = ok[ok["metric"] == m]
            r[m] = float(x["value"].iloc[0]) if len(x) and not fmt.missing(x["value"].iloc[0]) else None
        e = ok[ok["metric"] == "decode_j_per_token"]
        r["energy_source"] = e["source"].iloc[0] if len(e) else None
        acc = ok[ok["scenario"] == "accuracy"]
        m = next((m for m in ACC if (acc["metric"] == m).any()), None)
        if m:
            a = acc[acc["metric"] == m].iloc[0]
            r.update(acc=float(a["value"]), acc_se=a["spread"], acc_n=a["n"], acc_metric=m,
                     acc_task=json.loads(a["labels"] or "{}").get("task"))
        else:
            r.update(acc=None, acc_se=None, acc_n=None, acc_metric=None, acc_task=None)
        bad = d[d["status"] != "ok"][["scenario", "status", "error"]].drop_duplicates("scenario")
        r["not_ok"] = "; ".join(f"{b.scenario}: {b.status}: {b.error}" for b in bad.itertuples())
        out.append(r)
    ref = next((r["bits_per_byte"] for r in out if r["backend"] == "torch" and r["level"] == "fp32"
                and r["bits_per_byte"]), None)
    for r in out:
        r["bpb_vs_torch_fp32"] = r["bits_per_byte"] / ref - 1 if ref and r["bits_per_byte"] else None
    order = list(RUNTIMES)
    out.sort(key=lambda r: (order.index(r["backend"]) if r["backend"] in order else len(order), r["level"] != "fp32",
                            -(r["file_mb"] or 0)))
    return out


def _cells(r: dict) -> list[str]:
    if r["decode_tok_s"] is None and r["bits_per_byte"] is None and r["acc"] is None and r["not_ok"]:
        return [r["runtime"], r["level"]] + ["—"] * 10 + \
            ["unsupported" if "unsupported" in r["not_ok"] else "failed"]
    acc = fmt.pct_points(r["acc"], r["acc_se"]) if r["acc"] is not None else "—"
    return [r["runtime"], r["level"], fmt.fixed(r["file_mb"], ".1f"), fmt.fixed(r["load_s"], ".2f"),
            fmt.fixed(r["ttft_ms"], ".0f"), fmt.fixed(r["prefill_tok_s"], ".0f"), fmt.fixed(r["decode_tok_s"], ".1f"),
            fmt.fixed(r["decode_roofline_frac"], ".0%"), fmt.fixed(r["peak_mem_mb"], ".0f"),
            fmt.fixed(r["decode_j_per_token"], ".3f"), fmt.fixed(r["bits_per_byte"], ".4f"),
            fmt.pct(r["bpb_vs_torch_fp32"], none="—", digits=2), acc]


def note(rs: list[dict]) -> str:
    parts = ["Same fp32 weights (the smollm2 source) into every runtime; each runtime's own 8-bit and 4-bit level. "
             "decode / BW limit: decode tok/s × weight bytes read per token ÷ measured memory bandwidth. "
             "Speeds are medians of the latency scenario's repetitions."]
    task = next((r["acc_task"] for r in rs if r["acc_task"]), None)
    if task:
        n = {int(r["acc_n"]) for r in rs if r["acc_n"] and not fmt.missing(r["acc_n"])}
        m = next(r["acc_metric"] for r in rs if r["acc_task"])
        parts.append(f"accuracy: lm-eval {task} {m}, 0-shot, % ± stderr" + (f", n={min(n)}" if len(n) == 1 else "")
                     + ".")
    src = {r["energy_source"] for r in rs if r["energy_source"]}
    if src:
        parts.append(f"J/token source: {', '.join(sorted(src))}.")
    off = [f"{r['runtime']} {fmt.pct(r['bpb_vs_torch_fp32'], digits=2)}" for r in rs
           if r["level"] == "fp32" and r["bpb_vs_torch_fp32"] is not None and abs(r["bpb_vs_torch_fp32"]) > AGREE]
    if off:
        parts.append(f"fp32 bits/byte off torch fp32 by more than {AGREE:.0%} ({', '.join(off)}): same weights, so "
                     "a runtime bug to find, not a finding.")
    elif any(r["level"] == "fp32" and r["bpb_vs_torch_fp32"] is not None for r in rs if r["backend"] != "torch"):
        parts.append(f"Every runtime's fp32 bits/byte is within {AGREE:.0%} of torch fp32.")
    parts += [f"{r['runtime']} {r['level']}: {r['not_ok']}" for r in rs if r["not_ok"]]
    return " ".join(parts)


def pareto_png(rs: list[dict]) -> bytes | None:
    """Quality (bits/byte, lower is better) against artifact MB and decode tok/s: one colour per runtime, its levels
    joined; the dashed line is the frontier over all runtimes."""
    from .quality import pareto
    costs = [("file_mb", "artifact MB (lower is better)", True), ("decode_tok_s", "decode tok/s (higher is better)",
                                                                    False)]
    pts = [r for r in rs if r["bits_per_byte"] is not None]
    costs = [c for c in costs if sum(r[c[0]] is not None for r in pts) >= 2]
    if len(pts) < 2 or not costs:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4.0), squeeze=False, dpi=110)
    colours = dict(zip(RUNTIMES.values(), ["tab:blue", "tab:orange", "tab:green", "tab:purple"]))
    for ax, (m, label, lower) in zip(axes[0], costs):
        have = [r for r in pts if r[m] is not None]
        for rt in dict.fromkeys(r["runtime"] for r in have):
            mine = sorted((r for r in have if r["runtime"] == rt), key=lambda r: r[m])
            ax.plot([r[m] for r in mine], [r["bits_per_byte"] for r in mine], "o-", color=colours.get(rt), label=rt)
            for r in mine:
                ax.annotate(r["level"], (r[m], r["bits_per_byte"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        xy = [(r[m], -r["bits_per_byte"]) for r in have]  # pareto() maximises quality
        front = sorted((xy[i] for i in pareto(xy, lower)), key=lambda p: p[0])
        if len(front) > 1:
            ax.plot([p[0] for p in front], [-p[1] for p in front], "--", color="tab:red", lw=1, label="Pareto frontier")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out bits/byte (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("runtime shoot-out: quality vs cost, one series per runtime", fontsize=10)
    return fig_to_png(fig)


def section(df: pd.DataFrame) -> TableSection | None:
    """The shoot-out table and plot; None unless the rows hold at least two runtimes (a one-runtime run has the
    quantization and quality sections)."""
    rs = rows(df)
    if len({r["backend"] for r in rs}) < 2:
        return None
    return TableSection("runtimes", "Runtime shoot-out", HEADER, [_cells(r) for r in rs], note(rs),
                        plot=lambda: pareto_png(rs), alt="held-out bits/byte vs artifact size and decode speed, "
                                                         "one series per runtime")


def load(outs: list[str], suite_glob: str = "runtimes*") -> pd.DataFrame:
    """Tidy rows of the latest job per (model, scenario) over every suite matching the glob in each results
    directory (a shoot-out run in pieces, or its --quick variant), later directories winning."""
    import fnmatch

    from .quant import _latest
    from ..store import Store
    frames = []
    for out in outs:
        st = Store(out)
        for name in dict.fromkeys(st.runs()["suite"]):
            if fnmatch.fnmatchcase(str(name), suite_glob):
                f = _latest(st, name)[0]
                frames.append(f.assign(_piece=len(frames)))  # a job key repeats across stores: order decides
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True)
    last = df.groupby(["model", "variant", "device", "scenario"])["_piece"].transform("max")
    return df[df["_piece"] == last].drop(columns="_piece").reset_index(drop=True)


def main(argv=None) -> int:
    from .html import page
    ap = argparse.ArgumentParser(description="the runtime shoot-out table of one or more results directories")
    ap.add_argument("--out", required=True, action="append", help="results directory (the store); repeatable")
    ap.add_argument("--suite", default="runtimes*", help="suite name glob (default: runtimes*)")
    ap.add_argument("--md", help="write the Markdown section here")
    ap.add_argument("--html", help="write a self-contained HTML page (table + Pareto plot) here")
    ap.add_argument("--png", help="write the Pareto plot here")
    ap.add_argument("--json", help="write the rows as JSON here")
    a = ap.parse_args(argv)
    df = load(a.out, a.suite)
    s = section(df)
    if s is None:
        print(f"no runtime shoot-out in {', '.join(a.out)} (suites {a.suite!r}: rows of fewer than two runtimes)")
        return 1
    print(s.markdown())
    if a.md:
        Path(a.md).write_text(s.markdown() + "\n")
    if a.html:
        Path(a.html).write_text(page("Runtime shoot-out", s.html()))
    if a.png:
        png = s.plot()
        if png:
            Path(a.png).write_bytes(png)
    if a.json:
        Path(a.json).write_text(json.dumps(rows(df), indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
