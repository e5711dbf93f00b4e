"""Speculative decoding: acceptance, speedup, and Leviathan et al.'s prediction, on the job's model as target.

Each repetition decodes the same prompt twice with the same loop (slmbench/speculative.py): the target alone (an
empty draft), then draft + target. So the measured speedup compares like with like: same runtime, KV caches,
prompt, new-token count and seed. Its per-step timers give c (draft cost per drafted position ÷ target step) and
the verify cost (one target pass over g+1 tokens ÷ a one-token step). transformers' own assisted generation runs
once on the same pair as a reference point.

    draft: ngram                                            # prompt lookup, no model
    draft: {source: ngram, max_n: 3, min_n: 1}
    draft: {source: smollm2, truncate_layers: 8}            # first 8 decoder layers + final norm + tied head
    draft: {source: hf, path: /path/to/student, name: kd-student}   # e.g. a factory student (an HF dir)
    draft: {source: recipe, path: suites/recipes/x.yaml}    # any registered model source

A draft must share the target's tokenizer (same vocabulary and special tokens); a mismatch is refused at
`slmbench validate` for sources whose tokenizer is on disk, and otherwise when the job starts, before any timing.
"""
from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import JobError, UserError
from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import TORCH_MODEL


class DraftSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="ngram, or a model source: smollm2 | hf | random | recipe | ...")
    path: str | None = None
    config: dict[str, Any] = Field(default_factory=dict, description="random-init config overrides")
    overrides: dict[str, Any] = Field(default_factory=dict, description="source recipe: recipe fields deep-merged")
    truncate_layers: int | None = Field(None, ge=1, le=1024, description="keep the first k decoder layers")
    name: str | None = Field(None, max_length=80, description="label in reports")
    max_n: int = Field(3, ge=1, le=16, description="ngram: longest suffix looked up")
    min_n: int = Field(1, ge=1, le=16, description="ngram: shortest suffix looked up")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v):
        return {"source": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _coherent(self):
        if self.source == "ngram":
            if self.min_n > self.max_n:
                raise ValueError(f"min_n ({self.min_n}) is above max_n ({self.max_n})")
            if self.path or self.config or self.overrides or self.truncate_layers:
                raise ValueError("an ngram draft takes only max_n and min_n")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.source == "ngram":
            return f"ngram(n={self.min_n}..{self.max_n})"
        s = self.source + (f":{Path(self.path).name}" if self.path else "")
        return s + (f"/L{self.truncate_layers}" if self.truncate_layers else "")


class SpeculativeParams(Params):
    draft: DraftSpec = Field(default_factory=lambda: DraftSpec(source="ngram"))
    g: int = Field(4, ge=1, le=64, description="draft length (the start value when adaptive)")
    adaptive: bool = Field(False, description="g+1 after a fully accepted draft, g-1 after a rejection in its "
                                              "first half, within [1, g_max]")
    g_max: int = Field(16, ge=1, le=64)
    temperature: float = Field(0.0, ge=0, le=10, description="0: greedy; >0: sampling with accept/resample")
    prompt_tokens: int = Field(128, ge=2, le=32768)
    gen_tokens: int = Field(64, ge=2, le=8192, description="fixed new-token count, both runs")
    hf_reference: bool = Field(True, description="also time transformers' assisted generation once (greedy)")

    @field_validator("g_max")
    @classmethod
    def _gmax(cls, v, info):
        g = info.data.get("g", 1)
        if v < g:
            raise ValueError(f"g_max ({v}) is below g ({g})")
        return v

    @classmethod
    def check(cls, p: "SpeculativeParams", file: str, field: str, models=(), part: str = "params") -> None:
        """Deep check at `slmbench validate`: the draft's source and files, and its tokenizer against each target."""
        d = p.draft
        if d.source == "ngram":
            return
        from .. import models as sources
        field = f"{field}.{part}.draft"
        sources.check_spec(d, file, field, Path.cwd())
        dt = _tokenizer_dir(d)
        for m in models:
            if (m.source, m.path) == (d.source, d.path):
                continue  # the same files: the same tokenizer
            tt = _tokenizer_dir(m)
            if dt is None or tt is None:
                continue  # e.g. a recipe not built yet: checked when the job starts, before anything is timed
            why = tokenizer_mismatch(_load_tok(dt), _load_tok(tt))
            if why:
                raise UserError(f"draft {d.label!r} and model {m.name!r} have different tokenizers: {why}",
                                file=file, field=field)


# --- tokenizers -------------------------------------------------------------------------------------------------

def _abs(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else path  # relative to the working directory, as model paths at run


def _tokenizer_dir(spec) -> Path | None:
    """Where a model spec's tokenizer is, without loading weights; None when only building would tell."""
    if spec.source == "hf":
        return Path(_abs(spec.path))
    if spec.source == "random":
        from ..models.random_init import byte_tokenizer_dir
        return byte_tokenizer_dir()
    if spec.source == "smollm2":
        from ..models import smollm2
        return smollm2.hf_dir()  # converted once, cached; the run needs it anyway
    return None


def _load_tok(d: Path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(d))


def tokenizer_mismatch(a, b) -> str | None:
    """Why two tokenizers are not interchangeable (None if they are): vocabulary and special tokens, not names."""
    va, vb = a.get_vocab(), b.get_vocab()
    if va != vb:
        diff = sum(vb.get(t) != i for t, i in va.items()) + len(set(vb) - set(va))
        return f"vocabularies differ ({len(va)} vs {len(vb)} tokens, {diff} token→id entries disagree)"
    for attr in ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id"):
        x, y = getattr(a, attr, None), getattr(b, attr, None)
        if x != y:
            return f"{attr} differs ({x} vs {y})"
    if sorted(a.all_special_ids) != sorted(b.all_special_ids):
        return "special tokens differ"
    return None


# --- the draft --------------------------------------------------------------------------------------------------

def load_draft(d: DraftSpec, eng, seed: int):
    """(draft object for the loop, the draft model or None). Tokenizer checked before any weights are read."""
    from ..speculative import ModelDraft, NGramDraft, Runner
    if d.source == "ngram":
        return NGramDraft(d.max_n, d.min_n), None
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM

    from .. import models as sources
    from ..plan import ModelSpec
    files = sources.resolve(ModelSpec(name="draft", source=d.source, path=_abs(d.path), config=d.config,
                                       overrides=d.overrides))
    why = tokenizer_mismatch(_load_tok(files.tokenizer_dir), eng.tokenizer)
    if why:
        raise JobError("error", f"draft {d.label!r} does not share the target's tokenizer: {why}")
    cfg = copy.deepcopy(files.config) if files.config is not None else AutoConfig.from_pretrained(str(files.hf_dir))
    if d.truncate_layers:
        if d.truncate_layers > cfg.num_hidden_layers:
            raise JobError("error", f"truncate_layers={d.truncate_layers} but the draft has {cfg.num_hidden_layers}")
        cfg.num_hidden_layers = d.truncate_layers
        if getattr(cfg, "layer_types", None):
            cfg.layer_types = cfg.layer_types[:d.truncate_layers]
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "weights of layers k.. not used" is the point of truncation
    try:
        if files.config is not None:
            torch.manual_seed(seed + 1)  # a random draft differs from a random target of the same shape
            model = AutoModelForCausalLM.from_config(cfg, dtype=eng.model.dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(files.hf_dir), config=cfg, dtype=eng.model.dtype)
    finally:
        transformers.logging.set_verbosity(level)
    model.eval().to(eng.device)
    return ModelDraft(Runner(model, eng.model.config.vocab_size)), model


def _hf_generate(eng, prompt, n, extra: dict) -> tuple[list[int], float]:
    """transformers' generate (plain or assisted), greedy, fixed new-token count; wall time incl. prefill."""
    import torch
    x = torch.tensor([prompt], device=eng.device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = eng.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, pad_token_id=eng._pad_id(), **extra)
    eng.adapter.sync()
    return out[0, len(prompt):].tolist(), time.perf_counter() - t0


# --- the scenario -----------------------------------------------------------------------------------------------

@register_scenario
class Speculative(Scenario):
    name, Params = 'speculative', SpeculativeParams
    requires = frozenset({TORCH_MODEL})

    def run(self, ctx: JobContext, p: SpeculativeParams) -> list[Metric]:
        from ..speculative import NoDraft, Runner, generate
        eng, n = ctx.engine, p.gen_tokens
        ctx.progress(f"loading draft {p.draft.label}")
        t0 = time.perf_counter()
        draft, draft_model = load_draft(p.draft, eng, ctx.seed)
        draft_load_s = time.perf_counter() - t0
        prompt = eng.prompt_ids(p.prompt_tokens)
        target = Runner(eng.model)
        rep = [0]

        def once():
            seed = ctx.seed + rep[0]  # each repetition its own seed; baseline and speculative share it
            rep[0] += 1
            base, b = generate(target, NoDraft(), prompt, n, 0, p.temperature, seed)
            spec, s = generate(target, draft, prompt, n, p.g, p.temperature, seed, p.adaptive, p.g_max)
            return {"base": base, "spec": spec, "b": b, "s": s}

        reps = ctx.repeat(once)
        m = _metrics(_stats(reps, n), reps, p, draft_load_s)
        if p.temperature == 0:
            same = [r["base"] == r["spec"] for r in reps]
            first = next((i for i, (x, y) in enumerate(zip(reps[0]["base"], reps[0]["spec"])) if x != y), None)
            m.append(Metric("greedy_identical", sum(same) / len(same), "fraction", n=len(same), higher_is_better=True,
                            note="repetitions whose speculative output equals the target alone, token for token"
                                 + (f"; first divergence at token {first}" if first is not None else "")))
            if p.hf_reference:
                m += _hf_reference(eng, p, prompt, draft_model, reps[0]["base"])
        return m


def _stats(reps: list[dict], n: int) -> dict:
    """Acceptance and cost ratios from paired repetitions (target alone vs speculative, same seed)."""
    from ..speculative import acceptance, predicted_speedup
    steps = [st for r in reps for st in r["s"].steps]
    a, a_pos, n_steps = acceptance(steps)
    a = 0.0 if a != a else a  # no draft position reached at all (gen_tokens too short to draft)
    t_step = statistics.median([r["b"].total_s / n for r in reps])  # target alone: s per token = per 1-token step
    drafted_positions = [sum(k for k, _, _ in r["s"].steps) for r in reps]
    c = statistics.median([r["s"].draft_s / max(k, 1) for r, k in zip(reps, drafted_positions)]) / t_step
    v = statistics.median([r["s"].verify_s / len(r["s"].steps) for r in reps]) / t_step
    g_eff = sum(k for k, _, _ in steps) / len(steps)  # g in force: g except the capped last step; adaptive: mean
    return {"a": a, "a_pos": a_pos, "n_steps": n_steps, "t_step": t_step, "c": c, "v": v, "g_eff": g_eff,
            "accepted_per_step": sum(acc for _, _, acc in steps) / len(steps),
            "pred": predicted_speedup(a, g_eff, c), "speedups": [r["b"].total_s / r["s"].total_s for r in reps]}


def _metrics(st: dict, reps: list[dict], p, draft_load_s: float) -> list[Metric]:
    from ..speculative import expected_tokens
    n, a, c, v, g_eff, n_steps, pred = (p.gen_tokens, st["a"], st["c"], st["v"], st["g_eff"], st["n_steps"],
                                        st["pred"])
    speedups, spec_s = st["speedups"], [r["s"].total_s for r in reps]
    note_ab = f"{len(reps)} paired reps, {n} new tokens after a {p.prompt_tokens}-token prompt, prefill excluded"
    m = [
        Metric("acceptance_rate", a, "fraction", n=n_steps, higher_is_better=True,
               note="accepted ÷ draft positions reached (a rejection ends a step; an empty n-gram slot = rejected)"),
        Metric("mean_accepted_len", st["accepted_per_step"], "tokens", n=n_steps, higher_is_better=True,
               note="draft tokens accepted per target step"),
        Metric("tokens_per_step", n * len(reps) / n_steps, "tokens", n=n_steps, higher_is_better=True,
               note="new tokens per target forward pass (accepted + the target's own)"),
        Metric("tokens_per_step_predicted", expected_tokens(a, g_eff), "tokens", source="estimated",
               note=f"(1-a^(g+1))/(1-a), a={a:.3f}, g={g_eff:.2f}: the i.i.d.-acceptance model"),
        Metric("g_effective", g_eff, "tokens", note="mean draft length in force per step"),
        Metric("cost_ratio_c", c, "ratio", higher_is_better=False,
               note="measured: draft time per drafted position ÷ target one-token step, same loop and runtime"),
        Metric("verify_cost_ratio", v, "ratio", higher_is_better=False,
               note="measured: one target pass over the draft (g+1 tokens) ÷ a one-token target step; the formula "
                    "assumes 1"),
        Metric("speedup_predicted", pred, "x", source="estimated", higher_is_better=True,
               note="Leviathan et al.: (1-a^(g+1))/((1-a)(g·c+1)) from the measured a and c"),
        Metric("speedup_predicted_verify", expected_tokens(a, g_eff) / (g_eff * c + v), "x", source="estimated",
               higher_is_better=True, note="same, with the measured verify cost in place of 1"),
        Metric.from_samples("speedup", speedups, "x", higher_is_better=True,
                            note=f"wall clock, target alone ÷ speculative; {note_ab}"),
        Metric("speedup_vs_predicted", statistics.median(speedups) / pred, "ratio",
               note="measured ÷ predicted speedup (1 = the theory holds)"),
        Metric.from_samples("target_tok_s", [n / r["b"].total_s for r in reps], "tok/s", higher_is_better=True,
                            note="target alone, same loop"),
        Metric.from_samples("spec_tok_s", [n / x for x in spec_s], "tok/s", higher_is_better=True),
        Metric("draft_tok_s", 1 / (c * st["t_step"]) if c > 0 else None, "tok/s", higher_is_better=True,
               note="one drafted position per this many seconds⁻¹ (n-gram: a lookup)"),
        Metric.from_samples("time_frac_draft", [r["s"].draft_s / r["s"].total_s for r in reps], "fraction"),
        Metric.from_samples("time_frac_verify", [r["s"].verify_s / r["s"].total_s for r in reps], "fraction"),
        Metric.from_samples("time_frac_overhead", [1 - (r["s"].draft_s + r["s"].verify_s) / r["s"].total_s
                                                   for r in reps], "fraction",
                            note="acceptance rule, cache crops, bookkeeping"),
        Metric("draft_load_s", draft_load_s, "s", higher_is_better=False),
    ]
    for i, x in enumerate(st["a_pos"], start=1):
        m.append(Metric("acceptance_rate_pos", x if x == x else None, "fraction", labels={"pos": i}, higher_is_better=True,
                        note="P(accept draft token i | tokens 1..i-1 accepted)"))
    return m


def _hf_reference(eng, p, prompt, draft_model, ours) -> list[Metric]:
    """transformers' assisted generation on the same pair: fixed g (constant schedule, no confidence cut-off)."""
    n = p.gen_tokens
    if draft_model is not None:
        # transformers reads these from the assistant's own generation_config, not from generate()'s kwargs
        knobs = dict(num_assistant_tokens=p.g, num_assistant_tokens_schedule="heuristic" if p.adaptive else "constant",
                     assistant_confidence_threshold=0.0)
        draft_model.generation_config.update(**knobs)
        extra = dict(assistant_model=draft_model)
    else:
        knobs = extra = dict(prompt_lookup_num_tokens=p.g, max_matching_ngram_size=p.draft.max_n)
    plain, t_plain = _hf_generate(eng, prompt, n, {})
    assisted, t_asst = _hf_generate(eng, prompt, n, extra)
    how = "once each, end to end incl. prefill; " + ", ".join(f"{k}={v}" for k, v in knobs.items())
    return [
        Metric("hf_plain_tok_s", n / t_plain, "tok/s", note=f"transformers generate, {how}"),
        Metric("hf_assisted_tok_s", n / t_asst, "tok/s", note=f"transformers assisted generate, {how}"),
        Metric("hf_assisted_speedup", t_plain / t_asst, "x", higher_is_better=True, note=how),
        Metric("hf_assisted_identical", float(assisted == plain), "fraction",
               note="transformers assisted output equals its plain greedy output"),
        Metric("hf_plain_matches_ours", float(plain == ours), "fraction",
               note="transformers greedy output equals this loop's target-alone output"),
    ]
