"""Students as transformers configs: Llama with num_key_value_heads = heads (MHA), fewer (GQA) or 1 (MQA), or a
sparse Mixtral MoE (experts, top-k routing, router load-balancing loss); or the teacher itself, pruned (prune.py). They share the teacher's tokenizer and
vocabulary, so they save as plain HF directories and serve as speculative-decoding drafts."""
from __future__ import annotations

from .progress import note


def student_config(s, tcfg, seq_len: int):
    from transformers import LlamaConfig, MixtralConfig
    common = dict(vocab_size=tcfg.vocab_size, hidden_size=s.hidden_size, intermediate_size=s.intermediate_size,
                  num_hidden_layers=s.layers, num_attention_heads=s.heads, num_key_value_heads=s.kv_heads or s.heads,
                  head_dim=s.hidden_size // s.heads, max_position_embeddings=max(2048, seq_len),
                  tie_word_embeddings=True, bos_token_id=tcfg.bos_token_id, eos_token_id=tcfg.eos_token_id,
                  pad_token_id=getattr(tcfg, "pad_token_id", None), rms_norm_eps=1e-5)
    if s.arch == "moe":
        return MixtralConfig(**common, num_local_experts=s.experts, num_experts_per_tok=s.experts_per_token,
                             router_aux_loss_coef=s.router_aux_loss_coef, output_router_logits=True,
                             sliding_window=None)
    return LlamaConfig(**common)


def make_student(s, teacher, seq_len: int, seed: int, calib=None, info: dict | None = None):
    """A student for the recipe's Student `s`: from scratch (its config), or with `prune` the teacher itself cut
    down (prune.py; `calib` (N, L) token ids score importance). `info`, when given, receives what prune kept."""
    import torch
    from transformers import AutoModelForCausalLM
    if s.prune is not None:
        from .prune import pruned_student
        model, rep = pruned_student(teacher.model, s, calib)
        note(f"student pruned from the teacher: layers {rep['kept_layers']}, mlp {rep['mlp']}, heads {rep['heads']}, "
             f"kv_heads {rep['kv_heads']}")
        if info is not None:
            info.update(rep)
        return model
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(student_config(s, teacher.config, seq_len))
    if s.init == "teacher":
        init_from_teacher(model, teacher.model, s.teacher_layers)
    return model


def init_from_teacher(student, teacher, layers: list[int]) -> dict:
    """Embeddings: the teacher's, projected onto their top principal directions when the student is narrower.
    Layers: student layer i takes every tensor of teacher layer layers[i] whose shape matches (all of them when
    widths agree; none otherwise)."""
    import torch
    te, se = teacher.get_input_embeddings().weight.data, student.get_input_embeddings().weight
    with torch.no_grad():
        if te.shape == se.shape:
            se.copy_(te)
        else:
            _, _, v = torch.linalg.svd(te - te.mean(0), full_matrices=False)
            proj = te @ v[: se.shape[1]].T  # (V, h): keeps the directions with the most variance
            se.copy_(proj * (se.std() / proj.std()))  # match the random init's scale so training starts stable
        tp, copied = dict(teacher.named_parameters()), 0
        for name, p in student.named_parameters():
            if ".layers." not in name:
                continue
            pre, rest = name.split(".layers.", 1)
            i, tail = rest.split(".", 1)
            if int(i) < len(layers):
                src = tp.get(f"{pre}.layers.{layers[int(i)]}.{tail}")
                if src is not None and src.shape == p.shape:
                    p.copy_(src)
                    copied += 1
    note(f"student init from teacher: embeddings {'copied' if te.shape == se.shape else 'projected'}, "
         f"{copied} layer tensors copied")
    return {"embeddings": "copied" if te.shape == se.shape else "projected", "layer_tensors_copied": copied}


def param_counts(model) -> dict:
    """Total and active (per token) parameters; embeddings (tied with the head) counted once and also apart."""
    seen, total, expert = set(), 0, 0
    for name, p in model.named_parameters():
        if p.data_ptr() in seen:
            continue
        seen.add(p.data_ptr())
        total += p.numel()
        if ".experts." in name:
            expert += p.numel()
    c = model.config
    e, k = getattr(c, "num_local_experts", 1), getattr(c, "num_experts_per_tok", 1)
    active = total - (expert * (e - k) // e if expert else 0)
    emb = model.get_input_embeddings().weight.numel()
    return {"total": total, "active": active, "embedding": emb, "total_non_embedding": total - emb,
            "active_non_embedding": active - emb}


def kv_bytes_per_token(model) -> dict:
    """KV cache bytes per token: the formula 2·layers·kv_heads·head_dim·bytes, and measured from a real cache."""
    import torch
    from transformers import DynamicCache
    c = model.config
    hd = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    elem = next(model.parameters()).element_size()
    formula = 2 * c.num_hidden_layers * c.num_key_value_heads * hd * elem
    cache, n = DynamicCache(config=c), 16
    with torch.inference_mode():
        model(torch.zeros(1, n, dtype=torch.long), past_key_values=cache, use_cache=True)
    measured = 0
    for layer in getattr(cache, "layers", []):
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            measured += t.numel() * t.element_size() if t is not None else 0
    return {"formula": formula, "measured": measured // n if measured else None}
