"""Accuracy: lm-eval tasks on the model variant this job loaded (the same object the cost scenarios measure).

Scoring is lm-eval's own (simple_evaluate with its HFLM on our model object): acc, acc_norm, perplexity, with its
stderr. Task names are lm-eval's; local ones come from the offline task pack (suites/tasks, slmbench/data/tasks)
and a suite's include_path, checked (names, data files) when the suite is validated, before any job runs.
`limit` takes a fixed-seed random subsample per task (lm-eval's own --limit takes the first N).

Per-item scores (0/1 for acc, acc_norm) ride along as each task row's samples (spread_kind `stderr_units`, the item
set's fingerprint in the note), in doc order, so two models scored on the same items are compared paired
(McNemar / paired differences, analysis.claims)."""
from __future__ import annotations

import json
import math
import random
import time
from typing import Literal

from pydantic import Field

from ..metrics import Metric
from ..contracts import JobContext, Params, Scenario, register_scenario
from ..contracts.engine import LM_EVAL


class AccuracyParams(Params):
    tasks: list[str] = Field(min_length=1, description="lm-eval task, group or tag names")
    num_fewshot: int | None = Field(0, ge=0, le=64, description="None: the task's default")
    limit: int | None = Field(None, ge=1, description="items per task; None: all")
    subsample: Literal["random", "first"] = Field("random", description="how `limit` picks items (seeded)")
    batch_size: int | Literal["auto"] = 16
    include_path: list[str] = Field(default_factory=list, description="extra lm-eval task YAML directories")
    bootstrap_iters: int = Field(1000, ge=0, le=100_000, description="for stderr of non-mean metrics (perplexity)")

    @classmethod
    def check(cls, p: "AccuracyParams", file: str, field: str, part: str = "params") -> None:
        from ..lmeval_model import check_tasks
        check_tasks(p.tasks, p.include_path, file, f"{field}.{part}")


@register_scenario
class Accuracy(Scenario):
    name, Params = 'accuracy', AccuracyParams
    requires = frozenset({LM_EVAL})

    def run(self, ctx: JobContext, p: AccuracyParams) -> list[Metric]:
        from .. import lmeval_model as lx
        local = lx.check_tasks(p.tasks, p.include_path)  # again: the data may have moved since validation
        if local:
            lx.go_offline()
        import lm_eval
        tm = lx.task_manager(p.include_path, local_only=local)
        lm = lx.from_engine(ctx.engine, batch_size=p.batch_size)

        built, leaves = [], {}
        for name in p.tasks:
            d = tm.load([name])
            top = d["groups"].get(name) or d["tasks"].get(name)
            built += [top] if top is not None else list(d["tasks"].values())  # a tag: its tasks
            leaves.update(d["tasks"])
        samples = None
        if p.limit:
            rng = random.Random(ctx.seed)
            samples = {}
            for tname, task in sorted(leaves.items()):
                n = len(task.eval_docs)
                idx = rng.sample(range(n), min(p.limit, n)) if p.subsample == "random" else range(min(p.limit, n))
                samples[tname] = sorted(idx)
        ctx.progress(f"lm-eval: {', '.join(p.tasks)}")
        t0 = time.perf_counter()
        res = lm_eval.simple_evaluate(model=lm, tasks=built, num_fewshot=p.num_fewshot, samples=samples,
                                      task_manager=tm, bootstrap_iters=p.bootstrap_iters, log_samples=True,
                                      random_seed=ctx.seed, numpy_random_seed=ctx.seed, torch_random_seed=ctx.seed,
                                      fewshot_random_seed=ctx.seed)
        wall = time.perf_counter() - t0
        return _metrics(res, p, wall)


def _version() -> str:
    import lm_eval
    return getattr(lm_eval, "__version__", "")


def _per_item(res: dict) -> dict:
    """(task, filter, metric) → (fingerprint note, per-item values in doc order) from lm-eval's logged samples."""
    import hashlib
    out: dict = {}
    for task, items in (res.get("samples") or {}).items():
        by: dict = {}
        for it in items:
            for m in it.get("metrics", []):
                v = it.get(m)
                if isinstance(v, (int, float)):  # bool included
                    by.setdefault((it.get("filter", "none"), m), []).append((it["doc_id"], it.get("doc_hash", ""),
                                                                            float(v)))
        for (filt, m), xs in by.items():
            xs.sort(key=lambda t: t[0])
            fp = hashlib.sha1(json.dumps([task] + [[d, h] for d, h, _ in xs]).encode()).hexdigest()[:12]
            out[(task, filt, m)] = (f"units={fp}", [v for _, _, v in xs])
    return out


def _metrics(res: dict, p: AccuracyParams, wall: float) -> list[Metric]:
    per_item = _per_item(res)
    nsamp = res.get("n-samples", {})
    groups = res.get("group_subtasks", {})

    def n_of(task):
        if task in nsamp:
            return int(nsamp[task]["effective"])
        return sum(n_of(t) for t in groups.get(task, []))

    out, total = [], 0
    for task, r in res["results"].items():
        hib = res.get("higher_is_better", {}).get(task, {})
        n = n_of(task)
        if task not in groups:
            total += n
        for key, v in r.items():
            if "," not in key or "_stderr," in key or not isinstance(v, (int, float)):
                continue
            metric, filt = key.split(",", 1)
            se = r.get(f"{metric}_stderr,{filt}")
            se = float(se) if isinstance(se, (int, float)) and not math.isnan(se) else None
            labels = {"task": task} if filt == "none" else {"task": task, "filter": filt}
            frac = metric in ("acc", "acc_norm", "exact_match", "f1", "mcc")
            units, vals = per_item.get((task, filt, metric), ("", None))
            paired = metric in ("acc", "acc_norm", "exact_match") and vals is not None and len(vals) > 1
            out.append(Metric(metric, float(v), "fraction" if frac else "", n=n, spread=se,
                              spread_kind=("stderr_units" if paired else "stderr") if se is not None else None,
                              higher_is_better=hib.get(metric), samples=vals if paired else None,
                              labels=labels, note=f"lm-eval {_version()}, "
                              f"{p.num_fewshot}-shot, {'group mean' if task in groups else 'task'} over {n} items"
                              + (f"; samples: per item ({units})" if paired else "")))
    out.append(Metric("eval_s", wall, "s", n=total, higher_is_better=False,
                      note=f"lm-eval wall time for {total} items ({', '.join(p.tasks)}), batch {p.batch_size}"))
    return out
