"""The teacher: any model source (the real SmolLM2 by default; a random-init model in tests), loaded once and
lazily, so a fully cached build never loads it. Also computes and caches, per token array, its top-k logits, the
log-sum-exp of its other logits (the tail bucket of the KD loss, kd.py) and its next-token NLL."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from . import cache
from .progress import bar, note

LOGITS_VERSION = 2  # 2: + tail (log-sum-exp outside the top-k)


class Teacher:
    def __init__(self, spec, seed: int = 0):
        self.spec, self.seed = spec, seed
        self._model = self._tok = self._files = None

    def key(self) -> dict:
        return {"source": self.spec.source, "path": self.spec.path, "config": self.spec.config}

    @property
    def files(self):
        if self._files is None:
            from ..models import resolve
            self._files = resolve(self.spec, progress=note)
        return self._files

    @property
    def tokenizer(self):
        if self._tok is None:
            from transformers import AutoTokenizer
            self._tok = AutoTokenizer.from_pretrained(str(self.files.tokenizer_dir))
        return self._tok

    @property
    def model(self):
        if self._model is None:
            import torch
            from transformers import AutoModelForCausalLM
            f = self.files
            if f.hf_dir is not None:
                self._model = AutoModelForCausalLM.from_pretrained(str(f.hf_dir), dtype=torch.float32)
            else:  # random-init teacher (tests): deterministic from the seed
                torch.manual_seed(self.seed)
                self._model = AutoModelForCausalLM.from_config(f.config)
            self._model.eval()
        return self._model

    @property
    def config(self):
        if self._model is not None:
            return self._model.config
        f = self.files
        if f.config is not None:
            return f.config
        from transformers import AutoConfig
        return AutoConfig.from_pretrained(str(f.hf_dir))

    def topk(self, x, k: int):
        """For a (B, L) id batch: top-k logits (values, indices, sorted), the log-sum-exp of the logits outside the
        top-k (the tail bucket; float32, -inf when k = vocabulary) and the NLL of the next token."""
        import torch
        with torch.no_grad():  # not inference_mode: teacher-in-the-loop training saves these ids for backward
            z = self.model(x).logits.float()
            v, i = z.topk(k, dim=-1)
            lse = z.logsumexp(-1)
            tail = z.scatter(-1, i, float("-inf")).logsumexp(-1)
            nll = torch.zeros(x.shape, dtype=torch.float32)
            nll[:, :-1] = lse[:, :-1] - z[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
        return v, i, tail, nll


def logits_for(tokens_file: Path, teacher: Teacher, k: int, batch: int, shard_seqs: int, label: str) -> Path:
    """Cache the teacher's top-k logits for a packed (N, L) token array; keyed by the array's content hash.
    Written in shards (each atomic) into `.partial/`, so an interrupted run resumes at the next missing shard."""
    import torch
    digest = hashlib.sha256(tokens_file.read_bytes()).hexdigest()[:16]
    spec = {"kind": "logits", "v": LOGITS_VERSION, "tokens_sha": digest, "teacher": teacher.key(), "top_k": k}
    final = cache.artifact_path("logits", spec)
    if final.exists():
        return final
    toks = np.load(tokens_file)
    part = cache.partial_dir(final)
    shards = range(0, len(toks), shard_seqs)
    done = sum((part / f"shard-{s:07d}.npz").exists() for s in shards)
    note(f"teacher top-{k} logits for {label}: {toks.size:,} tokens ({done}/{len(shards)} shards cached)")
    with bar(f"teacher logits ({label})", toks.size) as adv:
        for s in shards:
            f = part / f"shard-{s:07d}.npz"
            if f.exists():
                adv(min(shard_seqs, len(toks) - s) * toks.shape[1])
                continue
            vs, ix, tl, nl = [], [], [], []
            for b in range(s, min(s + shard_seqs, len(toks)), batch):
                x = torch.from_numpy(toks[b:min(b + batch, s + shard_seqs, len(toks))].astype(np.int64))
                v, i, tail, nll = teacher.topk(x, k)
                vs.append(v.half().numpy()), ix.append(i.int().numpy())
                tl.append(tail.numpy()), nl.append(nll.numpy())
                adv(x.numel())
            cache.atomic_write(f, lambda p: _savez(p, values=np.concatenate(vs), indices=np.concatenate(ix),
                                                   tail=np.concatenate(tl), nll=np.concatenate(nl)))
    with cache.building(final, spec) as tmp:
        parts = [np.load(part / f"shard-{s:07d}.npz") for s in shards]
        for name in ("values", "indices", "tail", "nll"):
            np.save(tmp / f"{name}.npy", np.concatenate([p[name] for p in parts]))
    return final


def _savez(path: Path, **arrays) -> None:
    with open(path, "wb") as fh:  # a file object: np.savez would otherwise append ".npz" to the temp name
        np.savez(fh, **arrays)


def load_logits(d: Path, tail: bool = False):
    """(values fp16 (N,L,k), indices int32 (N,L,k), nll fp32 (N,L)), memory-mapped; with tail=True also the tail
    log-sum-exp fp32 (N,L) as a fourth element."""
    names = ("values", "indices", "nll") + (("tail",) if tail else ())
    return tuple(np.load(d / f"{n}.npy", mmap_mode="r") for n in names)
