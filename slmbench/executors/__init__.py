"""Executors: where and how jobs run. The runner hands an executor the jobs still to do and records each result in
its store as the executor yields it; an executor never touches the store.

    local  one fresh process per job on this machine, one job at a time (executors/local.py); a job on an
           `adapter: ssh` device runs the same way on that device, over SSH (executors/ssh.py)
    ray    the same per-job process, placed by Ray on a node that advertises the job's device (executors/ray.py)

An executor is a context manager (it owns its cluster connection, if any) with one method:

    run(jobs, log_dir, starting, progress) -> iterator of (job, started, JobResult), in finishing order

`starting(i, job)` is called before the i-th job is started or submitted (the runner checks free space and shows
progress there); `progress(job, msg)` relays a running job's own progress lines, where the executor can. Every job
given is yielded exactly once, finished or failed — never silently dropped.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator

from ..errors import UserError

EXECUTORS = ("local", "ray")


class LocalExecutor:
    name = "local"

    def __init__(self, address: str | None = None, jobs: list | None = None):
        if address:
            raise UserError("--address is for --executor ray (a Ray cluster); the local executor runs here",
                            field="--address")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def run(self, jobs: list, log_dir: Path, starting: Callable = lambda i, job: None,
            progress: Callable = lambda job, msg: None) -> Iterator[tuple]:
        from .place import run_one
        for i, job in enumerate(jobs):
            starting(i, job)
            started = time.time()
            yield job, started, run_one(job, log_dir, lambda msg, job=job: progress(job, msg))


def make_executor(name: str, address: str | None = None, jobs: list | None = None):
    """`jobs`: the whole plan, so an executor can check up front that it can place every one of them."""
    if name == "local":
        return LocalExecutor(address, jobs)
    if name == "ray":
        from .ray import RayExecutor, require_ray
        require_ray()
        return RayExecutor(address, jobs)
    raise UserError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})", field="--executor")
