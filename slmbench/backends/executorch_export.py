"""ExecuTorch export of a Llama-architecture HF directory, cached by spec hash (as GGUF exports are).

The path is ExecuTorch's own LLM export for Llama-family models, as the `executorch` wheel ships it
(`executorch.examples.models.llama.export_llama_lib`, what `python -m executorch.extension.llm.export.export_llm`
runs): its Llama transformer with a KV cache and the custom SDPA-with-KV-cache op, dynamic sequence length,
lowered to the XNNPACK delegate; `8da4w` is its 8-bit-dynamic-activation / 4-bit-weight linear scheme (torchao's
quantizer, group 32: SmolLM2's 576-wide rows do not split into the recipe's 128) with its 4-bit embedding
(`embedding_quantize: 4,32`), as the shipped `llama_xnnpack.yaml` recipe.

The HF checkpoint is mapped to the Meta layout that export reads (the mapping of executorch's smollm2
`convert_weights`, without its torchtune dependency): q/k rows un-permuted from HF's rotate-half order to Meta's
interleaved RoPE order, the tied embedding copied to `output.weight`.

Two programs per level: `last` returns the last position's logits (what generation runs, as ExecuTorch's runner
does), `all` returns every position's logits (perplexity / log-likelihoods; built only when scoring asks). Each
export runs in a subprocess: it peaks at ~3 GB RSS, which must not count in the job's memory figures.

    python -m slmbench.backends.executorch_export HF_DIR LEVEL [last|all]     build ahead of a suite
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..errors import Unsupported

LEVELS = ("none", "8da4w")
GROUP = 32          # 8da4w group size (linear and embedding); 576 = 18·32
MAX_CONTEXT = 2048  # KV-cache positions preallocated in the program (llama.cpp's N_CTX here)
MAX_SEQ = 256       # export's max_seq_len: one forward call takes at most MAX_SEQ - 1 tokens (its dynamic dim)
MODULE = "slmbench.backends.executorch_export"
EXPORT_VERSION = 1  # bump when the export recipe changes: cached programs are rebuilt


def check_model(hf_dir: Path) -> dict:
    """The HF config, refused with the reason when ExecuTorch's Llama export cannot take it."""
    c = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    if c.get("model_type") != "llama":
        raise Unsupported(f"backend 'executorch' exports Llama-architecture models through ExecuTorch's Llama "
                          f"export; {hf_dir.name} is {c.get('model_type')!r}")
    if c.get("attention_bias") or c.get("mlp_bias"):
        raise Unsupported("backend 'executorch': Llama models with attention/MLP biases are not mapped")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise Unsupported(f"backend 'executorch': RoPE scaling {rope.get('rope_type')!r} is not mapped")
    return c


