"""The estimate: op mapping, totals, options, hints, the JSON document, errors and speed."""
from __future__ import annotations

import json
import time

import attrs
import numpy as np
import pytest
from tidlc.backends.tidl.perf import JSON_SCHEMA, PerfOptions, estimate, load_device, zoo
from tidlc.backends.tidl.perf.zoo import Net

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.ir.types import TensorType

QUICK = PerfOptions(hints=False)
PUBLISHED_GMACS = {"mobilenet_v1": 0.569, "mobilenet_v2_1.4": 0.583, "yolox_nano_lite_416": 1.476,
                   "deeplabv3plus_mnv2_lite_512": 3.28, "yolox_s_lite_640": 13.43, "resnet18": 1.814,
                   "resnet50": 4.087}


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_zoo_builders_match_the_published_macs(zoo_graphs, name):
    assert zoo.total_macs(zoo_graphs(name)) / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.025)


def test_keras_mirrors_have_keras_parameter_counts():
    # keras.applications.MobileNet() / MobileNetV2(alpha=1.4) .count_params(), weights=None
    assert zoo.parameter_count(zoo.mobilenet_v1()) == 4_253_864
    assert zoo.parameter_count(zoo.mobilenet_v2(1.4)) == 6_156_712


def test_published_device_timings_within_30_percent(zoo_graphs):
    """benchmarks/perf_model_vs_device.py in a test: the calibration must not drift."""
    published = {"mobilenet_v1": 1.51, "mobilenet_v2_1.4": 3.02, "yolox_nano_lite_416": 4.64,
                 "deeplabv3plus_mnv2_lite_512": 7.30, "yolox_s_lite_640": 11.66}
    for name, ms in published.items():
        predicted = estimate(zoo_graphs(name), "tda4vm", QUICK).ms
        assert abs(predicted / ms - 1) <= 0.30, (name, predicted, ms)


def _single(kind_builder, shape=(1, 64, 56, 56)):
    net = Net("one", shape)
    graph = net.finish(kind_builder(net, net.input))
    return estimate(graph, "tda4vm", QUICK)


def test_op_mapping():
    conv = _single(lambda n, x: n.conv(x, 64, 3, bn=False, act=None)).layers[0]
    assert (conv.tidl_layer, conv.unit, conv.bound != "none") == ("Convolution", "mma", True)
    dw = _single(lambda n, x: n.conv(x, 64, 3, groups=64, bn=False, act=None)).layers[0]
    assert (dw.unit, dw.note) == ("vector", "depthwise") and dw.macs == 56 * 56 * 64 * 9
    grouped = _single(lambda n, x: n.conv(x, 64, 3, groups=4, bn=False, act=None)).layers[0]
    assert grouped.unit == "mma"
    rep = _single(lambda n, x: n.op("reshape", [x], shape=(1, 64 * 56 * 56)))
    assert (rep.layers[0].unit, rep.layers[0].cycles, rep.layers[0].output_location) == ("none", 0, "DDR")
    pool = _single(lambda n, x: n.pool(x, "max", 2, 2)).layers[0]
    assert (pool.tidl_layer, pool.unit) == ("Pooling", "vector")
    fc = _single(lambda n, x: n.dense(x, 1000), shape=(1, 1024)).layers[0]
    assert (fc.tidl_layer, fc.unit) == ("InnerProduct", "mma") and fc.bound == "dma"  # 1 MB of weights


def test_views_share_their_input_buffer():
    def build(n, x):
        y = n.conv(x, 64, 1, bn=False, act=None)
        y = n.op("reshape", [y], shape=(1, 64, 56 * 56))
        return n.op("reshape", [y], shape=(1, 64, 56, 56))
    rep = _single(build)
    assert [lay.unit for lay in rep.layers] == ["mma", "none", "none"]
    assert rep.layers[0].output_location == "DDR"  # it *is* the network output


