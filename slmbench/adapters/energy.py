"""Energy readers. A counter when the hardware has one (RAPL via pyRAPL, NVML on GPUs); otherwise an estimate
from the process's CPU time × the profile's per-core power — always labelled `estimated`."""
from __future__ import annotations

import time


class CpuTimeEstimate:
    """E ≈ (CPU seconds of this process, all threads) × W per active core. No sampler thread: one clock read."""
    source = "estimated"

    def __init__(self, per_core_w: float, why: str):
        self.per_core_w = per_core_w
        self.note = f"estimated: process CPU time × {per_core_w:g} W/core (device profile); {why}"

    def read(self) -> float:
        return time.process_time() * self.per_core_w  # CLOCK_PROCESS_CPUTIME_ID: ns resolution, unlike os.times


class RaplMeter:
    """Package energy from the RAPL counters through pyRAPL (measured). Reads are sysfs files: no sampling."""
    source = "measured"
    note = "measured: RAPL package counter (pyRAPL)"

    def __init__(self):
        import pyRAPL
        pyRAPL.setup()  # raises where there are no counters (e.g. these VMs)
        self._m = pyRAPL.Measurement("slmbench")
        self._total = 0.0
        self._m.begin()

    def read(self) -> float:
        # pyRAPL's Measurement reports µJ between begin() and end(); end() then re-begin gives a running counter.
        self._m.end()
        j = sum(self._m.result.pkg or [0.0]) / 1e6
        self._total += j
        self._m.begin()
        return self._total


def rapl_or_estimate(per_core_w: float | None) -> object:
    try:
        return RaplMeter()
    except Exception as e:  # pyRAPL raises its own types, or OSError/PermissionError on sysfs
        why = f"no RAPL counters ({type(e).__name__})"
    if per_core_w is None:
        return None
    return CpuTimeEstimate(per_core_w, why)


# --- the device's own sensors (sysfs): chosen per profile by `extra.energy_sensor` -------------------------------
#
#   rapl          RAPL package counters through powercap: /sys/class/powercap/intel-rapl:N/energy_uj (counter)
#   hwmon:NAME    the hwmon chip whose `name` is NAME: power*_input (µW), else curr1_input (mA) × in1_input (mV)
#   battery:NAME  /sys/class/power_supply/NAME: power_now (µW), else |current_now| (µA) × voltage_now (µV)
#   estimate      process CPU time × the profile's per_core_active_w
#
# A counter is read at each phase boundary and nothing runs between reads. A sampled sensor (an instantaneous power
# reading) is read by one sampler thread at a modest rate and integrated (trapezoid) between samples; read() takes
# one more sample itself, so a phase boundary is exact in time. Rate: hwmon power monitors (INA2xx-class) refresh
# every few ms to ~100 ms, so 10 Hz resolves the second-scale phases of real models at ~10 sysfs reads/s (tens of
# µs each: ~0.05% of one core); battery fuel gauges update about once a second and an ACPI battery read can cost
# milliseconds (embedded-controller access), so 2 Hz. A phase shorter than a few sample periods is integrated from
# its boundary samples only — the note says so. `extra.energy_sample_hz` overrides the rate.
SENSORS = ("rapl", "hwmon:NAME", "battery:NAME", "estimate")
SAMPLE_HZ = {"hwmon": 10.0, "battery": 2.0}


class SensorError(Exception):
    """A configured sensor that is not there or not readable: one line naming the path."""


def _read_int(path) -> int:
    from pathlib import Path
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError) as e:
        raise SensorError(f"cannot read {path} ({type(e).__name__}: {getattr(e, 'strerror', None) or e})")


class PowercapRapl:
    """RAPL package energy from powercap sysfs (no pyRAPL): the sum of the top-level `intel-rapl:N` zones (packages;
    sub-zones `intel-rapl:N:M` are parts of them and are not added again). Each counter wraps at its
    max_energy_range_uj; a read sees at most one wrap since the previous one (a package at 200 W wraps a 2^32 µJ
    range in ~6 h, and reads come at phase boundaries, seconds apart)."""
    source = "measured"

    def __init__(self, sysfs: str = "/sys"):
        from pathlib import Path
        root = Path(sysfs) / "class" / "powercap"
        zones = sorted(p for p in root.glob("intel-rapl:*") if p.name.count(":") == 1 and (p / "energy_uj").exists())
        if not zones:
            raise SensorError(f"no RAPL zones in {root} (intel-rapl:N/energy_uj)")
        self.zones = [(z / "energy_uj", _read_int(z / "max_energy_range_uj") if (z / "max_energy_range_uj").exists()
                       else None) for z in zones]
        names = []
        for z in zones:
            try:
                names.append((z / "name").read_text().strip())
            except OSError:
                names.append(z.name)
        self.note = f"measured: RAPL counters via powercap ({', '.join(names)}) in {root}, on the device"
        self._last = [_read_int(f) for f, _ in self.zones]
        self._total_uj = 0

    def read(self) -> float:
        for i, (f, rng) in enumerate(self.zones):
            now = _read_int(f)
            d = now - self._last[i]
            if d < 0:  # the counter wrapped (or, with no range known, was reset): count from zero
                d += rng if rng else now - d
            self._total_uj += d
            self._last[i] = now
        return self._total_uj / 1e6


