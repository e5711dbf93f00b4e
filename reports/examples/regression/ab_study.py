"""A/A false alarms and 5%-slowdown detection of the interleaved A/B confirmation (executors/interleave.py's
schedule, analysis/regression.py's decide_paired), on real decode timings of SmolLM2-135M-Instruct.

    python reports/examples/regression/ab_study.py OUT.jsonl [TRIALS] [PAIRS] [THREADS] [BACKEND] > ab-study.md

One process, one loaded engine (BACKEND llamacpp by default: SmolLM2 Q4_0; torch: fp32; THREADS, default 1), the
latency scenario's own code per arm (prompt 16, 12 new tokens, 1 repetition: an arm's value is its decode tok/s).
Each trial runs PAIRS rounds; a round runs three arms in a rotating order: A (no delay), A' (no delay) and B
(`inject_decode_delay_ms` set to 5% of the per-token CPU time, measured at the start and again after every trial).
The knob's delay is spent as CPU work — spinning on this thread's CPU clock — instead of in time.sleep: a real
regression is more work per token, and on this oversubscribed VM (load 25-35 on 2 cores) any wall-clock wait
overshoots by the scheduler's latency: time.sleep(8 ms) took 36 ms (measured), and a wall-clock spin of 5% of a
token slowed decode by 22-26%. CPU work scales with the machine's contention exactly as the decode's own work does. A/A trial: (A, A'); detection trial: (A', B) — interleaved pairs as a confirmation
would run them. Each trial's pairs go to decide_paired with the decode_tok_s paired rule. Rows append to OUT.jsonl
as they finish (the study can be stopped and the summary printed from what is there: `--summary OUT.jsonl`).
Process-per-run arms (executors.interleave.job_arm) add model load time per run, not noise to decode tok/s.
"""
from __future__ import annotations

import itertools
import json
import os
import statistics
import sys
import time

from slmbench.analysis.regression import decide_paired
from slmbench.regression_rules import paired_rule

RULE = paired_rule("decode_tok_s", "tok/s")
ORDERS = list(itertools.permutations("AXB"))  # X: the second no-delay arm (A')


def setup(backend: str, threads: int):
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends import load_engine
    from slmbench.contracts import JobContext
    from slmbench.models import resolve
    from slmbench.plan import ModelSpec, RunSettings, Variant
    from slmbench.scenarios.latency import Latency, LatencyParams
    ad = make_adapter(load_profile("local-cpu"), threads)
    ad.setup()
    files = resolve(ModelSpec(name="smollm2-135m", source="smollm2"), progress=lambda m: None)
    knobs = {"backend": backend, "quantization": "q4_0"} if backend == "llamacpp" else {}
    eng = load_engine(files, Variant(**knobs), ad, progress=lambda m: None)
    settings = RunSettings(warmup=0, repetitions=1, min_duration_s=0)
    params = LatencyParams(prompt_tokens=16, gen_tokens=12)

    def arm(delay_ms: float):
        v = Variant(**knobs, inject_decode_delay_ms=delay_ms)

        def run() -> float:
            ctx = JobContext(engine=eng, adapter=ad, settings=settings, seed=0, variant=v, progress=lambda m: None)
            rows = {m.name: m for m in Latency().run(ctx, params)}
            return statistics.median(rows["decode_tok_s"].samples)
        return run
    def cpu_per_token_ms() -> float:
        """This thread's CPU time per decoded token (1 thread: llama.cpp computes on it): 17 tokens minus 1."""
        ids = eng.prompt_ids(16)
        ts = []
        for n in (17, 1, 17, 1):
            t0 = time.thread_time()
            eng.generate(ids, n)
            ts.append(time.thread_time() - t0)
        return 1000 * max(min(ts[0], ts[2]) - min(ts[1], ts[3]), 0.0) / 16
    return arm, ad.threads, cpu_per_token_ms


def spin_instead_of_sleep() -> None:
    """TokenClock's injected delay as busy time (see the module docstring)."""
    import types

    import slmbench.contracts.engine as engine_mod

    def spin(s: float) -> None:
        end = time.thread_time() + s
        while time.thread_time() < end:
            pass
    engine_mod.time = types.SimpleNamespace(sleep=spin, perf_counter=time.perf_counter, time=time.time)


def oversleep_ms(d_ms: float, n: int = 20) -> float:
    """How much longer than asked time.sleep(d) takes here now (scheduler wake-up latency)."""
    over = []
    for _ in range(n):
        t0 = time.perf_counter()
        time.sleep(d_ms / 1000)
        over.append((time.perf_counter() - t0) * 1000 - d_ms)
    return statistics.median(over)


