"""Where one job's process runs: here (executors/local.py), or on the device itself when its profile says
`adapter: ssh` (executors/ssh.py), or a phone over adb (executors/adb.py). Both the local and the Ray executor
place jobs through this one function."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..contracts import load_profile
from ..contracts.result import JobResult


def run_one(job, log_dir: Path, progress: Callable[[str], None] | None = None) -> JobResult:
    profile = load_profile(job.device)
    if profile.adapter == "ssh":  # measured on the device itself: the job runs there
        from .ssh import run_job_ssh
        return run_job_ssh(job, profile, log_dir, progress or (lambda msg: None))
    if profile.adapter == "adb":  # a phone: llama.cpp's own tools run there over adb
        from .adb import run_job_adb
        return run_job_adb(job, profile, log_dir, progress or (lambda msg: None))
    from .local import run_job_process
    return run_job_process(job, log_dir, progress)
