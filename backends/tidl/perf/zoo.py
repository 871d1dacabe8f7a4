"""Reference architectures built with the IR Builder, for validating the perf model.

Structure only: every weight is a zero splat (a zero-stride array, no memory),
so the nets cost nothing to build and are estimated exactly like an imported
model. Each builder mirrors a public definition layer by layer, *before*
TIDL's fusions (conv without bias, batchnorm, activation as separate ops);
:func:`build` runs the ``-O2`` pipeline like ``tidlc compile`` does.

============================  ======================================================
builder                       definition mirrored
============================  ======================================================
``mobilenet_v1``              keras.applications.MobileNet (alpha 1.0, 224)
``mobilenet_v2``              keras.applications.MobileNetV2 (alpha 1.4, 224)
``resnet50`` / ``resnet18``   torchvision.models.resnet50 / resnet18 (224)
``yolox_nano_lite``           TI edgeai-yolox YOLOX-nano-ti-lite (416): CSPDarknet
                              0.33/0.25, regular convs, ReLU, conv stem, 3x3 pools
``yolox_s_lite``              TI edgeai-yolox YOLOX-s-ti-lite (640), depth 0.33 width 0.5
``deeplabv3plus_lite``        TI edgeai-torchvision deeplabv3plus_mobilenetv2_tv_edgeailite
                              (512): MobileNetV2 OS16, DW-ASPP-lite, stride-4 shortcut
============================  ======================================================
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tidlc.ir.builder import Builder
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import TensorType


class Net:
    """A thin layer-level helper over the IR Builder (NCHW, f32, splat weights)."""

    def __init__(self, name: str, shape: tuple[int, ...]):
        self.b = Builder(Graph(name))
        self.input = self.b.input("input", TensorType(shape, "f32", "NCHW"))
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def const(self, shape, value: float = 0.0, name: str = "") -> Value:
        return self.b.const(np.broadcast_to(np.float32(value), tuple(shape)), name)

    def conv(self, x: Value, cout: int, k: int | tuple = 1, stride: int = 1, pads=None, groups: int = 1,
             dilation: int = 1, bias: bool = False, bn: bool = True, act: str | None = "relu",
             name: str = "") -> Value:
        kh, kw = (k, k) if isinstance(k, int) else k
        cin = x.shape[1]
        if pads is None:  # PyTorch-style symmetric "same" padding
            ph, pw = dilation * (kh - 1) // 2, dilation * (kw - 1) // 2
            pads = (ph, pw, ph, pw)
        name = name or self._name("conv")
        operands = [x, self.const((cout, cin // groups, kh, kw), 0.01, f"{name}.w")]
        if bias:
            operands.append(self.const((cout,), 0.0, f"{name}.b"))
        y = self.b.op("conv2d", operands, name=name, strides=(stride, stride), pads=pads,
                      dilations=(dilation, dilation), groups=groups)
        if bn:
            y = self.batchnorm(y, name + "_bn")
        return self.act(y, act, name + "_act")

    def batchnorm(self, x: Value, name: str) -> Value:
        c = x.shape[1]
        return self.b.op("batchnorm", [x, self.const((c,), 1.0, f"{name}.gamma"), self.const((c,), 0.0, f"{name}.beta"),
                                       self.const((c,), 0.0, f"{name}.mean"), self.const((c,), 1.0, f"{name}.var")],
                         name=name, epsilon=1e-3)

    def act(self, x: Value, act: str | None, name: str = "") -> Value:
        if not act:
            return x
        return self.b.op(act, [x], name=name or self._name(act))

    def dense(self, x: Value, m: int, name: str = "") -> Value:
        name = name or self._name("fc")
        k = x.shape[-1]
        return self.b.op("dense", [x, self.const((m, k), 0.01, f"{name}.w"), self.const((m,), 0.0, f"{name}.b")],
                         name=name)

    def op(self, kind: str, operands, **attrs) -> Value:
        return self.b.op(kind, list(operands), name=attrs.pop("name", "") or self._name(kind), **attrs)

    def pool(self, x: Value, mode: str, k: int, stride: int, pad: int = 0) -> Value:
        return self.op("pool2d", [x], mode=mode, kernel=(k, k), strides=(stride, stride), pads=(pad,) * 4)

    def finish(self, *outputs: Value) -> Graph:
        for i, v in enumerate(outputs):
            self.b.output(v, f"output{i}" if len(outputs) > 1 else "output")
        return self.b.graph


def _same_pads(size: int, k: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) for one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2


def _make_divisible(v: float, divisor: int = 8) -> int:
    """keras.applications' channel rounding."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


