"""Students that start from the teacher itself, the way Minitron, Sheared-LLaMA and GQA up-training do: measure
importance on calibration tokens, cut the teacher down, then heal it with the factory's one training loop.

    scores = importance(teacher, calib)          # one forward pass over calibration tokens (training split)
    model, report = pruned_student(teacher, student_cfg, calib)

- Depth: block influence (ShortGPT, Men et al. 2024): BI_i = 1 - mean over tokens of cos(x_i, x_{i+1}), the input
  and output of layer i. A layer that barely changes its input is the cheapest to drop; the `keep_layers` with the
  highest BI stay, in their order. `score: last` drops the layers just before the final one (no measurement).
- Width (Minitron, Muralidharan et al. 2024, activation-based): an MLP channel's importance is its mean |activation|
  at the input of down_proj; a head's is the mean L2 norm of its output at the input of o_proj. Heads are kept in
  equal numbers per KV group (a query head's KV head is fixed by its position), so `heads` is a multiple of the KV
  heads. The hidden size (embedding channels) is not pruned: the tied embedding stays the teacher's.
- KV heads (Ainslie et al. 2023, GQA up-training): `kv_heads` fewer than the teacher's mean-pools each group of its
  K and V projections into one head; query heads keep their order, so each lands in the group of its old KV head.
All scores come from the unpruned teacher in one pass (one-shot, no iterative re-scoring). Llama-family only."""
from __future__ import annotations

import copy

import numpy as np
import torch

from ..errors import UserError

FIELD = "student.prune"


@torch.no_grad()
def importance(model, calib: np.ndarray, batch: int = 4) -> dict:
    """Per-layer block influence, per-layer MLP-channel and head importance, measured on calib (N, L) token ids."""
    c, layers = model.config, model.model.layers
    H, hd = c.num_attention_heads, _head_dim(c)
    bi, mlp = torch.zeros(len(layers), dtype=torch.float64), torch.zeros(len(layers), c.intermediate_size,
                                                                          dtype=torch.float64)
    heads, n = torch.zeros(len(layers), H, dtype=torch.float64), [0]
    hooks = []
    for li, layer in enumerate(layers):
        def block(mod, args, kwargs, out, li=li):
            x = args[0] if args else kwargs["hidden_states"]
            y = out[0] if isinstance(out, tuple) else out
            bi[li] += (1 - torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)).sum().double()

        def down(mod, args, li=li):
            mlp[li] += args[0].abs().sum((0, 1)).double()

        def o_in(mod, args, li=li):
            a = args[0]
            heads[li] += a.reshape(*a.shape[:-1], H, hd).norm(dim=-1).sum((0, 1)).double()
        hooks += [layer.register_forward_hook(block, with_kwargs=True),
                  layer.mlp.down_proj.register_forward_pre_hook(down),
                  layer.self_attn.o_proj.register_forward_pre_hook(o_in)]
    was = model.training
    model.eval()
    try:
        for b in range(0, len(calib), batch):
            x = torch.from_numpy(np.asarray(calib[b:b + batch], dtype=np.int64))
            model(x)
            n[0] += x.numel()
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return {"tokens": n[0], "block_influence": (bi / n[0]).tolist(), "mlp": mlp / n[0], "heads": heads / n[0]}


def _head_dim(c) -> int:
    return getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads


def check(s, c, file: str | None = None) -> tuple[int, int, int]:
    """The Student `s`'s pruned shape against the teacher config `c` (before any work): (mlp, heads, kv_heads)."""
    def bad(msg, field):
        raise UserError(msg, file=file, field=field)
    if c.model_type != "llama":
        bad(f"pruning supports Llama-family teachers, not {c.model_type!r}", FIELD)
    H, KV, I, w = c.num_attention_heads, c.num_key_value_heads, c.intermediate_size, s.prune.width
    mlp_keep, h_keep, kv = (w and w.mlp) or I, (w and w.heads) or H, s.kv_heads or KV
    if s.prune.depth and s.prune.depth.keep_layers > c.num_hidden_layers:
        bad(f"keep_layers {s.prune.depth.keep_layers} exceeds the teacher's {c.num_hidden_layers} layers",
            f"{FIELD}.depth.keep_layers")
    if mlp_keep > I:
        bad(f"mlp {mlp_keep} exceeds the teacher's {I} channels", f"{FIELD}.width.mlp")
    if h_keep > H or h_keep % KV:
        bad(f"heads {h_keep} must be a multiple of the teacher's {KV} KV heads and at most its {H}",
            f"{FIELD}.width.heads")
    if KV % kv:
        bad(f"kv_heads {kv} must divide the teacher's {KV} KV heads (they are mean-pooled in groups)",
            "student.kv_heads")
    return mlp_keep, h_keep, kv


