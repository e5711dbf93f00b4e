"""Projection vs measurement on a device measured on itself (analysis.projection): the projection the cost table
would have made for it, next to what the device measured, and the projection's error."""
from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from .. import fmt
from .section import TableSection

KEY = "projection_vs_measurement"
TITLE = "Projection vs measurement (devices measured on themselves)"
HEADER = ["device", "model [variant]", "metric", "projected from", "projected", "measured", "error",
          "within the measurement's 95% interval", "basis"]
NOTE = ("projected = what the report projects for a profile-only device (decode: the host's fraction of its "
        "bandwidth roofline × the profile's memory_bandwidth_gbs ÷ bytes/token; prefill: host prefill × the profile's "
        "compute_gflops ÷ the host's); measured = the device's own rows (source: measured, on the device); "
        "error = projected ÷ measured − 1 (+: the projection was optimistic). The spread is the measurement's "
        "(stderr or the CI of its median); a projection carries none of its own. Host timings on a shared machine: "
        "the error holds the host's noise too.")


@dataclass
class ProjectionSection(TableSection):
    data: list = field(default_factory=list)  # analysis.projection.compare's rows: numbers, for the JSON report

    def json(self) -> dict:
        from ..analysis.projection import as_json
        return {**super().json(), "data": as_json(self.data)}


def _measured(r: dict) -> str:
    s = fmt.num(r["measured"])
    if r.get("spread"):
        s += f" ± {fmt.num(r['spread'])} ({r.get('spread_kind') or 'spread'}"
        s += f", n={r['n']})" if r.get("n") else ")"
    return s


def table(rows: list[dict]) -> list[list[str]]:
    from ..analysis.projection import within_noise
    out = []
    for r in rows:
        inside = within_noise(r)
        out.append([r["device"], f"{r['model']} [{r['variant']}]", r["metric"], r["host"],
                    fmt.num(r["projected"]) + " (proj.)" if r["projected"] is not None else "n/a",
                    _measured(r), f"{100 * r['error']:+.1f}%" if r["error"] is not None else "n/a",
                    {True: "yes", False: "no", None: "n/a"}[inside], r.get("basis") or r.get("why") or ""])
    return out


def section(df: pd.DataFrame, infos: dict | None = None, profiles: dict | None = None) -> TableSection | None:
    """The section when the run has a device with both a profile and its own measured rows; else None."""
    from ..analysis.cost import load_profiles
    from ..analysis.projection import compare
    rows = compare(df, profiles if profiles is not None else load_profiles(), infos)
    if not rows:
        return None
    return ProjectionSection(KEY, TITLE, HEADER, table(rows), NOTE, note_first=True, data=rows)
