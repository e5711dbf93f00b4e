"""Android over adb: the phone's own llama.cpp tools, run there, parsed into the same Metric rows the host's scenarios
emit (source "measured", note "... on the device").

    transport (AdbPhone)                       adb -s SERIAL push / shell; a llama.cpp build the user supplies
                                               (extra.llama_build_dir: pushed once, cached by content hash) or
                                               binaries already on the phone (extra.device_bin_dir); the GGUF pushed
                                               once per content hash (remote_dir/models/<sha256>/)
    llama-bench -o json                        prefill_tok_s (pp tests), decode_tok_s (tg tests), with samples
    llama-perplexity ... (its last line)       ppl with its ± (stderr), and the per-chunk running estimates
    dumpsys battery, before and after          battery level drop (%), charge used (mAh, from Charge counter),
                                               voltage, battery temperature rise (°C)
    dumpsys thermalservice, before and after   thermal status and the hottest CPU/skin/battery sensor

A job on an `adapter: adb` device is run by executors/adb.py (latency → llama-bench, perplexity →
llama-perplexity; other scenarios and backends are `unsupported` there). The formats are those llama.cpp prints
(llama-bench's JSON fields, perplexity's `Final estimate: PPL = X +/- Y`) and Android's dumpsys. The transport is
tested with a FAKE `adb` (tests/data/adb/fake_phone_adb.py) that runs the commands on this machine: UNCHECKED on a
real phone.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
import shlex
import subprocess
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..contracts import register_adapter
from ..contracts.adapter import ENERGY, HOST_CPU, RUNS_MODELS, Adapter
from ..metrics import Metric

ON_DEVICE = "on the device"


class ParseError(ValueError):
    """Output that is not what the tool prints: one line saying what was expected."""


# --- llama-bench -o json ---------------------------------------------------------------------------------------

def llama_bench_rows(text: str) -> list[Metric]:
    """llama-bench's JSON array (one object per test) → prefill_tok_s / decode_tok_s rows, labelled by test."""
    try:
        tests = json.loads(text)
    except ValueError as e:
        raise ParseError(f"llama-bench output is not JSON (run it with -o json): {e}")
    if isinstance(tests, dict):
        tests = [tests]
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise ParseError("llama-bench JSON: expected an array of test objects")
    out = []
    for t in tests:
        try:
            n_prompt, n_gen = int(t["n_prompt"]), int(t["n_gen"])
            avg, sd = float(t["avg_ts"]), float(t.get("stddev_ts") or 0.0)
        except (KeyError, TypeError, ValueError) as e:
            raise ParseError(f"llama-bench JSON: a test lacks {e} (fields n_prompt, n_gen, avg_ts)")
        depth = int(t.get("n_depth") or 0)
        samples = [float(x) for x in t.get("samples_ts") or []]
        if n_gen == 0 and n_prompt > 0:
            name, labels = "prefill_tok_s", {"test": f"pp{n_prompt}"}
        elif n_prompt == 0 and n_gen > 0:
            name, labels = "decode_tok_s", {"test": f"tg{n_gen}"}
        else:  # -pg: prompt and generation together; llama-bench's t/s is over both
            name, labels = "pp_tg_tok_s", {"test": f"pp{n_prompt}+tg{n_gen}"}
        if depth:
            labels["depth"] = depth
        note = (f"llama-bench {t.get('build_commit', '?')}, {t.get('model_type', '?')}, {t.get('backends', '?')}, "
                f"{t.get('n_threads', '?')} threads, {ON_DEVICE}")
        n = len(samples) or 1  # llama-bench's stddev_ts over its repetitions → the mean's standard error
        se = sd / math.sqrt(n) if sd and n > 1 else None
        out.append(Metric(name, avg, "tok/s", n=n, spread=se, spread_kind="stderr" if se else None,
                          higher_is_better=True, samples=samples or None, labels=labels,
                          note=note + (f"; stddev {sd:.3g} tok/s" if sd else "")))
    return out


# --- llama-perplexity ------------------------------------------------------------------------------------------

_FINAL = re.compile(r"Final estimate:\s*PPL\s*=\s*([0-9.]+(?:e[+-]?\d+)?)\s*\+/-\s*([0-9.]+(?:e[+-]?\d+)?)")
_CHUNK = re.compile(r"\[(\d+)\]\s*([0-9.]+|nan|inf)")


