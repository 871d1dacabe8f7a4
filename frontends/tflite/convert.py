"""TFLite builtin-op converters (NHWC data, OHWI weights; see docs/frontends/tflite.md).

Converters compute in float (``node.input`` is the dequantized view of a
quantized tensor, ``node.bind`` quantizes into a quantized output), so one
converter serves float, float16-weight and int8 models.
"""
from __future__ import annotations

import numpy as np

from tidlc import frontend_einsum as einsum
from tidlc import frontend_nhwc as nhwc
from tidlc.frontend_nhwc import (
    deconv_pads,
    nchw_op,
    resize_modes,
    resize_nhwc,
    strided_slice,
    window_pads,
)

from .registry import converter
from .schema import MIRROR_PAD_MODES, PADDINGS


def _padding(node) -> str:
    return PADDINGS.get(node.options.get("padding", 1), "?")


_WINDOW = ("stride_h", "stride_w", "dilation_h_factor", "dilation_w_factor", "filter_height", "filter_width")


def _check_window(node) -> str | None:
    """Padding, strides, dilations and pool sizes of a window op (zero would divide by zero)."""
    code = node.options.get("padding", 1)
    if code not in PADDINGS:
        return f"padding {code} is not SAME or VALID"
    bad = next((key for key in _WINDOW if node.options.get(key, 1) < 1), None)
    return f"{bad} {node.options[bad]} is not positive" if bad else None


def _channels(node, x) -> int:
    """The input's (NHWC) channel count, which must be known and positive."""
    shape = x.shape
    if shape is None or len(shape) != 4 or shape[3] is None or shape[3] <= 0:
        raise node.error(f"expects a 4-D NHWC input with known channels, got {x.type}")
    return shape[3]


def _axis(node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} is out of range for rank {rank}")
    return axis % rank


def _hw(node, x) -> tuple[int | None, int | None]:
    """Height and width of an NHWC input (None when unknown), which must be 4-D."""
    if x.shape is None:
        return None, None
    if len(x.shape) != 4:
        raise node.error(f"expects a 4-D NHWC input, got {x.type}")
    return x.shape[1], x.shape[2]


# ----------------------------------------------------------------------------- convolutions
@converter("CONV_2D", "DEPTHWISE_CONV_2D", check=_check_window)
def conv_2d(node) -> None:
    """conv2d; a dilated convolution that the importer fused from SPACE_TO_BATCH_ND -> conv ->
    BATCH_TO_SPACE_ND brings its own dilation and pads."""
    x = node.input(0)
    _, kh, kw, channels = node.weight_shape(1, 4)
    cin = _channels(node, x)
    if node.op_type == "CONV_2D":  # OHWI, ``channels`` per group
        if cin % channels:
            raise node.error(f"input channels {cin} are not a multiple of the filter's {channels}")
        w, groups = node.weight(1, (0, 3, 1, 2)), cin // channels  # -> OIHW
    else:
        if channels % cin:
            raise node.error(f"filter has {channels} channels, not a multiple of the input's {cin}")
        w, groups = node.weight(1, (3, 0, 1, 2)), cin  # (1, kh, kw, C*m) -> (C*m, 1, kh, kw): channel c*m + k
    b = [node.weight(2)] if node.has_input(2) else []
    strides = (node.options["stride_h"], node.options["stride_w"])
    dilations = node.extra.get("dilation") or (node.options["dilation_h_factor"], node.options["dilation_w_factor"])
    pads = node.extra.get("pads") or window_pads(node, _padding(node), _hw(node, x), (kh, kw), strides, dilations)
    node.bind(nchw_op(node, "conv2d", x, [w, *b], strides=strides, pads=pads, dilations=dilations,
                      groups=groups, **node.act()))


