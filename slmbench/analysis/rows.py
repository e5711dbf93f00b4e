"""Reading tidy rows and job info: short names for a variant and its params, and the figures a job recorded about
itself (threads, bytes per token). Pure helpers shared by analysis and report (report imports them from here)."""
from __future__ import annotations

import json


def _defaults() -> dict:
    """Knobs every stored row carries, at their defaults; a backend's own knobs appear in a row only when set."""
    from ..plan import LEGACY, CommonKnobs
    return {**LEGACY, **CommonKnobs().model_dump()}


def variant_name(variant_json: str) -> str:
    """The knobs that differ from the default variant, e.g. `dtype=bf16,threads=2`; `default` when none do."""
    defaults = _defaults()
    diff = {k: x for k, x in json.loads(variant_json).items() if k not in defaults or defaults[k] != x}
    return ",".join(f"{k}={x}" for k, x in diff.items()) or "default"


def params_name(params_json: str) -> str:
    p = json.loads(params_json or "{}")
    return ",".join(f"{k}={v}" for k, v in p.items() if not isinstance(v, (list, dict)))


def key_where(key: tuple) -> str:
    """A comparison key (model, variant, device, scenario, params, metric, labels) as one readable place."""
    model, variant, device, scenario, params, _, labels = key
    ps = params_name(params)
    lb = ",".join(f"{k}={v}" for k, v in json.loads(labels).items())
    return (f"{model}[{variant_name(variant)}] @{device} {scenario}" + (f"({ps})" if ps else "")
            + (f" {{{lb}}}" if lb else ""))


def job_threads(info: dict | None, variant: dict, profile_cores: int | None, manifest: dict | None) -> int | None:
    """The threads a job ran with, as the job itself recorded it (info.threads; older runs: the cpu adapter's
    info.device.threads). For runs older still, the adapter's own rule — requested, else the profile's cores, else
    the CPUs of the machine that ran it (its manifest), never the machine reading the store."""
    info = info or {}
    for t in (info.get("threads"), (info.get("device") or {}).get("threads"), variant.get("threads"),
              profile_cores, ((manifest or {}).get("host") or {}).get("logical_cpus")):
        if t:
            return int(t)
    return None


def weights_per_token_bytes(info: dict | None) -> float | None:
    """Weight bytes a decode step reads, as the engine described itself in the job's info."""
    b = ((info or {}).get("model") or {}).get("weights_per_token_bytes")
    return float(b) if b else None
