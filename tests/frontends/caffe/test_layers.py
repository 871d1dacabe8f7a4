"""Caffe lowering: layer semantics checked against Caffe's definitions, SSA, inputs, outputs, weights.

Where OpenCV (test_layers_opencv.py) departs from Caffe, the reference here
is a direct numpy transcription of what Caffe's layer computes.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from tidlc.frontends.caffe.caffemodel import read_caffemodel
from tidlc.frontends.caffe.convert_nn import caffe_pooled_size
from tidlc.frontends.caffe.convert_tensor import caffe_reshape
from tidlc.frontends.caffe.lower import load_caffe, lower_net
from tidlc.frontends.caffe.netspec import parse_netspec
from tidlc.frontends.caffe.weights import FileWeights, RandomWeights, ZeroWeights

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError, TidlcWarning
from tidlc.interp import run_graph


def net(body: str, shape=(1, 4, 9, 11)) -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ {dims} }} }} }}\n{body}')


def lower(text: str, weights=None, shapes=None, path="net.prototxt"):
    return lower_net(parse_netspec(text, path), weights or RandomWeights(3), path, shapes)


def run(graph, x=None, seed=0):
    if x is None:
        x = np.random.default_rng(seed).uniform(-1, 1, graph.inputs[0].type.shape).astype(np.float32)
    return x, run_graph(graph, {graph.input_names()[0]: x})


def error_of(text: str, **kw) -> TidlcError:
    with pytest.raises(TidlcError) as info:
        lower(text, **kw)
    return info.value


# ----------------------------------------------------------------------------- SSA, names, outputs

def test_in_place_layers_are_renamed_and_outputs_are_unconsumed_blobs():
    g = lower(net('''
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "sp" type: "Split" bottom: "conv" top: "a" top: "b" }
layer { name: "sig" type: "Sigmoid" bottom: "a" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "conv" top: "conv" }
layer { name: "quiet" type: "Silence" bottom: "b" }
'''))
    ops = {op.name: op for op in g.compute_ops()}
    assert [op.kind for op in g.compute_ops()] == ["conv2d", "relu", "sigmoid", "tanh"]
    conv, relu, tanh = ops["conv"], ops["relu"], ops["tanh"]
    assert relu.operands == [conv.result] and tanh.operands == [relu.result]  # SSA chain
    assert conv.result.name == relu.result.name == tanh.result.name == "conv"  # blob names kept
    assert ops["sig"].operands == [relu.result]  # Split aliases, no op
    assert g.output_names == ["sig", "conv"]  # unconsumed, in the order produced
    assert g.outputs == [ops["sig"].result, tanh.result]
    assert relu.loc.name == "relu" and relu.loc.line == 5 and relu.loc.file == "net.prototxt"
    assert g.inputs[0].type.layout == "NCHW"


def test_helper_ops_are_named_after_their_layer():
    g = lower(net('layer { name: "pw" type: "Power" bottom: "data" top: "pw" '
                  'power_param { power: 3 scale: 2 shift: 1 } }'))
    assert [(op.kind, op.name) for op in g.compute_ops()] == [
        ("mul", "pw/scale"), ("add", "pw/shift"), ("pow", "pw")]
    assert {op.name for op in g.ops if op.kind == "const"} == {"pw.scale", "pw.shift", "pw.power"}
    x, out = run(g)
    np.testing.assert_allclose(out["pw"], (1 + 2 * x) ** 3, rtol=1e-5)


def test_bottom_not_produced_is_located():
    error = error_of(net('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }'))
    assert "bottom 'nope' is not produced" in error.message and error.loc.line == 3


# ----------------------------------------------------------------------------- Caffe semantics

def test_inner_product_transpose_uses_k_by_n_weights():
    text = net('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
               'inner_product_param { num_output: 5 transpose: true } }')
    source = RandomWeights(1)
    g = lower(text, source)
    x, out = run(g)
    w, b = source.blobs_in_caffe_layout()["fc"]
    assert w.shape == (4 * 9 * 11, 5)  # Caffe: (K, N) when transposed
    np.testing.assert_allclose(out["fc"], x.reshape(1, -1) @ w + b, rtol=1e-5, atol=1e-6)


def naive_lrn_across(x, size, alpha, beta, k):
    """caffe::LRNLayer ACROSS_CHANNELS: x / (k + alpha/size * sum of squares in the window)^beta."""
    c = x.shape[1]
    pre = (size - 1) // 2
    out = np.empty_like(x)
    for ch in range(c):
        lo, hi = max(0, ch - pre), min(c, ch - pre + size)
        out[:, ch] = x[:, ch] / (k + alpha / size * (x[:, lo:hi] ** 2).sum(axis=1)) ** beta
    return out


def test_lrn_across_channels_with_k():
    g = lower(net('layer { name: "n" type: "LRN" bottom: "data" top: "n" '
                  'lrn_param { local_size: 5 alpha: 0.4 beta: 0.6 k: 2.5 } }', (1, 7, 3, 4)))
    x, out = run(g)
    np.testing.assert_allclose(out["n"], naive_lrn_across(x, 5, 0.4, 0.6, 2.5), rtol=1e-5)


def test_permute_partial_order_appends_the_rest():
    g = lower(net('layer { name: "p" type: "Permute" bottom: "data" top: "p" permute_param { order: 0 order: 3 } }'))
    assert next(g.compute_ops()).attrs["perm"] == (0, 3, 1, 2)
    x, out = run(g)
    np.testing.assert_array_equal(out["p"], x.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("params,size", [
    ("zoom_factor: 3", (25, 31)), ("shrink_factor: 2", (5, 6)), ("shrink_factor: 3 zoom_factor: 2", (5, 7)),
    ("height: 4 width: 20", (4, 20)),
])
def test_interp_output_size_and_align_corners_bilinear(params, size):
    g = lower(net(f'layer {{ name: "i" type: "Interp" bottom: "data" top: "i" interp_param {{ {params} }} }}'))
    x, out = run(g)
    assert out["i"].shape == (1, 4, *size)
    # Caffe's caffe_cpu_interp2: source = dst * (in - 1) / (out - 1), linear between neighbours
    ys = np.arange(size[0]) * (9 - 1) / max(size[0] - 1, 1)
    xs = np.arange(size[1]) * (11 - 1) / max(size[1] - 1, 1)
    rows = np.array([np.interp(ys, np.arange(9), x[0, c, :, j]) for c in range(4) for j in range(11)])
    rows = rows.reshape(4, 11, -1).transpose(0, 2, 1)  # (c, out_h, in_w)
    expect = np.array([[np.interp(xs, np.arange(11), rows[c, i]) for i in range(size[0])] for c in range(4)])
    np.testing.assert_allclose(out["i"][0], expect, rtol=1e-5, atol=1e-6)


def test_prior_box_img_size_step_and_no_clip_by_default():
    text = net('''layer { name: "img" type: "Input" top: "img" input_param { shape { dim: 1 dim: 3 dim: 50 dim: 60 } } }
layer { name: "pb" type: "PriorBox" bottom: "data" bottom: "img" top: "pb"
  prior_box_param { min_size: 40 img_h: 100 img_w: 120 step_h: 10 step_w: 11 offset: 0.5 } }''', (1, 4, 2, 3))
    g = lower(text)
    op = next(g.compute_ops())
    assert op.kind == "prior_box" and op.operands == []
    out = run_graph(g, {"data": np.zeros((1, 4, 2, 3), np.float32), "img": np.zeros((1, 3, 50, 60), np.float32)})["pb"]
    boxes = out[0, 0].reshape(2, 3, 4)
    # center (w + 0.5) * step_w, half size 20, normalised by img_w/img_h (not the image blob)
    cx, cy = (np.arange(3) + 0.5) * 11, (np.arange(2) + 0.5) * 10
    np.testing.assert_allclose(boxes[..., 0], (cx[None] - 20) / 120 + 0 * cy[:, None], rtol=1e-6)
    np.testing.assert_allclose(boxes[..., 3], (cy[:, None] + 20) / 100 + 0 * cx[None], rtol=1e-6)
    assert boxes.min() < 0  # Caffe's clip defaults to false
    np.testing.assert_allclose(out[0, 1], 0.1)


def test_prior_box_order_and_aspect_ratios():
    from tidlc.frontends.caffe.convert_detection import resolved_aspect_ratios
    assert resolved_aspect_ratios([2.0, 2.0, 3.0, 1.0], True) == [1.0, 2.0, 0.5, 3.0, 1 / 3]
    assert resolved_aspect_ratios([2.0], False) == [1.0, 2.0]
    from tidlc.ir.ops.detection import prior_boxes
    boxes = prior_boxes((1, 1), (100, 100), (100, 100), [20.0], [80.0], [1.0, 4.0])[0, 0].reshape(-1, 4)
    sizes = boxes[:, 2:] - boxes[:, :2]
    # min box, sqrt(min * max) box, then the other aspect ratios
    np.testing.assert_allclose(sizes, [[0.2, 0.2], [0.4, 0.4], [0.4, 0.1]], rtol=1e-6)


@pytest.mark.parametrize("size,kernel,stride,pad,ceil,expected", [
    (9, 3, 2, 0, True, 4), (10, 3, 2, 0, True, 5), (10, 3, 2, 0, False, 4),
    (10, 3, 2, 1, True, 6), (5, 3, 3, 1, True, 2),  # the last ceil window would start in the padding
    (7, 2, 2, 1, True, 4), (6, 3, 3, 1, True, 3),
])
def test_caffe_pooled_size(size, kernel, stride, pad, ceil, expected):
    assert caffe_pooled_size(size, kernel, stride, pad, ceil) == expected


def naive_caffe_pool(x, mode, k, s, p, out_hw):
    """caffe::PoolingLayer::Forward_cpu, loops as written there."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, *out_hw), np.float64)
    for ph in range(out_hw[0]):
        for pw in range(out_hw[1]):
            hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we]
            out[:, :, ph, pw] = window.max(axis=(2, 3)) if mode == "MAX" else window.sum(axis=(2, 3)) / pool_size
    return out


