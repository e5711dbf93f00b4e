"""The claims report: the decision rule on known numbers, the --quick patch, bad claims as exit-2 errors, and the
whole thing end to end (suites/claims.yaml --quick: real SmolLM2 teacher/target, real factory students)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import REPO, run_cli
from slmbench.analysis.claims import Comparison, claim_verdict, decide, parse


def rows(spec: dict[str, list[tuple[float, float | None]]], metric="m", **extra) -> pd.DataFrame:
    """{model: [(value, stderr), ...]} -> store-shaped rows (one row per value, as seeds of one arm)."""
    out = []
    for model, vals in spec.items():
        for i, (v, se) in enumerate(vals):
            out.append({"run_id": "r", "job_id": f"{model}{i}", "model": f"{model}-s{i}", "variant": "{}",
                        "device": "local-cpu", "scenario": "x", "params": json.dumps(extra.get("params", {})),
                        "labels": "{}", "metric": metric, "value": v, "n": 1, "spread": se,
                        "spread_kind": "stderr" if se is not None else None, "status": "ok", "source": "measured"})
    return pd.DataFrame(out)


def cmp(**kw) -> Comparison:
    return Comparison(**{"metric": "m", "better": "lower", "a": {"model": "a-*"}, "b": {"model": "b-*"}, **kw})


def test_clear_effect_is_supported_and_its_mirror_refuted():
    df = rows({"a": [(1.00, 0.01), (1.02, 0.01)], "b": [(1.50, 0.01), (1.48, 0.01)]})
    r = decide(cmp(), df)
    assert r.verdict == "supported" and r.effect == pytest.approx(0.48) and r.lo > 0
    r = decide(cmp(better="higher"), df)
    assert r.verdict == "refuted" and r.hi < 0


def test_overlapping_arms_are_inconclusive_and_noise_widens_the_interval():
    df = rows({"a": [(1.00, 0.3), (1.10, 0.3)], "b": [(1.05, 0.3), (1.15, 0.3)]})
    r = decide(cmp(), df)
    assert r.verdict == "inconclusive" and r.lo < 0 < r.hi
    # the rows' own stderr sets a floor on the arm's se even when the seeds agree exactly
    df = rows({"a": [(1.0, 0.2), (1.0, 0.2)], "b": [(1.1, 0.2), (1.1, 0.2)]})
    assert decide(cmp(), df).verdict == "inconclusive"


def test_seeds_that_disagree_block_support_even_with_a_clear_mean():
    # a's mean is clearly lower, but one a seed is worse than one b seed
    df = rows({"a": [(0.50, 0.0)] * 8 + [(1.21, 0.0)], "b": [(1.20, 0.0), (1.21, 0.0), (1.22, 0.0)]})
    r = decide(cmp(), df)
    assert r.lo > 0 and r.verdict == "inconclusive" and "seeds disagree" in r.why


def test_not_worse_with_margin_threshold_reduce_and_relative():
    df = rows({"a": [(1.03, 0.001)], "b": [(1.00, 0.001)]})
    assert decide(cmp(test="not_worse", margin=0.05), df).verdict == "supported"
    assert decide(cmp(test="not_worse", margin=0.01), df).verdict == "refuted"
    # threshold: the best (max) of several settings against a fixed bar; relative effects are fractions of b
    df = rows({"a": [(0.8, None), (1.3, None), (0.9, None)]}, metric="speedup")
    r = decide(Comparison(metric="speedup", better="higher", threshold=1.0, a={"model": "a-*", "reduce": "max"}), df)
    assert r.verdict == "supported" and r.effect == pytest.approx(0.3)
    df = rows({"a": [(50.0, None)], "b": [(100.0, None)]})
    assert decide(cmp(relative=True), df).effect == pytest.approx(0.5)
    # equal is not worse (e.g. outputs identical: 1.0 against 1.0)
    df = rows({"a": [(1.0, None)]})
    assert decide(Comparison(metric="m", better="higher", test="not_worse", threshold=1.0, a={"model": "a-*"}),
                  df).verdict == "supported"


def test_missing_arm_is_inconclusive_and_claim_verdict_combines_primaries():
    df = rows({"a": [(1.0, 0.01)]})
    r = decide(cmp(), df)
    assert r.verdict == "inconclusive" and "no rows for arm b" in r.why
    sup = decide(cmp(), rows({"a": [(1.0, 0.0)], "b": [(2.0, 0.0)]}))
    ref = decide(cmp(primary=False, better="higher"), rows({"a": [(1.0, 0.0)], "b": [(2.0, 0.0)]}))
    assert claim_verdict([sup, ref]) == "supported"  # a context comparison never decides
    assert claim_verdict([sup, r]) == "inconclusive"
    ref.cmp = cmp(better="higher")
    assert claim_verdict([sup, ref]) == "refuted"


def test_selectors_match_nested_params():
    df = rows({"t": [(1.4, None)]}, metric="speedup", params={"draft": {"name": "student"}, "g": 2})
    df = pd.concat([df, rows({"t": [(0.7, None)]}, metric="speedup", params={"draft": {"name": "ngram"}, "g": 2})])
    c = Comparison(metric="speedup", better="higher", threshold=1.0,
                   a={"model": "t-*", "params": {"draft.name": "student"}})
    assert decide(c, df).a.values == [1.4]


def test_parse_refuses_both_b_and_threshold():
    from slmbench.errors import UserError
    with pytest.raises(UserError, match="exactly one of b and threshold"):
        parse([{"id": "X", "title": "t", "question": "q", "comparisons": [
            {"metric": "m", "better": "lower", "a": {}, "b": {}, "threshold": 1}]}], "f.yaml")


SUITE = """name: s
models:
  - {name: m1, source: random, config: {hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}}
  - {name: m2, source: random, config: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2}}
