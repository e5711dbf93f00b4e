"""Reliability on real processes: jobs that segfault, raise, hang, blow their memory cap or exit are recorded and the
suite goes on; a run killed with SIGKILL resumes with no duplicate and no lost row; SIGTERM marks a run interrupted;
changed suites, busy runs, full or read-only result dirs and unrequested remote code are refused clearly."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import FAST, REPO, TINY_MODEL, cli_env, run_cli, tiny_suite

PLAIN_MODEL = str(Path(__file__).resolve().parent / "bad_inputs" / "plain_model")  # validates without transformers


def _q(out: Path, sql: str, *args):
    db = sqlite3.connect(out / "results.sqlite", timeout=30)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _fault_suite(tmp_path, kinds, name="faults", **settings):
    return tiny_suite(tmp_path, name=name, settings={**FAST, **settings},
                      models=[{"name": "plain", "source": "hf", "path": PLAIN_MODEL}],
                      scenarios=[{"name": "fault", "params": {"message": "<script>alert(1)</script> boom"},
                                  "sweep": {"kind": kinds}}])


def _start(args, tmp_path) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "slmbench.cli", *map(str, args)], cwd=REPO, env=cli_env(),
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    return proc, log


def _workers(pid: int) -> list[psutil.Process]:
    try:
        return [c for c in psutil.Process(pid).children(recursive=True)
                if "slmbench.executors.worker" in " ".join(c.cmdline())]
    except psutil.Error:
        return []


def _wait_for(cond, timeout=180, what=""):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_crash_hang_oom_jobs_are_recorded_and_the_suite_goes_on(tmp_path):
    kinds = ["segfault", "raise", "hang", "alloc", "exit", "ok"]
    # 15 s: past a job process's start-up (torch and the plugin registries) on 2 busy cores, so only `hang` times out
    suite = _fault_suite(tmp_path, kinds, timeout_s=15, memory_limit_gb=0.4)
    out = tmp_path / "out"
    t0 = time.monotonic()
    rc, _, err = run_cli("run", suite, "--out", out, "--run-id", "faults")
    total = time.monotonic() - t0
    assert rc == 0, err
    jobs = _q(out, "SELECT spec, status, error, wall_s FROM jobs WHERE run_id='faults' ORDER BY started")
    got = {json.loads(s)["params"]["kind"]: (st, e, w) for s, st, e, w in jobs}
    assert list(got) == kinds  # in order: every fault was followed by the next job
    expect = {"segfault": ("crashed", "process killed by SIGSEGV"), "raise": ("crashed", "RuntimeError: <script>"),
              "hang": ("timeout", "no result after 15 s (settings.timeout_s)"),
              "alloc": ("oom", "exceeded the job's cap of 0.40 GB (settings.memory_limit_gb)"),
              "exit": ("crashed", "process exited with code 3 and no result"), "ok": ("ok", None)}
    for k, (status, frag) in expect.items():
        st, e, w = got[k]
        assert st == status and (frag is None and e is None or frag in e), (k, st, e)
        print(f"fault {k:8s} -> {st:8s} after {w:5.2f} s: {e}")
    print(f"suite of {len(kinds)} fault jobs: {total:.1f} s")
    # A failed job leaves one 'job' row with no value: nothing that looks like a measurement.
    rows = _q(out, "SELECT params, metric, value, status FROM results WHERE run_id='faults'")
    for p, metric, value, status in rows:
        kind = json.loads(p)["kind"]
        assert status == expect[kind][0]
        assert (metric, value) == ("job", None) if kind != "ok" else metric == "fault_ok_s" and value >= 0
    assert len(rows) == len(kinds)
    # Strings that reach the HTML report (a job's error message here) are escaped.
    rc, html_text, err = run_cli("report", "--out", out, "--run", "faults", "--format", "html")
    assert rc == 0, err
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text and "<script>alert" not in html_text


def test_kill_9_mid_run_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    suite = tiny_suite(tmp_path, name="killresume",
                       scenarios=[{"name": "latency", "params": {"gen_tokens": 4},
                                   "sweep": {"prompt_tokens": [8, 12, 16, 20, 24]}}])
    out = tmp_path / "out"
    proc, log = _start(["run", suite, "--out", out, "--run-id", "kr"], tmp_path)
    db = out / "results.sqlite"
    # Kill once two jobs are committed and the third job's process is running.
    def n_done():  # the file exists a moment before its schema does
        try:
            return db.is_file() and _q(out, "SELECT count(*) FROM jobs WHERE run_id='kr'")[0][0]
        except sqlite3.OperationalError:
            return 0
    _wait_for(lambda: (n_done() or 0) >= 2 and _workers(proc.pid), what="two jobs and a running third")
    orphans = _workers(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(orphans, timeout=15)
    assert not alive, f"job processes outlived the killed runner: {alive}"
    assert _q(out, "PRAGMA integrity_check") == [("ok",)]
    assert _q(out, "SELECT status FROM runs WHERE run_id='kr'") == [("running",)]
    key = "SELECT job_id, metric, labels, value FROM results WHERE run_id='kr'"
    before = _q(out, key)
    jobs_before = _q(out, "SELECT count(*) FROM jobs WHERE run_id='kr'")[0][0]

    rc, _, err = run_cli("run", suite, "--out", out, "--resume")
    assert rc == 0, err
    assert "already done" in err
    after = _q(out, key)
    ident = lambda rows: [r[:3] for r in rows]
    dups = len(ident(after)) - len(set(ident(after)))
    lost = len(set(before) - set(after))  # same key AND same value: finished jobs were not re-run
    jobs = _q(out, "SELECT job_id, status FROM jobs WHERE run_id='kr'")
    print(f"kill -9 after {jobs_before} of 5 jobs: rows before {len(before)}, after {len(after)}, "
          f"duplicates {dups}, lost {lost}; jobs {len(jobs)} (all ok: {all(s == 'ok' for _, s in jobs)})")
    assert dups == 0 and lost == 0
    assert set(before) <= set(after) and len(after) > len(before)
    assert len(jobs) == 5 == len({j for j, _ in jobs}) and all(s == "ok" for _, s in jobs)
    assert _q(out, "SELECT status FROM runs WHERE run_id='kr'") == [("finished",)]
    assert len({r[0] for r in after}) == 5


def test_sigterm_kills_the_job_and_marks_the_run_interrupted(tmp_path):
    suite = _fault_suite(tmp_path, ["hang", "ok"], name="term", timeout_s=120)
    out = tmp_path / "out"
    proc, log = _start(["run", suite, "--out", out, "--run-id", "term"], tmp_path)
    workers = _wait_for(lambda: _workers(proc.pid), what="the hanging job")
    # While it runs, the same run cannot be started a second time.
    rc, _, err = run_cli("run", suite, "--out", out, "--run-id", "term")
    assert rc == 2 and "being executed by another slmbench process" in err, err
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert _q(out, "SELECT status FROM runs WHERE run_id='term'") == [("interrupted",)]
    assert _q(out, "SELECT count(*) FROM jobs WHERE run_id='term'") == [(0,)]  # the killed job is not a result
    assert "interrupted" in log.read_text()


def test_resuming_a_changed_suite_is_refused_unless_forced(tmp_path):
    suite = _fault_suite(tmp_path, ["ok"], name="changed")
    out = tmp_path / "out"
    assert run_cli("run", suite, "--out", out, "--run-id", "cs")[0] == 0
    suite.write_text(suite.read_text() + "# edited after the run started\n")
    rc, _, err = run_cli("run", suite, "--out", out, "--resume")
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "suite file changed since run 'cs' started" in err and "--force" in err
    rc, _, err = run_cli("run", suite, "--out", out, "--resume", "--force")
    assert rc == 0, err
    assert _q(out, "SELECT count(*) FROM results WHERE run_id='cs'") == [(1,)]
    other = tiny_suite(tmp_path, "other.yaml", name="other", models=[{"name": "p", "source": "hf", "path": PLAIN_MODEL}],
                       scenarios=[{"name": "fault"}])
    rc, _, err = run_cli("run", other, "--out", out, "--run-id", "cs")
    assert rc == 2 and "belongs to suite 'changed'" in err


@pytest.mark.parametrize("opts,msg", [("size=1m", "disk almost full: 1 MiB free, need 200 MiB"),
                                      ("ro,size=1m", "results directory is not writable: Read-only file system")])
def test_full_or_read_only_results_dir_is_refused_before_any_work(tmp_path, opts, msg):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)],
                                                       capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        rc, _, err = run_cli("run", _fault_suite(tmp_path, ["ok"]), "--out", mnt / "out")
        assert rc == 2 and err.strip() == f"error: {mnt / 'out'}: --out: {msg}" or msg in err, err
        assert not (mnt / "out" / "logs").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def _custom_code_model(d: Path) -> None:
    """A real tiny model whose directory ships Python (auto_map); importing that Python leaves a marker file."""
    from slmbench.models.random_init import byte_tokenizer_dir, make_config
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_config(make_config(TINY_MODEL["config"])).save_pretrained(d)
    for f in byte_tokenizer_dir().iterdir():
        if f.is_file():
            shutil.copy(f, d / f.name)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(model_type="x-llama", architectures=["XLlamaForCausalLM"],
               auto_map={"AutoConfig": "configuration_x.XLlamaConfig",
                         "AutoModelForCausalLM": "modeling_x.XLlamaForCausalLM"})
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "configuration_x.py").write_text(
        "from transformers import LlamaConfig\n\nclass XLlamaConfig(LlamaConfig):\n    model_type = 'x-llama'\n")
    (d / "modeling_x.py").write_text(
        "import os, pathlib\nfrom transformers import LlamaForCausalLM\nfrom .configuration_x import XLlamaConfig\n"
        "pathlib.Path(os.environ['SLMBENCH_TEST_MARKER']).write_text('remote code ran')\n\n"
        "class XLlamaForCausalLM(LlamaForCausalLM):\n    config_class = XLlamaConfig\n")


def test_remote_code_runs_only_when_the_suite_opts_in(tmp_path, slm_env, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("SLMBENCH_TEST_MARKER", str(marker))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    model = tmp_path / "custom"
    _custom_code_model(model)
    entry = {"name": "custom", "source": "hf", "path": str(model)}
    rc, _, err = run_cli("validate", tiny_suite(tmp_path, models=[entry]))
    assert rc == 2 and "models[0].trust_remote_code" in err and "refused" in err, err
    # The backend itself refuses too (defence in depth): loading without the opt-in never imports the code.
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends.torch_hf import TorchEngine
    from slmbench.models import ModelFiles
    from slmbench.plan import Variant
    with pytest.raises(Exception, match="trust_remote_code"):
        TorchEngine.load(ModelFiles(hf_dir=model, tokenizer_dir=model), Variant(), make_adapter(load_profile("local-cpu")))
    assert not marker.exists()
    # Opted in: the suite validates, the job runs the model's own code and measures it.
    suite = tiny_suite(tmp_path, models=[{**entry, "trust_remote_code": True}], name="remote")
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out", "--run-id", "rc",
                         env={"SLMBENCH_TEST_MARKER": str(marker), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")})
    assert rc == 0, err
    assert marker.read_text() == "remote code ran"
    assert _q(tmp_path / "out", "SELECT status FROM jobs WHERE run_id='rc'") == [("ok",)]
