"""Results store: one SQLite file, tidy rows (one per run × job × metric), a manifest per run, raw samples kept.

Crash safety: WAL journal with synchronous=FULL; a job's status row and all its metric rows are written in one
transaction, so a run killed at any moment (kill -9 included) leaves either the whole job or none of it, and
UNIQUE (run_id, job_id, metric, labels) makes a duplicate row impossible. Resume skips jobs already final in the run.

Provenance: each job row carries the git commit and dirty flag of the code that ran it (the worker records them in
its info; a resumed run's jobs can differ), and each run the text of its suite file as it was at the start (so a
report can say what changed since, claims and margins included). Older stores gain these columns when opened.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd

from .contracts.result import FINAL  # a job with any other status is run again by --resume
from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, suite_sha TEXT, created REAL, finished REAL,
  status TEXT, manifest TEXT, suite_text TEXT);
CREATE TABLE IF NOT EXISTS jobs (
  run_id TEXT, job_id TEXT, label TEXT, spec TEXT, status TEXT, error TEXT, started REAL, finished REAL,
  wall_s REAL, info TEXT, git_commit TEXT, git_dirty INTEGER, PRIMARY KEY (run_id, job_id));
CREATE TABLE IF NOT EXISTS results (
  run_id TEXT, job_id TEXT, suite TEXT, model TEXT, variant TEXT, device TEXT, scenario TEXT, params TEXT,
  metric TEXT, labels TEXT, value REAL, unit TEXT, n INTEGER, spread REAL, spread_kind TEXT, source TEXT,
  higher_is_better INTEGER, status TEXT, error TEXT, note TEXT, samples TEXT,
  UNIQUE (run_id, job_id, metric, labels));
CREATE INDEX IF NOT EXISTS results_run ON results (run_id);
"""

ROW_COLS = ["run_id", "job_id", "suite", "model", "variant", "device", "scenario", "params", "metric", "labels",
            "value", "unit", "n", "spread", "spread_kind", "source", "higher_is_better", "status", "error", "note"]


def db_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / "results.sqlite"


