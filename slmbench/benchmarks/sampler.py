"""The power sampler's own cost on measured decode speed (adapters/energy.SampledPower; target ≤ 1%).

Same process, same model, same prompt: decode tok/s with the sampler thread running (B) and without it (A),
interleaved A B, B A, A B, ... so drift and the other processes on a shared machine hit both arms alike. Each sample
is what the latency scenario reports, (gen_tokens - 1) / (t_last - t_first) from the per-token clock; the sampler is
started before generate() and stopped after it, as in a job (its start and stop are outside the timed window, its
sampling is inside). The figure that travels is the per-pair ratio B/A (absolute tok/s on a contended machine do
not): its median with a distribution-free 95% CI (stats.median_ci), and the mean with a t interval.

Second, independent of contention: the sampler thread's own CPU time (CLOCK_THREAD_CPUTIME_ID, read by the thread
itself) over its lifetime, i.e. the share of one core it takes and the CPU cost of one sample. Decode cannot lose
more than that share of one core's work, divided among the threads decode runs on.

The sensor: `hwmon:NAME` / `battery:NAME` read from `sysfs` (default /sys). Where this machine has none (a VM), a FAKE
sysfs tree with one hwmon power file is written in a temporary directory (fake_sysfs) and read instead: the sysfs
read path is the same (open, read, parse an integer), the hardware behind it is not — an I2C power monitor's driver
may take longer per read than a tmpfs file; the per-sample CPU cost printed here is for this tree.
"""
from __future__ import annotations

import math
import statistics
import tempfile
from pathlib import Path


def fake_sysfs(root: Path) -> Path:
    """A FAKE /sys with one hwmon chip named `fake-ina226` reporting 5 W (power1_input, µW)."""
    d = Path(root) / "class" / "hwmon" / "hwmon0"
    d.mkdir(parents=True, exist_ok=True)
    (d / "name").write_text("fake-ina226\n")
    (d / "power1_input").write_text("5000000\n")
    return Path(root)


def measure(engine, read_w, hz: float, prompt_tokens: int = 32, gen_tokens: int = 32, pairs: int = 10,
            warmup: int = 1) -> dict:
    """Interleaved A/B of decode tok/s without (A) and with (B) a SampledPower thread at `hz` reading `read_w`."""
    from ..adapters.energy import SampledPower
    from .decode import _sample
    ids = engine.prompt_ids(prompt_tokens)
    samplers = []

    def one(with_sampler: bool) -> float:
        s = SampledPower(read_w, hz, "benchmark") if with_sampler else None
        try:
            return _sample(engine, ids, gen_tokens)
        finally:
            if s is not None:
                s.stop()
                samplers.append(s)

    for _ in range(warmup):
        one(False), one(True)
    samplers.clear()
    off, on = [], []
    for i in range(pairs):
        for arm in ((False, True) if i % 2 == 0 else (True, False)):  # neither arm always goes first
            (on if arm else off).append(one(arm))
    return summarize(off, on, samplers, hz, prompt_tokens, gen_tokens)


def summarize(off: list[float], on: list[float], samplers: list, hz: float, prompt_tokens: int,
              gen_tokens: int) -> dict:
    from scipy import stats as st
    from ..stats import median_ci
    ratios = [b / a for a, b in zip(off, on)]
    n = len(ratios)
    mean = statistics.fmean(ratios)
    half = st.t.ppf(0.975, n - 1) * statistics.stdev(ratios) / math.sqrt(n) if n > 1 else math.nan
    cpu = sum(s.cpu_s for s in samplers if s.cpu_s is not None)
    wall = sum(s.wall_s for s in samplers if s.wall_s is not None)
    nsamp = sum(s.samples for s in samplers)
    lo, hi = median_ci(ratios)
    return {"hz": hz, "pairs": n, "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens,
            "off_tok_s": off, "on_tok_s": on, "ratios": ratios,
            "ratio_median": statistics.median(ratios), "ratio_median_ci95": [lo, hi],
            "ratio_mean": mean, "ratio_mean_ci95": [mean - half, mean + half],
            "sampler_cpu_s": cpu, "sampler_wall_s": wall, "sampler_samples": nsamp,
            "sampler_core_share": cpu / wall if wall else math.nan,
            "sampler_cpu_us_per_sample": cpu / nsamp * 1e6 if nsamp else math.nan}


def format_lines(r: dict, threads: int | None = None, what: str = "") -> list[str]:
    lo, hi = r["ratio_median_ci95"]
    mlo, mhi = r["ratio_mean_ci95"]
    out = [(f"decode tok/s with the power sampler at {r['hz']:g} Hz ÷ without (measured, {r['pairs']} interleaved "
           f"pairs, prompt {r['prompt_tokens']}, {r['gen_tokens']} new tokens{f', {threads} threads' if threads else ''}):"
           f" median {r['ratio_median']:.4f} (95% CI {lo:.4f}–{hi:.4f}), mean {r['ratio_mean']:.4f} "
           f"(95% CI {mlo:.4f}–{mhi:.4f}); cost {100 * (1 - r['ratio_median']):+.2f}% (median)"),
           (f"  without: median {statistics.median(r['off_tok_s']):.2f} tok/s; with: median "
           f"{statistics.median(r['on_tok_s']):.2f} tok/s"),
           (f"sampler thread's own CPU time (measured, CLOCK_THREAD_CPUTIME_ID): {r['sampler_cpu_s'] * 1e3:.2f} ms over "
           f"{r['sampler_wall_s']:.2f} s = {100 * r['sampler_core_share']:.4f}% of one core; {r['sampler_samples']} "
           f"samples, {r['sampler_cpu_us_per_sample']:.1f} µs CPU each")]
    if what:
        out.append(f"  sensor: {what}")
    return out


def main(engine, a) -> int:
    """`slmbench overhead --sampler-hz HZ [--sensor hwmon:NAME] [--sysfs DIR] [--json]`."""
    import json
    from ..adapters.energy import SensorError, battery_power_reader, hwmon_power_reader
    spec = getattr(a, "sensor", None) or "hwmon:fake-ina226"
    kind, _, name = spec.partition(":")
    readers = {"hwmon": hwmon_power_reader, "battery": battery_power_reader}
    if kind not in readers or not name:
        print(f"slmbench: error: --sensor: expected hwmon:NAME or battery:NAME, got {spec!r}")
        return 2
    with tempfile.TemporaryDirectory(prefix="slmbench-fake-sysfs-") as tmp:
        sysfs = getattr(a, "sysfs", None) or "/sys"
        try:
            read_w, what = readers[kind](name, sysfs)
        except SensorError as e:
            if getattr(a, "sensor", None):
                print(f"slmbench: error: --sensor {spec}: {e}")
                return 2
            sysfs = str(fake_sysfs(Path(tmp)))  # no sensor here: the FAKE tree, said so
            read_w, what = readers[kind](name, sysfs)
            what = f"FAKE sysfs tree in {sysfs} (no power sensor on this machine): {what}"
        r = measure(engine, read_w, a.sampler_hz, a.prompt_tokens, a.gen_tokens, a.pairs)
    print("\n".join(format_lines(r, getattr(engine, "threads", None) or getattr(a, "threads", None), what)))
    if getattr(a, "json", False):
        print(json.dumps({**r, "sensor": what}))
    return 0