def keep_layers(scores: dict | None, n: int, depth) -> list[int]:
    if depth is None:
        return list(range(n))
    if depth.score == "last":  # keep the first keep-1 and the final layer
        return list(range(depth.keep_layers - 1)) + [n - 1]
    bi = np.asarray(scores["block_influence"])
    return sorted(np.argsort(-bi, kind="stable")[: depth.keep_layers].tolist())


def pruned_student(teacher, s, calib: np.ndarray | None) -> tuple[torch.nn.Module, dict]:
    """The teacher (an HF Llama model) cut to the recipe's Student `s` (its .prune and .kv_heads). Returns a new
    model (the teacher is untouched) and a report of what was kept and why, for the build manifest."""
    from transformers import AutoModelForCausalLM
    c = teacher.config
    p, L = s.prune, c.num_hidden_layers
    H, KV, hd, I = c.num_attention_heads, c.num_key_value_heads, _head_dim(c), c.intermediate_size
    mlp_keep, h_keep, kv = check(s, c)
    need = (p.depth is not None and p.depth.score == "block_influence") or mlp_keep < I or h_keep < H
    if need and (calib is None or len(calib) == 0):
        raise UserError("importance scores need calibration tokens", field=f"{FIELD}.calib_tokens")
    sc = importance(teacher, calib) if need else None
    layers = keep_layers(sc, L, p.depth)
    cfg = copy.deepcopy(c)
    cfg.num_hidden_layers, cfg.intermediate_size, cfg.head_dim = len(layers), mlp_keep, hd
    cfg.num_attention_heads, cfg.num_key_value_heads = h_keep, kv
    td, sd = teacher.state_dict(), {}
    per_group = H // KV
    for k, v in td.items():
        if ".layers." not in k:
            sd[k] = v.clone()
    for j, i in enumerate(layers):
        ch = _top(sc["mlp"][i], mlp_keep) if mlp_keep < I else torch.arange(I)
        hs = torch.cat([g * per_group + _top(sc["heads"][i][g * per_group:(g + 1) * per_group], h_keep // KV)
                        for g in range(KV)]) if h_keep < H else torch.arange(H)
        rows = (hs[:, None] * hd + torch.arange(hd)).reshape(-1)  # q rows / o columns of the kept heads
        pre = f"model.layers.{i}."
        for k, v in td.items():
            if not k.startswith(pre):
                continue
            tail, out = k[len(pre):], v
            if tail.startswith(("mlp.gate_proj.", "mlp.up_proj.")):
                out = v.index_select(0, ch)
            elif tail == "mlp.down_proj.weight":
                out = v.index_select(1, ch)
            elif tail.startswith("self_attn.q_proj."):
                out = v.index_select(0, rows)
            elif tail == "self_attn.o_proj.weight":
                out = v.index_select(1, rows)
            elif tail.startswith(("self_attn.k_proj.", "self_attn.v_proj.")) and kv < KV:
                out = v.reshape(kv, KV // kv, hd, *v.shape[1:]).mean(1).reshape(kv * hd, *v.shape[1:])
            sd[f"model.layers.{j}.{tail}"] = out.clone()
    model = AutoModelForCausalLM.from_config(cfg, dtype=next(teacher.parameters()).dtype)
    model.load_state_dict(sd, strict=True)
    report = {"teacher_layers": L, "kept_layers": layers, "mlp": mlp_keep, "heads": h_keep, "kv_heads": kv,
              "teacher": {"mlp": I, "heads": H, "kv_heads": KV},
              "depth_score": p.depth.score if p.depth else None, "calib_tokens": sc["tokens"] if sc else 0}
    if sc:
        report["block_influence"] = [round(x, 5) for x in sc["block_influence"]]
    return model, report


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in their original order (keeps the tensors' layout monotone)."""
    return torch.sort(torch.topk(scores, k).indices).values
