"""Typed option groups (issue 12, item 4): how CompileOptions is built and read.

* every option lives in exactly one group; an unknown name is a TypeError;
* the CLI maps every flag it declares to an option explicitly (a flag that
  feeds nothing, or an option renamed under it, fails here);
* ``-p 'quantize{bits=16,calib_method=mse}'`` is the same compile as
  ``--bits 16 --calib-method mse``;
* the -O pipelines come from the passes' declared schedules, a plugin pass
  included, and ``--print-pipeline`` prints them.
"""
from __future__ import annotations

import argparse
import contextlib
import io
from typing import ClassVar

import attrs
import pytest

from tidlc.cli import build_parser, main
from tidlc.cli_options import explicit_names, options_from_args
from tidlc.config import (
    FIELD_GROUP,
    GROUPS,
    CompileOptions,
    LoadOptions,
    QuantOptions,
    TargetOptions,
)
from tidlc.passes import Pass, PassManager, default_pipeline
from tidlc.plugin_manager import builtin_passes


def test_each_option_lives_in_one_group():
    names = [f.name for cls in GROUPS.values() for f in attrs.fields(cls)]
    assert len(names) == len(set(names)) == len(FIELD_GROUP)
    options = CompileOptions.of(bits=16, weights="w.caffemodel", emit="bin", mean=(1.0,), opt_level=1)
    assert options.quant == QuantOptions(bits=16)
    assert options.load == LoadOptions(weights="w.caffemodel")
    assert options.target == TargetOptions(emit="bin")
    assert (options.preprocess.mean, options.pipeline.opt_level) == ((1.0,), 1)
    assert options.value("bits") == 16 and options.replace(bits=8).quant.bits == 8


@pytest.mark.parametrize("call", [lambda: CompileOptions.of(bitz=16), lambda: CompileOptions().replace(target="tidl"),
                                  lambda: CompileOptions().value("pipeline")])
def test_an_unknown_option_name_is_a_type_error(call):
    with pytest.raises(TypeError, match="no option"):
        call()


def test_groups_are_frozen():
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        CompileOptions().quant.bits = 16


def _compile_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["compile", "m.onnx", *argv])


# one non-default value per compile flag that feeds an option, and the option it must set
FLAGS = {
    "--format onnx": ("format", "onnx"), "--weights w.caffemodel": ("weights", "w.caffemodel"),
    "--random-weights 3": ("random_weights", 3), "--input-layout NHWC": ("input_layout", "NHWC"), "--no-host": ("allow_host", False),
    "--input-shape x=1,3,8,8": ("input_shapes", {"x": (1, 3, 8, 8)}), "-O1": ("opt_level", 1),
    "--verify-each": ("verify_each", True), "--time-passes": ("time_passes", True),
    "--bits 16": ("bits", 16), "--quant-style p2": ("quant_style", "p2"), "--calib d": ("calib", "d"),
    "--calib-frames 3": ("calib_frames", 3), "--calib-method mse": ("calib_method", "mse"),
    "--percentile 0.5": ("percentile", 0.5), "--bias-calibration 7": ("bias_calibration", 7),
    "--bias-calibration-factor 0.2": ("bias_calibration_factor", 0.2),
    "--per-channel-depthwise": ("per_channel_depthwise", True), "--weight-rounding gptq": ("weight_rounding", "gptq"),
    "--16bit-layers a,b": ("layers_16bit", ("a", "b")),
    "--mixed-precision-factor 1.5": ("mixed_precision_factor", 1.5),
    "--mixed-precision auto": ("mixed_precision", "auto"), "--time-budget 1.3": ("time_budget", 1.3), "--mean 1,2,3": ("mean", (1.0, 2.0, 3.0)),
    "--scale 0.5": ("scale", (0.5,)), "--resize 9,8": ("resize", (9, 8)), "--crop 4,4": ("crop", (4, 4)),
    "--channel-order bgr": ("channel_order", "bgr"), "--target onnx-qdq": ("backend", "onnx-qdq"),
    "--emit qir": ("emit", "qir"), "--device am68a": ("device", "am68a"), "--persist-weights off": ("persist_weights", False), "--max-subgraphs 2": ("max_subgraphs", 2),
    "--min-subgraph-ops 3": ("min_subgraph_ops", 3), "--deny-op-type conv2d,resize": ("deny_op_types", ("conv2d", "resize")),
    "--deny-op-name c1": ("deny_op_names", ("c1",)), "-o d": ("outdir", "d"), "--quant-params": ("quant_params", True),
    "--workers 2": ("workers", 2), "--ray auto": ("ray", "auto"),
}


@pytest.mark.parametrize("flag", sorted(FLAGS))
def test_every_compile_flag_sets_its_option(flag):
    name, value = FLAGS[flag]
    default = CompileOptions().value(name)
    assert value != default
    assert options_from_args(_compile_args(*flag.split())).value(name) == value


