"""Op traits (``tidlc.ir.opdef.Trait``): what an op is, declared on its OpDef.

Every builtin op's traits must hold for what the op computes (checked here
numerically, so a wrong declaration fails a test instead of miscompiling a
model); the passes read the traits instead of op-name lists; and an op a
plugin declares with traits -- the example plugin's ``swish`` -- is moved by
the layout pass and quantized by the quantize pass with no edit to them.
"""
import sys
import types
from pathlib import Path

import attrs
import numpy as np
import pytest
from tidlc.backends.tidl.fixed.executor import MAC_OPS, FixedExecutor, has_integer_kernel, is_fixed
from tidlc.plugins.layout import interior_transposes, inverse
from tidlc.metrics import snr_db

import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir import Builder, TensorType, verify
from tidlc.ir.opdef import OPS, OpDef, Trait, _no_macs
from tidlc.ir.types import dtype_of
from tidlc.ir.ops import ACTIVATIONS
from tidlc.ir.ops._common import broadcast_shapes
from tidlc.ir.ops.elementwise import ACT_PARAM_NAMES
from tidlc.passes.base import PassContext
from tidlc.passes.manager import PassManager
from tidlc.plugin_manager import create_plugins

PLUGIN_PKG = Path(__file__).resolve().parents[1] / "plugin_pkg"
RNG = np.random.default_rng(11)
Y = (2, 3, 4, 5)  # the shape ops see (the transposed tensor in the layout checks)
PERMS = [(0, 2, 3, 1), (0, 3, 1, 2), (3, 1, 0, 2)]

BUILTIN = [OPS.get(name) for name in OPS.names() if OPS.get(name).plugin == "builtin"]


def builtin_with(trait):
    return [d for d in BUILTIN if d.has(trait)]


def variadic(opdef) -> bool:
    return bool(opdef.operands) and opdef.operands[0].endswith(("+", "*"))


