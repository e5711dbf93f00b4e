"""Results store: one SQLite file, tidy rows (one per run × job × metric), a manifest per run, raw samples kept.

Crash safety: WAL journal with synchronous=FULL; a job's status row and all its metric rows are written in one
transaction, so a run killed at any moment (kill -9 included) leaves either the whole job or none of it, and
UNIQUE (run_id, job_id, metric, labels) makes a duplicate row impossible. Resume skips jobs already final in the run.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pandas as pd

from .errors import UserError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id TEXT PRIMARY KEY, suite TEXT, suite_path TEXT, suite_sha TEXT, created REAL, finished REAL,
  status TEXT, manifest TEXT);
CREATE TABLE IF NOT EXISTS jobs (
  run_id TEXT, job_id TEXT, label TEXT, spec TEXT, status TEXT, error TEXT, started REAL, finished REAL,
  wall_s REAL, info TEXT, PRIMARY KEY (run_id, job_id));
CREATE TABLE IF NOT EXISTS results (
  run_id TEXT, job_id TEXT, suite TEXT, model TEXT, variant TEXT, device TEXT, scenario TEXT, params TEXT,
  metric TEXT, labels TEXT, value REAL, unit TEXT, n INTEGER, spread REAL, spread_kind TEXT, source TEXT,
  higher_is_better INTEGER, status TEXT, error TEXT, note TEXT, samples TEXT,
  UNIQUE (run_id, job_id, metric, labels));
CREATE INDEX IF NOT EXISTS results_run ON results (run_id);
"""

FINAL = ("ok", "crashed", "timeout", "oom", "error", "unsupported")
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
        except sqlite3.DatabaseError as e:  # not a database, read-only, disk full: one clear line, not a traceback
            raise UserError(f"cannot open the results store: {e}", file=str(self.path))
        except OSError as e:
            raise UserError(f"cannot open the results store: {e.strerror or e}", file=str(self.path))

    def close(self):
        self.db.close()

    # --- writing --------------------------------------------------------------------------------------------
    def start_run(self, run_id: str, suite: str, suite_path: str, suite_sha: str, manifest: dict) -> None:
        with self._tx():
            self.db.execute("INSERT OR IGNORE INTO runs VALUES (?,?,?,?,?,?,?,?)",
                            (run_id, suite, suite_path, suite_sha, time.time(), None, "running",
                             json.dumps(manifest, default=str)))
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
            self.db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (run_id, job.key, job.label, json.dumps(job.to_json(), default=str), status, error,
                             started, finished, finished - started, json.dumps(info or {}, default=str)))

    def _tx(self):
        db = self.db

        class _T:
            def __enter__(self):
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self, et, ev, tb):
                db.execute("COMMIT" if et is None else "ROLLBACK")
        return _T()

    # --- reading --------------------------------------------------------------------------------------------
    def done_jobs(self, run_id: str) -> set[str]:
        q = f"SELECT job_id FROM jobs WHERE run_id=? AND status IN ({','.join('?' * len(FINAL))})"
        return {r[0] for r in self.db.execute(q, (run_id, *FINAL))}

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT run_id, suite, suite_path, created, finished, status FROM runs "
                                 "ORDER BY created", self.db)

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

    def rows(self, run_id: str | None = None, samples: bool = False) -> pd.DataFrame:
        cols = ROW_COLS + (["samples"] if samples else [])
        q = f"SELECT {','.join(cols)} FROM results" + (" WHERE run_id=?" if run_id else "") + " ORDER BY rowid"
        return pd.read_sql_query(q, self.db, params=(run_id,) if run_id else None)

    def jobs(self, run_id: str) -> pd.DataFrame:
        return pd.read_sql_query("SELECT job_id, label, status, error, wall_s FROM jobs WHERE run_id=? "
                                 "ORDER BY started", self.db, params=(run_id,))
