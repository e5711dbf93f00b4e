"""SSH devices against a real OpenSSH server on 127.0.0.1: the "device" is this machine under a second path (its own
work directory and model cache, reached through sshd, run by its own `python -m slmbench.executors.worker`).

The test starts `sshd -D -f CONFIG -p PORT` with its own host key, authorized_keys and config in tmp_path (UsePAM no,
StrictModes no); nothing of this machine's ~/.ssh is read or written. Skipped when sshd or paramiko is absent.

Shown: a tiny suite's rows through the ssh device equal in shape (and close in value) to the same suite run here;
the per-job overhead of the SSH path (printed, not asserted); faults — sshd killed mid-job, unknown host key,
changed host key, wrong client key, device disk full — each one line, the suite goes on, every job has a record,
`--resume` completes what was lost; and no private key text in the store, the logs or the report.
"""
from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import CACHE_DIR, FAST, REPO, TINY_MODEL, run_cli
from slmbench.executors.ssh import SWEEP_GRACE_S

pytest.importorskip("paramiko")
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").is_file() else None)
KEYGEN = shutil.which("ssh-keygen")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (SSHD and KEYGEN), reason="OpenSSH server (sshd, ssh-keygen) not installed")]

LATENCY = {"name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 4}}


def _keygen(path: Path) -> Path:
    subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "slmbench-test", "-f", str(path)], check=True)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    """One sshd on 127.0.0.1:port, its files in `d`; start()/kill() (the listener and every session it forked)."""

    def __init__(self, d: Path):
        self.d, self.port, self.proc = d, _free_port(), None
        self.host_key = _keygen(d / "host_key")
        self.client_key = _keygen(d / "client_key")
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        (d / "sshd_config").write_text("\n".join([
            f"HostKey {self.host_key}", f"AuthorizedKeysFile {d / 'authorized_keys'}", "UsePAM no", "StrictModes no",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password",
            f"PidFile {d / 'sshd.pid'}", "ListenAddress 127.0.0.1", "Subsystem sftp internal-sftp",
            "LogLevel ERROR", ""]))
        self.known_hosts = d / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {(d / 'host_key.pub').read_text()}")

    def start(self) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # privilege separation dir sshd wants as root
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.d / "sshd_config"), "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.d / "sshd.log", "ab"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sshd exited: {(self.d / 'sshd.log').read_text()[-500:]}")
                time.sleep(0.05)
        raise RuntimeError("sshd did not listen")

    def kill(self) -> None:
        """The server dies: the listener and its session processes (sshd only; what they run is left to notice)."""
        if self.proc is None:
            return
        try:
            kids = [c for c in psutil.Process(self.proc.pid).children(recursive=True) if "sshd" in c.name()]
        except psutil.Error:
            kids = []
        for p in [psutil.Process(self.proc.pid), *kids]:
            try:
                p.kill()
            except psutil.Error:
                pass
        self.proc.wait()
        self.proc = None


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.kill()


def _profile(devs: Path, name: str, server: Sshd, workdir: Path, **extra) -> None:
    ex = {"host": "127.0.0.1", "port": server.port, "user": getpass.getuser(), "key_file": str(server.client_key),
          "known_hosts": str(server.known_hosts), "remote_python": sys.executable, "remote_workdir": str(workdir),
          "min_free_mb": 1, **extra}
    (devs / f"{name}.yaml").write_text(yaml.safe_dump({"name": name, "adapter": "ssh", "extra": ex}))


@pytest.fixture
def devices(tmp_path, sshd):
    devs = tmp_path / "devices"
    devs.mkdir()
    shutil.copy(REPO / "devices" / "local-cpu.yaml", devs / "local-cpu.yaml")
    _profile(devs, "ssh-dev", sshd, tmp_path / "remote")
    return devs


def _suite(tmp_path: Path, devices: list[str], scenarios=None, name: str = "ssh", **settings) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "settings": {**FAST, **settings}, "models": [TINY_MODEL],
                                 "devices": devices,
                                 "scenarios": scenarios or [LATENCY]}, sort_keys=False))
    return p


def _jobs(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "results.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY started")]


def _rows(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "results.sqlite")
    db.row_factory = sqlite3.Row
    return [dict(r) for r in db.execute("SELECT * FROM results")]


