"""TensorFlow op converters: one function per op (or family), registered by name.

Data is NHWC unless a node says ``data_format = "NCHW"``; window ops go
through :func:`tidlc.frontend_nhwc.nchw_op` (transpose, NCHW op, transpose) and their
weights are permuted at import (HWIO -> OIHW). See docs/frontends/tensorflow.md.
"""
from __future__ import annotations

import numpy as np

from tidlc import frontend_einsum as einsum
from tidlc import frontend_nhwc as nhwc
from tidlc.frontend import tile_by_concat
from tidlc.frontend_nhwc import (
    deconv_pads,
    nchw_op,
    permute_weight,
    resize_modes,
    resize_nhwc,
    strided_slice,
    window_pads,
)
from tidlc.ir.core import Value
from tidlc.ir.types import dtype_of, numpy_dtype

from .graphdef import DATA_TYPES, dtype_name, tensor_to_array
from .registry import converter


def _ir_dtype(node, enum: int) -> str:
    if enum not in DATA_TYPES:
        raise node.error(f"element type {dtype_name(enum)} is not supported")
    return dtype_of(np.dtype(DATA_TYPES[enum][0]))


def _axis(node, axis: int, rank: int) -> int:
    """``axis`` made non-negative; out of range for ``rank`` is an error."""
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def _scalar(node, i: int, what: str) -> float:
    """The one value of a constant input (a fill value)."""
    data = np.asarray(node.const_input(i, what))
    if data.size != 1:
        raise node.error(f"{what} ('{node.input_refs[i]}') must hold one value, got shape {data.shape}")
    return float(data.reshape(-1)[0])


def scalar(node, value: float, like: Value, suffix: str) -> Value:
    return node.const(np.asarray(value, dtype=numpy_dtype(like.dtype)), suffix)


# ----------------------------------------------------------------------------- pass-through
@converter("Placeholder")
def placeholder(node) -> None:
    """Graph inputs are created before conversion (TFImporter.add_inputs)."""


@converter("Identity", "StopGradient", "Snapshot", "PreventGradient", "PlaceholderWithDefault",
           "EnsureShape", "CheckNumerics")
def identity(node) -> None:
    node.bind(node.input(0))


@converter("IdentityN")
def identity_n(node) -> None:
    node.bind(*node.inputs())


def _check_const(node) -> str | None:
    if "value" not in node.proto.attr or node.proto.attr["value"].WhichOneof("value") != "tensor":
        return "has no tensor value"
    dtype = node.proto.attr["value"].tensor.dtype
    if dtype not in DATA_TYPES:
        return f"element type {dtype_name(dtype)} is not supported"
    return None


@converter("Const", check=_check_const)
def const(node) -> None:
    data = tensor_to_array(node.proto.attr["value"].tensor, f"constant '{node.name}'", node.loc)
    node.bind(node.const(data))


# ----------------------------------------------------------------------------- windows
def _check_window(node) -> str | None:
    fmt = node.attr_str("data_format", "NHWC")
    if fmt not in ("NHWC", "NCHW"):
        return f"data_format '{fmt}' is not supported (NHWC and NCHW are)"
    padding = node.attr_str("padding", "VALID")
    if padding not in ("SAME", "VALID", "EXPLICIT"):
        return f"padding '{padding}' is not supported"
    for key in ("strides", "ksize", "dilations"):
        values = node.attr_ints(key, None)
        if values is None:
            continue
        if len(values) != 4:
            return f"{key} {list(values)} must have 4 values"
        if any(v <= 0 for v in values):
            return f"{key} {list(values)} must be positive"
        batch, channel = (values[0], values[3]) if fmt == "NHWC" else (values[0], values[1])
        if batch != 1 or channel != 1:
            return f"{key} {list(values)} along the batch or channel axis is not supported"
    return None


def _spatial(node, key: str, default=(1, 1, 1, 1)) -> tuple[int, int]:
    values = node.attr_ints(key, default)
    return (values[1], values[2]) if node.data_format() == "NHWC" else (values[2], values[3])


def _hw(node, x: Value) -> tuple:
    shape = _shape4(node, x)
    return (shape[1], shape[2]) if node.data_format() == "NHWC" else (shape[2], shape[3])


