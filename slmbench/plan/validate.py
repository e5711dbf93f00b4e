"""Validation: a suite is checked whole before any work — schema, then references (devices, scenarios and their
params, knobs against each backend's own schema, models through their source) — and the first problem is one
line naming the file and field. Plugins are reached only through the contracts' registries."""
from __future__ import annotations

import fnmatch
import hashlib
import inspect
import json
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..contracts import SCENARIOS, SOURCES, load_profile
from ..errors import UserError
from ..yamlio import first_error, load_yaml, parse_model
from .jobs import plan
from .quick import apply_quick
from .schema import DEVICE_NAME, ModelSpec, ScenarioSpec, Suite
from .variant import CommonKnobs, all_knobs, check_value

SOURCE_FIELDS = ("path", "config", "overrides", "trust_remote_code", "revision", "file")  # read by some sources only


def parse_suite(path: str | Path, quick: bool = False) -> Suite:
    """The schema only (no model, device or data checks): for reading a suite back, e.g. its claims."""
    data = load_yaml(path)
    return parse_model(Suite, apply_quick(data, str(path)) if quick else data, str(path))


def suite_sha(path: str | Path, quick: bool = False) -> str:
    """The identity of a suite file as run (its --quick variant is another suite): resume and reports check it."""
    return hashlib.sha256(Path(path).read_bytes() + (b"+quick" if quick else b"")).hexdigest()[:16]


def load_suite(path: str | Path, quick: bool = False) -> Suite:
    """Parse and check a suite. quick: apply the suite's `quick:` patch first (its small variant, e.g. for CI)."""
    file = str(path)
    data = load_yaml(path)
    if quick:
        data = apply_quick(data, file)
    suite = parse_model(Suite, data, file)
    check_suite(suite, file, Path(path).resolve().parent, quick)
    return suite


def check_suite(suite: Suite, file: str, base: Path, quick: bool = False) -> None:
    """Cheap checks first; model sources last (a random-init config check imports transformers)."""
    from ..regression_rules import parse_rules
    try:
        parse_rules(suite.regression)
    except UserError as e:
        raise UserError(e.message, file=file, field=f"regression.{e.field}" if e.field else "regression")
    names = [m.name for m in suite.models]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise UserError(f"duplicate model name {sorted(dup)[0]!r}", file=file, field="models")
    for i, d in enumerate(suite.devices):
        dname = d if isinstance(d, str) else d.name
        if not re.match(DEVICE_NAME, dname):
            raise UserError(f"expected a device profile name (letters, digits, '_.-'), got {dname!r}", file=file,
                            field=f"devices[{i}]")
        load_profile(dname, file=file, field=f"devices[{i}]")
    for i, s in enumerate(suite.scenarios):
        spec = ScenarioSpec(name=s) if isinstance(s, str) else s
        check_scenario(spec, file, f"scenarios[{i}]", suite.models)  # models: e.g. draft vs target tokenizers
    _check_knobs(suite, file)
    _check_exclude(suite, file)
    for i, s in enumerate(suite.scenarios):
        for g in [] if isinstance(s, str) else s.models:
            if not any(fnmatch.fnmatchcase(n, g) for n in names):
                raise UserError(f"matches no model of this suite ({', '.join(names)})", file=file,
                                field=f"scenarios[{i}].models")
    if suite.claims:
        from .claims import check_claims
        check_claims(suite, file, models_required=not quick)  # quick may drop a model: its claim is inconclusive
    with _quiet_transformers(any(m.source == "random" for m in suite.models)):
        _check_models(suite, file, base)
    p = plan(suite, base)
    if not p.jobs:
        why = "; ".join(p.skipped) or "everything excluded"
        raise UserError(f"the matrix expands to no jobs ({why})", file=file, field="exclude" if not p.skipped
                        else "devices")


def check_scenario(spec: ScenarioSpec, file: str, field: str, models=()) -> None:
    sc = SCENARIOS.get(spec.name, file=file, field=f"{field}.name")
    P = sc.Params
    for k in spec.sweep:
        if k not in P.model_fields:
            raise UserError("unknown parameter", file=file, field=f"{field}.sweep.{k}")
    combos = [{}] + [{k: v} for k, vals in spec.sweep.items() for v in vals]
    for c in combos:
        try:
            P(**{**spec.params, **c})
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err["loc"])
            part = "sweep" if key in c else "params"
            msg = "unknown parameter" if err["type"] == "extra_forbidden" else err["msg"]
            raise UserError(msg, file=file, field=f"{field}.{part}.{key}")
    if hasattr(P, "check"):  # deeper checks (files, task names, tokenizers vs the suite's models) before any job runs
        accepts = inspect.signature(P.check).parameters
        for c in combos:
            kw = {k: v for k, v in (("models", models), ("part", "sweep" if c else "params")) if k in accepts}
            P.check(P(**{**spec.params, **c}), file, field, **kw)