@pytest.mark.parametrize("mode", ["MAX", "AVE"])
@pytest.mark.parametrize("params", ["kernel_size: 3 stride: 2", "kernel_size: 3 stride: 2 pad: 1",
                                    "kernel_h: 4 kernel_w: 2 stride_h: 3 stride_w: 2 pad_h: 2 pad_w: 1",
                                    "kernel_size: 2 stride: 2 round_mode: FLOOR"])
def test_pooling_matches_caffe_loops(mode, params):
    g = lower(net(f'layer {{ name: "p" type: "Pooling" bottom: "data" top: "p" '
                  f'pooling_param {{ pool: {mode} {params} }} }}', (1, 3, 10, 11)))
    op = next(g.compute_ops())
    k, s, pads = op.attrs["kernel"], op.attrs["strides"], op.attrs["pads"]
    x, out = run(g)
    expect = naive_caffe_pool(x.astype(np.float64), mode, k, s, pads[:2], out["p"].shape[2:])
    np.testing.assert_allclose(out["p"], expect, rtol=1e-5, atol=1e-6)
    assert op.attrs["ceil_mode"] is ("FLOOR" not in params)


def test_pooling_with_an_empty_last_window_is_refused():
    # kernel < stride without padding: Caffe's ceil size leaves the last window outside the input
    error = error_of(net('layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                         'pooling_param { pool: MAX kernel_size: 1 stride: 2 } }', (1, 1, 8, 8)))
    assert "last window outside the input" in error.message and error.loc.name == "p"


def test_batchnorm_factor_zero_zeroes_the_statistics_and_nvcaffe_scale_bias():
    source = RandomWeights(2)
    g = lower(net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
                  'batch_norm_param { eps: 0.01 scale_bias: true } }'), source)
    mean, var, factor, gamma, beta = source.blobs_in_caffe_layout()["bn"]
    x, out = run(g)
    c = (1, -1, 1, 1)
    expect = (x - (mean / factor).reshape(c)) / np.sqrt((var / factor).reshape(c) + 0.01)
    np.testing.assert_allclose(out["bn"], expect * gamma.reshape(c) + beta.reshape(c), rtol=1e-5, atol=1e-6)

    class ZeroFactor(RandomWeights):
        def _blob(self, layer, index, shape, role):
            return np.zeros(shape, np.float32) if role == "factor" else super()._blob(layer, index, shape, role)
    g = lower(net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { eps: 0.25 } }'),
              ZeroFactor(2))
    x, out = run(g)
    np.testing.assert_allclose(out["bn"], x / np.sqrt(0.25), rtol=1e-6)  # mean = var = 0, as Caffe


