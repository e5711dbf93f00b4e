"""A float32 matrix-vector kernel for batch-1 decode on CPU: `torch.ops.slmbench.gemv(x, w)` = F.linear(x, w) for
one row x (K) and a contiguous weight w (N, K), built at first use with torch's C++ extension tooling and cached.

Why: torch's F.linear with one row calls MKL's sgemv, which runs on ONE thread whatever torch.set_num_threads says
and reads large matrices at ~15 GB/s on the 2-core EPYC VM (measured: 1536x576 at 14.9 GB/s with 1 and with 2
threads) — a decode step of SmolLM2 fp32 spent 35 of its 40 ms there, a quarter of the memory roofline. This
kernel splits the rows over torch's intra-op threads and reads each thread's rows as 4 far-apart sequential
streams in lockstep (what the roofline kernel in adapters/bandwidth.py found the prefetchers want), 8-wide FMAs
into 2 accumulators per row. On weights on transparent huge pages (`pack()`): 39-60 GB/s on the same shapes.

Values: each output row is one dot product in a fixed order (lanes k mod 16, then a fixed pairwise horizontal sum),
whatever the thread count or row split — but not MKL's order, so logits differ from F.linear at rounding level
(~1e-5 relative). Greedy tokens equal `model.generate`'s on the tested prompts (tests/test_fast_decode.py); the
`decode: exact` knob keeps the bit-identical ATen step for anyone who needs identity by construction.

Without a C++ compiler (or with SLMBENCH_GEMV_KERNEL=0) `load()` returns None with the reason and the fast
decoder runs its ATen step instead; the job's info says which ran."""
from __future__ import annotations

import hashlib
import os
import platform
import time

from ..settings import cache_dir

_SRC = r"""
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static inline float dot(const float* w, const float* x, int64_t K);

#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum(__m256 v) {
  float t[8]; _mm256_storeu_ps(t, v);
  return ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
}
#define ISA "avx2+fma"
// rows w0..w3 in lockstep against x: 8 accumulators (2 per row: lanes k mod 16 < 8 and >= 8)
static void dot4(const float* w0, const float* w1, const float* w2, const float* w3, const float* x, int64_t K,
                 float* s) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    __m256 xa = _mm256_loadu_ps(x + k), xb = _mm256_loadu_ps(x + k + 8);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xa, a0); b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), xb, b0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xa, a1); b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), xb, b1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xa, a2); b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), xb, b2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xa, a3); b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), xb, b3);
  }
  s[0] = hsum(_mm256_add_ps(a0, b0)); s[1] = hsum(_mm256_add_ps(a1, b1));
  s[2] = hsum(_mm256_add_ps(a2, b2)); s[3] = hsum(_mm256_add_ps(a3, b3));
  for (; k < K; k++) { s[0] += w0[k] * x[k]; s[1] += w1[k] * x[k]; s[2] += w2[k] * x[k]; s[3] += w3[k] * x[k]; }
}
static inline float dot(const float* w, const float* x, int64_t K) {
  float s[4]; dot4(w, w, w, w, x, K, s); return s[0];
}
#else
#define ISA "portable"
// the same order as the AVX2 path, in plain C (the compiler vectorises it for the native ISA)
static inline float dot(const float* w, const float* x, int64_t K) {
  float a[16] = {0};
  int64_t k = 0;
  for (; k + 16 <= K; k += 16)
    for (int j = 0; j < 16; j++) a[j] += w[k + j] * x[k + j];
  float t[8];
  for (int j = 0; j < 8; j++) t[j] = a[j] + a[j + 8];
  float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; k < K; k++) s += w[k] * x[k];
  return s;
}
static void dot4(const float* w0, const float* w1, const float* w2, const float* w3, const float* x, int64_t K,
                 float* s) {
  s[0] = dot(w0, x, K); s[1] = dot(w1, x, K); s[2] = dot(w2, x, K); s[3] = dot(w3, x, K);
}
#endif

// rows [r0, r1): four streams far apart (r, r+q, r+2q, r+3q) in lockstep, then the remainder one row at a time
static void rows(const float* w, const float* x, float* y, int64_t r0, int64_t r1, int64_t K) {
  int64_t q = (r1 - r0) / 4;
  float s[4];
  for (int64_t j = 0; j < q; j++) {
    const float* w0 = w + (r0 + j) * K;
    dot4(w0, w0 + q * K, w0 + 2 * q * K, w0 + 3 * q * K, x, K, s);
    y[r0 + j] = s[0]; y[r0 + j + q] = s[1]; y[r0 + j + 2 * q] = s[2]; y[r0 + j + 3 * q] = s[3];
  }
  for (int64_t r = r0 + 4 * q; r < r1; r++) y[r] = dot(w + r * K, x, K);
}

at::Tensor gemv(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat, "slmbench::gemv: float32 only");
  TORCH_CHECK(x.device().is_cpu() && w.device().is_cpu(), "slmbench::gemv: CPU tensors only");
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous(), "slmbench::gemv: w must be a contiguous (N, K) matrix");
  int64_t N = w.size(0), K = w.size(1);
  TORCH_CHECK(x.size(-1) == K && x.numel() == K, "slmbench::gemv: x must be one row of ", K, " values");
  auto xc = x.contiguous();
  auto sizes = x.sizes().vec();
  sizes.back() = N;
  auto y = at::empty(sizes, x.options());
  const float* wp = w.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  int64_t nt = at::get_num_threads();
  at::parallel_for(0, N, (N + nt - 1) / nt, [&](int64_t b, int64_t e) { rows(wp, xp, yp, b, e, K); });
  return y;
}

TORCH_LIBRARY(slmbench, m) {
  m.def("gemv(Tensor x, Tensor w) -> Tensor", &gemv);
  m.def("gemv_isa() -> str", []() { return std::string(ISA); });
}
"""