def _deconv(node, x, padding: str, bias: list, out_hw=None, **act) -> None:
    """deconv2d of the NHWC ``x`` by the ``(O, kh, kw, I)`` weights of input 1: with the pads and
    output padding that give ``out_hw``, or (None) TFLite's own output size for ``padding``,
    ``stride * (in - 1) + k - pad`` where SAME pads ``max(0, k - (in - 1) % stride - 1)``."""
    kh, kw = node.weight_shape(1, 4)[1:3]
    in_hw = node.static_shape(x)[1:3]
    if len(in_hw) != 2:
        raise node.error(f"expects a 4-D NHWC input, got {x.type}")
    strides = (node.options["stride_h"], node.options["stride_w"])
    if out_hw is None:
        out_hw = [s * (n - 1) + k - (max(0, k - (n - 1) % s - 1) if padding == "SAME" else 0)
                  for n, k, s in zip(in_hw, (kh, kw), strides)]
    pads, extra = deconv_pads(node, padding, in_hw, out_hw, (kh, kw), strides)
    w = node.weight(1, (3, 0, 1, 2))  # (O, kh, kw, I) -> (I, O, kh, kw)
    node.bind(nchw_op(node, "deconv2d", x, [w, *bias], strides=strides, pads=pads, output_padding=extra, **act))


@converter("TRANSPOSE_CONV", check=_check_window)
def transpose_conv(node) -> None:
    out_shape = node.const_ints(0, "output_shape")
    if len(out_shape) != 4:
        raise node.error(f"output_shape {out_shape} is not 4-D (NHWC)")
    bias = [node.weight(3)] if node.has_input(3) else []
    _deconv(node, node.input(2), _padding(node), bias, out_shape[1:3], **node.act())


def _check_transpose_conv_bias(node) -> str | None:
    if node.options["padding"] not in (1, 2):
        return f"padding {node.options['padding']} is not SAME (1) or VALID (2)"
    if node.options["stride_w"] < 1 or node.options["stride_h"] < 1:
        return f"strides {node.options['stride_h']}x{node.options['stride_w']} are not positive"
    return None


@converter("Convolution2DTransposeBias", check=_check_transpose_conv_bias)
def transpose_conv_bias(node) -> None:
    """MediaPipe's custom op (selfie / hair segmentation decoders): a transposed conv with a bias,
    inputs (data NHWC, weights OHWI, bias), options (padding: TfLitePadding 1 SAME / 2 VALID,
    stride_w, stride_h); its output size is TRANSPOSE_CONV's for that padding."""
    _deconv(node, node.input(0), "SAME" if node.options["padding"] == 1 else "VALID", [node.weight(2)])


# ----------------------------------------------------------------------------- MediaPipe's attention crop
# face_landmark_with_attention.tflite (tidlc/ir/ops/mediapipe.py): options in a FlexBuffer map
def _check_landmarks_to_matrix(node) -> str | None:
    if node.model_op.version != 2:
        return f"version {node.model_op.version} is not supported (version 2 is)"
    o = node.options
    missing = [k for k in ("subset_idxs", "left_rotation_idx", "right_rotation_idx", "output_height",
                           "output_width", "scale_x", "scale_y") if k not in o]
    if missing:
        return f"its options lack {', '.join(missing)}"
    if not isinstance(o["subset_idxs"], list) or not o["subset_idxs"]:
        return "its subset_idxs are empty"
    ints = [*o["subset_idxs"], *(o[k] for k in ("left_rotation_idx", "right_rotation_idx", "output_height",
                                                "output_width"))]
    numbers = [o[k] for k in ("scale_x", "scale_y", "target_rotation_radians") if k in o]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints) or \
            not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return "its options hold a value of the wrong type (indices and sizes are integers, scales numbers)"
    if min(o["output_height"], o["output_width"]) <= 0 or min(o["scale_x"], o["scale_y"]) <= 0:
        return (f"output {o['output_height']}x{o['output_width']} and scale {o['scale_x']}, {o['scale_y']} "
                "must be positive")
    return None


