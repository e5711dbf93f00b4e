"""User-facing errors: one clear line naming the file and field, exit code 2, no traceback."""
from __future__ import annotations


class UserError(Exception):
    """Bad input (suite, recipe, profile, path...). The CLI prints `error: <file>: <field>: <why>` and exits 2."""

    exit_code = 2

    def __init__(self, message: str, file: str | None = None, field: str | None = None):
        self.message, self.file, self.field = message, file, field
        super().__init__(self.line())

    def line(self) -> str:
        """Always one line: newlines and control characters in a message (e.g. from YAML) become spaces."""
        where = ": ".join(str(p) for p in (self.file, self.field) if p)
        text = f"{where}: {self.message}" if where else str(self.message)
        return " ".join("".join(c if c.isprintable() else " " for c in text).split())


class JobError(Exception):
    """A job failed in a way that is recorded (status + message) rather than raised to the user."""

    def __init__(self, status: str, message: str):
        self.status, self.message = status, message
        super().__init__(f"{status}: {message}")


class Unsupported(JobError):
    """A combination with no kernel/runtime here: recorded as `unsupported`, never a crash."""

    def __init__(self, message: str):
        super().__init__("unsupported", message)
