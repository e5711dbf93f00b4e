"""The quantization ladder as one table: for each row of a suite (default `quantization`), the latest result of
each scenario across that suite's runs in a store (so a ladder run in pieces still makes one table).

    python -m slmbench.report.quant --out /tmp/quant-out [--suite quantization] [--md FILE]

Columns: runtime and level, file size, weights read per token, peak RSS, load time, prefill and decode tok/s,
decode as a fraction of the bandwidth limit (bandwidth ÷ bytes of weights per token), J/token (decode, with its
source), held-out perplexity, one lm-eval accuracy; rows that did not run say why (unsupported: reason)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from .. import fmt
from .tables import md_table


def _latest(st, suite: str):
    """rows, job info by (model, scenario): the latest finished job per (model, scenario) in the suite's runs."""
    import pandas as pd
    runs = [r for r in st.runs().itertuples() if r.suite == suite]
    frames, info = [], {}
    for r in runs:  # oldest first: later runs overwrite
        df = st.rows(r.run_id)
        if df.empty:
            continue
        frames.append(df)
        info.update({(r.run_id, j): inf for j, inf in st.job_info(r.run_id).items()})
    if not frames:
        return pd.DataFrame(), {}
    df = pd.concat(frames, ignore_index=True)
    last = df.groupby(["model", "scenario"])["run_id"].transform("last")
    df = df[df["run_id"] == last]
    return df, {(m, s): info.get((r, j), {}) for m, s, r, j in
                df[["model", "scenario", "run_id", "job_id"]].drop_duplicates().itertuples(index=False)}


def table(out_dir: str | Path, suite: str = "quantization") -> list[dict]:
    from ..store import Store
    st = Store(out_dir)
    df, info = _latest(st, suite)
    rows = []
    for model in dict.fromkeys(df["model"]) if not df.empty else []:
        d = df[df["model"] == model]
        v = json.loads(d["variant"].iloc[0])

        def val(metric, scenario=None, labels=None):
            x = d[d["metric"] == metric]
            if scenario:
                x = x[x["scenario"] == scenario]
            if labels:
                x = x[x["labels"].map(lambda s: all(json.loads(s).get(k) == w for k, w in labels.items()))]
            return (x["value"].iloc[0], x["spread"].iloc[0], x["source"].iloc[0]) if len(x) else (None, None, None)

        desc = next((i.get("model") for (m, _), i in info.items() if m == model and i.get("model")), {}) or {}
        failed = d[d["status"] != "ok"][["scenario", "status", "error"]].drop_duplicates()
        level = v["quantization"] if v["quantization"] != "none" else v["dtype"]
        row = {"row": model.split(":", 1)[-1], "runtime": "llama.cpp" if v["backend"] == "llamacpp" else "torch",
               "level": level, "compile": v.get("compile"), "load": v.get("load", "mmap"),
               "file_mb": (desc.get("file_bytes") or 0) / 1e6 or None,
               "weights_per_token_mb": (desc.get("weights_per_token_bytes") or 0) / 1e6 or None,
               "peak_rss_mb": val("peak_mem_mb")[0], "load_peak_rss_mb": val("load_peak_mem_mb")[0],
               "load_s": val("load_s")[0], "prefill_tok_s": val("prefill_tok_s")[0],
               "decode_tok_s": val("decode_tok_s")[0], "roofline_frac": val("decode_roofline_frac")[0],
               "decode_j_per_token": val("decode_j_per_token")[0], "energy_source": val("decode_j_per_token")[2],
               "ppl": val("ppl")[0], "bits_per_byte": val("bits_per_byte")[0],
               "acc": val("acc", "accuracy")[0], "acc_stderr": val("acc", "accuracy")[1],
               "acc_task": next((json.loads(s).get("task") for s in d[d["metric"] == "acc"]["labels"]), None),
               "tensor_types": desc.get("tensor_types"),
               "not_ok": "; ".join(f"{r.scenario}: {r.status}: {r.error}" for r in failed.itertuples())}
        rows.append(row)
    return rows


def _f(x, spec: str) -> str:
    return fmt.fixed(x, spec)


HEADER = ["row", "runtime", "level", "file MB", "weights/token MB", "peak RSS MB", "load s", "prefill tok/s",
          "decode tok/s", "decode / BW limit", "J/token (decode)", "ppl (held-out)", "acc"]


