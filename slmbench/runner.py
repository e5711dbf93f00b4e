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
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from . import manifest
from .contracts.result import JobResult
from .log import get as get_logger
from .errors import UserError
from .store import Store
from .plan import load_suite, plan, suite_sha

log = get_logger("run")
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
    planned = plan(suite, Path(suite_path).resolve().parent)
    jobs = planned.jobs
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
    ex = make_executor(executor, address, [j for j in jobs if not j.unsupported])  # checks the choice up front
    with _run_lock(out, run_id), _sigterm_as_interrupt():
        threads = {j.variant.threads or j.device_threads for j in jobs}
        store.start_run(run_id, suite.name, str(suite_path), sha,
                        {**manifest.collect(suite.seed, sorted(t or 0 for t in threads)), "executor": executor,
                         "address": address, "plan": planned.summary(), "not_planned": planned.skipped})
        try:
            _execute(store, run_id, suite, jobs, out, console, ex, planned.summary())
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


def _execute(store: Store, run_id: str, suite, jobs: list, out: Path, console: Console, ex=None,
             summary: str = "") -> None:
    done = store.done_jobs(run_id)
    todo = [j for j in jobs if j.key not in done]
    log.info(f"[bold]run[/] {run_id}: suite [cyan]{escape(suite.name)}[/], {escape(summary or f'{len(jobs)} jobs')}"
             + (f", {len(jobs) - len(todo)} already done" if done else "") + f" → {store.path}")
    for job in [j for j in todo if j.unsupported]:  # decided at planning: recorded without starting a process
        _record(store, run_id, job, JobResult("unsupported", job.unsupported), time.time())
        log.info(f"  [yellow]unsupported[/] {escape(job.label)}: {escape(job.unsupported)}")
    todo = [j for j in todo if not j.unsupported]
    from .executors import make_executor
    from .executors.bandwidth import ensure_bandwidth
    ex = ex or make_executor("local")
    if ex.name == "local":  # a remote node measures (and caches) its own bandwidth in its first job
        ensure_bandwidth(todo, log.info)
    with _JobProgress(console, len(todo)) as shown:
        def starting(i, job):
            check_free(out, f" — stopped before job {i + 1}/{len(todo)}; finished jobs are kept, free space and "
                            "run again with --resume")
            shown.start(i, job)

        with ex:  # results are recorded as each job finishes, in whatever order the executor yields them
            for job, started, res in ex.run(todo, out / "logs" / run_id, starting, shown.progress):
                _record(store, run_id, job, res, started)
                shown.finish(job, res, time.time() - started)
    store.finish_run(run_id, "finished")


class _JobProgress:
    """A live bar on a terminal; elsewhere (CI logs, nohup) one plain line per job start and finish."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.n = console, total, 0
        self.live = console.is_terminal
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=False) if self.live else None

    def __enter__(self):
        if self.bar:
            self.bar.__enter__()
            self.task = self.bar.add_task("jobs", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.bar:
            self.bar.__exit__(*exc)

    def start(self, i: int, job) -> None:
        if self.bar:
            self.bar.update(self.task, description=f"[cyan]{escape(job.label)}")
        else:
            log.info(f"[{i + 1}/{self.total}] start {escape(job.label)}")

    def progress(self, job, msg: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=f"[cyan]{escape(job.label)}[/] [dim]{escape(msg)}")

    def finish(self, job, res: JobResult, wall_s: float) -> None:
        self.n += 1
        why = f": {escape(res.error or '')}" if res.status != "ok" else ""
        color = "green" if res.status == "ok" else "red"
        line = f"[{self.n}/{self.total}] [{color}]{res.status}[/] {escape(job.label)} ({wall_s:.1f} s){why}"
        if self.bar:
            if res.status != "ok":
                self.bar.console.print("  " + line)
            self.bar.advance(self.task)
        else:
            log.info(line)


def _record(store: Store, run_id: str, job, res: JobResult, started: float) -> None:
    try:
        store.record_job(run_id, job, res.status, res.error, res.metrics, started, res.info)
    except sqlite3.IntegrityError as e:  # a scenario emitted the same metric twice: the job is wrong, not the run
        store.record_job(run_id, job, "crashed", f"scenario returned duplicate metric rows ({e})", [], started,
                         res.info)
    except sqlite3.OperationalError as e:  # disk full, store locked or made read-only mid-run: stop, say so
        raise UserError(f"cannot record job {job.key} ({e}); finished jobs are kept, fix this and run again with "
                        "--resume", file=str(store.path))


def rerun_jobs(store: Store, run_id: str, suite: str, jobs: list, out: Path, executor: str = "local",
               address: str | None = None, rerun_of: str | None = None, console: Console | None = None) -> list:
    """Execute `jobs` once more as run `run_id` (suite `suite`) through the executor the original run used, so a
    job for a remote device runs on that device again, not here under its name. Jobs already final in `run_id` are
    kept (a report rendered again reuses its rerun). Returns (job, status, error, metrics, info) per job executed."""
    done = store.done_jobs(run_id)
    todo = [j for j in jobs if j.key not in done]
    if not todo:
        return []
    from .executors import make_executor
    ex = make_executor(executor, address, todo)
    threads = sorted({j.variant.threads or j.device_threads or 0 for j in todo})
    store.start_run(run_id, suite, "", "", {**manifest.collect(todo[0].seed, threads), "rerun_of": rerun_of,
                                            "executor": executor, "address": address})
    say = (lambda i, job: console.print(f"rerunning suspect: {job.label}", markup=False)) if console else \
        (lambda i, job: None)
    results = []
    try:
        with _run_lock(Path(out), run_id), ex:
            for job, started, res in ex.run(todo, Path(out) / "logs" / run_id, say):
                _record(store, run_id, job, res, started)
                results.append((job, res.status, res.error, res.metrics, res.info))
    except BaseException:  # what finished is committed; say the rerun stopped
        store.finish_run(run_id, "interrupted")
        raise
    store.finish_run(run_id, "finished")
    return results