def _channels(node, x: Value):
    shape = _shape4(node, x)
    return shape[3] if node.data_format() == "NHWC" else shape[1]


def _shape4(node, x: Value) -> tuple:
    """The shape of an image input (unknown dims None); other ranks are an error."""
    if x.shape is None:
        return (None,) * 4
    if len(x.shape) != 4:
        raise node.error(f"expects a 4-D input, got {x.type}")
    return tuple(x.shape)


def _filter(node, f: Value) -> tuple[int, int, int, int]:
    shape = node.static_shape(f, "filter")
    if len(shape) != 4 or not all(d > 0 for d in shape):
        raise node.error(f"the filter must have 4 positive dims (kh, kw, in, out), got {shape}")
    return shape


def _explicit(node):
    values = node.attr_ints("explicit_paddings", ())
    if not values:
        return None
    if len(values) != 8:
        raise node.error(f"explicit_paddings {list(values)} must have 8 values (a pair per dim)")
    h, w = (2, 4) if node.data_format() == "NHWC" else (4, 6)  # pairs per dim in data order
    return (values[h], values[h + 1], values[w], values[w + 1])


def _conv_common(node, x: Value, kernel):
    strides, dilations = _spatial(node, "strides"), _spatial(node, "dilations")
    pads = window_pads(node, node.attr_str("padding"), _hw(node, x), kernel, strides, dilations, _explicit(node))
    return {"strides": strides, "pads": pads, "dilations": dilations}


@converter("Conv2D", check=_check_window)
def conv2d(node) -> None:
    x, f = node.input(0), node.input(1)
    kh, kw, cin_g, _ = _filter(node, f)
    cin = _channels(node, x)
    if cin is None:
        raise node.error("needs the channel count of its input", hint="give the input shapes with --input-shape")
    if cin % cin_g:
        raise node.error(f"input has {cin} channels, the filter expects a multiple of {cin_g}")
    w = permute_weight(node, f, (3, 2, 0, 1))  # HWIO -> OIHW
    node.bind(nchw_op(node, "conv2d", x, [w], node.data_format() == "NHWC", groups=cin // cin_g,
                      **_conv_common(node, x, (kh, kw))))


@converter("DepthwiseConv2dNative", check=_check_window)
def depthwise_conv2d(node) -> None:
    x, f = node.input(0), node.input(1)
    kh, kw, cin, mult = _filter(node, f)
    w = permute_weight(node, f, (2, 3, 0, 1), (cin * mult, 1, kh, kw))  # channel c*mult+m
    node.bind(nchw_op(node, "conv2d", x, [w], node.data_format() == "NHWC", groups=cin,
                      **_conv_common(node, x, (kh, kw))))


@converter("Conv2DBackpropInput", check=_check_window)
def conv2d_backprop_input(node) -> None:
    sizes = node.const_ints(0, "input_sizes")
    if len(sizes) != 4:
        raise node.error(f"input_sizes {list(sizes)} must have 4 values")
    f, x = node.input(1), node.input(2)
    kh, kw = _filter(node, f)[:2]  # (kh, kw, our output channels, our input channels)
    nhwc = node.data_format() == "NHWC"
    out_hw = (sizes[1], sizes[2]) if nhwc else (sizes[2], sizes[3])
    in_hw = _hw(node, x)
    if any(d is None for d in in_hw):
        raise node.error("needs the static height and width of its input", hint="use --input-shape")
    strides, dilations = _spatial(node, "strides"), _spatial(node, "dilations")
    if node.attr_str("padding") == "EXPLICIT":
        raise node.error("EXPLICIT padding is not supported for transposed convolutions")
    pads, extra = deconv_pads(node, node.attr_str("padding"), in_hw, out_hw, (kh, kw), strides, dilations)
    w = permute_weight(node, f, (3, 2, 0, 1))  # (kh, kw, out, in) -> (in, out, kh, kw)
    node.bind(nchw_op(node, "deconv2d", x, [w], nhwc, strides=strides, pads=pads, dilations=dilations,
                      output_padding=extra))


