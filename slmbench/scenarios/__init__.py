"""Scenarios (contracts.scenario.Scenario): what is measured. One class per file, registered in the SCENARIOS
registry; it declares its parameters and the engine/device capabilities it needs.

    latency      load, TTFT, prefill and decode tok/s, inter-token latency, roofline fraction (latency.py)
    memory       peak memory, weights, file size, KV bytes per token (memory.py)
    energy       J/token by phase and power, with the reader's source (energy.py)
    accuracy     lm-eval tasks on the job's own model (accuracy.py)
    perplexity   bits per byte over a text (perplexity.py)
    speculative  speculative decoding: acceptance and speedup vs theory (speculative.py)
    serving      an OpenAI-compatible endpoint under requests (serving.py)
    heldout      a factory student's held-out bits/byte and agreement (heldout.py)
    fault        test-only fault injection (faults.py)
"""
from __future__ import annotations

from ..contracts import SCENARIOS, JobContext, Params, Scenario  # noqa: F401  (the contract, for scenario files)


def get(name: str):
    return SCENARIOS.get(name)
