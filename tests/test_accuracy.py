"""Accuracy scenario: real lm-eval on a tiny random model and the shipped tiny task; the offline task pack; clear
errors (exit 2, no rows) for bad task names and missing data, decided before any job runs."""
from __future__ import annotations

import json
import math
import os
import sqlite3
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_MODEL, run_cli, tiny_suite

DATA = os.environ.get("SLMBENCH_DATA_DIR")
needs_data = pytest.mark.skipif(not (DATA and Path(DATA, "eval").is_dir()), reason="needs $SLMBENCH_DATA_DIR/eval")


def acc_suite(tmp_path, params, **over):
    return tiny_suite(tmp_path, scenarios=[{"name": "accuracy", "params": params}], **over)


def rows(out: Path):
    db = sqlite3.connect(out / "results.sqlite")
    return db.execute("SELECT metric, labels, value, n, spread, spread_kind, higher_is_better, status FROM results"
                      ).fetchall()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("acc")
    # A user task directory in lm-eval's own format, its data beside it (${TASK_DIR}).
    (d / "mytasks").mkdir()
    (d / "mytasks" / "d.jsonl").write_text("".join(json.dumps({"q": f"{i} plus one is", "a": [str(i + 1), "zero"],
                                                               "y": 0}) + "\n" for i in range(12)))
    (d / "mytasks" / "mine.yaml").write_text(
        "task: my_add\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: ${TASK_DIR}/d.jsonl\n"
        "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: '{{y}}'\n"
        "doc_to_choice: '{{a}}'\nmetric_list:\n  - metric: acc\n")
    acc = {"name": "accuracy", "params": {"tasks": ["slmbench_tiny", "my_add"], "limit": 10, "batch_size": 4,
                                          "include_path": [str(d / "mytasks")]}}
    cost = [{"name": s, "params": {"prompt_tokens": 8, "gen_tokens": 4}} for s in ("latency", "memory")]
    suite = tiny_suite(d, scenarios=[acc, *cost])
    rc, _, err = run_cli("run", suite, "--out", d / "out")
    assert rc == 0, err
    return d / "out"


def test_accuracy_rows_follow_lm_eval(tiny_run):
    got = {(m, json.loads(lab).get("task")): (v, n, se, kind, hib, st)
           for m, lab, v, n, se, kind, hib, st in rows(tiny_run)}
    assert {("acc", "slmbench_tiny"), ("acc_norm", "slmbench_tiny"), ("acc", "my_add"), ("eval_s", None)} <= set(got)
    for key in [("acc", "slmbench_tiny"), ("acc_norm", "slmbench_tiny"), ("acc", "my_add")]:
        v, n, se, kind, hib, st = got[key]
        assert st == "ok" and n == 10 and hib == 1 and kind == "stderr_units"  # a 10-item seeded subsample, per item
        assert se == pytest.approx(math.sqrt(v * (1 - v) / (n - 1)), abs=1e-9)  # lm-eval's mean_stderr
    assert got[("eval_s", None)][0] > 0 and got[("eval_s", None)][1] == 20


def test_quality_vs_cost_joins_accuracy_with_cost(tiny_run):
    from slmbench.report.quality import join, pareto, quality_vs_cost
    from slmbench.store import Store
    df = Store(tiny_run).rows()
    j = join(df)
    assert len(j) == 1 and j.loc[0, "model"] == "tiny"
    acc = df[(df["metric"] == "acc_norm") & df["labels"].str.contains("slmbench_tiny")]["value"].item()
    assert j.loc[0, "slmbench_tiny acc_norm"] == acc and j.loc[0, "decode tok/s"] > 0 and j.loc[0, "peak RSS MB"] > 0
    html, md = quality_vs_cost(df)
    assert "| slmbench_tiny acc_norm % (n=10) |" in md and "| my_add acc % (n=10) |" in md and f"{100 * acc:.1f} ± " in md
    assert "<h2>Quality vs cost</h2>" in html and "data:image/png;base64," in html
    # (cost, quality): the cheaper-and-better point dominates; ties on one axis keep both ends of the front
    assert pareto([(1, 50), (2, 60), (3, 55), (1, 40)]) == [0, 1]
    assert pareto([(10, 50), (20, 60)], cost_lower_better=False) == [1]


