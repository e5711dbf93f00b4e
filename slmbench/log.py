"""One logging path: stdlib logging under the `slmbench` logger, drawn by rich on a terminal and as plain lines
otherwise (CI logs, nohup), always on stderr. Job processes relay progress to the runner as marked lines in their
log (`job_progress`), which the local executor reads while it polls — nothing extra runs beside a measurement."""
from __future__ import annotations

import logging
import sys

PROGRESS = "@slmbench-progress "
_done = False


def get(name: str) -> logging.Logger:
    return logging.getLogger(f"slmbench.{name}" if name else "slmbench")


def setup(level: int = logging.INFO) -> None:
    """Once per process: a rich handler on a terminal, plain `message` lines elsewhere."""
    global _done
    if _done:
        return
    _done = True
    root = logging.getLogger("slmbench")
    root.setLevel(level)
    root.propagate = False
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.logging import RichHandler
        h: logging.Handler = RichHandler(console=Console(stderr=True), show_time=False, show_path=False,
                                         show_level=False, markup=True)
    else:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(_Plain())
    root.addHandler(h)


class _Plain(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return plain(record.getMessage())


def plain(msg: str) -> str:
    """Rich markup stripped, for plain-text handlers and files."""
    from rich.text import Text
    return Text.from_markup(msg).plain


def job_progress(msg: str) -> None:
    """Inside a job process: one progress line into the job's log, relayed to the user by the executor."""
    print(PROGRESS + " ".join(str(msg).split())[:200], flush=True)


def progress_of(line: str) -> str | None:
    return line[len(PROGRESS):].strip() if line.startswith(PROGRESS) else None