def perplexity_rows(text: str) -> list[Metric]:
    """llama-perplexity's output → ppl (± its standard error) and the number of chunks it ran."""
    m = _FINAL.search(text)
    if not m:
        if re.search(r"\[\d+\]\s*nan", text):
            raise ParseError("llama-perplexity reported nan (broken weights or a bad quantization)")
        raise ParseError("no 'Final estimate: PPL = X +/- Y' line in llama-perplexity's output (did it finish?)")
    ppl, unc = float(m.group(1)), float(m.group(2))
    if not math.isfinite(ppl):
        raise ParseError(f"llama-perplexity's estimate is not finite: {m.group(1)}")
    chunks = [(int(i), v) for i, v in _CHUNK.findall(text)]
    n = max((i for i, _ in chunks), default=0)
    note = f"llama-perplexity, final estimate over {n or '?'} chunks, {ON_DEVICE}"
    rows = [Metric("ppl", ppl, "", n=n or 1, spread=unc, spread_kind="stderr", higher_is_better=False, note=note)]
    if n:
        rows.append(Metric("ppl_chunks", n, "chunks", note=f"llama-perplexity, {ON_DEVICE}"))
    return rows


# --- dumpsys battery / thermalservice, before and after --------------------------------------------------------

def parse_battery(text: str) -> dict:
    """`dumpsys battery` → {level, scale, voltage_mv, temperature_c, charge_counter_uah, status, powered}."""
    kv = {}
    for line in text.splitlines():
        k, sep, v = line.strip().partition(":")
        if sep:
            kv[k.strip().lower()] = v.strip()
    if "level" not in kv:
        raise ParseError("not `dumpsys battery` output (no 'level:' line)")

    def num(k, f=float):
        try:
            return f(kv[k])
        except (KeyError, ValueError):
            return None
    return {"level": num("level"), "scale": num("scale") or 100.0, "voltage_mv": num("voltage"),
            "temperature_c": (num("temperature") / 10.0) if num("temperature") is not None else None,
            "charge_counter_uah": num("charge counter"), "status": num("status", int),
            "powered": any(kv.get(f"{s} powered") == "true" for s in ("ac", "usb", "wireless", "dock"))}


_TEMP = re.compile(r"Temperature\{mValue=([-0-9.]+), mType=(-?\d+), mName=([^,]+), mStatus=(\d+)\}")
THERMAL_TYPES = {0: "cpu", 1: "gpu", 2: "battery", 3: "skin"}


def parse_thermal(text: str) -> dict:
    """`dumpsys thermalservice` → {status, temps: {name: (°C, type)}} from 'Current temperatures from HAL'
    (else the cached ones)."""
    st = re.search(r"Thermal Status:\s*(\d+)", text)
    if not st:
        raise ParseError("not `dumpsys thermalservice` output (no 'Thermal Status:' line)")
    part = text.split("Current temperatures from HAL:", 1)
    block = part[1] if len(part) == 2 else text
    temps = {}
    for v, typ, name, _ in _TEMP.findall(block):
        temps[name.strip()] = (float(v), THERMAL_TYPES.get(int(typ), f"type{typ}"))
    return {"status": int(st.group(1)), "temps": temps}


def battery_thermal_rows(bat_before: str, bat_after: str, th_before: str | None = None,
                         th_after: str | None = None, seconds: float | None = None) -> list[Metric]:
    """Before/after snapshots around a run → rows. Charge used comes from the fuel gauge's Charge counter (µAh);
    average power from it × mean voltage over `seconds`, only while unplugged (on a charger it is not the draw)."""
    a, b = parse_battery(bat_before), parse_battery(bat_after)
    rows = []
    plugged = a["powered"] or b["powered"]
    why = f"dumpsys battery before/after, {ON_DEVICE}" + ("; ON A CHARGER: not the phone's draw" if plugged else "")
    if a["level"] is not None and b["level"] is not None:
        rows.append(Metric("battery_level_drop_pct", (a["level"] - b["level"]) * 100.0 / a["scale"], "%",
                           higher_is_better=False, note=why + " (1% steps)"))
    if a["charge_counter_uah"] is not None and b["charge_counter_uah"] is not None:
        mah = (a["charge_counter_uah"] - b["charge_counter_uah"]) / 1000.0
        rows.append(Metric("battery_charge_used_mah", mah, "mAh", higher_is_better=False, note=why))
        if seconds and a["voltage_mv"] and b["voltage_mv"] and not plugged:
            v = (a["voltage_mv"] + b["voltage_mv"]) / 2 / 1000.0
            rows.append(Metric("battery_power_w", mah * 3.6 * v / seconds, "W", higher_is_better=False,
                               note=f"charge counter × mean voltage {v:.2f} V over {seconds:g} s, {ON_DEVICE}"))
    if a["temperature_c"] is not None and b["temperature_c"] is not None:
        rows.append(Metric("battery_temp_rise_c", b["temperature_c"] - a["temperature_c"], "°C",
                           higher_is_better=False, note=why))
    if th_before and th_after:
        ta, tb = parse_thermal(th_before), parse_thermal(th_after)
        rows.append(Metric("thermal_status", tb["status"], "", higher_is_better=False,
                           note=f"Android thermal status after the run (0 none … 6 shutdown; before: {ta['status']}), "
                                f"{ON_DEVICE}"))
        for kind in ("cpu", "skin"):
            after = [t for t, k in tb["temps"].values() if k == kind]
            before = [t for t, k in ta["temps"].values() if k == kind]
            if after and before:
                rows.append(Metric(f"{kind}_temp_max_c", max(after), "°C", higher_is_better=False,
                                   labels={"when": "after"}, note=f"hottest {kind} sensor after the run "
                                   f"(before: {max(before):.1f} °C), dumpsys thermalservice, {ON_DEVICE}"))
    return rows


