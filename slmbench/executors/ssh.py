"""SSH transport: one job of an `adapter: ssh` device run on the device itself (LocalExecutor routes it here).

    driver (this machine)                               device (over SSH, paramiko)
    connect, verify the host key (known_hosts)   ──►
    SFTP: job.json, launch.json, devices/<p>.yaml ──►   WORKDIR/jobs/<key>-<nonce>/
    exec: REMOTE_PYTHON -m slmbench.executors.ssh DIR ►  launcher: run_job_process (the same per-job process,
                                                         timeout and memory cap as a local job), which starts
                                                         the device's `python -m slmbench.executors.worker`
    stdout lines: P progress | H heartbeat | R result ◄─
    SFTP: the job's log                          ◄──    the job directory is removed

Why paramiko, not the system ssh client: host-key and authentication failures arrive as typed exceptions (one
clear line each, no parsing of ssh's stderr), no user ~/.ssh/config or ControlMaster can change what connects,
SFTP and the exec channel share one connection, and the driver needs no ssh binary. `pip install 'slmbench[ssh]'`.

Lifetime: the launcher reads its stdin; when the channel closes (the driver's deadline, ^C, or the connection
dropped) it gets EOF and kills the job's process group; the worker also dies with the launcher (PDEATHSIG). On the
device, run_job_process enforces settings.timeout_s; the driver gives up DRIVER_GRACE_S later.

What a fault records (the suite goes on either way; every job gets a record):
    unknown or changed host key, authentication refused, missing key file, no slmbench on the device  `error`
    cannot connect, connection lost mid-job, silent for silence_s, device disk full or not writable    `lost`
`lost` is deliberately NOT a final status (contracts.result.RETRY): the store records it with its reason, and
`slmbench run --resume` runs the job again — the job did not fail, it was never finished. `error` is final.

Left-behind job directories: a connection lost mid-job leaves its directory on the device (the driver never got
to remove it). Each launcher holds an flock on its own JOBDIR/.lock for its whole life (the kernel drops it when the
launcher ends, however it ends) and, before its job, sweeps its siblings: a directory is removed only when no
launcher holds its lock AND nothing in it changed for SWEEP_GRACE_S (a directory whose driver is still uploading, or
whose launcher is starting, is fresh). So the next job on the device — the resumed one, after a reconnect — removes
what finished or lost jobs left; a job still running (its lock held) is never touched.

Model artifacts: the device resolves the model itself into its own cache (remote_cache_dir, else WORKDIR/cache;
random-init and cached sources need nothing). A model given by a local `path:` (a file or a directory) is copied
once into WORKDIR/artifacts/<sha256 of its content>/ and the job's path is pointed there; a later job, or run,
finds it by the hash and copies nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shlex
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

from ..contracts.result import JobResult

HEARTBEAT_S = 5.0
DRIVER_GRACE_S = 60.0  # past settings.timeout_s: the device's own timeout fires first, this only catches a hang
POLL_S = 0.05
LOG_TAIL_BYTES = 1 << 20
LOST = "lost"  # not final: --resume reruns it
SWEEP_GRACE_S = 600.0  # untouched this long and unlocked: left behind (env SLMBENCH_SSH_SWEEP_GRACE_S on the driver)
LOCK = ".lock"


class _Fault(Exception):
    def __init__(self, status: str, message: str):
        self.status, self.message = status, " ".join(str(message).split())[:500]
        super().__init__(self.message)


def _result(status: str, error: str | None, info: dict) -> JobResult:
    return JobResult(status, error, [], info)


# --- the driver side ---------------------------------------------------------------------------------------------

def run_job_ssh(job, profile, log_dir: Path, progress: Callable[[str], None] | None = None) -> JobResult:
    """Run `job` on the ssh device of `profile`; its result (never raises for a job's own or a transport fault)."""
    from ..adapters.ssh import settings_of
    s = settings_of(profile)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job.key}.log"
    where = f"{s.user}@{s.host}:{s.port}"
    info: dict = {"ssh": {"host": s.host, "port": s.port, "user": s.user, "workdir": s.remote_workdir}}
    times = info["ssh"]["times_s"] = {}
    t0 = time.perf_counter()
    client = sftp = rdir = None
    try:
        client = _connect(s)
        times["connect"] = time.perf_counter() - t0
        sftp = client.open_sftp()
        t1 = time.perf_counter()
        rdir, _ = _upload(sftp, s, job, profile, where)
        times["upload"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        res, remote = _execute(client, s, rdir, job, where, progress)
        times["remote"] = time.perf_counter() - t2
        swept = remote.pop("swept", None)
        if swept:
            info["ssh"]["swept"] = swept
        times.update({f"device_{k}": v for k, v in remote.items()})
        t3 = time.perf_counter()
        _fetch_log(sftp, rdir, log_path)
        _cleanup(sftp, rdir)
        times["fetch"] = time.perf_counter() - t3
        times["total"] = time.perf_counter() - t0
        # the SSH path's own cost: all but the job process and the device's one-off bandwidth measurement (which
        # the runner also makes, before the jobs, for a local CPU device)
        times["overhead"] = times["total"] - remote.get("job_process", remote.get("job", 0.0)) - \
            remote.get("bandwidth", 0.0)
        info["ssh"]["times_s"] = {k: round(v, 4) for k, v in times.items()}
        return res.with_info(**info)
    except _Fault as f:
        if sftp is not None and rdir is not None:
            try:  # the job's log on the device, as far as it got (when the connection still stands)
                _fetch_log(sftp, rdir, log_path)
            except Exception:  # the connection is gone: nothing to fetch
                pass
        _note(log_path, f"slmbench ssh: {f.status}: {f.message}")
        info["ssh"]["times_s"] = {k: round(v, 4) for k, v in times.items()}
        return _result(f.status, f.message, info)
    finally:
        if client is not None:
            client.close()


def _note(log_path: Path, line: str) -> None:
    with open(log_path, "a") as f:
        f.write(line + "\n")


def _connect(s):
    try:
        import paramiko
    except ImportError:
        raise _Fault("error", "the ssh device needs paramiko, which is not installed: pip install 'slmbench[ssh]'")

    class _Refuse(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise _UnknownHost(hostname, key)

    kh = Path(os.path.expanduser(s.known_hosts or "~/.ssh/known_hosts"))
    client = paramiko.SSHClient()
    if kh.is_file():
        client.get_host_keys().load(str(kh))  # not load_host_keys(): that would make paramiko write it back
    client.set_missing_host_key_policy(_Refuse())
    key_file = os.path.expanduser(s.key_file) if s.key_file else None
    if key_file and not os.path.isfile(key_file):
        raise _Fault("error", f"key_file {key_file} not found (extra.key_file of profile)")
    target = f"{s.user}@{s.host}:{s.port}"
    try:
        client.connect(s.host, port=s.port, username=s.user, key_filename=key_file, allow_agent=key_file is None,
                       look_for_keys=False, timeout=s.connect_timeout_s, banner_timeout=s.connect_timeout_s,
                       auth_timeout=s.connect_timeout_s, channel_timeout=s.connect_timeout_s)
    except _UnknownHost as e:
        client.close()
        raise _Fault("error", f"host key of {_hostport(s)} refused: {e.key_line} is not in {kh} (unknown host; check "
                     f"the fingerprint on the device, then add it: ssh-keyscan -p {s.port} {s.host} >> {kh})")
    except paramiko.BadHostKeyException as e:
        client.close()
        raise _Fault("error", f"host key of {_hostport(s)} CHANGED: the device offers {e.key.get_name()} "
                     f"{e.key.fingerprint}, {kh} has {e.expected_key.fingerprint}; refused (if the device was "
                     "reinstalled, remove its old line from known_hosts and add the new key)")
    except paramiko.PasswordRequiredException:
        client.close()
        raise _Fault("error", f"key_file {key_file} is passphrase-protected: load it into the ssh agent "
                     "(ssh-add) and drop key_file from the profile")
    except paramiko.AuthenticationException as e:
        client.close()
        how = f"key_file {key_file}" if key_file else "the ssh agent's keys"
        raise _Fault("error", f"ssh authentication refused for {target} with {how} ({e})")
    except (OSError, EOFError, paramiko.SSHException) as e:  # refused, unreachable, timed out, dropped in handshake
        client.close()
        why = getattr(e, "strerror", None) or str(e) or type(e).__name__
        raise _Fault(LOST, f"cannot connect to {target}: {why}")
    client.get_transport().set_keepalive(HEARTBEAT_S)
    return client


class _UnknownHost(Exception):
    def __init__(self, hostname, key):
        self.key_line = f"{key.get_name()} {key.fingerprint}"
        super().__init__(hostname)


def _hostport(s) -> str:
    return s.host if s.port == 22 else f"[{s.host}]:{s.port}"


def _upload(sftp, s, job, profile, where: str) -> tuple[str, dict]:
    """The job's directory on the device, with the job spec, the launch settings and the device profile."""
    import yaml
    try:
        home = sftp.normalize(".")
        work = s.remote_workdir if posixpath.isabs(s.remote_workdir) else posixpath.join(home, s.remote_workdir)
        rdir = posixpath.join(work, "jobs", f"{job.key}-{uuid.uuid4().hex[:8]}")
        _mkdirs(sftp, posixpath.join(rdir, "devices"))
        job_json = job.to_json()
        if job.model.path and Path(job.model.path).exists():
            job_json["model"] = {**job_json["model"], "path": _artifact(sftp, work, Path(job.model.path))}
        launch = {"env": {"SLMBENCH_DEVICES_DIR": posixpath.join(rdir, "devices"),
                          "SLMBENCH_CACHE_DIR": s.remote_cache_dir or posixpath.join(work, "cache"),
                          **({"SLMBENCH_DATA_DIR": s.remote_data_dir} if s.remote_data_dir else {})},
                  "min_free_mb": s.min_free_mb, "heartbeat_s": HEARTBEAT_S,
                  "sweep_grace_s": float(os.environ.get("SLMBENCH_SSH_SWEEP_GRACE_S", SWEEP_GRACE_S))}
        _put(sftp, posixpath.join(rdir, "job.json"), json.dumps(job_json, default=str))
        _put(sftp, posixpath.join(rdir, "launch.json"), json.dumps(launch))
        _put(sftp, posixpath.join(rdir, "devices", f"{profile.name}.yaml"),
             yaml.safe_dump(profile.model_dump(), sort_keys=False))
    except OSError as e:
        raise _Fault(LOST, f"cannot write the job's files to {where} {s.remote_workdir} over SFTP "
                     f"({_sftp_why(e)}): the device's disk is full or the directory is not writable; fix it, then "
                     "run again with --resume")
    return rdir, job_json


def _sftp_why(e: OSError) -> str:
    import errno
    if e.errno == errno.EACCES:
        return "permission denied"
    return str(e.strerror or e.args[0] if e.args else e) or type(e).__name__


def _put(sftp, path: str, text: str) -> None:
    with sftp.open(path, "w") as f:
        f.write(text.encode())


def _mkdirs(sftp, path: str) -> None:
    parts, cur = [p for p in path.split("/") if p], "/" if path.startswith("/") else ""
    for p in parts:
        cur = posixpath.join(cur, p) if cur else p
        try:
            sftp.stat(cur)
        except FileNotFoundError:
            sftp.mkdir(cur)


_HASHES: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """Content hash of a file, or of a directory's files (names and contents). Remembered per (path, size, mtime)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    ident = (str(path), tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files))
    if ident not in _HASHES:
        h = hashlib.sha256()
        for f in files:
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        _HASHES[ident] = h.hexdigest()
    return _HASHES[ident]


def _artifact(sftp, work: str, path: Path) -> str:
    """Copy a local model file/directory to the device once, keyed by its sha256; its path there."""
    digest = _sha256(path)
    base = posixpath.join(work, "artifacts", digest)
    dest = posixpath.join(base, path.name)
    try:
        sftp.stat(posixpath.join(base, ".complete"))
        return dest
    except FileNotFoundError:
        pass
    _mkdirs(sftp, base)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else ""
        target = posixpath.join(dest, rel) if rel else dest
        _mkdirs(sftp, posixpath.dirname(target))
        sftp.put(str(f), target)
    _put(sftp, posixpath.join(base, ".complete"), digest)  # written last: a half copy is never taken as done
    return dest


def _execute(client, s, rdir: str, job, where: str, progress) -> tuple[JobResult, dict]:
    """Start the launcher on the device and follow its lines until its result (or the channel ends)."""
    cmd = f"{shlex.quote(s.remote_python)} -m slmbench.executors.ssh {shlex.quote(rdir)}"
    try:
        chan = client.get_transport().open_session(timeout=s.connect_timeout_s)
        chan.exec_command(cmd)
    except Exception as e:  # paramiko.SSHException, EOFError, OSError: the connection went away
        raise _Fault(LOST, f"connection to {where} lost before the job started ({type(e).__name__}: {e})")
    deadline = time.monotonic() + job.settings.timeout_s + DRIVER_GRACE_S
    heard, buf, err, result = time.monotonic(), b"", b"", None
    try:
        while True:
            got = False
            while chan.recv_ready():
                buf += chan.recv(65536)
                got = True
            while chan.recv_stderr_ready():
                err = (err + chan.recv_stderr(65536))[-4096:]
                got = True
            *lines, buf = buf.split(b"\n")
            for ln in lines:
                kind, _, rest = ln.decode("utf-8", "replace").partition(" ")
                if kind == "P" and progress:
                    progress(rest)
                elif kind == "R":
                    result = json.loads(rest)
            now = time.monotonic()
            if got:
                heard = now
            if result is not None or (chan.exit_status_ready() and not chan.recv_ready()
                                      and not chan.recv_stderr_ready()):
                break
            if not client.get_transport().is_active():
                break
            if now - heard > s.silence_s:
                raise _Fault(LOST, f"connection to {where} lost mid-job: no heartbeat for {s.silence_s:g} s "
                             "(extra.silence_s)")
            if now > deadline:
                return _result("timeout", f"no result from {where} after {job.settings.timeout_s + DRIVER_GRACE_S:g}"
                               f" s (settings.timeout_s + {DRIVER_GRACE_S:g} s); the job on the device was "
                               "killed", {}), {}
            time.sleep(POLL_S)
    finally:
        chan.close()  # the launcher sees EOF on its stdin and kills what is still running
    if result is not None:
        d = result["result"]
        res = JobResult.from_dict(d)
        return res, result.get("times", {})
    code = chan.recv_exit_status() if chan.exit_status_ready() else -1
    tail = _last_line(err.decode("utf-8", "replace"))
    if not client.get_transport().is_active():
        raise _Fault(LOST, f"connection to {where} lost mid-job" + (f" ({tail})" if tail else ""))
    if code == -1:  # the channel closed with no exit status: the launcher was killed by a signal
        raise _Fault("crashed", f"the launcher on {where} died without an exit status (killed by a signal?)" +
                     (f": {tail}" if tail else ""))
    if "No module named" in tail or code == 127:
        raise _Fault("error", f"cannot start slmbench on {where} with {s.remote_python} (exit {code}): {tail} — "
                     "install slmbench in that Python (extra.remote_python)")
    raise _Fault("crashed", f"the launcher on {where} exited with code {code} and no result" +
                 (f": {tail}" if tail else ""))


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _fetch_log(sftp, rdir: str, log_path: Path, append: bool = False) -> None:
    try:
        with sftp.open(posixpath.join(rdir, "job.log"), "r") as f:
            size = f.stat().st_size
            f.seek(max(0, size - LOG_TAIL_BYTES))
            data = f.read()
    except Exception:  # no log there (the job never started), or the connection went: nothing to fetch
        return
    with open(log_path, "ab" if append else "wb") as out:
        out.write(data)


def _cleanup(sftp, rdir: str) -> None:
    try:
        _remove(sftp, rdir)
    except Exception:  # leftovers of one job directory on the device; never a reason to lose its result
        pass


def _remove(sftp, rdir: str) -> None:
    """The job's directory and everything the job wrote in it (its lock file included)."""
    import stat
    for a in sftp.listdir_attr(rdir):
        path = posixpath.join(rdir, a.filename)
        if stat.S_ISDIR(a.st_mode or 0):
            _remove(sftp, path)
        else:
            try:
                sftp.remove(path)
            except OSError:
                pass
    sftp.rmdir(rdir)


# --- the device side: python -m slmbench.executors.ssh JOBDIR ------------------------------------------------------

def serve(rdir: Path) -> int:
    """The launcher: run the job as a local job here (run_job_process), relay its progress, print its result."""
    import _thread
    import shutil
    launch = json.loads((rdir / "launch.json").read_text())
    os.environ.update(launch["env"])
    out_lock = threading.Lock()
    done = threading.Event()

    def say(kind: str, text: str = "") -> None:
        try:
            with out_lock:
                sys.stdout.write(f"{kind} {text}\n")
                sys.stdout.flush()
        except (OSError, ValueError):  # the channel is gone: stop the job
            if not done.is_set():
                _thread.interrupt_main()

    def watch_stdin() -> None:  # EOF: the driver closed the channel (deadline, ^C) or the connection dropped
        while sys.stdin.buffer.read(1):
            pass
        if not done.is_set():
            _thread.interrupt_main()

    def heartbeat() -> None:
        while not done.wait(launch.get("heartbeat_s", HEARTBEAT_S)):
            say("H")

    t0 = time.perf_counter()
    times: dict = {}
    try:
        _hold_lock(rdir)  # held until this process ends: a sweeper never takes a running job's directory
        swept = sweep(rdir.parent, rdir, launch.get("sweep_grace_s", SWEEP_GRACE_S))
        if swept:
            say("P", f"removed {len(swept)} job director{'y' if len(swept) == 1 else 'ies'} left behind by finished "
                "or lost jobs on the device")
            times["swept"] = swept
        threading.Thread(target=watch_stdin, daemon=True).start()
        threading.Thread(target=heartbeat, daemon=True).start()
        need = launch.get("min_free_mb", 0) * 1e6
        for d in {str(rdir), os.environ["SLMBENCH_CACHE_DIR"]}:
            Path(d).mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(d).free
            if free < need:
                raise _Fault(LOST, f"the device's disk is full: {free / 1e6:.0f} MB free in {d}, the job needs "
                             f"{need / 1e6:.0f} MB (extra.min_free_mb); free space there, then run again with --resume")
        from .local import run_job_process
        job = _SpecJob(json.loads((rdir / "job.json").read_text()))
        times["prep"] = time.perf_counter() - t0
        _ensure_bandwidth(job.d, lambda msg: say("P", msg))
        t1 = time.perf_counter()
        times["bandwidth"] = t1 - t0 - times["prep"]
        res = run_job_process(job, rdir, lambda msg: say("P", msg)).to_dict()
        times["job_process"] = time.perf_counter() - t1
        log = rdir / f"{job.key}.log"
        if log.is_file():
            os.replace(log, rdir / "job.log")
    except _Fault as f:
        res = {"status": f.status, "error": f.message, "metrics": [], "info": {}}
    except OSError as e:  # ENOSPC or EROFS while writing the job's files here
        res = {"status": LOST, "error": f"cannot write on the device ({e.strerror or e}): its disk is full or the "
               "work directory is not writable; fix it, then run again with --resume", "metrics": [], "info": {}}
    except KeyboardInterrupt:  # the driver went away: run_job_process has killed the job's process group
        done.set()
        return 130
    except Exception as e:  # our own bug or bad input here (a UserError): recorded, never a silent exit
        import traceback
        traceback.print_exc()
        line = e.line() if hasattr(e, "line") else f"{type(e).__name__}: {e}"
        res = {"status": "error" if hasattr(e, "line") else "crashed", "error": f"on the device: {line}"[:500],
               "metrics": [], "info": {"traceback": traceback.format_exc()[-4000:]}}
    done.set()
    say("R", json.dumps({"result": res, "times": {**times, "job": time.perf_counter() - t0}}, default=str))
    return 0


_HELD: list[int] = []


def _hold_lock(rdir: Path) -> None:
    import fcntl
    fd = os.open(rdir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    _HELD.append(fd)  # never closed: the kernel releases it when this process ends, however it ends


def sweep(jobs_dir: Path, own: Path | None, grace_s: float) -> list[str]:
    """Remove the job directories in `jobs_dir` that no launcher holds (its .lock free, or none) and in which
    nothing changed for `grace_s`; their names. Never `own`, never one whose lock is held (a job still running)."""
    import fcntl
    import shutil
    removed = []
    try:
        dirs = [d for d in jobs_dir.iterdir() if d.is_dir() and d != own]
    except OSError:
        return removed
    for d in dirs:
        try:  # the newest change anywhere in it: a driver uploading, a launcher starting, a job writing its log
            newest = max([d.stat().st_mtime] + [f.stat().st_mtime for f in d.rglob("*")])
        except OSError:  # vanished meanwhile (another launcher swept it)
            continue
        if time.time() - newest < grace_s:
            continue
        fd = None
        try:
            if (d / LOCK).exists():
                fd = os.open(d / LOCK, os.O_RDWR)
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: its launcher still runs
            shutil.rmtree(d)
            removed.append(d.name)
        except OSError:  # held (running), or removed by another sweeper meanwhile: leave it
            pass
        finally:
            if fd is not None:
                os.close(fd)
    return removed


class _SpecJob:
    """What run_job_process reads of a Job (key, settings, to_json), from the job's JSON. Not plan.Job.from_json:
    building a Variant loads every backend (torch and all), ~5 s of the launcher's time on a small machine; the
    worker it starts builds the real Job."""

    def __init__(self, d: dict):
        from types import SimpleNamespace
        self.d, self.key = d, d["key"]
        self.settings = SimpleNamespace(**{"memory_limit_gb": None, **d["settings"]})

    def to_json(self) -> dict:
        return self.d


def _ensure_bandwidth(job: dict, say) -> None:
    """The device's own memory bandwidth for rooflines, measured once per device and thread count (cached in the
    device's cache dir), in its own process, before the job — as the runner does for a local CPU job."""
    from ..adapters.bandwidth import cached, ensure
    from ..contracts import SCENARIOS, effective_threads, load_profile
    prof = load_profile(job["device"])
    if job.get("unsupported") or prof.memory_bandwidth_gbs:
        return
    threads = effective_threads(prof, (job.get("variant") or {}).get("threads") or job.get("device_threads"))
    if not cached(threads) and SCENARIOS.get(job["scenario"]).needs_engine:  # (the registry scan, ~2 s: last)
        say(f"measuring memory read bandwidth on the device ({threads} threads, once per device)…")
        ensure(threads)


if __name__ == "__main__":
    code = serve(Path(sys.argv[1]))
    sys.stdout.flush()
    os._exit(code)  # no interpreter shutdown with the stdin watcher still blocked in read() (it could abort)
