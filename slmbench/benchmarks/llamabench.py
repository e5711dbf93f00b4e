"""llama.cpp's own benchmark (`llama-bench`) and `llama-perplexity`, built from the very llama.cpp source the installed
llama-cpp-python vendors, and a side-by-side check of the llamacpp backend against llama-bench.

Build (once per llama-cpp-python version, cached): the sdist of the installed version is fetched with pip (PyPI is
the one place that ships the vendored tree), vendor/llama.cpp is configured with GGML_NATIVE=ON and static
libraries, and only the two tool targets are built. The binaries land in <cache>/llama-tools/bin, with a VERSION
file naming the source; the directory appears only once both binaries are complete (built elsewhere, then renamed),
so another process that finds it can use it.

Comparison (`compare`): the same GGUF file, threads, prompt and generation lengths; llama-bench and the backend are
run alternately (bench, slmbench, bench, slmbench, ...) so the drift of a shared machine hits both alike. llama-bench
times `-p P` from an empty context and `-n N` at depth P (`-d P`: the same positions the backend decodes at after
a P-token prompt). The backend's figures are what the latency scenario reports: prefill tok/s = P / time of one
prefill; decode tok/s = (N-1) / (time of the last token - time of the first).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from ..errors import Unsupported
from ..settings import cache_dir

TARGETS = ("llama-bench", "llama-perplexity")
CMAKE_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_TOOLS=ON",
               "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_SERVER=OFF",
               "-DLLAMA_BUILD_APP=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF")


def tools_dir() -> Path:
    return cache_dir() / "llama-tools"


def source_version() -> str:
    import llama_cpp
    return f"llama-cpp-python {llama_cpp.__version__}"


def cached_tools() -> Path | None:
    """The bin/ folder when it holds both tools built from the installed llama-cpp-python's source, else None."""
    d = tools_dir()
    stamp = d / "VERSION"
    if stamp.is_file() and stamp.read_text().splitlines()[0].strip() == source_version() and \
            all((d / "bin" / t).is_file() for t in TARGETS):
        return d / "bin"
    return None


def ensure_tools(jobs: int = 2, progress=print) -> Path:
    """bin/ with llama-bench and llama-perplexity, building them once (10-20 min on 2 cores)."""
    have = cached_tools()
    if have:
        return have
    import llama_cpp
    ver = llama_cpp.__version__
    work = cache_dir() / "llama-tools-build"
    src = work / "src"
    if not (src / "CMakeLists.txt").is_file():
        _fetch_source(ver, work, progress)
    build = src / "build"
    progress(f"llama-bench: building {', '.join(TARGETS)} from llama-cpp-python {ver}'s llama.cpp (once; 10-20 min)")
    _run(["cmake", "-S", str(src), "-B", str(build), *CMAKE_FLAGS], work / "cmake.log")
    _run(["cmake", "--build", str(build), "--target", *TARGETS, f"-j{jobs}"], work / "build.log")
    return install(build / "bin")


def install(built_bin: Path) -> Path:
    """Copy the built tools into <cache>/llama-tools/bin atomically (a temp dir renamed into place)."""
    final = tools_dir()
    tmp = Path(tempfile.mkdtemp(prefix="llama-tools.", dir=final.parent))
    (tmp / "bin").mkdir()
    for t in TARGETS:
        shutil.copy2(built_bin / t, tmp / "bin" / t)
    (tmp / "VERSION").write_text(f"{source_version()}\n{' '.join(CMAKE_FLAGS)}\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final / "bin"


def _fetch_source(ver: str, work: Path, progress) -> None:
    work.mkdir(parents=True, exist_ok=True)
    progress(f"llama-bench: fetching the llama-cpp-python {ver} sdist (its vendor/llama.cpp)")
    with tempfile.TemporaryDirectory(dir=work) as d:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
              f"llama-cpp-python=={ver}", "-d", d], work / "pip.log")
        sdist = next(Path(d).glob("llama_cpp_python-*.tar.gz"))
        prefix = f"{sdist.name[:-len('.tar.gz')]}/vendor/llama.cpp/"
        with tarfile.open(sdist) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix) and len(m.name) > len(prefix)]
            for m in members:
                m.name = m.name[len(prefix):]
            tf.extractall(Path(d) / "llama.cpp", members=members, filter="data")
        (Path(d) / "llama.cpp").rename(work / "src")


def _run(cmd: list[str], log: Path) -> None:
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise Unsupported(f"{cmd[0]} {cmd[1]} failed (exit {r.returncode}; log {log}): {' | '.join(tail)}")


# --- running llama-bench ----------------------------------------------------------------------------------------
def run_bench(bin_dir: Path, gguf: Path, threads: int, prompt: int, gen: int, reps: int = 1,
              extra: tuple[str, ...] = ()) -> dict:
    """One llama-bench call: prefill (pp, empty context) and decode (tg at depth `prompt`) tok/s, per repetition."""
    # two invocations' worth in one: -p P -n 0 at depth 0, and -p 0 -n N at depth P (llama-bench crosses -d with
    # both tests, so each is its own call)
    pp = _bench_json(bin_dir, gguf, ["-p", str(prompt), "-n", "0", "-d", "0"], threads, reps, extra)
    tg = _bench_json(bin_dir, gguf, ["-p", "0", "-n", str(gen), "-d", str(prompt)], threads, reps, extra)
    return {"prefill_tok_s": pp["avg_ts"], "decode_tok_s": tg["avg_ts"], "prefill_samples": pp.get("samples_ts"),
            "decode_samples": tg.get("samples_ts"), "build_commit": pp.get("build_commit"),
            "flash_attn": pp.get("flash_attn"), "n_threads": pp.get("n_threads")}