def randn(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


# Attributes an op needs (required ones, or values that make a check meaningful).
ATTRS = {"cast": {"dtype": "f16"}, "quantize": {"scale": (20.0,)}, "dequantize": {"scale": (20.0,)}}


def elementwise_operands(opdef, shapes):
    """Sample arrays for an element-wise op, one per shape."""
    if opdef.name == "where":
        return [RNG.random(shapes[0]) > 0.5] + [randn(*s) for s in shapes[1:]]
    if opdef.name == "dequantize":
        return [RNG.integers(-128, 128, shapes[0]).astype(np.int8)]
    return [randn(*s) for s in shapes]


def build(kind, data, params, attrs_, transpose_results=None):
    """A graph computing ``kind`` on inputs ``data`` and constants ``params`` (one output per result,
    each transposed by ``transpose_results`` if given)."""
    b = Builder()
    operands = []
    for i, arr in enumerate(data):
        operands.append(b.input(f"x{i}", TensorType(arr.shape, dtype_of(arr))))
    operands += [b.const(np.asarray(p)) for p in params]
    results = b.op(kind, operands, **attrs_)
    for j, r in enumerate(results if isinstance(results, list) else [results]):
        if transpose_results is not None:
            r = b.op("transpose", [r], perm=transpose_results)
        b.output(r, f"y{j}")
    feeds = {f"x{i}": arr for i, arr in enumerate(data)}
    return run_graph(b.graph, feeds), b.graph


# ----------------------------------------------------------------------------- declaring traits

def test_traits_are_declared_by_member_or_name_and_unknown_names_are_refused():
    opdef = OpDef("t_op", ("x",), {}, infer=lambda op, t: [t[0]], traits=["elementwise", Trait.LUT])
    assert opdef.traits == frozenset({Trait.ELEMENTWISE, Trait.LUT})
    assert opdef.has(Trait.LUT) and opdef.has("elementwise") and not opdef.has(Trait.MAC)
    assert OpDef("t_op", ("x",), {}, infer=lambda op, t: [t[0]], traits="mac").traits == {Trait.MAC}
    assert OpDef("t_op", ("x",), {}, infer=lambda op, t: [t[0]]).traits == frozenset()
    with pytest.raises(ValueError, match=r"unknown op trait 'elemwise'; known: elementwise, layout_agnostic"):
        OpDef("t_op", ("x",), {}, infer=lambda op, t: [t[0]], traits={"elemwise"})
    with pytest.raises(ValueError):
        opdef.has("bogus")


def test_the_registry_lists_the_ops_of_a_trait():
    assert OPS.with_trait(Trait.MAC) == sorted(MAC_OPS) == ["conv2d", "deconv2d", "dense", "matmul", "scale"]
    assert "relu" in OPS.with_trait("fusable_activation") and "hardswish" not in OPS.with_trait(
        Trait.FUSABLE_ACTIVATION)


# ----------------------------------------------------------------------------- consistency of the builtin ops

@pytest.mark.parametrize("opdef", builtin_with(Trait.ELEMENTWISE), ids=lambda d: d.name)
def test_elementwise_ops_have_one_result_shaped_like_the_broadcast(opdef):
    n = opdef.min_operands
    assert opdef.result_count({}) == 1
    shapes = [Y] * n
    if n > 1:  # one operand broadcast along the channel axis
        shapes[-1] = (1, Y[1], 1, 1)
    args = elementwise_operands(opdef, shapes)
    out, graph = build(opdef.name, args, [], ATTRS.get(opdef.name, {}))
    want = broadcast_shapes(*shapes)
    assert graph.outputs[0].type.shape == want and out["y0"].shape == want
    # each element depends on the operands' elements at its position only: shuffling every
    # operand's elements the same way shuffles the result the same way
    same = elementwise_operands(opdef, [Y] * n)
    order = RNG.permutation(int(np.prod(Y)))
    plain, _ = build(opdef.name, same, [], ATTRS.get(opdef.name, {}))
    mixed, _ = build(opdef.name, [a.reshape(-1)[order].reshape(Y) for a in same], [], ATTRS.get(opdef.name, {}))
    np.testing.assert_array_equal(mixed["y0"].reshape(-1), plain["y0"].reshape(-1)[order])


# Layout-agnostic ops that are not element-wise (or need particular attributes), as
# (data operands in Y-space, parameter operands, attributes); ELEMENTWISE ops get a default sample.
LAYOUT_SAMPLES = {
    "scale": [([randn(*Y)], [randn(3), randn(3)], {"axis": 1}),
              ([randn(*Y)], [randn(4)], {"axis": -2})],
    "softmax": [([randn(*Y)], [], {"axis": 2}), ([randn(*Y)], [], {"axis": -1, "log": True})],
    "concat": [([randn(*Y), randn(2, 2, 4, 5)], [], {"axis": 1}), ([randn(*Y), randn(2, 3, 4, 1)], [], {"axis": -1})],
    "pad": [([randn(*Y)], [], {"pads": (0, 1, 2, 0, 1, 0, 0, 3), "value": 0.5}),
            ([randn(*Y)], [], {"pads": (0, 0, 1, 2, 0, 2, 1, 0), "mode": "reflect"})],
    "slice": [([randn(*Y)], [], {"starts": (1, 0), "ends": (3, 4), "axes": (1, 3)}),
              ([randn(*Y)], [], {"starts": (3,), "ends": (0,), "axes": (-2,), "steps": (-2,)})],
    "split": [([randn(*Y)], [], {"axis": 1, "sizes": (1, 2)}), ([randn(*Y)], [], {"axis": 3, "sizes": (2, 2, 1)})],
    "resize": [([randn(*Y)], [], {"scales": (1.0, 2.0, 1.0, 2.0)}),
               ([randn(*Y)], [], {"scales": (1.0, 1.0, 1.5, 2.0), "mode": "linear", "coord_mode": "half_pixel"}),
               ([randn(*Y)], [], {"scales": (1.0, 1.0, 1.0, 1.0), "sizes": (2, 3, 6, 10)})],
    "reduce": [([randn(*Y)], [], {"op": "mean", "axes": (1, 2), "keepdims": False}),
               ([randn(*Y)], [], {"op": "max", "axes": (3,), "keepdims": True}),
               ([randn(*Y)], [], {"op": "sum", "keepdims": False})],
    "argmax": [([randn(*Y)], [], {"axis": 2, "keepdims": False}), ([randn(*Y)], [], {"axis": -1})],
    "squeeze": [([randn(2, 1, 4, 1)], [], {"axes": (1, 3)}), ([randn(2, 1, 4, 5)], [], {"axes": (-3,)})],
    "quantize": [([randn(*Y)], [], {"scale": (10.0, 20.0, 30.0), "axis": 1}), ([randn(*Y)], [], {"scale": (20.0,)})],
    "dequantize": [([RNG.integers(-128, 128, Y).astype(np.int8)], [], {"scale": (4.0, 5.0, 6.0, 7.0), "axis": 2})],
}


def layout_samples():
    for opdef in builtin_with(Trait.LAYOUT_AGNOSTIC):
        samples = LAYOUT_SAMPLES.get(opdef.name)
        if samples is None and opdef.has(Trait.ELEMENTWISE):
            samples = [(elementwise_operands(opdef, [Y] * opdef.min_operands), [], ATTRS.get(opdef.name, {}))]
        assert samples, f"{opdef.name} is LAYOUT_AGNOSTIC: give it a sample in LAYOUT_SAMPLES"
        for i, sample in enumerate(samples):
            for perm in PERMS:
                yield pytest.param(opdef, sample, perm, id=f"{opdef.name}-{i}-{''.join(map(str, perm))}")


@pytest.mark.parametrize("opdef,sample,perm", list(layout_samples()))
def test_layout_agnostic_ops_commute_with_a_transpose(opdef, sample, perm):
    """``op(transpose(x, perm))`` == ``transpose(op'(x), result_perm)`` with op' from permute_attrs:
    exactly what the layout pass relies on when it sinks a transpose below the op."""
    data, params, attrs_ = sample
    want, _ = build(opdef.name, data, params, attrs_)
    normalized = opdef.normalize_attrs(attrs_)
    moved = normalized if opdef.permute_attrs is None else opdef.permute_attrs(normalized, perm)
    assert moved is not None
    new_attrs, result_perm = (moved, perm) if isinstance(moved, dict) else moved
    # the untransposed operands: transpose(x, perm) is the sample
    sources = [np.ascontiguousarray(np.transpose(a, inverse(perm))) for a in data]
    got, _ = build(opdef.name, sources, params, new_attrs,
                   transpose_results=None if result_perm == tuple(range(len(result_perm))) else result_perm)
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-6, equal_nan=True, err_msg=name)