_loaded: tuple[str | None, str] | None = None  # (isa or None, reason / build description), once per process


def _flags() -> list[str]:
    arch = ["-march=native"] if platform.machine().lower() in ("x86_64", "amd64", "i686") else ["-mcpu=native"]
    return ["-O3", *arch, "-fopenmp"]


def load(progress=lambda m: None) -> str | None:
    """Build (once per machine, cached) and register `torch.ops.slmbench.gemv`; returns its ISA ("avx2+fma",
    "portable"), or None where it cannot be used (`reason()` says why)."""
    global _loaded
    if _loaded is not None:
        return _loaded[0]
    if os.environ.get("SLMBENCH_GEMV_KERNEL", "1") == "0":
        _loaded = (None, "SLMBENCH_GEMV_KERNEL=0")
        return None
    try:
        import torch
        from torch.utils import cpp_extension
        flags = _flags()
        key = hashlib.sha256(f"{_SRC}|{torch.__version__}|{flags}|{platform.machine()}".encode()).hexdigest()[:16]
        build = cache_dir() / "torch-ext" / f"gemv-{key}"
        build.mkdir(parents=True, exist_ok=True)
        fresh = not any(build.glob("*.so"))
        if fresh:
            progress("building the decode gemv kernel (once per machine; ~30 s)")
        t0 = time.perf_counter()
        cpp_extension.load_inline(f"slmbench_gemv_{key}", cpp_sources=[_SRC], is_python_module=False,
                                  extra_cflags=flags, extra_ldflags=["-fopenmp"], build_directory=str(build),
                                  verbose=False)
        isa = str(torch.ops.slmbench.gemv_isa())
        _loaded = (isa, f"{'built' if fresh else 'cached'} in {time.perf_counter() - t0:.1f} s ({isa}, {build})")
    except Exception as e:  # no compiler / ninja / headers: the ATen step runs, and says so
        _loaded = (None, f"{type(e).__name__}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else ''}")
    return _loaded[0]


def reason() -> str:
    """How the kernel was loaded, or why it was not."""
    return "not loaded" if _loaded is None else _loaded[1]


def pack(tensors) -> list:
    """Contiguous float32 copies of `tensors` in one buffer on transparent huge pages where the OS offers them
    (Linux `madvise(MADV_HUGEPAGE)`; measured +5-15% kernel bandwidth here: 4 KiB pages cut the prefetchers' runs
    short), else ordinary memory. The caller re-points its parameters to the copies one by one, so the old storage
    is freed as the copies fill (peak memory grows by about one matrix, not by the model)."""
    import mmap

    import torch
    sizes = [t.numel() for t in tensors]
    align = 2 << 20
    total = sum(sizes) * 4 + align + 64 * len(sizes)
    buf = None
    if hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_PRIVATE"):
        try:
            m = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            m.madvise(mmap.MADV_HUGEPAGE)
            buf = torch.frombuffer(m, dtype=torch.float32)  # keeps `m` alive as long as a view lives
        except (OSError, ValueError):
            buf = None
    if buf is None:
        buf = torch.empty(total // 4, dtype=torch.float32)
    off = (-buf.data_ptr() % align) // 4
    out = []
    for t, n in zip(tensors, sizes):
        out.append(buf.narrow(0, off, n).view(t.shape))
        off += n + (-n % 16)  # each matrix on a 64-byte boundary, as torch's allocator places tensors
    return out
