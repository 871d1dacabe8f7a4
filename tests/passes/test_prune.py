"""prune-channels (issue 14, item 3): always-zero conv/dense output channels leave the producer and
every reader, float outputs as onnxruntime's (1e-5), where the TIDL perf model predicts fewer cycles."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.backends.tidl.perf import estimate, load_device
from tidlc.frontends.onnx.importer import load_onnx
from tidlc.plugins.prune import maps_zero_to_zero

from tidlc.compiler import load, optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]
ULTRAFACE = ROOT / "examples" / "ultraface" / "ultraface-rfb320.onnx"
CORPUS = ROOT.parent / "shared" / "corpus" / "caffe"
PROTOTXTS = sorted(CORPUS.glob("*/*.prototxt")) if CORPUS.is_dir() else []
UNIMPORTABLE: set[str] = set()  # every corpus net imports (enet_deploy: its Python layers are dropout)
SHAPE = [1, 3, 32, 32]
ZERO = [1, 4, 7, 9, 15]  # 5 of 16 channels
DEVICE = load_device("tda4vm")


def _c(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


def _save(tmp_path, nodes, consts: dict, outputs: dict, name="m", shape=SHAPE) -> str:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in outputs.items()],
                              [_c(k, v) for k, v in consts.items()])
    path = tmp_path / f"{name}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def _first(rng, cout=16, cin=3, k=3, zero=ZERO):
    """A conv weight and bias whose channels ``zero`` are all zero."""
    w = rng.normal(size=(cout, cin, k, k)).astype(np.float32)
    b = rng.normal(size=cout).astype(np.float32)
    w[zero] = 0
    b[zero] = 0
    return w, b


def _conv(x, w, y, name, k=3, group=1, b=None):
    ins = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", ins, [y], name=name, kernel_shape=[k, k], pads=[k // 2] * 4, group=group)


def _compile(path: str, level: int):
    graph = load_onnx(path, CompileOptions())
    optimize(graph, CompileOptions.of(opt_level=level))
    return graph


def _channels(graph, name: str) -> int:
    op = next(op for op in graph.ops if op.name == name)
    return op.results[0].type.shape[1]


def _in_channels(graph, name: str) -> int:
    op = next(op for op in graph.ops if op.name == name)
    return op.operands[0].type.shape[1]


def _check(path: str, shape=SHAPE) -> tuple:
    """(-O2 graph, -O3 graph, -O2 cycles, -O3 cycles); both graphs agree with onnxruntime (1e-5)."""
    x = np.random.default_rng(9).uniform(-1, 1, shape).astype(np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    ref = dict(zip(names, sess.run(None, {"x": x})))
    graphs, cycles = [], []
    for level in (2, 3):
        graph = _compile(path, level)
        got = run_graph(graph, {"x": x})
        for name in names:
            scale = max(float(np.max(np.abs(ref[name]))), 1e-30)
            err = float(np.max(np.abs(got[name].astype(np.float64) - ref[name]))) / scale
            assert err <= 1e-5, (level, name, err)
        graphs.append(graph)
        cycles.append(estimate(graph, DEVICE).total_cycles)
    return graphs[0], graphs[1], cycles[0], cycles[1]


def test_act_of_zero():
    assert all(maps_zero_to_zero(a) for a in ("none", "relu", "relu6", "tanh", "gelu", "hardswish"))
    assert maps_zero_to_zero("leaky_relu", (0.1,)) and maps_zero_to_zero("elu", (1.0,))
    assert maps_zero_to_zero("clip", (-1.0, 2.0)) and not maps_zero_to_zero("clip", (0.5, 2.0))
    assert not maps_zero_to_zero("sigmoid") and not maps_zero_to_zero("hardsigmoid", (0.2, 0.5))


def test_prune_channels_runs_at_O3_only():
    from tidlc.passes import default_pipeline
    assert "prune-channels" in default_pipeline(3) and "prune-channels" not in default_pipeline(2)
    o3 = default_pipeline(3)
    assert o3.index("fuse-activation") < o3.index("prune-channels") < o3.index("equalize")


def test_conv_relu_conv(tmp_path):
    """conv 3x3 (16 out, 5 zero, relu) -> conv 3x3: 11 channels; the reader's K 145 -> 100 is
    3 -> 2 MMA panels, so the model predicts fewer cycles."""
    rng = np.random.default_rng(0)
    w1, b1 = _first(rng)
    w2 = rng.normal(size=(8, 16, 3, 3))
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "w2", "y", "c2")]
    path = _save(tmp_path, nodes, {"w1": w1, "b1": b1, "w2": w2}, {"y": [1, 8, 32, 32]})
    o2, o3, c2, c3 = _check(path)
    assert (_channels(o2, "c1"), _channels(o3, "c1"), _in_channels(o3, "c2")) == (16, 11, 11)
    assert _channels(o3, "c2") == 8
    assert c3 < c2, (c2, c3)


def test_same_panel_count_is_left_alone(tmp_path, run_passes):
    """A 1x1 reader: K 17 -> 12 stays one panel, and 16 -> 11 outputs stay one panel: nothing to
    gain, the graph stays (guided); ``guided=false`` prunes anyway, outputs unchanged."""
    rng = np.random.default_rng(1)
    w1, b1 = _first(rng)
    w2 = rng.normal(size=(8, 16, 1, 1))
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "w2", "y", "c2", k=1)]
    path = _save(tmp_path, nodes, {"w1": w1, "b1": b1, "w2": w2}, {"y": [1, 8, 32, 32]})
    _o2, o3, c2, c3 = _check(path)
    assert _channels(o3, "c1") == 16 and c3 == c2
    x = np.random.default_rng(2).uniform(-1, 1, SHAPE).astype(np.float32)
    graph = _compile(path, 2)
    assert run_passes(graph, "prune-channels{guided=false},dce", {"x": x}, rtol=1e-6)
    assert _channels(graph, "c1") == 11 and _in_channels(graph, "c2") == 11


def test_panel_width_follows_bits(tmp_path):
    """conv 3x3 (40 out, 10 zero) -> conv 1x1: at 8 bits (panels of 64) 40 -> 30 outputs and K 41 -> 31
    stay one panel each: kept; at 16 bits (panels of 32) both go from 2 panels to 1: pruned, and the
    16-bit estimate drops."""
    from tidlc.backends.tidl.perf import PerfOptions
    rng = np.random.default_rng(11)
    w1, b1 = _first(rng, cout=40, zero=list(range(0, 40, 4)))
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "w2", "y", "c2", k=1)]
    path = _save(tmp_path, nodes, {"w1": w1, "b1": b1, "w2": rng.normal(size=(8, 40, 1, 1))}, {"y": [1, 8, 32, 32]})
    kept = _compile(path, 3)
    assert _channels(kept, "c1") == 40
    graphs = {}
    for level in (2, 3):
        graphs[level] = load_onnx(path, CompileOptions())
        optimize(graphs[level], CompileOptions.of(opt_level=level, bits=16))
    assert _channels(graphs[3], "c1") == 30
    wide = PerfOptions(bits=16)
    assert estimate(graphs[3], DEVICE, wide).total_cycles < estimate(graphs[2], DEVICE, wide).total_cycles


def test_through_depthwise(tmp_path):
    """conv (relu) -> depthwise 3x3 (relu) -> conv 1x1: the zero channels whose depthwise bias is 0
    go from all three layers; channel 9 (depthwise bias 0.5: relu(0.5) is not 0) stays."""
    rng = np.random.default_rng(3)
    w1, b1 = _first(rng)
    wd = rng.normal(size=(16, 1, 3, 3))
    bd = rng.normal(size=16).astype(np.float32)
    bd[ZERO] = 0
    bd[9] = 0.5
    w3 = rng.normal(size=(8, 16, 1, 1))
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "wd", "c2", "dw", group=16, b="bd"), helper.make_node("Relu", ["c2"], ["r2"]),
             _conv("r2", "w3", "y", "pw", k=1)]
    path = _save(tmp_path, nodes, {"w1": w1, "b1": b1, "wd": wd, "bd": bd, "w3": w3}, {"y": [1, 8, 32, 32]})
    _o2, o3, c2, c3 = _check(path)
    dw = next(op for op in o3.ops if op.name == "dw")
    assert (_channels(o3, "c1"), _channels(o3, "dw"), dw.attrs["groups"], _in_channels(o3, "pw")) == (12, 12, 12, 12)
    assert c3 < c2, (c2, c3)  # the depthwise (vector) layer has 4 planes less


@pytest.mark.parametrize("via", ["scale", "prelu", "leaky_relu"])
def test_through_scale_prelu_and_activations(tmp_path, via):
    """conv (no act) -> per-channel Mul + Add (a ``scale`` after -O2, shift 0 on the zero channels),
    PRelu with a (C, 1, 1) slope, or a LeakyRelu after a max pool -> conv 3x3."""
    rng = np.random.default_rng(10)
    w1, b1 = _first(rng)
    w2 = rng.normal(size=(8, 16, 3, 3))
    consts = {"w1": w1, "b1": b1, "w2": w2}
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"])]
    if via == "scale":
        shift = rng.normal(size=(1, 16, 1, 1))
        shift[0, ZERO] = 0
        consts.update(s=rng.uniform(0.5, 2, (1, 16, 1, 1)), t=shift)
        nodes += [helper.make_node("Mul", ["r1", "s"], ["m"]), helper.make_node("Add", ["m", "t"], ["z"])]
    elif via == "prelu":
        nodes[1] = helper.make_node("Identity", ["c1"], ["r1"])
        consts["slope"] = rng.uniform(0.1, 0.3, (16, 1, 1))
        nodes += [helper.make_node("PRelu", ["r1", "slope"], ["z"])]
    else:
        nodes += [helper.make_node("MaxPool", ["r1"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                  helper.make_node("LeakyRelu", ["p"], ["z"], alpha=0.1)]
    nodes.append(_conv("z", "w2", "y", "c2"))
    side = 16 if via == "leaky_relu" else 32
    path = _save(tmp_path, nodes, consts, {"y": [1, 8, side, side]}, name=via)
    _o2, o3, c2, c3 = _check(path)
    kinds = {op.kind for op in o3.compute_ops()}
    if via == "prelu":  # fused into c1 (-O2's fuse-activation): its slopes are pruned with its channels
        c1 = next(op for op in o3.ops if op.name == "c1")
        assert c1.attrs["act"] == "prelu" and len(c1.attrs["act_params"]) == 11, kinds
    else:
        assert {"scale": "scale", "leaky_relu": "leaky_relu"}[via] in kinds, kinds
    assert (_channels(o3, "c1"), _in_channels(o3, "c2")) == (11, 11)
    assert c3 < c2, (c2, c3)


def test_through_batchnorm_pool_and_flatten_into_dense(tmp_path):
    """conv -> (BN with zero shift on the zero channels, folded at -O2) -> relu -> max pool ->
    flatten -> dense: the dense weight drops each pruned channel's block of H*W columns."""
    rng = np.random.default_rng(4)
    w1, b1 = _first(rng)
    gamma = rng.uniform(0.5, 2, 16)
    beta, mean = rng.normal(size=16), rng.normal(size=16)
    beta[ZERO], mean[ZERO] = 0, 0
    var = rng.uniform(0.5, 2, 16)
    wf = rng.normal(size=(10, 16 * 8 * 8)) * 0.05
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"),
             helper.make_node("BatchNormalization", ["c1", "g", "be", "m", "v"], ["n1"], name="bn"),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[4, 4], strides=[4, 4]),
             helper.make_node("Flatten", ["p1"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)]
    consts = {"w1": w1, "b1": b1, "g": gamma, "be": beta, "m": mean, "v": var, "wf": wf}
    path = _save(tmp_path, nodes, consts, {"y": [1, 10]})
    _o2, o3, c2, c3 = _check(path)
    fc = next(op for op in o3.ops if op.name == "fc")
    assert _channels(o3, "c1") == 11 and fc.operands[1].type.shape == (10, 11 * 64)
    assert c3 < c2, (c2, c3)


