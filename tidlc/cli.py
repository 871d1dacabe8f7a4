"""The ``tidlc`` command.

Every failure a user can cause prints one line per problem (``file:line:col:
error: ... (hint: ...)``) and exits 2; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
import warnings
from collections.abc import Sequence

import tidlc
from tidlc.cli_options import options_from_args
from tidlc.diagnostics import TidlcError, TidlcWarning


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tidlc", description="Open model compiler for TI TDA4 (C7x + MMA).")
    parser.add_argument("--version", action="version", version=f"tidlc {tidlc.__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print the passes' notes")
    parser.add_argument("--diagnostics", choices=["text", "json"], default="text",
                        help="json: print every error and warning as one JSON document on stderr "
                             "(codes in docs/errors.md)")
    parser.add_argument("--limit", action="append", default=[], metavar="NAME=VALUE",
                        help="raise or lower a resource limit for untrusted input, e.g. tensor-bytes=4G "
                             "(repeatable; docs/errors.md lists them; also $TIDLC_LIMITS)")
    parser.add_argument("-p", dest="plugin_args", action="append", default=[], metavar="no:NAME | PIPELINE",
                        help="'no:NAME' blocks a plugin; otherwise a pass pipeline "
                             "'name{opt=v},...' that replaces the -O pipeline")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for module in COMMAND_MODULES:
        mod = importlib.import_module(module)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.__doc__)
        mod.add_arguments(p)
    return parser


# One module per command (tidlc/commands/*.py), in `tidlc --help` order. Each has NAME,
# HELP, a docstring (the command's --help description), ``add_arguments(parser)`` and
# ``run(args, options) -> int``; tidlc/cli_options.py turns the parsed flags into options.
COMMAND_MODULES: tuple[str, ...] = tuple(f"tidlc.commands.{name}" for name in (
    "compile", "check", "run", "ir", "opt", "plugins", "compare", "perf", "report", "tune", "eval", "sweep"))


@functools.cache
def _parser() -> argparse.ArgumentParser:
    """The parser, built once per process (building it costs more than reading a small model, and
    argparse re-applies every default on each parse, so reuse is safe)."""
    return build_parser()


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    if extras and args.command != "compile":
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    args.tidl_overrides = extras  # compile: TIDL's --key value overrides of an import config
    if not args.command:
        parser.print_help()
        return 2
    report = Diagnostics(args.diagnostics == "json", args.debug)
    with report:
        return report.finish(_dispatch(args, report))
    return report.code  # an exception was reported (the with block swallowed it)


def _dispatch(args, report: Diagnostics) -> int:
    from tidlc import limits
    before = limits.current()
    limits.set_limits(limits.parse_limits(args.limit, limits.limits_from_env()))
    try:  # the limits hold for this command only (main() may be called again in one process)
        return _run_command(args, report)
    finally:
        limits.set_limits(before)


def _run_command(args, report: Diagnostics) -> int:
    options = options_from_args(args)
    with warnings.catch_warnings():
        warnings.showwarning = report.show_warning
        warnings.simplefilter("default", TidlcWarning)
        if not args.debug:
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=RuntimeWarning)
        return importlib.import_module(f"tidlc.commands.{args.command}").run(args, options)


class Diagnostics:
    """How errors and warnings reach the user: text lines on stderr, or (``--diagnostics json``)
    one JSON document ``{"schema": "tidlc.diagnostics/1", "diagnostics": [...], "exit_code": N}``
    on stderr at exit. Used as a context manager around the command: it turns exceptions into
    exit codes (2 user error, 3 internal error, 130 interrupted) unless ``--debug``."""

    def __init__(self, as_json: bool, debug: bool):
        self.as_json = as_json
        self.debug = debug
        self.items: list[dict] = []
        self.code = 0

    def show_warning(self, message, category, filename, lineno, file=None, line=None) -> None:
        if not (issubclass(category, TidlcWarning) or self.debug):
            return
        if self.as_json:
            item = message.to_dict() if isinstance(message, TidlcWarning) else {
                "severity": "warning", "code": "warning", "message": str(message), "location": {}, "hint": None}
            self.items.append(item)
        else:
            hint = getattr(message, "hint", "")
            print(f"warning: {message}" + (f" (hint: {hint})" if hint else ""), file=sys.stderr)

    def finish(self, code: int) -> int:
        self.code = code
        if self.as_json:
            import json
            sys.stderr.write(json.dumps({"schema": "tidlc.diagnostics/1", "diagnostics": self.items,
                                         "exit_code": code}, indent=1) + "\n")
        return code

    def error(self, item: dict, text: str, code: int) -> None:
        if self.as_json:
            self.items.append(item)
        else:
            print(text, file=sys.stderr)
        self.finish(code)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, KeyboardInterrupt):
            self.error({"severity": "error", "code": "error", "message": "interrupted", "location": {}},
                       "interrupted", 130)
            return True
        if isinstance(exc, BrokenPipeError):  # `tidlc ir model | head`: the reader left, that is fine
            try:
                sys.stdout = open(os.devnull, "w")
            except OSError:
                pass
            self.code = 0
            return True
        if self.debug or not isinstance(exc, Exception):
            return False
        if isinstance(exc, TidlcError):
            self.error(exc.to_dict(), str(exc), exc.exit_code)
        elif isinstance(exc, MemoryError):
            self.error({"severity": "error", "code": "internal", "message": "out of memory", "location": {},
                        "hint": "lower --limit tensor-bytes / total-bytes, or report the input"},
                       "error: out of memory", 3)
        else:  # an internal error: short message, traceback on --debug
            text = (f"internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback "
                    "and please report it)")
            self.error({"severity": "error", "code": "internal", "message": f"{type(exc).__name__}: {exc}",
                        "location": {}, "hint": "run with --debug for a traceback and please report it"},
                       text, 3)
        return True


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
