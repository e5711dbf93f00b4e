"""Corpus: read sources → documents → dedup → held-out split → token pool → filter → synthetic mix → pack into
fixed-length sequences. One cached artifact: train.npy / heldout.npy (int32, (N, seq_len)), token_bytes.npy (UTF-8
bytes per vocabulary id, for bits-per-byte) and report.json (what was read, dropped, kept)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from . import cache, filter as qfilter
from .progress import note
from .recipe import Recipe, source_path

CORPUS_VERSION = 1
_SKIP_STDLIB = {"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3", "__pycache__", "turtledemo"}


def source_files(s, base: Path) -> list[Path]:
    p = source_path(s, base)
    if p is None or not p.exists():
        return []
    if s.stdlib:
        return sorted(f for f in p.rglob("*.py") if not _SKIP_STDLIB & set(f.relative_to(p).parts))
    return sorted(f for f in p.rglob(s.glob) if f.is_file()) if p.is_dir() else [p]


def source_key(r: Recipe, base: Path) -> list:
    """What the corpus is made of, for the hash: each source's files and total size (not mtimes: copies match)."""
    out = []
    for s in r.corpus.sources:
        files = source_files(s, base)
        out.append({**s.model_dump(), "resolved": str(source_path(s, base)), "files": len(files),
                    "bytes": sum(f.stat().st_size for f in files)})
    return out


def read_sources(r: Recipe, base: Path) -> list[tuple[str, str]]:
    """(source label, text) per file, each source capped at its max_bytes."""
    texts = []
    for i, s in enumerate(r.corpus.sources):
        files, label, n = source_files(s, base), s.path or s.data or "stdlib", 0
        if not files:
            note(f"corpus.sources[{i}] ({label}) is absent: skipped (optional)")
        for f in files:
            if n >= s.max_bytes:
                break
            t = f.read_bytes()[: s.max_bytes - n].decode("utf-8", errors="replace")
            n += len(t.encode())
            texts.append((label, t))
    return texts


def split_docs(text: str, doc_chars: int) -> list[str]:
    """Paragraphs (blank-line separated) merged greedily up to doc_chars; long paragraphs cut at line ends."""
    docs, cur = [], ""
    for para in re.split(r"\n\s*\n", text):
        if cur and len(cur) + len(para) + 2 > doc_chars:
            docs.append(cur)
            cur = ""
        while len(para) > doc_chars:  # an over-long paragraph: cut at the last newline (or hard) before the limit
            cut = para.rfind("\n", 0, doc_chars)
            cut = cut if cut > doc_chars // 2 else doc_chars
            docs.append(para[:cut])
            para = para[cut:].lstrip("\n")
        cur = f"{cur}\n\n{para}" if cur else para
    if cur.strip():
        docs.append(cur)
    return [d.strip("\n") for d in docs if d.strip()]