def _bench_json(bin_dir, gguf, test, threads, reps, extra) -> dict:
    cmd = [str(bin_dir / "llama-bench"), "-m", str(gguf), "-t", str(threads), "-r", str(reps), "-o", "json",
           *test, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"llama-bench failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
    return json.loads(r.stdout)[0]


# --- the backend, timed as the latency scenario times it ---------------------------------------------------------
def run_backend(engine, prompt: int, gen: int, reps: int = 1) -> dict:
    from ..contracts import TokenClock
    ids = engine.prompt_ids(prompt)
    pf, dec = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        engine.prefill(ids)
        pf.append(prompt / (time.perf_counter() - t0))
        clock = TokenClock()
        engine.generate(ids, gen, clock)
        dec.append((gen - 1) / (clock.times[-1] - clock.times[0]))
    return {"prefill_tok_s": statistics.mean(pf), "decode_tok_s": statistics.mean(dec),
            "prefill_samples": pf, "decode_samples": dec}


def compare(engine, bin_dir: Path, threads: int, prompt: int = 128, gen: int = 64, pairs: int = 5,
            reps: int = 2, progress=None) -> dict:
    """Alternating llama-bench and backend rounds on the engine's own GGUF file; per-round ratios and medians."""
    gguf = Path(engine.gguf_path)
    run_backend(engine, prompt, gen, 1)  # warm-up (llama-bench warms up itself)
    rounds = []
    for i in range(pairs):
        b = run_bench(bin_dir, gguf, threads, prompt, gen, reps)
        s = run_backend(engine, prompt, gen, reps)
        rounds.append({"bench": b, "slmbench": s,
                       "decode_ratio": s["decode_tok_s"] / b["decode_tok_s"],
                       "prefill_ratio": s["prefill_tok_s"] / b["prefill_tok_s"]})
        if progress:
            progress(f"round {i + 1}/{pairs}: decode {s['decode_tok_s']:.1f} vs {b['decode_tok_s']:.1f} tok/s, "
                     f"prefill {s['prefill_tok_s']:.0f} vs {b['prefill_tok_s']:.0f} tok/s")
    med = statistics.median
    return {"gguf": str(gguf), "level": getattr(engine, "level", "?"), "threads": threads, "prompt": prompt,
            "gen": gen, "pairs": pairs, "reps": reps,
            "bench_decode_tok_s": med(r["bench"]["decode_tok_s"] for r in rounds),
            "slmbench_decode_tok_s": med(r["slmbench"]["decode_tok_s"] for r in rounds),
            "bench_prefill_tok_s": med(r["bench"]["prefill_tok_s"] for r in rounds),
            "slmbench_prefill_tok_s": med(r["slmbench"]["prefill_tok_s"] for r in rounds),
            "decode_ratio": med(r["decode_ratio"] for r in rounds),
            "prefill_ratio": med(r["prefill_ratio"] for r in rounds),
            "build_commit": rounds[0]["bench"]["build_commit"], "flash_attn": rounds[0]["bench"]["flash_attn"],
            "rounds": rounds, "load_avg": os.getloadavg()}


def format_lines(r: dict) -> list[str]:
    return [f"{r['level']}: decode slmbench {r['slmbench_decode_tok_s']:.1f} vs llama-bench {r['bench_decode_tok_s']:.1f}"
            f" tok/s = {r['decode_ratio']:.3f}; prefill {r['slmbench_prefill_tok_s']:.0f} vs "
            f"{r['bench_prefill_tok_s']:.0f} tok/s = {r['prefill_ratio']:.3f} (median of {r['pairs']} alternating "
            f"rounds, {r['reps']} reps each; {r['threads']} threads, prompt {r['prompt']}, {r['gen']} new tokens, "
            f"llama.cpp {r['build_commit']}, load avg {r['load_avg'][0]:.1f})"]


def measure_levels(files, adapter, levels: list[str], prompt: int = 128, gen: int = 64, pairs: int = 5,
                   reps: int = 2, progress=print) -> list[dict]:
    """`slmbench overhead --llama-bench`: build (once) the tools, then compare the llamacpp backend with llama-bench at
    each GGUF level of the model (the backend's own quantization of it), one engine loaded at a time."""
    from ..backends import load_engine
    from ..plan import Variant
    bin_dir = ensure_tools(progress=progress)
    out = []
    for level in levels:
        eng = load_engine(files, Variant(backend="llamacpp", quantization=level), adapter, progress)
        out.append(compare(eng, bin_dir, adapter.threads, prompt, gen, pairs, reps, progress))
        del eng
    return out