# --- the transport ---------------------------------------------------------------------------------------------

TOOLS = ("llama-bench", "llama-perplexity")


class AdbSettings(BaseModel):
    """`extra:` of an adb profile."""
    model_config = ConfigDict(extra="forbid")
    serial: str | None = Field(None, description="adb -s SERIAL; none: the only device attached")
    adb: str = Field("adb", min_length=1, description="the adb executable (a name on PATH, or a path)")
    llama_build_dir: str | None = Field(None, description="a local directory with an Android (arm64) build of "
                                        "llama-bench and llama-perplexity (and their lib*.so): pushed once")
    device_bin_dir: str | None = Field(None, description="or: the directory on the phone that already has them")
    remote_dir: str = Field("/data/local/tmp/slmbench", min_length=1, description="a writable directory on the phone")
    threads: int | None = Field(None, ge=1, description="-t for the tools; none: the profile's cores, else 4")
    repetitions: int = Field(5, ge=1, description="llama-bench -r")
    timeout_s: float = Field(1800, gt=0, description="one adb command")

    @model_validator(mode="after")
    def _one_build(self):
        if bool(self.llama_build_dir) == bool(self.device_bin_dir):
            raise ValueError("name exactly one of llama_build_dir (pushed) or device_bin_dir (already on the phone)")
        return self


class AdbError(Exception):
    """adb or a tool on the phone failed: one line."""


_HASHES: dict[tuple, str] = {}