def test_totals_add_up(zoo_graphs):
    rep = estimate(zoo_graphs("mobilenet_v2_1.4"), "tda4vm", QUICK)
    layer_sum = sum(lay.cycles for lay in rep.layers)
    assert rep.total_cycles == pytest.approx(layer_sum + rep.device.network_setup_cycles)
    assert sum(lay.percent for lay in rep.layers) == pytest.approx(100 * layer_sum / rep.total_cycles)
    assert rep.ms == pytest.approx(rep.total_cycles / 1e6) and rep.fps == pytest.approx(1000 / rep.ms)
    assert rep.ddr_bytes_per_frame == pytest.approx(sum(lay.ddr_read_bytes + lay.ddr_write_bytes for lay in rep.layers))
    assert rep.macs == pytest.approx(0.583e9, rel=0.01)


def test_batches_report_per_frame_numbers(zoo_graphs):
    four = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(batches=4, hints=False))
    assert four.total_cycles == pytest.approx(four.batch_cycles / 4)
    assert four.macs == pytest.approx(0.569e9, rel=0.01)  # per frame


def test_options_from_compile_options(zoo_graphs):
    graph = zoo_graphs("resnet18")
    has_bits = "bits" in {f.name for f in attrs.fields(CompileOptions)}
    compile_options = CompileOptions.of(bits=16) if has_bits else CompileOptions()
    opts = PerfOptions.from_options(compile_options, hints=False)
    assert opts.bits == (16 if has_bits else 8)
    assert estimate(graph, "tda4vm", compile_options).options.bits == opts.bits
    assert PerfOptions.from_options(None).bits == 8
    with pytest.raises(TidlcError, match="8- or 16-bit"):
        PerfOptions(bits=4)
    with pytest.raises(TidlcError, match="positive integer"):
        PerfOptions(batches=0)


def test_fps_check(zoo_graphs):
    graph = zoo_graphs("mobilenet_v1")
    ok = estimate(graph, "tda4vm", PerfOptions(fps=30, hints=False))
    assert ok.fps_check.keeps_up and ok.fps_check.load == pytest.approx(ok.ms / (1000 / 30))
    assert ok.ddr_gbps() == pytest.approx(ok.ddr_bytes_per_frame * 30 / 1e9)
    slow = estimate(graph, "tda4vm", PerfOptions(fps=2000, hints=False))
    assert not slow.fps_check.keeps_up and slow.ddr_gbps() == pytest.approx(slow.ddr_bytes_per_frame * slow.fps / 1e9)


def test_hints_are_ranked_and_predicted(zoo_graphs):
    rep = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(msmc_kb=512))
    kinds = [h.kind for h in rep.hints]
    gains = [h.gain_cycles for h in rep.hints]
    assert gains == sorted(gains, reverse=True)
    assert {"batching", "msmc-size"} <= set(kinds)
    assert "persist-weights" not in kinds  # 512 KB leave no room for weights: no gain, no hint
    full = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions())
    assert {"batching", "persist-weights"} <= {h.kind for h in full.hints}
    batching = next(h for h in rep.hints if h.kind == "batching")
    n = int(batching.message.split("numBatches=")[1].split()[0])
    with_batches = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(msmc_kb=512, batches=n, hints=False))
    assert batching.gain_cycles == pytest.approx(rep.total_cycles - with_batches.total_cycles)
    persist = next(h for h in full.hints if h.kind == "persist-weights")
    on = estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(persist_weights=True, hints=False))
    assert persist.exact and persist.gain_cycles == pytest.approx(full.total_cycles - on.total_cycles)


def test_hints_for_big_feature_maps_and_16_bit(zoo_graphs):
    rep = estimate(zoo_graphs("deeplabv3plus_mnv2_lite_512"), "tda4vm", PerfOptions(bits=16))
    kinds = {h.kind for h in rep.hints}
    assert {"feature-spill", "bits"} <= kinds