def _ladder_row(r: dict) -> list[str]:
    if r["not_ok"] and r["decode_tok_s"] is None and r["ppl"] is None:
        return [r["row"], r["runtime"], r["level"]] + ["—"] * 9 + \
            ["unsupported" if "unsupported" in r["not_ok"] else "failed"]
    acc = f"{r['acc']:.3f} ± {r['acc_stderr']:.3f}" if r["acc"] is not None and r["acc_stderr"] else \
        _f(r["acc"], ".3f")
    return [r["row"], r["runtime"], r["level"], _f(r["file_mb"], ".1f"), _f(r["weights_per_token_mb"], ".1f"),
            _f(r["peak_rss_mb"], ".0f"), _f(r["load_s"], ".2f"), _f(r["prefill_tok_s"], ".0f"),
            _f(r["decode_tok_s"], ".1f"), _f(r["roofline_frac"], ".0%"), _f(r["decode_j_per_token"], ".3f"),
            _f(r["ppl"], ".2f"), acc]


def markdown(rows: list[dict]) -> str:
    notes = [f"- **{r['row']}**: {r['not_ok']}" for r in rows if r["not_ok"]]
    src = {r["energy_source"] for r in rows if r["energy_source"]}
    tail = [f"J/token source: {', '.join(sorted(src))}."] if src else []
    task = next((r["acc_task"] for r in rows if r["acc_task"]), None)
    if task:
        tail.append(f"acc: lm-eval {task}, 0-shot (± stderr).")
    return "\n".join([md_table(HEADER, [_ladder_row(r) for r in rows]), ""] + tail + ([""] + notes if notes else [])) \
        + "\n"


def ondevice_markdown(rows: list[dict]) -> str:
    """Eager vs compiled decode and mmap vs full-read load, each next to its baseline row."""
    pick = [r for r in rows if r["compile"] or r["load"] == "full"]
    base = {(r["runtime"], r["level"]) for r in pick}
    pick = [r for r in rows if r in pick or ((r["runtime"], r["level"]) in base and not r["compile"]
                                             and r["load"] == "mmap")]
    pick.sort(key=lambda r: (r["runtime"], r["level"], r["compile"], r["load"] != "mmap"))
    header = ["row", "runtime", "level", "graph", "weights", "load s", "peak RSS during load MB", "peak RSS MB",
              "prefill tok/s", "decode tok/s"]
    return md_table(header, [[r["row"], r["runtime"], r["level"], "compiled (static cache)" if r["compile"] else
                              "eager", r["load"], _f(r["load_s"], ".2f"), _f(r["load_peak_rss_mb"], ".0f"),
                              _f(r["peak_rss_mb"], ".0f"), _f(r["prefill_tok_s"], ".0f"),
                              _f(r["decode_tok_s"], ".1f")] for r in pick]) + "\n"


def qat_markdown(rows: list[dict], record: dict | None = None) -> str:
    """PTQ vs QAT (suite written by slmbench.factory.ptq_vs_qat): per scheme, the float parent's PTQ next to the QAT
    branch, with the float model as reference."""
    header = ["row", "scheme", "weights", "ppl (held-out)", "bits/byte", "Δppl vs fp32", "prefill tok/s",
              "decode tok/s"]
    ref = next((r["ppl"] for r in rows if r["level"] == "fp32"), None)
    out = []
    for r in sorted(rows, key=lambda r: (r["level"] != "fp32", r["level"], r["row"])):
        kind = "QAT" if "qat" in r["row"] else ("PTQ" if r["level"] != "fp32" else "float")
        out.append([r["row"], r["level"], kind, _f(r["ppl"], ".2f"), _f(r["bits_per_byte"], ".3f"),
                    fmt.pct(r["ppl"] / ref - 1) if ref and r["ppl"] else "—", _f(r["prefill_tok_s"], ".0f"),
                    _f(r["decode_tok_s"], ".1f")])
    lines = [md_table(header, out)]
    if record:
        lines += ["", f"Student: llama {record['student']['num_hidden_layers']} layers × "
                  f"{record['student']['hidden_size']} wide, {record['params'] / 1e6:.1f} M params, SmolLM2 tokenizer; "
                  f"{record['steps']} float steps, then {record['extra_steps']} more steps per branch "
                  f"({record['tokens_per_step']} tokens/step): float (→ PTQ) or QAT at the scheme — same data, "
                  f"same schedule. Final train loss: " + ", ".join(
                      f"{k} {v['final_loss']:.3f}" for k, v in record["branches"].items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True, help="results directory (the store)")
    ap.add_argument("--suite", default="quantization")
    ap.add_argument("--md", help="write the Markdown table here")
    ap.add_argument("--json", help="write the rows as JSON here")
    ap.add_argument("--qat-record", help="record.json of slmbench.factory.ptq_vs_qat: print the PTQ-vs-QAT table")
    a = ap.parse_args(argv)
    rows = table(a.out, a.suite)
    md = markdown(rows) if not a.qat_record else qat_markdown(rows, json.loads(Path(a.qat_record).read_text()))
    if not a.qat_record and any(r["compile"] or r["load"] == "full" for r in rows):
        md += "\n" + ondevice_markdown(rows)
    print(md)
    if a.md:
        Path(a.md).write_text(md)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
