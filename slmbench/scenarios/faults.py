"""FAULT INJECTION (tests only): a scenario that really fails, so the harness's crash handling is proven on the
real path — a real job process that segfaults, raises, hangs, allocates until its memory cap, or exits hard.

    scenarios: [{name: fault, params: {kind: segfault}}]

It never loads a model. `kind: ok` returns one metric, so a suite can show it goes on after a fault.
"""
from __future__ import annotations

import os
import time
from typing import Literal

from pydantic import Field

from ..errors import UserError
from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario


class FaultParams(Params):
    kind: Literal["segfault", "raise", "bad_input", "hang", "alloc", "exit", "ok"] = "ok"
    message: str = Field("injected fault", max_length=500, description="text of the exception for kind=raise")
    alloc_step_mb: int = Field(64, ge=1, le=4096, description="kind=alloc: touched memory added per step")
    alloc_max_gb: float = Field(64, gt=0, le=4096, description="kind=alloc: stop (and fail) after this much")


@register_scenario
class Fault(Scenario):
    name, Params = 'fault', FaultParams
    needs_engine = False

    def run(self, ctx: JobContext, p: FaultParams) -> list[Metric]:
        t0 = time.perf_counter()
        if p.kind == "segfault":
            import ctypes
            ctypes.string_at(0)  # reads address 0: SIGSEGV, no Python exception
        elif p.kind == "raise":
            raise RuntimeError(p.message)
        elif p.kind == "bad_input":  # input found bad only inside the job (data moved since validation)
            raise UserError(p.message, file="injected.yaml", field="fault")
        elif p.kind == "hang":
            while True:  # sleeps, so it hangs without burning a core others need
                time.sleep(1)
        elif p.kind == "alloc":
            held, step = [], p.alloc_step_mb * 2**20
            while len(held) * step < p.alloc_max_gb * 2**30:
                b = bytearray(step)  # zero pages are lazy: touch one byte per page so RSS really grows
                for i in range(0, step, 4096):
                    b[i] = 1
                held.append(b)
                time.sleep(0.02)  # gives the executor's RSS poll time to see the growth
            raise RuntimeError(f"allocated {p.alloc_max_gb} GB and was never stopped: no memory cap in force")
        elif p.kind == "exit":
            os._exit(3)  # dies without writing a result, like a native abort
        return [Metric("fault_ok_s", time.perf_counter() - t0, "s", note="fault-injection control job")]