def _source_key(hf_dir: Path, level: str, logits: str) -> str:
    """Identity of the export: the HF dir (names, sizes, mtimes), level, logits, recipe and executorch version."""
    import executorch.version as ev
    h = hashlib.sha256(f"{hf_dir.resolve()}|{level}|{logits}|v{EXPORT_VERSION}|{ev.__version__}|"
                       f"{GROUP}|{MAX_CONTEXT}|{MAX_SEQ}".encode())
    for f in sorted(hf_dir.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def program_for(hf_dir: Path, level: str, logits: str = "last", progress=print) -> tuple[Path, dict, float]:
    """(the cached .pte, its facts, seconds spent building now — 0 when cached). Builds it in a subprocess."""
    from ..settings import cache_dir
    hf_dir = Path(hf_dir)
    check_model(hf_dir)
    d = cache_dir() / "executorch" / f"{hf_dir.name}-{_source_key(hf_dir, level, logits)}"
    pte, facts = d / "model.pte", d / "facts.json"
    if pte.is_file() and facts.is_file():
        return pte, json.loads(facts.read_text()), 0.0
    progress(f"ExecuTorch: exporting {hf_dir} ({level}, {logits}-position logits) to XNNPACK (once; minutes)")
    t0 = time.perf_counter()
    d.mkdir(parents=True, exist_ok=True)
    log = d / "export.log"
    with open(log, "w") as f:
        rc = subprocess.run([sys.executable, "-m", MODULE, str(hf_dir), level, logits, str(d)], stdout=f,
                            stderr=subprocess.STDOUT, cwd=d, env={**os.environ, "PYTHONWARNINGS": "ignore"}).returncode
    if rc != 0 or not facts.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise Unsupported(f"ExecuTorch export of {hf_dir.name} ({level}) failed (rc {rc}; log {log}): "
                          + " | ".join(tail))
    return pte, json.loads(facts.read_text()), time.perf_counter() - t0


def _meta_checkpoint(hf_dir: Path, c: dict, out: Path) -> None:
    """HF safetensors → the Meta-layout state dict ExecuTorch's Llama model loads, and its params.json."""
    import torch
    from safetensors.torch import load_file
    sd = load_file(str(hf_dir / "model.safetensors"))
    heads, kv, dim = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"], \
        c["hidden_size"]
    hd = c.get("head_dim") or dim // heads

    def unpermute(t, n):  # HF rotate-half row order → Meta interleaved pairs (torchtune's hf_to_tune)
        return t.view(n, 2, hd // 2, t.shape[1]).transpose(1, 2).reshape(hd * n, t.shape[1])
    top = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
           "lm_head.weight": "output.weight"}
    layer = {"self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
             "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
             "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
             "mlp.up_proj.weight": "feed_forward.w3.weight", "input_layernorm.weight": "attention_norm.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight"}
    meta = {}
    for k, v in sd.items():
        if k in top:
            meta[top[k]] = v
            continue
        p = k.split(".")
        suf = ".".join(p[3:])
        if suf not in layer:
            raise Unsupported(f"backend 'executorch': unexpected tensor {k} in {hf_dir.name}")
        if suf == "self_attn.q_proj.weight":
            v = unpermute(v, heads)
        elif suf == "self_attn.k_proj.weight":
            v = unpermute(v, kv)
        meta[f"layers.{p[2]}.{layer[suf]}"] = v.float()
    meta.setdefault("output.weight", meta["tok_embeddings.weight"])  # tied: the program holds both copies
    torch.save(meta, out / "checkpoint.pth")
    rope = c.get("rope_parameters") or {}
    params = {"dim": dim, "hidden_dim": c["intermediate_size"], "n_heads": heads, "n_kv_heads": kv,
              "head_dim": hd, "n_layers": c["num_hidden_layers"], "norm_eps": c["rms_norm_eps"],
              "rope_theta": rope.get("rope_theta", c.get("rope_theta", 10000.0)), "use_scaled_rope": False,
              "vocab_size": c["vocab_size"], "use_hf_rope": False, "attention_qkv_bias": False,
              "ffn_dim_multiplier": 1}
    (out / "params.json").write_text(json.dumps(params))


def _export(hf_dir: Path, level: str, logits: str, out: Path) -> None:
    """The export itself (in the subprocess): ExecuTorch's llama export with the recipe above; facts.json last."""
    c = check_model(hf_dir)
    _meta_checkpoint(hf_dir, c, out)
    from executorch.examples.models.llama import export_llama_lib as lib
    from executorch.extension.llm.export.config.llm_config import LlmConfig, ModelType
    cfg = LlmConfig()
    cfg.base.model_class = ModelType.llama3  # the plain Llama model class (smollm2 is the same class + HF download)
    cfg.base.checkpoint, cfg.base.params = str(out / "checkpoint.pth"), str(out / "params.json")
    eos = c.get("eos_token_id")
    cfg.base.metadata = json.dumps({"get_bos_id": c.get("bos_token_id") or 0,
                                    "get_eos_ids": eos if isinstance(eos, list) else [eos or 0]})
    cfg.model.use_kv_cache = cfg.model.use_sdpa_with_kv_cache = cfg.model.enable_dynamic_shape = True
    cfg.export.max_seq_length, cfg.export.max_context_length = min(MAX_SEQ, MAX_CONTEXT), MAX_CONTEXT
    cfg.export.output_dir, cfg.export.output_name = str(out), str(out / "model.tmp.pte")  # .pte: used verbatim
    cfg.backend.xnnpack.enabled = cfg.backend.xnnpack.extended_ops = True
    cfg.debug.generate_full_logits = logits == "all"
    if level == "8da4w":
        cfg.quantization.qmode, cfg.quantization.group_size = "8da4w", GROUP
        cfg.quantization.embedding_quantize = f"4,{GROUP}"
    seen = {}
    prepare = lib._prepare_for_llama_export

    def keep(llm_config):  # the eager model as ExecuTorch exports it: its KV-cache buffers and embedding bytes
        mgr = prepare(llm_config)
        seen["kv"] = {n: (list(b.shape), b.numel() * b.element_size()) for n, b in mgr.model.named_buffers()
                      if n.endswith(("k_cache", "v_cache"))}
        seen["emb"] = sum(t.numel() * t.element_size() for n, t in
                          list(mgr.model.named_parameters()) + list(mgr.model.named_buffers())
                          if n.startswith("tok_embeddings."))
        return mgr
    lib._prepare_for_llama_export = keep
    t0 = time.perf_counter()
    lib._export_llama(cfg)
    export_s = time.perf_counter() - t0
    os.replace(out / "model.tmp.pte", out / "model.pte")
    import executorch.version as ev
    import torch
    kv_bytes = sum(b for _, b in seen["kv"].values())
    facts = {"level": level, "logits": logits, "export_s": round(export_s, 1), "executorch": ev.__version__,
             "torch": torch.__version__, "max_context": MAX_CONTEXT, "max_seq": MAX_SEQ,
             "group_size": GROUP if level == "8da4w" else None,
             "recipe": "examples.models.llama export_llama: use_kv_cache, use_sdpa_with_kv_cache, "
                       "enable_dynamic_shape, xnnpack + extended_ops"
                       + (f", qmode 8da4w group {GROUP}, embedding_quantize 4,{GROUP}" if level == "8da4w" else ""),
             "kv_cache_buffers": len(seen["kv"]), "kv_cache_bytes": kv_bytes,
             "kv_bytes_per_position": kv_bytes // MAX_CONTEXT, "embedding_bytes": seen["emb"],
             "params": sum(v.numel() for k, v in _load_sd(hf_dir).items()),
             "config": {k: c.get(k) for k in ("num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                                              "hidden_size", "head_dim", "vocab_size", "model_type")}}
    (out / "checkpoint.pth").unlink()
    (out / "facts.json").write_text(json.dumps(facts, indent=1))


def _load_sd(hf_dir: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(str(hf_dir / "model.safetensors"))


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 4:  # the subprocess program_for starts
        _export(Path(a[0]), a[1], a[2], Path(a[3]))
    elif len(a) in (2, 3) and a[1] in LEVELS:
        p, f, s = program_for(Path(a[0]), a[1], a[2] if len(a) == 3 else "last")
        print(f"{p} ({p.stat().st_size / 1e6:.1f} MB; built in {s:.0f} s)")
    else:
        print(f"usage: python -m {MODULE} HF_DIR {{{'|'.join(LEVELS)}}} [last|all]", file=sys.stderr)
        sys.exit(2)