@converter("Landmarks2TransformMatrix", check=_check_landmarks_to_matrix)
def landmarks_to_transform_matrix(node) -> None:
    o = node.options
    node.bind(node.op("landmarks_to_matrix", [node.input(0)], subset=tuple(int(i) for i in o["subset_idxs"]),
                      left=int(o["left_rotation_idx"]), right=int(o["right_rotation_idx"]),
                      target_rotation=float(o.get("target_rotation_radians", 0.0)),
                      output_size=(int(o["output_height"]), int(o["output_width"])),
                      scale=(float(o["scale_x"]), float(o["scale_y"]))))


def _check_transform_version(node) -> str | None:
    if node.model_op.version not in (1, 2):
        return f"version {node.model_op.version} is not supported (versions 1 and 2 are)"
    return None


@converter("TransformTensorBilinear", check=_check_transform_version)
def transform_tensor_bilinear(node) -> None:
    out = node.out_tensor().shape
    if len(out) != 4 or min(out[1:3]) <= 0:
        raise node.error(f"output '{node.out_tensor().name}' has shape {out}, expected NHWC with a known size")
    size = (int(node.options.get("output_height", out[1])), int(node.options.get("output_width", out[2])))
    if size != tuple(out[1:3]):
        raise node.error(f"its options give a {size[0]}x{size[1]} output, but output '{node.out_tensor().name}' "
                         f"has shape {out}")
    node.bind(nchw_op(node, "warp_bilinear", node.input(0), [node.input(1)], output_size=size,
                      half_pixel=node.model_op.version >= 2))


@converter("TransformLandmarks", check=_check_transform_version)
def transform_landmarks(node) -> None:
    """Version 2 takes points (B, N, D); version 1 (B, H, W, k * D) with D = ``dimensions``."""
    points = node.input(0)
    dims = int(node.options.get("dimensions", 3)) if node.model_op.version == 1 else None
    shape = points.type.shape
    if dims is not None:  # (B, H, W, k * D) -> (B, H * W * k, D) and back
        if shape is None or len(shape) != 4 or dims not in (2, 3) or shape[3] % dims:
            raise node.error(f"input {shape} is not (B, H, W, k * {dims}) with 2 or 3 dimensions")
        points = node.op("reshape", [points], shape=(shape[0], -1, dims))
    y = node.op("transform_landmarks", [points, node.input(1)], scale=float(node.options.get("scale", 1.0)))
    node.bind(y if dims is None else node.op("reshape", [y], shape=tuple(shape)))


def _check_fc(node) -> str | None:
    fmt = node.options.get("weights_format", 0)
    return None if fmt == 0 else f"weights_format {fmt} (shuffled weights) is not supported"


@converter("FULLY_CONNECTED", check=_check_fc)
def fully_connected(node) -> None:
    x = node.input(0)
    in_features = node.weight_shape(1, 2, "weights")[1]  # (out, in)
    w = node.weight(1)
    b = [node.weight(2)] if node.has_input(2) else []
    if not node.options["keep_num_dims"] and x.type.rank != 2:
        x = node.op("reshape", [x], shape=(-1, in_features))
    node.bind(node.op("dense", [x, w, *b], **node.act()))


@converter("BATCH_MATMUL")
def batch_matmul(node) -> None:
    """Keras' MultiHeadAttention after TFLite's conversion of its einsums (adj_y: q @ k^T)."""
    node.bind(einsum.batch_matmul(node, node.input(0), node.input(1), node.options["adj_x"],
                                  node.options["adj_y"]))


# ----------------------------------------------------------------------------- pooling, reductions
def _pool(node, mode: str) -> None:
    x = node.input(0)
    kernel = (node.options["filter_height"], node.options["filter_width"])
    strides = (node.options["stride_h"], node.options["stride_w"])
    pads = window_pads(node, _padding(node), _hw(node, x), kernel, strides)
    y = nchw_op(node, "pool2d", x, (), mode=mode, kernel=kernel, strides=strides, pads=pads)
    act = node.act()
    if act["act"] != "none":
        y = node.op(act["act"], [y], **dict(zip(("min", "max"), act["act_params"])))
    node.bind(y)


@converter("AVERAGE_POOL_2D", check=_check_window)
def average_pool_2d(node) -> None:
    _pool(node, "avg")