def _check_pool(node) -> str | None:
    problem = _check_window(node)
    if problem:
        return problem
    if node.attr_str("padding", "VALID") == "EXPLICIT":
        return "EXPLICIT padding is not supported for pooling"
    return None


def _pool(node, mode: str) -> None:
    x = node.input(0)
    kernel, strides = _spatial(node, "ksize"), _spatial(node, "strides")
    pads = window_pads(node, node.attr_str("padding"), _hw(node, x), kernel, strides)
    node.bind(nchw_op(node, "pool2d", x, (), node.data_format() == "NHWC", mode=mode, kernel=kernel,
                      strides=strides, pads=pads))


@converter("MaxPool", check=_check_pool)
def max_pool(node) -> None:
    _pool(node, "max")


@converter("AvgPool", check=_check_pool)
def avg_pool(node) -> None:
    _pool(node, "avg")  # SAME: padded taps are not counted, as TensorFlow does


@converter("BiasAdd", "BiasAddV1")
def bias_add(node) -> None:
    x, b = node.input(0), node.input(1)
    if node.attr_str("data_format", "NHWC") == "NCHW" and x.type.rank and x.type.rank > 2:
        b = node.op("reshape", [b], shape=(-1,) + (1,) * (x.type.rank - 2))
    node.bind(node.op("add", [x, b]))


def _check_batchnorm(node) -> str | None:
    if node.attr_bool("is_training", False):
        return "is_training=true is not supported (freeze the model in inference mode)"
    fmt = node.attr_str("data_format", "NHWC")
    return None if fmt in ("NHWC", "NCHW") else f"data_format '{fmt}' is not supported"


@converter("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", check=_check_batchnorm)
def fused_batch_norm(node) -> None:
    x = node.input(0)
    params = [node.input(i) for i in range(1, 5)]  # scale, offset, mean, variance
    eps = node.attr_float("epsilon", 1e-4)
    nhwc = node.data_format() == "NHWC"
    data = [p.const_value() for p in params]
    if all(d is not None for d in data):
        if len({d.size for d in data}) != 1:
            raise node.error(f"scale, offset, mean and variance differ in size: {[d.size for d in data]}")
        gamma, beta, mean, var = (d.astype(np.float64).reshape(-1) for d in data)
        s = gamma / np.sqrt(var + eps)
        shift = beta - mean * s
        axis = 3 if nhwc else 1
        node.bind(node.op("scale", [x, node.const(s.astype(np.float32), "scale"),
                                    node.const(shift.astype(np.float32), "bias")], axis=axis))
        return
    node.bind(nchw_op(node, "batchnorm", x, params, nhwc, epsilon=eps))


# ----------------------------------------------------------------------------- activations, arithmetic
_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu6", "Sigmoid": "sigmoid", "Tanh": "tanh", "Elu": "elu",
                "Softplus": "softplus", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Abs": "abs",
                "Neg": "neg", "Floor": "floor", "Ceil": "ceil", "Reciprocal": "reciprocal", "Inv": "reciprocal"}


@converter(*_ACTIVATIONS)
def unary(node) -> None:
    kind = _ACTIVATIONS[node.op_type]
    attrs = {"alpha": 1.0} if kind == "elu" else {}
    node.bind(node.op(kind, [node.input(0)], **attrs))


@converter("LeakyRelu")
def leaky_relu(node) -> None:
    node.bind(node.op("leaky_relu", [node.input(0)], alpha=node.attr_float("alpha", 0.2)))


@converter("Erf")
def erf(node) -> None:
    node.bind(node.op("erf", [node.input(0)]))


@converter("Erfc")
def erfc(node) -> None:
    """``1 - erf(x)``: Keras' exact GELU is ``0.5 * x * erfc(-x / sqrt(2))`` (fuse-patterns rebuilds it)."""
    node.bind(node.op("sub", [node.const(np.float32(1.0), "one"), node.op("erf", [node.input(0)])]))


@converter("Rsqrt")
def rsqrt(node) -> None:
    node.bind(node.op("reciprocal", [node.op("sqrt", [node.input(0)])]))


