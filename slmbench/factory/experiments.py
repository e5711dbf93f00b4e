"""The factory's controlled experiments (closing note of issue 4): one knob changed at a time from
suites/recipes/claims.yaml, one shared corpus and teacher-logit cache, equal token budgets, 2 seeds.

    python -m slmbench.factory.experiments prepare            # corpora, teacher logits, then every student of PLAN
    python -m slmbench.factory.experiments run kd:0 ce:0 ...  # students (each cached; resumable)
    python -m slmbench.factory.experiments report OUT_DIR     # results.json + README.md from the built manifests
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..settings import REPO_DIR
from . import cache
from .pipeline import build_recipe, prepare, specs
from .recipe import load_recipe
from .students import kv_bytes_per_token, make_student, param_counts
from .teacher import Teacher

RECIPE = REPO_DIR / "suites" / "recipes" / "claims.yaml"
# issue 4's from-scratch students (the recipe's default student is now pruned SmolLM2, issue 16): every variant below
# starts from this, so these experiments keep their setting
FROM_SCRATCH = {"student": {"init": "random", "prune": None, "arch": "llama", "hidden_size": 192, "layers": 4,
                            "heads": 6, "kv_heads": 2, "intermediate_size": 512},
                "train": {"tokens": 131072, "lr": 0.003, "warmup_steps": 10, "alpha": 0.5, "temperature": 1.0,
                          "checkpoint_every": 32}}
SHORT = {"train": {"tokens": 8192, "checkpoint_every": 1000}}  # throughput runs: 8 steps of 1024 tokens
VARIANTS = {
    "kd": {},  # = GQA, quality-filtered, uniform weights, a = 0.5, t = 1
    "ce": {"train": {"alpha": 1.0}},
    "unfiltered": {"filter": {"method": "random"}},  # a random subset of the same size
    "curriculum": {"train": {"curriculum": {"kind": "teacher_loss", "strength": 1.0}}},
    "mha": {"student": {"kv_heads": 6}},
    "mqa": {"student": {"kv_heads": 1}},
    "moe": {"student": {"arch": "moe", "experts": 4, "experts_per_token": 2, "intermediate_size": 256}},
    "kd_tinit": {"student": {"init": "teacher"}},  # C1 with the teacher's embeddings (projected to h=192) as init
    "ce_tinit": {"student": {"init": "teacher"}, "train": {"alpha": 1.0}},
    "tput_cached": SHORT,
    "tput_teacher": {"train": {**SHORT["train"], "teacher_in_loop": True}},
}


def _recipe(variant: str, seed: int):
    from ..yamlio import deep_merge
    return load_recipe(RECIPE, deep_merge(deep_merge(FROM_SCRATCH, VARIANTS[variant]), {"seed": seed}))


PLAN = ["tput_cached:0", "tput_teacher:0", "kd:0", "ce:0", "unfiltered:0", "curriculum:0", "kd:1", "ce:1",
        "unfiltered:1", "curriculum:1", "mqa:0", "mha:0", "moe:0"]  # one seed of everything first


def cmd_prepare() -> None:
    """The data stages for both corpora, then every student of PLAN not built yet (all cached and resumable,
    so this can be run in pieces of a few minutes under the CPU lock until it completes)."""
    for v in ("kd", "unfiltered"):
        r, base = _recipe(v, 0)
        t = Teacher(r.teacher, seed=r.corpus.seed)
        prepare(r, base, t, specs(r, base, t))
    cmd_run(PLAN)


def cmd_run(names: list[str]) -> None:
    for n in names:
        v, _, s = n.partition(":")
        r, base = _recipe(v, int(s or 0))
        build_recipe(r, base, f"{RECIPE} + {v} seed {s or 0}")


METHOD = """## Method

- Teacher: SmolLM2-135M-Instruct (fp32). Students share its tokenizer (49,152 ids), tied embeddings, Llama blocks
  (h=192, 4 layers, 6 query heads; KV heads 6 = MHA, 2 = GQA, 1 = MQA) or a Mixtral MoE (4 experts of width 256,
  top-2: the same active MLP width, 512, as the dense students).