def test_batchnorm_batch_statistics_are_refused():
    error = error_of(net('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
                         'batch_norm_param { use_global_stats: false } }'))
    assert "use_global_stats: false" in error.problems[0]


def test_enet_bn_forms():
    text = net('layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { bn_mode: INFERENCE } }')
    source = RandomWeights(4)
    g = lower(text, source)
    scale, shift = source.blobs_in_caffe_layout()["bn"]
    assert scale.shape == (1, 4, 1, 1) and [op.kind for op in g.compute_ops()] == ["scale"]
    x, out = run(g)
    np.testing.assert_allclose(out["bn"], x * scale + shift, rtol=1e-6)
    # training mode without stored statistics has no inference meaning
    error = error_of(net('layer { name: "bn" type: "BN" bottom: "data" top: "bn" }'))
    assert "bn_mode LEARN" in error.problems[0]


def test_dropout_scale_train_false_scales_at_test_time():
    g = lower(net('layer { name: "d" type: "Dropout" bottom: "data" top: "d" '
                  'dropout_param { dropout_ratio: 0.25 scale_train: false } }'))
    x, out = run(g)
    np.testing.assert_allclose(out["d"], x * 0.75, rtol=1e-6)
    g = lower(net('layer { name: "d" type: "Dropout" bottom: "data" top: "d" }'))
    assert [op.kind for op in g.compute_ops()] == ["dropout"]


