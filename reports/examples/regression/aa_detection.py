"""A/A false alarms and injected-regression detection from real runs of suites/nightly.yaml (the evidence behind
slmbench/regression_rules.py's default thresholds).

    python reports/examples/regression/aa_detection.py AA_OUT [DET_OUT] > aa-detection.md

AA_OUT: a store with N identical nightly runs (no injection). DET_OUT: runs of the same suite with a test-only
inject_* knob. Every A/A pair of consecutive nights is compared as `run --baseline last` would; each injected run is
compared with every A/A run as the base. Real rows, the module's own verdict code.
"""
from __future__ import annotations

import json
import sys
from collections import defaultdict

from slmbench.analysis.regression import compare_frames
from slmbench.regression_rules import merge_rules
from slmbench.store import Store

rules = merge_rules({})


def runs(st, injected: bool | None = None):
    ids = [r for r in st.runs().query("status == 'finished' and suite == 'nightly'")["run_id"]]
    out = []
    for r in ids:
        v = st.rows(r)["variant"].map(json.loads)
        inj = any(d.get("inject_decode_delay_ms") or d.get("inject_alloc_mb") for d in v)
        if injected is None or inj == injected:
            out.append(r)
    return out


def main(aa_out: str, det_out: str | None = None):
    st = Store(aa_out)
    aa = runs(st, injected=False)
    rows = {r: st.rows(r, samples=True) for r in aa}
    print(f"# A/A false alarms: {len(aa)} identical nightly runs, {len(aa) - 1} consecutive pairs\n")
    pairs = list(zip(aa, aa[1:]))
    flagged, perm = [], defaultdict(list)
    for b, n in pairs:
        vs = compare_frames(rows[b], rows[n], rules)
        bad = [v for v in vs if v.verdict != "unchanged"]
        for v in vs:
            perm[v.metric].append(v)
        flagged.append((b, n, bad))
    n_reg = sum(any(v.verdict == "regressed" for v in bad) for *_, bad in flagged)
    n_any = sum(bool(bad) for *_, bad in flagged)
    print(f"- pairs with a regression verdict (would fail CI without rerun): **{n_reg} / {len(pairs)}**")
    print(f"- pairs with any non-unchanged verdict (regressed, improved or inconclusive): {n_any} / {len(pairs)}")
    # Rerun simulated with real data: the suspect new night is "rerun" by the night after it (same code).
    conf = 0
    for i, (b, n, bad) in enumerate(flagged):
        reg = [v for v in bad if v.verdict == "regressed"]
        if reg and i + 2 < len(aa):
            again = {v.key: v for v in compare_frames(rows[b], rows[aa[i + 2]], rules)}
            conf += any(again.get(v.key) and again[v.key].verdict == "regressed" for v in reg)
    print(f"- of those, confirmed when the next identical night stands in for the rerun: {conf}")
    for b, n, bad in flagged:
        for v in bad:
            print(f"  - {b} → {n}: {v.metric} {v.verdict} {v.rel:+.1%} (p {v.p:.2g}): {v.reason}")
    allp = [(a, b) for i, a in enumerate(aa) for b in aa[i + 1:]]
    allreg = sum(any(v.verdict == "regressed" for v in compare_frames(rows[a], rows[b], rules)) for a, b in allp)
    print(f"- all {len(allp)} ordered pairs (i < j, not independent): {allreg} with a regression verdict\n")
    print("| metric | kind | min change (default) | A/A |change| median | A/A |change| max | p < 0.01 in A/A pairs |")
    print("|---|---|---|---|---|---|")
    for m, vs in sorted(perm.items()):
        ch = sorted(abs(v.rel) for v in vs if v.rel == v.rel)
        sig = sum(v.p < 0.01 for v in vs if v.p == v.p)
        kind = "single value" if vs[0].single else f"{vs[0].n_base} samples"
        print(f"| {m} | {kind} | {vs[0].rule.min_change:.1%} | {ch[len(ch) // 2]:.2%} | {ch[-1]:.2%} | "
              f"{sig} / {len(vs)} |" if ch else f"| {m} | {kind} | | | | |")
    if not det_out:
        return
    ds = Store(det_out)
    print("\n# Detection: each injected run against every A/A run as the base\n")
    print("| injected | run | metric | change vs A/A medians (median of comparisons) | flagged regressed |")
    print("|---|---|---|---|---|")
    for r in runs(ds, injected=True):
        df = ds.rows(r, samples=True)
        knobs = {k: v for k, v in json.loads(df["variant"].iloc[0]).items() if k.startswith("inject") and v}
        metric = "decode_tok_s" if "inject_decode_delay_ms" in knobs else "peak_mem_mb"
        res = []
        for b in aa:
            vs = [v for v in compare_frames(rows[b], df, rules) if v.metric == metric]
            res += vs
        rels = sorted(v.rel for v in res)
        hits = sum(v.verdict == "regressed" for v in res)
        print(f"| {', '.join(f'{k}={v:g}' for k, v in knobs.items())} | {r} | {metric} | "
              f"{rels[len(rels) // 2]:+.1%} | {hits} / {len(res)} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