# ---------------------------------------------------------------------------- Keras MobileNets
def mobilenet_v1(alpha: float = 1.0, size: int = 224, classes: int = 1000) -> Graph:
    """keras.applications.MobileNet: conv 3x3/2 then 13 depthwise-separable blocks."""
    net = Net("mobilenet_v1", (1, 3, size, size))
    filters = int(32 * alpha)
    t, b = _same_pads(size, 3, 2)
    x = net.conv(net.input, filters, 3, 2, pads=(t, t, b, b), act="relu6", name="conv1")
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
              (512, 1), (512, 1), (1024, 2), (1024, 1)]
    for i, (pw, stride) in enumerate(blocks, 1):
        c = x.shape[1]
        pads = (1, 1, 1, 1) if stride == 1 else (0, 0, 1, 1)  # ZeroPadding2D(((0, 1), (0, 1))) + valid
        x = net.conv(x, c, 3, stride, pads=pads, groups=c, act="relu6", name=f"conv_dw_{i}")
        x = net.conv(x, int(pw * alpha), 1, act="relu6", name=f"conv_pw_{i}")
    x = net.op("global_pool", [x], mode="avg", name="global_average_pooling2d")
    x = net.op("dropout", [x], ratio=1e-3, name="dropout")
    x = net.conv(x, classes, 1, bias=True, bn=False, act=None, name="conv_preds")
    x = net.op("reshape", [x], shape=(1, classes), name="reshape_2")
    return net.finish(net.op("softmax", [x], axis=-1, name="predictions"))


def mobilenet_v2(alpha: float = 1.4, size: int = 224, classes: int = 1000) -> Graph:
    """keras.applications.MobileNetV2: inverted residual blocks (expansion 6)."""
    net = Net(f"mobilenet_v2_{alpha:g}", (1, 3, size, size))
    t, b = _same_pads(size, 3, 2)
    x = net.conv(net.input, _make_divisible(32 * alpha, 8), 3, 2, pads=(t, t, b, b), act="relu6", name="Conv1")
    settings = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6),
                (64, 1, 6), (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6),
                (160, 1, 6), (160, 1, 6), (320, 1, 6)]
    for block_id, (filters, stride, expansion) in enumerate(settings):
        cin = x.shape[1]
        out = _make_divisible(int(filters * alpha), 8)
        prefix = f"block_{block_id}_"
        y = x
        if block_id:
            y = net.conv(y, expansion * cin, 1, act="relu6", name=prefix + "expand")
        c = y.shape[1]
        pads = (1, 1, 1, 1) if stride == 1 else (0, 0, 1, 1)  # imagenet_utils.correct_pad for even sizes
        y = net.conv(y, c, 3, stride, pads=pads, groups=c, act="relu6", name=prefix + "depthwise")
        y = net.conv(y, out, 1, act=None, name=prefix + "project")
        if cin == out and stride == 1:
            y = net.op("add", [x, y], name=prefix + "add")
        x = y
    last = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = net.conv(x, last, 1, act="relu6", name="Conv_1")
    x = net.op("global_pool", [x], mode="avg", name="global_average_pooling2d")
    x = net.op("flatten", [x], axis=1, name="flatten")
    x = net.dense(x, classes, name="predictions")
    return net.finish(net.op("softmax", [x], axis=-1, name="predictions_softmax"))


