"""Interleaved A/B reruns: the base code (A) and the new code (B) run alternately on the same machine, A B B A A B
..., so the machine's drift (other users' work, thermal state) hits both alike and cancels in each pair's ratio
(analysis.regression.decide_paired tests those ratios).

    interleave(run_a, run_b, pairs)         the schedule, for any two callables returning {metric key: value}
    worktree(repo, commit, dest)            the base commit's code, checked out beside the working tree
    job_arm(job, code_dir)                  one arm: the job in its own worker process, importing slmbench from
                                            code_dir (a worktree of the base commit, or the current tree)
    rerun_ab(specs, base_commit, repo)      suspect jobs → {job id: {metric: (A values, B values)}}

The alternating order (ABBA) also cancels a linear drift within a pair of pairs. Each arm's value per round is the
median of the job's own samples of that metric (its repetitions)."""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable

Arm = Callable[[], dict]


def interleave(run_a: Arm, run_b: Arm, pairs: int, warmup: bool = True,
               progress: Callable[[str], None] | None = None) -> list[tuple[dict, dict]]:
    """`pairs` rounds of (A result, B result); round i runs A first when i is even, B first when odd. One
    untimed run of each first (warmup: caches, page cache, lazy imports), unless warmup is False."""
    if warmup:
        run_a(), run_b()
    out = []
    for i in range(pairs):
        if i % 2 == 0:
            a = run_a()
            b = run_b()
        else:
            b = run_b()
            a = run_a()
        out.append((a, b))
        if progress:
            progress(f"A/B pair {i + 1}/{pairs}")
    return out


def paired_values(rounds: list[tuple[dict, dict]]) -> dict:
    """{metric key: ([A per round], [B per round])} over the keys every round of both arms has."""
    keys = set.intersection(*(set(a) & set(b) for a, b in rounds)) if rounds else set()
    return {k: ([a[k] for a, _ in rounds], [b[k] for _, b in rounds]) for k in keys}


# --- the base commit's code -------------------------------------------------------------------------------------
def worktree(repo: Path, commit: str, dest: Path) -> Path:
    """A detached git worktree of `commit` at dest (reused when it is already that commit). Read-only use: the
    working tree and its branch are not touched."""
    dest = Path(dest)
    if (dest / ".git").exists():
        head = _git(dest, "rev-parse", "HEAD")
        if head.startswith(commit) or commit.startswith(head):
            return dest
        remove_worktree(repo, dest)
    _git(repo, "worktree", "add", "--detach", str(dest), commit)
    return dest


def remove_worktree(repo: Path, dest: Path) -> None:
    _git(repo, "worktree", "remove", "--force", str(dest))


def _git(cwd: Path, *args: str) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        from ..errors import UserError
        raise UserError(f"git {' '.join(args)} failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    return r.stdout.strip()


# --- one arm: a job in a worker process importing a given code tree --------------------------------------------
def job_arm(job, code_dir: Path | None = None, timeout_s: float | None = None) -> Arm:
    """A callable running `job` once in `python -m slmbench.executors.worker` with `code_dir` first on the path (the
    base commit's tree; None: this process's own code), returning {(metric, labels json): median of its samples}.
    A job that does not finish `ok` raises: a confirmation cannot pair a failure."""
    spec = json.dumps(job.to_json(), default=str)
    timeout = timeout_s or job.settings.timeout_s

    def run() -> dict:
        with tempfile.TemporaryDirectory(prefix="slmbench-ab-") as tmp:
            jf, rf = Path(tmp) / "job.json", Path(tmp) / "result.json"
            jf.write_text(spec)
            env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                   "TRANSFORMERS_OFFLINE": "1", "SLMBENCH_PARENT_PID": str(os.getpid())}
            cwd = None
            if code_dir is not None:
                env["PYTHONPATH"] = os.pathsep.join([str(code_dir), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
                cwd = str(code_dir)
            r = subprocess.run([sys.executable, "-m", "slmbench.executors.worker", str(jf), str(rf)], cwd=cwd,
                               env=env, capture_output=True, text=True, timeout=timeout)
            if not rf.is_file():
                raise RuntimeError(f"A/B job {job.key} left no result (exit {r.returncode}): "
                                   f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
            res = json.loads(rf.read_text())
        if res["status"] != "ok":
            raise RuntimeError(f"A/B job {job.key} {res['status']}: {res.get('error')}")
        return metric_values(res["metrics"])
    return run


class _Spec:
    """A stored job spec handed to another code tree's worker as it is (this tree's Job class may not read it)."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.key = spec.get("key") or spec.get("job_id") or "job"
        self.settings = type("S", (), {"timeout_s": float((spec.get("settings") or {}).get("timeout_s") or 900)})

    def to_json(self) -> dict:
        return self.spec


def metric_values(metrics: list[dict]) -> dict:
    """{(name, labels json): the median of the row's samples, else its value} for numeric rows."""
    out = {}
    for m in metrics:
        xs = [x for x in (m.get("samples") or []) if isinstance(x, (int, float))]
        v = statistics.median(xs) if xs else m.get("value")
        if isinstance(v, (int, float)):
            out[(m["name"], json.dumps(m.get("labels") or {}, sort_keys=True))] = float(v)
    return out


def rerun_ab(specs: dict, base_commit: str, repo: Path, pairs: int, base_specs: dict | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Each job spec ({job id: spec} as the store keeps them) run as A from a worktree of `base_commit` and as B from
    the current tree, interleaved. A runs the base run's own spec of the job where `base_specs` has it (the spec
    format the base code reads), else the new one. Returns {job id: {(metric, labels json): (A values, B values)}},
    for analysis.regression.ab_pairs."""
    from ..plan import Job
    out: dict = {}
    wt = Path(tempfile.mkdtemp(prefix="slmbench-base-")) / "tree"
    try:
        worktree(repo, base_commit, wt)
        for job_id, spec in specs.items():
            job_a, job_b = _Spec((base_specs or {}).get(job_id, spec)), Job.from_json(spec)
            out[job_id] = paired_values(interleave(job_arm(job_a, wt), job_arm(job_b, None), pairs,
                                                   progress=progress))
    finally:
        if wt.exists():
            remove_worktree(repo, wt)
        shutil.rmtree(wt.parent, ignore_errors=True)
    return out