def test_global_pool_reshape_dense(tmp_path):
    """conv 1x1 (128 out, 70 zero) -> global average pool -> reshape (1, 128) -> dense: 128 -> 58
    output channels is 2 -> 1 panels."""
    rng = np.random.default_rng(5)
    zero = list(range(0, 128, 2)) + [1, 3, 5, 7, 9, 11]
    w1, b1 = _first(rng, cout=128, cin=3, k=1, zero=zero)
    wf = rng.normal(size=(10, 128))
    nodes = [_conv("x", "w1", "c1", "c1", k=1, b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("GlobalAveragePool", ["r1"], ["p"]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["y"], name="fc", transB=1)]
    consts = {"w1": w1, "b1": b1, "wf": wf}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                              [_c(k, v) for k, v in consts.items()]
                              + [numpy_helper.from_array(np.array([1, 128], np.int64), "shape")])
    path = tmp_path / "gap.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    _o2, o3, c2, c3 = _check(str(path))
    assert _channels(o3, "c1") == 128 - len(zero)
    assert next(op for op in o3.ops if op.name == "fc").operands[1].type.shape == (10, 128 - len(zero))
    assert c3 < c2, (c2, c3)


def test_dense_into_dense(tmp_path):
    """Gemm (100 -> 80, 30 zero rows, relu) -> Gemm: K 81 -> 51 is 2 -> 1 panels."""
    rng = np.random.default_rng(6)
    w1 = rng.normal(size=(80, 100)).astype(np.float32)
    b1 = rng.normal(size=80).astype(np.float32)
    w1[:30], b1[:30] = 0, 0
    w2 = rng.normal(size=(10, 80))
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="fc2", transB=1)]
    path = _save(tmp_path, nodes, {"w1": w1, "b1": b1, "w2": w2}, {"y": [1, 10]}, shape=[1, 100])
    _o2, o3, c2, c3 = _check(path, shape=[1, 100])
    assert _channels(o3, "fc1") == 50 and next(op for op in o3.ops if op.name == "fc2").operands[1].type.shape == (10, 50)
    assert c3 < c2, (c2, c3)


