"""Regression verdicts: the statistics on synthetic sample lists (real computations), report escaping, and one end
to end check on the tiny random model — a run with an injected decode delay against one without."""
from __future__ import annotations

import math
import random

import pytest
import yaml

from conftest import TINY_MODEL, run_cli
from slmbench.errors import UserError
from slmbench.analysis.regression import Rule, Verdict, decide, merge_rules, parse_threshold_args, rule_for
from slmbench.stats import change_points, mann_whitney_p, min_mw_p


def noisy(center: float, n: int, rel_sd: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.gauss(0, rel_sd)) for _ in range(n)]


RULE = Rule(0.05, 0.01)


def test_small_drift_is_unchanged_even_when_significant():
    base, new = noisy(25, 12, 0.005, 1), noisy(25 * 0.97, 12, 0.005, 2)  # a clean 3% drift: p tiny, still noise
    v, rel, p, why = decide(base, new, True, RULE)
    assert p < 0.01 and v == "unchanged" and "significant but small" in why
    assert rel == pytest.approx(-0.03, abs=0.01)


def test_slowdown_beyond_threshold_is_regressed_and_direction_matters():
    base, new = noisy(25, 12, 0.01, 3), noisy(25 * 0.9, 12, 0.01, 4)
    assert decide(base, new, True, RULE)[0] == "regressed"  # tok/s down: worse
    assert decide(base, new, False, RULE)[0] == "improved"  # ms down: better
    assert decide(base, new, None, RULE)[0] == "inconclusive"  # no direction known


def test_large_move_without_significance_is_inconclusive():
    v, *_ , why = decide([10, 30, 12, 28, 11], [12, 31, 14, 29, 40], False, RULE)  # 10 % higher median, noisy
    assert v == "inconclusive" and "not significant" in why
    v, *_, why = decide([10.0, 10.1, 10.2], [12.0, 12.1, 12.2], False, RULE)  # 3 vs 3 can never reach p < 0.01
    assert v == "inconclusive" and "too few samples" in why
    assert min_mw_p(3, 3) == pytest.approx(0.1) and min_mw_p(12, 12) < 1e-5


def test_single_values_use_the_threshold_alone():
    assert decide([1000.0], [1030.0], False, Rule(0.02))[0] == "regressed"
    assert decide([1000.0], [1015.0], False, Rule(0.02))[0] == "unchanged"
    v, rel, p, why = decide([1000.0], [1030.0], False, Rule(0.02))
    assert math.isnan(p) and "single value" in why


def test_mann_whitney_is_a_rank_test():
    a = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert mann_whitney_p(a, [x + 10 for x in a]) == mann_whitney_p(a, [x + 1000 for x in a])  # size is ignored
    assert mann_whitney_p([2.0] * 6, [2.0] * 6) == 1.0


def test_change_points_find_the_night_of_a_step_and_ignore_one_odd_night():
    nights = [noisy(25, 10, 0.01, s) for s in range(10)] + [noisy(22.5, 10, 0.01, s) for s in range(10, 16)]
    steps = change_points(nights, 0.05, 0.01)
    assert [k for k, *_ in steps] == [10]
    k, before, after, p = steps[0]
    assert before == pytest.approx(25, rel=0.02) and after == pytest.approx(22.5, rel=0.02) and p < 0.01
    flat = [noisy(25, 10, 0.01, s) for s in range(15)]
    flat[7] = noisy(15, 10, 0.01, 99)  # one disturbed night in the middle is not a step
    assert change_points(flat, 0.05, 0.01) == []
    assert change_points([[1000.0]] * 5 + [[1100.0]] * 3, 0.02, 0.01)[0][0] == 5  # single values per night


def test_rules_from_suite_and_command_line():
    rules = merge_rules({"alpha": 0.02, "metrics": {"decode_tok_s": {"min_change": 0.08}}},
                        parse_threshold_args(["peak_mem_mb=0.01"]))
    assert rule_for("decode_tok_s", "tok/s", rules) == Rule(0.08, 0.02, None)
    assert rule_for("peak_mem_mb", "MB", rules).min_change == 0.01
    assert rule_for("ttft_ms", "ms", rules).min_change == 0.15  # default, from the A/A runs
    assert not rule_for("itl_p99_ms", "ms", rules).gate  # tail latency: informational
    assert decide([40.0], [80.0], False, rule_for("itl_p99_ms", "ms", rules))[0] == "inconclusive"
    with pytest.raises(UserError):
        parse_threshold_args(["decode_tok_s"])
    with pytest.raises(UserError):
        merge_rules({"alpha": 2})