def test_no_compile_flag_is_left_unmapped():
    """Every option-like flag of `tidlc compile` is in FLAGS (and so reaches CompileOptions)."""
    compile_parser = build_parser()._subparsers._group_actions[0].choices["compile"]
    not_options = {"-h", "--help", "--import-config", "--json", "--print-pipeline"}
    declared = {s for a in compile_parser._actions for s in a.option_strings if s.startswith("-")}
    tested = {flag.split()[0] for flag in FLAGS} | {"-O0", "-O2", "-O3", "--output-dir"}
    assert declared - not_options - tested == set()


def test_flags_given_win_over_an_import_config_but_levels_do_not():
    args = _compile_args("--bits", "16", "-O1", "--emit", "bin", "-o", "out2")
    assert explicit_names(args) == {"bits", "outdir"}


def test_p_strings_split_into_blocked_plugins_and_the_pipeline():
    args = build_parser().parse_args(["-p", "no:fuse", "-p", "dce", "-p", "quantize{bits=16}", "compile", "m"])
    options = options_from_args(args)
    assert options.pipeline.blocked_plugins == ("fuse",)
    assert options.pipeline.passes == "dce,quantize{bits=16}"


def _compile(tmp_path, net_text: str, out: str, *argv: str) -> bytes:
    model = tmp_path / "net.prototxt"
    model.write_text(net_text)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([*argv[:2], "compile", str(model), "--random-weights", "1", "--emit", "bin",
                     "-o", str(tmp_path / out), *argv[2:]])
    assert code == 0, err.getvalue()
    return (tmp_path / out / "net.bin").read_bytes()


def test_quantize_pass_options_override_the_command_line(tmp_path, small_caffe_net):
    pipeline = "shape-inference,fold-constants,dce,quantize"
    by_flags = _compile(tmp_path, small_caffe_net, "flags", "-p", pipeline, "--bits", "16", "--calib-method", "mse")
    by_pass = _compile(tmp_path, small_caffe_net, "pass", "-p", f"{pipeline}{{bits=16,calib_method=mse}}")
    plain = _compile(tmp_path, small_caffe_net, "plain", "-p", pipeline)
    assert by_pass == by_flags != plain
    # an option the pass does not name keeps the command line's value
    mixed = _compile(tmp_path, small_caffe_net, "mixed", "-p", f"{pipeline}{{calib-method=mse}}", "--bits", "16")
    assert mixed == by_flags


def test_quantize_pass_options_are_the_quant_group():
    from tidlc.backends.tidl.quantize import NOT_PASS_OPTIONS, Quantize
    assert set(Quantize.options()) == {f.name.replace("_", "-") for f in attrs.fields(QuantOptions)
                                       if f.name not in NOT_PASS_OPTIONS}
    spec = PassManager.from_string({"quantize": Quantize}, "quantize{layers_16bit=a:b,bits=16}").pipeline_string()
    assert spec == "quantize{bits=16,layers-16bit=a:b}"


@attrs.frozen
class Late(Pass):
    name: ClassVar[str] = "late"
    opt_level: ClassVar[int] = 1
    order: ClassVar[int] = 95


@attrs.frozen
class Unscheduled(Pass):
    name: ClassVar[str] = "unscheduled"


def test_o_pipelines_come_from_the_declared_schedules():
    registry = {**builtin_passes(), "late": Late, "unscheduled": Unscheduled}
    assert default_pipeline(0, registry) == ["shape-inference"]
    assert default_pipeline(1, registry) == ["shape-inference", "remove-identity", "fold-constants", "cse", "dce", "late"]
    assert default_pipeline(2, registry) == ["shape-inference", "remove-identity", "fold-constants", "cse", "dce",
                                             "fuse-patterns", "layout", "fuse-patterns", "fuse-batchnorm",
                                             "fuse-activation", "remove-identity", "dce", "late"]
    assert all("unscheduled" not in default_pipeline(level, registry) for level in range(4))


def test_print_pipeline_shows_the_backend_pass(tmp_path, small_caffe_net):
    model = tmp_path / "net.prototxt"
    model.write_text(small_caffe_net)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert main(["compile", str(model), "--print-pipeline", "--random-weights", "1", "-O1",
                     "-o", str(tmp_path / "out")]) == 0
    assert out.getvalue().splitlines()[0] == "shape-inference,remove-identity,fold-constants,cse,dce,quantize"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):  # float output: no quantize
        assert main(["compile", str(model), "--print-pipeline", "--emit", "none", "-O1"]) == 0
    assert out.getvalue().splitlines()[0] == "shape-inference,remove-identity,fold-constants,cse,dce"