- Corpus: Austen, Shakespeare, movie reviews, Python docs, fortunes (a deliberately noisy source) and the Python
  standard library, 600 kB each; paragraphs merged into documents of up to 1,500 characters, exact-duplicate
  removal, a held-out split by document hash (the same for every variant), a 128k-token training pool.
- Filtered: the best half of the pool's tokens by teacher perplexity (first 64 tokens of each document) and
  symbol/repetition heuristics. Unfiltered: a random half of the same pool (same token count).
- Loss: L = a·CE + (1-a)·t²·KL over the teacher's cached top-32 logits plus one tail bucket (the rest of its mass;
  factory/kd.py), a = 0.5, t = 1; CE-only: a = 1. (Before issue 16: top-32 renormalised at t = 2, no tail.)
- Curriculum: w_i(p) = exp(-(1-2p)·z_i) renormalised to mean 1, z_i = standardised teacher loss of sample i
  (easy samples weigh more early, hard ones late); uniform: w_i = 1.
- Budget: every student sees the same 131,072 tokens (128 steps of 8 × 128; two passes over its 64k-token corpus),
  AdamW lr 3e-3, warmup 10 steps, cosine to 10%. Held-out bits/byte = summed next-token NLL in bits over the
  UTF-8 bytes of the predicted tokens; agreement = share of held-out positions where the student's argmax is the
  teacher's.
