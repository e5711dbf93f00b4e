"""The suite file's schema: settings, models, devices, scenarios, matrix. Pure data (pydantic); the checks that
need plugins (sources, backends, scenarios, device profiles) are in plan.validate."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunSettings(_Strict):
    warmup: int = Field(1, ge=0, le=100)
    repetitions: int = Field(5, ge=1, le=10_000, description="minimum number of timed repetitions")
    min_duration_s: float = Field(3.0, ge=0, le=3600, description="minimum total timed duration")
    max_repetitions: int = Field(200, ge=1, le=100_000)
    timeout_s: float = Field(900, gt=0, le=86_400, description="wall-clock limit per job")
    memory_limit_gb: float | None = Field(None, gt=0, le=4096,
                                         description="per-job resident memory cap (default: 90% of RAM)")

    @model_validator(mode="after")
    def _reps(self):
        if self.max_repetitions < self.repetitions:
            raise ValueError(f"max_repetitions ({self.max_repetitions}) is below repetitions ({self.repetitions})")
        return self


class ModelSpec(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:+-]+$")
    source: str = Field(description="a registered model source: smollm2 | hf | random | recipe | ...")
    path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="random-init config overrides")
    overrides: dict[str, Any] = Field(default_factory=dict, description="source recipe: fields deep-merged into "
                                      "the recipe (one knob changed, e.g. {train: {alpha: 1.0}, seed: 1})")
    trust_remote_code: bool = False
    revision: str | None = Field(None, description="sources hub, gguf: a Hub branch, tag or commit (default: main)")
    file: str | None = Field(None, description="source gguf: the GGUF file in the Hub repo `path` names")
    knobs: dict[str, Any] = Field(default_factory=dict, description="fixed variant knobs for this model")


DEVICE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"  # a file stem in devices/: no paths


class DeviceRef(_Strict):
    name: str = Field(min_length=1, pattern=DEVICE_NAME, description="a profile in devices/ (without .yaml)")
    threads: int | None = Field(None, ge=1, le=1024)


class ScenarioSpec(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="each combination is its own job")
    models: list[str] = Field(default_factory=list, description="run only on these models (names or globs); "
                                                                "empty: every model")

    @field_validator("sweep")
    @classmethod
    def _nonempty(cls, v):
        for k, vals in v.items():
            if not vals:
                raise ValueError(f"sweep '{k}' is an empty list")
        return v


class Suite(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = 0
    settings: RunSettings = Field(default_factory=RunSettings)
    models: list[ModelSpec] = Field(min_length=1)
    devices: list[DeviceRef | str] = Field(min_length=1)
    scenarios: list[ScenarioSpec | str] = Field(min_length=1)
    matrix: dict[str, list[Any]] = Field(default_factory=dict, description="variant knob -> values")
    exclude: list[dict[str, Any]] = Field(default_factory=list)
    regression: dict[str, Any] = Field(default_factory=dict, description="verdict thresholds (slmbench.analysis.regression)")
    claims: list[dict[str, Any]] = Field(default_factory=list, description="claims and the comparisons that decide "
                                                                           "them (slmbench.analysis.claims)")
    quick: dict[str, Any] = Field(default_factory=dict, description="patch applied by `--quick` (apply_quick)")


# ModelSpec fields added after results were first stored: left out of a job's identity while at their default, so
# the keys of existing runs (resume, baselines) do not change when a field is added.
LATER_MODEL_FIELDS = {"overrides", "revision", "file"}


def model_identity(m: ModelSpec) -> dict:
    d = m.model_dump()
    for k in LATER_MODEL_FIELDS:
        if d[k] == ModelSpec.model_fields[k].get_default(call_default_factory=True):
            del d[k]
    return d
