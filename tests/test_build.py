"""The SLM factory on tiny recipes: a random-init teacher with the byte tokenizer, so each build takes seconds.
One test distils from the real SmolLM2 (marked real_model) on a few hundred tokens."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from slmbench.cli import main

WORDS = ("the cat sat on a mat while dogs ran far away and birds sang in trees under bright blue skies "
         "numbers add up when you count them one by one").split()


def _text(n=250, seed=0):
    rng = random.Random(seed)
    return "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) + "." for _ in range(n))


TINY = """
name: tiny
teacher:
  source: random
  config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, num_key_value_heads: 1}
corpus:
  sources: [{path: text.txt}]
  doc_chars: 400
  pool_tokens: 12000
  heldout_fraction: 0.1
  heldout_tokens: 1024
  seq_len: 64
filter: {keep: 0.5}
logits: {top_k: 8, shard_seqs: 16}
student: {hidden_size: 32, layers: 2, heads: 4, kv_heads: 2, intermediate_size: 64}
train: {tokens: 2048, batch_size: 4, checkpoint_every: 3, eval_every: 4}
"""


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "text.txt").write_text(_text())

    def write(extra: str = "", name: str = "tiny.yaml"):
        p = tmp_path / name
        p.write_text(TINY + extra)
        return p
    return write


def _artifacts(tmp_path):
    d = tmp_path / "cache" / "build"
    return sorted(p.name.split("-")[0] for p in d.iterdir()) if d.exists() else []


def test_build_end_to_end_exports_an_hf_dir_and_caches(tiny, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from slmbench.factory import build
    recipe = tiny("synth: {tokens: 96, ratio: 0.1, max_new_tokens: 24, batch_size: 4, topics: [cats, birds]}\n")
    assert main(["build", str(recipe)]) == 0
    b = build(recipe)  # second time: the cached artifact, not a rebuild
    assert "cached" in capsys.readouterr().err
    m = b.manifest
    assert m["train"]["tokens_seen"] == 2048 and m["data"]["filter"]["kept_docs"] < m["data"]["filter"]["pool_docs"]
    assert m["data"]["synth"]["tokens_mixed"] > 0 and "worst_dropped" in m["data"]["filter"]
    assert 0 < m["eval"]["heldout_bpb"] < 20 and 0 <= m["eval"]["top1_agreement"] <= 1
    assert (b.path / "curves.csv").is_file() and json.loads((b.path / "evals.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(str(b.model_dir))
    tok = AutoTokenizer.from_pretrained(str(b.model_dir))
    ids = tok("the cat", return_tensors="pt")["input_ids"]
    assert model(ids).logits.shape[-1] == model.config.vocab_size == 320
    assert sorted(set(_artifacts(tmp_path))) == ["corpus", "logits", "student", "synth"]
    assert not [p for p in (tmp_path / "cache" / "build").iterdir() if p.name.startswith(".tmp")]


def test_students_mha_gqa_mqa_moe_params_and_kv_bytes(tiny):
    from slmbench.factory.recipe import load_recipe
    from slmbench.factory.students import kv_bytes_per_token, make_student, param_counts
    from slmbench.factory.teacher import Teacher
    r, _ = load_recipe(tiny())
    t = Teacher(r.teacher)
    got = {}
    for name, over in {"mha": {"kv_heads": 4}, "gqa": {"kv_heads": 2}, "mqa": {"kv_heads": 1},
                       "moe": {"arch": "moe", "kv_heads": 2, "experts": 4, "experts_per_token": 2,
                               "intermediate_size": 32}}.items():
        s = r.student.model_copy(update=over)
        m = make_student(s, t, 64, 0)
        got[name] = (param_counts(m), kv_bytes_per_token(m))
    kv = {k: v[1]["formula"] for k, v in got.items()}
    assert kv["mha"] == 2 * kv["gqa"] == 4 * kv["mqa"] == 2 * 2 * 4 * 8 * 4  # 2·layers·kv_heads·head_dim·4 bytes
    assert all(v[1]["measured"] == v[1]["formula"] for v in got.values())
    moe, gqa = got["moe"][0], got["gqa"][0]
    assert moe["total"] > moe["active"]
    # equal active MLP compute: 2 of 4 experts of width 32 = one dense MLP of width 64 (+ the router)
    assert moe["active"] - gqa["total"] == 2 * 32 * 4


def test_curriculum_easy_first_then_hard():
    from slmbench.factory.curriculum import Curriculum
    from slmbench.factory.recipe import Curriculum as Cfg
    d = np.array([1.0, 2.0, 3.0, 4.0])  # sample 0 easiest
    c, idx = Curriculum(Cfg(kind="teacher_loss", strength=1.0), d), np.arange(4)
    w0, w_mid, w1 = c.weights(idx, 0.0), c.weights(idx, 0.5), c.weights(idx, 1.0)
    assert w0[0] > w0[3] and w1[3] > w1[0] and torch.allclose(w_mid, torch.ones(4))
    assert torch.isclose(w0.mean(), torch.tensor(1.0))
    assert torch.equal(Curriculum(Cfg(), d).weights(idx, 0.0), torch.ones(4))


def test_interrupted_training_resumes_from_checkpoint(tiny, tmp_path, monkeypatch):
    from slmbench.factory import build, kd
    import slmbench.factory.train as tr
    recipe = tiny("")
    calls = {"n": 0}
    real = kd.kd_loss

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # after the step-3 checkpoint
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(tr, "kd_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        build(recipe)
    d = tmp_path / "cache" / "build"
    assert not [p for p in d.iterdir() if p.name.startswith("student-") and not p.name.endswith(".partial")]
    assert list(d.glob("student-*.partial/ckpt.pt"))
    monkeypatch.setattr(tr, "kd_loss", real)
    b = build(recipe)
    assert b.manifest["train"]["steps"] == 8 and len(open(b.path / "curves.csv").readlines()) == 9
    assert not list(d.glob("*.partial"))


def test_teacher_in_the_loop_matches_cached_logits(tiny):
    """Same student, same data: running the teacher each step gives the same first-step loss as its cached top-k."""
    import csv
    from slmbench.factory import build
    recipe = tiny()
    text = recipe.read_text().replace("train: {tokens: 2048", "train: {tokens: 512")
    (recipe.parent / "a.yaml").write_text(text)
    (recipe.parent / "b.yaml").write_text(text.replace("train: {", "train: {teacher_in_loop: true, "))
    a, b = build(recipe.parent / "a.yaml"), build(recipe.parent / "b.yaml")
    first = [float(next(csv.DictReader(open(x.path / "curves.csv")))["loss"]) for x in (a, b)]
    assert b.manifest["train"]["teacher_in_loop"] and first[0] == pytest.approx(first[1], rel=1e-3)


@pytest.mark.parametrize("old,new,field", [
    ("train: {tokens", "train: {bogus: 1, tokens", "train.bogus: unknown field"),
    ("path: text.txt", "path: missing.txt", "corpus.sources[0]: corpus source not found"),
    ("filter: {keep: 0.5}", "filter: {keep: 0.5, min_chars: 100000}", "filter: the corpus is empty after filtering"),
])
def test_bad_recipes_exit_2_with_one_line_and_no_artifact(tiny, tmp_path, capsys, old, new, field):
    p = tiny()
    p.write_text(p.read_text().replace(old, new))
    assert main(["build", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and field in err
    assert [a for a in _artifacts(tmp_path) if a not in ("logits", "synth")] == []
    assert not [x for x in (tmp_path / "cache" / "build").glob("*")
                if x.name.startswith(".tmp") or x.name.startswith("corpus") or x.name.startswith("student")]


def test_suite_can_name_a_recipe_as_a_model(tiny, tmp_path):
    from slmbench.models import resolve
    from slmbench.plan import load_suite
    tiny()
    (tmp_path / "s.yaml").write_text("name: s\nmodels: [{name: student, source: recipe, path: tiny.yaml}]\n"
                                     "devices: [local-cpu]\nscenarios: [latency]\n")
    suite = load_suite(tmp_path / "s.yaml")
    (tmp_path / "bad.yaml").write_text("name: s\nmodels: [{name: student, source: recipe, path: nope.yaml}]\n"
                                       "devices: [local-cpu]\nscenarios: [latency]\n")
    from slmbench.errors import UserError
    with pytest.raises(UserError, match="nope.yaml"):
        load_suite(tmp_path / "bad.yaml")
    spec = suite.models[0].model_copy(update={"path": str(tmp_path / "tiny.yaml")})
    assert (resolve(spec).hf_dir / "config.json").is_file()


@pytest.mark.real_model
def test_real_teacher_distils_a_student(tmp_path, monkeypatch):
    """SmolLM2-135M-Instruct as the teacher (its tokenizer, chat-template synthesis), a few hundred tokens."""
    from slmbench.models import resolve
    from slmbench.plan import ModelSpec
    teacher_dir = resolve(ModelSpec(name="t", source="smollm2"))  # the shared converted model (cached)
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "cache" / "smollm2").mkdir(parents=True)
    (tmp_path / "cache" / "smollm2" / "hf-fp32").symlink_to(teacher_dir.hf_dir)
    (tmp_path / "text.txt").write_text(_text(60))
    (tmp_path / "r.yaml").write_text("""