@converter("MAX_POOL_2D", check=_check_window)
def max_pool_2d(node) -> None:
    _pool(node, "max")


_REDUCE = {"MEAN": "mean", "SUM": "sum", "REDUCE_MAX": "max", "REDUCE_MIN": "min", "REDUCE_PROD": "prod"}


@converter(*_REDUCE)
def reduce(node) -> None:
    x = node.input(0)
    rank = node.need_rank(x)
    axes = sorted({_axis(node, a, rank) for a in node.const_ints(1, "axis")})
    node.bind(nhwc.reduce(node, x, _REDUCE[node.op_type], axes, bool(node.options["keep_dims"])))


@converter("ARG_MAX")
def arg_max(node) -> None:
    axis = node.const_int(1, "axis")
    node.bind(node.op("argmax", [node.input(0)], axis=axis, keepdims=False))  # bind casts to i32


# ----------------------------------------------------------------------------- element-wise
_BINARY = {"ADD": "add", "SUB": "sub", "MUL": "mul", "DIV": "div", "MAXIMUM": "max", "MINIMUM": "min",
           "POW": "pow"}


@converter(*_BINARY)
def binary(node) -> None:
    kind = _BINARY[node.op_type]
    act = node.act() if "fused_activation_function" in node.options else {}
    node.bind(node.op(kind, [node.input(0), node.input(1)], **act))


converter("SQUARED_DIFFERENCE")(nhwc.squared_difference)


_UNARY = {"LOGISTIC": "sigmoid", "TANH": "tanh", "RELU": "relu", "RELU6": "relu6", "HARD_SWISH": "hardswish",
          "EXP": "exp", "LOG": "log", "SQRT": "sqrt", "ABS": "abs", "NEG": "neg", "FLOOR": "floor",
          "CEIL": "ceil"}


@converter(*_UNARY)
def unary(node) -> None:
    node.bind(node.op(_UNARY[node.op_type], [node.input(0)]))


@converter("RELU_N1_TO_1")
def relu_n1_to_1(node) -> None:
    node.bind(node.op("clip", [node.input(0)], min=-1.0, max=1.0))


@converter("RSQRT")
def rsqrt(node) -> None:
    node.bind(node.op("reciprocal", [node.op("sqrt", [node.input(0)])]))


@converter("ELU")
def elu(node) -> None:
    node.bind(node.op("elu", [node.input(0)], alpha=1.0))


@converter("GELU")
def gelu(node) -> None:
    if node.options.get("approximate"):
        raise node.error("the tanh approximation is not supported")
    node.bind(node.op("gelu", [node.input(0)]))


@converter("LEAKY_RELU")
def leaky_relu(node) -> None:
    node.bind(node.op("leaky_relu", [node.input(0)], alpha=float(node.options["alpha"])))


@converter("PRELU")
def prelu(node) -> None:
    x, alpha = node.input(0), node.input(1)
    rank, arank = node.need_rank(x), node.need_rank(alpha, "alpha")
    if arank < rank:  # numpy broadcasting (per channel = the last axis), written out in full rank
        alpha = node.op("reshape", [alpha], shape=(1,) * (rank - arank) + tuple(node.static_shape(alpha, "alpha")))
    node.bind(node.op("prelu", [x, alpha]))


@converter("SOFTMAX", "LOG_SOFTMAX")
def softmax(node) -> None:
    x = node.input(0)
    beta = float(node.options.get("beta", 1.0)) if node.op_type == "SOFTMAX" else 1.0
    if beta != 1.0:
        x = node.op("mul", [x, node.const(np.float32(beta), "beta")])
    node.bind(node.op("softmax", [x], axis=-1, log=node.op_type == "LOG_SOFTMAX"))


# ----------------------------------------------------------------------------- quantization
@converter("DEQUANTIZE")
def dequantize(node) -> None:
    node.bind(node.input(0))  # the float view: dequantize op, or f16 -> f32 (folded for constants)