def hwmon_power_reader(name: str, sysfs: str = "/sys"):
    """(read() -> watts, description) for the hwmon chip named `name`."""
    from pathlib import Path
    root = Path(sysfs) / "class" / "hwmon"
    chips = [d for d in sorted(root.glob("hwmon*")) if (d / "name").is_file() and
             (d / "name").read_text().strip() == name]
    if not chips:
        found = sorted({(d / "name").read_text().strip() for d in root.glob("hwmon*") if (d / "name").is_file()})
        raise SensorError(f"no hwmon chip named {name!r} in {root} (found: {', '.join(found) or 'none'})")
    d = chips[0]
    power = sorted(d.glob("power*_input"))
    if power:
        return (lambda: sum(_read_int(p) for p in power) / 1e6,
                f"hwmon {name} ({d.name}): {' + '.join(p.name for p in power)} (µW)")
    curr = d / "curr1_input"
    volt = d / "in1_input" if (d / "in1_input").exists() else d / "in0_input"
    if curr.exists() and volt.exists():
        return (lambda: _read_int(curr) * _read_int(volt) / 1e6,
                f"hwmon {name} ({d.name}): {curr.name} (mA) × {volt.name} (mV)")
    raise SensorError(f"hwmon chip {name!r} ({d}) has no power*_input, nor curr1_input with in1_input/in0_input")


def battery_power_reader(name: str, sysfs: str = "/sys"):
    """(read() -> watts, description) for the power supply `name`. The magnitude: the sign of current_now differs
    between drivers. Only while discharging does this read the device's own draw (on a charger it is the charge
    current): the description records the status at the start."""
    from pathlib import Path
    d = Path(sysfs) / "class" / "power_supply" / name
    if not d.is_dir():
        found = sorted(p.name for p in d.parent.glob("*")) if d.parent.is_dir() else []
        raise SensorError(f"no power supply {name!r} in {d.parent} (found: {', '.join(found) or 'none'})")
    try:
        status = (d / "status").read_text().strip()
    except OSError:
        status = "unknown"
    warn = "" if status == "Discharging" else f"; status {status!r} at start: on a charger this is not the draw"
    if (d / "power_now").exists():
        return lambda: abs(_read_int(d / "power_now")) / 1e6, f"battery {name}: power_now (µW){warn}"
    if (d / "current_now").exists() and (d / "voltage_now").exists():
        return (lambda: abs(_read_int(d / "current_now")) * _read_int(d / "voltage_now") / 1e12,
                f"battery {name}: |current_now| (µA) × voltage_now (µV){warn}")
    raise SensorError(f"power supply {name!r} ({d}) has neither power_now nor current_now with voltage_now")


class SampledPower:
    """Energy from an instantaneous power reading: a sampler thread at `hz`, trapezoid integration. read() samples
    once more and returns joules since start. `stop()` ends the thread (it is a daemon: it never outlives the job)."""
    source = "measured"

    def __init__(self, read_w, hz: float, what: str):
        import threading
        self._read_w, self.hz = read_w, hz
        self.note = (f"measured: {what}, sampled at {hz:g} Hz on the device and integrated per phase (a phase "
                     f"shorter than ~{3 / hz:.1f} s rests on its boundary samples)")
        self.samples = 0
        self.cpu_s = self.wall_s = None  # the sampler thread's own CPU time and lifetime, set when it ends
        self._lock = threading.Lock()
        self._t, self._p = time.perf_counter(), read_w()
        self._j = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slmbench-power-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> float:
        p = self._read_w()  # outside the lock: a slow sysfs read never blocks the other side
        t = time.perf_counter()
        with self._lock:
            if t > self._t:
                self._j += (self._p + p) / 2 * (t - self._t)
                self._t, self._p = t, p
            self.samples += 1
            return self._j

    def _run(self) -> None:
        period, born = 1.0 / self.hz, time.perf_counter()
        while not self._stop.wait(period):
            try:
                self._sample()
            except SensorError:  # a transient read failure: skip this sample, the next one integrates across
                pass
        # CLOCK_THREAD_CPUTIME_ID of this thread alone: what sampling took from the cores the model runs on
        self.cpu_s, self.wall_s = time.thread_time(), time.perf_counter() - born

    def read(self) -> float:
        return self._sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


def sensor_meter(spec: str, per_core_w: float | None = None, sysfs: str = "/sys", hz: float | None = None):
    """The energy meter a profile's `extra.energy_sensor` names (see SENSORS); raises SensorError when absent."""
    kind, _, name = spec.partition(":")
    if kind == "rapl" and not name:
        return PowercapRapl(sysfs)
    if kind == "hwmon" and name:
        read_w, what = hwmon_power_reader(name, sysfs)
        return SampledPower(read_w, hz or SAMPLE_HZ["hwmon"], what + ", on the device")
    if kind == "battery" and name:
        read_w, what = battery_power_reader(name, sysfs)
        return SampledPower(read_w, hz or SAMPLE_HZ["battery"], what + ", on the device")
    if kind == "estimate" and not name:
        if per_core_w is None:
            raise SensorError("energy_sensor 'estimate' needs per_core_active_w in the profile")
        return CpuTimeEstimate(per_core_w, "energy_sensor: estimate (device profile)")
    raise SensorError(f"unknown energy_sensor {spec!r} (known: {', '.join(SENSORS)})")
