"""How much of the teacher's quality each student keeps, by training budget (pure: rows in, table rows out).

Per student arm (model names ending -sN are seeds of one arm) and budget (`train_tokens_seen`):
- held-out bits/byte: the students' mean against the teacher's bits/byte on the same held-out split (each student
  row carries its own `teacher_heldout_bpb`); kept = teacher / student (1 = as good as the teacher);
- accuracy per task: the students' mean against the teacher's rows of the same task and job params (the same
  seeded items; student rows on items the teacher was not scored on are left out); kept = student / teacher, and the share of the teacher's lead over chance the student keeps,
  (student - chance) / (teacher - chance), where the task's chance level is known (1 / choices).
"""
from __future__ import annotations

import fnmatch
import json
import re
import statistics

import pandas as pd

CHANCE = {"arc_easy": 0.25, "arc_challenge": 0.25, "piqa": 0.5, "hellaswag": 0.25, "openbookqa": 0.25,
          "copa": 0.5, "winogrande": 0.5, "boolq": 0.5}  # 1 / choices (ARC has a few 3- and 5-way items: ~0.25)
_SEED = re.compile(r"-s\d+$")


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["status"] == "ok") & df["value"].notna()]


def _val(rows: pd.DataFrame, metric: str) -> float | None:
    v = rows.loc[rows["metric"] == metric, "value"]
    return float(v.iloc[0]) if len(v) else None


def _task(labels) -> str | None:
    return json.loads(labels or "{}").get("task")


def retention(df: pd.DataFrame, teacher: str, students, metric: str = "acc_norm") -> list[dict]:
    """One dict per (arm, budget): seeds, bpb, teacher_bpb, bpb_kept, and per task {student, teacher, kept,
    lead_kept} under `tasks`. Arms without held-out rows are left out."""
    ok = _ok(df)
    globs = [students] if isinstance(students, str) else list(students)
    names = sorted({m for m in ok["model"].astype(str) if any(fnmatch.fnmatchcase(m, g) for g in globs)})
    teach = ok[(ok["model"] == teacher) & (ok["metric"] == metric) & (ok["scenario"] == "accuracy")]
    ref = {(_task(r.labels), r.params): float(r.value) for r in teach.itertuples()}
    arms: dict = {}
    for name in names:
        held = ok[(ok["model"] == name) & (ok["scenario"] == "heldout")]
        bpb, tb, budget = (_val(held, m) for m in ("heldout_bpb", "teacher_heldout_bpb", "train_tokens_seen"))
        if bpb is None:
            continue
        acc = ok[(ok["model"] == name) & (ok["metric"] == metric) & (ok["scenario"] == "accuracy")]
        a = arms.setdefault((_SEED.sub("", name), budget), {"seeds": [], "bpb": [], "tbpb": [], "acc": {}})
        a["seeds"].append(name)
        a["bpb"].append(bpb)
        a["tbpb"].append(tb)
        for r in acc.itertuples():
            a["acc"].setdefault((_task(r.labels), r.params), []).append(float(r.value))
    out = []
    for (arm, budget), a in sorted(arms.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0])):
        bpb = statistics.fmean(a["bpb"])
        tb = statistics.fmean(x for x in a["tbpb"] if x is not None) if any(x is not None for x in a["tbpb"]) \
            else None
        tasks = {}
        for (task, params), vals in sorted(a["acc"].items(), key=lambda kv: str(kv)):
            s, t = statistics.fmean(vals), ref.get((task, params))
            if t is None:  # items the teacher was not scored on: nothing to keep a share of
                continue
            ch = CHANCE.get(str(task))
            tasks[task if task not in tasks else f"{task} ({params})"] = {"student": s, "teacher": t, "n_seeds": len(vals),
                           "kept": s / t if t else None,
                           "lead_kept": (s - ch) / (t - ch) if ch is not None and t > ch else None}
        out.append({"arm": arm, "budget": budget, "seeds": len(a["seeds"]), "bpb": bpb, "teacher_bpb": tb,
                    "bpb_kept": tb / bpb if tb else None, "tasks": tasks})
    return out
