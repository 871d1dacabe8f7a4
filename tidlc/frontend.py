"""Frontend descriptors and model loading (format detection by suffix and by sniffing)."""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable

import attrs

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph


@attrs.frozen
class Frontend:
    """How to recognise and load one model format.

    ``loader`` is ``"package.module:function"``; it is imported only when a
    model of this format is loaded. The function is called as
    ``function(path, options) -> Graph`` where ``options`` is a
    :class:`tidlc.config.CompileOptions`.
    """

    name: str
    suffixes: tuple[str, ...]
    loader: str
    sniff: Callable[[bytes, str], bool] | None = None
    description: str = ""
    plugin: str = "builtin"

    def load_function(self) -> Callable:
        module, _, func = self.loader.partition(":")
        return getattr(importlib.import_module(module), func)


def pick_frontend(frontends: dict[str, Frontend], path: str, forced: str | None = None) -> Frontend:
    """The frontend for ``path``: forced by name, else by suffix, else by sniffing the first bytes."""
    if forced:
        if forced not in frontends:
            raise TidlcError(f"unknown input format '{forced}'", hint=f"known: {', '.join(sorted(frontends))}",
                             code="option")
        return frontends[forced]
    from tidlc.fileio import open_regular
    with open_regular(path, "model file") as fh:  # refuses FIFOs, devices and folders by name, never blocks
        try:
            head = fh.read(4096)
        except OSError as exc:
            raise TidlcError(f"cannot read: {exc.strerror}", path, code="file") from None
    lower = path.lower()
    by_suffix = [f for f in frontends.values() if any(lower.endswith(s) for s in f.suffixes)]
    if len(by_suffix) == 1:
        return by_suffix[0]
    candidates = by_suffix or list(frontends.values())
    sniffed = [f for f in candidates if f.sniff is not None and f.sniff(head, path)]
    if len(sniffed) >= 1:
        return sniffed[0]
    known = ", ".join(sorted(s for f in frontends.values() for s in f.suffixes))
    raise TidlcError("unrecognised model format" + (" (the file is empty)" if not head else ""), path,
                     hint=f"known suffixes: {known}; or pass --format NAME", code="format")


def load_model(frontends: dict[str, Frontend], path: str, options, forced: str | None = None,
               blame: Callable[[str], str | None] | None = None) -> Graph:
    """Import ``path`` with its frontend. ``blame(frontend name)`` names the third-party plugin that
    provides it: an exception from a plugin's loader is that plugin's error, not tidlc's."""
    frontend = pick_frontend(frontends, path, forced)
    who = blame(frontend.name) if blame else None
    try:
        graph = frontend.load_function()(path, options)
    except Exception as exc:
        if who is None or isinstance(exc, TidlcError):
            raise
        from tidlc.plugin_manager import plugin_failure
        raise plugin_failure(who, f"frontend '{frontend.name}'", exc) from exc
    graph.attrs.setdefault("source", os.path.basename(path))
    return graph


def run_check(check: Callable | None, node) -> str | None:
    """A converter row's pre-conversion check: its problem text, or None (a raised TidlcError counts as one)."""
    if check is None:
        return None
    try:
        return check(node) or None
    except TidlcError as exc:
        return exc.message


def unsupported_error(what: str, problems: list[str], path: str, hint: str) -> TidlcError:
    """The one error listing every unsupported node of a model (``"3 unsupported ONNX ops"``)."""
    n = len(problems)
    return TidlcError(f"{n} unsupported {what}{'s' if n > 1 else ''}", path, hint=hint, problems=problems,
                      code="unsupported")
