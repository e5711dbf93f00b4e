"""Accuracy scoring speed: slmbench's grouped multiple-choice scoring vs lm-eval's own `hf` model, same tasks.

Both arms are lm-eval models in one process, on the same threads and the same float32 weights: arm A is lm-eval's
`HFLM` loaded by lm-eval itself from the HF directory (what `lm_eval --model hf --model_args pretrained=DIR` runs),
arm B is slmbench's model with grouped scoring (mc_scoring.TorchScorer), both at the same batch size. Each arm runs
`lm_eval.simple_evaluate` on one task at a time, alternating A B, B A, ... per task and round so machine drift hits
both alike; the timed window is the evaluate call (request building, scoring, metrics), model loading is outside.

Printed per task: wall seconds of each arm, the ratio B/A (the figure that travels on a quiet machine; on a shared
one the ratio of the process's CPU seconds is the steadier one, and both are printed), acc and acc_norm of each arm
with their difference in points, and from the logged samples the largest per-request |Δ log-likelihood| and the
number of items whose prediction differs.
"""
from __future__ import annotations

import statistics
import time


def _evaluate(lm, task: str, tm, limit):
    from lm_eval.evaluator import simple_evaluate
    t, c = time.perf_counter(), time.process_time()
    r = simple_evaluate(model=lm, tasks=[task], task_manager=tm, limit=limit, log_samples=True, bootstrap_iters=0,
                        verbosity="ERROR")
    return time.perf_counter() - t, time.process_time() - c, r


def _lls(r, task: str) -> list[list[float]]:
    return [[float(x[0]) for x in s["filtered_resps"]] for s in sorted(r["samples"][task], key=lambda s: s["doc_id"])]


def _compare(ra, rb, task: str) -> dict:
    out = {}
    for m in ("acc", "acc_norm"):
        a, b = ra["results"][task].get(f"{m},none"), rb["results"][task].get(f"{m},none")
        if a is not None:
            out[m] = (a, b, 100 * (b - a))
    la, lb = _lls(ra, task), _lls(rb, task)
    out["max_abs_dll"] = max(abs(x - y) for xa, xb in zip(la, lb) for x, y in zip(xa, xb))
    out["argmax_differs"] = sum(max(range(len(xa)), key=xa.__getitem__) != max(range(len(xb)), key=xb.__getitem__)
                                for xa, xb in zip(la, lb))
    out["items"] = len(la)
    return out


def measure(hf_dir, engine, tasks: list[str], tm, batch_size: int = 16, rounds: int = 1, limit=None,
            progress=print) -> list[dict]:
    from lm_eval.models.huggingface import HFLM

    from ..lmeval_model import lm_class, quiet_task_loading
    arms = {"hf": HFLM(pretrained=str(hf_dir), dtype="float32", batch_size=batch_size, device="cpu"),
            "slmbench": lm_class()(engine=engine, batch_size=batch_size)}
    out = []
    for task in tasks:
        secs: dict = {"hf": [], "slmbench": []}
        cpu: dict = {"hf": [], "slmbench": []}
        res: dict = {}
        for i in range(rounds):
            for arm in (("hf", "slmbench") if i % 2 == 0 else ("slmbench", "hf")):
                with quiet_task_loading():
                    s, c, res[arm] = _evaluate(arms[arm], task, tm, limit)
                secs[arm].append(s)
                cpu[arm].append(c)
                progress(f"{task} round {i + 1}/{rounds}: {arm} {s:.1f} s ({c:.1f} CPU-s)")
        ratios = [b / a for a, b in zip(secs["hf"], secs["slmbench"])]
        out.append({"task": task, "hf_s": secs["hf"], "slmbench_s": secs["slmbench"],
                    "hf_cpu_s": cpu["hf"], "slmbench_cpu_s": cpu["slmbench"], "ratio": statistics.median(ratios),
                    "cpu_ratio": statistics.median(b / a for a, b in zip(cpu["hf"], cpu["slmbench"])), "batch_size": batch_size, "limit": limit,
                    **_compare(res["hf"], res["slmbench"], task)})
    return out


def format_lines(rows: list[dict]) -> list[str]:
    lines = [("| task | items | lm-eval hf s | slmbench s | slmbench / hf | CPU-s ratio | acc hf → slmbench (Δ pts) "
              "| acc_norm hf → slmbench (Δ pts) | max |Δ ll| | argmax differs |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        def m(k, r=r):
            return f"{r[k][0]:.4f} → {r[k][1]:.4f} ({r[k][2]:+.2f})" if k in r else "—"
        lines.append(f"| {r['task']} | {r['items']} | {statistics.median(r['hf_s']):.1f} | "
                     f"{statistics.median(r['slmbench_s']):.1f} | {r['ratio']:.3f} | {r['cpu_ratio']:.3f} | {m('acc')} | {m('acc_norm')} | "
                     f"{r['max_abs_dll']:.1e} | {r['argmax_differs']} |")
    if len(rows) > 1:
        a = sum(statistics.median(r["hf_s"]) for r in rows)
        b = sum(statistics.median(r["slmbench_s"]) for r in rows)
        ca = sum(statistics.median(r["hf_cpu_s"]) for r in rows)
        cb = sum(statistics.median(r["slmbench_cpu_s"]) for r in rows)
        lines.append(f"| all | {sum(r['items'] for r in rows)} | {a:.1f} | {b:.1f} | {b / a:.3f} | {cb / ca:.3f} "
                     "| | | | |")
    return lines


def main(files, adapter, a) -> int:
    """`slmbench overhead --accuracy TASKS`: the table above, plus JSON with --json."""
    import json
    import sys

    from ..backends import load_engine
    from ..lmeval_model import check_tasks, task_manager
    from ..plan import Variant
    tasks = a.accuracy.split(",")
    check_tasks(tasks)
    engine = load_engine(files, Variant(), adapter)
    if files.hf_dir is None:
        print("error: --accuracy compares against lm-eval's hf model, which loads an HF directory "
              "(use --source smollm2 or --source hf --path DIR)", file=sys.stderr)
        return 2
    rows = measure(files.hf_dir, engine, tasks, task_manager(),
                   a.batch_size, a.rounds, a.limit, progress=lambda m: print(m, file=sys.stderr))
    print("\n".join(format_lines(rows)))
    print(f"(lm-eval {__import__('lm_eval').__version__} `hf` vs slmbench grouped scoring; batch {a.batch_size}, "
          f"{adapter.threads} threads, float32, {a.rounds} round(s) alternating per task; wall time of "
          f"simple_evaluate, model load excluded)")
    if a.json:
        print(json.dumps(rows))
    return 0