def test_rows_through_ssh_equal_a_local_run(tmp_path, devices, sshd):
    out = tmp_path / "out"
    # one warm-up call: a single cold timing of a 1-layer model swings 30× on shared cores (first-call effects)
    rc, _, err = run_cli("run", _suite(tmp_path, ["local-cpu", "ssh-dev"], warmup=1), "--out", out,
                         env={"SLMBENCH_DEVICES_DIR": str(devices)})
    assert rc == 0, err
    jobs = {j["label"].split("@")[1].split()[0]: j for j in _jobs(out)}
    assert {j["status"] for j in jobs.values()} == {"ok"}, [j["error"] for j in jobs.values()]
    rows = _rows(out)
    by = {d: {(r["metric"], r["labels"]): r for r in rows if r["device"] == d} for d in ("local-cpu", "ssh-dev")}
    assert set(by["local-cpu"]) == set(by["ssh-dev"]) and by["ssh-dev"]  # the same metrics, the same labels
    for k, loc in by["local-cpu"].items():
        rem = by["ssh-dev"][k]
        assert (rem["unit"], rem["source"], rem["n"]) == (loc["unit"], loc["source"], loc["n"]), k
        assert (rem["value"] is None) == (loc["value"] is None), k
        if loc["value"] and rem["value"]:  # millisecond timings, n=1, on 2 shared cores: close, not equal
            ratio = rem["value"] / loc["value"]
            print(f"  {k[0]:<28} local {loc['value']:<12.5g} ssh {rem['value']:<12.5g} ratio {ratio:.2f}")
            assert ratio > 0, k  # values are measurements: compared in print above, never by a timed bound
    info = json.loads(jobs["ssh-dev"]["info"])
    assert info["device"]["adapter"] == "ssh" and info["ssh"]["port"] == sshd.port
    t = info["ssh"]["times_s"]
    print(f"\n  ssh path, this job: total {t['total']:.2f} s, of which on the device {t['device_job']:.2f} s; "
          f"overhead {t['overhead']:.2f} s (connect {t['connect']:.2f}, upload {t['upload']:.2f}, "
          f"fetch {t['fetch']:.2f})")
    log = (out / "logs").rglob(f"{jobs['ssh-dev']['job_id']}.log")
    assert any(p.read_text().strip() for p in log)  # the job's log came back
    # the device kept no job files; it has its own model cache under its work directory
    remote = tmp_path / "remote"
    assert not list((remote / "jobs").iterdir()) and (remote / "cache").is_dir()
    _projection_vs_measurement(out, devices)


def _projection_vs_measurement(out: Path, devices: Path) -> None:
    """The report's projection for the ssh device (host roofline fraction × the device profile's bandwidth) next
    to what the device measured. The device is this machine, so its profile states this machine's bandwidth (the
    figure the host's roofline used): the error is then the difference of two contended decode measurements. (Its
    own bandwidth measured on the device during a contended run can be several times lower — the projection
    inherits whatever the profile's figure is.)"""
    from slmbench.adapters import DeviceProfile
    from slmbench.report.device import section
    from slmbench.store import Store
    st = Store(out)
    run = st.latest_run()
    df, infos = st.rows(run), st.job_info(run)
    host = df[(df["device"] == "local-cpu") & (df["metric"] == "decode_roofline_tok_s")].iloc[0]
    bpt = infos[host["job_id"]]["model"]["weights_per_token_bytes"]
    profiles = {n: DeviceProfile(**yaml.safe_load((devices / f"{n}.yaml").read_text())) for n in ("local-cpu", "ssh-dev")}
    profiles["ssh-dev"] = profiles["ssh-dev"].model_copy(
        update={"memory_bandwidth_gbs": host["value"] * bpt / 1e9,
                "sources": {"memory_bandwidth_gbs": "this machine's bandwidth (the host's roofline row): the ssh "
                            "device of this test is this machine"}})
    sec = section(df, infos, profiles)
    assert sec is not None
    print("\n" + sec.markdown())
    (dec,) = [r for r in sec.data if r["metric"] == "decode_tok_s"]
    assert dec["device"] == "ssh-dev" and dec["host"] == "local-cpu" and dec["projected"] > 0 and dec["measured"] > 0
    assert dec["error"] == pytest.approx(dec["projected"] / dec["measured"] - 1)