name: real
corpus: {sources: [{path: text.txt}], doc_chars: 400, pool_tokens: 600, heldout_fraction: 0.2, heldout_tokens: 128,
         seq_len: 32}
filter: {keep: 0.8, score_tokens: 16}
synth: {tokens: 24, ratio: 0.1, max_new_tokens: 12, batch_size: 2, topics: [prime numbers]}
logits: {top_k: 8}
student: {hidden_size: 32, layers: 1, heads: 2, kv_heads: 1, intermediate_size: 64}
train: {tokens: 256, batch_size: 2}
""")
    from transformers import AutoModelForCausalLM
    from slmbench.factory import build
    b = build(tmp_path / "r.yaml")
    assert b.manifest["student"]["config"]["vocab_size"] == 49152
    assert 0 < b.manifest["teacher"]["heldout_bpb"] < b.manifest["eval"]["heldout_bpb"]
    assert AutoModelForCausalLM.from_pretrained(str(b.model_dir)).config.vocab_size == 49152


def test_init_from_teacher_copies_matching_layers_and_projects_narrower_embeddings(tiny):
    from slmbench.factory.recipe import load_recipe
    from slmbench.factory.students import make_student
    from slmbench.factory.teacher import Teacher
    r, _ = load_recipe(tiny())
    t = Teacher(r.teacher)
    same = r.student.model_copy(update=dict(hidden_size=32, heads=2, kv_heads=1, intermediate_size=128,
                                            init="teacher", teacher_layers=[0, 1]))
    with torch.no_grad():
        sd, td = make_student(same, t, 64, 1).state_dict(), t.model.state_dict()
        layer_keys = [k for k in sd if ".layers." in k]
        assert layer_keys and all(torch.equal(sd[k], td[k]) for k in layer_keys + ["model.embed_tokens.weight"])
        narrow = make_student(r.student.model_copy(update=dict(hidden_size=16, heads=2, kv_heads=1, init="teacher",
                                                               teacher_layers=[1, 0])), t, 64, 1)
        e = narrow.get_input_embeddings().weight
        assert e.shape == (320, 16) and torch.isfinite(e).all()