def _check_densify(node) -> str | None:
    if not node.has_input(0) or not node.has_output(0):
        return "needs one input and one output"
    t = node.tensor(0)
    if node.importer.model.buffer_data(t) is None:
        return f"the input '{t.name}' is not a constant (tidlc densifies constant sparse tensors only)"
    return None


@converter("DENSIFY", check=_check_densify)
def densify(node) -> None:
    """A sparse constant (``Tensor.sparsity``, sparsity.py) -> its dense value: a ``const`` named
    after the output, in the stored type with the input's quantization (nothing is left to run)."""
    t = node.tensor(0)
    dense = node.importer.buffer_array(t)  # densified by the importer (sparsity.densify_tensor)
    out = node.out_tensor(0)
    if out.shape and all(d >= 0 for d in out.shape) and tuple(dense.shape) != tuple(out.shape):
        raise node.error(f"the output '{out.name}' has shape {out.shape}, the densified input "
                         f"'{t.name}' {tuple(dense.shape)}")
    node.bind(node.importer.new_const(np.ascontiguousarray(dense), out.name, node.loc,
                                      quant=node.importer.quant(t)))


@converter("QUANTIZE")
def quantize(node) -> None:
    node.bind(node.input(0))  # bind quantizes into the output's scale (a requantization if the input was)


@converter("CAST")
def cast(node) -> None:
    node.bind(node.input(0))  # bind casts to the output tensor's type


# ----------------------------------------------------------------------------- data movement
def _paddings(node, i: int = 1) -> tuple[int, ...]:
    p = np.asarray(node.const_ints(i, "paddings"), np.int64)
    if p.size % 2:
        raise node.error(f"paddings has {p.size} values, expected two per dimension")
    p = p.reshape(-1, 2)
    return tuple(int(v) for v in p[:, 0]) + tuple(int(v) for v in p[:, 1])


@converter("PAD", "PADV2")
def pad(node) -> None:
    pads = _paddings(node)
    if node.op_type == "PADV2" and node.has_input(2):
        value = np.asarray(node.const_input(2, "constant_values"))
        if value.size != 1:
            raise node.error(f"constant_values has {value.size} values, expected one")
        value = float(value.reshape(()))
        node.bind(node.op("pad", [node.input(0)], pads=pads, value=value))
        return
    if node.same_quant():  # pad the integers with the zero point (real 0)
        zero = node.raw_input(0).type.quant.zero_point
        node.bind(node.op("pad", [node.raw_input(0)], pads=pads, value=float(zero)))
        return
    node.bind(node.op("pad", [node.input(0)], pads=pads))


@converter("MIRROR_PAD", check=lambda node: None if node.options["mode"] in MIRROR_PAD_MODES
           else f"mode {node.options['mode']} is not supported (REFLECT and SYMMETRIC are)")
def mirror_pad(node) -> None:
    mode = MIRROR_PAD_MODES[node.options["mode"]].lower()  # (numpy's meanings: the IR's pad)
    node.bind(node.op("pad", [node.data_input(0)], pads=_paddings(node), mode=mode))


@converter("CONCATENATION")
def concatenation(node) -> None:
    act = node.act()
    # (a fused activation computes on real values: then the float views, even with equal scales)
    values = [node.data_input(i) if act["act"] == "none" else node.input(i) for i in range(len(node.inputs_idx))]
    y = node.op("concat", values, axis=node.options["axis"])
    if act["act"] != "none":
        y = node.op(act["act"], [y], **dict(zip(("min", "max"), act["act_params"])))
    node.bind(y)


@converter("RESHAPE")
def reshape(node) -> None:
    if node.has_input(1):
        target = node.const_ints(1, "shape")
    else:
        target = node.options["new_shape"] or ()
    node.bind(node.op("reshape", [node.data_input(0)], shape=target, allowzero=True))


@converter("SQUEEZE")
def squeeze(node) -> None:
    node.bind(node.op("squeeze", [node.data_input(0)], axes=node.options["squeeze_dims"] or ()))


converter("EXPAND_DIMS")(nhwc.expand_dims("axis"))
converter("TRANSPOSE")(nhwc.transpose)


