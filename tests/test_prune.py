"""Students cut from the teacher (factory/prune.py), where the right answer is known: layers that are the identity
are the ones depth pruning drops (and dropping them changes nothing); dead MLP channels are the ones width pruning
drops; KV heads that are already equal survive mean-pooling to MQA unchanged; `prune: {}` is the teacher itself.
A random-init tiny Llama teacher, except one real-SmolLM2 test (score + prune + one forward, no training)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from slmbench.cli import main
from slmbench.factory.prune import importance, pruned_student
from slmbench.factory.recipe import Prune, Student
from slmbench.models.random_init import make_config


def _teacher(layers=4, heads=4, kv=2, mlp=64):
    from transformers import AutoModelForCausalLM
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(make_config(dict(hidden_size=32, num_hidden_layers=layers,
                                                          num_attention_heads=heads, num_key_value_heads=kv,
                                                          intermediate_size=mlp)))
    return m.eval()


CALIB = np.random.default_rng(0).integers(0, 256, size=(4, 24))


def _student(**prune):
    kv = prune.pop("kv_heads", None)
    return Student(init="teacher", kv_heads=kv, prune=Prune(**prune))


def _logits(m, x=CALIB):
    with torch.no_grad():
        return m(torch.from_numpy(x.astype(np.int64))).logits


def test_prune_nothing_is_the_teacher():
    t = _teacher()
    s, rep = pruned_student(t, _student(), None)
    assert rep["kept_layers"] == [0, 1, 2, 3] and torch.equal(_logits(s), _logits(t))


def test_depth_drops_the_identity_layers_by_block_influence():
    t = _teacher()
    with torch.no_grad():  # layers 1 and 2 add nothing to the residual stream: output = input, BI = 0
        for i in (1, 2):
            t.model.layers[i].self_attn.o_proj.weight.zero_()
            t.model.layers[i].mlp.down_proj.weight.zero_()
    bi = importance(t, CALIB)["block_influence"]
    assert bi[1] == pytest.approx(0, abs=1e-6) and bi[2] == pytest.approx(0, abs=1e-6) and min(bi[0], bi[3]) > 1e-3
    s, rep = pruned_student(t, _student(depth={"keep_layers": 2}), CALIB)
    assert rep["kept_layers"] == [0, 3] and s.config.num_hidden_layers == 2
    assert torch.allclose(_logits(s), _logits(t), atol=1e-5)
    _, last = pruned_student(t, _student(depth={"keep_layers": 2, "score": "last"}), None)
    assert last["kept_layers"] == [0, 3]  # no scores: keep the first keep-1 and the final layer


def test_width_drops_dead_mlp_channels_and_keeps_heads_per_kv_group():
    t = _teacher()
    dead = torch.arange(0, 64, 4)  # 16 channels whose activation is 0 everywhere
    with torch.no_grad():
        for layer in t.model.layers:
            layer.mlp.up_proj.weight[dead] = 0
    sc = importance(t, CALIB)
    assert (sc["mlp"][:, dead] == 0).all() and (sc["mlp"].sum(0) > 0).sum() == 48
    s, rep = pruned_student(t, _student(width={"mlp": 48}), CALIB)
    assert s.config.intermediate_size == 48 and torch.allclose(_logits(s), _logits(t), atol=1e-5)
    s, rep = pruned_student(t, _student(width={"heads": 2}), CALIB)  # 4 heads in 2 KV groups: 1 kept per group
    assert (s.config.num_attention_heads, s.config.num_key_value_heads, s.config.head_dim) == (2, 2, 8)
    for li, layer in enumerate(s.model.layers):
        h = sc["heads"][li]
        want = [int(h[:2].argmax()), 2 + int(h[2:].argmax())]  # the most active head of each group
        rows = torch.cat([t.model.layers[li].self_attn.q_proj.weight[8 * w:8 * w + 8] for w in want])
        assert torch.equal(layer.self_attn.q_proj.weight, rows)
    assert _logits(s).shape == _logits(t).shape


def test_kv_heads_mean_pool_gqa_to_mqa():
    t = _teacher()
    s, _ = pruned_student(t, _student(kv_heads=1), None)
    for a, b in zip(t.model.layers, s.model.layers):
        for p in ("k_proj", "v_proj"):
            w = getattr(a.self_attn, p).weight
            assert torch.allclose(getattr(b.self_attn, p).weight, (w[:8] + w[8:]) / 2)
    assert s.config.num_key_value_heads == 1
    with torch.no_grad():  # KV heads that are already equal: MQA computes exactly what GQA did
        for layer in t.model.layers:
            for p in ("k_proj", "v_proj"):
                w = getattr(layer.self_attn, p).weight
                w[8:] = w[:8]
    s, _ = pruned_student(t, _student(kv_heads=1), None)
    assert torch.allclose(_logits(s), _logits(t), atol=1e-5)


TINY = """
name: tiny
teacher:
  source: random
  config: {hidden_size: 32, num_hidden_layers: 3, num_attention_heads: 4, num_key_value_heads: 2}