def _kept(tmp_path, nodes, consts, outputs, name="c1"):
    path = _save(tmp_path, nodes, consts, outputs)
    o2, o3, c2, c3 = _check(path)
    assert _channels(o3, name) == _channels(o2, name) == 16
    assert c3 == c2


def test_graph_output_keeps_its_channels(tmp_path):
    """The zero channels of a value that is also a graph output stay: the output's shape is fixed."""
    rng = np.random.default_rng(7)
    w1, b1 = _first(rng)
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "w2", "y", "c2")]
    _kept(tmp_path, nodes, {"w1": w1, "b1": b1, "w2": rng.normal(size=(8, 16, 3, 3))},
          {"y": [1, 8, 32, 32], "r1": [1, 16, 32, 32]})


def test_sigmoid_concat_and_residual_keep_their_channels(tmp_path):
    rng = np.random.default_rng(8)
    w1, b1 = _first(rng)
    w2 = rng.normal(size=(8, 16, 3, 3))
    consts = {"w1": w1, "b1": b1, "w2": w2}
    # sigmoid(0) = 0.5: the channel is not zero
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Sigmoid", ["c1"], ["r1"]),
             _conv("r1", "w2", "y", "c2")]
    _kept(tmp_path, nodes, consts, {"y": [1, 8, 32, 32]})
    # a concat reader keeps them (another reader could absorb them: all must)
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), helper.make_node("Relu", ["c1"], ["r1"]),
             _conv("r1", "w2", "c2", "c2"), helper.make_node("Concat", ["r1", "c2"], ["y"], axis=1)]
    _kept(tmp_path, nodes, consts, {"y": [1, 24, 32, 32]})
    # an add of two branches
    consts["w3"] = rng.normal(size=(16, 3, 3, 3))
    nodes = [_conv("x", "w1", "c1", "c1", b="b1"), _conv("x", "w3", "c3", "c3"),
             helper.make_node("Add", ["c1", "c3"], ["s"]), _conv("s", "w2", "y", "c2")]
    _kept(tmp_path, nodes, consts, {"y": [1, 8, 32, 32]})


