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
    # facts that hold at any size: 1 KV head stores a third of 3, 3 a third of 9; greedy speculative output is the
    # target's own; the phone pays no API bill while every priced cloud model does
    for label in ("student KV bytes per token (measured), MQA vs GQA", "SmolLM2 KV bytes per token (measured)"):
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


# --- paired statistics, MDE, the same standard for refutation (issue 16) -------------------------------------------

def unit_rows(spec: dict[str, list[list[float]]], metric="m", fp="abc123abc123") -> pd.DataFrame:
    """{model: [per-unit values of seed 0, of seed 1, ...]} -> rows carrying per-unit samples over one unit set."""
    out = []
    for model, seeds in spec.items():
        for i, u in enumerate(seeds):
            mean = sum(u) / len(u)
            se = (sum((x - mean) ** 2 for x in u) / (len(u) - 1) / len(u)) ** 0.5
            out.append({"run_id": "r", "job_id": f"{model}{i}", "model": f"{model}-s{i}", "variant": "{}",
                        "device": "local-cpu", "scenario": "heldout", "params": "{}", "labels": "{}",
                        "metric": metric, "value": mean, "n": len(u), "spread": se, "spread_kind": "stderr_units",
                        "samples": json.dumps(u), "note": f"split (units={fp})", "status": "ok",
                        "source": "measured"})
    return pd.DataFrame(out)


def _units(n=200, seed=0, sd=0.5):
    import random
    rng = random.Random(seed)
    return [2.0 + rng.gauss(0, sd) for _ in range(n)]


def test_paired_identical_arms_find_nothing_and_pass_a_tight_margin():
    u = _units()
    df = unit_rows({"a": [u], "b": [list(u)]})
    r = decide(cmp(), df)
    assert r.effect == 0 and r.verdict == "inconclusive" and r.how.startswith("paired over 200")
    # an identical model is within any margin (C4's "≤ 0.05 bits/B" could not pass unpaired)
    assert decide(cmp(test="not_worse", margin=0.05), df).verdict == "supported"
    assert decide(cmp(test="not_worse", margin=0.05, paired=False), df).verdict == "inconclusive"


def test_paired_finds_a_known_shift_that_unit_noise_hides_unpaired():
    u = _units(sd=0.5)
    rng = __import__("random").Random(1)
    a = [x - 0.05 + rng.gauss(0, 0.01) for x in u]  # a is 0.05 lower on every unit, tiny per-unit noise
    df = unit_rows({"a": [a], "b": [u]})
    r = decide(cmp(), df)
    assert r.verdict == "supported" and r.effect == pytest.approx(0.05, abs=0.005) and r.lo > 0.04
    assert r.mde < 0.01  # the paired comparison could see far smaller effects
    un = decide(cmp(paired=False), df)
    assert un.verdict == "inconclusive" and un.mde > 0.05  # unpaired: the units' spread swamps it
    # a different unit set (another split, other items) is never paired
    df2 = pd.concat([unit_rows({"a": [a]}), unit_rows({"b": [u]}, fp="ffffff000000")])
    assert decide(cmp(), df2).how.startswith("unpaired")


def test_seeds_add_their_spread_and_min_rows_keeps_few_seeds_inconclusive():
    u = _units()
    seeds_a = [[x - 0.05 + s for x in u] for s in (-0.01, 0.0, 0.01)]
    seeds_b = [[x + s for x in u] for s in (-0.01, 0.0, 0.01)]
    r = decide(cmp(min_rows=3), unit_rows({"a": seeds_a, "b": seeds_b}))
    assert r.verdict == "supported" and "3 vs 3 rows" in r.how
    # the seed part widens the interval: same means, seeds far apart -> inconclusive
    wide = decide(cmp(min_rows=3), unit_rows({"a": [[x - 0.05 + s for x in u] for s in (-0.2, 0, 0.2)],
                                             "b": [[x + s for x in u] for s in (-0.2, 0, 0.2)]}))
    assert wide.verdict == "inconclusive" and wide.hi - wide.lo > r.hi - r.lo
    two = decide(cmp(min_rows=3), unit_rows({"a": seeds_a[:2], "b": seeds_b[:2]}))
    assert two.verdict == "inconclusive" and "fewer than 3 rows" in two.why


