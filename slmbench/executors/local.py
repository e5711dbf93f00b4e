"""Local executor: one fresh Python process per job, with a wall-clock timeout and an optional memory cap.

The parent only waits: it polls the child's RSS twice a second when a memory cap is set (one /proc read), and
otherwise sleeps in wait(). Nothing of ours runs on the cores while the child measures."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

POLL_S = 0.5


def run_job_process(job, log_dir: Path) -> tuple[str, str | None, list[dict], dict]:
    """Returns (status, error, metrics, info). Never raises for a job's own failure."""
    import psutil
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="slmbench-job-") as tmp:
        jf, rf = Path(tmp) / "job.json", Path(tmp) / "result.json"
        jf.write_text(json.dumps(job.to_json(), default=str))
        log = open(log_dir / f"{job.key}.log", "wb")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "slmbench.executors.worker", str(jf), str(rf)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        limit = job.settings.memory_limit_gb * 1e9 if job.settings.memory_limit_gb else None
        deadline = time.monotonic() + job.settings.timeout_s
        status = error = None
        peak = 0
        while True:
            try:
                rc = proc.wait(timeout=POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            if limit:
                try:
                    rss = sum(p.memory_info().rss for p in [psutil.Process(proc.pid)] +
                              psutil.Process(proc.pid).children(recursive=True))
                    peak = max(peak, rss)
                except psutil.Error:
                    rss = 0
                if rss > limit:
                    _kill(proc)
                    status, error = "oom", (f"resident memory {rss / 1e9:.2f} GB exceeded the job's cap of "
                                            f"{limit / 1e9:.2f} GB (settings.memory_limit_gb)")
                    break
            if time.monotonic() > deadline:
                _kill(proc)
                status, error = "timeout", f"no result after {job.settings.timeout_s:g} s (settings.timeout_s)"
                break
        log.close()
        if status:
            return status, error, [], {}
        if rf.is_file():
            res = json.loads(rf.read_text())
            return res["status"], res["error"], res["metrics"], res.get("info", {})
        tail = _tail(log_dir / f"{job.key}.log")
        if rc < 0:
            sig = signal.Signals(-rc).name
            st = "oom" if sig == "SIGKILL" else "crashed"
            return st, f"process killed by {sig}" + (" (likely the kernel OOM killer)" if st == "oom" else "") + \
                (f": {tail}" if tail else ""), [], {}
        return "crashed", f"process exited with code {rc} and no result" + (f": {tail}" if tail else ""), [], {}


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        return lines[-1][:300] if lines else ""
    except OSError:
        return ""
