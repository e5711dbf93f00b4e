"""The report section protocol: a part of a run's report (quality vs cost, speculative decoding, cost per token)
renders itself three ways, and a page only concatenates. `key` names it in the JSON report."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from .html import esc
from .plots import png_to_html
from .tables import html_table, md_table


@runtime_checkable
class Section(Protocol):
    key: str
    title: str

    def markdown(self) -> str: ...

    def html(self) -> str: ...

    def json(self): ...


@dataclass
class TableSection:
    """A heading, one table, a note, and optionally a plot (a PNG shown in HTML)."""
    key: str
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    note_first: bool = False  # the note above the table (it explains the columns) rather than under it
    plot: Callable[[], bytes | None] | None = None  # drawn only for HTML: Markdown and JSON need no figure
    alt: str = ""

    def markdown(self) -> str:
        note = [self.note, ""] if self.note else []
        body = (note + [md_table(self.header, self.rows), ""]) if self.note_first else \
            ([md_table(self.header, self.rows), ""] + note)
        return "\n".join([f"## {self.title}", ""] + body)

    def html(self) -> str:
        note = f"<p>{esc(self.note)}</p>" if self.note else ""
        table = html_table(self.header, self.rows)
        return (f"<h2>{esc(self.title)}</h2>" + (note + table if self.note_first else table + note)
                + (png_to_html(self.plot(), self.alt) if self.plot else ""))

    def json(self) -> dict:
        return {"title": self.title, "header": self.header, "rows": self.rows, "note": self.note}