@converter("Square")
def square(node) -> None:
    x = node.input(0)
    node.bind(node.op("mul", [x, x]))


_BINARY = {"Add": "add", "AddV2": "add", "Sub": "sub", "Mul": "mul", "RealDiv": "div", "Div": "div",
           "Maximum": "max", "Minimum": "min", "Pow": "pow"}


@converter(*_BINARY)
def binary(node) -> None:
    node.bind(node.op(_BINARY[node.op_type], [node.input(0), node.input(1)]))


converter("SquaredDifference")(nhwc.squared_difference)


@converter("AddN")
def add_n(node) -> None:
    node.bind(node.chain("add", node.inputs()))


@converter("MatMul")
def matmul(node) -> None:
    a, b = node.input(0), node.input(1)
    ta, tb = node.attr_bool("transpose_a", False), node.attr_bool("transpose_b", False)
    data = b.const_value()
    if data is not None and not ta and data.ndim == 2:
        w = b if tb else node.const(np.ascontiguousarray(data.T), "weight")
        node.bind(node.op("dense", [a, w]))
        return
    if ta:
        a = node.op("transpose", [a], perm=(1, 0))
    if tb:
        b = node.op("transpose", [b], perm=(1, 0))
    node.bind(node.op("matmul", [a, b]))


@converter("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3")
def batch_mat_mul(node) -> None:
    node.bind(einsum.batch_matmul(node, node.input(0), node.input(1), node.attr_bool("adj_x", False),
                                  node.attr_bool("adj_y", False)))


def _check_einsum(node) -> str | None:
    return einsum.equation_problem(node.attr_str("equation"), len(node.input_refs))


@converter("Einsum", check=_check_einsum)
def einsum_op(node) -> None:
    """Keras' MultiHeadAttention / EinsumDense (``abc,cde->abde``, ``aecd,abcd->acbe``)."""
    node.bind(einsum.einsum(node, node.attr_str("equation"), node.inputs()))


@converter("Tile")
def tile(node) -> None:
    node.bind(tile_by_concat(node, node.input(0), node.const_ints(1, "multiples")))


@converter("Softmax", "LogSoftmax")
def softmax(node) -> None:
    node.bind(node.op("softmax", [node.input(0)], axis=-1, log=node.op_type == "LogSoftmax"))


# ----------------------------------------------------------------------------- reductions
_REDUCE = {"Mean": "mean", "Sum": "sum", "Max": "max", "Min": "min", "Prod": "prod"}


@converter(*_REDUCE)
def reduce(node) -> None:
    x = node.input(0)
    rank = node.need_rank(x)
    axes = sorted({_axis(node, a, rank) for a in node.const_ints(1, "reduction_indices")})
    node.bind(nhwc.reduce(node, x, _REDUCE[node.op_type], axes, node.attr_bool("keep_dims", False)) if axes else x)


@converter("ArgMax")
def arg_max(node) -> None:
    x = node.input(0)
    axis = node.const_int(1, "dimension")
    y = node.op("argmax", [x], axis=axis, keepdims=False)
    out = node.attr_int("output_type", 9)
    node.bind(node.op("cast", [y], dtype="i32") if out == 3 else y)


# ----------------------------------------------------------------------------- tensor ops
def _check_mirror_pad(node) -> str | None:
    mode = node.attr_str("mode", "REFLECT")
    return None if mode in ("REFLECT", "SYMMETRIC") else f"mode {mode} is not supported (REFLECT and SYMMETRIC are)"


@converter("Pad", "PadV2", "MirrorPad", check=lambda node: _check_mirror_pad(node)
           if node.op_type == "MirrorPad" else None)
def pad(node) -> None:
    x = node.input(0)
    flat = node.const_ints(1, "paddings")
    if len(flat) % 2:
        raise node.error(f"paddings {list(flat)} must hold a (before, after) pair per dim")
    pads = flat[0::2] + flat[1::2]
    if node.op_type == "MirrorPad":
        node.bind(node.op("pad", [x], pads=pads, mode=node.attr_str("mode", "REFLECT").lower()))
        return
    value = _scalar(node, 2, "constant_values") if node.op_type == "PadV2" else 0.0
    node.bind(node.op("pad", [x], pads=pads, value=value))