def test_refutation_needs_the_same_standard_as_support():
    # b clearly better on the mean, but one a seed beats one b seed: not refuted (as support would not be)
    df = rows({"a": [(1.22, 0.0)] * 8 + [(1.19, 0.0)], "b": [(0.50, 0.0)] * 8 + [(1.20, 0.0)]})
    r = decide(cmp(), df)
    assert r.hi < 0 and r.verdict == "inconclusive" and "seeds disagree" in r.why
    df = rows({"a": [(1.50, 0.01), (1.48, 0.01), (1.49, 0.01)], "b": [(1.00, 0.01), (1.02, 0.01), (1.01, 0.01)]})
    assert decide(cmp(), df).verdict == "refuted"


def test_mde_is_the_80_percent_power_distance_and_t_quantile_for_few_seeds():
    df = rows({"a": [(1.0, 0.01)], "b": [(1.1, 0.01)]})  # known stderrs, df = inf: normal quantiles
    r = decide(cmp(), df)
    se = (0.01 ** 2 * 2) ** 0.5
    assert r.mde == pytest.approx((1.959964 + 0.841621) * se, rel=1e-4)
    assert r.hi - r.lo == pytest.approx(2 * 1.959964 * se, rel=1e-4)
    few = decide(cmp(), rows({"a": [(1.0, 0.0), (1.02, 0.0)], "b": [(1.1, 0.0), (1.12, 0.0)]}))
    assert few.hi - few.lo > 2 * 1.96 * ((0.01 ** 2) * 2) ** 0.5 * 1.5  # t with ~2 df is much wider than z


def test_mcnemar_on_known_tables_and_on_paired_items():
    from slmbench.analysis.claims import mcnemar_p
    assert mcnemar_p(1, 9) == pytest.approx(22 / 1024)  # 2·P(X ≤ 1), X ~ Bin(10, 1/2)
    assert mcnemar_p(0, 0) == 1.0 and mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(0, 10) == pytest.approx(2 / 1024)
    a = [1.0] * 60 + [0.0] * 40
    b = [1.0] * 50 + [0.0] * 50  # a right and b wrong on 10 items, never the reverse
    r = decide(cmp(better="higher"), unit_rows({"a": [a], "b": [b]}, metric="m"))
    assert r.effect == pytest.approx(0.1) and "McNemar (exact) p = 0.00195 on 0+10" in r.why


def test_not_worse_needs_a_margin_fixed_in_the_suite():
    from slmbench.errors import UserError
    with pytest.raises(UserError, match="needs its margin") as e:
        parse([{"id": "X", "title": "t", "question": "q", "comparisons": [
            {"metric": "m", "better": "lower", "test": "not_worse", "a": {}, "b": {}}]}], "f.yaml")
    assert e.value.line().count("claims[0].comparisons[0].margin") == 1


def test_break_even_acceptance():
    from slmbench.report.claims import break_even_acceptance
    from slmbench.speculative import expected_tokens
    assert break_even_acceptance(1, 0.5, 1.0) == pytest.approx(0.5)  # 1 + a = 1.5
    assert break_even_acceptance(4, 0.0, 1.0) == 0.0  # a free draft pays at any acceptance
    assert break_even_acceptance(2, 1.2, 1.0) is None  # 3 tokens at most for 3.4 step costs: never pays
    a = break_even_acceptance(4, 0.2, 1.1)
    assert expected_tokens(a, 4) == pytest.approx(4 * 0.2 + 1.1, rel=1e-6)