@pytest.mark.parametrize("shape,dims,axis,num_axes,expected", [
    ((2, 3, 4, 5), [0, -1], 0, -1, (2, 60)),
    ((2, 3, 4, 5), [0, 0, -1], 0, -1, (2, 3, 20)),
    ((2, 3, 4, 5), [2, 2], 2, 1, (2, 3, 2, 2, 5)),  # reshape axis 2 only
    ((2, 3, 4, 5), [-1], 1, 2, (2, 12, 5)),
    ((2, 3, 4, 5), [1, 1], -1, 0, (2, 3, 4, 5, 1, 1)),  # insert axes at the end
    ((2, 8), [0, 2, -1], 0, -1, (2, 2, 4)),
])
def test_reshape_rules(shape, dims, axis, num_axes, expected):
    assert caffe_reshape(shape, dims, axis, num_axes) == expected


@pytest.mark.parametrize("dims,message", [([-1, -1], "more than one"), ([7], "cannot reshape"),
                                          ([0, 0, 0, 0, 0], "no axis 4")])
def test_reshape_errors(dims, message):
    with pytest.raises(ValueError, match=message):
        caffe_reshape((2, 3, 4, 5), dims, 0, -1)


def test_argmax_with_and_without_axis():
    g = lower(net('layer { name: "a" type: "ArgMax" bottom: "data" top: "a" argmax_param { axis: 1 } }'))
    x, out = run(g)
    np.testing.assert_array_equal(out["a"], x.argmax(axis=1)[:, None])
    g = lower(net('layer { name: "a" type: "ArgMax" bottom: "data" top: "a" }'))
    x, out = run(g)
    assert out["a"].shape == (1, 1, 1) and out["a"].item() == x.argmax()
    error = error_of(net('layer { name: "a" type: "ArgMax" bottom: "data" top: "a" argmax_param { top_k: 3 } }'))
    assert "top_k: 1" in error.problems[0]


def test_upsample_nearest():
    g = lower(net('layer { name: "u" type: "Upsample" bottom: "data" top: "u" upsample_param { scale: 2 } }'))
    x, out = run(g)
    np.testing.assert_array_equal(out["u"], x.repeat(2, axis=2).repeat(2, axis=3))