@converter("ConcatV2")
def concat_v2(node) -> None:
    if node.num_inputs < 2:
        raise node.error("needs the values and an axis")
    values = node.inputs()
    axis = node.const_int(node.num_inputs - 1, "axis")
    node.bind(node.op("concat", values[:-1], axis=axis))


@converter("Concat")
def concat(node) -> None:
    values = node.inputs()
    axis = node.const_int(0, "concat_dim")
    node.bind(node.op("concat", values[1:], axis=axis))


@converter("Reshape")
def reshape(node) -> None:
    target = node.const_ints(1, "shape")
    node.bind(node.op("reshape", [node.input(0)], shape=target, allowzero=True))


@converter("Squeeze")
def squeeze(node) -> None:
    node.bind(node.op("squeeze", [node.input(0)], axes=node.attr_ints("squeeze_dims", ())))


converter("ExpandDims")(nhwc.expand_dims("dim"))
converter("Transpose")(nhwc.transpose)


@converter("Shape")
def shape(node) -> None:
    out = node.attr_int("out_type", 3)
    node.bind(node.op("cast", [node.op("shape", [node.input(0)])], dtype=_ir_dtype(node, out)))


@converter("StridedSlice")
def strided_slice_(node) -> None:
    x = node.input(0)
    begin, end, strides = (node.const_ints(i, what) for i, what in ((1, "begin"), (2, "end"), (3, "strides")))
    masks = {k: node.attr_int(k, 0) for k in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                                "shrink_axis_mask")}
    node.bind(strided_slice(node, x, begin, end, strides, **masks))


converter("Slice")(nhwc.slice_begin_size)


@converter("Pack")
def pack(node) -> None:
    nhwc.pack(node, node.inputs(), node.attr_int("axis", 0))


@converter("Split")
def split(node) -> None:
    axis = node.const_int(0, "split_dim")
    x = node.input(1)
    n = node.attr_int("num_split")
    if n <= 0:
        raise node.error(f"num_split {n} must be positive")
    shape = node.static_shape(x)
    size = shape[_axis(node, axis, len(shape))]
    if size % n:
        raise node.error(f"cannot split {size} into {n} equal parts")
    parts = node.op("split", [x], axis=axis, sizes=[size // n] * n)
    node.bind(*(parts if isinstance(parts, list) else [parts]))


@converter("SplitV")
def split_v(node) -> None:
    x = node.input(0)
    sizes = list(node.const_ints(1, "size_splits"))
    axis = node.const_int(2, "axis")
    if -1 in sizes:
        shape = node.static_shape(x)
        total = shape[_axis(node, axis, len(shape))]
        sizes[sizes.index(-1)] = total - (sum(sizes) + 1)
    parts = node.op("split", [x], axis=axis, sizes=sizes)
    node.bind(*(parts if isinstance(parts, list) else [parts]))


@converter("Cast")
def cast(node) -> None:
    node.bind(node.op("cast", [node.input(0)], dtype=_ir_dtype(node, node.attr_int("DstT"))))


def _check_resize(node) -> str | None:
    if node.attr_bool("align_corners", False) and node.attr_bool("half_pixel_centers", False):
        return "align_corners and half_pixel_centers together are not supported"
    return None


@converter("ResizeBilinear", "ResizeNearestNeighbor", check=_check_resize)
def resize(node) -> None:
    size = node.const_ints(1, "size")
    modes = resize_modes(node.op_type == "ResizeBilinear", node.attr_bool("align_corners", False),
                         node.attr_bool("half_pixel_centers", False))
    node.bind(resize_nhwc(node, node.input(0), size, **modes))


@converter("DepthToSpace", check=lambda node: None if node.attr_str("data_format", "NHWC") in ("NHWC", "NCHW")
           else f"data_format '{node.attr_str('data_format')}' is not supported")
def depth_to_space(node) -> None:
    x = node.input(0)
    node.bind(nchw_op(node, "depth_to_space", x, (), node.data_format() == "NHWC",
                      block=node.attr_int("block_size"), mode="DCR"))
