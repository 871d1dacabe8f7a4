"""The plugin manager: builtins and third-party plugins registered the same way.

Builtin plugin modules are listed in :data:`BUILTIN_PLUGINS`; third-party
ones come from the ``tidlc`` entry-point group. Everything they provide
(frontends, passes, backends, ops) is collected into a :class:`Registry`;
the same name provided twice is an error naming both plugins, and so is a
hook implementation whose name matches no hook (a misspelling).
"""
from __future__ import annotations

import difflib
import importlib
import importlib.metadata
from collections.abc import Iterable

import attrs
import pluggy

from tidlc import hookspecs
from tidlc.diagnostics import TidlcError
from tidlc.ir.opdef import OPS

BUILTIN_PLUGINS = (
    ("cleanup", "tidlc.plugins.cleanup"),
    ("fold-constants", "tidlc.plugins.fold_constants"),
    ("fuse", "tidlc.plugins.fuse"),
    ("patterns", "tidlc.plugins.patterns"),
    ("equalize", "tidlc.plugins.equalize"),
    ("prune", "tidlc.plugins.prune"),
    ("layout", "tidlc.plugins.layout"),
    ("quantize", "tidlc.backends.tidl.quantize"),
    ("onnx", "tidlc.frontends.onnx"),
    ("caffe", "tidlc.frontends.caffe"),
    ("tensorflow", "tidlc.frontends.tensorflow"),
    ("tflite", "tidlc.frontends.tflite"),
    ("tir", "tidlc.frontends.tir"),
    ("tidl", "tidlc.backends.tidl"),
    ("onnx-qdq", "tidlc.backends.onnx_qdq"),
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
    origins: dict = attrs.Factory(dict)  # plugin name -> "builtin", "extra" or "project version"

    @property
    def hook(self):
        return self.manager.hook

    def listing(self) -> list[tuple[str, str, str]]:
        """(kind, name, plugin) rows, sorted; for ``tidlc plugins``."""
        rows = [(kind, name, plugin) for (kind, name), plugin in self.registry.owner.items()]
        return sorted(rows)

    def blame(self, kind: str, name: str) -> str | None:
        """``"plugin 'NAME' (project VERSION)"`` when a third-party plugin provides ``kind`` ``name``
        (its failures are its own, not tidlc's internal errors); None for builtins."""
        plugin = self.registry.owner.get((kind, name))
        origin = self.origins.get(plugin, "builtin")
        return None if plugin is None or origin == "builtin" else f"plugin '{plugin}' ({origin})"

    def plugin_names(self) -> list[tuple[str, str]]:
        """(plugin name, "project version" or "builtin") rows, sorted; for ``tidlc plugins``."""
        # (pluggy lists blocked names too, with no plugin object)
        return sorted((name, self.origins.get(name, "builtin"))
                      for name, plugin in self.manager.list_name_plugin()
                      if plugin is not None and name != _CORE_PIPELINE)


_CORE_PIPELINE = "tidlc.pipeline"


class _AvailablePasses:
    """Core hook implementation: the -O pipelines name only passes that are installed.

    The default pipelines list builtin pass names; when their plugin is blocked
    (``-p no:fuse``) they are dropped here, first (``tryfirst``), so that the
    plugins editing the list afterwards see the pipeline that will really run.
    Names a plugin inserts are not filtered: a misspelt one stays an error.
    """

    def __init__(self, registry: Registry):
        self.registry = registry

    @hookspecs.hookimpl(tryfirst=True)
    def tidlc_pipeline(self, level: int, passes: list) -> None:
        kept: list[str] = []
        for name in passes:
            if name in self.registry.passes and (not kept or kept[-1] != name):
                kept.append(name)  # (a pass dropped between two ``dce`` leaves one)
        passes[:] = kept


def plugin_failure(who: str, where: str, exc: BaseException) -> TidlcError:
    """The error for an exception raised inside a plugin's code (exit 2, not tidlc's internal error)."""
    name = who.split("'")[1] if "'" in who else who
    text = " ".join(str(exc).split())
    return TidlcError(f"{who} failed in {where}: {type(exc).__name__}: {text[:300]}",
                      hint=f"report it to the plugin's authors, or block it with -p no:{name}", code="plugin")


def _collect(pm: pluggy.PluginManager, hook_name: str) -> Iterable[tuple[str, object]]:
    """(plugin name, item) for every item every implementation of ``hook_name`` returns, each
    checked against what the hook promises (a wrong type is named at load, not deep in a compile)."""
    caller = getattr(pm.hook, hook_name)
    for impl in caller.get_hookimpls():  # registration order (calls run in reverse)
        try:
            items = impl.function()
            items = list(items or ())
        except TidlcError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's hook is the plugin's business
            raise plugin_failure(f"plugin '{impl.plugin_name}'", f"hook {hook_name}", exc) from exc
        for item in items:
            problem = _HOOK_CHECKS[hook_name](item)
            if problem:
                raise TidlcError(f"plugin '{impl.plugin_name}': {hook_name} returned {problem}",
                                 hint=f"fix the plugin, or block it with -p no:{impl.plugin_name}", code="plugin")
            yield impl.plugin_name, item


def _frontend_problem(item) -> str | None:
    from tidlc.frontend import Frontend
    if not isinstance(item, Frontend):
        return f"{type(item).__name__} {item!r:.60}, expected a tidlc.frontend.Frontend"
    module, sep, func = item.loader.partition(":")
    if not (sep and module and func.isidentifier()):
        return f"frontend '{item.name}' with loader {item.loader!r}, expected 'package.module:function'"
    import importlib.util
    try:
        found = importlib.util.find_spec(module) is not None  # imports the parent packages only
    except (ImportError, ValueError):
        found = False
    return None if found else f"frontend '{item.name}' whose loader module '{module}' does not exist"


def _pass_problem(item) -> str | None:
    from tidlc.passes.base import Pass
    if not (isinstance(item, type) and issubclass(item, Pass)):
        return f"{item!r:.60}, expected a subclass of tidlc.passes.Pass"
    return None if isinstance(item.name, str) and item.name else f"pass class {item.__name__} without a name"


def _backend_problem(item) -> str | None:
    name = getattr(item, "name", None)
    return None if isinstance(name, str) and name else f"{item!r:.60}, expected a backend with a name"


def _op_problem(item) -> str | None:
    from tidlc.ir.opdef import OpDef
    return None if isinstance(item, OpDef) else f"{type(item).__name__} {item!r:.60}, expected a tidlc OpDef"


_HOOK_CHECKS = {"tidlc_frontends": _frontend_problem, "tidlc_passes": _pass_problem,
                "tidlc_backends": _backend_problem, "tidlc_ops": _op_problem}


def _add(registry: Registry, table: dict, kind: str, name: str, item, plugin: str) -> None:
    if name in table:
        raise TidlcError(f"{kind} '{name}' is provided twice: by plugin '{registry.owner[(kind, name)]}' "
                         f"and by plugin '{plugin}'", hint=f"block one with -p no:{plugin}", code="plugin")
    table[name] = item
    registry.owner[(kind, name)] = plugin


def _register(pm: pluggy.PluginManager, origins: dict, plugin: object, name: str, origin: str) -> None:
    """``pm.register`` with pluggy's errors turned into one-line errors naming the plugins."""
    if pm.get_plugin(name) is not None:
        raise TidlcError(f"two plugins are named '{name}': {origins[name]} and {origin}",
                         hint=f"rename one entry point, or block one with -p no:{name}", code="plugin")
    try:
        pm.register(plugin, name=name)
    except pluggy.PluginValidationError as exc:
        detail = " ".join(str(exc).split())  # pluggy's message spans lines
        raise TidlcError(f"plugin '{name}' ({origin}) is invalid: {detail}",
                         hint=f"fix the plugin, or block it with -p no:{name}", code="plugin") from None
    origins[name] = origin


def _load_entry_points(pm: pluggy.PluginManager, origins: dict) -> None:
    """Register every installed ``tidlc`` entry point that is not blocked."""
    seen: set[str] = set()
    for dist in importlib.metadata.distributions():
        project = dist.metadata["Name"] or "?"
        key = project.lower().replace("_", "-")
        if key in seen:  # the same project again, further down sys.path: shadowed, as for imports
            continue
        seen.add(key)
        for ep in dist.entry_points:
            if ep.group != "tidlc" or pm.is_blocked(ep.name):
                continue
            origin = f"{project} {dist.version}"
            try:
                plugin = ep.load()
            except Exception as exc:  # noqa: BLE001  (a broken plugin must not hide which one it is)
                problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                raise TidlcError(f"plugin '{ep.name}' ({origin}) failed to load: {problem}",
                                 hint=f"fix or uninstall it, or block it with -p no:{ep.name}", code="plugin") from None
            _register(pm, origins, plugin, ep.name, origin)


def _check_hook_names(pm: pluggy.PluginManager) -> None:
    """Every hook implementation must match a hook: pluggy's ``check_pending``, all problems at once."""
    known = sorted(name for name in dir(hookspecs) if name.startswith("tidlc_"))
    problems = []
    for name in sorted(pm.hook.__dict__):
        if name.startswith("_") or getattr(pm.hook, name).has_spec():
            continue
        for impl in getattr(pm.hook, name).get_hookimpls():
            if not impl.optionalhook:
                close = difflib.get_close_matches(name, known, n=1)
                problems.append(f"plugin '{impl.plugin_name}' implements unknown hook '{name}'"
                                + (f" (did you mean '{close[0]}'?)" if close else ""))
    if problems:
        raise TidlcError("unknown hook implementation" + ("s" if len(problems) > 1 else ""),
                         hint=f"tidlc's hooks are {', '.join(known)}", problems=problems, code="plugin")
    pm.check_pending()  # pluggy's own check; cannot fail after the loop above


def _register_ops(pm: pluggy.PluginManager, registry: Registry) -> None:
    """Put the plugins' op definitions into the global op table.

    A name defined twice in this plugin set, or shadowing a builtin op, is an
    error; an op left in the table by an earlier plugin set is replaced.
    """
    from tidlc.ir import ops  # noqa: F401  (the builtin op tables, to detect clashes)

    for plugin, opdef in _collect(pm, "tidlc_ops"):
        _add(registry, registry.ops, "op", opdef.name, opdef, plugin)
        existing = OPS.get(opdef.name)
        if existing is not None and existing.plugin == "builtin":
            raise TidlcError(f"op '{opdef.name}' is provided twice: builtin and by plugin '{plugin}'",
                             hint=f"rename the plugin's op, or block it with -p no:{plugin}", code="plugin")
        OPS.unregister(opdef.name)
        OPS.register(attrs.evolve(opdef, plugin=plugin))
        registry.ops[opdef.name] = OPS.get(opdef.name)


def builtin_passes() -> dict[str, type]:
    """The builtin passes by name (the default of :func:`tidlc.passes.default_pipeline`)."""
    return dict(create_plugins(load_entry_points=False).registry.passes)


def create_plugins(blocked: Iterable[str] = (), load_entry_points: bool = True,
                   extra: Iterable[tuple[str, object]] = ()) -> Plugins:
    """A plugin manager with builtins and installed third-party plugins, minus ``blocked``.

    ``extra`` plugins, ``(name, module or object)`` pairs, are registered after
    the entry points through the same path (for embedding applications and tests).
    Blocking a name that is not installed is harmless, as in pytest.
    """
    blocked = tuple(blocked)
    pm = pluggy.PluginManager("tidlc")
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    origins: dict[str, str] = {}
    for name, module in BUILTIN_PLUGINS:
        if not pm.is_blocked(name):
            _register(pm, origins, importlib.import_module(module), name, "builtin")
    if load_entry_points:
        _load_entry_points(pm, origins)
    for name, plugin in extra:
        if not pm.is_blocked(name):
            _register(pm, origins, plugin, name, "extra")
    _check_hook_names(pm)
    registry = Registry()
    for plugin, fe in _collect(pm, "tidlc_frontends"):
        _add(registry, registry.frontends, "frontend", fe.name, attrs.evolve(fe, plugin=plugin), plugin)
    for plugin, cls in _collect(pm, "tidlc_passes"):
        _add(registry, registry.passes, "pass", cls.name, cls, plugin)
    for plugin, cls in _collect(pm, "tidlc_backends"):
        _add(registry, registry.backends, "backend", cls.name, cls, plugin)
    _register_ops(pm, registry)
    pm.register(_AvailablePasses(registry), name=_CORE_PIPELINE)
    return Plugins(pm, registry, blocked, origins)


_DEFAULT: Plugins | None = None


def default_plugins() -> Plugins:
    """The process-wide plugin set (no blocking), created on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = create_plugins()
    return _DEFAULT