def test_overhead_of_the_ssh_path(tmp_path, devices, sshd, monkeypatch):
    """Interleaved A/B on the same job: local process vs the ssh path (printed; no timed assertion)."""
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devices))
    monkeypatch.setenv("SLMBENCH_CACHE_DIR", CACHE_DIR)
    from slmbench.contracts import load_profile
    from slmbench.executors.local import run_job_process
    from slmbench.executors.ssh import run_job_ssh
    from slmbench.plan import expand, load_suite
    job = expand(load_suite(str(_suite(tmp_path, ["local-cpu"]))), tmp_path)[0]
    sjob = expand(load_suite(str(_suite(tmp_path, ["ssh-dev"], name="ssh2"))), tmp_path)[0]  # same job, there
    # the "device" is this machine: give it the same model/tokenizer/bandwidth cache, so A and B differ only by
    # the SSH path (a fresh device cache would add its one-off bandwidth measurement to B)
    _profile(devices, "ssh-dev", sshd, tmp_path / "remote", remote_cache_dir=CACHE_DIR)
    prof = load_profile("ssh-dev")
    local, remote, parts = [], [], []
    for _ in range(2):
        t = time.perf_counter()
        assert run_job_process(job, tmp_path / "logs").status == "ok"
        local.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = run_job_ssh(sjob, prof, tmp_path / "logs")
        remote.append(time.perf_counter() - t)
        assert res.status == "ok", res.error
        parts.append(res.info["ssh"]["times_s"])
    lo, re_ = sorted(local)[0], sorted(remote)[0]
    p = parts[-1]
    print(f"\n  per-job wall, best of 2 (2 shared cores, contended): local {lo:.2f} s, ssh {re_:.2f} s, "
          f"difference {re_ - lo:+.2f} s; ssh parts (last): connect {p['connect']:.3f} upload {p['upload']:.3f} "
          f"fetch {p['fetch']:.3f}, launcher+transport {p['remote'] - p['device_job']:.3f}, "
          f"overhead outside the device's job {p['overhead']:.3f} s")


def _wait_for(pred, timeout: float = 120, what: str = "") -> None:
    t = time.monotonic() + timeout
    while time.monotonic() < t:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _children(p) -> list:
    try:
        return p.children(recursive=True)
    except psutil.Error:
        return []


def _cmdline(p) -> list:
    try:
        return p.cmdline()
    except psutil.Error:  # it ended between listing and reading: not running
        return []


def _device_procs(marker: str) -> list:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in a for a in (p.info["cmdline"] or [])):
                out.append(p)
        except psutil.Error:
            pass
    return out


def test_server_killed_mid_job_is_lost_then_resumed(tmp_path, devices, sshd):
    out, remote = tmp_path / "out", tmp_path / "remote"
    suite = _suite(tmp_path, ["ssh-dev"], [LATENCY, {"name": "latency", "params": {"prompt_tokens": 8,
                                                                                  "gen_tokens": 5}}])
    env = {"SLMBENCH_DEVICES_DIR": str(devices)}
    from conftest import cli_env
    proc = subprocess.Popen([sys.executable, "-m", "slmbench.cli", "run", str(suite), "--out", str(out)], cwd=REPO,
                            env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # mid-job: the job is running on the device (its worker process has started there)
    def worker_running():
        return [c for p in _device_procs(str(remote / "jobs")) for c in _children(p)
                if "slmbench.executors.worker" in " ".join(_cmdline(c))]
    _wait_for(worker_running, what="the job's worker on the device")
    on_device = _device_procs(str(remote / "jobs")) + worker_running()  # launcher and worker
    sshd.kill()
    try:
        _, err = proc.communicate(timeout=180)
    finally:
        sshd.start()  # the same port and host key: the device is back
    assert proc.returncode == 0, err
    jobs = _jobs(out)
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"lost"}, [(j["status"], j["error"]) for j in jobs]
    for j in jobs:
        print(f"  fault line: {j['status']}: {j['error']}")
        assert "\n" not in j["error"] and "127.0.0.1" in j["error"]
    assert "mid-job" in jobs[0]["error"] and "cannot connect" in jobs[1]["error"]
    # the device's job did not outlive the connection: its launcher saw EOF and killed the worker's group
    _wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in on_device),
              timeout=15, what="the device's job to be killed")
    # the lost job's directory is still on the device (nobody could remove it); let it grow older than the sweep's
    # grace period, as it would between a lost run and a later --resume
    left = sorted(d.name for d in (remote / "jobs").iterdir())
    assert len(left) == 1 and (remote / "jobs" / left[0] / ".lock").is_file()
    _age(remote / "jobs" / left[0], 2 * SWEEP_GRACE_S)
    rc, _, err = run_cli("run", suite, "--out", out, "--resume", env=env)
    assert rc == 0, err
    jobs = _jobs(out)
    assert len(jobs) == 2 and {j["status"] for j in jobs} == {"ok"}, [(j["status"], j["error"]) for j in jobs]
    swept = [s for j in jobs for s in json.loads(j["info"])["ssh"].get("swept", [])]
    assert swept == left and not list((remote / "jobs").iterdir())  # resumed, and nothing left behind


