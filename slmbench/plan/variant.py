"""A model variant: the knobs every job has (backend, threads, test-only injections) plus the backend's own knobs,
validated by that backend's `Knobs` model (contracts.engine). A new knob is a field in one backend's Knobs class;
nothing here changes.

Identity: a variant dumps to the same flat mapping rows have always carried, so job keys of stored runs stay
stable: the knobs every row carried before backends owned their knobs (LEGACY) always appear, at their legacy
default when the backend has no such knob; any other knob appears only when it differs from its default."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..contracts import BACKENDS
from ..errors import UserError

LEGACY = {"dtype": "fp32", "quantization": "none", "compile": False, "load": "mmap"}


class CommonKnobs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    backend: str = Field("torch", description="a registered backend: torch | llamacpp | openai | ...")
    threads: int | None = Field(None, ge=1, le=1024)
    # Test-only knobs that inject a known regression, so detection can be proven on real runs.
    inject_decode_delay_ms: float = Field(0.0, ge=0, le=10_000)
    inject_alloc_mb: float = Field(0.0, ge=0, le=1_000_000)


COMMON = tuple(CommonKnobs.model_fields)


class Variant:
    """Variant(**flat_knobs). Common-knob errors raise pydantic.ValidationError; an unknown backend raises
    UserError. A knob the backend does not own, or a value it refuses, is kept as `problem` (the job is then
    recorded unsupported, or the suite refused at validate when no backend of it accepts the value)."""

    def __init__(self, **flat: Any):
        self.common = CommonKnobs(**{k: flat[k] for k in COMMON if k in flat})
        self.raw = {k: v for k, v in flat.items() if k not in COMMON}
        self.engine_cls = BACKENDS.get(self.common.backend, field="backend")
        self.problem: str | None = None
        own = self.engine_cls.Knobs.model_fields
        # a knob the backend does not own is harmless at its default (dtype fp32 on llama.cpp, compile false, ...)
        mine = {k: v for k, v in self.raw.items() if k in own or v != default_of(k)}
        try:
            self.knobs = self.engine_cls.check_knobs(mine)
        except ValidationError as e:
            self.knobs = None
            self.problem = knob_problem(self.common.backend, self.engine_cls, e)

    # --- access ---------------------------------------------------------------------------------------------
    def __getattr__(self, k: str):
        if k in COMMON:
            return getattr(self.common, k)
        knobs = self.__dict__.get("knobs")
        if knobs is not None and k in type(knobs).model_fields:
            return getattr(knobs, k)
        raw = self.__dict__.get("raw", {})
        if k in raw:
            return raw[k]
        if k in LEGACY:
            return LEGACY[k]
        raise AttributeError(f"backend {self.__dict__.get('common', CommonKnobs()).backend!r} has no knob {k!r}")

    def __eq__(self, other):
        return isinstance(other, Variant) and self.dump() == other.dump()

    def __repr__(self):
        return f"Variant({', '.join(f'{k}={v!r}' for k, v in self.short().items())})"

    # --- identity -------------------------------------------------------------------------------------------
    def _defaults(self) -> dict:
        d = {**LEGACY, **CommonKnobs().model_dump()}
        if self.knobs is not None:
            d.update({k: f.get_default(call_default_factory=True) for k, f in type(self.knobs).model_fields.items()})
        return d

    def dump(self) -> dict:
        """The flat identity (job key, the rows' `variant` column)."""
        common = self.common.model_dump()
        out = {"backend": common.pop("backend"), **LEGACY}  # the order rows always had: backend, legacy knobs, ...
        defaults = self._defaults()
        given = self.knobs.model_dump() if self.knobs is not None else dict(self.raw)
        for k, v in given.items():
            if k in LEGACY or v != defaults.get(k, object()):
                out[k] = v
        return {**out, **common}

    def short(self) -> dict:
        """Knobs that differ from their defaults: the readable variant name."""
        defaults = self._defaults()
        return {k: v for k, v in self.dump().items() if k not in defaults or v != defaults[k]}


def knob_problem(backend: str, engine_cls, e: ValidationError) -> str:
    err = e.errors()[0]
    k = ".".join(str(x) for x in err["loc"]) or "knobs"
    if err["type"] == "extra_forbidden":
        owners = [n for n, c in BACKENDS.all().items() if k in c.Knobs.model_fields]
        own = ", ".join(engine_cls.Knobs.model_fields) or "none"
        by = f"a knob of backend {', '.join(owners)}" if owners else "not a knob of any backend"
        return f"{k} is {by}; backend {backend!r} owns: {own}"
    v = err.get("input")
    others = [n for n, c in BACKENDS.all().items() if n != backend and k in c.Knobs.model_fields and _accepts(c, k, v)]
    return (f"{k}={v!r} is not a {backend} value ({err['msg']})"
            + (f"; backend{'s' if len(others) > 1 else ''} {', '.join(others)} accept{'' if len(others) > 1 else 's'} it"
               if others else ""))


def _accepts(engine_cls, k: str, v: Any) -> bool:
    try:
        engine_cls.Knobs(**{k: v})
        return True
    except ValidationError:
        return False


def default_of(k: str) -> Any:
    if k in LEGACY:
        return LEGACY[k]
    for c in BACKENDS.all().values():
        if k in c.Knobs.model_fields:
            return c.Knobs.model_fields[k].get_default(call_default_factory=True)
    return object()  # unknown knob: never a default


def knob_owners(k: str) -> list[str]:
    return [n for n, c in BACKENDS.all().items() if k in c.Knobs.model_fields]


def all_knobs() -> list[str]:
    names = list(COMMON)
    for c in BACKENDS.all().values():
        names += [k for k in c.Knobs.model_fields if k not in names]
    return names


def check_value(k: str, v: Any, backends: set[str]) -> str | None:
    """Why value v of knob k is refused by every backend of the suite that owns k (None: some accepts it)."""
    if k in COMMON:
        try:
            CommonKnobs(**{k: v})
            return None
        except ValidationError as e:
            return e.errors()[0]["msg"]
    owners = [b for b in knob_owners(k) if b in backends]
    if not owners:
        others = knob_owners(k)
        if others:
            return f"a knob of backend {', '.join(others)}, which this suite does not use"
        raise UserError(f"unknown knob (known: {', '.join(all_knobs())})")
    msgs = []
    for b in owners:
        try:
            BACKENDS.get(b).Knobs(**{k: v})
            return None
        except ValidationError as e:
            msgs.append(f"{e.errors()[0]['msg']} (backend {b})")
    return "; ".join(msgs)


def canonical(d: dict) -> dict:
    """A stored row's variant in today's identity form (rows of older runs compare with new ones); as stored when
    it names a backend no longer registered."""
    try:
        return Variant(**d).dump()
    except (UserError, ValidationError):
        return dict(d)