def _ll(model, tok, ctx: str, cont: str) -> float:
    import torch
    a = tok(ctx, add_special_tokens=False)["input_ids"]
    b = tok(ctx + cont, add_special_tokens=False)["input_ids"][len(a):]
    x = torch.tensor([a + b])
    with torch.no_grad():
        logp = torch.log_softmax(model(x).logits[0].float(), -1)
    return sum(logp[len(a) + i - 1, t].item() for i, t in enumerate(b))


def test_scenario_scores_like_a_direct_loglikelihood(slm_env):
    """The wrapper + task pack score exactly lm-eval's definition: argmax of log P(" " + choice | prompt) (acc) and
    of that divided by the choice's length in characters (acc_norm) — checked independently with plain torch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends.torch_hf import TorchEngine as Engine
    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    from slmbench.scenarios import JobContext
    from slmbench.scenarios.accuracy import Accuracy, AccuracyParams
    from slmbench.plan import RunSettings, Variant

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(TINY_MODEL["config"])).eval()
    tok = AutoTokenizer.from_pretrained(str(byte_tokenizer_dir()))
    eng = Engine(model, tok, Variant(), make_adapter(load_profile("local-cpu")), "test")
    ctx = JobContext(engine=eng, adapter=eng.adapter, settings=RunSettings(), seed=0, variant=Variant())
    got = {(m.name, m.labels.get("task")): m for m in Accuracy().run(ctx, AccuracyParams(tasks=["slmbench_tiny"], batch_size=8))}
    items = [json.loads(x) for x in (REPO / "slmbench/data/tasks/slmbench_tiny/tiny.jsonl").read_text().splitlines()]
    acc = acc_norm = 0
    for it in items:
        lls = [_ll(model, tok, it["question"], " " + c) for c in it["choices"]]
        acc += max(range(len(lls)), key=lls.__getitem__) == it["label"]
        norm = [ll / len(c) for ll, c in zip(lls, it["choices"])]
        acc_norm += max(range(len(norm)), key=norm.__getitem__) == it["label"]
    assert got[("acc", "slmbench_tiny")].n == len(items) == 40
    assert got[("acc", "slmbench_tiny")].value == pytest.approx(acc / len(items))
    assert got[("acc_norm", "slmbench_tiny")].value == pytest.approx(acc_norm / len(items))


def test_quantized_variant_through_the_lm_eval_wrapper(slm_env):
    """torch dynamic int8 (which lm-eval's `hf` model cannot load) scores through `--model slmbench`'s class."""
    import lm_eval
    from slmbench.lmeval_model import from_engine, load_engine_standalone, task_manager
    eng = load_engine_standalone("random", None, "fp32", "int8_dynamic", 1)
    assert "quantized.dynamic" in type(eng.model.lm_head).__module__
    res = lm_eval.simple_evaluate(model=from_engine(eng, batch_size=4), tasks=["slmbench_tiny"], limit=6,
                                  task_manager=task_manager(), log_samples=False, bootstrap_iters=0)
    assert res["n-samples"]["slmbench_tiny"]["effective"] == 6
    assert 0 <= res["results"]["slmbench_tiny"]["acc,none"] <= 1
    assert "quantized.dynamic" in type(eng.model.lm_head).__module__  # not re-tied to the fp32 embedding


def test_task_pack_matches_lm_eval_definitions():
    """Prompts, choices' form, output type and metrics are lm-eval 0.4.13's own; only the data source differs."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml
    builtin = Path(lm_eval.tasks.__file__).parent
    pack = REPO / "suites" / "tasks"
    pairs = [("arc/arc_easy.yaml", "arc/arc_easy.yaml"), ("hellaswag/hellaswag.yaml", "hellaswag/hellaswag.yaml"),
             ("piqa/piqa.yaml", "piqa/piqa.yaml"), ("lambada/lambada_openai.yaml", "lambada/lambada_openai.yaml"),
             ("blimp/adjunct_island.yaml", "blimp/adjunct_island.yaml")]
    for ours, theirs in pairs:
        a, b = (load_yaml(p, resolve_func=False, recursive=True) for p in (pack / ours, builtin / theirs))
        assert a["task"] == b["task"] and a["output_type"] == b["output_type"], ours
        assert a["metric_list"] == b["metric_list"], ours
        assert a.get("num_fewshot") == b.get("num_fewshot"), ours
        if ours.startswith(("arc", "piqa", "hellaswag", "blimp")):
            assert a["doc_to_text"] == b["doc_to_text"], ours
    group = load_yaml(pack / "blimp/_blimp.yaml", resolve_func=False)
    assert group["task"] == load_yaml(builtin / "blimp/_blimp.yaml", resolve_func=False)["task"]  # all 67 paradigms
    assert group["aggregate_metric_list"][0]["weight_by_size"] is False


@needs_data
def test_pack_renders_lm_eval_prompts_from_local_files(slm_env):
    from slmbench.lmeval_model import go_offline, task_manager
    go_offline()
    tasks = task_manager().load(["arc_easy", "piqa", "lambada_openai", "hellaswag"])["tasks"]
    raw = {n: json.loads(open(Path(DATA, "eval", f, s)).readline()) for n, f, s in
           [("arc_easy", "arc_easy", "test.jsonl"), ("piqa", "piqa", "validation.jsonl"),
            ("lambada_openai", "lambada_openai", "test.jsonl")]}
    t = tasks["arc_easy"]
    d = t.eval_docs[0]
    assert len(t.eval_docs) == 2376
    assert t.doc_to_text(d) == f"Question: {raw['arc_easy']['question']}\nAnswer:"
    assert t.doc_to_choice(d) == raw["arc_easy"]["choices"] and t.doc_to_target(d) == raw["arc_easy"]["label"]
    t = tasks["piqa"]
    assert t.doc_to_choice(t.eval_docs[0]) == [raw["piqa"]["sol1"], raw["piqa"]["sol2"]] and len(t.eval_docs) == 1838
    t = tasks["lambada_openai"]
    r = raw["lambada_openai"]
    text = r["context"] + " " + r["continuation"]  # lm-eval's `text` field
    assert t.doc_to_text(t.eval_docs[0]) == " ".join(text.split(" ")[:-1])
    assert t.doc_to_target(t.eval_docs[0]) == " " + text.split(" ")[-1]
    assert len(tasks["hellaswag"].eval_docs) == 10042


@pytest.mark.parametrize("case", ["bad_task", "missing_file", "missing_data_dir", "unset_data_dir"])
def test_bad_tasks_exit_2_before_any_job(tmp_path, case):
    env, params = {}, {"tasks": ["arc_easy"]}
    if case == "bad_task":
        params = {"tasks": ["arc_esay"]}
    elif case == "missing_file":
        (tmp_path / "t").mkdir()
        (tmp_path / "t" / "x.yaml").write_text(
            "task: x_task\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: ${TASK_DIR}/nope.jsonl\n"
            "output_type: multiple_choice\ntest_split: test\ndoc_to_text: '{{q}}'\ndoc_to_target: 0\n"
            "doc_to_choice: '{{a}}'\n")
        params = {"tasks": ["x_task"], "include_path": [str(tmp_path / "t")]}
    elif case == "missing_data_dir":
        env = {"SLMBENCH_DATA_DIR": str(tmp_path / "no-such-dir")}
    else:
        env = {"SLMBENCH_DATA_DIR": ""}
    suite = acc_suite(tmp_path, params)
    for cmd in (["validate", suite], ["run", suite, "--out", tmp_path / "out"]):
        rc, out, err = run_cli(*cmd, env=env)
        assert rc == 2, err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert "scenarios[0].params.tasks" in err
        want = {"bad_task": "unknown lm-eval task 'arc_esay' (did you mean arc_easy", "missing_file": "nope.jsonl not found",
                "missing_data_dir": "is not a directory", "unset_data_dir": "SLMBENCH_DATA_DIR is not set"}[case]
        assert want in err, err
    assert not (tmp_path / "out" / "results.sqlite").exists()  # nothing ran, no partial rows


@pytest.mark.real_model
def test_smollm2_beats_chance_on_the_tiny_task(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "acc-real", "settings": {"timeout_s": 600},
                                     "models": [{"name": "smollm2", "source": "smollm2"}], "devices": ["local-cpu"],
                                     "scenarios": [{"name": "accuracy", "params": {"tasks": ["slmbench_tiny"]}}]}))
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out", timeout=900)
    assert rc == 0, err
    got = {m: (v, se) for m, lab, v, n, se, *_ in rows(tmp_path / "out") if m in ("acc", "acc_norm")}
    v, se = got["acc"]
    assert v - 3 * se > 0.4, got  # 40 two/three-way items: chance is ~0.37
