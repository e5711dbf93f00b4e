"""Decode paths side by side: decode tok/s of several engines (e.g. the torch backend's `decode: generate` and
`decode: fast`) in one process, interleaved A/B/A/B so drift and other processes on a shared machine hit every
path alike; the figure that travels is the per-pair ratio (absolute tok/s on a contended machine do not).

Each sample is what the latency scenario reports: (gen_tokens - 1) / (t_last - t_first) from the per-token clock.
With a bandwidth figure and the engine's weight bytes per token, each path's decode is also a fraction of the
roofline (tok/s × bytes/token ÷ bandwidth) and an effective read rate (tok/s × bytes/token)."""
from __future__ import annotations

import statistics


def _sample(engine, ids, gen_tokens) -> float:
    from ..contracts import TokenClock
    clock = TokenClock()
    engine.generate(ids, gen_tokens, clock)
    return (gen_tokens - 1) / (clock.times[-1] - clock.times[0])


def measure(engines: dict, prompt_tokens: int = 128, gen_tokens: int = 32, pairs: int = 6, warmup: int = 1,
            bandwidth_gbs: float | None = None) -> dict:
    """engines: label → Engine, the first one the reference of the ratios. Returns per-label median tok/s, samples,
    ratio to the reference (median of per-round ratios), and with `bandwidth_gbs` the roofline fraction."""
    labels = list(engines)
    ref = labels[0]
    ids = engines[ref].prompt_ids(prompt_tokens)
    for _ in range(warmup):
        for lab in labels:
            _sample(engines[lab], ids, gen_tokens)
    samples: dict[str, list[float]] = {lab: [] for lab in labels}
    for i in range(pairs):
        order = labels if i % 2 == 0 else labels[::-1]  # A B, B A, ...: neither always goes first
        for lab in order:
            samples[lab].append(_sample(engines[lab], ids, gen_tokens))
    out: dict = {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "pairs": pairs, "reference": ref,
                 "bandwidth_gbs": bandwidth_gbs, "paths": {}}
    for lab in labels:
        eng = engines[lab]
        s = samples[lab]
        ratios = [a / b for a, b in zip(s, samples[ref])]
        row = {"decode_tok_s": statistics.median(s), "best_tok_s": max(s), "samples": s,
               "ratio_to_reference": statistics.median(ratios), "ratios": ratios,
               "decode_path": getattr(eng, "decode_path", None)}
        from ..contracts.engine import WEIGHTS
        bpt = eng.weight_bytes_per_token() if WEIGHTS in eng.capabilities else None  # else: no roofline
        if bpt:
            row["weights_per_token_bytes"] = bpt
            row["effective_read_gbs"] = row["decode_tok_s"] * bpt / 1e9
            row["best_effective_read_gbs"] = row["best_tok_s"] * bpt / 1e9
            if bandwidth_gbs:
                row["roofline_tok_s"] = bandwidth_gbs * 1e9 / bpt
                row["roofline_frac"] = row["decode_tok_s"] * bpt / 1e9 / bandwidth_gbs
                row["roofline_fracs"] = [x * bpt / 1e9 / bandwidth_gbs for x in s]
        out["paths"][lab] = row
    return out


def format_lines(r: dict) -> list[str]:
    lines = []
    for lab, row in r["paths"].items():
        line = f"{lab:>10}: {row['decode_tok_s']:7.2f} tok/s median (best {row['best_tok_s']:.2f})"
        if lab != r["reference"]:
            line += f", ×{row['ratio_to_reference']:.2f} {r['reference']} (median of {r['pairs']} paired ratios)"
        if "roofline_frac" in row:
            line += (f"; {row['effective_read_gbs']:.1f} GB/s effective read = {100 * row['roofline_frac']:.0f}% "
                     f"of the {r['bandwidth_gbs']:.1f} GB/s roofline")
        lines.append(line)
    return lines
