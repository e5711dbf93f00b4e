"""`slmbench bench MODEL`: a one-line benchmark of a model a user already has — a Hub id, a GGUF file, a local
Hugging Face directory, or a source name (smollm2, gemma3).

The command builds an ordinary suite, and that suite goes through the same path as a file: it is written out, then
`plan.load_suite` validates it (the same one-line errors, exit 2) and `runner.run_suite` runs it. The file is kept
(OUT/bench/NAME-SHA.yaml: the run records it, `slmbench run` reruns it); `--print-suite` prints it instead."""
from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

import yaml

from .errors import UserError

SCENARIOS = ("latency", "memory")


def _ints(values) -> list[int]:
    out = []
    for v in values or []:
        for x in str(v).split(","):
            try:
                out.append(int(x))
            except ValueError:
                raise UserError(f"expected a whole number, got {x!r}", field="--threads")
    return out


def _words(values) -> list[str]:
    return [x.strip() for v in values or [] for x in str(v).split(",") if x.strip()]


def model_name(arg: str, entry: dict) -> str:
    """A readable model name (the suite's name rules: letters, digits, '_.:+-')."""
    if entry.get("file"):
        base = Path(entry["file"]).stem
    elif entry.get("path"):
        base = Path(entry["path"]).stem if entry["source"] == "gguf" else Path(entry["path"]).name
    else:
        base = arg
    return re.sub(r"[^A-Za-z0-9_.:+-]+", "-", base).strip("-") or "model"


def make_suite(model: str, backends=(), quants=(), threads=(), tasks=(), scenarios=(), device: str = "local-cpu",
               revision: str | None = None, prompt_tokens: int = 128, gen_tokens: int = 32,
               repetitions: int | None = None, min_duration_s: float | None = None, limit: int | None = None) -> dict:
    """The suite (a plain mapping, as YAML would load it) that benchmarks one model."""
    from .models.hub import model_entry
    entry = model_entry(model)
    if revision:
        entry["revision"] = revision
    name = model_name(model, entry)
    gguf = entry["source"] in ("gguf", "gemma3")
    backends = _words(backends) or (["llamacpp"] if gguf else ["torch"])
    matrix: dict = {"backend": backends}
    if quants:
        matrix["quantization"] = _words(quants)
    if threads:
        matrix["threads"] = _ints(threads)
    length = {"prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens}
    scs: list = [{"name": s, "params": dict(length)} for s in (_words(scenarios) or SCENARIOS)]
    if tasks:
        scs.append({"name": "accuracy", "params": {"tasks": _words(tasks), **({"limit": limit} if limit else {})}})
    settings: dict = {}
    if repetitions is not None:
        settings["repetitions"] = repetitions
        if repetitions > 200:  # the default cap
            settings["max_repetitions"] = repetitions
    if min_duration_s is not None:
        settings["min_duration_s"] = min_duration_s
    suite = {"name": f"bench-{name}", "description": f"slmbench bench {model}"}
    if settings:
        suite["settings"] = settings
    suite.update(models=[{"name": name, **entry}], devices=[device], scenarios=scs, matrix=matrix)
    return suite


def to_yaml(suite: dict) -> str:
    return yaml.safe_dump(suite, sort_keys=False, allow_unicode=True)


def validate(suite: dict) -> None:
    """The suite checked exactly as a file is; errors name the command and the suite's field (--print-suite shows
    the fields)."""
    from .plan import load_suite
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "suite.yaml"
        p.write_text(to_yaml(suite), encoding="utf-8")
        try:
            load_suite(p)
        except UserError as e:
            raise UserError(e.message, file="bench", field=e.field) from None


def write_suite(suite: dict, out: Path) -> Path:
    """Validate, then keep the suite under OUT/bench/ (named by its content: the same command, the same file)."""
    validate(suite)
    text = to_yaml(suite)
    p = Path(out) / "bench" / f"{suite['name']}-{hashlib.sha256(text.encode()).hexdigest()[:8]}.yaml"
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.is_file() or p.read_text(encoding="utf-8") != text:
        p.write_text(text, encoding="utf-8")
    return p


def add_arguments(sp) -> None:
    sp.add_argument("model", metavar="MODEL", help="a Hub id (org/name, or org/name/FILE.gguf), a GGUF file, a "
                    "local Hugging Face directory, or a model source (smollm2, gemma3)")
    sp.add_argument("--backend", action="append", help="torch, llamacpp, ... (repeatable or comma-separated; "
                    "default: llamacpp for a GGUF, else torch)")
    sp.add_argument("--quant", action="append", help="quantization level(s) of the backend (e.g. none, q4_k_m, "
                    "int8_dynamic)")
    sp.add_argument("--threads", action="append", help="thread count(s)")
    sp.add_argument("--tasks", action="append", help="lm-eval tasks: adds an accuracy job (e.g. slmbench_tiny)")
    sp.add_argument("--limit", type=int, help="--tasks: items per task")
    sp.add_argument("--scenarios", action="append", help=f"what to measure (default: {', '.join(SCENARIOS)})")
    sp.add_argument("--revision", help="a Hub branch, tag or commit")
    sp.add_argument("--device", default="local-cpu", help="device profile (default local-cpu)")
    sp.add_argument("--prompt-tokens", type=int, default=128)
    sp.add_argument("--gen-tokens", type=int, default=32)
    sp.add_argument("--repetitions", type=int, help="minimum timed repetitions (default: the suite default)")
    sp.add_argument("--min-duration", type=float, help="minimum timed seconds per job (default: the suite default)")
    sp.add_argument("--print-suite", action="store_true", help="print the suite as YAML (validated) and stop")


def from_args(a) -> dict:
    return make_suite(a.model, a.backend, a.quant, a.threads, a.tasks, a.scenarios, a.device, a.revision,
                      a.prompt_tokens, a.gen_tokens, a.repetitions, a.min_duration, a.limit)