def _sha256(path: Path) -> str:
    """Content hash of a file or a directory's files; remembered per (path, size, mtime): a GGUF is hashed once."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    ident = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if ident not in _HASHES:
        _HASHES[ident] = _digest(files)
    return _HASHES[ident]


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


class AdbPhone:
    """One phone over adb. Every command is `adb [-s SERIAL] ...`; failures raise AdbError with one line."""

    def __init__(self, s: AdbSettings, cores: int | None = None):
        self.s = s
        self.threads = s.threads or cores or 4
        self.log: list[str] = []  # every command and its output's tail, for the job's log
        self._bin: str | None = None

    def _adb(self, *args: str, timeout: float | None = None) -> str:
        cmd = [self.s.adb, *(["-s", self.s.serial] if self.s.serial else []), *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout or self.s.timeout_s)
        except FileNotFoundError:
            raise AdbError(f"adb not found ({self.s.adb}): install Android platform-tools or set extra.adb")
        except subprocess.TimeoutExpired:
            raise AdbError(f"adb {' '.join(args[:2])} did not finish in {timeout or self.s.timeout_s:g} s")
        self.log.append(f"$ {' '.join(shlex.quote(c) for c in cmd)}  (exit {r.returncode})\n{r.stdout[-4000:]}"
                        f"{r.stderr[-4000:]}")
        if r.returncode != 0:
            tail = [ln.strip() for ln in (r.stderr or r.stdout).splitlines() if ln.strip()]
            raise AdbError(f"adb {' '.join(args[:1])} failed (exit {r.returncode}): "
                           f"{tail[-1][:300] if tail else 'no output'}")
        return r.stdout

    def shell(self, command: str, timeout: float | None = None) -> str:
        return self._adb("shell", command, timeout=timeout)

    def check(self) -> None:
        state = self._adb("get-state", timeout=30).strip()
        if state != "device":
            raise AdbError(f"the phone is not ready (adb get-state: {state or 'nothing'}): unlock it and allow USB "
                           "debugging")

    def _exists(self, remote: str) -> bool:
        return self.shell(f"test -e {shlex.quote(remote)} && echo yes || echo no", timeout=60).strip() == "yes"

    def push_once(self, local: Path, kind: str) -> str:
        """`local` (a file or a directory's files) pushed to remote_dir/KIND/<sha256>/, once: a `.complete` marker
        is written last, so a half copy is never taken as done. Its path on the phone."""
        digest = _sha256(local)
        base = f"{self.s.remote_dir}/{kind}/{digest[:16]}"
        dest = f"{base}/{local.name}" if local.is_file() else base
        if self._exists(f"{base}/.complete"):
            return dest
        self.shell(f"mkdir -p {shlex.quote(base)}", timeout=60)
        for f in ([local] if local.is_file() else sorted(p for p in local.iterdir() if p.is_file())):
            self._adb("push", str(f), f"{base}/{f.name}")
        self.shell(f"echo {digest} > {shlex.quote(base)}/.complete", timeout=60)
        return dest

    def bin_dir(self) -> str:
        """Where llama-bench and llama-perplexity are on the phone (pushed from llama_build_dir, once)."""
        if self._bin:
            return self._bin
        if self.s.device_bin_dir:
            d = self.s.device_bin_dir
        else:
            local = Path(self.s.llama_build_dir).expanduser()
            missing = [t for t in TOOLS if not (local / t).is_file()]
            if missing:
                raise AdbError(f"extra.llama_build_dir {local} has no {', '.join(missing)}")
            d = self.push_once(local, "llama")
            self.shell(f"chmod 755 {' '.join(shlex.quote(f'{d}/{t}') for t in TOOLS)}", timeout=60)
        for t in TOOLS:
            if not self._exists(f"{d}/{t}"):
                raise AdbError(f"no {t} in {d} on the phone (extra.device_bin_dir)")
        self._bin = d
        return d

    def _tool(self, tool: str, args: list[str], merge_stderr: bool) -> str:
        """Run a tool on the phone. Its stderr joins stdout (merge_stderr) or goes to remote_dir/TOOL.stderr (kept
        apart: llama-bench's JSON on stdout would be cut by its load logs); a failure's line comes from it."""
        d, err = self.bin_dir(), f"{self.s.remote_dir}/{tool}.stderr"
        redirect = "2>&1" if merge_stderr else f"2>{shlex.quote(err)}"
        try:
            return self.shell(f"cd {shlex.quote(self.s.remote_dir)} && LD_LIBRARY_PATH={shlex.quote(d)} "
                              f"{shlex.quote(d + '/' + tool)} {' '.join(shlex.quote(a) for a in args)} {redirect}")
        except AdbError as e:
            tail = ""
            if not merge_stderr:
                try:
                    lines = [ln for ln in self.shell(f"tail -n 5 {shlex.quote(err)}", timeout=60).splitlines()
                             if ln.strip()]
                    tail = lines[-1].strip()[:300] if lines else ""
                except AdbError:
                    pass
            raise AdbError(f"{tool} failed on the phone: {tail or e}")

    def bench(self, gguf: str, prompt_tokens: int, gen_tokens: int, repetitions: int | None = None) -> str:
        """llama-bench's JSON (-o json) for one pp and one tg test."""
        return self._tool("llama-bench", ["-m", gguf, "-p", str(prompt_tokens), "-n", str(gen_tokens),
                                          "-r", str(repetitions or self.s.repetitions), "-t", str(self.threads),
                                          "-o", "json"], merge_stderr=False)

    def perplexity(self, gguf: str, text_remote: str, context: int) -> str:
        return self._tool("llama-perplexity", ["-m", gguf, "-f", text_remote, "-c", str(context),
                                               "-t", str(self.threads)], merge_stderr=True)

    def battery(self) -> str:
        return self.shell("dumpsys battery", timeout=60)

    def thermal(self) -> str | None:
        try:
            return self.shell("dumpsys thermalservice", timeout=60)
        except AdbError:  # older Android: no thermal service; the battery's own temperature still comes
            return None


def settings_of(profile) -> AdbSettings:
    return AdbSettings(**profile.extra)


@register_adapter
class AdbAdapter(Adapter):
    """A phone measured on itself through adb. Jobs on it never run in a local process: executors/adb.py runs
    llama.cpp's tools there (latency and perplexity; any other scenario or backend is recorded `unsupported`)."""
    name = "adb"
    capabilities = frozenset({RUNS_MODELS, HOST_CPU, ENERGY})  # the phone's CPU; energy: its battery fuel gauge

    Settings = AdbSettings  # its `extra:`, validated by Adapter.check_profile

    def setup(self) -> None:
        from ..errors import Unsupported
        raise Unsupported(f"{self.profile.name} is a phone over adb: its jobs run there (executors/adb.py), "
                          "never in a process here")

    def info(self) -> dict:
        return {"adapter": "adb", "profile": self.profile.name, "serial": settings_of(self.profile).serial}
