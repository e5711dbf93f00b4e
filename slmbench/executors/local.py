"""Local executor: one fresh Python process per job, with a wall-clock timeout and a memory cap.

The parent only waits: every POLL_S it reads the child's RSS (one small /proc read) and checks the deadline.
Nothing of ours runs on the cores while the child measures. The child runs in its own session (a terminal's ^C
does not reach it directly) and dies with its parent (PR_SET_PDEATHSIG in the worker); if the parent is
interrupted, it kills the job's whole process group before it goes, so no job is ever left running orphaned.

A job's end is always one of: the result it wrote (ok / unsupported / crashed...), `timeout`, `oom` (over the cap,
MemoryError, or SIGKILLed the way the kernel's OOM killer does), or `crashed` (a signal or an exit without result).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..contracts.result import JobResult
from ..log import progress_of

POLL_S = 0.2
DEFAULT_MEMORY_FRACTION = 0.9  # cap when the suite sets none: keep the machine (and this parent) alive


def memory_cap_bytes(settings) -> int:
    import psutil
    if settings.memory_limit_gb:
        return int(settings.memory_limit_gb * 1e9)
    return int(psutil.virtual_memory().total * DEFAULT_MEMORY_FRACTION)


def run_job_process(job, log_dir: Path, progress: Callable[[str], None] | None = None) -> JobResult:
    """The job's result; never raises for a job's own failure. progress(msg): the job's own progress lines."""
    log_dir.mkdir(parents=True, exist_ok=True)
    limit = memory_cap_bytes(job.settings)
    info = {"limits": {"timeout_s": job.settings.timeout_s, "memory_cap_gb": round(limit / 1e9, 3)}}
    with tempfile.TemporaryDirectory(prefix="slmbench-job-") as tmp:
        jf, rf = Path(tmp) / "job.json", Path(tmp) / "result.json"
        jf.write_text(json.dumps(job.to_json(), default=str))
        log_path = log_dir / f"{job.key}.log"
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
               "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"), "PYTHONUNBUFFERED": "1",
               "SLMBENCH_PARENT_PID": str(os.getpid())}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "slmbench.executors.worker", str(jf), str(rf)],
                                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            try:
                relay = _Relay(log_path, progress) if progress else None
                status, error, peak = _watch(proc, limit, time.monotonic() + job.settings.timeout_s, job.settings,
                                             relay)
            finally:
                if proc.poll() is None:  # interrupted (^C, SIGTERM) or our own bug: never leave the job running
                    _kill(proc)
        info["peak_rss_mb_polled"] = round(peak / 1e6, 1)
        if status:
            return JobResult(status, error, [], info)
        rc = proc.returncode
        tail = _tail(log_path)
        if rf.is_file():
            try:
                return JobResult.from_dict(json.loads(rf.read_text())).with_info(**info)
            except (OSError, ValueError, KeyError, TypeError) as e:
                return JobResult("crashed", f"unreadable result file ({type(e).__name__}: {e})", [], info)
        why = f": {tail}" if tail else ""
        if rc < 0:
            sig = signal.Signals(-rc).name
            if sig == "SIGKILL":
                return JobResult("oom", f"process killed by SIGKILL (likely the kernel OOM killer){why}", [], info)
            return JobResult("crashed", f"process killed by {sig}{why}", [], info)
        return JobResult("crashed", f"process exited with code {rc} and no result{why}", [], info)


class _Relay:
    """The job's progress lines, read from its log where the last read stopped (one small read per poll)."""

    def __init__(self, path: Path, emit: Callable[[str], None]):
        self.path, self.emit, self.pos, self.part = path, emit, 0, b""

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read(1 << 16)
        except OSError:
            return
        self.pos += len(data)
        *lines, self.part = (self.part + data).split(b"\n")
        last = None
        for ln in lines:
            msg = progress_of(ln.decode("utf-8", "replace"))
            last = msg if msg is not None else last
        if last is not None:
            self.emit(last)


def _watch(proc, limit: int, deadline: float, settings, relay: _Relay | None = None):
    """Wait for the child; kill it at the deadline or over the memory cap. Returns (status, error, peak RSS)."""
    peak, polls = 0, 0
    while True:
        try:
            proc.wait(timeout=POLL_S)
            return None, None, peak
        except subprocess.TimeoutExpired:
            pass
        polls += 1
        if relay is not None:
            relay.poll()
        rss = _rss(proc.pid) + (_children_rss(proc.pid) if polls % 10 == 0 else 0)  # children: rare, costlier scan
        peak = max(peak, rss)
        if rss > limit:
            _kill(proc)
            src = "settings.memory_limit_gb" if settings.memory_limit_gb else \
                f"default: {DEFAULT_MEMORY_FRACTION:.0%} of RAM; set settings.memory_limit_gb"
            return "oom", f"resident memory {rss / 1e9:.2f} GB exceeded the job's cap of {limit / 1e9:.2f} GB ({src})", peak
        if time.monotonic() > deadline:
            _kill(proc)
            return "timeout", f"no result after {settings.timeout_s:g} s (settings.timeout_s)", peak


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        try:
            import psutil
            return psutil.Process(pid).memory_info().rss
        except Exception:  # gone, or no /proc and no psutil answer: nothing to add
            return 0


def _children_rss(pid: int) -> int:
    import psutil
    try:
        return sum(c.memory_info().rss for c in psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return 0


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole group: a job's own children die with it
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def _tail(path: Path) -> str:
    """The line that says why: a fatal-error line if the process wrote one, else its last line."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    for ln in lines:
        if ln.startswith("Fatal Python error"):
            return ln[:300]
    return lines[-1][:300] if lines else ""
