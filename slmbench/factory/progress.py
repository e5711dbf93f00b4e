"""Progress bars for every long step (rich, on stderr) and one-line notes."""
from __future__ import annotations

import sys
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

CONSOLE = Console(stderr=True)


def note(msg: str) -> None:
    CONSOLE.print(f"[dim]build:[/] {msg}", highlight=False)


@contextmanager
def bar(desc: str, total: int):
    """Yields advance(n=1, **fields). Quiet (no live redraw) when stderr is not a terminal, e.g. under pytest."""
    if not sys.stderr.isatty():
        yield lambda n=1, **kw: None
        return
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, console=CONSOLE, transient=False) as p:
        t = p.add_task(desc, total=total, info="")
        yield lambda n=1, info="": p.update(t, advance=n, info=info)
