"""`--quick`: a suite's own `quick:` patch, applied to its data before parsing (the CI-sized variant)."""
from __future__ import annotations

import fnmatch
from typing import Any

from ..errors import UserError
from ..yamlio import deep_merge

QUICK_KEYS = {"name", "description", "settings", "seed", "devices", "matrix", "exclude", "models", "scenarios"}


def apply_quick(data: Any, file: str) -> dict:
    """The `quick:` patch. settings/matrix merge; `models` and `scenarios` map a name glob to a patch deep-merged
    into every model / scenario it matches (null drops them); other keys replace. The suite is renamed NAME-quick
    so that its runs, --resume and baselines never mix with the full suite's."""
    if not isinstance(data, dict) or not isinstance(data.get("quick"), dict) or not data["quick"]:
        raise UserError("--quick: this suite has no `quick:` patch", file=file, field="quick")
    q, out = data["quick"], {k: v for k, v in data.items() if k != "quick"}
    for k, v in q.items():
        if k not in QUICK_KEYS:
            raise UserError(f"unknown key (known: {', '.join(sorted(QUICK_KEYS))})", file=file, field=f"quick.{k}")
        if k in ("models", "scenarios"):
            if not isinstance(v, dict):
                raise UserError("expected a mapping: name glob -> patch (or null to drop)", file=file,
                                field=f"quick.{k}")
            items = [x if isinstance(x, dict) else {"name": x} for x in out.get(k, [])]
            # scenario keys may say which of several same-named scenarios: "latency#2" is the second latency
            nth = [sum(y.get("name") == x.get("name") for y in items[:i + 1]) for i, x in enumerate(items)]
            for glob, patch in v.items():
                g, _, n = str(glob).partition("#")
                hits = [id(x) for x, c in zip(items, nth) if fnmatch.fnmatchcase(str(x.get("name")), g)
                        and (not n or str(c) == n)]
                if not hits:
                    raise UserError(f"matches no {k[:-1]}", file=file, field=f"quick.{k}.{glob}")
                keep = [(x if id(x) not in hits else (None if patch is None else deep_merge(x, patch)), c)
                        for x, c in zip(items, nth)]
                items, nth = [x for x, _ in keep if x is not None], [c for x, c in keep if x is not None]
            out[k] = items
        elif k in ("settings", "matrix") and isinstance(v, dict):
            out[k] = deep_merge(out.get(k) or {}, v)
        else:
            out[k] = v
    if isinstance(q.get("models"), dict):  # a dropped model leaves the scenarios that named it
        left = {m.get("name") for m in out.get("models", []) if isinstance(m, dict)}
        kept = []
        for sc in out.get("scenarios", []):
            if isinstance(sc, dict) and isinstance(sc.get("models"), list) and sc["models"]:
                # a glob is kept while it still matches a model (else validate would refuse it)
                sc["models"] = [g for g in sc["models"] if g in left or (
                    any(c in str(g) for c in "*?[") and any(fnmatch.fnmatchcase(str(n), str(g)) for n in left))]
                if not sc["models"]:
                    continue  # every model it named is gone (an empty list would mean every model)
            kept.append(sc)
        out["scenarios"] = kept
    out.setdefault("name", "suite")
    if "name" not in q:
        out["name"] = f"{out['name']}-quick"
    return out
