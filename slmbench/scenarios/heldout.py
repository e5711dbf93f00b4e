"""Held-out quality of a factory student, on the variant this job loaded (float, PTQ, or the QAT-trained weights
with the same PTQ applied): bits per byte and top-1 agreement with the teacher on its recipe's own held-out split
(never trained on, the same for every student of a recipe), with stderr over the held-out sequences; plus what the
build manifest knows (parameters total / active, tokens seen). Only models from the `recipe` source have a split.

Per-sequence values ride along as the rows' samples (spread_kind `stderr_units`, the split's fingerprint in the
note), so two students scored on the same split are compared paired, sequence by sequence (analysis.claims):
for bits/byte the sample of sequence i is bits_i ÷ mean bytes per sequence (their mean is the bits/byte), for
agreement the share of its positions that agree."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from pydantic import Field

from ..errors import Unsupported
from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import TORCH_MODEL


class HeldoutParams(Params):
    batch: int = Field(8, ge=1, le=512, description="held-out sequences per forward pass")


@register_scenario
class Heldout(Scenario):
    name, Params = 'heldout', HeldoutParams
    requires = frozenset({TORCH_MODEL})

    def run(self, ctx: JobContext, p: HeldoutParams) -> list[Metric]:
        from ..factory.teacher import load_logits
        files = ctx.extra.get("files")
        bdir = getattr(files, "build_dir", None)
        if bdir is None or not (bdir / "manifest.json").is_file():
            raise Unsupported("heldout needs a factory student (model source 'recipe'): only it has a held-out split")
        model = ctx.engine.model  # TORCH_MODEL is required: the worker refused other engines before loading
        man = json.loads((bdir / "manifest.json").read_text())
        art = man["artifacts"]
        cdir = Path(art["corpus"])
        held, tb = np.load(cdir / "heldout.npy"), np.load(cdir / "token_bytes.npy")
        _, hi, _ = load_logits(Path(art["logits_heldout"]))
        ctx.progress(f"held-out: {len(held)} sequences")
        r = per_sequence(model, held, tb, np.asarray(hi[..., 0]), batch=p.batch)
        par, tr = man["student"]["params"], man["train"]
        units = "units=" + hashlib.sha1(np.ascontiguousarray(held).tobytes()).hexdigest()[:12]
        note = f"recipe held-out split ({r['heldout_tokens']:,} tokens, {r['heldout_seqs']} sequences, {units})"
        kind = "stderr_units" if r["heldout_seqs"] > 1 else "stderr"
        out = [Metric("heldout_bpb", r["heldout_bpb"], "bits/B", n=r["heldout_tokens"], spread=r["heldout_bpb_stderr"],
                      spread_kind=kind, higher_is_better=False, samples=r["bpb_units"],
                      note=f"{note}; stderr over sequences; samples: bits per sequence ÷ mean bytes per sequence"),
               Metric("top1_agreement", r["top1_agreement"], "fraction", n=r["heldout_tokens"],
                      spread=r["top1_agreement_stderr"], spread_kind=kind, higher_is_better=True,
                      samples=r["agree_units"],
                      note=f"{note}: share of positions where the argmax is the teacher's; samples: per sequence"),
               Metric("teacher_heldout_bpb", man["teacher"]["heldout_bpb"], "bits/B", higher_is_better=False,
                      note="the teacher on the same split (from its cached log-likelihoods)"),
               Metric("params_total", par["total"], "params", note="incl. embeddings"),
               Metric("params_active", par["active"], "params", note="per token (MoE: top-k experts)"),
               Metric("train_tokens_seen", tr["tokens_seen"], "tokens", note=f"{tr['steps']} steps")]
        if tr.get("qat"):
            out.append(Metric("qat_tokens", tr["qat"]["tokens"], "tokens", note=f"QAT {tr['qat']['scheme']} phase"))
        return out


def per_sequence(model, heldout: np.ndarray, token_bytes: np.ndarray, teacher_top1: np.ndarray, batch: int = 8
                 ) -> dict:
    """factory.evaluate's figures plus the per-sequence values the paired comparisons need: bits per sequence over
    the mean bytes per sequence (their mean is the bits/byte), and agreement per sequence."""
    from ..factory.evaluate import evaluate
    r = evaluate(model, heldout, token_bytes, teacher_top1, batch=batch, per_seq=True)
    bits, nb = np.array(r["seq_bits"]), np.array(r["seq_bytes"], dtype=float)
    return {**r, "bpb_units": [float(v) for v in bits / nb.mean()], "agree_units": [float(v) for v in r["seq_agreement"]]}