@converter("STRIDED_SLICE")
def strided_slice_(node) -> None:
    begin, end, strides = (node.const_ints(i, what) for i, what in ((1, "begin"), (2, "end"), (3, "strides")))
    o = node.options
    if o.get("offset"):
        end = tuple(b + e for b, e in zip(begin, end))
    node.bind(strided_slice(node, node.data_input(0), begin, end, strides, o["begin_mask"], o["end_mask"],
                            o["ellipsis_mask"], o["new_axis_mask"], o["shrink_axis_mask"]))


converter("SLICE")(nhwc.slice_begin_size)


def _bind_parts(node, parts) -> None:
    node.bind(*(parts if isinstance(parts, list) else [parts]))


@converter("SPLIT")
def split(node) -> None:
    axis = node.const_int(0, "axis")
    x = node.raw_input(1) if node.same_quant() else node.input(1)
    n = int(node.options["num_splits"])
    shape = node.static_shape(x)
    size = shape[_axis(node, axis, len(shape))]
    if n <= 0 or size % n:
        raise node.error(f"cannot split {size} into {n} equal parts")
    _bind_parts(node, node.op("split", [x], axis=axis, sizes=[size // n] * n))


@converter("SPLIT_V")
def split_v(node) -> None:
    x = node.data_input(0)
    sizes = list(node.const_ints(1, "size_splits"))
    axis = node.const_int(2, "axis")
    if -1 in sizes:
        shape = node.static_shape(x)
        sizes[sizes.index(-1)] = shape[_axis(node, axis, len(shape))] - (sum(sizes) + 1)
    _bind_parts(node, node.op("split", [x], axis=axis, sizes=sizes))


@converter("PACK")
def pack(node) -> None:
    nhwc.pack(node, [node.data_input(i) for i in range(len(node.inputs_idx))], int(node.options["axis"]))


def _check_gather(node) -> str | None:
    if node.options["batch_dims"]:
        return f"batch_dims={node.options['batch_dims']} is not supported"
    return None


@converter("GATHER", check=_check_gather)
def gather(node) -> None:
    """``tf.gather(params, indices, axis)``: Keras' Dense on a 4-D tensor (ConvNeXt's pointwise
    convs, ``Tensordot``) gathers dimensions from its input's SHAPE to build its reshape target;
    it was a host op, and the RESHAPE after it had no constant shape."""
    x = node.data_input(0)
    axis = _axis(node, int(node.options["axis"]), x.type.rank) if x.type.rank is not None else int(node.options["axis"])
    node.bind(node.op("gather", [x, node.raw_input(1)], axis=axis))


@converter("SHAPE")
def shape(node) -> None:
    node.bind(node.op("shape", [node.raw_input(0)]))  # bind casts i64 to the output's type


def _check_resize(node) -> str | None:
    if node.options["align_corners"] and node.options["half_pixel_centers"]:
        return "align_corners and half_pixel_centers together are not supported"
    return None


@converter("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", check=_check_resize)
def resize(node) -> None:
    size = node.const_ints(1, "size")
    if len(size) != 2 or min(size) < 1:
        raise node.error(f"size {size} is not two positive values (height, width)")
    shape = node.static_shape(node.input(0))
    if len(shape) != 4 or min(shape) < 1:
        raise node.error(f"expects a 4-D NHWC input without empty dimensions, got {shape}")
    modes = resize_modes(node.op_type == "RESIZE_BILINEAR", bool(node.options["align_corners"]),
                         bool(node.options["half_pixel_centers"]))
    node.bind(resize_nhwc(node, node.input(0), size, **modes))


@converter("DEPTH_TO_SPACE")
def depth_to_space(node) -> None:
    node.bind(nchw_op(node, "depth_to_space", node.data_input(0), (), block=int(node.options["block_size"]),
                      mode="DCR"))


@converter("SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND")
def space_batch(node) -> None:  # pragma: no cover - fused into a dilated convolution before converting
    raise node.error("only supported as part of a dilated convolution")