def main(out: str, trials: int = 20, pairs: int = 8, threads: int = 1, backend: str = "llamacpp",
         inject: float = 0.05):
    spin_instead_of_sleep()
    arm, threads, cpu_per_token_ms = setup(backend, threads)
    a = arm(0.0)
    for _ in range(2):
        a()  # warm-up
    tok_s = statistics.median(a() for _ in range(3))
    per_token_ms = 1000 / tok_s
    target = 0.05 * per_token_ms
    cpu_ms = cpu_per_token_ms()
    delay = inject * cpu_ms
    print(f"per-token {per_token_ms:.2f} ms wall ({tok_s:.1f} tok/s, {threads} threads), {cpu_ms:.2f} ms CPU; "
          f"injected {delay:.3f} ms CPU; time.sleep({target:.3f} ms) would oversleep by "
          f"{oversleep_ms(target):.3f} ms here now", file=sys.stderr)
    with open(out, "a") as f:
        for t in range(trials):
            arms = {"A": a, "X": arm(0.0), "B": arm(delay)}
            vals = {k: [] for k in arms}
            for i in range(pairs):
                for k in ORDERS[(t * pairs + i) % len(ORDERS)]:
                    vals[k].append(arms[k]())
            for kind, (x, y) in (("aa", ("A", "X")), ("inject5", ("X", "B"))):
                v, rel, p, why = decide_paired(vals[x], vals[y], True, RULE)
                row = {"trial": t, "kind": kind, "verdict": v, "rel": rel, "p": p, "a": vals[x], "b": vals[y],
                       "delay_ms": delay if kind == "inject5" else 0.0, "per_token_ms": per_token_ms,
                       "cpu_per_token_ms": cpu_ms,
                       "target_ms": target, "threads": threads, "backend": backend, "pairs": pairs,
                       "load_avg": os.getloadavg()[0], "time": time.time()}
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(f"trial {t} {kind}: {v} {rel:+.2%} p={p:.3g} (delay {row['delay_ms']:.2f} ms, "
                      f"per-token {per_token_ms:.1f} ms)", file=sys.stderr)
            per_token_ms = 1000 / statistics.median(vals["A"] + vals["X"])  # the speed now, for the next trial
            target = 0.05 * per_token_ms
            cpu_ms = cpu_per_token_ms()
            delay = inject * cpu_ms
    summary(out)


def summary(*paths: str):
    """The tables, over every file given (A/A trials of every file; injected trials grouped by injected fraction)."""
    rows = [json.loads(line) for path in paths for line in open(path)]
    if not rows:
        print("no trials recorded")
        return
    r0 = rows[0]
    pt = sorted(r["per_token_ms"] for r in rows if r["kind"] == "aa")
    print(f"Backend {r0['backend']}, {r0['threads']} thread(s), SmolLM2-135M-Instruct, latency prompt 16 / 12 new "
          f"tokens / 1 rep per arm, {r0['pairs']} interleaved pairs per trial. Expected per-token time (previous "
          f"trial's no-delay arms) median {statistics.median(pt):.1f} ms [{pt[0]:.1f}, {pt[-1]:.1f}]. Paired rule: "
          f"min change {RULE.min_change:.0%}, alpha {RULE.alpha} (Wilcoxon signed-rank, exact).\n")
    inj = [r for r in rows if r["kind"] == "inject5"]
    if inj:
        frac = sorted(r["delay_ms"] / r["cpu_per_token_ms"] for r in inj)
        cpu = sorted(r["cpu_per_token_ms"] for r in inj)
        print(f"Injected CPU work per token: {', '.join(sorted({f'{x:.1%}' for x in frac}))} of the measured CPU "
              f"time per token (median {statistics.median(cpu):.2f} ms [{cpu[0]:.2f}, {cpu[-1]:.2f}] across "
              f"trials).\n")
    print("Verdicts recomputed from the stored pairs with the current rule: the confirmation's one-sided test (is B "
          "worse?), and the two-sided test for reference.\n")
    print("| test | trials | kind | regressed | improved | inconclusive | unchanged | paired change: median [min, max] |")
    print("|---|---|---|---|---|---|---|---|")
    groups = [("A/A", [r for r in rows if r["kind"] == "aa"])]
    for f in sorted({round(r["delay_ms"] / r["cpu_per_token_ms"], 3) for r in inj}):
        groups.append((f"{f:.1%} CPU injected", [r for r in inj if round(r["delay_ms"] / r["cpu_per_token_ms"], 3) == f]))
    for one_sided in (True, False):
        for name, rs in groups:
            if not rs:
                continue
            vs = [decide_paired(r["a"], r["b"], True, RULE, one_sided) for r in rs]
            c = {v: sum(x[0] == v for x in vs) for v in ("regressed", "improved", "inconclusive", "unchanged")}
            rel = sorted(x[1] for x in vs)
            print(f"| {'one-sided' if one_sided else 'two-sided'} | {len(rs)} | {name} | {c['regressed']} | "
                  f"{c['improved']} | {c['inconclusive']} | {c['unchanged']} | {statistics.median(rel):+.2%} "
                  f"[{rel[0]:+.2%}, {rel[-1]:+.2%}] |")
    print("\nPer trial (one-sided): " + "; ".join(
        f"{r['trial']} {r['kind']} {decide_paired(r['a'], r['b'], True, RULE, True)[0]} "
        f"{decide_paired(r['a'], r['b'], True, RULE, True)[1]:+.1%}" for r in rows))
    la = [r["load_avg"] for r in rows]
    busy = "contended" if max(la) > 2.5 else "quiet: the study itself"
    print(f"\nLoad average (1 min) during the trials: {min(la):.1f}-{max(la):.1f} on 2 cores ({busy}).")


if __name__ == "__main__":
    if sys.argv[1] == "--summary":
        summary(*sys.argv[2:])
    else:
        main(sys.argv[1], *(int(x) for x in sys.argv[2:5]), *sys.argv[5:6], *(float(x) for x in sys.argv[6:7]))
