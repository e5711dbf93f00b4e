"""The job process: set up the device, load the model variant, run one scenario, write the result file.

    python -m slmbench.executors.worker JOB.json RESULT.json

Runs in its own process so one job's memory, threads and crashes never leak into the next. The result file is
written atomically at the very end; no file means the process died (the executor records why). An exception
in the job is recorded as `crashed` with its one-line message (the traceback goes to info and the job's log).
The process dies with its parent (PR_SET_PDEATHSIG), so a killed runner never leaves a job measuring orphaned.
"""
from __future__ import annotations

import faulthandler
import json
import math
import os
import random
import sys
import time
import traceback
from pathlib import Path

from ..contracts.result import JobResult
from ..errors import UserError


def run_job(job) -> JobResult:
    from .. import models
    from ..backends import load_engine
    from ..contracts import SCENARIOS, JobContext, load_profile, make_adapter
    from ..errors import JobError, Unsupported
    from ..log import job_progress

    random.seed(job.seed)
    # Provenance: the code this job runs (a resumed run, or a device's own checkout, can differ from the run's).
    info: dict = {"code": _code()}
    profile = load_profile(job.device)
    adapter = make_adapter(profile, job.variant.threads or job.device_threads)
    try:
        if job.unsupported:  # decided at planning; a job spec written by hand gets the same answer here
            raise Unsupported(job.unsupported)
        sdef = SCENARIOS.get(job.scenario)
        why = sdef.missing(job.variant.engine_cls if sdef.needs_engine else None, type(adapter))
        if why:
            raise Unsupported(why)
        adapter.setup()
        info["threads"] = adapter.threads  # the effective thread count: the one figure every reader uses
        import torch
        torch.manual_seed(job.seed)
        info["device"] = adapter.info()
        params = sdef.Params(**job.params)
        ctx = JobContext(engine=None, adapter=adapter, settings=job.settings, seed=job.seed, variant=job.variant,
                         progress=job_progress)
        if sdef.needs_engine:
            files = models.resolve(job.model, progress=job_progress)
            ctx.extra["files"] = files
            ctx.baseline_rss_bytes = adapter.memory_bytes() if "memory" in adapter.capabilities else None
            adapter.reset_peak_memory()
            t0 = time.perf_counter()
            ctx.engine = load_engine(files, job.variant, adapter, job_progress)
            adapter.sync()
            # A one-off artifact build inside load (e.g. the first GGUF export) is not load time.
            ctx.load_s = time.perf_counter() - t0 - getattr(ctx.engine, "build_s", 0.0)
            ctx.load_peak_bytes = adapter.peak_memory_bytes() if "memory" in adapter.capabilities else None
            info["model"] = ctx.engine.describe()
        ballast = _inject_alloc(job.variant.inject_alloc_mb)
        metrics = sdef().run(ctx, params)
        del ballast
        for m in metrics:  # a row that says inf or nan tok/s would lie: fail the job instead
            if m.value is not None and not (isinstance(m.value, (int, float)) and math.isfinite(m.value)):
                raise ValueError(f"scenario {job.scenario!r} returned a non-finite value for {m.name}: {m.value!r}")
        return JobResult("ok", None, [m.to_dict() for m in metrics], info)
    except JobError as e:
        return JobResult(e.status, e.message, [], info)
    except UserError as e:  # bad input found only now (data moved since validation): say so, not "crashed"
        return JobResult("error", e.line(), [], info)
    except MemoryError as e:
        return JobResult("oom", f"MemoryError: {e}", [], info)


def _code() -> dict:
    from ..manifest import git_commit
    return git_commit()


def _inject_alloc(mb: float):
    """Test-only knob: hold `mb` of touched memory for the scenario's duration (a known memory regression)."""
    if not mb:
        return None
    b = bytearray(int(mb * 1e6))
    for i in range(0, len(b), 4096):
        b[i] = 1
    return b


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the runner dies (even by kill -9). Linux; elsewhere a no-op."""
    try:
        import ctypes
        import signal
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.environ.get("SLMBENCH_PARENT_PID")
    if parent and os.getppid() != int(parent):  # the runner died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent()
    faulthandler.enable()  # a segfault leaves "Fatal Python error" and the Python stack in the job's log
    from ..plan import Job
    job_file, result_file = Path(argv[0]), Path(argv[1])
    job = Job.from_json(json.loads(job_file.read_text()))
    try:
        res = run_job(job)
    except Exception as e:  # recorded, not raised: the suite goes on
        traceback.print_exc()
        res = JobResult("crashed", f"{type(e).__name__}: {e}".splitlines()[0][:500], [],
                        {"traceback": traceback.format_exc()[-4000:], "code": _code()})
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(res.to_dict(), default=str))
    os.replace(tmp, result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
