"""Sustained memory read bandwidth, measured once per machine and thread count, cached.

A decode step of a dense model streams every weight once, so tokens/s × weight bytes ÷ this bandwidth is the
fraction of the roofline a runtime reaches. Run in its own process (the 1 GiB buffer must not inflate a job's RSS).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

from ..settings import cache_dir


def measure(threads: int, mib: int = 1024, reps: int = 7) -> dict:
    import torch
    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()  # fault in pages, warm up
    best = float("inf")
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum()
        dt = time.perf_counter() - t0
        times.append(dt)
        best = min(best, dt)
    gbs = [x.numel() * 4 / t / 1e9 for t in times]
    return {"gbs": max(gbs), "median_gbs": sorted(gbs)[len(gbs) // 2], "threads": threads, "bytes": x.numel() * 4,
            "method": f"torch float32 sum over {mib} MiB, best of {reps}, {threads} threads"}


def _key(threads: int) -> str:
    from . import host_info
    h = host_info()
    return f"{h['hostname']}|{h['cpu_model']}|{threads}"


def cached(threads: int) -> dict | None:
    return _load().get(_key(threads))


def _load() -> dict:
    f = cache_dir() / "bandwidth.json"
    try:
        return json.loads(f.read_text()) if f.is_file() else {}
    except (OSError, ValueError):
        return {}


def _save(data: dict) -> None:
    f = cache_dir() / "bandwidth.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(f)


def forget(threads: int) -> None:
    data = _load()
    data.pop(_key(threads), None)
    _save(data)


def ensure(threads: int) -> dict | None:
    """Cached figure, or measure it now in a child process and cache it."""
    hit = cached(threads)
    if hit:
        return hit
    r = subprocess.run([sys.executable, "-m", "slmbench.adapters.bandwidth", str(threads)], capture_output=True,
                       text=True, timeout=300)
    if r.returncode != 0:
        return None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    data = _load()
    data[_key(threads)] = res
    _save(data)
    return res


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))