def test_only_layout_agnostic_ops_have_a_permute_hook_and_squeeze_needs_its_axes():
    for opdef in BUILTIN:
        assert opdef.permute_attrs is None or opdef.has(Trait.LAYOUT_AGNOSTIC), opdef.name
    squeeze = OPS.get("squeeze")
    assert squeeze.permute_attrs(squeeze.normalize_attrs({}), (0, 2, 3, 1)) is None  # "every size-1 axis"


# Scale-preserving ops: (data operands, parameter operands, attributes)
SCALE_SAMPLES = {
    "reshape": ([randn(*Y)], [], {"shape": (2, -1)}),
    "flatten": ([randn(*Y)], [], {"axis": 2}),
    "transpose": ([randn(*Y)], [], {"perm": (0, 2, 3, 1)}),
    "squeeze": ([randn(2, 1, 4, 5)], [], {"axes": (1,)}),
    "unsqueeze": ([randn(*Y)], [], {"axes": (0,)}),
    "expand": ([randn(1, 3, 1, 5)], [np.array(Y, np.int64)], {}),
    "gather": ([randn(*Y)], [np.array([2, 0, 2], np.int64)], {"axis": 1}),
    "depth_to_space": ([randn(1, 8, 2, 3)], [], {"block": 2}),
    "shuffle_channel": ([randn(1, 6, 2, 2)], [], {"groups": 3}),
    "identity": ([randn(*Y)], [], {}),
    "dropout": ([randn(*Y)], [], {}),
    "slice": ([randn(*Y)], [], {"starts": (1,), "ends": (3,), "axes": (2,)}),
    "split": ([randn(*Y)], [], {"axis": 1, "sizes": (1, 2)}),
    "concat": ([randn(*Y), 3 * randn(*Y)], [], {"axis": 0}),
    "pad": ([randn(*Y)], [], {"pads": (0, 0, 1, 1, 0, 0, 2, 2)}),  # pads with 0: inside [min, max]
    "pool2d": ([randn(*Y)], [], {"mode": "avg", "kernel": (2, 2), "strides": (2, 2), "pads": (0, 0, 1, 1)}),
    "global_pool": ([randn(*Y)], [], {"mode": "max"}),
    "resize": ([randn(*Y)], [], {"scales": (1.0, 1.0, 2.5, 1.5), "mode": "linear", "coord_mode": "half_pixel"}),
}


@pytest.mark.parametrize("opdef", builtin_with(Trait.SCALE_PRESERVING), ids=lambda d: d.name)
def test_scale_preserving_ops_stay_within_their_data_operands_range(opdef):
    assert opdef.name in SCALE_SAMPLES, f"{opdef.name} is SCALE_PRESERVING: give it a sample"
    data, params, attrs_ = SCALE_SAMPLES[opdef.name]
    # the data operands: every one of a variadic first operand, else the first (the rest are shapes/indices)
    assert len(data) == 1 or variadic(opdef)
    out, graph = build(opdef.name, data, params, attrs_)
    lo, hi = min(float(a.min()) for a in data), max(float(a.max()) for a in data)
    for name, value in out.items():
        assert value.dtype == data[0].dtype, name
        assert lo - 1e-6 <= value.min() and value.max() <= hi + 1e-6, (opdef.name, name)
    # and the results keep the data operand's element type (the quantizer passes the scale through)
    assert all(v.type.dtype == "f32" for v in graph.outputs)


