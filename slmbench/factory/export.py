"""Export: the student as a Hugging Face directory (AutoModelForCausalLM + AutoTokenizer load it), the build
manifest, and the loss curves (CSV, and a PNG when matplotlib is present)."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def export(tmp: Path, model, tokenizer, manifest: dict, log: list[dict], evals: list[dict]) -> None:
    d = tmp / "model"
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(d)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    if log:
        with open(tmp / "curves.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(log[0]))
            w.writeheader()
            w.writerows(log)
    if evals:
        (tmp / "evals.json").write_text(json.dumps(evals, indent=1))
    _plot(tmp / "curves.png", log, evals)


def _plot(path: Path, log, evals) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    if not log:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = [r["tokens"] for r in log]
    for k in ("loss", "ce", "kl"):
        ax.plot(x, [r[k] for r in log], label=f"train {k}", lw=0.8)
    if evals:
        ax.plot([e["tokens"] for e in evals], [e["heldout_nll"] for e in evals], "o-", label="held-out NLL")
    ax.set_xlabel("tokens seen"), ax.set_ylabel("nats/token"), ax.legend(), fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
