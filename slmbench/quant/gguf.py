"""Hugging Face (llama-architecture) directory → GGUF, and GGUF → any llama.cpp quantization level.

Export writes an F32 (or F16) GGUF with the `gguf` package: llama.cpp's convert_hf_to_gguf.py is not shipped in any
pip package. Quantization is llama.cpp's own `llama_model_quantize` (through llama-cpp-python's C API), from the
F32 file, so every level starts from the same weights. Files are cached under a key of the source files, so a
suite never re-exports what it already has.

Two details llama.cpp needs that HF does not store: q/k projection rows are permuted back to GGML's rotary layout
(HF's rotate_half ↔ GGML's interleaved pairs, as convert_hf_to_gguf.py does), and the token list is padded to
the model's vocab size (the embedding matrix may have more rows than the tokenizer has tokens)."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..errors import Unsupported
from ..settings import cache_dir

# level -> llama_ftype name in llama.cpp (LLAMA_FTYPE_*); "f32"/"f16" are written directly by the exporter.
LEVELS = {
    "f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0", "q6_k": "MOSTLY_Q6_K",
    "q5_k_m": "MOSTLY_Q5_K_M", "q5_0": "MOSTLY_Q5_0", "q4_k_m": "MOSTLY_Q4_K_M", "q4_k_s": "MOSTLY_Q4_K_S",
    "q4_0": "MOSTLY_Q4_0", "q4_1": "MOSTLY_Q4_1", "q3_k_m": "MOSTLY_Q3_K_M", "q2_k": "MOSTLY_Q2_K",
}
EXPORT_VERSION = 1  # bump when the exporter's output changes: invalidates cached files

_LAYER_MAP = {  # HF suffix -> GGUF name (llama architecture)
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
_TOP_MAP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}


def _permute(w, n_head: int):
    """HF q/k rows (rotate_half halves) → GGML rotary layout (interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _source_key(hf_dir: Path) -> str:
    """Cheap identity of an HF dir: names, sizes and mtimes of its files (not a content hash of 0.5 GB)."""
    h = hashlib.sha256(f"{hf_dir.resolve()}|v{EXPORT_VERSION}".encode())
    for f in sorted(hf_dir.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _tokenizer_fields(hf_dir: Path, n_vocab: int) -> dict:
    tj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tj["model"]
    if model.get("type") != "BPE":
        raise Unsupported(f"GGUF export handles byte-level BPE tokenizers; {hf_dir} has {model.get('type')}")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [5] * n_vocab  # 5 = unused
    for tok, i in model["vocab"].items():
        if i < n_vocab:
            tokens[i], types[i] = tok, 1  # normal
    for a in tj.get("added_tokens", []):
        if a["id"] < n_vocab:
            tokens[a["id"]], types[a["id"]] = a["content"], 3 if a.get("special") else 4  # control / user
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tc = {}
    if (hf_dir / "tokenizer_config.json").is_file():
        tc = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tmpl = tc.get("chat_template")
    if not tmpl and (hf_dir / "chat_template.jinja").is_file():
        tmpl = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    return {"tokens": tokens, "types": types, "merges": merges or ["Ġ Ġ"], "chat_template": tmpl}


def export(hf_dir: Path, out: Path, ftype: str = "f32") -> Path:
    """Write `out` (a GGUF, ftype f32|f16) from a llama-architecture HF safetensors directory."""
    from gguf import GGUFWriter
    from safetensors import safe_open

    cfg = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    shape = _llama_shape(cfg, hf_dir)
    tensors = {}
    for f in sorted(hf_dir.glob("*.safetensors")):
        with safe_open(str(f), framework="np") as sf:
            for k in sf.keys():
                tensors[k] = sf.get_tensor(k)
    n_vocab = tensors["model.embed_tokens.weight"].shape[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    w = GGUFWriter(str(tmp), "llama")
    _write_metadata(w, cfg, shape, _tokenizer_fields(hf_dir, n_vocab), str(cfg.get("_model_name_or_path") or
                                                                         hf_dir.name), n_vocab, ftype)
    _write_tensors(w, tensors, cfg, shape, ftype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    return out


def _llama_shape(cfg: dict, hf_dir: Path) -> dict:
    """Heads, KV heads, head size and rope base of a config the exporter can write; Unsupported otherwise."""
    if cfg.get("model_type") not in ("llama", "mistral") or cfg.get("attention_bias") or cfg.get("mlp_bias"):
        raise Unsupported(f"GGUF export handles llama-architecture models without biases; {hf_dir} is "
                          f"{cfg.get('model_type')!r}")
    n_head = cfg["num_attention_heads"]
    rope = cfg.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default" or cfg.get("rope_scaling"):
        raise Unsupported(f"GGUF export: rope scaling {rope.get('rope_type') or cfg.get('rope_scaling')} not handled")
    return {"n_head": n_head, "n_kv": cfg.get("num_key_value_heads") or n_head,
            "head_dim": cfg.get("head_dim") or cfg["hidden_size"] // n_head,
            "theta": rope.get("rope_theta", cfg.get("rope_theta", 10000.0))}


def _write_metadata(w, cfg: dict, shape: dict, tok: dict, name: str, n_vocab: int, ftype: str) -> None:
    n_head, head_dim = shape["n_head"], shape["head_dim"]
    w.add_name(name)
    w.add_context_length(cfg.get("max_position_embeddings", 2048))
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(shape["n_kv"])
    w.add_rope_freq_base(float(shape["theta"]))
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-5)))
    w.add_rope_dimension_count(head_dim)
    if head_dim != cfg["hidden_size"] // n_head:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    w.add_vocab_size(n_vocab)
    w.add_file_type(0 if ftype == "f32" else 1)
    # Tokenizer: slmbench feeds llama.cpp token ids from the HF tokenizer, but a GGUF must be a complete model
    # for llama.cpp's own tools. "smollm" is llama.cpp's name for SmolLM's pre-tokenizer; else its default.
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm" if "smollm" in name.lower() else "default")
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    for key, add in (("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)):
        v = cfg.get(key)
        if isinstance(v, list):
            v = v[0] if v else None
        if v is not None and v < n_vocab:
            add(int(v))
    w.add_add_bos_token(False)
    if tok["chat_template"]:
        w.add_chat_template(tok["chat_template"])


def _write_tensors(w, tensors: dict, cfg: dict, shape: dict, ftype: str) -> None:
    import numpy as np

    def put(gname, arr):
        arr = np.ascontiguousarray(arr.astype(np.float32))
        if ftype == "f16" and arr.ndim == 2:  # llama.cpp keeps norms (1-D) in F32
            arr = arr.astype(np.float16)
        w.add_tensor(gname, arr)

    tied = cfg.get("tie_word_embeddings", True) or "lm_head.weight" not in tensors
    for k, v in tensors.items():
        if k in _TOP_MAP:
            if k == "lm_head.weight" and tied:
                continue
            put(_TOP_MAP[k], v)
            continue
        parts = k.split(".")  # model.layers.{i}.<suffix>
        if parts[:2] != ["model", "layers"] or ".".join(parts[3:]) not in _LAYER_MAP:
            if k.endswith("rotary_emb.inv_freq"):
                continue
            raise Unsupported(f"GGUF export: tensor {k} has no llama.cpp name")
        suffix = ".".join(parts[3:])
        if suffix == "self_attn.q_proj.weight":
            v = _permute(v, shape["n_head"])
        elif suffix == "self_attn.k_proj.weight":
            v = _permute(v, shape["n_kv"])
        put(f"blk.{parts[2]}.{_LAYER_MAP[suffix]}", v)


def quantize(src: Path, dst: Path, level: str, threads: int | None = None) -> Path:
    """llama.cpp's quantizer: `src` GGUF (F32) → `dst` at `level`. Tensors whose row length does not fit a
    level's block (K-quants need multiples of 256) get llama.cpp's fallback type; the log says which."""
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_{LEVELS[level]}")
    params.nthread = threads or 0
    tmp = dst.with_name(dst.name + f".tmp{os.getpid()}")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise Unsupported(f"llama.cpp could not quantize {src.name} to {level} (rc {rc})")
    os.replace(tmp, dst)
    return dst


def gguf_for(hf_dir: Path, level: str, threads: int | None = None, progress=print) -> tuple[Path, float]:
    """The cached GGUF of `hf_dir` at `level` (exporting and quantizing once). Returns (path, seconds spent
    building now — 0 when cached)."""
    if level not in LEVELS:
        raise Unsupported(f"unknown GGUF level {level!r} (known: {', '.join(LEVELS)})")
    hf_dir = Path(hf_dir)
    d = cache_dir() / "gguf" / f"{hf_dir.name}-{_source_key(hf_dir)}"
    out = d / f"model-{level}.gguf"
    if out.is_file():
        return out, 0.0
    t0 = time.perf_counter()
    src = d / "model-f32.gguf"
    if not src.is_file():
        progress(f"exporting {hf_dir} to GGUF F32 (once)")
        export(hf_dir, src, "f32")
    if level != "f32":
        progress(f"llama.cpp: quantizing to {level} (once)")
        quantize(src, out, level, threads)
    return out, time.perf_counter() - t0


def tensor_bytes(path: Path) -> dict[str, int]:
    """name -> stored bytes, for every tensor in a GGUF."""
    from gguf import GGUFReader
    return {t.name: int(t.n_bytes) for t in GGUFReader(str(path)).tensors}


def gguf_meta(path: Path) -> dict:
    """Per-type tensor counts and bytes of a GGUF (what a level really stored: K-quant fallbacks show here)."""
    from gguf import GGUFReader
    r = GGUFReader(str(path))
    by: dict = {}
    for t in r.tensors:
        n, b = by.get(t.tensor_type.name, (0, 0))
        by[t.tensor_type.name] = (n + 1, b + int(t.n_bytes))
    return {"tensor_types": {k: {"tensors": n, "bytes": b} for k, (n, b) in sorted(by.items())}}


if __name__ == "__main__":  # python -m slmbench.quant.gguf HF_DIR LEVEL...: build the files ahead of a suite
    import sys
    for lv in sys.argv[2:]:
        p, s = gguf_for(Path(sys.argv[1]), lv)
        print(f"{lv}\t{p}\t{p.stat().st_size / 1e6:.1f} MB\t{s:.1f} s")
