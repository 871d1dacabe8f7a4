"""The executor's kernel tables and their dispatcher (backends/tidl/fixed/dispatch.py): a fast table
entry that declines falls back to the specification, every fast kind has a spec kernel, and the
specification alone gives the same bits."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor, executor
from tidlc.backends.tidl.fixed.dispatch import KernelContext, KernelTable, build_kernel
from tidlc.backends.tidl.fixed.fast_kernels import FAST, VNNI
from tidlc.backends.tidl.fixed.spec_kernels import SPEC

from tidlc.diagnostics import TidlcError
from tidlc.ir import parse_graph
from tidlc.ir.opdef import Trait

I8 = "!q<bits=8, signed=true, scale={}>"
NET = f"""tidlc.graph @main {{quantized = true}} {{
  %x = input "x" : tensor<1x2x5x6xf32, NCHW>
  %0 = data_convert(%x) {{dtype = "i8"}} : tensor<1x2x5x6xi8, NCHW, {I8.format(127.7)}>
  %1 = const @c.w : tensor<4x2x3x3xi8, {I8.format(137.6)}>
  %2 = const @c.b : tensor<4xi32, !q<bits=32, signed=true, scale=17572.52>>
  %3 = conv2d(%0, %1, %2) {{pads = [1, 1, 1, 1], act = "relu"}} : tensor<1x4x5x6xu8, NCHW, !q<bits=8, signed=false, scale=68.65, shift=8>>
  %4 = const @d.w : tensor<4x1x3x3xi8, {I8.format(142.2)}>
  %5 = conv2d(%3, %4) {{pads = [1, 1, 1, 1], groups = 4}} : tensor<1x4x5x6xi8, NCHW, !q<bits=8, signed=true, scale=38.14, shift=8>>
  %6 = add(%3, %5) : tensor<1x4x5x6xi8, NCHW, {I8.format(41.7)}>
  %7 = pool2d(%6) {{mode = "avg", strides = [2, 2], kernel = [2, 2]}} : tensor<1x4x2x3xi8, NCHW, {I8.format(41.7)}>
  %8 = sigmoid(%7) : tensor<1x4x2x3xu8, NCHW, !q<bits=8, signed=false, scale=255.0>>
  %9 = transpose(%8) {{perm = [0, 2, 3, 1]}} : tensor<1x2x3x4xu8, !q<bits=8, signed=false, scale=255.0>>
  %10 = data_convert(%9) {{dtype = "f32"}} : tensor<1x2x3x4xf32>
  output(%10) {{names = ["y"]}}
}}
"""


def small_net():
    """A quantized net of a conv, a depthwise conv, an add, an average pool, a table and a transpose."""
    rng = np.random.default_rng(0)
    weights = {"c.w": rng.integers(-128, 128, (4, 2, 3, 3)).astype(np.int8),
               "c.b": rng.integers(-6000, 6000, 4).astype(np.int32),
               "d.w": rng.integers(-128, 128, (4, 1, 3, 3)).astype(np.int8)}
    return parse_graph(NET, weights)


def feeds(seed=0):
    return {"x": np.random.default_rng(seed).uniform(-1.2, 1.2, (1, 2, 5, 6)).astype(np.float32)}


def trace(ex, x):
    seen = []
    ex.run(x, observer=lambda op, rs: seen.extend((op.kind, r.copy()) for r in rs))
    return seen


def assert_same(a, b):
    assert [k for k, _ in a] == [k for k, _ in b]
    for (kind, u), (_, v) in zip(a, b):
        assert u.dtype == v.dtype and np.array_equal(u, v), kind


def spying(table, calls):
    """``table`` with every builder recording the op kinds it was asked for."""
    def spy(builder):
        return lambda op, ctx: calls.append(op.kind) or builder(op, ctx)
    return KernelTable(table.name, {k: spy(b) for k, b in table.kinds.items()},
                       tuple((t, spy(b)) for t, b in table.traits))


def test_the_specification_alone_gives_the_same_bits_as_the_fast_tables(monkeypatch):
    graph = small_net()
    calls = []
    monkeypatch.setitem(executor.KERNEL_MODES, "auto", (spying(VNNI, calls), spying(FAST, calls), SPEC))
    fast = FixedExecutor(graph, kernels="auto")
    assert {"conv2d", "add", "pool2d", "sigmoid", "transpose", "data_convert"} <= set(calls)  # the fast table ran
    spec = FixedExecutor(graph, kernels="numpy")
    for seed in range(3):
        assert_same(trace(spec, feeds(seed)), trace(fast, feeds(seed)))


def test_every_op_kind_of_a_fast_table_has_a_spec_kernel():
    for table in (VNNI, FAST):
        assert set(table.kinds) <= set(SPEC.kinds), table.name
        assert {t for t, _ in table.traits} <= {t for t, _ in SPEC.traits}, table.name
    assert set(executor.KERNEL_MODES) == {"numpy", "auto"}
    assert all(chain[-1] is SPEC for chain in executor.KERNEL_MODES.values())


def test_a_declining_builder_falls_back_to_the_specification(monkeypatch):
    graph = small_net()
    asked = []
    declines = KernelTable("declines", {"conv2d": lambda op, ctx: asked.append(op.kind)},  # None: declined
                           ((Trait.LUT, lambda op, ctx: asked.append(op.kind)),))
    monkeypatch.setitem(executor.KERNEL_MODES, "auto", (declines, SPEC))
    assert_same(trace(FixedExecutor(graph, kernels="numpy"), feeds()),
                trace(FixedExecutor(graph, kernels="auto"), feeds()))
    assert asked == ["conv2d", "conv2d", "sigmoid"]


def test_a_declined_frame_runs_on_the_rest_of_the_chain():
    """A kernel that returns NotImplemented hands that frame to the next table's kernel (built
    once, when first needed); the frames it accepts stay its own."""
    graph = small_net()
    conv = next(op for op in graph.ops if op.kind == "conv2d")
    built, ran = [], []

    def picky(op, ctx):
        spec = SPEC.builder_for(op)(op, ctx)

        def run(args):
            if args[0].max() > 100:
                return NotImplemented
            ran.append("picky")
            return spec(args)
        return run

    def counted(op, ctx):
        built.append(op.kind)
        return SPEC.builder_for(op)(op, ctx)

    kernel = build_kernel(conv, (KernelTable("picky", {"conv2d": picky}), KernelTable("spec", {"conv2d": counted})),
                          KernelContext())
    assert built == []  # the rest of the chain is built on the first declined frame only
    w, b = (np.asarray(v.const_value()) for v in conv.operands[1:])
    spec = SPEC.builder_for(conv)(conv, KernelContext())
    for top in (50, 127, 127, 20):
        x = np.full((1, 2, 5, 6), top, np.int8)
        assert np.array_equal(kernel([x, w, b])[0], spec([x, w, b])[0])
    assert built == ["conv2d"] and ran == ["picky", "picky"]


def test_the_context_carries_the_thread_count(monkeypatch):
    seen = []
    table = KernelTable("threads", {"add": lambda op, ctx: seen.append(ctx.threads)})
    monkeypatch.setitem(executor.KERNEL_MODES, "auto", (table, SPEC))
    FixedExecutor(small_net(), kernels="auto", threads=3)
    assert seen == [3]


def test_ops_without_a_spec_kernel_and_unknown_modes_are_errors():
    graph = small_net()
    with pytest.raises(TidlcError, match="unknown kernels 'avx9'"):
        FixedExecutor(graph, kernels="avx9")
    add = next(op for op in graph.ops if op.kind == "add")
    with pytest.raises(TidlcError, match="has no fixed-point kernel"):
        build_kernel(add, (KernelTable("empty", {}),), KernelContext())
