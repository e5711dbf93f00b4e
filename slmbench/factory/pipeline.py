"""The SLM factory end to end: synth → corpus (filter) → teacher logits → student → export. Each stage is an
artifact under the hash of its full spec (cache.py): a finished stage is never rebuilt, an interrupted one resumes."""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cache, synth
from .corpus import build_corpus, corpus_spec
from .evaluate import evaluate, teacher_bpb
from .export import export
from .progress import note
from .recipe import Recipe, load_recipe
from .students import kv_bytes_per_token, make_student, param_counts
from .teacher import Teacher, load_logits, logits_for
from .train import train

STUDENT_VERSION = 2  # 2: KD loss with the tail bucket (issue 16)


@dataclass
class Built:
    path: Path
    manifest: dict
    gguf: dict = field(default_factory=dict)  # level -> GGUF path (quantized exports, cached by quant.gguf)

    @property
    def model_dir(self) -> Path:
        return self.path / "model"


def build(recipe_path: str | Path, overrides: dict | None = None) -> Built:
    r, base = load_recipe(recipe_path, overrides)
    return build_recipe(r, base, str(recipe_path))


def specs(r: Recipe, base: Path, teacher: Teacher) -> dict:
    tk = teacher.key()
    s = synth.synth_spec(r, tk)
    c = corpus_spec(r, base, tk, cache.spec_hash(s))
    st = {"kind": "student", "v": STUDENT_VERSION, "corpus": cache.spec_hash(c), "teacher": tk,
          "top_k": r.logits.top_k, "student": r.student.model_dump(), "seed": r.seed,
          # no qat: left out, so every recipe without it keeps the student hash it had before the knob existed
          "train": r.train.model_dump(exclude={"checkpoint_every"} | ({"qat"} if r.train.qat is None else set()))}
    return {"synth": s, "corpus": c, "student": st}


def prepare(r: Recipe, base: Path, teacher: Teacher, sp: dict) -> tuple[Path, Path, Path]:
    """The data stages: synthetic passages, corpus (filtered, mixed, packed), teacher logits for train + held-out."""
    docs = synth.generate(r, teacher, sp["synth"]) if r.synth.tokens and r.synth.ratio else []
    cdir = build_corpus(r, base, teacher, docs, sp["corpus"])
    lg = r.logits
    ltrain = logits_for(cdir / "train.npy", teacher, lg.top_k, lg.batch_size, lg.shard_seqs, "train")
    lheld = logits_for(cdir / "heldout.npy", teacher, lg.top_k, lg.batch_size, lg.shard_seqs, "held-out")
    return cdir, ltrain, lheld


def build_recipe(r: Recipe, base: Path, recipe_file: str = "") -> Built:
    import torch
    torch.set_num_threads(r.threads or os.cpu_count() or 1)
    teacher = Teacher(r.teacher, seed=r.corpus.seed)
    sp = specs(r, base, teacher)
    final = cache.artifact_path("student", sp["student"])
    if final.exists():
        note(f"cached: {final}")
        return _ggufs(r, Built(final, json.loads((final / "manifest.json").read_text())))
    wall, t0 = {}, time.perf_counter()

    def lap(name):
        nonlocal t0
        wall[name], t0 = round(time.perf_counter() - t0, 2), time.perf_counter()

    if r.student.prune is not None:  # a shape the teacher cannot be cut to fails now, not after the data stages
        from .prune import check
        check(r.student, teacher.config, recipe_file or None)
    cdir, ltrain, lheld = prepare(r, base, teacher, sp)
    lap("data")
    tokens, held = np.load(cdir / "train.npy"), np.load(cdir / "heldout.npy")
    tb = np.load(cdir / "token_bytes.npy")
    hv, hi, hnll = load_logits(lheld)
    init: dict = {}
    calib = tokens[: -(-r.student.prune.calib_tokens // tokens.shape[1])] if r.student.prune else None
    model = make_student(r.student, teacher, r.corpus.seq_len, r.seed, calib, init)
    note(f"student {r.student.arch}: {param_counts(model)['total']:,} params; training on {r.train.tokens:,} tokens")
    ev = lambda m: evaluate(m, held, tb, np.asarray(hi[..., 0]))  # noqa: E731
    st = train(model, tokens, load_logits(ltrain, tail=True), r.train, r.seed, cache.partial_dir(final),
               teacher if r.train.teacher_in_loop else None, r.logits.top_k, ev)
    lap("train")
    result = ev(model)
    lap("eval")
    steady = [x["step_s"] for x in st["log"][2:]] or [x["step_s"] for x in st["log"]]
    B, L = r.train.batch_size, r.corpus.seq_len
    manifest = {
        "recipe": r.model_dump(), "recipe_file": recipe_file, "artifact": str(final),
        "hashes": {k: cache.spec_hash(v) for k, v in sp.items()},
        "artifacts": {"corpus": str(cdir), "logits_train": str(ltrain), "logits_heldout": str(lheld)},
        "data": json.loads((cdir / "report.json").read_text()),
        "teacher": {**teacher.key(), "heldout_bpb": teacher_bpb(np.asarray(hnll), held, tb)},
        "student": {"params": param_counts(model), "init": init or None, "kv_bytes_per_token": kv_bytes_per_token(model),
                    "config": model.config.to_dict()},
        "train": {"steps": st["step"], "tokens_seen": st["tokens"], "train_s": round(st["train_s"], 2),
                  "tok_s": st["tokens"] / max(st["train_s"], 1e-9), "tok_s_steady": B * L / float(np.median(steady)),
                  "final_loss": st["log"][-1]["loss"] if st["log"] else None,
                  "teacher_in_loop": r.train.teacher_in_loop, "qat": st.get("qat")},
        "eval": result, "wall_s": wall,
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__, "threads": torch.get_num_threads()},
    }
    with cache.building(final, sp["student"]) as tmp:
        export(tmp, model, teacher.tokenizer, manifest, st["log"], st["evals"])
    note(f"built {final} — held-out {result['heldout_bpb']:.3f} bits/byte, "
         f"top-1 agreement {result.get('top1_agreement', 0):.1%}, {manifest['train']['tok_s']:,.0f} train tok/s")
    return _ggufs(r, Built(final, manifest))


def _ggufs(r: Recipe, b: Built) -> Built:
    """Quantized exports: GGUFs of the student's HF dir, each cached (by quant.gguf) under the student's identity."""
    from ..errors import JobError, UserError
    for level in r.export.gguf:
        from ..quant.gguf import gguf_for
        try:
            b.gguf[level] = gguf_for(b.model_dir, level, progress=note)[0]
        except (JobError, ImportError) as e:
            raise UserError(f"GGUF export at {level} failed: {e}", field="export.gguf")
    return b
