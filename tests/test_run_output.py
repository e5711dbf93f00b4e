"""What a user sees while a suite runs off a terminal (CI logs, nohup): one plain line per job start and finish;
progress printed inside a job reaches the runner; bad input found only inside a job is `error`, not `crashed`."""
from __future__ import annotations

import json
import sqlite3

from conftest import TINY_MODEL, run_cli, tiny_suite


def test_plain_lines_per_job_and_error_status(tmp_path):
    suite = tiny_suite(tmp_path, models=[TINY_MODEL], scenarios=[
        {"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}},
        {"name": "fault", "params": {"kind": "bad_input", "message": "corpus gone.txt not found"}}])
    rc, _, err = run_cli("run", suite, "--out", tmp_path / "out", "--run-id", "plain")
    assert rc == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("[")]
    assert lines[0].startswith("[1/2] start tiny[] @local-cpu latency"), err
    assert lines[1].startswith("[1/2] ok tiny[] @local-cpu latency") and lines[1].endswith(" s)"), err
    assert lines[2].startswith("[2/2] start tiny[] @local-cpu fault"), err
    assert lines[3].startswith("[2/2] error tiny[] @local-cpu fault") and "injected.yaml: fault: corpus gone" in lines[3]
    assert "[bold]" not in err and "[/]" not in err  # markup never reaches a plain log
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert dict(db.execute("SELECT scenario, status FROM (SELECT json_extract(spec, '$.scenario') AS scenario, "
                           "status FROM jobs)")) == {"latency": "ok", "fault": "error"}
    # results where analysts work: JSON objects (not JSON strings inside JSON), parquet for pandas
    rc, out, err = run_cli("results", "--out", tmp_path / "out", "--format", "json")
    rows = json.loads(out)
    assert rc == 0 and rows[0]["variant"]["backend"] == "torch" and rows[0]["params"]["prompt_tokens"] == 8
    assert any(r["value"] is None for r in rows)  # the failed job's row: null, not NaN
    rc, _, err = run_cli("results", "--out", tmp_path / "out", "--format", "parquet", "--output", tmp_path / "r.pq")
    import pandas as pd
    assert rc == 0 and len(pd.read_parquet(tmp_path / "r.pq")) == len(rows), err


def test_progress_lines_are_relayed_from_the_job_log(tmp_path):
    from slmbench.executors.local import _Relay
    from slmbench.log import PROGRESS
    log = tmp_path / "job.log"
    seen = []
    relay = _Relay(log, seen.append)
    relay.poll()  # no log yet: nothing, no error
    log.write_text(f"loading\n{PROGRESS}fetching model\nnoise\n{PROGRESS}rep 1\n{PROGRESS}rep")
    relay.poll()
    assert seen == ["rep 1"]  # the latest complete progress line of this poll; a partial line waits
    with open(log, "a") as f:
        f.write(" 2\n")
    relay.poll()
    assert seen == ["rep 1", "rep 2"]
