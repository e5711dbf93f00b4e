"""Sustained memory read bandwidth, the roofline's denominator: measured once per machine and thread count, cached.

A decode step of a dense model streams every weight once, so tokens/s × weight bytes ÷ this bandwidth is the
fraction of the roofline a runtime reaches. For that fraction to be ≤ 1 the figure must be one no real workload
exceeds: a STREAM-style read kernel in C (compiled here at first use with the system `cc`, `-O3 -march=native`,
cached), native-width vector loads (AVX-512 / AVX2 / NEON, whatever `-march=native` gives) into 8 independent XOR
accumulators, one pthread per requested thread each reading its own first-touched slice of a buffer ≫ the
last-level cache as 4 sequential streams in lockstep, on transparent huge pages where the OS allows (4 KiB pages
cut the prefetchers' runs short: −25% on one core here; one stream per thread: −10%), best of several reps.
Software prefetch measured slower and is not used. Without a C compiler the old
method runs instead — a torch float32 sum, labelled as such in `method` (it reads slower than real runtimes do:
on a 2-core EPYC VM 44.5 GB/s against llama.cpp decoding at an effective 51.7 GB/s).

Run in its own process (the buffer must not inflate a job's RSS). Cache: `bandwidth.json` in the cache dir, keys
`v3|host|cpu|threads` (VERSION); a figure of the old torch-sum method (an unversioned key) is never read again.
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..settings import cache_dir

# v1 (unversioned keys): torch float32 sum over 1 GiB; v2: a one-stream C kernel (briefly); v3: the kernel below
VERSION = "v3"
DEFAULT_MIB = 512  # at least; and 16× the last-level cache (a 1 GiB buffer read up to 20% slower on these VMs)
DEFAULT_REPS = 10

KERNEL_C = r"""
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <sys/mman.h>
#endif

/* the widest native vector: one register per load, 8 of them as independent accumulators */
#if defined(__AVX512F__)
#define VW 64
#define ISA "avx512"
#elif defined(__AVX__)
#define VW 32
#ifdef __AVX2__
#define ISA "avx2"
#else
#define ISA "avx"
#endif
#elif defined(__ARM_NEON) || defined(__ARM_NEON__)
#define VW 16
#define ISA "neon"
#elif defined(__SSE2__)
#define VW 16
#define ISA "sse2"
#else
#define VW 8
#define ISA "scalar"
#endif
typedef uint64_t vec_t __attribute__((vector_size(VW), aligned(VW)));
#define NV (VW / 8)

const char *bw_isa(void) { return ISA; }
int bw_vector_bytes(void) { return VW; }

typedef struct { vec_t *p; size_t n; int mode; uint64_t acc; } slice_t;