def test_reports_escape_store_strings():
    from slmbench.analysis.regression import Comparison
    from slmbench.report.regression import to_html, to_markdown
    key = ("m<script>x</script>", '{"backend": "torch"}', "local-cpu", "latency", '{"a": "|b"}', "job", "{}")
    v = Verdict(key, "job", "", None, None, 0, 0, math.nan, math.nan, "regressed", "job crashed: <img onerror=x>|",
                None, Rule(0.0), "j1")
    v.confirmed = True
    c = Comparison("base<b>", "new", "s", {}, {}, [v])
    md, page = to_markdown(c), to_html(c)
    assert "<script>" not in md and "<img" not in md and "&lt;script&gt;" in md
    assert "<script>" not in page and "<img onerror" not in page and "base&lt;b&gt;" in page
    assert "1 regression confirmed" in md


def _suite(path, delay_ms: float):
    model = {**TINY_MODEL, "knobs": {"inject_decode_delay_ms": delay_ms}}
    suite = {"name": "reg", "settings": {"warmup": 1, "repetitions": 6, "min_duration_s": 0, "timeout_s": 120},
             "models": [model], "devices": ["local-cpu"],
             "scenarios": [{"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 6}}]}
    path.write_text(yaml.safe_dump(suite))
    return path


def test_compare_flags_an_injected_decode_delay(tmp_path):
    out = tmp_path / "out"
    for i, delay in enumerate((0, 40)):  # 40 ms per token: many times the tiny model's own decode time
        rc, _, err = run_cli("run", _suite(tmp_path / f"s{i}.yaml", delay), "--out", out)
        assert rc == 0, err
    rc, md, err = run_cli("compare", "prev", "last", "--out", out, "--html", tmp_path / "r.html")
    assert rc == 1, err
    assert "1 regression" in md or "regressions confirmed" in md
    line = next(ln for ln in md.splitlines() if "| decode_tok_s |" in ln)
    assert "regressed" in line
    assert "inject_decode_delay_ms=40" in md  # the injected knob is named, not hidden
    assert "data:image/png;base64," in (tmp_path / "r.html").read_text()
    steps = md.split("### Steps in the nightly series")[1]  # the change point is on the second night
    assert "decode_tok_s" in steps and "latest night" in steps
    # The careful path: rerun the suspect job once; the delay is still there, so the regression is confirmed.
    rc, md, err = run_cli("compare", "prev", "last", "--out", out, "--rerun-suspects", "--md", tmp_path / "r.md")
    assert rc == 1, err
    text = (tmp_path / "r.md").read_text()
    assert "rerun" in text and "(confirmed)" in next(ln for ln in text.splitlines() if "| decode_tok_s |" in ln)
    # Bad input keeps exit code 2.
    rc, _, err = run_cli("compare", "nope", "last", "--out", out)
    assert rc == 2 and "no run 'nope'" in err


# --- interleaved A/B confirmation ----------------------------------------------------------------------------------

def _drifting_pairs(n: int, ratio: float, seed: int, drift: float = 0.15, noise: float = 0.01):
    """Rounds on a machine whose speed wanders ±`drift` from round to round; within a round B = A × ratio, each
    member with its own small noise (what back-to-back runs see)."""
    rng = random.Random(seed)
    a, b = [], []
    for _ in range(n):
        speed = 25 * (1 + rng.uniform(-drift, drift))
        a.append(speed * (1 + rng.gauss(0, noise)))
        b.append(speed * ratio * (1 + rng.gauss(0, noise)))
    return a, b


def test_paired_test_sees_5pct_through_drift_that_hides_it_from_the_unpaired_test():
    from slmbench.analysis.regression import decide_paired, paired_ratio
    from slmbench.regression_rules import paired_rule
    rule = paired_rule("decode_tok_s", "tok/s")
    assert rule.alpha == 0.05 and rule.min_change <= 0.02
    a, b = _drifting_pairs(8, 0.95, 1)
    v, rel, p, why = decide_paired(a, b, True, rule)
    assert v == "regressed" and rel == pytest.approx(-0.05, abs=0.01) and p < 0.05 and "8 interleaved pairs" in why
    assert decide(a, b, True, rule_for("decode_tok_s", "tok/s", {}))[0] != "regressed"  # unpaired: drowned
    assert decide_paired(a, b, False, rule)[0] == "improved"  # lower is better: the same move is good
    one = decide_paired(a, b, True, rule, one_sided=True)  # a confirmation asks only "is B worse?"
    assert one[0] == "regressed" and one[2] == pytest.approx(p / 2) and "one-sided" in one[3]
    assert decide_paired(a, b, False, rule, one_sided=True)[0] == "inconclusive"  # better is never "improved"
    a, b = _drifting_pairs(8, 1.0, 2)  # A/A
    assert decide_paired(a, b, True, rule)[0] == "unchanged"
    hl, p, up = paired_ratio([10.0, 20.0, 40.0], [11.0, 22.0, 44.0])  # a constant ratio, whatever the drift
    assert hl == pytest.approx(0.1) and up == 3


def test_paired_test_needs_enough_pairs_and_refuses_unpaired_input():
    from slmbench.analysis.regression import decide_paired, min_signed_rank_p, paired_ratio
    assert min_signed_rank_p(5) == pytest.approx(0.0625) and min_signed_rank_p(6) < 0.05
    a, b = _drifting_pairs(5, 0.9, 3)
    v, *_, why = decide_paired(a, b, True, Rule(0.02, 0.05))
    assert v == "inconclusive" and "too few pairs" in why
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ratio([1.0, 2.0], [1.0])


def test_confirm_paired_confirms_only_what_the_ab_rerun_reproduces():
    from slmbench.analysis.regression import Comparison, ab_pairs, confirm_paired
    key = ("m", "{}", "local-cpu", "latency", "{}", "decode_tok_s", "{}")
    mk = lambda job: Verdict((*key[:4], job, *key[5:]), "decode_tok_s", "tok/s", 25.0, 23.0, 6, 6, -0.08, 0.001,
                             "regressed", "p < 0.01", True, Rule(0.07), job)
    real, drift, lost = mk("j1"), mk("j2"), mk("j3")
    cmp = Comparison("base", "new", "s", {}, {}, [real, drift, lost])
    per_job = {"j1": {("decode_tok_s", "{}"): _drifting_pairs(8, 0.95, 4)},
               "j2": {("decode_tok_s", "{}"): _drifting_pairs(8, 1.0, 5)}}
    pairs = ab_pairs(cmp, per_job)
    assert set(pairs) == {real.key, drift.key}
    confirm_paired(cmp, pairs, {})
    assert real.confirmed and real.rerun["verdict"] == "regressed" and "A/B" in real.rerun["reason"]
    assert not drift.confirmed and "not reproduced A/B" in drift.reason
    assert not lost.confirmed and "no pairs" in lost.reason


def test_interleave_alternates_the_order_and_pairs_the_values():
    from slmbench.executors.interleave import interleave, paired_values
    calls = []

    def arm(name, value):
        def run():
            calls.append(name)
            return {("decode_tok_s", "{}"): value, (name, "{}"): 1.0}
        return run
    rounds = interleave(arm("A", 10.0), arm("B", 9.5), 4)
    assert calls == ["A", "B", "A", "B", "B", "A", "A", "B", "B", "A"]  # warm-up, then A B, B A, A B, B A
    assert paired_values(rounds) == {("decode_tok_s", "{}"): ([10.0] * 4, [9.5] * 4)}


def test_job_arm_runs_the_base_commit_and_the_working_tree_side_by_side(tmp_path):
    """A real job (tiny random model, latency) run by the worker of a git worktree of HEAD (A) and by this tree
    (B), one interleaved pair: both give decode tok/s for the same key."""
    from slmbench.executors.interleave import interleave, job_arm, paired_values, remove_worktree, worktree
    from slmbench.plan import Job, ModelSpec, RunSettings, Variant
    from conftest import REPO
    job = Job("t", ModelSpec(**TINY_MODEL), Variant(), "local-cpu", 1, "latency",
              {"prompt_tokens": 8, "gen_tokens": 4}, RunSettings(warmup=0, repetitions=2, min_duration_s=0), 0)
    wt = worktree(REPO, "HEAD", tmp_path / "base")
    try:
        assert (wt / "slmbench" / "__init__.py").is_file()
        pairs = paired_values(interleave(job_arm(job, wt), job_arm(job), 1, warmup=False))
    finally:
        remove_worktree(REPO, wt)
    a, b = pairs[("decode_tok_s", "{}")]
    assert len(a) == len(b) == 1 and a[0] > 0 and b[0] > 0