def test_json_document_is_stable_and_complete(zoo_graphs):
    graph = zoo_graphs("mobilenet_v1")
    rep = estimate(graph, "tda4vm", PerfOptions(fps=30))
    text = rep.to_json()
    assert text == estimate(graph, "tda4vm", PerfOptions(fps=30)).to_json()  # same inputs, same bytes
    doc = json.loads(text)
    assert doc["schema"] == JSON_SCHEMA
    for key in ("total_cycles", "ms", "fps", "ddr_bytes_per_frame", "mac_utilization", "layers", "hints",
                "settings", "device", "fps_check", "macs", "ddr_gbps"):
        assert key in doc
    assert len(doc["layers"]) == len(rep.layers)
    layer_keys = {"index", "name", "op", "tidl_layer", "unit", "macs", "cycles", "percent", "mma_utilization",
                  "ddr_read_bytes", "ddr_write_bytes", "output_location", "weights_location", "bound"}
    assert all(layer_keys <= set(layer) for layer in doc["layers"])
    assert doc["fps_check"]["keeps_up"] is True
    assert all({"kind", "gain_cycles", "gain_ms", "message"} <= set(h) for h in doc["hints"])


def test_dynamic_shapes_are_a_clear_error():
    net = Net("dyn", (1, 3, 32, 32))
    graph = net.finish(net.conv(net.input, 8, 3, bn=False, act=None))
    graph.ops[0].results[0].type = TensorType((None, 3, 32, 32), "f32", "NCHW")
    from tidlc.shapes import reinfer
    reinfer(graph)
    with pytest.raises(TidlcError, match="not fully known.*|--input-shape"):
        estimate(graph, "tda4vm", QUICK)


def test_unknown_16_bit_layer_names_are_listed(zoo_graphs):
    with pytest.raises(TidlcError, match="not in the graph: nope"):
        estimate(zoo_graphs("mobilenet_v1"), "tda4vm", PerfOptions(layers_16bit=("nope",)))


def test_quantized_looking_weights_are_not_layers():
    """Weights computed from constants (e.g. a dequantize in a quantized IR) are folded, not layers."""
    net = Net("q", (1, 16, 8, 8))
    w = net.op("neg", [net.const((16, 16, 1, 1), 1.0)])
    y = net.b.op("conv2d", [net.input, w], name="conv")
    rep = estimate(net.finish(y), "tda4vm", QUICK)
    assert [lay.name for lay in rep.layers] == ["conv"] and rep.weight_bytes > 16 * 16


def test_a_faster_clock_helps_compute_not_ddr(zoo_graphs):
    """DDR bandwidth is bytes per second: at 2 GHz a DDR-bound layer needs more cycles, not fewer."""
    graph = zoo_graphs("resnet18")
    base = estimate(graph, "tda4vm", QUICK)
    double = estimate(graph, load_device("tda4vm", overrides={"c7x.mhz": 2000}), QUICK)
    assert base.ms / 2 < double.ms < base.ms
    assert double.total_cycles > base.total_cycles
    assert double.macs == base.macs and double.ddr_bytes_per_frame == base.ddr_bytes_per_frame


def test_a_thousand_layers_in_under_a_second():
    net = Net("chain", (1, 32, 28, 28))
    x = net.input
    for i in range(250):
        y = net.conv(x, 32, 3, bn=False, act=None)
        y = net.conv(y, 32, 3, groups=32, bn=False, act=None)
        x = net.act(net.op("add", [x, y]), "relu")
    graph = net.finish(x)
    start = time.perf_counter()
    rep = estimate(graph, "tda4vm", PerfOptions())  # with the what-if runs of the hints
    elapsed = time.perf_counter() - start
    assert len(rep.layers) == 1000
    assert elapsed < 1.0, elapsed


def test_estimate_does_not_change_the_graph(zoo_graphs):
    from tidlc.ir.printer import print_graph
    graph = zoo_graphs("yolox_nano_lite_416")
    before = print_graph(graph)[0]
    estimate(graph, "tda4vm", PerfOptions(bits=16, batches=2))
    assert print_graph(graph)[0] == before
    assert np.isfinite(estimate(graph, "tda4vm", QUICK).ms)


def test_public_api():
    from tidlc.backends.tidl import perf
    assert sorted(perf.__all__) == sorted([
        "Device", "HAVE_CYTHON", "Hint", "JSON_SCHEMA", "LayerPerf", "PerfOptions", "PerfReport",
        "available_devices", "estimate", "load_device", "prepare", "report"])
    assert all(hasattr(perf, name) for name in perf.__all__)