class Store:
    def __init__(self, out_dir: str | Path):
        self.path = db_path(out_dir)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.DatabaseError as e:  # not a database, read-only, disk full: one clear line, not a traceback
            raise UserError(f"cannot open the results store: {e}", file=str(self.path))
        except OSError as e:
            raise UserError(f"cannot open the results store: {e.strerror or e}", file=str(self.path))

    def close(self):
        self.db.close()

    # Columns added since the first schema: (table, column, type). An older store gains them, NULL for old rows.
    ADDED = [("jobs", "git_commit", "TEXT"), ("jobs", "git_dirty", "INTEGER"), ("runs", "suite_text", "TEXT")]

    def _migrate(self) -> None:
        for table, col, typ in self.ADDED:
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            if col not in have:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col} {typ}")

    # --- writing --------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, suite: str, suite_path: str, suite_sha: str, manifest: dict) -> None:
        try:  # the suite as it was when the run started (claims, margins): a later edit is then visible
            text = Path(suite_path).read_text(encoding="utf-8") if suite_path else None
        except OSError:
            text = None
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO runs (run_id, suite, suite_path, suite_sha, created, finished, "
                            "status, manifest, suite_text) VALUES (?,?,?,?,?,?,?,?,?)",
                            (run_id, suite, suite_path, suite_sha, time.time(), None, "running",
                             json.dumps(manifest, default=str), text))
            self.db.execute("UPDATE runs SET status='running' WHERE run_id=?", (run_id,))

    def finish_run(self, run_id: str, status: str) -> None:
        with self._tx():
            self.db.execute("UPDATE runs SET finished=?, status=? WHERE run_id=?", (time.time(), status, run_id))

    def record_job(self, run_id: str, job, status: str, error: str | None, metrics: list[dict], started: float,
                   info: dict | None = None) -> None:
        """All of a job in one transaction. A failed job still gets one row (metric 'job') saying why."""
        finished = time.time()
        base = dict(run_id=run_id, job_id=job.key, suite=job.suite, model=job.model.name,
                    variant=json.dumps(job.variant_dump(), sort_keys=True), device=job.device,
                    scenario=job.scenario, params=json.dumps(job.params, sort_keys=True), status=status, error=error)
        rows = []
        for m in metrics:
            rows.append({**base, "metric": m["name"], "labels": json.dumps(m.get("labels") or {}, sort_keys=True),
                         "value": m["value"], "unit": m["unit"], "n": m.get("n", 1), "spread": m.get("spread"),
                         "spread_kind": m.get("spread_kind"), "source": m.get("source", "measured"),
                         "higher_is_better": m.get("higher_is_better"), "note": m.get("note", ""),
                         "samples": json.dumps(m.get("samples")) if m.get("samples") is not None else None})
        if status != "ok" or not rows:
            rows.append({**base, "metric": "job", "labels": "{}", "value": None, "unit": "", "n": 0, "spread": None,
                         "spread_kind": None, "source": "measured", "higher_is_better": None,
                         "note": f"job {status}", "samples": None})
        cols = ROW_COLS + ["samples"]
        with self._tx():
            self.db.execute("DELETE FROM results WHERE run_id=? AND job_id=?", (run_id, job.key))
            self.db.executemany(f"INSERT INTO results ({','.join(cols)}) VALUES ({','.join('?' * len(cols))})",
                                [tuple(r[c] for c in cols) for r in rows])
            code = (info or {}).get("code") or {}  # the worker's git_commit(): the code that ran this job
            dirty = code.get("dirty")
            self.db.execute("INSERT OR REPLACE INTO jobs (run_id, job_id, label, spec, status, error, started, "
                            "finished, wall_s, info, git_commit, git_dirty) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                            (run_id, job.key, job.label, json.dumps(job.to_json(), default=str), status, error,
                             started, finished, finished - started, json.dumps(info or {}, default=str),
                             code.get("commit"), None if dirty is None else int(bool(dirty))))

    def _tx(self):
        db = self.db

        class _T:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, et, ev, tb):
                db.execute("COMMIT" if et is None else "ROLLBACK")
        return _T()

    # --- reading: every query of the package lives here -----------------------------------------------------
    def done_jobs(self, run_id: str) -> set[str]:
        q = f"SELECT job_id FROM jobs WHERE run_id=? AND status IN ({','.join('?' * len(FINAL))})"
        return {r[0] for r in self.db.execute(q, (run_id, *FINAL))}

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT run_id, suite, suite_path, created, finished, status FROM runs "
                                 "ORDER BY created", self.db)

    def has_run(self, run_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM runs WHERE run_id=?", (run_id,)).fetchone() is not None

    def run_meta(self, run_id: str) -> dict | None:
        """The run's own row (suite, suite_path, suite_sha, created, finished, status), or None if unknown."""
        cur = self.db.execute("SELECT run_id, suite, suite_path, suite_sha, created, finished, status FROM runs "
                              "WHERE run_id=?", (run_id,))
        r = cur.fetchone()
        return dict(zip([c[0] for c in cur.description], r)) if r else None

    def manifest(self, run_id: str) -> dict:
        r = self.db.execute("SELECT manifest FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return json.loads(r[0]) if r and r[0] else {}

    def latest_run(self, suite: str | None = None, before: str | None = None) -> str | None:
        q, args = "SELECT run_id FROM runs WHERE 1=1", []
        if suite:
            q, args = q + " AND suite=?", args + [suite]
        if before:
            q += " AND created < (SELECT created FROM runs WHERE run_id=?)"
            args.append(before)
        r = self.db.execute(q + " ORDER BY created DESC LIMIT 1", args).fetchone()
        return r[0] if r else None

    def rows(self, run_id: str | list[str] | None = None, samples: bool = False) -> pd.DataFrame:
        """Tidy rows of one run, of several (a list), or of every run (None), in the order they were written; the
        last columns, git_commit and git_dirty, are the job's (the code that produced the row; empty before they
        were recorded)."""
        cols = [f"r.{c}" for c in ROW_COLS + (["samples"] if samples else [])] + ["j.git_commit", "j.git_dirty"]
        ids = [run_id] if isinstance(run_id, str) else list(run_id or [])
        where = f" WHERE r.run_id IN ({','.join('?' * len(ids))})" if run_id is not None else ""
        return pd.read_sql_query(f"SELECT {','.join(cols)} FROM results r LEFT JOIN jobs j ON r.run_id = j.run_id "
                                 f"AND r.job_id = j.job_id{where} ORDER BY r.rowid", self.db,
                                 params=ids if run_id is not None else None)

    def suite_text(self, run_id: str) -> str | None:
        """The suite file's text when the run started (None for runs stored before it was kept)."""
        r = self.db.execute("SELECT suite_text FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return r[0] if r else None

    def jobs(self, run_id: str) -> pd.DataFrame:
        return pd.read_sql_query("SELECT job_id, label, status, error, wall_s FROM jobs WHERE run_id=? "
                                 "ORDER BY started", self.db, params=(run_id,))

    def job_info(self, run_id: str) -> dict[str, dict]:
        """job_id → what the job recorded about itself (device, model description, threads, limits)."""
        cur = self.db.execute("SELECT job_id, info FROM jobs WHERE run_id=?", (run_id,))
        return {j: json.loads(i) if i else {} for j, i in cur}

    def job_specs(self, run_id: str, job_ids: list[str] | None = None) -> dict[str, tuple[str, dict]]:
        """job_id → (label, the job as planned), so a job can be executed again exactly as it was."""
        cur = self.db.execute("SELECT job_id, label, spec FROM jobs WHERE run_id=?", (run_id,))
        want = set(job_ids) if job_ids is not None else None
        return {j: (lab, json.loads(spec)) for j, lab, spec in cur if want is None or j in want}

    # --- run lookup: names on the command line → run ids ----------------------------------------------------------
    def check_ref(self, ref: str | None, field: str) -> None:
        """A run id that is not in the store is bad input, reported before any work."""
        if ref and ref not in ("last", "prev") and not self.has_run(ref):
            raise UserError(f"no run {ref!r} in the store", file=str(self.path), field=field)

    def resolve(self, ref: str, suite: str | None = None, before: str | None = None, field: str = "BASE") -> str:
        """A run id, `last` (latest run) or `prev` (the one before last); with `before`, both mean the latest run
        before that one (so `compare prev last` and `run --baseline last` pick the previous night), restricted to
        `suite` when given. Rerun runs (suite `X~rerun`) are never picked by name."""
        if ref not in ("last", "prev"):
            self.check_ref(ref, field)
            return ref
        runs = self.runs()
        runs = runs[~runs["suite"].str.endswith("~rerun", na=False)]
        if suite:
            runs = runs[runs["suite"] == suite]
        if before:
            runs = runs[runs["created"] < (self.run_meta(before) or {}).get("created", float("inf"))]
        ids = list(runs["run_id"])
        need = 1 if ref == "last" or before else 2  # before NEW, last and prev are the same run
        if len(ids) < need:
            what = f"suite {suite!r}" if suite else "the store"
            raise UserError(f"no {'earlier ' if before else ''}run of {what} to use as {ref!r}", file=str(self.path),
                            field=field)
        return ids[-need]

    def suite_runs(self, suite: str, upto: str | None = None, last: int = 60) -> pd.DataFrame:
        """The finished runs of a suite, oldest first, up to and including `upto`, at most `last` of them."""
        runs = self.runs()
        runs = runs[(runs["suite"] == suite) & (runs["status"] == "finished")]
        if upto and upto in set(runs["run_id"]):
            runs = runs[runs["created"] <= float(runs.loc[runs["run_id"] == upto, "created"].iloc[0])]
        return runs.tail(last).reset_index(drop=True)