def suite_backends(suite: Suite) -> set[str]:
    out = set(suite.matrix.get("backend") or [])
    if not out or any("backend" not in m.knobs for m in suite.models) and "backend" not in suite.matrix:
        out.add(CommonKnobs().backend)
    out |= {m.knobs["backend"] for m in suite.models if "backend" in m.knobs}
    return {str(b) for b in out}


def _check_knobs(suite: Suite, file: str) -> None:
    """Each knob must belong to a backend of the suite and each value be accepted by one of them; which backend
    refuses which value is decided per job (recorded unsupported), a typo here."""
    from ..contracts import BACKENDS
    for i, b in enumerate(suite.matrix.get("backend") or []):
        BACKENDS.get(str(b), file=file, field=f"matrix.backend[{i}]")
    for i, m in enumerate(suite.models):
        if "backend" in m.knobs:
            BACKENDS.get(str(m.knobs["backend"]), file=file, field=f"models[{i}].knobs.backend")
    backends = suite_backends(suite)
    for k, vals in suite.matrix.items():
        if not isinstance(vals, list) or not vals:
            raise UserError("expected a non-empty list of values", file=file, field=f"matrix.{k}")
        for j, v in enumerate(vals):
            _check_one(k, v, backends, file, f"matrix.{k}[{j}]", f"matrix.{k}")
    for i, m in enumerate(suite.models):
        for k, v in m.knobs.items():
            _check_one(k, v, backends, file, f"models[{i}].knobs.{k}", f"models[{i}].knobs.{k}")


def _check_one(k: str, v: Any, backends: set[str], file: str, field: str, knob_field: str) -> None:
    try:
        why = check_value(k, v, backends)
    except UserError as e:  # not a knob of anything
        raise UserError(e.message, file=file, field=knob_field)
    if why:
        raise UserError(why, file=file, field=field)


def _check_models(suite: Suite, file: str, base: Path) -> None:
    for i, m in enumerate(suite.models):
        src = SOURCES.get(m.source, file=file, field=f"models[{i}].source")
        for f in SOURCE_FIELDS:  # a field the source would silently ignore is a mistake: refuse it
            if getattr(m, f) != ModelSpec.model_fields[f].get_default(call_default_factory=True) \
                    and f not in src.fields:
                takes = [n for n, c in SOURCES.all().items() if f in c.fields]
                raise UserError(f"{f} does not apply to source {m.source!r}"
                                + (f"; only to source {', '.join(repr(t) for t in takes)}" if takes else ""),
                                file=file, field=f"models[{i}].{f}")
        src.check(m, file, f"models[{i}]", base)
        _check_remote_code(m, file, f"models[{i}]", base)


def _check_exclude(suite: Suite, file: str) -> None:
    """An exclude key that matches nothing is a typo that silently runs everything: refuse it."""
    known = {"model", "device", "scenario", *all_knobs()}
    for s in suite.scenarios:
        known |= set(SCENARIOS.get(s if isinstance(s, str) else s.name).Params.model_fields)
    for i, ex in enumerate(suite.exclude):
        for k in ex:
            if k not in known:
                raise UserError(f"unknown key (known: {', '.join(sorted(known))})", file=file,
                                field=f"exclude[{i}].{k}")


def _check_remote_code(m: ModelSpec, file: str, field: str, base: Path) -> None:
    """A model directory that ships Python (auto_map) runs it only if the suite says trust_remote_code: true."""
    if m.trust_remote_code or not m.path:
        return
    d = Path(m.path) if Path(m.path).is_absolute() else base / m.path
    for name in ("config.json", "tokenizer_config.json"):
        f = d / name
        if not f.is_file():
            continue
        try:
            cfg = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"unreadable {name}: {e}", file=file, field=f"{field}.path")
        if isinstance(cfg, dict) and cfg.get("auto_map"):
            raise UserError(f"{d / name} asks to run the model's own Python code (auto_map); refused unless this "
                            "model sets trust_remote_code: true", file=file, field=f"{field}.trust_remote_code")


@contextmanager
def _quiet_transformers(active: bool):
    """Config checks must not print transformers' warnings: a bad suite gives exactly one line."""
    if not active:
        yield
        return
    from transformers.utils import logging as tl
    old = tl.get_verbosity()
    tl.set_verbosity_error()
    try:
        yield
    finally:
        tl.set_verbosity(old)


__all__ = ["check_suite", "load_suite", "parse_suite", "suite_sha", "check_scenario", "first_error"]