CLAIMS = """claims:
  - id: P
    title: paired
    question: q
    regime: "toy rows"
    comparisons:
      - {metric: heldout_bpb, better: lower, a: {model: m1}, b: {model: m2}}
      - {metric: heldout_bpb, better: lower, test: not_worse, margin: 0.05, a: {model: m1}, b: {model: m2}}
"""


def _stored_run(tmp_path):
    """A real results store: two jobs of a real suite, per-sequence samples, the worker's code record."""
    from slmbench.plan import expand, load_suite
    from slmbench.store import Store
    p = tmp_path / "s.yaml"
    p.write_text(SUITE + CLAIMS)
    st = Store(tmp_path / "out")
    st.start_run("r1", "s", str(p), "sha", {"host": {}, "versions": {}})
    u = _units(50)
    for job, shift in zip(expand(load_suite(p)), (-0.1, 0.0)):
        vals = [x + shift for x in u]
        st.record_job("r1", job, "ok", None, [{"name": "heldout_bpb", "value": sum(vals) / 50, "unit": "bits/B",
                                               "n": 50, "spread": 0.07, "spread_kind": "stderr_units",
                                               "samples": vals, "note": "split (units=0123456789ab)"}],
                      0.0, {"code": {"commit": "c0ffee" * 6 + "abcd", "dirty": job.model.name == "m2"}})
    return st, p


def test_store_records_the_code_per_job_and_migrates_an_old_store(tmp_path):
    import sqlite3
    st, p = _stored_run(tmp_path)
    rows = st.rows("r1")
    assert list(rows["git_commit"].str[:6]) == ["c0ffee", "c0ffee"] and sorted(rows["git_dirty"]) == [0, 1]
    assert st.suite_text("r1") == p.read_text()
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / "results.sqlite")  # the schema before provenance columns
    db.executescript("CREATE TABLE runs (run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, suite_sha TEXT, "
                     "created REAL, finished REAL, status TEXT, manifest TEXT);"
                     "CREATE TABLE jobs (run_id TEXT, job_id TEXT, label TEXT, spec TEXT, status TEXT, error TEXT, "
                     "started REAL, finished REAL, wall_s REAL, info TEXT, PRIMARY KEY (run_id, job_id));"
                     "INSERT INTO runs VALUES ('o', 's', '', '', 1, 2, 'finished', '{}');")
    db.commit()
    db.close()
    from slmbench.store import Store
    o = Store(old)
    assert o.suite_text("o") is None and "git_commit" in o.rows().columns


def test_claims_report_from_the_store_and_rebuilt_from_its_export(tmp_path):
    from slmbench.report import claims as rcl
    from slmbench.plan import parse_suite
    st, p = _stored_run(tmp_path)
    p.write_text(p.read_text().replace("margin: 0.05", "margin: 0.5"))  # a margin moved after the run
    md, hp = rcl.from_store(st, "r1", str(p), tmp_path / "rep", parse_suite(str(p)))
    text, page = md.read_text(), hp.read_text()
    assert "The suite changed since this run" in text and "claim P: its definition" in text
    assert "paired over 50 shared units" in text and "**SUPPORTED**" in text and "c0ffeec0ffee (dirty): 1 rows" in text
    assert "class='badge b-supported'" in page and not any(ch in page for ch in "✅❌❔")
    assert (tmp_path / "rep" / "plots" / "P.png").stat().st_size > 1000  # the forest plot
    v1 = json.loads((tmp_path / "rep" / "verdicts.json").read_text())
    assert v1[0]["comparisons"][0]["mde"] > 0 and v1[0]["regime"] == "toy rows"
    # rebuilt from the shipped export alone (no store): the same numbers, the same note
    assert rcl.main([str(tmp_path / "rep" / "rows.csv"), str(p), str(tmp_path / "again")]) == 0
    assert json.loads((tmp_path / "again" / "verdicts.json").read_text()) == v1
    assert "claim P: its definition" in (tmp_path / "again" / "claims.md").read_text()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    rc, _, err = run_cli_module(bad, p, tmp_path / "x")
    assert rc == 2 and "not a `slmbench results` export" in err and "Traceback" not in err


