"""Converters for element-wise ops: activations, unary math, (variadic) arithmetic, Cast, Where."""
from __future__ import annotations

import numpy as np

from tidlc.ir.types import numpy_dtype

from .context import ONNX_DTYPE_NAMES, ONNX_DTYPES, Node
from .convert_nn import scalar
from .registry import converter

# ----------------------------------------------------------------------------- activations
_SIMPLE_ACTS = {"Relu": ("relu", 1), "Sigmoid": ("sigmoid", 1), "Tanh": ("tanh", 1),
                "HardSwish": ("hardswish", 14)}


def _simple(kind: str):
    def convert(node: Node) -> None:
        node.bind(node.op(kind, [node.input(0)]))
    return convert


for _onnx, (_kind, _since) in _SIMPLE_ACTS.items():
    converter(_onnx, since=_since)(_simple(_kind))


@converter("LeakyRelu", since=1)
def leaky_relu(node: Node) -> None:
    node.bind(node.op("leaky_relu", [node.input(0)], alpha=node.attr_float("alpha", 0.01)))


@converter("Elu", since=1)
def elu(node: Node) -> None:
    node.bind(node.op("elu", [node.input(0)], alpha=node.attr_float("alpha", 1.0)))


@converter("Selu", since=1)
def selu(node: Node) -> None:
    x = node.input(0)
    y = node.op("elu", [x], alpha=node.attr_float("alpha", 1.6732632423543772848170429916717))
    node.bind(node.op("mul", [y, scalar(node, node.attr_float("gamma", 1.0507009873554804934193349852946),
                                        x, "gamma")]))


@converter("HardSigmoid", since=1)
def hard_sigmoid(node: Node) -> None:
    node.bind(node.op("hardsigmoid", [node.input(0)], alpha=node.attr_float("alpha", 0.2),
                      beta=node.attr_float("beta", 0.5)))


def _check_gelu(node: Node) -> str | None:
    approx = node.attr_str("approximate", "none")
    return None if approx in ("none", "tanh") else f"approximate='{approx}' is not one of none, tanh"


@converter("Gelu", since=20, check=_check_gelu)
def gelu(node: Node) -> None:
    x = node.input(0)
    if node.attr_str("approximate", "none") == "none":
        node.bind(node.op("gelu", [x]))
        return
    # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    cube = node.op("mul", [node.op("mul", [x, x]), x])
    inner = node.op("add", [x, node.op("mul", [cube, scalar(node, 0.044715, x, "c")])])
    t = node.op("tanh", [node.op("mul", [inner, scalar(node, np.sqrt(2.0 / np.pi), x, "k")])])
    half_x = node.op("mul", [x, scalar(node, 0.5, x, "half")])
    node.bind(node.op("mul", [half_x, node.op("add", [t, scalar(node, 1.0, x, "one")])]))


@converter("Softsign", since=1)
def softsign(node: Node) -> None:
    x = node.input(0)
    node.bind(node.op("div", [x, node.op("add", [node.op("abs", [x]), scalar(node, 1.0, x, "one")])]))


@converter("Mish", since=18)
def mish(node: Node) -> None:
    x = node.input(0)  # x * tanh(softplus(x)): YOLOv4's activation, as PyTorch's dynamo exporter writes nn.Mish
    node.bind(node.op("mul", [x, node.op("tanh", [node.op("softplus", [x])])]))


@converter("PRelu", since=1)
def prelu(node: Node) -> None:
    # ONNX broadcasts the slope numpy-style (trailing axes); the IR reads a 1-D slope of C
    # values as per channel. One value per channel becomes that 1-D form; a 1-D slope that
    # means the last axis gets its full-rank shape.
    x, slope = node.input(0), node.input(1)
    rank, srank = x.type.rank, slope.type.rank
    if rank is not None and srank is not None and rank > 2 and srank <= rank and slope.type.is_static:
        full = (1,) * (rank - srank) + tuple(slope.shape)
        size = int(np.prod(full))
        data = slope.const_value()
        # opsets < 7 (upgraded, see importer.upgrade_model) had no broadcasting: PyTorch 0.3 and Caffe2 wrote
        # a 1-D slope of C values, one per channel, which is the IR's form already
        old_per_channel = srank == 1 and getattr(node.importer, "upgraded_from", None) and x.shape[1] == size
        if old_per_channel:
            pass
        elif size > 1 and full[1] == size and srank != 1:
            slope = node.const(data.reshape(-1), "slope") if data is not None else \
                node.op("reshape", [slope], shape=(size,))
        elif srank == 1 and size > 1:
            slope = node.const(data.reshape(full), "slope") if data is not None else \
                node.op("unsqueeze", [slope], axes=tuple(range(rank - 1)))
    node.bind(node.op("prelu", [x, slope]))


