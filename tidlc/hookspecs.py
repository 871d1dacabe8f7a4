"""The plugin contract: every hook tidlc calls, in one module.

Plugins implement these with ``@tidlc.hookimpl`` and register through the
``tidlc`` entry-point group (``entry_points={"tidlc": ["name = package.module"]}``).
Builtin plugins are registered through the very same path. Hooks are for
discovery and events only; nothing here runs per tensor element.
"""
from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("tidlc")
hookimpl = pluggy.HookimplMarker("tidlc")


@hookspec
def tidlc_frontends():
    """Return a list of :class:`tidlc.frontend.Frontend` descriptors.

    A descriptor names the format, its file suffixes, a ``sniff(head, path)``
    function that recognises the format from the first bytes, and a lazy
    loader (``"package.module:function"``) so that importing tidlc never
    imports a framework until a model of that format is loaded.
    """


@hookspec
def tidlc_passes():
    """Return a list of pass classes (subclasses of :class:`tidlc.passes.Pass`)."""


@hookspec
def tidlc_backends():
    """Return a list of backends: objects (or no-argument classes) with the
    :class:`tidlc.backend.Backend` methods and a ``name`` (the ``--target`` name).

    Keep the plugin module cheap to import: the methods import what they need.
    See docs/backends.md.
    """


@hookspec
def tidlc_ops():
    """Return a list of :class:`tidlc.ir.OpDef` for ops the plugin brings (custom layers)."""


@hookspec
def tidlc_pipeline(level: int, passes: list):
    """Edit the pass-name list of the ``-O<level>`` pipeline in place.

    Insert your passes relative to named points, e.g.
    ``passes.insert(passes.index("fuse-activation"), "my-pass")``.
    Passes of blocked plugins (``-p no:fuse``) are already gone from the list,
    so check that an anchor is there. Called once per pipeline construction;
    an explicit ``-p`` pipeline string is never edited.
    """


@hookspec
def tidlc_pass_finished(pass_, graph, changed: bool, seconds: float):
    """Instrument: called after every pass with whether it changed the graph and how long it took."""


@hookspec
def tidlc_postprocessors():
    """Return ``tidlc.decoders.PostProcessor`` objects: what a network's outputs mean (boxes of a
    detector head, classes, a mask), selectable with ``tidlc run --post NAME`` (docs/plugins.md)."""


@hookspec
def tidlc_devices():
    """Return devices for the performance model (``tidlc perf --device NAME``).

    Each item is a path to a TOML device file or a dict with the same keys
    (see ``backends/tidl/devices/tda4vm.toml`` and docs/perf.md). A device may
    set ``extends = "tda4vm"`` and give only the values that differ. A device
    name defined twice (builtin or plugin) is an error naming both.
    """
