"""YAML input for every file slmbench reads (suites, recipes, device profiles, price tables): a safe loader that
refuses duplicate keys, and pydantic parsing whose first error becomes one line naming the file and field."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .errors import UserError


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("DeviceRef", "ScenarioSpec", "str"):  # union branch names are noise to the user
            continue
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def first_error(e: ValidationError) -> tuple[str, str]:
    errs = e.errors()
    # Prefer errors from the structured branch of `str | Model` unions over "should be a string".
    errs.sort(key=lambda x: ("str" in x["loc"] or x["type"] == "string_type"))
    err = errs[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    return _loc(err["loc"]), msg


MAX_YAML_BYTES = 1 << 20


class _SafeLoader(yaml.SafeLoader):
    """yaml.safe_load (no Python objects, ever) that also refuses a key given twice — YAML would keep the last."""


def _mapping_no_dups(loader, node, deep=False):
    seen = set()
    for k, _ in node.value:
        if k.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(k, deep=True)
        try:
            dup = key in seen
            seen.add(key)
        except TypeError:  # unhashable key: construct_mapping reports it
            break
        if dup:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", k.start_mark)
    loader.flatten_mapping(node)
    return loader.construct_mapping(node, deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_dups)


def load_yaml(path: str | Path) -> Any:
    p = Path(path)
    if p.is_dir():
        raise UserError("is a directory, expected a YAML file", file=str(path))
    if not p.is_file():
        raise UserError("file not found", file=str(path))
    try:
        if p.stat().st_size > MAX_YAML_BYTES:
            raise UserError(f"file is larger than {MAX_YAML_BYTES >> 20} MiB; not a suite", file=str(path))
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"not UTF-8 text (byte {e.start})", file=str(path))
    except OSError as e:
        raise UserError(f"cannot read: {e.strerror or e}", file=str(path))
    if not text.strip():
        raise UserError("empty file", file=str(path))
    try:
        return yaml.load(text, Loader=_SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", file=str(path), field=where)


def parse_model(cls: type[BaseModel], data: Any, file: str) -> BaseModel:
    if not isinstance(data, dict):
        raise UserError(f"expected a mapping at the top level, got {type(data).__name__}", file=file)
    try:
        return cls(**data)
    except ValidationError as e:
        loc, msg = first_error(e)
        raise UserError(msg, file=file, field=loc)


def deep_merge(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`, mappings recursively (recipe overrides, --quick patches)."""
    import copy
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
