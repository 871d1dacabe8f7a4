"""User-facing errors: one line, a location, a hint, a stable code.

Every failure a user can cause (bad file, unsupported layer, wrong shape, bad
option) is raised as :class:`TidlcError`. The CLI prints ``str(error)`` (one
line per problem) and exits with ``error.exit_code``; tracebacks only with
``--debug``. ``--diagnostics json`` prints the same errors and the warnings as
JSON objects (:meth:`TidlcError.to_dict`); the codes are listed in
docs/errors.md and do not change between releases.
"""
from __future__ import annotations

import warnings

import attrs

# code -> what it means (docs/errors.md is generated from and tested against this table)
CODES: dict[str, str] = {
    "error": "an error no more specific code describes",
    "file": "a file is missing, unreadable, not a regular file (FIFO, device, directory) or empty",
    "format": "the file is not in any format tidlc reads, or not in the one asked for",
    "syntax": "a text file (prototxt, IR text, import config, list file) does not parse",
    "corrupt": "a binary file is truncated or inconsistent (offsets, sizes, checksums, indices)",
    "limit": "a declared size, count or depth is over a resource limit (--limit NAME=VALUE raises it)",
    "unsupported": "a layer, operator, attribute or data type tidlc does not implement",
    "model": "the model is well-formed but wrong: dangling names, shapes that do not fit, missing weights",
    "shape": "a shape is dynamic, inconsistent or does not match the model",
    "input": "an input or calibration tensor/image is missing, unreadable or does not fit the model",
    "option": "a command-line option or pass option is unknown or out of range",
    "config": "a TIDL-RT import config key is unknown, malformed or out of range (an error), or ignored (a warning)",
    "mismatch": "files that belong together do not (net.bin and io.bin from different compiles)",
    "output": "an output cannot be written",
    "plugin": "a plugin is invalid, provided twice or failed to load",
    "warning": "a warning no more specific code describes",
    "calibration": "calibration is approximate (synthetic frames, too few frames, ignored data)",
    "range": "frames fed to a quantized model lie outside the ranges its inputs were calibrated for",
    "quantization": "a pre-quantized model's parameters cannot be kept exactly (asymmetric zero points)",
    "weights": "weights are missing: a structure-only model, or layers filled with random weights",
    "version": "a model's format or opset version is outside the tested range (newer; older ones are upgraded)",
    "partition": "a model that compiles to subgraphs and host ops is estimated here as if it ran whole",
    "ignored": "an option or key is accepted but has no effect",
    "internal": "a bug in tidlc (please report it)",
}


@attrs.frozen
class Loc:
    """Where something came from: a layer/node name and, if known, file:line:col or a byte offset."""

    name: str = ""
    file: str = ""
    line: int = 0
    col: int = 0
    offset: int = -1  # byte offset in a binary file (-1: none)

    def where(self) -> str:
        """``file:line:col``, ``file@byte N`` (or the part of it that is known)."""
        if not self.file:
            return ""
        if self.line:
            return f"{self.file}:{self.line}:{self.col}" if self.col else f"{self.file}:{self.line}"
        if self.offset >= 0:
            return f"{self.file}: byte {self.offset}"
        return self.file

    def __str__(self) -> str:
        where = self.where()
        if self.name and where:
            return f"{where}: '{self.name}'"
        return where or (f"'{self.name}'" if self.name else "")

    def to_dict(self) -> dict:
        out = {"file": self.file or None, "line": self.line or None, "col": self.col or None,
               "offset": self.offset if self.offset >= 0 else None, "name": self.name or None}
        return {k: v for k, v in out.items() if v is not None}


def loc_dict(loc: Loc | str | None) -> dict:
    if isinstance(loc, Loc):
        return loc.to_dict()
    return {"file": loc} if loc else {}


class TidlcError(Exception):
    """An error caused by user input. ``problems`` lists every problem found (one line each);
    ``code`` is one of :data:`CODES`."""

    exit_code = 2

    def __init__(self, message: str, loc: Loc | str | None = None, hint: str = "",
                 problems: list[str] | None = None, code: str = "error"):
        self.message = message
        self.loc = loc
        self.hint = hint
        self.problems = list(problems or [])
        self.code = code if code in CODES else "error"
        super().__init__(self.format())

    def format(self) -> str:
        where = str(self.loc) if self.loc else ""
        head = f"{where}: error: {self.message}" if where else f"error: {self.message}"
        if self.hint:
            head += f" (hint: {self.hint})"
        return "\n".join([head] + [f"  {p}" for p in self.problems])

    def __str__(self) -> str:  # built when shown, so problems added later appear
        return self.format()

    def to_dict(self) -> dict:
        """The JSON form of ``--diagnostics json`` (docs/errors.md)."""
        out = {"severity": "error", "code": self.code, "message": self.message,
               "location": loc_dict(self.loc), "hint": self.hint or None}
        if self.problems:
            out["problems"] = list(self.problems)
        return out


class TidlcWarning(UserWarning):
    """A warning tidlc wants the user to see once (printed by the CLI as 'warning: ...')."""

    def __init__(self, message: str, code: str = "warning", loc: Loc | str | None = None, hint: str = ""):
        super().__init__(message)
        self.code = code if code in CODES else "warning"
        self.loc = loc
        self.hint = hint

    def to_dict(self) -> dict:
        return {"severity": "warning", "code": self.code, "message": str(self.args[0]),
                "location": loc_dict(self.loc), "hint": self.hint or None}


def warn(message: str, code: str = "warning", loc: Loc | str | None = None, hint: str = "") -> None:
    warnings.warn(TidlcWarning(message, code, loc, hint), stacklevel=2)
