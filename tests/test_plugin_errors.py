"""A plugin's failure is the plugin's: named with its project, exit 2, not tidlc's internal error;
hook results of the wrong type and loaders that do not resolve are caught when plugins load."""
from __future__ import annotations

import contextlib
import io
from typing import ClassVar

import attrs
import pytest

from tidlc.compiler import compile_model
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.frontend import Frontend
from tidlc.hookspecs import hookimpl
from tidlc.passes import Pass
from tidlc.plugin_manager import create_plugins

NET = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\nlayer { name: "r" type: "ReLU" bottom: "data" top: "r" }\n'


@attrs.frozen
class Explode(Pass):
    name: ClassVar[str] = "explode"
    summary: ClassVar[str] = "raises"

    def run(self, ctx, graph) -> bool:
        raise ValueError("boom\non two lines")


@attrs.frozen
class Talk(Pass):
    name: ClassVar[str] = "talk"
    summary: ClassVar[str] = "leaves a note"

    def run(self, ctx, graph) -> bool:
        ctx.note("hello from a pass")
        return False


class Provides:
    def __init__(self, hook: str, items):
        setattr(self, hook, hookimpl(lambda: items))


def broken_loader(path, options):
    raise KeyError("layers")


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


def test_a_plugin_pass_that_raises_is_attributed_to_the_plugin(net, tmp_path):
    plugins = create_plugins(load_entry_points=False, extra=[("boomer", Provides("tidlc_passes", [Explode]))])
    options = CompileOptions.of(passes="shape-inference,explode", emit="ir", outdir=str(tmp_path / "o"))
    with pytest.raises(TidlcError) as info:
        compile_model(net, options, plugins)
    assert info.value.code == "plugin"
    assert info.value.message == "plugin 'boomer' (extra) failed in pass 'explode': ValueError: boom on two lines"
    assert "-p no:boomer" in info.value.hint


def test_a_builtin_pass_failure_stays_an_internal_error(net, tmp_path, monkeypatch):
    from tidlc.plugins.cleanup import DeadCodeElimination

    def crash(self, ctx, graph):
        raise ValueError("a bug of ours")
    monkeypatch.setattr(DeadCodeElimination, "run", crash)
    options = CompileOptions.of(passes="dce", emit="ir", outdir=str(tmp_path / "o"))
    with pytest.raises(ValueError, match="a bug of ours"):
        compile_model(net, options, create_plugins(load_entry_points=False))


def test_a_plugin_frontend_that_raises_is_attributed_to_the_plugin(tmp_path):
    fe = Frontend("weird", (".weird",), f"{__name__}:broken_loader")
    plugins = create_plugins(load_entry_points=False, extra=[("weirdo", Provides("tidlc_frontends", [fe]))])
    model = tmp_path / "m.weird"
    model.write_text("x")
    with pytest.raises(TidlcError, match=r"plugin 'weirdo' \(extra\) failed in frontend 'weird': KeyError: 'layers'"):
        compile_model(str(model), CompileOptions.of(emit="ir", outdir=str(tmp_path / "o")), plugins)


@pytest.mark.parametrize("hook,items,message", [
    ("tidlc_passes", [object], "plugin 'bad': tidlc_passes returned <class 'object'>, expected a subclass"),
    ("tidlc_frontends", ["caffe"], "plugin 'bad': tidlc_frontends returned str 'caffe', expected a tidlc.frontend"),
    ("tidlc_frontends", [Frontend("x", (".x",), "no_such_package.sub:load")],
     "frontend 'x' whose loader module 'no_such_package.sub' does not exist"),
    ("tidlc_frontends", [Frontend("x", (".x",), "tidlc.frontend")],
     "frontend 'x' with loader 'tidlc.frontend', expected 'package.module:function'"),
    ("tidlc_ops", [42], "plugin 'bad': tidlc_ops returned int 42, expected a tidlc OpDef"),
])
def test_hook_results_are_checked_when_plugins_load(hook, items, message):
    with pytest.raises(TidlcError) as info:
        create_plugins(load_entry_points=False, extra=[("bad", Provides(hook, items))])
    assert message in info.value.message and info.value.code == "plugin"


def test_a_hook_that_raises_is_attributed():
    class Raises:
        @hookimpl
        def tidlc_passes(self):
            raise RuntimeError("cannot list")
    with pytest.raises(TidlcError, match=r"plugin 'r' failed in hook tidlc_passes: RuntimeError: cannot list"):
        create_plugins(load_entry_points=False, extra=[("r", Raises())])


def test_pass_notes_are_shown_with_verbose(net, tmp_path, monkeypatch):
    from tidlc import cli
    plugins = create_plugins(load_entry_points=False, extra=[("talker", Provides("tidlc_passes", [Talk]))])
    monkeypatch.setattr("tidlc.compiler.plugins_for", lambda options: plugins)
    for flags, shown in (([], False), (["-v"], True)):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main([*flags, "-p", "shape-inference,talk", "compile", net, "--emit", "ir",
                             "-o", str(tmp_path / "o")])
        assert code == 0
        assert ("note: talk: hello from a pass" in err.getvalue()) == shown
