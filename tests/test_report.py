"""Store lookups, the one formatter / table renderer / page shell, report sections, and the compare pipeline
(analysis decides, the runner reruns through the run's executor, analysis decides again) on synthetic rows."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import run_cli
from slmbench import fmt
from slmbench.errors import UserError
from slmbench.store import Store


class FakeJob:
    """Just what Store.record_job and runner.rerun_jobs read from a plan Job."""

    def __init__(self, key, device="local-cpu", scenario="latency", model="m", variant=None):
        self.key, self.device, self.scenario, self.suite = key, device, scenario, "s"
        self.model = SimpleNamespace(name=model)
        self.variant = SimpleNamespace(threads=None, **(variant or {}))
        self._variant = {"backend": "torch", "dtype": "fp32", "quantization": "none", **(variant or {})}
        self.params, self.device_threads, self.seed = {"prompt_tokens": 8}, None, 0
        self.label = f"{model} @{device} {scenario}"

    def variant_dump(self):
        return self._variant

    def to_json(self):
        return {"key": self.key, "device": self.device}


def metric(name, value, unit="tok/s", samples=None, hib=True):
    return {"name": name, "value": value, "unit": unit, "n": len(samples or [1]), "samples": samples,
            "higher_is_better": hib}


def put_run(st, run_id, suite="s", jobs=(), created=None, info=None):
    st.start_run(run_id, suite, "", "sha", {"git": {"commit": run_id}})
    for job, metrics in jobs:
        st.record_job(run_id, job, "ok", None, metrics, 0.0, info or {"threads": 2})
    st.finish_run(run_id, "finished")
    if created is not None:  # the order of nights, without sleeping
        st.db.execute("UPDATE runs SET created=? WHERE run_id=?", (created, run_id))


def test_store_lookups(tmp_path):
    st = Store(tmp_path)
    j = FakeJob("j1")
    for i, rid in enumerate(["a", "b", "c"]):
        put_run(st, rid, jobs=[(j, [metric("decode_tok_s", 10.0 + i)])], created=100.0 + i)
    put_run(st, "c-rerun", suite="s~rerun", jobs=[(j, [metric("decode_tok_s", 12.0)])], created=103.0)
    assert st.resolve("last") == "c" and st.resolve("prev") == "b"  # a rerun run is never picked by name
    assert st.resolve("last", suite="s", before="c") == "b"
    with pytest.raises(UserError, match="no run 'zz'"):
        st.resolve("zz")
    st.check_ref("last", "BASE")
    with pytest.raises(UserError):
        st.check_ref("nope", "BASE")
    assert list(st.rows(["a", "c"])["value"]) == [10.0, 12.0] and len(st.rows()) == 4
    assert st.job_info("a") == {"j1": {"threads": 2}}
    assert st.job_specs("a", ["j1"]) == {"j1": (j.label, {"key": "j1", "device": "local-cpu"})}
    assert list(st.suite_runs("s", upto="b")["run_id"]) == ["a", "b"]
    # where a run's jobs ran is recorded when it starts (runner.run_suite); a resume keeps the first record
    st.start_run("r", "s", "", "sha", {"executor": "ray", "address": "head:6379"})
    st.start_run("r", "s", "", "sha", {"executor": "local", "address": None})
    assert st.manifest("r")["executor"] == "ray" and st.manifest("r")["address"] == "head:6379"


def test_one_formatter():
    assert fmt.num(1234.5) == "1,234" and fmt.num(12.34) == "12.3" and fmt.num(0.1234) == "0.123"
    assert fmt.num(None) == "n/a" and fmt.num(math.nan, none="—") == "—" and fmt.num(0) == "0"
    assert fmt.with_spread(12.34, 0.567) == "12.3 ± 0.57" and fmt.with_spread(12.34, 0) == "12.3"
    assert fmt.pct(-0.031) == "-3.1%" and fmt.p_value(0.00123) == "0.0012" and fmt.money(0.5) == "$0.5"
    assert fmt.sig(0.0001234) == "1.234e-04" and fmt.fixed(None, ".1f") == "—" and fmt.fixed(0.5, ".0%") == "50%"
    from slmbench.metrics import Metric
    assert Metric("x", 12.34, "ms", spread=0.5).render() == "12.3 ± 0.5 ms"


def test_tables_escape_and_page_shell():
    from slmbench.report.html import page
    from slmbench.report.tables import html_table, md_table
    md = md_table(["a|b"], [["<x>|`y`"]])
    assert "<x>" not in md and "\\|" in md and "\\`" in md
    h = html_table(["h"], [["<b>", "<a href='#r'>ok</a>"]], raw_cols={1}, row_attrs=[{"id": "r'1"}])
    assert "&lt;b&gt;" in h and "<a href='#r'>ok</a>" in h and "id='r&#x27;1'" in h
    p = page("t<i>", "<p>x</p>")
    assert p.startswith("<!doctype html>") and "<title>t&lt;i&gt;</title>" in p


def _endpoint_rows() -> pd.DataFrame:
    from slmbench.store import ROW_COLS
    out = []
    for dev, scen, m, v in (("local-cpu", "latency", "decode_tok_s", 50.0), ("cloud-local", "serving",
                                                                            "decode_tok_s", 40.0)):
        r = dict.fromkeys(ROW_COLS)
        r.update(run_id="r", job_id=dev, model="m", device=dev, scenario=scen, metric=m, value=v, status="ok",
                 source="measured", labels="{}", note="", params="{}", unit="tok/s",
                 variant=json.dumps({"backend": "torch", "dtype": "fp32", "quantization": "none"}))
        out.append(r)
    return pd.DataFrame(out)


def test_cost_section_appears_once_with_or_without_the_flag():
    """A run that measured an endpoint carries the cost section; `--cost` must not add it a second time."""
    from slmbench.report import render
    from slmbench.report.section import Section
    df = _endpoint_rows()
    for cost in (False, True):
        assert render.to_markdown(df, "r", {}, {}, cost=cost).count("## Cloud vs device: cost per token") == 1
        assert render.to_html(df, "r", {}, {}, cost=cost).count("<h2>Cloud vs device: cost per token</h2>") == 1
        assert "cost" in json.loads(render.to_json(df, "r", {}, {}, cost=cost))
    assert all(isinstance(s, Section) for s in render.sections(df, cost=True))
    no_endpoint = df[df["device"] == "local-cpu"]
    assert "Cloud vs device" not in render.to_markdown(no_endpoint, "r", {})
    assert "Cloud vs device" in render.to_markdown(no_endpoint, "r", {}, cost=True)


def test_report_cost_command_prints_the_section_once(tmp_path):
    st = Store(tmp_path)
    put_run(st, "r1", jobs=[(FakeJob("j1"), [metric("decode_tok_s", 50.0)]),
                            (FakeJob("j2", device="cloud-local", scenario="serving"), [metric("decode_tok_s", 40.0)])])
    st.close()
    for fmt_ in ("md", "html"):
        rc, out, err = run_cli("report", "--out", tmp_path, "--cost", "--format", fmt_)
        assert rc == 0, err
        assert out.count("Cloud vs device: cost per token") == 1, fmt_


def _cmp_rows(run_id: str, centre: float) -> pd.DataFrame:
    from slmbench.store import ROW_COLS
    samples = [centre * (1 + 0.001 * k) for k in range(10)]
    r = dict.fromkeys(ROW_COLS)
    r.update(run_id=run_id, job_id="j1", model="m", device="local-cpu", scenario="latency", metric="decode_tok_s",
             value=centre, status="ok", source="measured", labels="{}", params="{}", unit="tok/s", n=10,
             higher_is_better=1, variant='{"backend": "torch"}', samples=json.dumps(samples))
    return pd.DataFrame([r])


def test_compare_suspects_and_confirm_are_pure():
    from slmbench.analysis import regression as reg
    from slmbench.regression_rules import merge_rules
    rules = merge_rules({})
    base = _cmp_rows("b", 100.0)
    cmp = reg.compare("b", "n", base, _cmp_rows("n", 80.0), rules, ("s", "s"), ({}, {}))
    assert [v.verdict for v in cmp.verdicts] == ["regressed"] and reg.suspects(cmp) == ["j1"]
    reg.confirm(cmp, "n-rerun", base, _cmp_rows("n-rerun", 99.9), rules)  # the rerun is back to normal
    v = cmp.verdicts[0]
    assert not v.confirmed and "not reproduced" in v.reason and reg.exit_code(cmp) == 0
    cmp = reg.compare("b", "n", base, _cmp_rows("n", 80.0), rules, ("s", "s"), ({}, {}))
    reg.confirm(cmp, "n-rerun", base, _cmp_rows("n-rerun", 80.5), rules)
    assert cmp.verdicts[0].confirmed and reg.exit_code(cmp) == 1


def test_trends_find_the_step():
    from slmbench.analysis.trends import detect
    from slmbench.regression_rules import merge_rules
    ids = [f"r{i}" for i in range(8)]
    runs = pd.DataFrame({"run_id": ids, "created": [float(i) for i in range(8)]})
    rows = pd.concat([_cmp_rows(r, 100.0 if i < 5 else 80.0) for i, r in enumerate(ids)], ignore_index=True)
    (t,) = detect(runs, rows, {r: f"c{r}" for r in ids}, merge_rules({}))
    (s,) = t.steps
    assert s.run_id == "r5" and s.verdict == "regressed" and s.commits == ("cr4", "cr5") and s.nights_after == 3


def test_suspects_rerun_through_the_executor_the_run_used(tmp_path, monkeypatch):
    """A Ray run's suspects go back to Ray (same address), not to a local process under the remote device's name."""
    from slmbench import executors, runner
    seen = {}

    class FakeExecutor:
        def __init__(self, name, address):
            seen.update(name=name, address=address)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, jobs, log_dir, starting=lambda i, j: None, progress=lambda job, msg: None):
            from slmbench.contracts import JobResult
            for i, job in enumerate(jobs):
                starting(i, job)
                yield job, 0.0, JobResult("ok", None, [metric("decode_tok_s", 50.0)], {"threads": 4})

    monkeypatch.setattr(executors, "make_executor", lambda name, address=None, jobs=None: FakeExecutor(name, address))
    st = Store(tmp_path)
    job = FakeJob("j1", device="remote-gpu")
    res = runner.rerun_jobs(st, "n-rerun", "s~rerun", [job], tmp_path, "ray", "head:6379", rerun_of="n")
    assert seen == {"name": "ray", "address": "head:6379"} and [r[1] for r in res] == ["ok"]
    man = st.manifest("n-rerun")
    assert man["rerun_of"] == "n" and man["executor"] == "ray" and st.job_info("n-rerun")["j1"] == {"threads": 4}
    assert runner.rerun_jobs(st, "n-rerun", "s~rerun", [job], tmp_path, "ray", "head:6379") == []  # kept, not redone