def test_mac_ops_are_accumulator_layers_with_a_mac_count():
    for opdef in BUILTIN:
        if opdef.macs is not _no_macs:
            assert opdef.has(Trait.MAC), f"{opdef.name} counts MACs but is not declared MAC"
    for opdef in builtin_with(Trait.MAC):
        assert len(opdef.operands) in (2, 3), opdef.name  # data, weights[, bias]
        assert all(o.endswith("?") for o in opdef.operands[2:]), opdef.name  # bias optional
        if opdef.category == "mac":  # runs on the MMA: counts its multiply-accumulates
            assert opdef.macs is not _no_macs, opdef.name
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8)))
    y = b.op("conv2d", [x, b.const(randn(4, 3, 3, 3))], pads=(1, 1, 1, 1))
    assert y.producer.opdef.macs(y.producer) == 4 * 8 * 8 * 3 * 3 * 3
    assert set(OPS.with_trait(Trait.MAC)) == MAC_OPS  # the kinds the executor's accumulator kernel runs


def test_fusable_activations_are_fused_activation_names():
    for opdef in builtin_with(Trait.FUSABLE_ACTIVATION):
        assert opdef.name in ACTIVATIONS, f"the act attribute does not know {opdef.name}"
        assert len(ACT_PARAM_NAMES[opdef.name]) == ACTIVATIONS[opdef.name], opdef.name
        assert opdef.has(Trait.ELEMENTWISE) and opdef.operands == ("x",)


@pytest.mark.parametrize("opdef", builtin_with(Trait.LUT), ids=lambda d: d.name)
def test_lut_ops_are_unary_elementwise_functions_of_their_input(opdef):
    assert opdef.has(Trait.ELEMENTWISE) and opdef.operands == ("x",) and opdef.result_count({}) == 1
    x = np.linspace(-8, 8, 257)
    out, _ = build(opdef.name, [x.astype(np.float32)], [], ATTRS.get(opdef.name, {}))
    assert out["y0"].shape == x.shape


@pytest.mark.parametrize("opdef", [d for d in BUILTIN if d.value_range is not None], ids=lambda d: d.name)
def test_declared_value_ranges_hold(opdef):
    lo, hi = opdef.value_range
    x = np.linspace(-100, 100, 2001).astype(np.float32)
    out, _ = build(opdef.name, [x], [], ATTRS.get(opdef.name, {}))
    assert lo <= out["y0"].min() and out["y0"].max() <= hi


def test_the_executor_runs_exactly_these_builtin_ops_in_integers():
    """Which ops have a fixed-point kernel: TIDL's kernels by kind plus the generic ones by trait
    (LUT: a table; SCALE_PRESERVING: the float compute on the codes). Pinned so a trait change
    that changes what is quantized shows up here."""
    def op(d, **attrs_):
        return types.SimpleNamespace(kind=d.name, opdef=d, attrs=attrs_)

    integer = {d.name for d in BUILTIN if has_integer_kernel(op(d, op="max"))}
    reduce_ = next(d for d in BUILTIN if d.name == "reduce")  # a max or min selects a code; the rest are float
    assert [r for r in ("max", "min", "sum", "mean", "prod", "l2") if has_integer_kernel(op(reduce_, op=r))] == [
        "max", "min"]
    assert integer == {
        "conv2d", "deconv2d", "dense", "scale", "matmul",  # MAC
        "add", "sub", "mul", "max", "min", "concat", "pool2d", "global_pool", "resize", "softmax", "prelu",
        "pad", "argmax", "data_convert", "layernorm", "reduce",
        "reshape", "flatten", "transpose", "squeeze", "unsqueeze", "slice", "split", "depth_to_space",
        "shuffle_channel", "identity", "dropout", "gather", "expand",  # data movement
        "relu", "relu6", "clip", "leaky_relu", "sigmoid", "tanh", "hardsigmoid", "hardswish", "elu", "gelu",
        "exp", "log", "sqrt", "abs", "neg", "reciprocal", "softplus", "erf"}  # tables


# ----------------------------------------------------------------------------- a plugin op with traits