corpus: {sources: [{path: text.txt}], doc_chars: 400, pool_tokens: 4000, heldout_fraction: 0.1, heldout_tokens: 512,
         seq_len: 32}
logits: {top_k: 8, shard_seqs: 16}
train: {tokens: 256, batch_size: 4, alpha: 0.0, qat: {scheme: int8da_int4w, tokens: 128}}
"""


@pytest.fixture
def recipe(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    words = "the cat sat on a mat while dogs ran far away and birds sang in trees".split()
    rng = np.random.default_rng(0)
    (tmp_path / "text.txt").write_text("\n\n".join(" ".join(rng.choice(words, 40)) + "." for _ in range(120)))

    def write(student: str):
        (tmp_path / "r.yaml").write_text(TINY + f"student: {student}\n")
        return tmp_path / "r.yaml"
    return write


def test_pruned_student_builds_heals_with_qat_and_records_what_was_kept(recipe):
    from slmbench.factory import build
    b = build(recipe("{init: teacher, kv_heads: 1, prune: {depth: {keep_layers: 2}, width: {mlp: 32}, "
                     "calib_tokens: 64}}"))
    init, cfg = b.manifest["student"]["init"], b.manifest["student"]["config"]
    assert len(init["kept_layers"]) == 2 and len(init["block_influence"]) == 3 and init["calib_tokens"] == 64
    assert (cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["num_key_value_heads"]) == (2, 32, 1)
    assert b.manifest["train"]["tokens_seen"] == 256 and 0 < b.manifest["eval"]["heldout_bpb"] < 20
    assert b.manifest["train"]["qat"]["scheme"] == "int8da_int4w"  # the pruned teacher takes the QAT phase too


@pytest.mark.parametrize("student,field", [
    ("{init: teacher, hidden_size: 64, prune: {}}", "student: prune takes the architecture"),
    ("{prune: {}}", "student: prune needs init: teacher"),
    ("{init: teacher, prune: {width: {heads: 3}}}", "student.prune.width.heads: heads 3 must be a multiple"),
    ("{init: teacher, kv_heads: 3, prune: {}}", "student.kv_heads: kv_heads 3 must divide"),
    ("{init: teacher, prune: {depth: {keep_layers: 5}}}", "student.prune.depth.keep_layers: keep_layers 5 exceeds"),
])
def test_bad_prune_exits_2_with_one_line_before_any_work(recipe, tmp_path, capsys, student, field):
    assert main(["build", str(recipe(student))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and field in err[0], err
    assert not list((tmp_path / "cache" / "build").glob("corpus-*"))


@pytest.mark.real_model
def test_smollm2_depth_pruned_by_block_influence_still_predicts_text():
    """SmolLM2-135M cut 30 → 20 layers by measured block influence: the pruned model still assigns the text a loss
    far below uniform (log 49152 = 10.8 nats), and worse than the whole teacher's."""
    from slmbench.factory.teacher import Teacher
    from slmbench.plan import ModelSpec
    t = Teacher(ModelSpec(name="t", source="smollm2"))
    ids = t.tokenizer("The cat sat on the mat. Photosynthesis turns light into chemical energy in plants, and "
                      "the water cycle moves water between the oceans, the air and the land.",
                      return_tensors="np")["input_ids"][:, :32]
    s, rep = pruned_student(t.model, _student(depth={"keep_layers": 20}, calib_tokens=32), ids)
    assert len(rep["kept_layers"]) == 20 and rep["kept_layers"][0] == 0 and len(rep["block_influence"]) == 30
    x = torch.from_numpy(ids.astype(np.int64))
    with torch.no_grad():
        loss_s, loss_t = s(x, labels=x).loss.item(), t.model(x, labels=x).loss.item()
    assert loss_t < loss_s < 9