def test_mapping_tables_name_real_ops():
    from tidlc.backends.tidl.perf import layers

    import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
    from tidlc.ir.opdef import OPS
    named = set(layers._VECTOR_OPS) | set(layers._ON_INPUT) | set(layers._VIEWS) | set(layers._FREE) | set(layers._MMA)
    optional = {"quantize", "dequantize", "data_convert"}  # quantization ops (present when that plugin is)
    assert sorted(name for name in named - optional if name not in OPS) == []


def test_nhwc_tensors_cost_like_their_nchw_twins():
    from tidlc.ir.builder import Builder
    from tidlc.ir.core import Graph

    def relu_net(shape, layout):
        b = Builder(Graph(layout))
        x = b.input("x", TensorType(shape, "f32", layout))
        b.output(b.op("relu", [x], name="relu"))
        return estimate(b.graph, "tda4vm", QUICK)
    nchw, nhwc = relu_net((1, 64, 56, 30), "NCHW"), relu_net((1, 56, 30, 64), "NHWC")
    assert nchw.total_cycles == nhwc.total_cycles
    assert nchw.ddr_bytes_per_frame == nhwc.ddr_bytes_per_frame == 2 * 64 * 56 * 32  # rows padded to 8


@pytest.mark.parametrize("act, layers", [("Sigmoid", ["conv2d", "sigmoid"]), ("Relu", ["conv2d"]),
                                         ("Tanh", ["conv2d", "tanh"])])
def test_an_activation_tidl_does_not_fuse_is_priced_as_the_net_bin_has_it(tmp_path, act, layers):
    """-O2 fuses any activation into the conv before it (``act``), but TIDL fuses only ReLU, ReLU6,
    clip and PReLU: the quantizer splits the others off into a layer of their own. The estimate of
    the float graph has that layer too, so `tidlc perf model` predicts the compiled net.bin (Keras
    ConvNeXtTiny: 8.16 ms before, while its net.bin was 9.80 ms; now 8.83 and 8.87 ms)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    from tidlc.backends.tidl.quantize.api import quantize_graph

    from tidlc.compiler import load, optimize
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.2, (16, 8, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node(act, ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])], [w])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    options = CompileOptions()
    g = load(str(path), options)
    optimize(g, options)
    assert [op.kind for op in g.compute_ops()] == ["conv2d"]  # the activation fused at -O2
    before = estimate(g, "tda4vm", QUICK)
    with pytest.warns(Warning):  # (synthetic calibration frames)
        compiled = estimate(quantize_graph(g, options).graph, "tda4vm", QUICK)
    priced = [lay for lay in before.layers if lay.unit != "none"]
    assert [lay.op for lay in priced] == layers
    assert [lay.op for lay in compiled.layers if lay.unit != "none" and lay.op != "data_convert"] == layers
    assert [lay.cycles for lay in priced] == pytest.approx(
        [lay.cycles for lay in compiled.layers if lay.unit != "none" and lay.op != "data_convert"], rel=0.1)


def test_silu_activations_get_a_hint_with_their_share():
    """x * sigmoid(x) (YOLOv8's and EfficientNet's activation) is two TIDL layers, as TIDL has no SiLU:
    the hint names them and their cycles (YOLOv8n at 640x640: 57 of them, ~3.06 ms of 9.57)."""
    def build(n, x):
        for i in range(3):
            c = n.conv(x, 64, 3, bn=False, act=None, name=f"c{i}")
            x = n.op("mul", [c, n.op("sigmoid", [c], name=f"s{i}")], name=f"m{i}")
        return x
    net = Net("silu", (1, 32, 64, 64))
    rep = estimate(net.finish(build(net, net.input)), "tda4vm", PerfOptions())
    hint = next(h for h in rep.hints if h.kind == "silu")
    share = sum(lay.cycles for lay in rep.layers if lay.op in ("sigmoid", "mul"))
    assert hint.gain_cycles == pytest.approx(share) and not hint.exact
    assert hint.message.startswith("3 SiLU") and hint.layers == ("m0", "m1", "m2")
    plain = Net("relu", (1, 32, 64, 64))
    rep = estimate(plain.finish(plain.conv(plain.input, 64, 3, bn=False, act="relu")), "tda4vm", PerfOptions())
    assert all(h.kind != "silu" for h in rep.hints)
