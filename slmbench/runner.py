"""suite → plan → execute → store: the `slmbench run` pipeline."""
from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import manifest
from .errors import UserError
from .store import Store
from .suite import expand, load_suite

MIN_FREE_BYTES = 200 * 2**20


def preflight(out: Path) -> None:
    """A read-only or full results directory is reported before any work, not after an hour."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
    except OSError as e:
        raise UserError(f"results directory is not writable: {e.strerror or e}", file=str(out), field="--out")
    free = shutil.disk_usage(out).free
    if free < MIN_FREE_BYTES:
        raise UserError(f"only {free / 2**20:.0f} MiB free (need {MIN_FREE_BYTES / 2**20:.0f} MiB)",
                        file=str(out), field="--out")


def run_suite(suite_path: str, out: Path, run_id: str | None = None, resume: bool = False,
              console: Console | None = None, executor: str = "local") -> str:
    console = console or Console(stderr=True)
    suite = load_suite(suite_path)
    jobs = expand(suite, Path(suite_path).resolve().parent)
    preflight(out)
    store = Store(out)
    if resume and not run_id:
        run_id = store.latest_run(suite.name)
        if not run_id:
            raise UserError("nothing to resume: no earlier run of this suite in the store", file=str(out),
                            field="--resume")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    sha = hashlib.sha256(Path(suite_path).read_bytes()).hexdigest()[:16]
    threads = {j.variant.threads or j.device_threads for j in jobs}
    store.start_run(run_id, suite.name, str(suite_path), sha, manifest.build(suite.seed, sorted(t or 0 for t in threads)))
    done = store.done_jobs(run_id)
    todo = [j for j in jobs if j.key not in done]
    console.print(f"[bold]run[/] {run_id}: suite [cyan]{suite.name}[/], {len(jobs)} jobs"
                  + (f", {len(jobs) - len(todo)} already done" if done else "") + f" → {store.path}")
    _ensure_bandwidth(jobs, console)
    from .executors.local import run_job_process
    log_dir = out / "logs" / run_id
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task("jobs", total=len(todo))
        for job in todo:
            prog.update(task, description=f"[cyan]{job.label}")
            started = time.time()
            status, error, metrics, info = run_job_process(job, log_dir)
            store.record_job(run_id, job, status, error, metrics, started, info)
            if status != "ok":
                prog.console.print(f"  [red]{status}[/] {job.label}: {error}")
            prog.advance(task)
    store.finish_run(run_id, "finished")
    store.close()
    return run_id


def _ensure_bandwidth(jobs, console) -> None:
    """Measure memory bandwidth once per machine and thread count (cached), in its own process, before any job."""
    from .adapters import load_profile
    from .adapters.bandwidth import cached, ensure
    for j in jobs:
        prof = load_profile(j.device)
        if prof.adapter != "cpu":
            continue
        threads = j.variant.threads or j.device_threads or prof.cores or len(os.sched_getaffinity(0))
        if not cached(threads):
            console.print(f"measuring memory read bandwidth ({threads} threads, once per machine)…")
            bw = ensure(threads)
            if bw:
                console.print(f"  {bw['gbs']:.1f} GB/s ({bw['method']})")
