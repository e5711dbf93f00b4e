"""One job of an `adapter: adb` device (a phone), run there with llama.cpp's own tools (adapters/adb.AdbPhone).

    latency     → llama-bench -p PROMPT -n GEN -r R -t T -o json      prefill_tok_s, decode_tok_s
    perplexity  → llama-perplexity -f TEXT -c CONTEXT -t T            ppl ± stderr (llama.cpp's windows: the
                                                                      first half of each is context only)
    around each: dumpsys battery / thermalservice, before and after   battery and thermal rows

The model is the job's GGUF: a model given as a .gguf file runs as it is; a model with HF files is exported and
quantized here once (quant.gguf, cached, the llamacpp backend's `quantization` knob), then pushed once per content
hash. Anything but backend llamacpp, or another scenario, is recorded `unsupported` with the reason. adb failures
(no phone, unauthorized, a tool that crashed) are `error` with adb's own last line; a phone that vanished mid-job is
`lost` (retried by --resume).
"""
from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Callable

from ..adapters.adb import (AdbError, AdbPhone, ParseError, battery_thermal_rows, llama_bench_rows, perplexity_rows,
                            settings_of)
from ..contracts.result import JobResult

SCENARIOS = ("latency", "perplexity")


# adb's own lines when the phone is gone (unplugged, rebooting, USB reset): `lost`, retried by --resume
LOST = re.compile(r"no devices|device offline|device '[^']*' not found|device unauthorized")


def run_job_adb(job, profile, log_dir: Path, progress: Callable[[str], None] | None = None) -> JobResult:
    say = progress or (lambda msg: None)
    log_dir.mkdir(parents=True, exist_ok=True)
    backend = job.variant.backend
    if job.unsupported:
        return JobResult("unsupported", job.unsupported, [], {})
    if backend != "llamacpp":
        return JobResult("unsupported", f"{profile.name} is a phone over adb: it runs llama.cpp's own tools "
                         f"(backend llamacpp), not backend {backend}", [], {})
    if job.scenario not in SCENARIOS:
        return JobResult("unsupported", f"{profile.name} (adb) runs {' and '.join(SCENARIOS)} through llama.cpp's "
                         f"tools, not {job.scenario}", [], {})
    phone = AdbPhone(settings_of(profile), profile.cores)
    info = {"device": {"adapter": "adb", "profile": profile.name, "serial": phone.s.serial},
            "threads": phone.threads}
    t0 = time.perf_counter()
    try:
        phone.check()
        gguf_local = _gguf(job, say)
        say(f"pushing {gguf_local.name} to the phone (once per content hash)…")
        gguf = phone.push_once(gguf_local, "models")
        phone.bin_dir()
        info["model"] = {"gguf": str(gguf_local), "gguf_on_device": gguf, "file_bytes": gguf_local.stat().st_size}
        bat0, th0, t1 = phone.battery(), phone.thermal(), time.perf_counter()
        p = job.params
        if job.scenario == "latency":
            say(f"llama-bench on the phone: pp{p.get('prompt_tokens', 128)} tg{p.get('gen_tokens', 64)}…")
            rows = llama_bench_rows(phone.bench(gguf, int(p.get("prompt_tokens", 128)),
                                                int(p.get("gen_tokens", 64)), job.settings.repetitions or None))
        else:
            text = _push_text(phone, p)
            say(f"llama-perplexity on the phone: context {p.get('context', 512)}…")
            rows = perplexity_rows(phone.perplexity(gguf, text, int(p.get("context", 512))))
        seconds = time.perf_counter() - t1
        rows += battery_thermal_rows(bat0, phone.battery(), th0, phone.thermal(), seconds=seconds)
        info["adb"] = {"seconds_on_device": round(seconds, 3), "total_s": round(time.perf_counter() - t0, 3)}
        return JobResult("ok", None, [r.to_dict() for r in rows], info)
    except (AdbError, ParseError) as e:
        lost = isinstance(e, AdbError) and LOST.search(str(e)) is not None
        return JobResult("lost" if lost else "error", f"{profile.name}: {e}", [], info)
    finally:
        (log_dir / f"{job.key}.log").write_text("\n".join(phone.log) + "\n")


def _gguf(job, say) -> Path:
    from ..models import resolve
    files = resolve(job.model, progress=say)
    if getattr(files, "gguf_path", None) is not None:
        return Path(files.gguf_path)
    if getattr(files, "hf_dir", None) is None:
        raise AdbError("the model has no files to export to GGUF (a random-init config must be saved first)")
    from ..quant.gguf import gguf_for
    q = job.variant.quantization
    path, _ = gguf_for(files.hf_dir, "f32" if q == "none" else q, None, say)
    return Path(path)


def _push_text(phone: AdbPhone, p: dict) -> str:
    """The perplexity text (the scenario's file, its first max_bytes), pushed once per content."""
    from ..scenarios.perplexity import read_text, resolve_text
    text = read_text(resolve_text(p.get("text", "corpus/austen.txt")), p.get("max_bytes", 51_200))
    with tempfile.TemporaryDirectory(prefix="slmbench-adb-") as tmp:
        f = Path(tmp) / "eval.txt"
        f.write_text(text)
        return phone.push_once(f, "texts")