def _age(d: Path, seconds: float) -> None:
    """Set the mtime of `d` and everything in it `seconds` into the past."""
    t = time.time() - seconds
    for p in [d, *d.rglob("*")]:
        os.utime(p, (t, t))


def test_sweep_removes_left_behind_dirs_never_a_running_job(tmp_path, devices, sshd, monkeypatch):
    """A job starting on the device removes the directories finished or lost jobs left behind; a job still running
    there (its launcher holds its lock) is kept even when its files look old; a fresh directory (a driver still
    uploading) is kept."""
    import signal
    import threading
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devices))
    from slmbench.contracts import load_profile
    from slmbench.executors.ssh import run_job_ssh
    from slmbench.plan import expand, load_suite
    jobs_dir = tmp_path / "remote" / "jobs"
    prof = load_profile("ssh-dev")
    a_job, b_job = expand(load_suite(str(_suite(tmp_path, ["ssh-dev"], [LATENCY, {
        "name": "latency", "params": {"prompt_tokens": 8, "gen_tokens": 5}}]))), tmp_path)
    got = {}
    a = threading.Thread(target=lambda: got.setdefault("a", run_job_ssh(a_job, prof, tmp_path / "logs")))
    a.start()
    stopped = []
    try:
        def worker():
            return [c for p in _device_procs(str(jobs_dir)) for c in _children(p)
                    if "slmbench.executors.worker" in " ".join(_cmdline(c))]
        _wait_for(worker, what="job A's worker on the device")
        stopped += worker()
        for w in stopped:  # job A stays running (paused) while job B starts and sweeps
            w.send_signal(signal.SIGSTOP)
        (a_dir,) = list(jobs_dir.iterdir())
        _age(a_dir, 2 * SWEEP_GRACE_S)  # old-looking, but its launcher holds the lock: running
        lost = jobs_dir / "lost-0001"  # a lost job's leftovers: its lock file, free
        lost.mkdir()
        (lost / ".lock").write_text("")
        (lost / "job.json").write_text("{}")
        _age(lost, 2 * SWEEP_GRACE_S)
        never = jobs_dir / "never-started-0002"  # uploaded, the connection went before the launcher ran
        never.mkdir()
        (never / "job.json").write_text("{}")
        _age(never, 2 * SWEEP_GRACE_S)
        fresh = jobs_dir / "uploading-0003"  # a driver uploading right now (no lock yet, just written)
        fresh.mkdir()
        (fresh / "job.json").write_text("{}")
        res = run_job_ssh(b_job, prof, tmp_path / "logs")
        assert res.status == "ok", res.error
        print(f"\n  swept by job B: {res.info['ssh'].get('swept')}")
        assert sorted(res.info["ssh"]["swept"]) == ["lost-0001", "never-started-0002"]
        assert a_dir.is_dir() and fresh.is_dir() and not lost.exists() and not never.exists()
    finally:
        for w in stopped:
            try:
                w.send_signal(signal.SIGCONT)
            except psutil.Error:
                pass
        a.join(timeout=180)
    assert got["a"].status == "ok", got["a"].error  # the running job was never disturbed
    assert sorted(d.name for d in jobs_dir.iterdir()) == ["uploading-0003"]


