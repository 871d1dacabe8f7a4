"""The pass manager: -O pipelines, pipeline strings, options, --verify-each, timing, hooks."""
from typing import ClassVar

import attrs
import numpy as np
import pluggy
import pytest

from tidlc import hookspecs
from tidlc.diagnostics import TidlcError
from tidlc.hookspecs import hookimpl
from tidlc.ir import Builder, TensorType
from tidlc.passes import Pass, PassContext, PassManager, default_pipeline, parse_pipeline
from tidlc.passes.manager import LEVEL_PURPOSE, instantiate

O2 = ["shape-inference", "remove-identity", "fold-constants", "cse", "dce", "fuse-patterns", "layout", "fuse-patterns", "fuse-batchnorm", "fuse-activation", "remove-identity", "dce"]


def graph_with_dead_code():
    b = Builder()
    x = b.input("x", TensorType((1, 2, 3, 3), layout="NCHW"))
    b.op("neg", [x], name="dead")
    y = b.op("relu", [b.op("identity", [x], name="id")], name="relu")
    b.output(y, "y")
    return b.graph


@attrs.frozen
class BreakIt(Pass):
    """Deliberately broken: drops the producer of the first graph output."""
    name: ClassVar[str] = "break-it"

    def run(self, ctx, graph):
        graph.ops.remove(graph.outputs[0].producer)
        return True


@attrs.frozen
class Tunable(Pass):
    name: ClassVar[str] = "tunable"
    max_iters: int = 4
    scale: float = 1.0
    strict: bool = False
    mode: str = "fast"

    def run(self, ctx, graph):
        ctx.note(f"ran with {self.spec()}")
        return False


@attrs.frozen
class Refuses(Pass):
    name: ClassVar[str] = "refuses"

    def run(self, ctx, graph):
        raise TidlcError("cannot handle this graph", "m.onnx", hint="try -O1")


@attrs.frozen
class Crashes(Pass):
    name: ClassVar[str] = "crashes"

    def run(self, ctx, graph):
        raise ZeroDivisionError("oops")


@pytest.fixture
def passes(registry):
    return {**registry, "break-it": BreakIt, "tunable": Tunable, "refuses": Refuses, "crashes": Crashes}


def test_levels_and_their_pipelines():
    # the backend's own passes (TIDL: quantize) are added by its prepare_pipeline, not here
    assert default_pipeline(0) == ["shape-inference"]
    assert default_pipeline(1) == ["shape-inference", "remove-identity", "fold-constants", "cse", "dce"]
    assert default_pipeline(2) == O2
    assert default_pipeline(3) == O2[:-2] + ["prune-channels", "equalize", "remove-identity", "dce"]
    assert sorted(LEVEL_PURPOSE) == [0, 1, 2, 3] and all(LEVEL_PURPOSE.values())
    with pytest.raises(TidlcError) as info:
        default_pipeline(4)
    assert str(info.value) == "error: unknown optimisation level -O4 (hint: use -O0, -O1, -O2 or -O3)"


def test_each_pass_runs_at_its_own_level(registry):
    for level in range(4):
        names = set(default_pipeline(level))
        for name, cls in registry.items():
            if cls.opt_level is None:  # a backend's pass: its prepare_pipeline adds it
                assert name not in names
                continue
            assert (name in names) == (cls.opt_level <= level), (name, level)


def test_print_pipeline_string(passes):
    pm = PassManager.from_level(passes, 2)
    assert pm.pipeline_string() == ",".join(O2)
    text = "fold-constants{max-iters=2},dce,tunable{max-iters=3,scale=0.5,strict=true,mode=slow}"
    assert PassManager.from_string(passes, text).pipeline_string() == text
    # options at their default are left out; spelling and spacing are normalised
    pm = PassManager.from_string(passes, " tunable{ max_iters = 4 , strict=on } , dce ")
    assert pm.pipeline_string() == "tunable{strict=true},dce"


def test_parse_pipeline():
    assert parse_pipeline("a,b{x=1,y=on},c{}") == [("a", {}), ("b", {"x": "1", "y": "on"}), ("c", {})]
    assert parse_pipeline("") == []
    with pytest.raises(TidlcError) as info:
        parse_pipeline("dce,{x=1}")
    assert str(info.value) == ("error: bad pipeline string at column 5: 'dce,{x=1}' "
                               "(hint: write passes as name or name{option=value,...}, comma separated)")
    with pytest.raises(TidlcError, match=r"bad pipeline string at column 1: 'dce\{x=1'"):
        parse_pipeline("dce{x=1")
    with pytest.raises(TidlcError) as info:
        parse_pipeline("fold-constants{max-iters}")
    assert str(info.value) == ("error: pass option 'max-iters' in 'fold-constants' needs a value "
                               "(hint: name{option=value})")


def test_unknown_pass_and_option_give_hints(passes):
    with pytest.raises(TidlcError) as info:
        PassManager.from_string(passes, "dce,fold-constant")
    assert str(info.value) == (
        "error: unknown pass 'fold-constant' (hint: did you mean 'fold-constants'? known passes: break-it, "
        "crashes, cse, dce, equalize, fold-constants, fuse-activation, fuse-batchnorm, fuse-patterns, layout, prune-channels, quantize, refuses, remove-identity, "
        "shape-inference, tunable)")
    with pytest.raises(TidlcError) as info:
        PassManager.from_string(passes, "fold-constants{iters=2}")
    assert str(info.value) == ("error: pass 'fold-constants' has no option 'iters' "
                               "(hint: did you mean 'max-iters'? its options: max-iters)")
    with pytest.raises(TidlcError, match=r"^error: unknown pass 'xyz' \(hint: known passes: break-it, "):
        PassManager.from_string(passes, "xyz")
    with pytest.raises(TidlcError, match=r"pass 'dce' has no option 'x' \(hint: its options: none\)"):
        PassManager.from_string(passes, "dce{x=1}")


