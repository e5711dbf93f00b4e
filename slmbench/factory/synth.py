"""Synthetic "textbook-style" passages from the teacher (the Phi-series recipe): one chat prompt per topic, sampled
in batches until a token budget is spent. Cached as its own artifact (passages.jsonl)."""
from __future__ import annotations

import json

from . import cache
from .progress import bar, note

SYNTH_VERSION = 1
PROMPT = ("Write a clear, textbook-style passage that teaches {topic} to a curious student. Use short paragraphs, "
          "define each term, and give one worked example.")


def synth_spec(r, teacher_key: dict) -> dict:
    return {"kind": "synth", "v": SYNTH_VERSION, "teacher": teacher_key, "seed": r.corpus.seed,
            "synth": r.synth.model_dump(exclude={"ratio"})}


def _prompt(tok, topic: str) -> str:
    text = PROMPT.format(topic=topic)
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return f"Textbook chapter: {topic}\n\n"  # a base model or a test tokenizer without a chat template


def generate(r, teacher, spec: dict) -> list[str]:
    final = cache.artifact_path("synth", spec)
    if not final.exists():
        _generate(r, teacher, spec, final)
    return [json.loads(ln)["text"] for ln in (final / "passages.jsonl").read_text().splitlines() if ln.strip()]


def _generate(r, teacher, spec, final) -> None:
    import torch
    s, tok, model = r.synth, teacher.tokenizer, teacher.model
    tok.padding_side = "left"  # batched generation continues every prompt from its last real token
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    torch.manual_seed(r.corpus.seed)
    rows, n, i, idle = [], 0, 0, 0
    note(f"synthetic data: {s.tokens:,} tokens from the teacher, {len(s.topics)} topics")
    with bar("synthetic passages", s.tokens) as adv:
        while n < s.tokens and idle < 3:  # give up after 3 batches that produce nothing (a broken teacher)
            before = n
            topics = [s.topics[(i + j) % len(s.topics)] for j in range(s.batch_size)]
            i += s.batch_size
            enc = tok([_prompt(tok, t) for t in topics], return_tensors="pt", padding=True, add_special_tokens=False)
            with torch.inference_mode():
                out = model.generate(**enc, max_new_tokens=min(s.max_new_tokens, s.tokens - n + 1), do_sample=True,
                                     temperature=s.temperature, top_p=0.95, pad_token_id=pad)
            for t, seq in zip(topics, out[:, enc["input_ids"].shape[1]:].tolist()):
                if tok.eos_token_id in seq:
                    seq = seq[:seq.index(tok.eos_token_id)]
                text = tok.decode(seq, skip_special_tokens=True).strip()
                if text:
                    rows.append({"topic": t, "tokens": len(seq), "text": text})
                    n += len(seq)
                    adv(len(seq))
            idle = idle + 1 if n == before else 0
    with cache.building(final, spec) as tmp:
        (tmp / "passages.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
