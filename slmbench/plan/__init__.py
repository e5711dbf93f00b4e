"""The plan layer: the suite schema (schema.py), variants and their knobs (variant.py), validation (validate.py),
the `--quick` patch (quick.py) and matrix expansion into jobs (jobs.py). Import from here."""
from __future__ import annotations

from ..yamlio import first_error, load_yaml, parse_model
from .jobs import Job, Plan, expand, plan
from .quick import apply_quick
from .schema import DEVICE_NAME, DeviceRef, ModelSpec, RunSettings, ScenarioSpec, Suite, model_identity
from .validate import check_scenario, load_suite, parse_suite, suite_sha
from .claims import Claim, Comparison, Plot, Select, check_claims, parse as parse_claims
from .variant import COMMON, LEGACY, CommonKnobs, Variant, canonical

__all__ = ["Claim", "Comparison", "Plot", "Select", "canonical", "check_claims", "parse_claims", "COMMON", "DEVICE_NAME", "LEGACY", "CommonKnobs", "DeviceRef", "Job", "ModelSpec", "Plan", "RunSettings",
           "ScenarioSpec", "Suite", "Variant", "apply_quick", "check_scenario", "expand", "first_error", "load_suite",
           "load_yaml", "model_identity", "parse_model", "parse_suite", "plan", "suite_sha"]