def _clip(node: Node, lo: float | None, hi: float | None) -> None:
    node.bind(node.op("clip", [node.input(0)], min=-np.inf if lo is None else lo,
                      max=np.inf if hi is None else hi))


@converter("Clip", since=1)
def clip_v1(node: Node) -> None:
    _clip(node, node.attr_float("min", None), node.attr_float("max", None))


@converter("Clip", since=11)
def clip_v11(node: Node) -> None:
    bounds = [node.optional_input(1), node.optional_input(2)]
    if all(b is None or b.const_value() is not None for b in bounds):
        lo, hi = (None if b is None else node.one_value(b.const_value(), what)
                  for b, what in zip(bounds, ("min", "max")))
        _clip(node, lo, hi)
        return
    y = node.input(0)  # bounds computed in the graph: max(min(x, hi), lo)
    if bounds[1] is not None:
        y = node.op("min", [y, bounds[1]])
    if bounds[0] is not None:
        y = node.op("max", [y, bounds[0]])
    node.bind(y)


# ----------------------------------------------------------------------------- unary math
_UNARY = {"Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs", "Neg": "neg",
          "Reciprocal": "reciprocal", "Floor": "floor", "Ceil": "ceil", "Softplus": "softplus"}

for _onnx, _kind in _UNARY.items():
    converter(_onnx, since=1)(_simple(_kind))
converter("Erf", since=9)(_simple("erf"))


# ----------------------------------------------------------------------------- arithmetic
def _binary(kind: str):
    def convert(node: Node) -> None:
        node.bind(node.op(kind, [node.input(0), node.input(1)]))
    return convert


for _onnx, _kind in {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div"}.items():
    converter(_onnx, since=7)(_binary(_kind))


@converter("Pow", since=7)
def pow_(node: Node) -> None:
    x, y = node.input(0), node.input(1)
    data = y.const_value()
    if data is not None and data.dtype != numpy_dtype(x.dtype) and x.dtype in ("f32", "f16", "f64"):
        y = node.const(data.astype(numpy_dtype(x.dtype)), "exponent")
    node.bind(node.op("pow", [x, y]))


def _variadic(kind: str):
    def convert(node: Node) -> None:
        xs = node.inputs()
        y = node.chain(kind, xs)
        node.bind(node.op("identity", [y]) if len(xs) == 1 else y)
    return convert


for _onnx, _kind in {"Sum": "add", "Max": "max", "Min": "min"}.items():
    converter(_onnx, since=1)(_variadic(_kind))


@converter("Mean", since=1)
def mean(node: Node) -> None:
    xs = node.inputs()
    y = node.chain("add", xs)
    node.bind(node.op("div", [y, scalar(node, len(xs), y, "count")]))


# ----------------------------------------------------------------------------- types / select
def _check_cast(node: Node) -> str | None:
    to = node.attr_int("to", 1)
    if to not in ONNX_DTYPES:
        return f"cast to {ONNX_DTYPE_NAMES.get(to, f'type {to}')} is not supported"
    return None


@converter("Cast", since=1, check=_check_cast)
def cast(node: Node) -> None:
    to = node.attr("to")
    if isinstance(to, str):  # opset 1-5 spelled the type as a string
        to = {v: k for k, v in ONNX_DTYPE_NAMES.items()}.get(to.upper(), -1)
    if to not in ONNX_DTYPES:
        raise node.error(f"cast to {ONNX_DTYPE_NAMES.get(to, f'type {to}')} is not supported")
    node.bind(node.op("cast", [node.input(0)], dtype=ONNX_DTYPES[to]))


@converter("CastLike", since=15)
def cast_like(node: Node) -> None:
    node.bind(node.op("cast", [node.input(0)], dtype=node.input(1).dtype))


@converter("Where", since=9)
def where(node: Node) -> None:
    node.bind(node.op("where", [node.input(0), node.input(1), node.input(2)]))
