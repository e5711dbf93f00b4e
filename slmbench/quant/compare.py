"""PTQ vs QAT at the same training budget, on a small student (until the factory builds one, this trains its own).

    python -m slmbench.quant.compare --work DIR [--steps 200 --extra-steps 50 --schemes int8da_int4w,intx8_weight_only]

1. pretrain a small llama student (SmolLM2's tokenizer) for --steps on the corpus (austen.txt held out);
2. branch: (a) --extra-steps more float steps → the PTQ parent; (b) per scheme, --extra-steps QAT steps
   (slmbench.quant.qat.train, the factory's final phase) from the same checkpoint, same batches, same schedule;
3. export each as an HF directory and write DIR/ptq_vs_qat.yaml: a suite that measures each branch at each
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


def main(argv=None) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..models import smollm2
    from . import qat

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--extra-steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--qat-lr", type=float, default=3e-4)
    ap.add_argument("--schemes", default="int8da_int4w,intx8_weight_only")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    log = lambda m: print(m, flush=True)  # noqa: E731
    tok_dir = smollm2.hf_dir(log)
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    stream = token_stream(tok, Path(os.environ["SLMBENCH_DATA_DIR"]))
    log(f"{len(stream)} training tokens")
    cfg = AutoConfig.for_model(**{**STUDENT, "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
                                  "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id})
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    t0 = time.perf_counter()
    base_losses = qat.fit(model, batches(stream, a.batch, a.seq, seed=1), a.steps, a.lr, log=log, tag="pretrain")
    base_s = time.perf_counter() - t0
    record = {"student": STUDENT, "params": sum(p.numel() for p in model.parameters()), "steps": a.steps,
              "extra_steps": a.extra_steps, "batch": a.batch, "seq": a.seq, "tokens_per_step": a.batch * a.seq,
              "pretrain_s": base_s, "pretrain_final_loss": base_losses[-1], "branches": {}}

    def save(m, name):
        d = work / name
        m.save_pretrained(d)
        tok.save_pretrained(d)
        return d

    # (a) the PTQ parent: the same extra budget spent on float training
    ptq_model = copy.deepcopy(model)
    t0 = time.perf_counter()
    la = qat.fit(ptq_model, batches(stream, a.batch, a.seq, seed=2), a.extra_steps, a.qat_lr, log=log, tag="float")
    record["branches"]["float"] = {"dir": str(save(ptq_model, "student-float")), "final_loss": la[-1],
                                   "seconds": time.perf_counter() - t0}
    # (b) QAT per scheme, from the same checkpoint and the same batches
    for scheme in a.schemes.split(","):
        m = copy.deepcopy(model)
        r = qat.train(m, batches(stream, a.batch, a.seq, seed=2), scheme, a.extra_steps, lr=a.qat_lr, log=log)
        record["branches"][f"qat-{scheme}"] = {"dir": str(save(m, f"student-qat-{scheme}")),
                                               "final_loss": r["losses"][-1], "seconds": r["seconds"]}
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