devices: [local-cpu]
scenarios:
  - {name: latency, params: {prompt_tokens: 8, gen_tokens: 4}}
"""


@pytest.mark.parametrize("extra, field", [
    ("claims: [{id: C, title: t, question: q, comparisons: [{metric: m, better: up, a: {}, b: {}}]}]\n",
     "claims[0].comparisons.0.better"),
    ("claims: [{id: C, title: t, question: q, comparisons: [{metric: m, better: lower, a: {model: zz}, b: {}}]}]\n",
     "claims[0].comparisons[0].a.model"),
    ("quick: {nope: 1}\n", "quick.nope"),
    ("quick: {models: {zz: null}}\n", "quick.models.zz"),
])
def test_bad_claims_and_quick_patches_exit_2(tmp_path, extra, field):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE + extra)
    args = ["validate", str(p)] + (["--quick"] if extra.startswith("quick") else [])
    rc, _, err = run_cli(*args)
    assert rc == 2 and field in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_quick_patch_merges_by_glob_drops_and_renames(tmp_path):
    from slmbench.plan import expand, load_suite
    p = tmp_path / "s.yaml"
    p.write_text(SUITE.replace("scenarios:\n", "scenarios:\n  - {name: memory, models: [m2]}\n") +
                 "quick:\n  settings: {repetitions: 1}\n  models: {m2: null, 'm*': {knobs: {threads: 1}}}\n"
                 "  scenarios: {latency: {params: {gen_tokens: 2}}}\n")
    full, q = load_suite(p), load_suite(p, quick=True)
    assert [m.name for m in q.models] == ["m1"] and q.models[0].knobs == {"threads": 1}
    assert q.name == "s-quick" and q.settings.repetitions == 1
    assert [(j.model.name, j.scenario) for j in expand(full)] == [("m1", "latency"), ("m2", "memory"),
                                                                  ("m2", "latency")]
    jobs = expand(q)  # memory named only m2, which quick dropped: no memory job is left
    assert [(j.model.name, j.scenario, j.params["gen_tokens"]) for j in jobs] == [("m1", "latency", 2)]


@pytest.mark.real_model
def test_claims_quick_end_to_end(tmp_path):
    """The real thing, small: SmolLM2 as teacher and target, tiny distilled students, every claim decided."""
    out = tmp_path / "out"
    rc, _, err = run_cli("run", REPO / "suites" / "claims.yaml", "--quick", "--out", out, timeout=1800)
    assert rc == 0, err[-3000:]
    rc, _, err = run_cli("report", "--out", out, "--claims", "--output", tmp_path / "rep")
    assert rc == 0, err[-3000:]
    verdicts = {v["id"]: v for v in json.loads((tmp_path / "rep" / "verdicts.json").read_text())}
    assert set(verdicts) == {"C1", "C2-data", "C2-curriculum", "C3", "C4", "C5", "C6", "C7", "C8-cost", "C8-user"}
    assert all(v["verdict"] in ("supported", "refuted", "inconclusive") for v in verdicts.values())
    by = {c["label"]: c for c in sum((v["comparisons"] for v in verdicts.values()), [])}
    # facts that hold at any size: 2 KV heads store a third of 6; greedy speculative output is the target's own;
    # the phone pays no API bill while every priced cloud model does
    for label in ("KV bytes per token (measured)", "SmolLM2 KV bytes per token (measured)"):  # 2 of 6, 3 of 9 heads
        kv = by[label]
        assert kv["verdict"] == "supported" and kv["a"] * 3 == pytest.approx(kv["b"])
    assert by["output identical (student draft, every g)"]["verdict"] == "supported"
    api = by["vendor's API $ per 1M tokens (zero on device by definition)"]
    assert api["a"] == 0 and api["b"] > 0 and api["verdict"] == "supported"
    # students were really trained and evaluated: held-out bits/byte are finite, positive numbers per seed
    c1 = verdicts["C1"]["comparisons"][0]
    assert c1["a"] > 0 and c1["b"] > 0
    md = (tmp_path / "rep" / "claims.md").read_text()
    for cid in verdicts:
        assert f"## {cid} — " in md and (tmp_path / "rep" / "plots" / f"{cid}.png").stat().st_size > 1000
    html = (tmp_path / "rep" / "claims.html").read_text()
    assert "href='#row-" in html and "Environment manifest" in html and "data:image/png;base64" in html


def test_attention_mha_expands_the_kv_cache_and_keeps_the_function():
    """C4 on the real model compares SmolLM2 (GQA) with itself expanded to MHA: same outputs, 3x the KV cache."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from slmbench.backends.torch_hf import expand_kv_heads
    cfg = AutoConfig.for_model("llama", vocab_size=64, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                               num_attention_heads=6, num_key_value_heads=2)
    torch.manual_seed(0)
    m = AutoModelForCausalLM.from_config(cfg).eval()
    x = torch.randint(0, 64, (2, 12))
    n_params = sum(p.numel() for p in m.parameters())
    with torch.no_grad():
        ref = m(x, use_cache=True)
        expand_kv_heads(m)
        out = m(x, use_cache=True)
    assert torch.allclose(ref.logits, out.logits, atol=1e-5)
    k_ref, k_new = ref.past_key_values.layers[0].keys, out.past_key_values.layers[0].keys
    assert k_ref.shape[1] == 2 and k_new.shape[1] == 6 and m.config.num_key_value_heads == 6
    assert sum(p.numel() for p in m.parameters()) == n_params  # the same weights: only the cache grows


def test_compile_knob_really_compiles_and_keeps_the_tokens(slm_env):
    """C7's compiled arm must be compiled: transformers leaves CPU generate eager unless told (a default
    generation_config has no compile config), and the engine refuses to time eager code as "compiled"."""
    from slmbench import models
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends import load_engine
    from slmbench.plan import ModelSpec, Variant
    spec = ModelSpec(name="t", source="random", config={"hidden_size": 32, "num_hidden_layers": 1,
                                                        "num_attention_heads": 2})
    ad = make_adapter(load_profile("local-cpu"))
    ad.setup()
    ids = list(range(5, 21))
    eager = load_engine(models.resolve(spec), Variant(), ad)
    comp = load_engine(models.resolve(spec), Variant(compile=True), ad)
    a, b = eager.generate(ids, 4), comp.generate(ids, 4)
    assert hasattr(comp.model, "_compiled_call") and not hasattr(eager.model, "_compiled_call")
    assert a.sequences.tolist() == b.sequences.tolist()