@pytest.fixture
def swish():
    """The example plugin's ``swish`` op, registered through the plugin's ``tidlc_ops`` hook (the
    plugin package imported from tests/plugin_pkg, as an installed one is by its entry point)."""
    if OPS.get("swish") is not None:
        pytest.skip("an op named swish is already registered in this process")
    sys.path.insert(0, str(PLUGIN_PKG))
    try:
        import tidlc_example_plugin
        plugins = create_plugins(load_entry_points=False, extra=[("example", tidlc_example_plugin)])
        assert OPS.get("swish").plugin == "example"
        yield plugins
    finally:
        OPS.unregister("swish")
        sys.path.remove(str(PLUGIN_PKG))
        for name in [m for m in sys.modules if m.split(".")[0] == "tidlc_example_plugin"]:
            del sys.modules[name]  # the later tests see no trace of the plugin


TO_NCHW, TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def swish_graph(layout: str):
    """input -> conv -> swish -> conv -> output; NHWC as the TF importers write it (every conv
    between two transposes), or NCHW."""
    rng = np.random.default_rng(4)
    b = Builder()
    nhwc = layout == "NHWC"
    x = b.input("x", TensorType((1, 6, 5, 4) if nhwc else (1, 4, 6, 5), layout=layout))

    def conv(v, name):
        if nhwc:
            v = b.op("transpose", [v], perm=TO_NCHW)
        w = b.const(rng.normal(0, 0.4, (4, 4, 3, 3)).astype(np.float32), f"{name}.w")
        y = b.op("conv2d", [v, w, b.const(rng.normal(0, 0.1, 4).astype(np.float32), f"{name}.b")],
                 pads=(1, 1, 1, 1), name=name)
        return b.op("transpose", [y], perm=TO_NHWC) if nhwc else y

    y = b.op("swish", [conv(x, "c1")], beta=1.5, name="act")
    b.output(conv(y, "c2"), "out")
    return b.graph


def frames_for(graph, n=8, seed=1):
    shape = graph.input_ops[0].results[0].type.shape
    rng = np.random.default_rng(seed)
    return [{"x": rng.uniform(-1, 1, shape).astype(np.float32)} for _ in range(n)]


def test_a_plugin_op_with_traits_sinks_through_the_layout_pass(swish):
    graph = swish_graph("NHWC")
    feeds = frames_for(graph, 1)[0]
    before = run_graph(graph, feeds)["out"]
    PassManager.from_string(swish.registry.passes, "layout,dce", verify_each=True).run(graph)
    verify(graph)
    np.testing.assert_allclose(run_graph(graph, feeds)["out"], before, rtol=1e-5, atol=1e-5)
    assert interior_transposes(graph) == []
    act = next(op for op in graph.ops if op.kind == "swish")
    assert act.operands[0].producer.kind == "conv2d" and act.results[0].type.layout == "NCHW"
    assert [op.kind for op in graph.compute_ops()].count("transpose") == 2  # after the input, before the output


def test_without_its_traits_the_same_op_keeps_its_transposes(swish):
    plain = attrs.evolve(OPS.get("swish"), traits=frozenset())
    OPS.unregister("swish")
    OPS.register(plain)
    graph = swish_graph("NHWC")
    PassManager.from_string(swish.registry.passes, "layout,dce").run(graph)
    assert len(interior_transposes(graph)) == 2  # the layout pass cannot see through it


def test_a_plugin_op_with_traits_is_quantized_by_the_quantize_pass(swish):
    graph = swish_graph("NHWC")
    reference = [run_graph(graph, f)["out"] for f in frames_for(graph, 4, seed=7)]
    options = CompileOptions.of(calib_source="random", calib_frames=8)
    ctx = PassContext(options=options)
    PassManager.from_string(swish.registry.passes, "layout,dce,quantize", verify_each=True).run(graph, ctx)
    assert graph.attrs.get("quantized")
    act = next(op for op in graph.ops if op.kind == "swish")
    # computed in fixed point (a lookup table), not in a float island between data_converts
    assert is_fixed(act.operands[0].type) and is_fixed(act.results[0].type)
    assert act.operands[0].producer.kind == "conv2d" and act.results[0].type.quant.scale[0] > 0
    assert not any("swish" in note for note in ctx.notes if "float" in note)
    assert [op.kind for op in graph.compute_ops()].count("data_convert") == 2  # the input's, the output's
    executor = FixedExecutor(graph)  # 8 bits, calibrated on synthetic frames: about 25 dB
    for f, want in zip(frames_for(graph, 4, seed=7), reference):
        assert snr_db(want, executor.run(f)["out"]) > 20