def naive_segnet_pool_unpool(x, k, s, out_hw):
    """Caffe SegNet: max pooling with a mask (first maximum), then scatter to the mask positions."""
    n, c, h, w = x.shape
    ho, wo = -(-(h - k) // s) + 1, -(-(w - k) // s) + 1
    pooled = np.zeros((n, c, ho, wo), x.dtype)
    mask = np.zeros((n, c, ho, wo), np.int64)
    for i in range(ho):
        for j in range(wo):
            for a in range(n):
                for b in range(c):
                    best, where = -np.inf, -1
                    for hh in range(i * s, min(i * s + k, h)):
                        for ww in range(j * s, min(j * s + k, w)):
                            if x[a, b, hh, ww] > best:
                                best, where = x[a, b, hh, ww], hh * w + ww
                    pooled[a, b, i, j], mask[a, b, i, j] = best, where
    up = np.zeros((n, c, out_hw[0] * out_hw[1]), x.dtype)
    for a in range(n):
        for b in range(c):
            up[a, b, mask[a, b].reshape(-1)] = pooled[a, b].reshape(-1)
    return pooled, up.reshape(n, c, *out_hw)


def test_segnet_pooling_mask_and_max_unpooling():
    g = lower(net('''layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "u" type: "Upsample" bottom: "p" bottom: "mask" top: "u" upsample_param { scale: 2 pad_out_h: true } }''',
                  (1, 3, 9, 10)))
    assert [op.kind for op in g.compute_ops()] == ["max_pool_index", "max_unpool"]
    x = np.random.default_rng(0).integers(0, 4, (1, 3, 9, 10)).astype(np.float32)  # ties: first max wins
    out = run_graph(g, {"data": x})
    _pooled, up = naive_segnet_pool_unpool(x, 2, 2, (9, 10))
    np.testing.assert_array_equal(out["u"], up)
    assert out["u"].shape == (1, 3, 9, 10)  # 5 * 2 - 1 rows (pad_out_h), 5 * 2 columns
    error = error_of(net('''layer { name: "u" type: "Upsample" bottom: "data" bottom: "data" top: "u" }'''))
    assert "not a pooling mask" in error.message


def test_scale_and_bias_with_a_second_bottom():
    text = net('''layer { name: "s" type: "Input" top: "s" input_param { shape { dim: 1 dim: 4 } } }
layer { name: "gap" type: "Pooling" bottom: "data" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "flat" type: "Flatten" bottom: "gap" top: "flat" }
layer { name: "sc" type: "Scale" bottom: "data" bottom: "flat" top: "sc" scale_param { axis: 0 } }
layer { name: "bi" type: "Bias" bottom: "sc" bottom: "s" top: "bi" bias_param { axis: 0 } }''')
    g = lower(text)
    x = np.random.default_rng(1).normal(size=(1, 4, 9, 11)).astype(np.float32)
    s = np.random.default_rng(2).normal(size=(1, 4)).astype(np.float32)
    out = run_graph(g, {"data": x, "s": s})["bi"]
    gap = x.mean(axis=(2, 3))
    np.testing.assert_allclose(out, x * gap[:, :, None, None] + s[:, :, None, None], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- unsupported layers

def test_all_unsupported_layers_are_listed_before_converting():
    text = net('''layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "m" layer: "L" } }
layer { name: "broken" type: "Convolution" bottom: "nowhere" top: "broken" convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "broken" bottom: "label" top: "loss" }
layer { name: "st" type: "Pooling" bottom: "data" top: "st" pooling_param { pool: STOCHASTIC kernel_size: 2 } }''')
    error = error_of(text)
    assert error.message == "3 layer(s) of the net cannot be imported"
    assert error.problems == [
        ("net.prototxt:3:1: 'py': Python: python_param m.L: arbitrary Python code, which no TIDL layer or host "
         "runtime runs (replace it in the deploy prototxt with the Caffe layers it computes; a dropout-like "
         "layer named *dropout* is taken as the identity)"),
        "net.prototxt:5:1: 'loss': unsupported layer type 'SoftmaxWithLoss'",
        "net.prototxt:6:1: 'st': Pooling: STOCHASTIC pooling is not supported",
    ]
    assert "docs/frontends/caffe.md" in error.hint


def test_a_python_dropout_layer_is_dropout_with_one_warning():
    """ENet's deploy file writes SpatialDropout as 27 Python layers (phase TEST): dropout, the
    identity at inference, and one warning for all of them; asked to train, it stays an error."""
    layer = ('layer {{ name: "{n}" type: "Python" bottom: "{b}" top: "{n}" python_param {{ module: '
             '"spatial_dropout" layer: "SpatialDropoutLayer" param_str: "{{\'phase\': \'{phase}\', '
             '\'p\': \'0.01\'}}" }} }}')
    text = net("\n".join([layer.format(n="d1", b="data", phase="TEST"), layer.format(n="d2", b="d1", phase="TEST")]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        g = lower(text)
    said = [str(w.message) for w in caught if w.category is TidlcWarning]
    assert said == [("Python layer spatial_dropout.SpatialDropoutLayer taken as dropout, the identity at inference "
                     "(its name says so; tidlc runs no Python layer code)")]
    drops = [op for op in g.ops if op.kind == "dropout"]
    assert [op.attrs["ratio"] for op in drops] == [0.01, 0.01]
    x, out = run(g)
    np.testing.assert_array_equal(out["d2"], x)
    error = error_of(net(layer.format(n="d1", b="data", phase="TRAIN")))
    assert "arbitrary Python code" in error.problems[0]


# ----------------------------------------------------------------------------- inputs

def test_data_layers_as_inputs():
    text = '''name: "d"
layer { name: "dummy" type: "DummyData" top: "x" top: "label" dummy_data_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "img" type: "ImageData" top: "y" top: "ylabel" image_data_param { new_height: 10 new_width: 12 batch_size: 1 } }
layer { name: "add" type: "Pooling" bottom: "x" top: "p" pooling_param { pool: MAX global_pooling: true } }
layer { name: "q" type: "Pooling" bottom: "y" top: "q" pooling_param { pool: MAX global_pooling: true } }'''
    g = lower(text)
    assert [(op.attrs["name"], op.results[0].type.shape) for op in g.input_ops] == [
        ("x", (2, 3, 8, 8)), ("y", (1, 3, 10, 12))]


def test_inputs_without_shape_need_input_shape_all_listed():
    text = '''name: "d"
layer { name: "lmdb" type: "Data" top: "data" top: "label" data_param { batch_size: 4 } }
layer { name: "h5" type: "HDF5Data" top: "other" }
layer { name: "c" type: "Concat" bottom: "data" bottom: "other" top: "c" }'''
    error = error_of(text)
    assert error.message == "input shape(s) unknown" and "--input-shape" in error.hint
    assert [p.split(": ", 1)[1] for p in error.problems] == [
        "input 'data' has no shape in the prototxt", "input 'other' has no shape in the prototxt"]
    g = lower(text, shapes={"data": (1, 3, 4, 4), "other": (1, 2, 4, 4)})
    assert g.outputs[0].type.shape == (1, 5, 4, 4)
    error = error_of(text, shapes={"data": (1, 3, 4, 4), "other": (1, 2, 4, 4), "typo": (1,)})
    assert "unknown input(s) typo" in error.message


def test_input_shape_override_changes_weight_shapes():
    text = net('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }')
    source = RandomWeights(0)
    g = lower(text, source, shapes={"data": (2, 4, 3, 3)})
    assert g.outputs[0].type.shape == (2, 3)
    assert source.blobs_in_caffe_layout()["fc"][0].shape == (3, 36)
    error = error_of(text, shapes={"data": (1, 4, 3)})
    assert "rank 3" in error.message


# ----------------------------------------------------------------------------- weights

CONV_NET = net('''layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 3 bias_term: false } }''')


def _model(tmp_path, writer, layers):
    return read_caffemodel(writer.write_caffemodel(tmp_path / "w.caffemodel", layers))


def test_weights_are_matched_by_name_and_training_layers_ignored(tmp_path, caffemodel_writer):
    rng = np.random.default_rng(0)
    conv_w, conv_b = rng.normal(size=(2, 4, 3, 3)), rng.normal(size=2)
    fc_w = rng.normal(size=(1, 1, 3, 126))  # legacy 4-D shape
    weights = _model(tmp_path, caffemodel_writer, {
        "fc": ("InnerProduct", [fc_w]), "conv": ("Convolution", [conv_w, conv_b]),
        "prelu": ("PReLU", [np.full(2, 0.25)]), "loss": ("SoftmaxWithLoss", []),
        "train_only": ("Convolution", [np.ones((1, 1, 1, 1))])})
    g = lower(CONV_NET, FileWeights(weights))
    dense = next(op for op in g.ops if op.kind == "dense")
    np.testing.assert_array_equal(dense.operands[1].producer.data, fc_w.reshape(3, 126).astype(np.float32))


def test_weight_problems_are_reported_together(tmp_path, caffemodel_writer):
    weights = _model(tmp_path, caffemodel_writer, {
        "conv": ("Convolution", [np.zeros((2, 4, 3, 3))]),  # bias missing
        "prelu": ("PReLU", [np.zeros(2), np.zeros(2)]),  # one blob too many
        "fc": ("InnerProduct", [np.zeros((3, 125))])})  # wrong size
    error = error_of(CONV_NET, weights=FileWeights(weights))
    assert error.message == "3 problem(s) with the weights"
    assert error.problems == [
        ("net.prototxt:3:1: 'conv': w.caffemodel has 1 blob(s) for this Convolution layer, "
        "blob 1 (bias, shape [2]) is needed"),
        "net.prototxt:5:1: 'fc': blob 0 (weight) in w.caffemodel has shape [3, 125], the prototxt implies [3, 126]",
        "net.prototxt:4:1: 'prelu': w.caffemodel has 2 blob(s) for this PReLU layer, the prototxt uses 1",
    ]


def test_layer_missing_from_the_caffemodel(tmp_path, caffemodel_writer):
    weights = _model(tmp_path, caffemodel_writer, {"conv": ("Convolution", [np.zeros((2, 4, 3, 3)), np.zeros(2)])})
    error = error_of(CONV_NET, weights=FileWeights(weights))
    assert [p.split(": ", 1)[1] for p in error.problems] == [
        "'prelu': w.caffemodel has no weights for this PReLU layer",
        "'fc': w.caffemodel has no weights for this InnerProduct layer"]
    # --random-weights fills what the file lacks, with a warning
    source = FileWeights(weights, RandomWeights(1))
    lower(CONV_NET, source)
    assert source.filled == ["prelu", "fc"]


def test_random_weights_are_seeded_per_layer_and_blob():
    fc = 'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 3 } }\n'
    before = 'layer { name: "pr" type: "PReLU" bottom: "data" top: "pr" }\n'
    a, b, c = RandomWeights(5), RandomWeights(5), RandomWeights(6)
    lower(net(before + fc), a)
    lower(net(fc), b)
    lower(net(fc), c)
    for i in (0, 1):  # the same layer gets the same blobs, whatever was converted before it
        np.testing.assert_array_equal(a.used["fc"][i], b.used["fc"][i])
    assert not np.array_equal(a.used["fc"][0], c.used["fc"][0])
    assert np.all((a.used["pr"][0] >= 0) & (a.used["pr"][0] <= 0.3))


def test_structure_only_mode(tmp_path):
    path = tmp_path / "n.prototxt"
    path.write_text(CONV_NET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load_caffe(str(path), CompileOptions())
    assert [str(w.message) for w in caught if w.category is TidlcWarning] == [
        (f"{path}: no weights (no --weights and no n.caffemodel beside it): structure only, "
        "every weight is zero")]
    assert g.attrs["missing_weights"] is True
    consts = [op.data for op in g.ops if op.kind == "const"]
    assert all(c.size == 1 or all(s == 0 for s in c.strides) for c in consts)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TidlcWarning)
        g = load_caffe(str(path), CompileOptions.of(random_weights=3))
    assert "missing_weights" not in g.attrs and g.attrs["random_weights"] == 3


def test_weights_found_beside_the_prototxt_or_given(tmp_path, caffemodel_writer):
    path = tmp_path / "n.prototxt"
    path.write_text(net('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
                        'inner_product_param { num_output: 2 bias_term: false } }', (1, 3)))
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    caffemodel_writer.write_caffemodel(tmp_path / "n.caffemodel", {"fc": ("InnerProduct", [w])})
    with warnings.catch_warnings():
        warnings.simplefilter("error", TidlcWarning)
        g = load_caffe(str(path), CompileOptions())
    out = run_graph(g, {"data": np.ones((1, 3), np.float32)})["fc"]
    np.testing.assert_array_equal(out, [[3, 12]])
    caffemodel_writer.write_caffemodel(tmp_path / "other.caffemodel", {"fc": ("InnerProduct", [w * 2])})
    g = load_caffe(str(path), CompileOptions.of(weights=str(tmp_path / "other.caffemodel")))
    np.testing.assert_array_equal(run_graph(g, {"data": np.ones((1, 3), np.float32)})["fc"], [[6, 24]])
    with pytest.raises(TidlcError, match="weights file not found"):
        load_caffe(str(path), CompileOptions.of(weights=str(tmp_path / "nope.caffemodel")))


def test_zero_weights_source_makes_splats():
    source = ZeroWeights()
    lower(CONV_NET, source)
    assert all(all(s == 0 for s in b.strides) for blobs in source.used.values() for b in blobs.values()
               if b.size > 1)


# ----------------------------------------------------------------------------- detection reference

def test_nms_and_iou():
    from tidlc.ir.ops.detection import iou, nms
    boxes = np.array([[0, 0, 1, 1], [0, 0, 1, 0.9], [0.5, 0.5, 1.5, 1.5], [2, 2, 3, 3]], float)
    np.testing.assert_allclose(iou(boxes[0], boxes), [1, 0.9, 0.25 / 1.75, 0])
    scores = np.array([0.9, 0.95, 0.8, 0.1])
    assert nms(boxes, scores, 0.05, 0.5) == [1, 2, 3]
    assert nms(boxes, scores, 0.5, 0.5) == [1, 2]  # threshold is strict: scores > 0.5
    assert nms(boxes, scores, 0.0, 0.5, top_k=2) == [1]  # top_k candidates, then NMS
    assert nms(boxes, scores, 0.0, 0.95) == [1, 0, 2, 3]


@pytest.mark.parametrize("code_type", ["corner", "center_size", "corner_size"])
def test_decode_boxes(code_type):
    from tidlc.ir.ops.detection import decode_boxes
    prior = np.array([[0.2, 0.3, 0.6, 0.5]])
    var = np.array([[0.1, 0.1, 0.2, 0.2]])
    loc = np.array([[1.0, -1.0, 0.5, 2.0]])
    d = loc * var
    pw, ph = 0.4, 0.2
    expect = {
        "corner": prior + d,
        "corner_size": prior + d * [pw, ph, pw, ph],
        "center_size": [[0.4 + d[0, 0] * pw - np.exp(d[0, 2]) * pw / 2, 0.4 + d[0, 1] * ph - np.exp(d[0, 3]) * ph / 2,
                         0.4 + d[0, 0] * pw + np.exp(d[0, 2]) * pw / 2, 0.4 + d[0, 1] * ph + np.exp(d[0, 3]) * ph / 2]],
    }[code_type]
    np.testing.assert_allclose(decode_boxes(loc, prior, var, code_type), expect, rtol=1e-12)
    np.testing.assert_allclose(decode_boxes(d, prior, None, code_type), expect, rtol=1e-12)


def test_docs_list_every_supported_layer_type():
    from tidlc.frontends.caffe.registry import CONVERTERS
    doc = Path(__file__).resolve().parents[3] / "docs" / "frontends" / "caffe.md"
    rows = [line.split("|")[1] for line in doc.read_text().splitlines() if line.startswith("| ")]
    documented = {name.strip() for row in rows for name in row.replace("(SSD)", "").split(",")}
    documented = {name.split(" ")[0] for name in documented}
    assert set(CONVERTERS.names()) - documented == set()


def test_fork_activations_and_shuffle_channel():
    g = lower(net('''layer { name: "r6" type: "ReLU6" bottom: "data" top: "r6" }
layer { name: "cl" type: "Clip" bottom: "data" top: "cl" clip_param { min: -0.5 max: 0.25 } }
layer { name: "sh" type: "ShuffleChannel" bottom: "data" top: "sh" shuffle_channel_param { group: 2 } }''',
                  (1, 4, 3, 3)))
    x = np.random.default_rng(0).uniform(-8, 8, (1, 4, 3, 3)).astype(np.float32)
    out = run_graph(g, {"data": x})
    np.testing.assert_array_equal(out["r6"], np.clip(x, 0, 6))
    np.testing.assert_array_equal(out["cl"], np.clip(x, -0.5, 0.25))
    # ShuffleNet: (N, g, C/g, H, W) -> (N, C/g, g, H, W)
    np.testing.assert_array_equal(out["sh"], x.reshape(1, 2, 2, 3, 3).swapaxes(1, 2).reshape(1, 4, 3, 3))


def test_enet_bn_with_stored_statistics(tmp_path, caffemodel_writer):
    rng = np.random.default_rng(3)
    scale, shift, mean = (rng.normal(size=(1, 4, 1, 1)).astype(np.float32) for _ in range(3))
    var = rng.uniform(0.5, 2, (1, 4, 1, 1)).astype(np.float32)
    weights = _model(tmp_path, caffemodel_writer, {"bn": ("BN", [scale, shift, mean, var])})
    g = lower(net('layer { name: "bn" type: "BN" bottom: "data" top: "bn" bn_param { eps: 0.01 } }'),
              FileWeights(weights))
    x, out = run(g)
    np.testing.assert_allclose(out["bn"], (x - mean) / np.sqrt(var + 0.01) * scale + shift,
                               rtol=1e-5, atol=1e-6)
