"""The roofline is a true limit: the bandwidth benchmark (adapters/bandwidth.py, a C read kernel) measured back to
back with real decodes, interleaved (kernel, decode, kernel, decode, kernel; best of each), FAILS when a decode's
effective read rate (decode tok/s × weight bytes per token) exceeds it — a roofline fraction above 1 means the
benchmark is not the machine's limit. Plus the cache's versioning and the no-compiler fallback.

The decode here: the torch fast path on a random model ≫ the last-level cache (always), and the real SmolLM2 on
llama.cpp F32 and on torch (real_model; llama.cpp when llama-cpp-python is installed)."""
from __future__ import annotations

import json

import pytest

from slmbench.plan import ModelSpec, Variant


@pytest.fixture(scope="module")
def adapter():
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.contracts import effective_threads
    prof = load_profile("local-cpu")
    ad = make_adapter(prof, effective_threads(prof, None))
    ad.setup()
    return ad


def _engine(spec, variant, adapter):
    from slmbench import models
    from slmbench.backends import load_engine
    return load_engine(models.resolve(spec), variant, adapter)


def _decode_gbs(eng, prompt=64, n=24, reps=2) -> float:
    """Best effective read rate (GB/s) of `reps` decodes, timed as the latency scenario times them."""
    from slmbench.contracts import TokenClock
    ids = eng.prompt_ids(prompt)
    best = 0.0
    for _ in range(reps):
        clock = TokenClock()
        eng.generate(ids, n, clock)
        best = max(best, (n - 1) / (clock.times[-1] - clock.times[0]))
    return best * eng.weight_bytes_per_token() / 1e9


def _back_to_back(engines: dict, threads: int, rounds: int = 2) -> tuple[float, dict]:
    """(best kernel GB/s, label → best effective decode GB/s), kernel and decodes interleaved."""
    from slmbench.adapters.bandwidth import measure_kernel
    kernel, dec = [], {k: 0.0 for k in engines}
    for _ in range(rounds):
        kernel.append(measure_kernel(threads, mib=512, reps=6)["gbs"])
        for k, eng in engines.items():
            dec[k] = max(dec[k], _decode_gbs(eng))
    kernel.append(measure_kernel(threads, mib=512, reps=6)["gbs"])
    return max(kernel), dec


def _check(kernel: float, dec: dict) -> None:
    lines = [f"{k}: {g:.1f} GB/s effective = {g / kernel:.2f} of the kernel's {kernel:.1f} GB/s"
             for k, g in dec.items()]
    print("\n".join(lines))
    over = [line for (k, g), line in zip(dec.items(), lines) if g > kernel]
    assert not over, "a decode reads faster than the bandwidth benchmark (roofline fraction > 1): " + "; ".join(over)


def test_kernel_runs_and_says_what_it_is(adapter):
    from slmbench.adapters.bandwidth import compiler, measure
    if compiler() is None:
        pytest.skip("no C compiler: the torch fallback is tested below")
    r = measure(adapter.threads, mib=256, reps=3)
    assert r["kind"] == "kernel" and r["gbs"] > 0.5 and r["median_gbs"] <= r["gbs"]
    assert r["threads"] == adapter.threads and r["bytes"] >= 255 * 2**20
    assert r["method"].startswith(f"C read kernel ({r['isa']}") and f"{adapter.threads} threads" in r["method"]


def test_without_a_compiler_the_torch_method_runs_and_says_so(monkeypatch):
    from slmbench.adapters import bandwidth
    monkeypatch.setattr(bandwidth, "compiler", lambda: None)
    r = bandwidth.measure(1, mib=64)
    assert r["kind"] == "torch" and "fallback: no C compiler" in r["method"] and r["gbs"] > 0


def test_the_old_torch_sum_figure_is_not_read_again(tmp_path, monkeypatch):
    from slmbench.adapters import bandwidth, host_info
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", str(tmp_path))
    h = host_info()
    old = {f"{h['hostname']}|{h['cpu_model']}|2": {"gbs": 44.5, "median_gbs": 40.0, "method": "torch float32 sum"}}
    (tmp_path / "bandwidth.json").write_text(json.dumps(old))
    assert bandwidth.cached(2) is None  # v1 (unversioned key): measured again under the current version
    new = {**old, f"{bandwidth.VERSION}|{h['hostname']}|{h['cpu_model']}|2": {"gbs": 60.0, "median_gbs": 55.0,
                                                                             "method": "C"}}
    (tmp_path / "bandwidth.json").write_text(json.dumps(new))
    assert bandwidth.cached(2)["gbs"] == 60.0
    bandwidth.forget(2)
    assert bandwidth.cached(2) is None and json.loads((tmp_path / "bandwidth.json").read_text()) == old


def test_torch_decode_reads_no_faster_than_the_kernel(adapter, slm_env):
    """A random llama ≫ the LLC (4 layers of hidden 1024: 256 MB fp32), on the torch fast path."""
    from slmbench.adapters.bandwidth import compiler
    if compiler() is None:
        pytest.skip("no C compiler")
    spec = ModelSpec(name="big-random", source="random", config={
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 4, "num_attention_heads": 16,
        "num_key_value_heads": 16})
    eng = _engine(spec, Variant(), adapter)
    assert eng.weight_bytes_per_token() > 250e6 and eng.decode_path.startswith("fast")
    _check(*_back_to_back({"torch fast, random 256 MB": eng}, adapter.threads))


@pytest.mark.real_model
def test_smollm2_decodes_read_no_faster_than_the_kernel(adapter, slm_env):
    """The issue's case: SmolLM2-135M F32 on llama.cpp read at 1.16× the old torch-sum figure. And torch fast."""
    from slmbench.adapters.bandwidth import compiler
    if compiler() is None:
        pytest.skip("no C compiler")
    spec = ModelSpec(name="smollm2-135m", source="smollm2")
    engines = {"torch fast": _engine(spec, Variant(), adapter)}
    try:
        import llama_cpp  # noqa: F401
        engines["llama.cpp F32"] = _engine(spec, Variant(backend="llamacpp"), adapter)
    except ImportError:
        pass
    _check(*_back_to_back(engines, adapter.threads))
