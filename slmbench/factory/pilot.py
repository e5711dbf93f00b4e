"""Pilot for choosing token budgets (issue 16): heal one depth-pruned SmolLM2 with KD (the tail-bucket loss) and with
CE through the factory's one training loop, from the same pruned init, over the same batches; score every arm and the
teacher on the same held-out sequences and report the paired difference with its CI, plus training cost per token.

    python -m slmbench.factory.pilot --out DIR [--keep-layers 20 --tokens 8192 --batch 4 --heldout-seqs 32]

The corpus is recipes/claims.yaml's with a random filter (no teacher scoring: cheaper, and C1 does not need it); the
teacher's top-k + tail are computed for the rows trained on only (not the whole split), as the cache would hold them.
CPU seconds per token (process time, all threads) are reported beside wall tok/s: on a shared machine wall time
says little, CPU time projects to an idle one."""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from ..settings import REPO_DIR
from .corpus import build_corpus, corpus_spec
from .evaluate import evaluate
from .recipe import load_recipe
from .students import make_student, param_counts
from .teacher import Teacher
from .train import kd_step, loop


def _args(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipe", default=str(REPO_DIR / "suites" / "recipes" / "claims.yaml"))
    ap.add_argument("--keep-layers", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=8192, help="training tokens per arm")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--heldout-seqs", type=int, default=32)
    ap.add_argument("--calib-tokens", type=int, default=4096)
    ap.add_argument("--pool-tokens", type=int, default=32768)
    ap.add_argument("--arms", default="kd:0.0,ce:1.0", help="name:alpha,... (t = 1)")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def paired(a: dict, b: dict) -> dict:
    """bits/byte of a minus b over the same sequences: Σ(bits_a - bits_b) / Σ bytes, its stderr over sequences."""
    d, nb = np.array(a["seq_bits"]) - np.array(b["seq_bits"]), np.array(a["seq_bytes"], dtype=float)
    diff, se = d.sum() / nb.sum(), float(np.std(d, ddof=1) / nb.mean() / math.sqrt(len(d)))
    return {"diff_bpb": float(diff), "stderr": se, "ci95": [float(diff - 1.96 * se), float(diff + 1.96 * se)],
            "n_seqs": len(d), "a_better_seqs": int((d < 0).sum())}


def main(argv=None) -> int:
    a = _args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    over = {"corpus": {"pool_tokens": a.pool_tokens, "heldout_tokens": a.heldout_seqs * 128},
            "filter": {"method": "random"},
            "student": {"prune": {"depth": {"keep_layers": a.keep_layers, "score": "block_influence"},
                                  "calib_tokens": a.calib_tokens}},
            "train": {"tokens": a.tokens, "batch_size": a.batch, "lr": a.lr, "warmup_steps": 2, "temperature": 1.0}}
    r, base = load_recipe(a.recipe, over)
    teacher = Teacher(r.teacher, seed=r.corpus.seed)
    sp = corpus_spec(r, base, teacher.key(), None)
    cdir = build_corpus(r, base, teacher, [], sp)
    toks, held = np.load(cdir / "train.npy"), np.load(cdir / "heldout.npy")[: a.heldout_seqs]
    tb = np.load(cdir / "token_bytes.npy")
    L, steps = toks.shape[1], max(1, math.ceil(a.tokens / (a.batch * toks.shape[1])))
    rows = toks[: min(len(toks), steps * a.batch)]
    rec = {"recipe": a.recipe, "overrides": over, "train_rows": len(rows), "seq_len": L, "steps": steps,
           "heldout_seqs": len(held), "threads": a.threads, "arms": {}}

    t0, c0 = time.perf_counter(), time.process_time()
    k, parts = r.logits.top_k, []
    for b in range(0, len(rows), 8):
        v, i, tail, nll = teacher.topk(torch.from_numpy(rows[b:b + 8].astype(np.int64)), k)
        parts.append((v.half().numpy(), i.int().numpy(), nll.numpy(), tail.numpy()))
    logits = tuple(np.concatenate([p[j] for p in parts]) for j in range(4))
    hv, hi, htail, hnll = teacher.topk(torch.from_numpy(held.astype(np.int64)), k)
    rec["teacher_logits"] = {"tokens": int(rows.size + held.size), "wall_s": time.perf_counter() - t0,
                             "cpu_s": time.process_time() - c0}
    top1 = hi[..., 0].numpy()
    bits = hnll[:, :-1].sum(1).numpy() / math.log(2)
    nb = tb[held[:, 1:]].sum(1)
    rec["teacher"] = {"heldout_bpb": float(bits.sum() / nb.sum()), "seq_bits": bits.tolist(), "seq_bytes": nb.tolist()}

    calib = rows[: -(-r.student.prune.calib_tokens // L)]
    info: dict = {}
    t0 = time.perf_counter()
    s0 = make_student(r.student, teacher, L, r.seed, calib, info)
    rec["prune"] = {**info, "wall_s": time.perf_counter() - t0, "params": param_counts(s0)}
    rec["pruned_init"] = evaluate(s0, held, tb, top1, per_seq=True)
    print(f"teacher {rec['teacher']['heldout_bpb']:.4f} bits/B; pruned (no healing) "
          f"{rec['pruned_init']['heldout_bpb']:.4f}; kept layers {info['kept_layers']}", flush=True)
    for arm in a.arms.split(","):
        name, alpha = arm.split(":")
        t = r.train.model_copy(update={"alpha": float(alpha)})
        m = copy.deepcopy(s0)
        c0 = time.process_time()
        st = loop(m, t, steps, kd_step(m, rows, logits, t, r.seed, steps), desc=f"healing ({name})",
                  log=lambda s: print(s, flush=True))
        cpu = time.process_time() - c0
        ev = evaluate(m, held, tb, top1, per_seq=True)
        rec["arms"][name] = {"alpha": float(alpha), "eval": ev, "train_s": st["train_s"], "cpu_s": cpu,
                             "tokens": st["tokens"], "tok_s_wall": st["tokens"] / st["train_s"],
                             "cpu_s_per_token": cpu / st["tokens"], "loss": [x["loss"] for x in st["log"]]}
        print(f"{name}: {ev['heldout_bpb']:.4f} bits/B, {st['tokens'] / st['train_s']:.1f} tok/s wall, "
              f"{cpu / st['tokens'] * 1000:.1f} CPU-ms/token", flush=True)
    names = list(rec["arms"])
    rec["paired"] = {f"{x}-{y}": paired(rec["arms"][x]["eval"], rec["arms"][y]["eval"])
                     for j, x in enumerate(names) for y in names[j + 1:]}
    for n in names:
        rec["paired"][f"{n}-pruned_init"] = paired(rec["arms"][n]["eval"], rec["pruned_init"])
        rec["paired"][f"{n}-teacher"] = paired(rec["arms"][n]["eval"], rec["teacher"])
    (out / "pilot.json").write_text(json.dumps(rec, indent=1))
    print(json.dumps(rec["paired"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
