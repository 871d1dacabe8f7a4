"""The plugin manager: builtins and third-party plugins registered the same way.

Builtin plugin modules are listed in :data:`BUILTIN_PLUGINS`; third-party
ones come from the ``tidlc`` entry-point group. Everything they provide
(frontends, passes, backends, ops) is collected into a :class:`Registry`;
the same name provided twice is an error naming both plugins.
"""
from __future__ import annotations

import importlib
from typing import Iterable, Optional

import attrs
import pluggy

from tidlc import hookspecs
from tidlc.diagnostics import TidlcError
from tidlc.ir.opdef import OPS

BUILTIN_PLUGINS = (
    ("cleanup", "tidlc.plugins.cleanup"),
    ("fold-constants", "tidlc.plugins.fold_constants"),
    ("fuse", "tidlc.plugins.fuse"),
    ("onnx", "tidlc.frontends.onnx"),
    ("caffe", "tidlc.frontends.caffe"),
    ("tir", "tidlc.frontends.tir"),
)


@attrs.define
class Registry:
    frontends: dict = attrs.Factory(dict)
    passes: dict = attrs.Factory(dict)
    backends: dict = attrs.Factory(dict)
    ops: dict = attrs.Factory(dict)
    owner: dict = attrs.Factory(dict)  # (kind, name) -> plugin name


@attrs.define
class Plugins:
    manager: pluggy.PluginManager
    registry: Registry
    blocked: tuple[str, ...] = ()

    @property
    def hook(self):
        return self.manager.hook

    def listing(self) -> list[tuple[str, str, str]]:
        """(kind, name, plugin) rows, sorted; for ``tidlc plugins``."""
        rows = [(kind, name, plugin) for (kind, name), plugin in self.registry.owner.items()]
        return sorted(rows)

    def plugin_names(self) -> list[tuple[str, str]]:
        out = []
        for name, plugin in self.manager.list_name_plugin():
            dist = ""
            for p, d in self.manager.list_plugin_distinfo():
                if p is plugin:
                    dist = f"{d.project_name} {d.version}"
            out.append((name, dist or "builtin"))
        return sorted(out)


def _collect(pm: pluggy.PluginManager, hook_name: str) -> Iterable[tuple[str, object]]:
    caller = getattr(pm.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):  # registration order
        for item in impl.function() or ():
            yield impl.plugin_name, item


def _add(registry: Registry, table: dict, kind: str, name: str, item, plugin: str) -> None:
    if name in table:
        raise TidlcError(f"{kind} '{name}' is provided twice: by plugin '{registry.owner[(kind, name)]}' "
                         f"and by plugin '{plugin}'", hint=f"block one with -p no:{plugin}")
    table[name] = item
    registry.owner[(kind, name)] = plugin


def create_plugins(blocked: Iterable[str] = (), load_entry_points: bool = True) -> Plugins:
    """A plugin manager with builtins and installed third-party plugins, minus ``blocked``."""
    blocked = tuple(blocked)
    pm = pluggy.PluginManager("tidlc")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    for name, module in BUILTIN_PLUGINS:
        if name in blocked:
            continue
        pm.register(importlib.import_module(module), name=name)
    if load_entry_points:
        try:
            pm.load_setuptools_entrypoints("tidlc")
        except Exception as exc:  # a broken third-party plugin must not hide which one it is
            raise TidlcError(f"a tidlc plugin failed to load: {exc}", hint="uninstall it or block it with -p no:NAME") from None
    unknown = [n for n in blocked if n not in {x for x, _ in BUILTIN_PLUGINS} and not pm.is_blocked(n)]
    del unknown  # blocking a name that is not installed is harmless, like pytest
    pm.check_pending()
    registry = Registry()
    for plugin, fe in _collect(pm, "tidlc_frontends"):
        _add(registry, registry.frontends, "frontend", fe.name, attrs.evolve(fe, plugin=plugin), plugin)
    for plugin, cls in _collect(pm, "tidlc_passes"):
        _add(registry, registry.passes, "pass", cls.name, cls, plugin)
    for plugin, cls in _collect(pm, "tidlc_backends"):
        _add(registry, registry.backends, "backend", cls.name, cls, plugin)
    for plugin, opdef in _collect(pm, "tidlc_ops"):
        existing = OPS.get(opdef.name)
        if existing is not None and existing.plugin != plugin:
            raise TidlcError(f"op '{opdef.name}' is provided twice: by '{existing.plugin}' and by plugin '{plugin}'",
                             hint=f"block one with -p no:{plugin}")
        opdef = attrs.evolve(opdef, plugin=plugin)
        OPS.unregister(opdef.name)
        OPS.register(opdef)
        _add(registry, registry.ops, "op", opdef.name, opdef, plugin)
    return Plugins(pm, registry, blocked)


_DEFAULT: Optional[Plugins] = None


def default_plugins() -> Plugins:
    """The process-wide plugin set (no blocking), created on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = create_plugins()
    return _DEFAULT
