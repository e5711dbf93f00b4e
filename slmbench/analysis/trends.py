"""Trends over nights: the series of every metric across a suite's runs, with the steps change-point detection
finds in it (same thresholds as the verdicts). Pure: runs and rows in, Trend dataclasses out."""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ..regression_rules import Rule, rule_for
from ..stats import change_points, rel_change
from .regression import comparable, direction, samples
from .rows import key_where


@dataclass
class Step:
    run_id: str  # first night after the step
    created: float
    before: float
    after: float
    rel: float
    p: float
    verdict: str  # regressed | improved | changed (no direction known)
    commits: tuple[str | None, str | None]  # last commit before, first commit with the step
    nights_after: int


@dataclass
class Trend:
    key: tuple
    metric: str
    unit: str
    higher_is_better: bool | None
    runs: list[str]
    created: list[float]
    values: list[float]  # per-night median
    spread: list[float]
    steps: list[Step]
    gate: bool = True  # False: an informational metric (its steps are shown, not reported)

    @property
    def where(self) -> str:
        return key_where(self.key)


def detect(runs: pd.DataFrame, rows: pd.DataFrame, commits: dict[str, str | None], rules: dict[str, Rule]
           ) -> list[Trend]:
    """`runs`: run_id and created, oldest first (Store.suite_runs); `rows`: their rows with samples;
    `commits`: run_id → git commit. One Trend per key present on at least two nights."""
    if len(runs) < 2 or rows.empty:
        return []
    ids = list(runs["run_id"])
    created = dict(zip(runs["run_id"], runs["created"]))
    df = comparable(rows[(rows["status"] == "ok") & rows["value"].notna()])
    df = df[~df[["run_id", "key"]].astype(str).duplicated()]  # one value per night and key
    out = []
    for key, g in df.groupby("key", sort=False):
        g = g.set_index("run_id")
        present = [r for r in ids if r in g.index]
        if len(present) >= 2:
            out.append(_trend(key, g, present, created, commits, rules))
    return out


def _trend(key, g: pd.DataFrame, present: list[str], created: dict, commits: dict, rules) -> Trend:
    first = g.loc[present[0]]
    rule = rule_for(first["metric"], first["unit"], rules)
    hib = direction(first, rule)
    nights = [samples(g.loc[r]) for r in present]
    steps = []
    for k, before, after, p in change_points(nights, rule.min_change, rule.alpha):
        rel = rel_change(before, after)
        worse = None if hib is None else ((rel < 0) if hib else (rel > 0))
        steps.append(Step(present[k], created[present[k]], before, after, rel, p,
                          "changed" if worse is None else ("regressed" if worse else "improved"),
                          (commits.get(present[k - 1]), commits.get(present[k])), len(present) - k))
    return Trend(key, first["metric"], first["unit"], hib, present, [created[r] for r in present],
                 [float(g.loc[r, "value"]) for r in present],
                 [float(g.loc[r, "spread"]) if pd.notna(g.loc[r, "spread"]) else 0.0 for r in present],
                 steps, rule.gate)
