"""User-facing errors: one line, a location, a hint.

Every failure a user can cause (bad file, unsupported layer, wrong shape, bad
option) is raised as :class:`TidlcError`. The CLI prints ``str(error)`` (one
line per problem) and exits with ``error.exit_code``; tracebacks only with
``--debug``.
"""
from __future__ import annotations

import warnings

import attrs


@attrs.frozen
class Loc:
    """Where something came from: a layer/node name and, if known, file:line:col."""

    name: str = ""
    file: str = ""
    line: int = 0
    col: int = 0

    def where(self) -> str:
        """``file:line:col`` (or the part of it that is known)."""
        if not self.file:
            return ""
        if self.line:
            return f"{self.file}:{self.line}:{self.col}" if self.col else f"{self.file}:{self.line}"
        return self.file

    def __str__(self) -> str:
        where = self.where()
        if self.name and where:
            return f"{where}: '{self.name}'"
        return where or (f"'{self.name}'" if self.name else "")


class TidlcError(Exception):
    """An error caused by user input. ``problems`` lists every problem found (one line each)."""

    exit_code = 2

    def __init__(self, message: str, loc: Loc | str | None = None, hint: str = "",
                 problems: list[str] | None = None):
        self.message = message
        self.loc = loc
        self.hint = hint
        self.problems = list(problems or [])
        super().__init__(self.format())

    def format(self) -> str:
        where = str(self.loc) if self.loc else ""
        head = f"{where}: error: {self.message}" if where else f"error: {self.message}"
        if self.hint:
            head += f" (hint: {self.hint})"
        return "\n".join([head] + [f"  {p}" for p in self.problems])

    def __str__(self) -> str:  # built when shown, so problems added later appear
        return self.format()


class TidlcWarning(UserWarning):
    """A warning tidlc wants the user to see once (printed by the CLI as 'warning: ...')."""


def warn(message: str) -> None:
    warnings.warn(message, TidlcWarning, stacklevel=2)