static void *work(void *arg) {
    slice_t *s = (slice_t *)arg;
    vec_t *p = s->p;
    size_t n = s->n;
    if (s->mode == 0) {            /* first touch: this thread's pages (NUMA-local), non-zero contents */
        uint64_t *q = (uint64_t *)p;
        for (size_t i = 0; i < n * NV; i++) q[i] = i * 0x9E3779B97F4A7C15ull;
        return NULL;
    }
    /* 4 sequential streams per thread (quarters of its slice, read in lockstep: more DRAM pages in flight than one
       stream keeps; measured +10-20% on one Zen 3 core), 2 vectors from each per step into 8 independent chains */
    size_t q = n / 4;
    const vec_t *p0 = p, *p1 = p + q, *p2 = p + 2 * q, *p3 = p + 3 * q;
    vec_t a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (size_t i = 0; i + 2 <= q; i += 2) {
        a0 ^= p0[i]; a1 ^= p0[i + 1]; a2 ^= p1[i]; a3 ^= p1[i + 1];
        a4 ^= p2[i]; a5 ^= p2[i + 1]; a6 ^= p3[i]; a7 ^= p3[i + 1];
    }
    a0 ^= a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
    uint64_t x = 0;
    for (int k = 0; k < NV; k++) x ^= a0[k];
    s->acc = x;                    /* stored: the loads cannot be optimized away */
    return NULL;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static int run_all(slice_t *s, int threads) {
    pthread_t tid[1024];
    for (int t = 1; t < threads; t++)
        if (pthread_create(&tid[t], NULL, work, &s[t])) return -1;
    work(&s[0]);                   /* the calling thread reads a slice too */
    for (int t = 1; t < threads; t++) pthread_join(tid[t], NULL);
    return 0;
}

/* Reads `bytes` (rounded down to whole 4 KiB pages per thread) `reps` times with `threads` threads after one
   untimed pass; secs[r] = wall time of rep r (thread start to last join). Returns bytes read per rep, or < 0. */
long long bw_run(int threads, long long bytes, int reps, double *secs, uint64_t *check) {
    if (threads < 1 || threads > 1024) return -1;
    size_t per = ((size_t)bytes / threads) / 4096 * 4096;
    size_t total = per * threads, align = 2u << 20;
    if (per == 0) return -2;
    vec_t *buf = NULL;
    if (posix_memalign((void **)&buf, align, total)) return -3;
#ifdef MADV_HUGEPAGE
    madvise(buf, total, MADV_HUGEPAGE);
#endif
    slice_t *s = (slice_t *)calloc(threads, sizeof(slice_t));
    if (!s) { free(buf); return -3; }
    for (int t = 0; t < threads; t++) { s[t].p = buf + t * (per / VW); s[t].n = per / VW; s[t].mode = 0; }
    if (run_all(s, threads)) { free(s); free(buf); return -4; }
    for (int t = 0; t < threads; t++) s[t].mode = 1;
    run_all(s, threads);        /* warm-up */
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        if (run_all(s, threads)) { free(s); free(buf); return -4; }
        secs[r] = now() - t0;
    }
    uint64_t x = 0;
    for (int t = 0; t < threads; t++) x ^= s[t].acc;
    *check = x;
    free(s);
    free(buf);
    return (long long)total;
}
"""


# --- the C kernel ---------------------------------------------------------------------------------------------
def compiler() -> str | None:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return shutil.which(cc)
    return None


def _cc_version(cc: str) -> str:
    try:
        r = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30, check=False)
        return r.stdout.splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def build_kernel(progress=lambda m: None) -> tuple[Path, str] | None:
    """Compile the kernel once (cached by source, compiler and CPU); (shared library, flags) or None."""
    cc = compiler()
    if cc is None:
        return None
    from . import host_info
    tag = hashlib.sha256("\0".join([KERNEL_C, cc, _cc_version(cc), host_info()["cpu_model"]]).encode()).hexdigest()
    out_dir = cache_dir() / "bwkernel"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"bw-{tag[:16]}.so"
    flags_file = lib.with_suffix(".flags")
    if lib.is_file() and flags_file.is_file():
        return lib, flags_file.read_text()
    progress(f"compiling the bandwidth kernel with {cc}")
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        src = Path(tmp) / "bw.c"
        src.write_text(KERNEL_C)
        for arch in (["-march=native"], ["-mcpu=native"], []):  # x86 / arm64 gcc+clang / anything else
            flags = ["-O3", *arch, "-shared", "-fPIC", "-pthread"]
            so = Path(tmp) / "bw.so"
            r = subprocess.run([cc, *flags, str(src), "-o", str(so)], capture_output=True, text=True, timeout=120,
                               check=False)
            if r.returncode == 0 and so.is_file():
                os.replace(so, lib)  # atomic: a concurrent build leaves one whole file
                flags_file.write_text(" ".join(flags))
                return lib, " ".join(flags)
    return None


def llc_bytes() -> int:
    """The largest cache this CPU reports (Linux sysfs), 32 MiB when unknown."""
    best = 0
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            s = f.read_text().strip()
            best = max(best, int(s[:-1]) * {"K": 2**10, "M": 2**20, "G": 2**30}[s[-1]] if s[-1] in "KMG" else int(s))
        except (OSError, ValueError, KeyError):
            pass
    return best or 32 * 2**20


def default_mib() -> int:
    """≫ the last-level cache: at least 512 MiB and 16× the largest cache."""
    return max(DEFAULT_MIB, 16 * llc_bytes() // 2**20)


def measure_kernel(threads: int, mib: int | None = None, reps: int = DEFAULT_REPS,
                   progress=lambda m: None) -> dict | None:
    built = build_kernel(progress)
    if built is None:
        return None
    lib_path, flags = built
    lib = ctypes.CDLL(str(lib_path))
    lib.bw_isa.restype = ctypes.c_char_p
    lib.bw_run.restype = ctypes.c_longlong
    lib.bw_run.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_int, ctypes.POINTER(ctypes.c_double),
                           ctypes.POINTER(ctypes.c_uint64)]
    mib = mib or default_mib()
    secs = (ctypes.c_double * reps)()
    check = ctypes.c_uint64()
    n = lib.bw_run(threads, mib * 2**20, reps, secs, ctypes.byref(check))
    if n <= 0:
        return None
    gbs = sorted(n / t / 1e9 for t in secs)
    isa = lib.bw_isa().decode()
    return {"gbs": gbs[-1], "median_gbs": gbs[len(gbs) // 2], "threads": threads, "bytes": n, "kind": "kernel",
            "isa": isa, "version": VERSION,
            "method": f"C read kernel ({isa} loads, 4 streams/thread, 8 accumulators, huge pages; cc "
                      f"{flags.split(' -shared')[0]}) over "
                      f"{mib} MiB, {threads} threads, best of {reps}"}


def measure_torch(threads: int, mib: int = DEFAULT_MIB, reps: int = 7) -> dict:
    """The fallback without a C compiler (v1's method): a torch float32 sum. It reads slower than real runtimes."""
    import torch
    torch.set_num_threads(threads)
    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    x.sum()  # fault in pages, warm up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x.sum()
        times.append(time.perf_counter() - t0)
    gbs = sorted(x.numel() * 4 / t / 1e9 for t in times)
    return {"gbs": gbs[-1], "median_gbs": gbs[len(gbs) // 2], "threads": threads, "bytes": x.numel() * 4,
            "kind": "torch", "version": VERSION,
            "method": f"torch float32 sum over {mib} MiB, best of {reps}, {threads} threads (fallback: no C compiler; "
                      f"a lower bound, real runtimes may read faster)"}


def measure(threads: int, mib: int | None = None, reps: int = DEFAULT_REPS, method: str = "auto") -> dict:
    """method: auto (the kernel, else torch), kernel, torch."""
    if method in ("auto", "kernel"):
        r = measure_kernel(threads, mib, reps)
        if r is not None or method == "kernel":
            if r is None:
                raise RuntimeError("no C compiler (cc, gcc, clang or $CC) could build the bandwidth kernel")
            return r
    return measure_torch(threads, mib or DEFAULT_MIB)


# --- the cache --------------------------------------------------------------------------------------------------
def _key(threads: int) -> str:
    from . import host_info
    h = host_info()
    return f"{VERSION}|{h['hostname']}|{h['cpu_model']}|{threads}"


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
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
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
                       text=True, timeout=300, check=False)
    if r.returncode != 0:
        return None
    res = json.loads(r.stdout.strip().splitlines()[-1])
    data = _load()
    data[_key(threads)] = res
    _save(data)
    return res


if __name__ == "__main__":
    print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 1)))
