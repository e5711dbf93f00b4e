"""Tiny random-init models for tests: any transformers architecture from a config dict, plus a real byte-level
tokenizer (256 byte tokens + specials, no merges) so text scenarios run without downloading anything."""
from __future__ import annotations

import json
from pathlib import Path

from ..contracts import ModelFiles, Source, register_source
from ..errors import UserError
from ..settings import cache_dir

TINY_DEFAULTS = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, vocab_size=320, max_position_embeddings=2048,
                     tie_word_embeddings=True, bos_token_id=256, eos_token_id=257, pad_token_id=258)


def make_config(overrides: dict):
    from transformers import AutoConfig
    kw = {**TINY_DEFAULTS, **(overrides or {})}
    model_type = kw.pop("model_type")
    cfg = AutoConfig.for_model(model_type, **kw)
    if cfg.vocab_size < 259:
        raise ValueError("vocab_size must be at least 259 (256 bytes + bos/eos/pad)")
    return cfg


def byte_tokenizer_dir() -> Path:
    """A byte-level BPE tokenizer with no merges, saved once as a standard HF tokenizer directory."""
    out = cache_dir() / "byte-tokenizer"
    if (out / "tokenizer.json").is_file():
        return out
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    vocab.update({"<s>": 256, "</s>": 257, "<pad>": 258})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    tmp = out.with_name(out.name + ".tmp")
    fast.save_pretrained(tmp)
    (tmp / "README").write_text(json.dumps({"what": "byte-level tokenizer for random-init test models"}))
    tmp.replace(out) if not out.exists() else None
    return out


@register_source
class RandomInit(Source):
    name = "random"
    fields = frozenset({"config"})

    @classmethod
    def check(cls, spec, file, field, base):
        try:
            make_config(spec.config)
        except Exception as e:  # transformers raises its own types for a config it rejects: one line, exit 2
            why = " ".join(str(e).split())[:300] or type(e).__name__
            raise UserError(f"bad random-init config: {why}", file=file, field=f"{field}.config")

    @classmethod
    def resolve(cls, spec, progress=print) -> ModelFiles:
        return ModelFiles(config=make_config(spec.config), tokenizer_dir=byte_tokenizer_dir(),
                          origin="random init (tests)")
