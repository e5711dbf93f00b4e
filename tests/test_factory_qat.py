"""QAT as the factory's final training phase (`train.qat`): the last N tokens of the same budget train
fake-quantized; the export is a plain float HF model. Tiny recipes from test_build (random teacher, byte tokenizer)."""
from __future__ import annotations

import csv

import pytest
import torch

from slmbench.cli import main
from test_build import _artifacts, tiny  # noqa: F401  (the tiny-recipe fixture)

# 8 steps of 4 × 64 tokens; the last 3 (768 tokens) are QAT, so QAT begins at step index 5.
QAT = "  qat: {scheme: int8da_int4w, tokens: 768}\n"


def _with_qat(path, line=QAT, name="qat.yaml"):
    """The same recipe with one knob added under `train:` (block style, so the rest stays byte-identical)."""
    text = path.read_text().replace("train: {tokens: 2048, batch_size: 4, checkpoint_every: 3, eval_every: 4}",
                                    "train:\n  tokens: 2048\n  batch_size: 4\n  checkpoint_every: 3\n"
                                    "  eval_every: 4\n" + line)
    p = path.parent / name
    p.write_text(text)
    return p


def _losses(b):
    return [float(r["loss"]) for r in csv.DictReader(open(b.path / "curves.csv"))]


def test_qat_phase_builds_records_and_exports_a_float_model(tiny):
    from transformers import AutoModelForCausalLM
    from torchao.quantization.qat.linear import FakeQuantizedLinear
    from slmbench.factory import build
    from slmbench.factory.pipeline import specs
    from slmbench.factory.recipe import load_recipe
    from slmbench.factory.teacher import Teacher
    from slmbench.quant import ptq
    plain_path = tiny()
    qat_path = _with_qat(plain_path)
    r, base = load_recipe(plain_path)
    assert "qat" not in specs(r, base, Teacher(r.teacher))["student"]["train"]  # old hashes stay as they were
    plain, q = build(plain_path), build(qat_path)
    assert q.path != plain.path
    assert q.manifest["train"]["qat"] == {"scheme": "int8da_int4w", "tokens": 768, "start_step": 5,
                                         "start_tokens": 1280, "steps": 3}
    assert plain.manifest["train"]["qat"] is None
    assert q.manifest["train"]["tokens_seen"] == plain.manifest["train"]["tokens_seen"] == 2048
    lp, lq = _losses(plain), _losses(q)  # same batches, schedule and loss: identical until QAT begins
    assert lp[:5] == pytest.approx(lq[:5], rel=1e-5) and lp[5] != pytest.approx(lq[5], rel=1e-5)
    m = AutoModelForCausalLM.from_pretrained(str(q.model_dir))
    f = AutoModelForCausalLM.from_pretrained(str(plain.model_dir))
    assert not [x for x in m.modules() if isinstance(x, FakeQuantizedLinear)]
    assert m.lm_head.weight is m.model.embed_tokens.weight  # still tied
    sq, sp = m.state_dict(), f.state_dict()
    assert any(not torch.equal(sq[k], sp[k]) for k in sp)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(ptq.apply(m, "int8da_int4w")(ids).logits).all()  # loads as its PTQ row will


@pytest.mark.parametrize("line,field", [
    ("  qat: {scheme: int3_magic, tokens: 768}\n", "train.qat.scheme: unknown QAT scheme 'int3_magic'"),
    ("  qat: {scheme: intx8_weight_only, tokens: 4096}\n", "train: qat.tokens 4096 exceeds train.tokens 2048"),
    ("  qat: {scheme: intx8_weight_only, tokens: 0}\n", "train.qat.tokens"),
], ids=["scheme", "over-budget", "zero-tokens"])
def test_bad_qat_exits_2_with_one_line(tiny, tmp_path, capsys, line, field):
    p = _with_qat(tiny(), line)
    assert main(["build", str(p)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "qat.yaml" in err and field in err
    assert "student" not in _artifacts(tmp_path)


def test_interrupted_in_the_qat_phase_resumes_to_the_same_student(tiny, tmp_path, monkeypatch):
    import shutil
    from slmbench.factory import build, kd
    import slmbench.factory.train as tr
    p = _with_qat(tiny())
    calls, real = {"n": 0}, kd.kd_loss

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:  # after the step-6 checkpoint, written fake-quantized (QAT began at step 5)
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(tr, "kd_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        build(p)
    ck = torch.load(next((tmp_path / "cache" / "build").glob("student-*.partial/ckpt.pt")), weights_only=False)
    assert ck["state"]["step"] == 6 and ck["state"]["qat"]["start_step"] == 5
    monkeypatch.setattr(tr, "kd_loss", real)
    resumed = build(p)
    assert resumed.manifest["train"]["steps"] == 8 and resumed.manifest["train"]["qat"]["start_step"] == 5
    w1 = _weights(resumed)
    shutil.rmtree(resumed.path)
    whole = build(p)  # the same recipe uninterrupted
    w2 = _weights(whole)
    assert all(torch.allclose(w1[k], w2[k], atol=1e-6) for k in w2)


def _weights(b):
    from safetensors.torch import load_file
    return load_file(str(b.model_dir / "model.safetensors"))


def test_float_and_qat_runs_share_the_factory_loop():
    """factory.train.fit is the factory's loop on plain batches: the factory's schedule, and a run with QAT from
    step 4 matches the float run step for step until then (what factory.ptq_vs_qat's branches rely on)."""
    import copy
    from transformers import AutoModelForCausalLM
    from slmbench.factory.recipe import Train
    from slmbench.factory.train import fit, lr_at
    from slmbench.models.random_init import make_config
    torch.manual_seed(0)
    init = AutoModelForCausalLM.from_config(make_config({}), dtype=torch.float32)
    xs = [torch.randint(0, 256, (2, 16)) for _ in range(6)]
    t = Train(lr=1e-2, warmup_steps=2)
    f, q = copy.deepcopy(init), copy.deepcopy(init)
    sf, sq = fit(f, xs, 6, t), fit(q, xs, 6, t, scheme="int8da_int4w", qat_from=4)
    lf, lq = [r["loss"] for r in sf["log"]], [r["loss"] for r in sq["log"]]
    assert lf[:4] == pytest.approx(lq[:4], rel=1e-6) and lf[4] != pytest.approx(lq[4], rel=1e-6)
    assert [r["lr"] for r in sf["log"]] == [lr_at(t, s, 6) for s in range(6)] == [r["lr"] for r in sq["log"]]
    assert sq["qat"] == {"scheme": "int8da_int4w", "start_step": 4, "start_tokens": 4 * 32, "steps": 2}
    assert "qat" not in sf and type(q.model.layers[0].mlp.up_proj) is torch.nn.Linear  # stripped back to float