# ---------------------------------------------------------------------------- torchvision ResNets
def _resnet(name: str, block: str, layers: list[int], size: int = 224, classes: int = 1000) -> Graph:
    net = Net(name, (1, 3, size, size))
    x = net.conv(net.input, 64, 7, 2, name="conv1")
    x = net.pool(x, "max", 3, 2, 1)
    cin = 64
    for stage, (width, blocks) in enumerate(zip((64, 128, 256, 512), layers), 1):
        for i in range(blocks):
            stride = 2 if (i == 0 and stage > 1) else 1
            prefix = f"layer{stage}.{i}."
            if block == "basic":
                out = width
                y = net.conv(x, width, 3, stride, name=prefix + "conv1")
                y = net.conv(y, width, 3, act=None, name=prefix + "conv2")
            else:
                out = width * 4
                y = net.conv(x, width, 1, name=prefix + "conv1")
                y = net.conv(y, width, 3, stride, name=prefix + "conv2")  # v1.5: stride on the 3x3
                y = net.conv(y, out, 1, act=None, name=prefix + "conv3")
            shortcut = x
            if stride != 1 or cin != out:
                shortcut = net.conv(x, out, 1, stride, act=None, name=prefix + "downsample")
            x = net.act(net.op("add", [y, shortcut], name=prefix + "add"), "relu", prefix + "relu")
            cin = out
    x = net.op("global_pool", [x], mode="avg", name="avgpool")
    x = net.op("flatten", [x], axis=1, name="flatten")
    return net.finish(net.dense(x, classes, name="fc"))


def resnet50(size: int = 224) -> Graph:
    return _resnet("resnet50", "bottleneck", [3, 4, 6, 3], size)


def resnet18(size: int = 224) -> Graph:
    return _resnet("resnet18", "basic", [2, 2, 2, 2], size)


# ---------------------------------------------------------------------------- YOLOX-ti-lite
def _csp(net: Net, x: Value, cout: int, n: int, shortcut: bool, prefix: str) -> Value:
    """CSPLayer (YOLOv5 C3): two 1x1 branches, n bottlenecks on one, concat, 1x1."""
    hidden = int(cout * 0.5)
    x1 = net.conv(x, hidden, 1, name=prefix + "conv1")
    x2 = net.conv(x, hidden, 1, name=prefix + "conv2")
    for i in range(n):
        y = net.conv(x1, hidden, 1, name=f"{prefix}m{i}.conv1")
        y = net.conv(y, hidden, 3, name=f"{prefix}m{i}.conv2")
        x1 = net.op("add", [y, x1], name=f"{prefix}m{i}.add") if shortcut else y
    return net.conv(net.op("concat", [x1, x2], axis=1, name=prefix + "cat"), cout, 1, name=prefix + "conv3")