- Machine: 2-core AMD EPYC VM, no GPU, 2 torch threads; every run under the shared CPU lock.
"""


def _manifest(v: str, seed: int) -> dict | None:
    r, base = _recipe(v, seed)
    p = cache.artifact_path("student", specs(r, base, Teacher(r.teacher))["student"]) / "manifest.json"
    return json.loads(p.read_text()) if p.exists() else None


def _row(m: dict) -> dict:
    p, e, t = m["student"]["params"], m["eval"], m["train"]
    return {"bpb": e["heldout_bpb"], "agreement": e["top1_agreement"], "tokens_seen": t["tokens_seen"],
            "tok_s": t["tok_s"], "tok_s_steady": t["tok_s_steady"], "params_total": p["total"],
            "params_active": p["active"], "params_total_non_embedding": p["total_non_embedding"],
            "params_active_non_embedding": p["active_non_embedding"],
            "kv_bytes_per_token": m["student"]["kv_bytes_per_token"], "train_tokens": m["data"]["train_tokens"],
            "teacher_bpb": m["teacher"]["heldout_bpb"], "artifact": m["artifact"]}


def _agg(rows: list[dict], k: str) -> str:
    xs = [r[k] for r in rows]
    if not xs:
        return "not run"
    fmt = (lambda x: f"{100 * x:.2f}%") if k == "agreement" else (lambda x: f"{x:.4f}")
    spread = f" ± {fmt(np.ptp(xs) / 2)}" if len(xs) > 1 else ""
    return f"{fmt(float(np.mean(xs)))}{spread} ({', '.join(fmt(x) for x in xs)})"


def cmd_report(out: Path) -> None:
    res = {}
    for v in VARIANTS:
        rows = [(_row(m) | {"seed": s}) for s in (0, 1) if (m := _manifest(v, s))]
        if rows:
            res[v] = rows
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    L = ["# SLM factory: controlled experiments (issue 4)", "",
         "Generated by `python -m slmbench.factory.experiments report` from the build manifests; setting: "
         "`suites/recipes/claims.yaml` (one knob changed per row). Values: mean ± half-range over seeds "
         "(per-seed values in brackets). Held-out: a split of the same corpus, never trained on.", ""]
    if "kd" in res:
        r0 = res["kd"][0]
        L += [f"Teacher (SmolLM2-135M-Instruct) held-out: {r0['teacher_bpb']:.4f} bits/byte. Training corpus: "
              f"{r0['train_tokens']:,} tokens; every student sees {r0['tokens_seen']:,} tokens.", ""]
    L += _comparisons(res) + [""] + _students(res) + _throughput(res) + _filter_table() + ["", METHOD]
    (out / "README.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


def _comparisons(res: dict) -> list[str]:
    L = ["| comparison | variant | held-out bits/byte | top-1 agreement with teacher |", "|---|---|---|---|"]
    for title, pair in (("C1 distillation", ("kd", "ce")),
                        ("C1 distillation, teacher-initialised embeddings", ("kd_tinit", "ce_tinit")),
                        ("C2 data filtering", ("kd", "unfiltered")), ("C2 curriculum", ("curriculum", "kd"))):
        for v in pair:
            rows = res.get(v, [])
            L.append(f"| {title} | {v} | {_agg(rows, 'bpb')} | {_agg(rows, 'agreement')} |")
    return L


def _students(res: dict) -> list[str]:
    L = ["| student | params total | params active | non-embedding total / active | KV bytes/token "
         "(formula / measured, fp32) | held-out bits/byte | top-1 agreement | train tok/s |",
         "|---|---|---|---|---|---|---|---|"]
    for v in ("mha", "kd", "mqa", "moe"):
        if v not in res:  # not trained yet: its static facts still come from the config (no training needed)
            r, _ = _recipe(v, 0)
            m = make_student(r.student, Teacher(r.teacher), r.corpus.seq_len, 0)
            p, kv = param_counts(m), kv_bytes_per_token(m)
            L.append(f"| {v} (not trained yet) | {p['total']:,} | {p['active']:,} | {p['total_non_embedding']:,} / "
                     f"{p['active_non_embedding']:,} | {kv['formula']:,} / {kv['measured']:,} | – | – | – |")
        for r in res.get(v, [])[:1]:
            kv = r["kv_bytes_per_token"]
            L.append(f"| {'gqa' if v == 'kd' else v} | {r['params_total']:,} | {r['params_active']:,} | "
                     f"{r['params_total_non_embedding']:,} / {r['params_active_non_embedding']:,} | "
                     f"{kv['formula']:,} / {kv['measured']:,} | {r['bpb']:.4f} | {100 * r['agreement']:.2f}% | "
                     f"{r['tok_s']:,.0f} |")
    return L


def _throughput(res: dict) -> list[str]:
    if "tput_cached" not in res or "tput_teacher" not in res:
        return []
    a, b = res["tput_cached"][0], res["tput_teacher"][0]
    return ["", f"Training throughput, same student, {a['tokens_seen']:,} tokens (steady-state median step): "
            f"cached teacher logits {a['tok_s_steady']:,.0f} tok/s vs teacher in the loop "
            f"{b['tok_s_steady']:,.0f} tok/s ({a['tok_s_steady'] / b['tok_s_steady']:.1f}x)."]


def _filter_table() -> list[str]:
    if not (m := _manifest("kd", 0)) or "filter" not in m["data"]:
        return []
    f = m["data"]["filter"]
    L = ["", f"Quality filter (kd/ce/curriculum corpus): kept {f['kept_docs']} of {f['pool_docs']} documents, "
         f"{f['kept_tokens']:,} of {f['pool_tokens']:,} tokens. Kept vs dropped means: teacher perplexity "
         f"{f['mean_teacher_ppl']['kept']} vs {f['mean_teacher_ppl']['dropped']}, symbol ratio "
         f"{f['mean_symbol_ratio']['kept']} vs {f['mean_symbol_ratio']['dropped']}, repetition "
         f"{f['mean_repetition']['kept']} vs {f['mean_repetition']['dropped']}.", "",
         "| source | pool tokens | kept tokens | kept share |", "|---|---|---|---|"]
    for src, v in f["per_source_tokens"].items():
        L.append(f"| {src} | {v['pool']:,} | {v['kept']:,} | {v['kept'] / max(1, v['pool']):.0%} |")
    return L


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"prepare": lambda: cmd_prepare(), "run": lambda: cmd_run(args),
     "report": lambda: cmd_report(Path(args[0]))}[cmd]()
