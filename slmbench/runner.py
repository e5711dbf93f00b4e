"""suite → plan → execute → store: the `slmbench run` pipeline.

Nothing already measured is ever lost: each finished job is committed before the next starts; ^C or SIGTERM kills
the running job and marks the run `interrupted`; after any stop (kill -9 included) `--resume` or the same
`--run-id` runs only the jobs with no final record. One process at a time may run a given run (a file lock).
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import sqlite3
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import manifest
from .errors import UserError
from .store import Store
from .plan import expand, load_suite, suite_sha

MIN_FREE_BYTES = 200 * 2**20  # logs + rows of a long suite; SLMBENCH_MIN_FREE_MB overrides
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def min_free_bytes() -> int:
    env = os.environ.get("SLMBENCH_MIN_FREE_MB")
    try:
        return int(float(env) * 2**20) if env else MIN_FREE_BYTES
    except ValueError:
        raise UserError(f"expected a number of MiB, got {env!r}", field="SLMBENCH_MIN_FREE_MB")


def check_free(out: Path, when: str = "") -> None:
    need, free = min_free_bytes(), shutil.disk_usage(out).free
    if free < need:
        raise UserError(f"disk almost full: {free / 2**20:.0f} MiB free, need {need / 2**20:.0f} MiB{when}",
                        file=str(out), field="--out")


def preflight(out: Path) -> None:
    """A read-only or full results directory is reported before any work, not after an hour."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"x" * 4096)
        probe.unlink()
        db = out / "results.sqlite"
        if db.exists() and not os.access(db, os.W_OK):
            raise UserError("results store is read-only", file=str(db), field="--out")
    except OSError as e:
        raise UserError(f"results directory is not writable: {e.strerror or e}", file=str(out), field="--out")
    check_free(out)


@contextmanager
def _run_lock(out: Path, run_id: str):
    """One process per run: a second `--resume` of a run still executing is refused (the lock dies with us)."""
    f = open(out / f".run-{run_id}.lock", "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UserError(f"run {run_id!r} is being executed by another slmbench process", file=str(out),
                        field="--run-id")
    try:
        yield
    finally:
        f.close()


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (a CI timeout, `kill`) stops a run the way ^C does: running job killed, run marked interrupted."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run_suite(suite_path: str, out: Path, run_id: str | None = None, resume: bool = False,
              console: Console | None = None, executor: str = "local", force: bool = False,
              address: str | None = None, quick: bool = False) -> str:
    """Run (or resume) a suite. `force` resumes a run even though its suite file changed since it started.
    `executor`: local | ray (slmbench.executors); `address`: the Ray cluster (none: a local one)."""
    console = console or Console(stderr=True)
    if run_id is not None and not RUN_ID.match(run_id):  # it names files: no paths
        raise UserError(f"expected letters, digits, '_', '.', '-' (at most 100, not starting with '.' or '-'), "
                        f"got {run_id!r}", field="--run-id")
    suite = load_suite(suite_path, quick=quick)
    jobs = expand(suite, Path(suite_path).resolve().parent)
    out = Path(out)
    preflight(out)
    store = Store(out)
    if resume and not run_id:
        run_id = store.latest_run(suite.name)
        if not run_id:
            raise UserError(f"nothing to resume: no earlier run of suite {suite.name!r} in the store",
                            file=str(store.path), field="--resume")
    run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    sha = suite_sha(suite_path, quick)
    _check_same_suite(store.run_meta(run_id), suite.name, sha, suite_path, force)
    from .executors import make_executor
    ex = make_executor(executor, address, jobs)  # checks the choice (Ray installed?) before any work
    with _run_lock(out, run_id), _sigterm_as_interrupt():
        threads = {j.variant.threads or j.device_threads for j in jobs}
        store.start_run(run_id, suite.name, str(suite_path), sha,
                        manifest.build(suite.seed, sorted(t or 0 for t in threads)))
        try:
            _execute(store, run_id, suite, jobs, out, console, ex)
        except BaseException:  # ^C, SIGTERM, disk full: what finished is committed; say the run stopped
            try:
                store.finish_run(run_id, "interrupted")
            except sqlite3.Error:
                pass
            raise
        finally:
            store.close()
    return run_id


def _check_same_suite(meta: dict | None, name: str, sha: str, suite_path: str, force: bool) -> None:
    """Resuming must not mix two different suites' results under one run id."""
    if meta is None:
        return
    if meta["suite"] != name:
        raise UserError(f"run {meta['run_id']!r} belongs to suite {meta['suite']!r}, not {name!r}",
                        file=suite_path, field="--run-id")
    if meta["suite_sha"] != sha and not force:
        raise UserError(f"suite file changed since run {meta['run_id']!r} started (sha {meta['suite_sha']} → {sha});"
                        " start a new run, or pass --force to resume anyway", file=suite_path, field="--resume")


def _execute(store: Store, run_id: str, suite, jobs: list, out: Path, console: Console, ex=None) -> None:
    done = store.done_jobs(run_id)
    todo = [j for j in jobs if j.key not in done]
    console.print(f"[bold]run[/] {run_id}: suite [cyan]{suite.name}[/], {len(jobs)} jobs"
                  + (f", {len(jobs) - len(todo)} already done" if done else "") + f" → {store.path}")
    from .executors import make_executor
    ex = ex or make_executor("local")
    if ex.name == "local":  # a remote node measures (and caches) its own bandwidth in its first job
        _ensure_bandwidth(todo, console)
    log_dir = out / "logs" / run_id
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as prog:
        task = prog.add_task("jobs", total=len(todo))

        def starting(i, job):
            check_free(out, f" — stopped before job {i + 1}/{len(todo)}; finished jobs are kept, free space and "
                            "run again with --resume")
            prog.update(task, description=f"[cyan]{job.label}")

        with ex:  # results are recorded as each job finishes, in whatever order the executor yields them
            for job, started, (status, error, metrics, info) in ex.run(todo, log_dir, starting):
                _record(store, run_id, job, status, error, metrics, started, info)
                if status != "ok":
                    prog.console.print(f"  [red]{status}[/] {job.label}: {error}")
                prog.advance(task)
    store.finish_run(run_id, "finished")


def _record(store: Store, run_id: str, job, status, error, metrics, started, info) -> None:
    try:
        store.record_job(run_id, job, status, error, metrics, started, info)
    except sqlite3.IntegrityError as e:  # a scenario emitted the same metric twice: the job is wrong, not the run
        store.record_job(run_id, job, "crashed", f"scenario returned duplicate metric rows ({e})", [], started, info)
    except sqlite3.OperationalError as e:  # disk full, store locked or made read-only mid-run: stop, say so
        raise UserError(f"cannot record job {job.key} ({e}); finished jobs are kept, fix this and run again with "
                        "--resume", file=str(store.path))


def _ensure_bandwidth(jobs, console) -> None:
    """Measure memory bandwidth once per machine and thread count (cached), in its own process, before any job."""
    from .adapters import load_profile
    from .adapters.bandwidth import cached, ensure
    from .scenarios import get as load_scenario
    for j in jobs:
        prof = load_profile(j.device)
        if not load_scenario(j.scenario).needs_engine:  # e.g. fault injection: no roofline to compute
            continue
        if prof.adapter != "cpu":
            continue
        threads = j.variant.threads or j.device_threads or prof.cores or len(os.sched_getaffinity(0))
        if not cached(threads):
            console.print(f"measuring memory read bandwidth ({threads} threads, once per machine)…")
            bw = ensure(threads)
            if bw:
                console.print(f"  {bw['gbs']:.1f} GB/s ({bw['method']})")