def _slimmed_ultraface(tmp_path) -> str:
    """UltraFace with a quarter of every BatchNorm's channels at gamma = beta = mean = 0 (what
    network slimming leaves): after BN folding those conv channels are all zero."""
    model = onnx.load(str(ULTRAFACE))
    inits = {i.name: i for i in model.graph.initializer}
    rng = np.random.default_rng(0)
    for node in model.graph.node:
        if node.op_type != "BatchNormalization":
            continue
        gamma, beta, mean = (numpy_helper.to_array(inits[n]).copy() for n in node.input[1:4])
        dead = rng.random(gamma.size) < 0.25
        gamma[dead], beta[dead], mean[dead] = 0, 0, 0
        for n, a in zip(node.input[1:4], (gamma, beta, mean)):
            inits[n].CopyFrom(numpy_helper.from_array(a, n))
    path = tmp_path / "slim.onnx"
    onnx.save(model, str(path))
    return str(path)


def _cycles(graph) -> float:
    return estimate(graph, DEVICE).total_cycles


def test_ultraface_never_slower_and_slimmed_faster(tmp_path):
    cycles = {level: _cycles(_compile(str(ULTRAFACE), level)) for level in (2, 3)}
    assert cycles[3] <= cycles[2], cycles
    path = _slimmed_ultraface(tmp_path)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 3, 240, 320)).astype(np.float32)
    out, slim = {}, {}
    for level in (2, 3):
        graph = _compile(path, level)
        name = graph.input_ops[0].attrs["name"]
        out[level] = run_graph(graph, {name: x})
        slim[level] = _cycles(graph)
    assert slim[3] < slim[2], slim
    for name in out[2]:
        ref = out[2][name].astype(np.float64)
        assert np.max(np.abs(out[3][name] - ref)) <= 1e-5 * np.max(np.abs(ref)), name


@pytest.mark.skipif(not PROTOTXTS, reason="shared corpus not available")
@pytest.mark.filterwarnings("ignore::tidlc.diagnostics.TidlcWarning")  # structure-only nets say so
@pytest.mark.parametrize("path", [p for p in PROTOTXTS if f"{p.parent.name}/{p.name}" not in UNIMPORTABLE],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_O3_never_predicts_more_cycles(path):
    cycles = {}
    for level in (2, 3):
        graph = load(str(path), CompileOptions())
        optimize(graph, CompileOptions.of(opt_level=level))
        cycles[level] = _cycles(graph)
    assert cycles[3] <= cycles[2], cycles
