"""PTQ vs QAT at the same training budget, on a small plain-CE student trained here (no teacher: a quick check of
the QAT machinery; a recipe's `train.qat` is the real thing). Here, not in quant, because it trains.

    python -m slmbench.factory.ptq_vs_qat --work DIR [--steps 200 --extra-steps 50 --schemes int8da_int4w,...]

1. one branch per row, each a run of the factory's training loop (train.fit) over --steps + --extra-steps steps,
   from the same initial weights over the same batches (SmolLM2's tokenizer; the corpus with austen.txt held out):
   "float" trains every step in float (the PTQ parent); "qat-SCHEME" trains the last --extra-steps fake-quantized,
   as a recipe's `train.qat` does. The shared prefix is recomputed per branch (training is deterministic;
   record.json keeps each branch's loss at step --steps to show it);
2. export each as an HF directory and write DIR/ptq_vs_qat.yaml: a suite that measures each branch at each
   scheme (perplexity on held-out Austen, latency) through the normal torch backend, which applies the PTQ.
So every row that says `quantization: int8da_int4w` ran the same kernels; PTQ and QAT rows differ only in the
weights they quantized."""
from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

STUDENT = dict(model_type="llama", hidden_size=192, intermediate_size=512, num_hidden_layers=4,
               num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
               rope_theta=10000.0)
TRAIN_FILES = ["tinyshakespeare.txt", "inaugural.txt", "state_union.txt", "fortunes.txt", "movie_reviews.txt"]


def token_stream(tok, data_dir: Path, max_bytes_per_file: int = 600_000):
    import torch
    ids = []
    for name in TRAIN_FILES:
        text = (data_dir / "corpus" / name).read_bytes()[:max_bytes_per_file].decode("utf-8", "ignore")
        ids += tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return torch.tensor(ids)


def batches(stream, batch: int, seq: int, seed: int):
    """Deterministic random windows: the same seed gives every branch the same batches."""
    import torch
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(stream) - seq - 1, (batch,), generator=g)
        yield torch.stack([stream[s:s + seq] for s in starts])


def _args(argv):
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=200, help="float steps before the branches differ")
    ap.add_argument("--extra-steps", type=int, default=50, help="the final steps: QAT in the qat-* branches")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--schemes", default="int8da_int4w,intx8_weight_only")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..models import smollm2
    from .recipe import Train
    from .train import fit

    a = _args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    tok = AutoTokenizer.from_pretrained(str(smollm2.hf_dir(log)))
    stream = token_stream(tok, Path(os.environ["SLMBENCH_DATA_DIR"]))
    log(f"{len(stream)} training tokens")
    cfg = AutoConfig.for_model(**{**STUDENT, "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
                                  "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id})
    init = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    t = Train(lr=a.lr, warmup_steps=a.warmup)
    record = {"student": STUDENT, "params": sum(p.numel() for p in init.parameters()), "steps": a.steps,
              "extra_steps": a.extra_steps, "batch": a.batch, "seq": a.seq, "tokens_per_step": a.batch * a.seq,
              "train": t.model_dump(include={"lr", "warmup_steps", "min_lr_ratio", "weight_decay", "grad_clip"}),
              "branches": {}}
    for name, scheme in [("float", None)] + [(f"qat-{s}", s) for s in a.schemes.split(",")]:
        m = copy.deepcopy(init)
        t0 = time.perf_counter()
        st = fit(m, batches(stream, a.batch, a.seq, seed=1), a.steps + a.extra_steps, t, scheme=scheme,
                 qat_from=a.steps, log=log, desc=name)
        m.save_pretrained(work / f"student-{name}")
        tok.save_pretrained(work / f"student-{name}")
        record["branches"][name] = {"dir": str(work / f"student-{name}"), "final_loss": st["log"][-1]["loss"],
                                    "prefix_loss": st["log"][a.steps - 1]["loss"] if a.steps else None,
                                    "seconds": time.perf_counter() - t0}
    (work / "record.json").write_text(json.dumps(record, indent=1))
    write_suite(work, a.schemes.split(","), a.threads)
    log(f"wrote {work / 'ptq_vs_qat.yaml'}")
    return 0


def write_suite(work: Path, schemes: list[str], threads: int) -> None:
    """Rows: the float student; its PTQ at each scheme; each QAT branch at its scheme. Names say which."""
    fl = str(work / "student-float")
    models = [{"name": "student-fp32", "source": "hf", "path": fl}]
    for s in schemes:
        models.append({"name": f"student-ptq-{s}", "source": "hf", "path": fl, "knobs": {"quantization": s}})
        models.append({"name": f"student-qat-{s}", "source": "hf", "path": str(work / f"student-qat-{s}"),
                       "knobs": {"quantization": s}})
    suite = {
        "name": "ptq_vs_qat", "seed": 0,
        "settings": {"warmup": 1, "repetitions": 5, "min_duration_s": 3, "timeout_s": 600},
        "models": models,
        "devices": [{"name": "local-cpu", "threads": threads}],
        "scenarios": [{"name": "perplexity", "params": {"context": 256}},
                      {"name": "latency", "params": {"prompt_tokens": 128, "gen_tokens": 32}}],
    }
    import yaml
    (work / "ptq_vs_qat.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))


if __name__ == "__main__":
    raise SystemExit(main())