def _full_dir(tmp_path: Path):
    """A work directory on a tiny tmpfs filled up (root), else a read-only directory. Returns (path, undo)."""
    d = tmp_path / "full"
    d.mkdir()
    if os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(d)],
                                            capture_output=True).returncode == 0:
        fd = os.open(d / "ballast", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        os.close(fd)
        return d, lambda: os.remove(d / "ballast")  # space freed; unmounted at the end

    d.chmod(0o555)
    return d, lambda: d.chmod(0o755)


def test_faults_each_one_line_suite_goes_on(tmp_path, devices, sshd):
    kh_empty = tmp_path / "kh_empty"
    kh_empty.write_text("")
    other = _keygen(tmp_path / "other_host_key")
    kh_changed = tmp_path / "kh_changed"
    kh_changed.write_text(f"[127.0.0.1]:{sshd.port} {(tmp_path / 'other_host_key.pub').read_text()}")
    wrong = _keygen(tmp_path / "wrong_client_key")
    full, free_it = _full_dir(tmp_path)
    _profile(devices, "ssh-unknown", sshd, tmp_path / "r1", known_hosts=str(kh_empty))
    _profile(devices, "ssh-changed", sshd, tmp_path / "r2", known_hosts=str(kh_changed))
    _profile(devices, "ssh-wrongkey", sshd, tmp_path / "r3", key_file=str(wrong))
    _profile(devices, "ssh-full", sshd, full)
    names = ["ssh-unknown", "ssh-changed", "ssh-wrongkey", "ssh-full", "ssh-dev"]
    suite = _suite(tmp_path, names)
    out, env = tmp_path / "out", {"SLMBENCH_DEVICES_DIR": str(devices)}
    try:
        rc, _, err = run_cli("run", suite, "--out", out, env=env)
        assert rc == 0, err
        jobs = {j["label"].split("@")[1].split()[0]: j for j in _jobs(out)}
        assert set(jobs) == set(names)  # every job has a record; the suite went on past each fault
        for n in names[:4]:
            print(f"  {n:<13} {jobs[n]['status']}: {jobs[n]['error']}")
            assert "\n" not in jobs[n]["error"]
        assert jobs["ssh-unknown"]["status"] == "error" and "refused" in jobs["ssh-unknown"]["error"] \
            and "not in" in jobs["ssh-unknown"]["error"]
        assert jobs["ssh-changed"]["status"] == "error" and "CHANGED" in jobs["ssh-changed"]["error"]
        assert jobs["ssh-wrongkey"]["status"] == "error" and "authentication refused" in jobs["ssh-wrongkey"]["error"]
        assert jobs["ssh-full"]["status"] == "lost" and ("full" in jobs["ssh-full"]["error"])
        assert jobs["ssh-dev"]["status"] == "ok"
        free_it()
        rc, _, err = run_cli("run", suite, "--out", out, "--resume", env=env)
        assert rc == 0, err
        again = {j["label"].split("@")[1].split()[0]: j for j in _jobs(out)}
        assert again["ssh-full"]["status"] == "ok", again["ssh-full"]["error"]  # lost → resumed → done
        for n in ("ssh-unknown", "ssh-changed", "ssh-wrongkey"):  # final: resume leaves them as they were
            assert (again[n]["status"], again[n]["started"]) == ("error", jobs[n]["started"])
        assert again["ssh-dev"]["started"] == jobs["ssh-dev"]["started"]
        # no key material anywhere slmbench wrote: store, logs, report
        rc, report, err = run_cli("report", "--out", out)
        assert rc == 0, err
        secrets = []
        for k in (sshd.client_key, wrong, sshd.host_key, other):
            body = [ln for ln in k.read_text().splitlines() if ln and not ln.startswith("-----")]
            secrets += [ln for ln in body if len(ln) >= 20]
        hay = [(out / "results.sqlite").read_bytes().decode("latin-1"), report]
        hay += [p.read_text(errors="replace") for p in (out / "logs").rglob("*") if p.is_file()]
        for s in secrets:
            assert not any(s in h for h in hay)
    finally:
        if os.path.ismount(full):
            subprocess.run(["umount", "-l", str(full)], check=False)


def test_profile_refuses_key_material(tmp_path, sshd, monkeypatch):
    from slmbench.contracts import load_profile
    from slmbench.errors import UserError
    devs = tmp_path / "devices"
    devs.mkdir()
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devs))
    _profile(devs, "bad", sshd, tmp_path / "r", password="hunter2")
    with pytest.raises(UserError) as e:
        load_profile("bad")
    assert "extra.password" in e.value.line() and "bad.yaml" in e.value.line() and "hunter2" not in e.value.line()
    _profile(devs, "bad", sshd, tmp_path / "r", key_file="-----BEGIN OPENSSH PRIVATE KEY-----\nabc")
    with pytest.raises(UserError) as e:
        load_profile("bad")
    assert "extra.key_file" in e.value.line() and "never key material" in e.value.line()
    _profile(devs, "bad", sshd, tmp_path / "r", energy_sensor="hwmon")
    with pytest.raises(UserError) as e:
        load_profile("bad")
    assert "extra.energy_sensor" in e.value.line()


def test_timeout_on_the_device_kills_the_job(tmp_path, devices, sshd, monkeypatch):
    """settings.timeout_s is enforced on the device (the same run_job_process as a local job): `timeout`, one line."""
    monkeypatch.setenv("SLMBENCH_DEVICES_DIR", str(devices))
    from slmbench.contracts import load_profile
    from slmbench.executors.ssh import run_job_ssh
    from slmbench.plan import expand, load_suite
    job = expand(load_suite(str(_suite(tmp_path, ["ssh-dev"], timeout_s=1))), tmp_path)[0]
    res = run_job_ssh(job, load_profile("ssh-dev"), tmp_path / "logs")
    print(f"\n  fault line: {res.status}: {res.error}")
    assert res.status == "timeout" and "settings.timeout_s" in res.error
    assert not list((tmp_path / "remote" / "jobs").iterdir())  # cleaned up on the device
