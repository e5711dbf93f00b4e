"""The `claims:` section of a suite: each claim a question, comparisons that decide it (two arms of row selectors, a
metric, a test), checked at validate. The decision rule lives in analysis.claims."""
from __future__ import annotations

import fnmatch
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Select(_Strict):
    """Rows of one arm. Every given field must match; `reduce` turns several rows into one value first."""
    model: str | list[str] = Field("*", description="model name glob(s) (cost rows: MODEL/VARIANT@DEVICE)")
    scenario: str | None = None
    device: str | None = Field(None, description="device name glob")
    params: dict[str, Any] = Field(default_factory=dict, description="job params that must match")
    labels: dict[str, Any] = Field(default_factory=dict, description="row labels that must match")
    variant: dict[str, Any] = Field(default_factory=dict, description="variant knobs that must match")
    reduce: Literal["rows", "min", "max"] = Field("rows", description="rows: each row is one unit (seeds); min/"
                                                                       "max: the best/worst row stands for the arm")


class Comparison(_Strict):
    metric: str
    a: Select
    b: Select | None = None
    threshold: float | None = Field(None, description="compare a with this fixed value instead of b")
    better: Literal["higher", "lower"]
    test: Literal["better", "not_worse"] = "better"
    margin: float | None = Field(None, ge=0, description="not_worse: how much worse a may be (metric units, or "
                                 "relative); required there, fixed in the suite before the run (0: not worse at all)")
    relative: bool = False
    primary: bool = True
    label: str = ""
    paired: bool = Field(True, description="pair the arms over shared units (held-out sequences, eval items) "
                         "where every row carries per-unit values")
    min_rows: int = Field(1, ge=1, description="rows (seeds) each arm needs for a decisive verdict; fewer: "
                          "inconclusive (set ≥ 3 where the seed matters)")


class Plot(_Strict):
    metric: str
    x: str = Field(description="a job param on the x axis (e.g. depth, g)")
    select: Select = Field(default_factory=Select)
    series: str = Field("model", description="model, or a job param that names each line")
    also: str | None = Field(None, description="a second metric drawn dashed (e.g. the predicted speedup)")


class Retention(_Strict):
    """How much of the teacher's quality each student keeps, by training budget (a table beside the verdict)."""
    teacher: str = Field(description="the teacher's model name in this suite: its accuracy rows (same task, same "
                         "params) are the students' reference; held-out bits/B is each student's own teacher row")
    students: str | list[str] = Field(description="student model name glob(s); names ending -sN are seeds of one arm")
    metric: str = Field("acc_norm", description="the accuracy metric compared per task")


class Claim(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    title: str
    question: str
    framing: str = ""
    comparisons: list[Comparison] = Field(min_length=1)
    plot: Plot | None = None
    retention: Retention | None = None
    settings: str = Field("", description="the fixed settings in words (budgets, sizes)")
    regime: str = Field("", description="where the verdict holds (model sizes, device, draft), stated with it")
    assumptions: dict[str, Any] = Field(default_factory=dict, description="cost assumptions for this claim's cost "
                                        "rows (slmbench.analysis.cost.Assumptions fields), over devices/cloud/"
                                        "_assumptions.yaml; `ranges: {field: [lo, hi]}` are the plausible ends the "
                                        "verdict is also decided at")


def parse(claims: list[dict], file: str = "", field: str = "claims") -> list[Claim]:
    out = []
    for i, c in enumerate(claims):
        try:
            cl = Claim.model_validate(c)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(x) for x in err["loc"])
            raise UserError(err["msg"], file=file, field=f"{field}[{i}]" + (f".{loc}" if loc else ""))
        for j, cmp in enumerate(cl.comparisons):
            if (cmp.b is None) == (cmp.threshold is None):
                raise UserError("give exactly one of b and threshold", file=file,
                                field=f"{field}[{i}].comparisons[{j}]")
            if cmp.test == "not_worse" and cmp.margin is None:
                raise UserError("a not_worse test needs its margin, fixed before the run (0: not worse at all)",
                                file=file, field=f"{field}[{i}].comparisons[{j}].margin")
        out.append(cl)
    ids = [c.id for c in out]
    if len(set(ids)) != len(ids):
        raise UserError("duplicate claim id", file=file, field=field)
    return out


def check_claims(suite, file: str, models_required: bool = True) -> None:
    """At validate: the claims parse; every arm's scenario exists and its params are that scenario's (or a suite
    scenario's) parameters; every model glob matches a model of the suite (not in --quick, which may drop some)."""
    from ..contracts import SCENARIOS
    names = [m.name for m in suite.models]
    used = {s if isinstance(s, str) else s.name for s in suite.scenarios} | {"cost"}
    for i, c in enumerate(parse(suite.claims, file)):
        for j, cmp in enumerate(c.comparisons):
            for side, sel in (("a", cmp.a), ("b", cmp.b)):
                if sel is None:
                    continue
                where = f"claims[{i}].comparisons[{j}].{side}"
                if sel.scenario and sel.scenario not in used:
                    raise UserError(f"no scenario {sel.scenario!r} in this suite (has: {', '.join(sorted(used))})",
                                    file=file, field=f"{where}.scenario")
                fields = set()
                for sc in ([sel.scenario] if sel.scenario and sel.scenario != "cost" else used - {"cost"}):
                    fields |= set(SCENARIOS.get(sc).Params.model_fields)
                for k in sel.params:
                    if k.split(".")[0] not in fields:
                        raise UserError("not a parameter of the selected scenario(s)", file=file,
                                        field=f"{where}.params.{k}")
                if sel.scenario == "cost" or not models_required:
                    continue
                for g in [sel.model] if isinstance(sel.model, str) else sel.model:
                    if not any(fnmatch.fnmatchcase(n, g) for n in names):
                        raise UserError(f"model {g!r} matches no model of this suite", file=file,
                                        field=f"{where}.model")
