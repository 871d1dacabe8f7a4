"""The backend contract: what a compilation target provides (docs/backends.md).

A backend is registered by a plugin through the ``tidlc_backends`` hook and
selected with ``--target NAME`` (``CompileOptions.target``; default ``tidl``).
Core modules reach a backend only through ``plugins.registry.backends[name]``
(see :func:`tidlc.compiler.backend_for`), never by importing it. The registry
holds backend *instances*; a hook may return a class with a no-argument
constructor, which :func:`instance` instantiates.

Importing a backend's plugin module must stay cheap: the methods import the
heavy parts (executors, binary writers, performance models) when called.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import attrs

LEVELS = ("accelerated", "penalty", "host")


@attrs.frozen
class Verdict:
    """Whether a backend runs an op: ``accelerated`` (on the accelerator at full speed),
    ``penalty`` (runs, but slowly or with a costly conversion) or ``host`` (the backend
    cannot run it: it would stay on the host). ``reason`` says why, ``hint`` how to do better."""

    level: str = attrs.field(validator=attrs.validators.in_(LEVELS))
    reason: str = ""
    hint: str = ""

    @property
    def supported(self) -> bool:
        return self.level != "host"


@runtime_checkable
class Executable(Protocol):
    """A loaded compiled model.

    ``run(feeds)``: input name -> array in, output name -> array out.
    Optional, for ``tidlc run OUTDIR`` of a backend without a net.bin:
    ``input_info()``, a list of ``(name, shape, numpy dtype string)`` of the
    inputs it expects (random inputs and ``--input`` checks are built from it).
    """

    def run(self, feeds: dict, **kw: Any) -> dict:
        """Run once: input name -> array in, output name -> array out."""


@runtime_checkable
class Backend(Protocol):
    """A compilation target.

    ``name``: the ``--target`` name. ``devices()``: the device names it compiles
    for. ``supports(op)``: a :class:`Verdict`. ``prepare_pipeline(level, passes)``:
    the ``-O<level>`` pass-name list with the backend's own passes added (a new
    list). ``emit(graph, outdir, options)``: write the artifacts, return their
    paths. ``recognizes(location)``: is this path a compiled artifact of this
    backend. ``load(location)``: an :class:`Executable` for it.
    ``estimate(graph, device, options)`` is optional (a performance report).
    """

    name: str

    def devices(self) -> list[str]: ...

    def supports(self, op) -> Verdict: ...

    def prepare_pipeline(self, level: int, passes: list[str]) -> list[str]: ...

    def emit(self, graph, outdir: str, options) -> list[str]: ...

    def recognizes(self, location: str) -> bool: ...

    def load(self, location) -> Executable: ...


def instance(item):
    """A registered backend as an instance (a class is instantiated once, without arguments)."""
    return item() if isinstance(item, type) else item