@pytest.mark.parametrize("option, message", [
    ("max-iters=two", ("pass 'tunable': option max-iters='two' is not an integer "
                       "(hint: e.g. tunable{max-iters=4}, the default)")),
    ("max-iters=1.5", ("pass 'tunable': option max-iters='1.5' is not an integer "
                       "(hint: e.g. tunable{max-iters=4}, the default)")),
    ("scale=big", "pass 'tunable': option scale='big' is not a number (hint: e.g. tunable{scale=1.0}, the default)"),
    ("strict=maybe", ("pass 'tunable': option strict='maybe' is not true or false "
                      "(hint: write true/false, on/off, yes/no or 1/0; e.g. tunable{strict=false}, the default)")),
])
def test_bad_option_values(passes, option, message):
    with pytest.raises(TidlcError) as info:
        PassManager.from_string(passes, f"tunable{{{option}}}")
    assert str(info.value) == f"error: {message}"


def test_options_are_typed_fields(passes):
    p = instantiate(passes, "tunable", {"max-iters": "7", "scale": "2", "strict": "yes", "mode": "x"})
    assert (p.max_iters, p.scale, p.strict, p.mode) == (7, 2.0, True, "x")
    assert list(Tunable.options()) == ["max-iters", "scale", "strict", "mode"]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        p.max_iters = 1


def test_verify_each_names_the_broken_pass_and_those_before_it(passes):
    pm = PassManager.from_string(passes, "shape-inference,dce,break-it,fold-constants", verify_each=True)
    with pytest.raises(TidlcError) as info:
        pm.run(graph_with_dead_code())
    err = info.value
    assert err.message == "IR invalid after pass 'break-it' (passes before it: shape-inference, dce)"
    assert err.hint == "this is a bug in that pass"
    assert err.problems == ["output 0: value is not defined in the graph"]
    assert str(err).splitlines()[0] == (
        "main: error: IR invalid after pass 'break-it' (passes before it: shape-inference, dce) "
        "(hint: this is a bug in that pass)")
    assert [t[0] for t in pm.timings] == ["shape-inference", "dce", "break-it"]  # stopped there


def test_without_verify_each_the_broken_graph_goes_unnoticed(passes):
    graph = graph_with_dead_code()
    PassManager.from_string(passes, "break-it").run(graph)
    assert graph.outputs[0].producer not in graph.ops


def test_errors_inside_a_pass_name_it(passes):
    with pytest.raises(TidlcError) as info:
        PassManager.from_string(passes, "dce,refuses").run(graph_with_dead_code())
    assert str(info.value) == ("m.onnx: error: cannot handle this graph (hint: try -O1)\n"
                               "  in pass 'refuses' (passes before it: dce)")
    with pytest.raises(ZeroDivisionError) as crash:
        PassManager.from_string(passes, "crashes").run(graph_with_dead_code())
    assert crash.value.__notes__ == ["in pass 'crashes' (passes before it: none)"]


def test_changed_flag_timing_report_and_notes(passes):
    graph = graph_with_dead_code()
    pm = PassManager.from_string(passes, "remove-identity,dce,dce,tunable{max-iters=2}", time_passes=True)
    ctx = PassContext()
    assert pm.run(graph, ctx) is True
    assert [(name, changed) for name, _, changed in pm.timings] == [
        ("remove-identity", True), ("dce", True), ("dce", False), ("tunable{max-iters=2}", False)]
    assert all(seconds >= 0 for _, seconds, _ in pm.timings)
    lines = pm.timing_report().splitlines()
    assert lines[0].split() == ["pass", "ms", "%", "changed"]
    assert [line.split()[0] for line in lines[1:]] == ["remove-identity", "dce", "dce", "tunable{max-iters=2}", "total"]
    assert [line.split()[-1] for line in lines[1:-1]] == ["yes", "yes", "no", "no"]
    assert ctx.notes == ["tunable: ran with tunable{max-iters=2}"] and ctx.pass_name is None
    assert PassManager.from_string(passes, "dce").run(graph) is False


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def tidlc_pass_finished(self, pass_, graph, changed, seconds):
        self.calls.append((pass_.name, changed, seconds >= 0, graph.name))

    @hookimpl
    def tidlc_pipeline(self, level, passes):
        if level >= 1:
            passes.insert(passes.index("dce"), "tunable")


def test_hooks_edit_the_pipeline_and_see_every_pass(passes):
    pm_ = pluggy.PluginManager("tidlc")
    pm_.add_hookspecs(hookspecs)
    recorder = Recorder()
    pm_.register(recorder)
    pm = PassManager.from_level(passes, 1, hook=pm_.hook)
    assert pm.pipeline_string() == "shape-inference,remove-identity,fold-constants,cse,tunable,dce"
    pm.run(graph_with_dead_code())
    assert recorder.calls == [("shape-inference", False, True, "main"), ("remove-identity", True, True, "main"),
                              ("fold-constants", False, True, "main"), ("cse", False, True, "main"),
                              ("tunable", False, True, "main"),
                              ("dce", True, True, "main")]


def test_run_passes_on_a_real_graph(run_passes, count):
    graph = graph_with_dead_code()
    feeds = {"x": np.random.default_rng(0).standard_normal((1, 2, 3, 3)).astype(np.float32)}
    assert run_passes(graph, ",".join(O2), feeds)
    assert count(graph) == {"relu": 1}
