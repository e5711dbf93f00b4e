"""The device's own power sensors (adapters/energy.py) against a FAKE sysfs tree built in tmp_path: RAPL via powercap
(with wraparound), hwmon power and current × voltage, battery current × voltage; per-profile choice; labels; the
sampler's integration and its own cost (the real trees do not exist on the CI VM)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from slmbench.adapters.energy import (PowercapRapl, SampledPower, SensorError, battery_power_reader,
                                      hwmon_power_reader, sensor_meter)


def fake_sysfs(root: Path) -> Path:
    """A FAKE /sys: two RAPL packages (+ a sub-zone), an INA226-like hwmon chip with power1_input, one with only
    curr1/in1, a battery. Values are files the test rewrites."""
    pc = root / "class" / "powercap"
    for z, name in (("intel-rapl:0", "package-0"), ("intel-rapl:1", "package-1"), ("intel-rapl:0:0", "core")):
        d = pc / z
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "energy_uj").write_text("1000000\n")
        (d / "max_energy_range_uj").write_text("262143328850\n")
    hw = root / "class" / "hwmon"
    (hw / "hwmon0").mkdir(parents=True)
    (hw / "hwmon0" / "name").write_text("ina226\n")
    (hw / "hwmon0" / "power1_input").write_text("5000000\n")  # 5 W in µW
    (hw / "hwmon1").mkdir()
    (hw / "hwmon1" / "name").write_text("ina219\n")
    (hw / "hwmon1" / "curr1_input").write_text("1500\n")  # 1.5 A in mA
    (hw / "hwmon1" / "in1_input").write_text("5000\n")  # 5 V in mV
    bat = root / "class" / "power_supply" / "BAT0"
    bat.mkdir(parents=True)
    (bat / "status").write_text("Discharging\n")
    (bat / "current_now").write_text("-800000\n")  # 0.8 A in µA (negative: this driver's discharge sign)
    (bat / "voltage_now").write_text("3900000\n")  # 3.9 V in µV
    return root


@pytest.fixture
def sysfs(tmp_path):
    return fake_sysfs(tmp_path / "fake_sys")


def test_rapl_powercap_sums_packages_and_handles_wraparound(sysfs):
    m = PowercapRapl(str(sysfs))
    assert m.source == "measured" and "package-0" in m.note and "package-1" in m.note and "core" not in m.note
    pc = sysfs / "class" / "powercap"
    (pc / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (pc / "intel-rapl:1" / "energy_uj").write_text("1500000\n")  # +0.5 J
    (pc / "intel-rapl:0:0" / "energy_uj").write_text("9000000\n")  # a sub-zone: part of package-0, not added
    assert m.read() == pytest.approx(2.5)
    rng = 262143328850
    (pc / "intel-rapl:0" / "energy_uj").write_text("500000\n")  # wrapped: rng - 3 J + 0.5 J
    assert m.read() == pytest.approx(2.5 + (rng - 3000000 + 500000) / 1e6)


def test_rapl_absent_is_one_line(tmp_path):
    with pytest.raises(SensorError, match="no RAPL zones"):
        PowercapRapl(str(tmp_path))


def test_hwmon_power_and_current_times_voltage(sysfs):
    read, what = hwmon_power_reader("ina226", str(sysfs))
    assert read() == pytest.approx(5.0) and "power1_input" in what
    read, what = hwmon_power_reader("ina219", str(sysfs))
    assert read() == pytest.approx(7.5) and "curr1_input" in what and "in1_input" in what
    with pytest.raises(SensorError, match="found: ina219, ina226"):
        hwmon_power_reader("nope", str(sysfs))


def test_battery_current_times_voltage(sysfs):
    read, what = battery_power_reader("BAT0", str(sysfs))
    assert read() == pytest.approx(0.8 * 3.9) and "current_now" in what and "charger" not in what
    (sysfs / "class" / "power_supply" / "BAT0" / "status").write_text("Charging\n")
    _, what = battery_power_reader("BAT0", str(sysfs))
    assert "not the draw" in what  # said, not hidden
    with pytest.raises(SensorError, match="found: BAT0"):
        battery_power_reader("BAT1", str(sysfs))


def test_sampled_power_integrates_per_phase(sysfs):
    f = sysfs / "class" / "hwmon" / "hwmon0" / "power1_input"
    m = sensor_meter("hwmon:ina226", sysfs=str(sysfs), hz=50)
    try:
        assert "sampled at 50 Hz" in m.note and "hwmon ina226" in m.note and "on the device" in m.note
        e0, t0 = m.read(), time.perf_counter()
        time.sleep(0.3)
        e1, t1 = m.read(), time.perf_counter()
        assert (e1 - e0) == pytest.approx(5.0 * (t1 - t0), rel=0.05)  # constant 5 W
        f.write_text("10000000\n")  # 10 W from now on
        time.sleep(0.05)
        e2 = m.read()
        time.sleep(0.3)
        e3 = m.read()
        assert (e3 - e2) == pytest.approx(10.0 * 0.3, rel=0.1)
        assert m.samples >= 10  # the thread sampled between reads
    finally:
        m.stop()


def test_sensor_choice_per_profile(sysfs):
    assert isinstance(sensor_meter("rapl", sysfs=str(sysfs)), PowercapRapl)
    b = sensor_meter("battery:BAT0", sysfs=str(sysfs))
    assert isinstance(b, SampledPower) and b.hz == 2.0 and "battery BAT0" in b.note
    b.stop()
    est = sensor_meter("estimate", per_core_w=3.0)
    assert est.source == "estimated"
    with pytest.raises(SensorError, match="per_core_active_w"):
        sensor_meter("estimate")
    with pytest.raises(SensorError, match="unknown energy_sensor"):
        sensor_meter("nvml")


def test_ssh_adapter_reads_its_configured_sensor(sysfs, monkeypatch):
    """On the device, the ssh adapter's meter is the profile's sensor (here pointed at the fake tree)."""
    import slmbench.adapters.ssh as ssh_mod
    from slmbench.contracts import DeviceProfile
    prof = DeviceProfile(name="board", adapter="ssh", extra={"host": "h", "user": "u", "remote_workdir": "/w",
                                                             "energy_sensor": "hwmon:ina219"})
    monkeypatch.setattr(ssh_mod, "sensor_meter", lambda spec, w, hz=None: sensor_meter(spec, w, str(sysfs), hz))
    m = ssh_mod.SshAdapter(prof, 1).energy_meter()
    try:
        assert "ina219" in m.note and m.hz == 10.0
    finally:
        m.stop()
    none = DeviceProfile(name="board", adapter="ssh", extra={"host": "h", "user": "u", "remote_workdir": "/w"})
    assert ssh_mod.SshAdapter(none, 1).energy_meter() is None  # nothing configured, no per-core figure: no guess


def test_sampler_cost(sysfs):
    """The sampler's own cost, as `slmbench overhead --sampler-hz` measures it (benchmarks/sampler.py), on the tiny
    model: interleaved A/B pairs of decode tok/s without/with the sampler, and the sampler thread's own CPU time.
    Printed, never asserted against a bound (timings on shared cores); the shape of the result is checked."""
    from slmbench import models
    from slmbench.adapters import load_profile, make_adapter
    from slmbench.backends import load_engine
    from slmbench.benchmarks.sampler import format_lines, measure
    from slmbench.plan import ModelSpec, Variant
    spec = ModelSpec(name="t", source="random", config={"hidden_size": 32, "intermediate_size": 64,
                                                        "num_hidden_layers": 1, "num_attention_heads": 2,
                                                        "num_key_value_heads": 1})
    ad = make_adapter(load_profile("local-cpu"), 1)
    ad.setup()
    eng = load_engine(models.resolve(spec), Variant(), ad)
    read_w = hwmon_power_reader("ina226", str(sysfs))[0]
    r = measure(eng, read_w, hz=100.0, prompt_tokens=8, gen_tokens=32, pairs=8)
    print("\n  " + "\n  ".join(format_lines(r, 1, "FAKE sysfs tree (tests): hwmon ina226 power1_input")))
    assert r["pairs"] == 8 and len(r["off_tok_s"]) == len(r["on_tok_s"]) == len(r["ratios"]) == 8
    lo, hi = r["ratio_median_ci95"]
    assert lo <= r["ratio_median"] <= hi and all(x > 0 for x in r["ratios"])
    assert r["sampler_cpu_s"] > 0 and r["sampler_wall_s"] > 0  # the thread's own clock was read, in every B arm