def _key(doc: str) -> str:
    return hashlib.sha1(" ".join(doc.lower().split()).encode()).hexdigest()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte ↔ printable-character map used by byte-level BPE vocabularies (SmolLM2's among them)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b), cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def token_bytes(tok) -> np.ndarray:
    """UTF-8 bytes each vocabulary id stands for (byte-level BPE: exact); special tokens count 1 (a separator)."""
    dec = {c: b for b, c in _bytes_to_unicode().items()}
    n = max(len(tok), max(tok.get_vocab().values()) + 1)
    out = np.ones(n, dtype=np.int32)
    special = set(tok.all_special_ids)
    for s, i in tok.get_vocab().items():
        if i in special:
            continue
        out[i] = len(s) if all(c in dec for c in s) else len(tok.decode([i]).encode())
    return out


def _tokenize(tok, docs: list[str]) -> list[list[int]]:
    return tok(docs, add_special_tokens=False)["input_ids"] if docs else []


def _take(tok, docs, limit, rng):
    """Shuffle, tokenize in batches, stop at `limit` tokens. Returns (docs, ids)."""
    order = rng.permutation(len(docs))
    out_d, out_i, n = [], [], 0
    for b in range(0, len(order), 256):
        chunk = [docs[j] for j in order[b:b + 256]]
        for d, ids in zip(chunk, _tokenize(tok, [c[1] for c in chunk])):
            if n >= limit:
                return out_d, out_i
            out_d.append(d), out_i.append(ids)
            n += len(ids)
    return out_d, out_i


def pack(seqs: list[list[int]], eos: int, L: int, limit: int | None = None) -> np.ndarray:
    flat = [t for ids in seqs for t in (*ids, eos)]
    if limit:
        flat = flat[:limit]
    n = len(flat) // L
    return np.asarray(flat[: n * L], dtype=np.int32).reshape(n, L)


def corpus_spec(r: Recipe, base: Path, teacher_key: dict, synth_key: str | None) -> dict:
    return {"kind": "corpus", "v": CORPUS_VERSION, "teacher": teacher_key, "sources": source_key(r, base),
            "corpus": r.corpus.model_dump(exclude={"sources"}), "filter": r.filter.model_dump(),
            "synth": synth_key if r.synth.tokens and r.synth.ratio else None,
            "synth_ratio": r.synth.ratio if r.synth.tokens else 0}


def build_corpus(r: Recipe, base: Path, teacher, synth_docs: list[str], spec: dict) -> Path:
    final = cache.artifact_path("corpus", spec)
    if final.exists():
        return final
    c, tok = r.corpus, teacher.tokenizer
    rng = np.random.default_rng(c.seed)
    texts = read_sources(r, base)
    raw = [(lab, d) for lab, t in texts for d in split_docs(t, c.doc_chars)]
    docs = [(lab, d) for lab, d in raw if len(d) >= c.min_doc_chars]
    seen, uniq = set(), []
    for lab, d in docs:
        k = _key(d)
        if k not in seen:
            seen.add(k), uniq.append((lab, d))
    held = [x for x in uniq if int(_key(x[1])[:8], 16) % 10_000 < c.heldout_fraction * 10_000]
    train = [x for x in uniq if int(_key(x[1])[:8], 16) % 10_000 >= c.heldout_fraction * 10_000]
    report = {"files": len(texts), "bytes_read": sum(len(t.encode()) for _, t in texts), "pieces": len(raw),
              "fragments_dropped": len(raw) - len(docs), "duplicates_dropped": len(docs) - len(uniq),
              "heldout_docs_available": len(held), "train_docs_available": len(train)}
    pool_docs, pool_ids = _take(tok, train, c.pool_tokens, rng)
    held_docs, held_ids = _take(tok, held, c.heldout_tokens, rng)
    if not pool_docs:
        raise UserError("the corpus is empty (no documents after splitting, dedup and the held-out split)",
                        field="corpus.sources")
    keep, frep = qfilter.select(pool_docs, pool_ids, r.filter, teacher, rng)
    report["filter"] = frep
    if not keep:
        raise UserError("the corpus is empty after filtering (every document was dropped)", field="filter")
    kept_ids = [pool_ids[i] for i in keep]
    kept_ids = [kept_ids[j] for j in rng.permutation(len(kept_ids))]
    n_real = sum(map(len, kept_ids))
    if synth_docs and r.synth.ratio:
        s_ids = [x for x in _tokenize(tok, synth_docs) if x]
        want, used, reps = int(n_real * r.synth.ratio / (1 - r.synth.ratio)), [], 0
        while s_ids and sum(map(len, used)) < want:
            used.append(s_ids[len(used) % len(s_ids)])
        reps = max(0, len(used) - len(s_ids))
        report["synth"] = {"passages": len(s_ids), "tokens_mixed": sum(map(len, used)), "repeated_passages": reps}
        mixed = kept_ids + used
        kept_ids = [mixed[j] for j in rng.permutation(len(mixed))]  # interleave real and synthetic documents
    eos = tok.eos_token_id if tok.eos_token_id is not None else 0
    tr, he = pack(kept_ids, eos, c.seq_len), pack(held_ids, eos, c.seq_len, c.heldout_tokens)
    if len(tr) == 0 or len(he) == 0:
        raise UserError(f"too little text for one {c.seq_len}-token sequence ({'train' if len(tr) == 0 else 'held-out'}"
                        " split); add sources or lower corpus.seq_len", field="corpus")
    report.update(train_tokens=int(tr.size), train_seqs=len(tr), heldout_tokens=int(he.size),
                  heldout_docs=len(held_docs), real_tokens=n_real)
    with cache.building(final, spec) as tmp:
        np.save(tmp / "train.npy", tr), np.save(tmp / "heldout.npy", he)
        np.save(tmp / "token_bytes.npy", token_bytes(tok))
        (tmp / "report.json").write_text(json.dumps(report, indent=1))
    note(f"corpus: {report['train_tokens']:,} train tokens ({len(tr)} × {c.seq_len}), "
         f"{report['heldout_tokens']:,} held-out; filter kept {frep['kept_docs']}/{frep['pool_docs']} documents")
    return final