def run_cli_module(*args):
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-m", "slmbench.report.claims", *map(str, args)], capture_output=True,
                       text=True, cwd=REPO)
    return r.returncode, r.stdout, r.stderr


def test_heldout_per_sequence_values_average_to_the_reported_figures():
    import numpy as np
    import torch
    from slmbench.scenarios.heldout import per_sequence

    class Tiny(torch.nn.Module):  # a real (untrained) LM head over an embedding: logits for every position
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.e, self.h = torch.nn.Embedding(11, 8), torch.nn.Linear(8, 11)

        def forward(self, x):
            return type("Out", (), {"logits": self.h(self.e(x))})()

    held = np.random.default_rng(0).integers(0, 11, size=(7, 9))
    tb = np.arange(1, 12)  # bytes per token id
    top1 = np.zeros((7, 9), dtype=np.int64)
    r = per_sequence(Tiny(), held, tb, top1, batch=3)
    assert len(r["bpb_units"]) == 7 and np.mean(r["bpb_units"]) == pytest.approx(r["heldout_bpb"])
    assert np.mean(r["agree_units"]) == pytest.approx(r["top1_agreement"])


def test_accuracy_rows_carry_per_item_scores_in_doc_order():
    from slmbench.scenarios.accuracy import _per_item
    res = {"samples": {"t": [{"doc_id": 3, "doc_hash": "h3", "filter": "none", "metrics": ["acc"], "acc": 0.0},
                             {"doc_id": 1, "doc_hash": "h1", "filter": "none", "metrics": ["acc"], "acc": 1.0}]}}
    fp, vals = _per_item(res)[("t", "none", "acc")]
    assert vals == [1.0, 0.0] and fp.startswith("units=")


def test_retention_averages_seeds_per_budget_against_the_teachers_same_items():
    from slmbench.analysis.retention import retention
    acc_p = json.dumps({"tasks": ["piqa"], "limit": 500})

    def r(model, scenario, metric, value, labels=None, params="{}"):
        return {"model": model, "scenario": scenario, "metric": metric, "value": value, "status": "ok",
                "labels": json.dumps(labels or {}), "params": params}
    df = pd.DataFrame(
        [r(f"student-kd-s{i}", "heldout", m, v) for i, b in enumerate((2.0, 2.2)) for m, v in
         (("heldout_bpb", b), ("teacher_heldout_bpb", 1.1), ("train_tokens_seen", 12288))]
        + [r("student-kd-s0", "accuracy", "acc_norm", 0.60, {"task": "piqa"}, acc_p),
           r("student-kd-s1", "accuracy", "acc_norm", 0.64, {"task": "piqa"}, acc_p),
           r("student-kd-s0", "accuracy", "acc_norm", 0.9, {"task": "piqa"}, "{}"),  # other items: their own row
           r("teacher", "accuracy", "acc_norm", 0.70, {"task": "piqa"}, acc_p),
           r("teacher", "accuracy", "acc_norm", 0.99, {"task": "piqa"}, "{}"),
           r("student-x-s0", "accuracy", "acc_norm", 0.5, {"task": "piqa"}, acc_p)])  # no held-out row: left out
    (got,) = retention(df, "teacher", "student-*")
    assert (got["arm"], got["budget"], got["seeds"]) == ("student-kd", 12288, 2)
    assert got["bpb"] == pytest.approx(2.1) and got["bpb_kept"] == pytest.approx(1.1 / 2.1)
    t = got["tasks"]["piqa"]  # the limit-500 items: never mixed with the "{}" item set
    assert t["teacher"] == pytest.approx(0.70) and t["student"] == pytest.approx(0.62)
    assert t["kept"] == pytest.approx(0.62 / 0.70) and t["lead_kept"] == pytest.approx(0.12 / 0.20)
    assert got["tasks"]["piqa ({})"]["kept"] == pytest.approx(0.9 / 0.99)