def _spp_lite(net: Net, x: Value, cout: int, prefix: str) -> Value:
    """SPPBottleneck with 5/9/13 max pools split into 2/4/6 cascaded 3x3 pools (ti-lite)."""
    hidden = x.shape[1] // 2
    x = net.conv(x, hidden, 1, name=prefix + "conv1")
    branches = [x]
    for k in (5, 9, 13):
        y = x
        for _ in range((k - 1) // 2):
            y = net.pool(y, "max", 3, 1, 1)
        branches.append(y)
    return net.conv(net.op("concat", branches, axis=1, name=prefix + "cat"), cout, 1, name=prefix + "conv2")


def _yolox(name: str, depth: float, width: float, size: int, classes: int = 80) -> Graph:
    net = Net(name, (1, 3, size, size))
    base = int(width * 64)
    n = max(round(depth * 3), 1)
    # backbone (CSPDarknet, conv_focus=True: the Focus slices become two convs)
    x = net.conv(net.input, 12, 3, 2, name="stem.0")
    x = net.conv(x, base, 3, 1, name="stem.1")
    x = net.conv(x, base * 2, 3, 2, name="dark2.0")
    x = _csp(net, x, base * 2, n, True, "dark2.1.")
    x = net.conv(x, base * 4, 3, 2, name="dark3.0")
    dark3 = _csp(net, x, base * 4, n * 3, True, "dark3.1.")
    x = net.conv(dark3, base * 8, 3, 2, name="dark4.0")
    dark4 = _csp(net, x, base * 8, n * 3, True, "dark4.1.")
    x = net.conv(dark4, base * 16, 3, 2, name="dark5.0")
    x = _spp_lite(net, x, base * 16, "dark5.1.")
    dark5 = _csp(net, x, base * 16, n, False, "dark5.2.")
    # PAFPN
    c0, c1, c2 = (int(c * width) for c in (256, 512, 1024))

    def up(v: Value, label: str) -> Value:
        return net.op("resize", [v], scales=(1.0, 1.0, 2.0, 2.0), mode="nearest", name=label)

    fpn_out0 = net.conv(dark5, c1, 1, name="lateral_conv0")
    f_out0 = net.op("concat", [up(fpn_out0, "up0"), dark4], axis=1, name="cat_p4")
    f_out0 = _csp(net, f_out0, c1, n, False, "C3_p4.")
    fpn_out1 = net.conv(f_out0, c0, 1, name="reduce_conv1")
    f_out1 = net.op("concat", [up(fpn_out1, "up1"), dark3], axis=1, name="cat_p3")
    pan_out2 = _csp(net, f_out1, c0, n, False, "C3_p3.")
    p_out1 = net.conv(pan_out2, c0, 3, 2, name="bu_conv2")
    pan_out1 = _csp(net, net.op("concat", [p_out1, fpn_out1], axis=1, name="cat_n3"), c1, n, False, "C3_n3.")
    p_out0 = net.conv(pan_out1, c1, 3, 2, name="bu_conv1")
    pan_out0 = _csp(net, net.op("concat", [p_out0, fpn_out0], axis=1, name="cat_n4"), c2, n, False, "C3_n4.")
    # decoupled head
    feat = int(256 * width)
    outputs = []
    for level, v in enumerate((pan_out2, pan_out1, pan_out0)):
        prefix = f"head{level}."
        stem = net.conv(v, feat, 1, name=prefix + "stem")
        cls = net.conv(net.conv(stem, feat, 3, name=prefix + "cls0"), feat, 3, name=prefix + "cls1")
        reg = net.conv(net.conv(stem, feat, 3, name=prefix + "reg0"), feat, 3, name=prefix + "reg1")
        cls = net.conv(cls, classes, 1, bias=True, bn=False, act="sigmoid", name=prefix + "cls_pred")
        box = net.conv(reg, 4, 1, bias=True, bn=False, act=None, name=prefix + "reg_pred")
        obj = net.conv(reg, 1, 1, bias=True, bn=False, act="sigmoid", name=prefix + "obj_pred")
        outputs.append(net.op("concat", [box, obj, cls], axis=1, name=prefix + "out"))
    return net.finish(*outputs)


def yolox_nano_lite(size: int = 416) -> Graph:
    return _yolox("yolox_nano_lite", 0.33, 0.25, size)


def yolox_s_lite(size: int = 640) -> Graph:
    return _yolox("yolox_s_lite", 0.33, 0.50, size)


# ---------------------------------------------------------------------------- DeepLabV3+ lite
def _torchvision_mobilenet_v2_features(net: Net, x: Value, strides=(2, 2, 2, 2, 1)) -> tuple[Value, Value]:
    """torchvision MobileNetV2 (1.0) features up to the 320-channel block; returns (stride-4, last).

    ``strides`` are the strides of the five down-sampling points (TI's MI4
    encoders set the last one to 1 for output stride 16).
    """
    x = net.conv(x, 32, 3, strides[0], act="relu6", name="features.0")
    settings = [(1, 16, 1, 1), (6, 24, 2, strides[1]), (6, 32, 3, strides[2]), (6, 64, 4, strides[3]),
                (6, 96, 3, 1), (6, 160, 3, strides[4]), (6, 320, 1, 1)]
    shortcut = None
    index = 1
    for t, c, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            cin = x.shape[1]
            prefix = f"features.{index}."
            y = x
            if t != 1:
                y = net.conv(y, cin * t, 1, act="relu6", name=prefix + "expand")
            hidden = y.shape[1]
            y = net.conv(y, hidden, 3, stride, groups=hidden, act="relu6", name=prefix + "dw")
            y = net.conv(y, c, 1, act=None, name=prefix + "project")
            if stride == 1 and cin == c:
                y = net.op("add", [x, y], name=prefix + "add")
            x = y
            index += 1
        if c == 24:
            shortcut = x
    return shortcut, x


def deeplabv3plus_lite(size: int = 512, classes: int = 32) -> Graph:
    """TI DeepLabV3PlusEdgeAILite on MobileNetV2 (ReLU, no dilation in the encoder)."""
    net = Net("deeplabv3plus_mobilenetv2_lite", (1, 3, size, size))
    short, feat = _torchvision_mobilenet_v2_features(net, net.input)
    aspp, decoder = 256, 256
    branches = [net.conv(feat, aspp, 1, name="aspp.conv1x1")]
    for i, d in enumerate((6, 12, 18), 1):
        c = feat.shape[1]
        y = net.conv(feat, c, 3, groups=c, dilation=d, name=f"aspp.bra{i}.dw")
        branches.append(net.conv(y, aspp, 1, name=f"aspp.bra{i}.pw"))
    x = net.op("concat", branches, axis=1, name="aspp.cat")
    x = net.conv(x, decoder, 1, name="aspp.out")
    x = net.op("resize", [x], scales=(1.0, 1.0, 4.0, 4.0), mode="linear", coord_mode="half_pixel", name="upsample1")
    s = net.conv(short, 48, 1, name="shortcut")
    x = net.op("concat", [x, s], axis=1, name="cat")
    c = x.shape[1]
    x = net.conv(x, c, 3, groups=c, name="pred.dw")
    x = net.conv(x, classes, 1, act=None, name="pred.pw")
    x = net.op("resize", [x], scales=(1.0, 1.0, 4.0, 4.0), mode="linear", coord_mode="half_pixel", name="upsample2")
    return net.finish(net.op("argmax", [x], axis=1, keepdims=True, name="argmax"))


ZOO: dict[str, Callable[[], Graph]] = {
    "mobilenet_v1": mobilenet_v1,
    "mobilenet_v2_1.4": mobilenet_v2,
    "resnet18": resnet18,
    "resnet50": resnet50,
    "yolox_nano_lite_416": yolox_nano_lite,
    "deeplabv3plus_mnv2_lite_512": deeplabv3plus_lite,
    "yolox_s_lite_640": yolox_s_lite,
}


def build(name: str, opt_level: int = 2) -> Graph:
    """A zoo network after the compile pipeline (``-O2`` fuses batchnorm and activations)."""
    from tidlc.compiler import optimize
    from tidlc.config import CompileOptions
    graph = ZOO[name]()
    optimize(graph, CompileOptions.of(opt_level=opt_level))
    return graph


def total_macs(graph: Graph) -> int:
    return sum(int(op.opdef.macs(op) or 0) for op in graph.compute_ops())


def parameter_count(graph: Graph) -> int:
    """Constant elements (weights, biases, batchnorm statistics), as Keras counts parameters."""
    return sum(int(np.prod(op.results[0].type.shape)) for op in graph.ops if op.kind == "const")
