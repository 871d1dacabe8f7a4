"""Converters for ops with weights or windows: Conv, ConvTranspose, Gemm, MatMul,
BatchNormalization, pooling, LRN, Softmax.

1-D convolutions and pools (rank-3 inputs) run as 2-D ones over a height of 1.
"""
from __future__ import annotations

import numpy as np

from tidlc import frontend_einsum as einsum
from tidlc.frontend import not_lowered
from tidlc.ir.core import Value
from tidlc.ir.types import numpy_dtype

from .context import Node
from .registry import converter

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def scalar(node: Node, value: float, like: Value, suffix: str) -> Value:
    """A 0-d constant of ``like``'s element type."""
    return node.const(np.asarray(value, dtype=numpy_dtype(like.dtype)), suffix)


# ----------------------------------------------------------------------------- windows
def _check_window(node: Node, what: str) -> str | None:
    kernel = node.attr_ints("kernel_shape", None)
    if kernel is not None and len(kernel) == 3 and what == "pooling" and kernel[0] == 1:
        return None  # (a pool of each depth slice: _pool_depth_slices)
    if kernel is not None and len(kernel) not in (1, 2):
        return not_lowered(f"{len(kernel)}-D {what} is not supported (1-D and 2-D only)")
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        return f"auto_pad '{auto_pad}' is not one of {', '.join(AUTO_PADS)}"
    return None


def _same_pads(in_size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """SAME_UPPER/SAME_LOWER: output = ceil(in / stride); the odd pixel goes at the end (upper)."""
    out = -(-in_size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in_size)
    small, big = total // 2, total - total // 2
    return (small, big) if upper else (big, small)


def _given_pads(node: Node, auto_pad: str, spatial: int, detail: str = "") -> tuple[int, ...]:
    """The pads of auto_pad VALID (none) or NOTSET (the ``pads`` attribute, begins then ends)."""
    if auto_pad == "VALID":
        return (0,) * (2 * spatial)
    pads = node.attr_ints("pads", (0,) * (2 * spatial))
    if len(pads) != 2 * spatial:
        raise node.error(f"pads {pads} need {2 * spatial} values{detail}")
    return pads


class Window:
    """Kernel/strides/dilations/pads of a Conv or pool, normalised to 2-D (t, l, b, r pads)."""

    def __init__(self, node: Node, x: Value, kernel: tuple[int, ...], dilations_default=None):
        spatial = len(kernel)
        self.lifted = spatial == 1  # 1-D: run as 2-D over a height of 1
        ones = (1,) * spatial
        strides = node.attr_ints("strides", ones)
        dilations = node.attr_ints("dilations", dilations_default or ones)
        if len(strides) != spatial or len(dilations) != spatial:
            raise node.error(f"strides {strides} / dilations {dilations} do not match a "
                             f"{spatial}-D kernel {kernel}")
        if not all(v > 0 for v in strides + dilations):
            raise node.error(f"strides {strides} and dilations {dilations} must be positive")
        auto_pad = node.attr_str("auto_pad", "NOTSET")
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            shape = x.shape
            if shape is None or len(shape) != 2 + spatial or any(d is None for d in shape[2:]):
                raise node.error(f"auto_pad {auto_pad} needs the static spatial size of the input, "
                                 f"which is {'unknown' if shape is None else x.type}",
                                 hint="give the input shapes with --input-shape NAME=d0,d1,...")
            pairs = [_same_pads(shape[2 + i], kernel[i], strides[i], dilations[i], auto_pad == "SAME_UPPER")
                     for i in range(spatial)]
            pads = tuple(p[0] for p in pairs) + tuple(p[1] for p in pairs)
        else:
            pads = _given_pads(node, auto_pad, spatial, f" for a {spatial}-D kernel")
        if self.lifted:
            kernel, strides, dilations = (1,) + kernel, (1,) + strides, (1,) + dilations
            pads = (0, pads[0], 0, pads[1])
        self.kernel, self.strides, self.dilations, self.pads = kernel, strides, dilations, pads

    def lift(self, node: Node, x: Value) -> Value:
        return node.op("unsqueeze", [x], axes=(2,)) if self.lifted else x

    def lower(self, node: Node, y: Value) -> Value:
        return node.op("squeeze", [y], axes=(2,)) if self.lifted else y


def _kernel_of(node: Node, w: Value) -> tuple[int, ...]:
    kernel = node.attr_ints("kernel_shape", None)
    if kernel is None:
        if w.shape is None or any(d is None for d in w.shape[2:]):
            raise node.error("kernel_shape is missing and the weight shape is unknown")
        kernel = tuple(w.shape[2:])
    if len(kernel) not in (1, 2):
        raise node.error(f"{len(kernel)}-D kernels are not supported (1-D and 2-D only)")
    return kernel


def _check_conv(node: Node) -> str | None:
    return _check_window(node, "convolution")


@converter("Conv", since=1, check=_check_conv)
def conv(node: Node) -> None:
    x, w, b = node.input(0), node.input(1), node.optional_input(2)
    kernel = _kernel_of(node, w)
    win = Window(node, x, kernel)
    operands = [win.lift(node, x), win.lift(node, w)] + ([b] if b is not None else [])
    y = node.op("conv2d", operands, strides=win.strides, pads=win.pads, dilations=win.dilations,
                groups=node.attr_int("group", 1))
    node.bind(win.lower(node, y))


@converter("ConvTranspose", since=1, check=_check_conv)
def conv_transpose(node: Node) -> None:
    x, w, b = node.input(0), node.input(1), node.optional_input(2)
    kernel = _kernel_of(node, w)
    spatial = len(kernel)
    ones = (1,) * spatial
    strides = node.attr_ints("strides", ones)
    dilations = node.attr_ints("dilations", ones)
    out_pad = list(node.attr_ints("output_padding", (0,) * spatial))
    output_shape = node.attr_ints("output_shape", None)
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    if len(strides) != spatial or len(dilations) != spatial or len(out_pad) != spatial:
        raise node.error("strides, dilations and output_padding must have one value per spatial axis")
    if output_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        in_hw = node.static_shape(x)[2:]
        if len(in_hw) != spatial or (output_shape is not None and len(output_shape) < spatial):
            raise node.error(f"a {spatial}-D kernel needs a {spatial + 2}-D input and {spatial} output_shape "
                             f"values, got {x.type} and {output_shape}")
        if output_shape is not None:
            target = list(output_shape[-spatial:])
        else:
            target = [in_hw[i] * strides[i] for i in range(spatial)]
        begins, ends = [], []
        for i in range(spatial):
            natural = strides[i] * (in_hw[i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1
            total = natural - target[i]
            if total < 0:  # a larger output than the sweep covers: zeros at the end
                out_pad[i] -= total
                total = 0
            if auto_pad == "SAME_UPPER":
                begins.append(total // 2)
                ends.append(total - total // 2)
            else:
                begins.append(total - total // 2)
                ends.append(total // 2)
        pads = tuple(begins) + tuple(ends)
    else:
        pads = _given_pads(node, auto_pad, spatial)
    lifted = spatial == 1
    if lifted:
        strides, dilations, out_pad = (1,) + strides, (1,) + dilations, [0] + out_pad
        pads = (0, pads[0], 0, pads[1])
        x = node.op("unsqueeze", [x], axes=(2,))
        w = node.op("unsqueeze", [w], axes=(2,))
    operands = [x, w] + ([b] if b is not None else [])
    y = node.op("deconv2d", operands, strides=strides, pads=pads, dilations=dilations,
                groups=node.attr_int("group", 1), output_padding=tuple(out_pad))
    node.bind(node.op("squeeze", [y], axes=(2,)) if lifted else y)


# ----------------------------------------------------------------------------- Gemm / MatMul
def _dense_weight(node: Node, b: Value, transposed: bool, alpha: float) -> Value:
    """``alpha * b`` as a dense weight (outputs, inputs): ``b`` is that already if ``transposed``."""
    data = b.const_value()
    if data is not None:  # an initializer: one new array at most
        if transposed and alpha == 1.0:
            return b
        w = data if transposed else data.T
        if alpha != 1.0:
            w = w * np.asarray(alpha, data.dtype)
        return node.const(np.ascontiguousarray(w), "weight")
    w = b if transposed else node.op("transpose", [b], perm=(1, 0))  # a constant subgraph:
    return _scaled(node, w, alpha, "alpha")  # folded at -O1


def _scaled(node: Node, v: Value, factor: float, suffix: str) -> Value:
    if factor == 1.0:
        return v
    data = v.const_value()
    if data is not None:
        return node.const((data * np.asarray(factor, data.dtype)).astype(data.dtype, copy=False), suffix)
    return node.op("mul", [v, scalar(node, factor, v, suffix)])


def _dense_bias(node: Node, c: Value, beta: float, outputs: int | None) -> Value | None:
    """``beta * c`` as a 1-D dense bias if ``c`` is one value per output, else None."""
    if outputs is None or c.shape is None or tuple(c.shape) not in ((outputs,), (1, outputs)):
        return None
    data = c.const_value()
    if data is not None:
        if beta == 1.0 and data.ndim == 1:
            return c
        return node.const((data.reshape(-1) * np.asarray(beta, data.dtype)).astype(data.dtype, copy=False), "bias")
    if not node.is_constant(c):
        return None
    if len(c.shape) == 2:
        c = node.op("reshape", [c], shape=(outputs,))
    return _scaled(node, c, beta, "beta")


@converter("Gemm", since=1)
def gemm(node: Node) -> None:
    a, b, c = node.input(0), node.input(1), node.optional_input(2)
    alpha, beta = node.attr_float("alpha", 1.0), node.attr_float("beta", 1.0)
    trans_a, trans_b = node.attr_int("transA", 0), node.attr_int("transB", 0)
    if beta == 0.0:
        c = None
    if not trans_a and node.is_constant(b) and b.type.rank == 2:
        w = _dense_weight(node, b, bool(trans_b), alpha)
        bias = _dense_bias(node, c, beta, w.shape[0]) if c is not None else None
        y = node.op("dense", [a, w] + ([bias] if bias is not None else []))
        if c is not None and bias is None:
            y = node.op("add", [y, _scaled(node, c, beta, "beta")])
        node.bind(y)
        return
    if trans_a:
        a = node.op("transpose", [a], perm=(1, 0))
    if trans_b:
        b = node.op("transpose", [b], perm=(1, 0))
    y = node.op("matmul", [a, b])
    if alpha != 1.0:
        y = node.op("mul", [y, scalar(node, alpha, y, "alpha")])
    if c is not None:
        y = node.op("add", [y, _scaled(node, c, beta, "beta")])
    node.bind(y)


@converter("MatMul", since=1)
def matmul(node: Node) -> None:
    a, b = node.input(0), node.input(1)
    if node.is_constant(b) and b.type.rank == 2 and a.type.rank is not None:
        node.bind(node.op("dense", [a, _dense_weight(node, b, False, 1.0)]))
    else:
        node.bind(node.op("matmul", [a, b]))


def _check_einsum(node: Node) -> str | None:
    problem = einsum.equation_problem(node.attr_str("equation"), len([n for n in node.input_names if n]))
    return not_lowered(problem) if problem is not None else None


@converter("Einsum", since=12, check=_check_einsum)
def einsum_op(node: Node) -> None:
    """``torch.einsum``: transposes and reshapes around one matmul (dense for a constant right
    operand), see ``tidlc.frontend_einsum``."""
    node.bind(einsum.einsum(node, node.attr_str("equation"), [node.input(i) for i in range(node.num_inputs)]))


# ----------------------------------------------------------------------------- normalisation
def _training(node: Node) -> bool:
    """Whether the BatchNormalization normalizes with the statistics of its own input: the
    ``training_mode`` attribute from opset 14, the presence of the extra outputs before it."""
    if node.opset >= 14:
        return bool(node.attr_int("training_mode", 0))
    return any(name for name in node.output_names[1:])


def _check_batchnorm(node: Node) -> str | None:
    if _training(node) and any(node.output_used(i) for i in range(1, node.num_outputs)):
        return "the running / saved mean and variance outputs (training) are not supported " \
               "(export the model in eval mode, or use only Y)"
    return None


@converter("BatchNormalization", since=1, check=_check_batchnorm)
def batch_normalization(node: Node) -> None:
    x = node.input(0)
    scale, bias, mean, var = (node.input(i) for i in range(1, 5))
    eps = node.attr_float("epsilon", 1e-5)
    if _training(node):
        node.bind(_batch_statistics_norm(node, x, scale, bias, eps))
        return
    spatial = node.attr_int("spatial", 1) if node.opset < 9 else 1
    if spatial or (x.type.rank is not None and x.type.rank <= 2):
        node.bind(node.op("batchnorm", [x, scale, bias, mean, var], epsilon=eps))
        return
    # spatial=0 (opsets 7-8): statistics per element of (C, D1, ...), a broadcast affine
    std = node.op("sqrt", [node.op("add", [var, scalar(node, eps, var, "epsilon")])])
    mul = node.op("div", [scale, std])
    shift = node.op("sub", [bias, node.op("mul", [mean, mul])])
    node.bind(node.op("add", [node.op("mul", [x, mul]), shift]))


def _batch_statistics_norm(node: Node, x, scale, bias, eps: float):
    """Training-mode Y: each channel normalized with the mean and (population) variance of its
    own values over every other axis, then the affine. The weight standardization of NF-Nets
    (timm's ScaledStdConv2d, exported in eval mode) is such a node on a conv's weights, which
    constant folding then evaluates: the channel axis moves first, the rest flattens into one
    axis that a layer normalization normalizes, and the shape comes back."""
    shape = x.type.shape
    if shape is None or len(shape) < 2 or None in shape:
        raise node.error("a training-mode BatchNormalization needs a static input shape",
                         hint="give the input a size with --input-shape, or export the model in eval mode")
    rank = len(shape)
    perm = (1, 0) + tuple(range(2, rank))
    moved = node.op("transpose", [x], perm=perm) if shape[0] != 1 else x
    flat = node.op("reshape", [moved], shape=(1, shape[1], 1, int(np.prod(shape)) // shape[1]))
    normed = node.op("layernorm", [flat], axis=-1, epsilon=eps)
    back = node.op("reshape", [normed], shape=tuple(shape[i] for i in perm) if shape[0] != 1 else tuple(shape))
    if shape[0] != 1:
        back = node.op("transpose", [back], perm=perm)
    return node.op("scale", [back, scale, bias], axis=1)


@converter("ImageScaler", since=1)
def image_scaler(node: Node) -> None:
    # ONNX's experimental ImageScaler (opsets 1-9), as old Caffe2/CoreML exports such as the model
    # zoo's Tiny YOLOv2 carry it: y = scale * x + bias[c], which the passes fold into the next conv
    x = node.input(0)
    bias = np.asarray(node.attr_floats("bias", ()), np.float32)
    y = node.op("mul", [x, node.const(np.float32(node.attr_float("scale", 1.0)), "scale")])
    if bias.size:
        rank = x.type.rank or 4
        y = node.op("add", [y, node.const(bias.reshape((-1,) + (1,) * (rank - 2)), "bias")])
    node.bind(y)


@converter("LRN", since=1)
def lrn(node: Node) -> None:
    node.bind(node.op("lrn", [node.input(0)], size=node.attr_int("size"),
                      alpha=node.attr_float("alpha", 1e-4), beta=node.attr_float("beta", 0.75),
                      bias=node.attr_float("bias", 1.0)))


# ----------------------------------------------------------------------------- pooling
def _check_maxpool(node: Node) -> str | None:
    if node.output_used(1):
        return not_lowered("the Indices output is not supported (the switches MaxUnpool reads: SegNet, ENet; "
                           "TIDL has no unpooling: a nearest x2 resize or a ConvTranspose in its place, "
                           "fine-tuned, runs on TIDL)")
    return _check_window(node, "pooling")


def _pool(node: Node, mode: str, ceil_mode: int, count_include_pad: int = 0,
          dilations: bool = False) -> None:
    x = node.input(0)
    kernel = node.attr_ints("kernel_shape")
    if len(kernel) == 3:
        return _pool_depth_slices(node, x, kernel, mode, ceil_mode, count_include_pad)
    if len(kernel) not in (1, 2):
        raise node.error(f"{len(kernel)}-D pooling is not supported (1-D and 2-D only)")
    if not dilations and node.has_attr("dilations"):
        raise node.error(f"dilations need opset {10 if mode == 'max' else 19} or newer")
    win = Window(node, x, kernel)
    if ceil_mode:
        _clamp_window(win, x)
    y = node.op("pool2d", [win.lift(node, x)], mode=mode, kernel=win.kernel, strides=win.strides,
                pads=win.pads, dilations=win.dilations, ceil_mode=bool(ceil_mode),
                count_include_pad=bool(count_include_pad))
    node.bind(win.lower(node, y))


def _pool_depth_slices(node: Node, x: Value, kernel, mode: str, ceil_mode: int, count_include_pad: int) -> None:
    """A 3-D pool whose window is one deep (kernel (1, kh, kw), unpadded and undilated in depth)
    pools each depth slice in 2-D: the slices its depth stride keeps, as channels of a 2-D pool.
    LPRNet (license plates) pools with ``MaxPool3d((1, 3, 3), stride=(2, 1, 2))`` on its 4-D
    feature map, which PyTorch reads as one unbatched (C, D, H, W) volume: the depth stride picks
    every other channel. PyTorch exports that as a MaxPool with a 3-D kernel on a 4-D tensor,
    which onnxruntime refuses ("Attribute dilations has incorrect size"); tidlc reads it as
    PyTorch does. Other 3-D pools stay host ops."""
    shape = x.type.shape
    strides = node.attr_ints("strides", (1, 1, 1))
    dilations = node.attr_ints("dilations", (1, 1, 1))
    auto_pad = node.attr_str("auto_pad", "NOTSET")
    pads = _given_pads(node, "VALID" if auto_pad == "VALID" else "NOTSET", 3, " for a 3-D kernel")
    why = None
    if shape is None or len(shape) not in (4, 5) or None in shape:
        why = f"a 3-D pool of {x.type} (a static 4-D or 5-D input is lowered)"
    elif len(strides) != 3 or len(dilations) != 3 or dilations[0] != 1 or pads[0] or pads[3] \
            or auto_pad not in ("NOTSET", "VALID"):
        why = "a 3-D pool padded or dilated in depth"
    if why is not None:
        raise node.host_instead(why)
    volume = node.op("unsqueeze", [x], axes=(0,)) if len(shape) == 4 else x  # (unbatched: N = 1)
    n, c, d, h, w = volume.type.shape
    if strides[0] > 1:
        volume = node.op("slice", [volume], starts=(0,), ends=(d,), axes=(2,), steps=(strides[0],))
        d = volume.type.shape[2]
    planes = node.op("reshape", [volume], shape=(n, c * d, h, w))
    y = node.op("pool2d", [planes], mode=mode, kernel=tuple(kernel[1:]), strides=tuple(strides[1:]),
                pads=(pads[1], pads[2], pads[4], pads[5]), dilations=tuple(dilations[1:]), ceil_mode=bool(ceil_mode),
                count_include_pad=bool(count_include_pad))
    ho, wo = y.type.shape[2:]
    y = node.op("reshape", [y], shape=(n, c, d, ho, wo))
    node.bind(node.op("squeeze", [y], axes=(0,)) if len(shape) == 4 else y)


def _clamp_window(win: Window, x: Value) -> None:
    """In ceil mode a window larger than the padded input is one window, clipped to it:
    Hugging Face's EfficientNet pools its 7x7 features with ``AvgPool2d(2560, ceil_mode=True)``,
    which PyTorch and onnxruntime compute as the mean of the 49 values (the overhang counts in
    no average). The kernel becomes the padded input's size (undilated axes only)."""
    shape = x.type.shape
    if shape is None or len(shape) != 4 - win.lifted or None in shape[2:]:
        return
    sizes = (1,) * win.lifted + tuple(shape[2:])
    kernel = list(win.kernel)
    for i, n in enumerate(sizes):
        padded = n + win.pads[i] + win.pads[i + 2]
        if win.dilations[i] == 1 and kernel[i] > padded:
            kernel[i] = padded
    win.kernel = tuple(kernel)


@converter("MaxPool", since=1, check=_check_maxpool)
def max_pool_v1(node: Node) -> None:
    _pool(node, "max", 0)


@converter("MaxPool", since=10, check=_check_maxpool)
def max_pool_v10(node: Node) -> None:
    # storage_order only matters for the Indices output, which is rejected
    _pool(node, "max", node.attr_int("ceil_mode", 0), dilations=True)


def _check_avgpool(node: Node) -> str | None:
    return _check_window(node, "pooling")


@converter("AveragePool", since=1, check=_check_avgpool)
def average_pool_v1(node: Node) -> None:
    _pool(node, "avg", 0, node.attr_int("count_include_pad", 0))


@converter("AveragePool", since=10, check=_check_avgpool)
def average_pool_v10(node: Node) -> None:
    _pool(node, "avg", node.attr_int("ceil_mode", 0), node.attr_int("count_include_pad", 0))


@converter("AveragePool", since=19, check=_check_avgpool)
def average_pool_v19(node: Node) -> None:
    _pool(node, "avg", node.attr_int("ceil_mode", 0), node.attr_int("count_include_pad", 0), dilations=True)


@converter("GlobalAveragePool", since=1)
def global_average_pool(node: Node) -> None:
    node.bind(node.op("global_pool", [node.input(0)], mode="avg"))


@converter("GlobalMaxPool", since=1)
def global_max_pool(node: Node) -> None:
    node.bind(node.op("global_pool", [node.input(0)], mode="max"))


# ----------------------------------------------------------------------------- softmax
def _softmax_2d(node: Node, log: bool) -> None:
    """Opsets < 13: the input is coerced to 2-D at ``axis`` and normalised over the second part."""
    x = node.input(0)
    rank = node.need_rank(x)
    axis = node.attr_int("axis", 1)
    axis = axis + rank if axis < 0 else axis
    if not 0 <= axis < rank:
        raise node.error(f"axis {node.attr_int('axis', 1)} out of range for rank {rank}")
    if axis == rank - 1:  # the 2-D view normalises the last axis only: a plain softmax
        node.bind(node.op("softmax", [x], axis=axis, log=log))
        return
    flat = node.op("flatten", [x], axis=axis)
    y = node.op("softmax", [flat], axis=1, log=log)
    if x.type.is_static:
        node.bind(node.op("reshape", [y], shape=tuple(x.shape)))
    else:
        node.bind(node.op("reshape", [y, node.op("shape", [x])]))


def _softmax_13(node: Node, log: bool) -> None:
    x = node.input(0)
    axis = node.attr_int("axis", -1)
    rank = x.type.rank
    if rank is not None:
        if not -rank <= axis < rank:
            raise node.error(f"axis {axis} out of range for rank {rank}")
        axis %= rank
    node.bind(node.op("softmax", [x], axis=axis, log=log))


@converter("Softmax", "LogSoftmax", since=1)
def softmax_v1(node: Node) -> None:
    _softmax_2d(node, log=node.op_type == "LogSoftmax")


@converter("Softmax", "LogSoftmax", since=13)
def softmax_v13(node: Node) -> None:
    _softmax_13(node, log=node.op_type == "LogSoftmax")


# ----------------------------------------------------------------------------- layer normalization
@converter("LayerNormalization", since=17)
def layer_normalization(node: Node) -> None:
    """Y = (X - mean) / sqrt(var + epsilon) * Scale + B over the axes from ``axis`` on; the
    optional Mean / InvStdDev outputs (training) are not produced."""
    if node.output_used(1) or node.output_used(2):
        raise node.error("the Mean / InvStdDev outputs are not supported", hint="use only Y (inference)")
    if node.attr_int("stash_type", 1) != 1:
        raise node.error("stash_type other than 1 (float) is not supported")
    x = node.input(0)
    operands = [x, node.input(1)] + ([node.input(2)] if node.has_input(2) else [])
    node.bind(node.op("layernorm", operands, axis=node.attr_int("axis", -1),
                      epsilon=node.attr_float("epsilon", 1e-5)))


@converter("InstanceNormalization", since=1)
def instance_normalization(node: Node) -> None:
    """Y = (X - mean) / sqrt(var + epsilon) * scale[c] + B[c], the statistics per sample and channel
    over the spatial axes: a layer normalization of those axes, then a channel-wise affine."""
    x = node.input(0)
    eps = node.attr_float("epsilon", 1e-5)
    shape = x.type.shape
    if shape is not None and len(shape) > 3 and all(d is not None for d in shape):
        # TIDL's LayerNorm normalizes the last axis: N,C,H,W -> N,C,1,H*W and back
        flat = node.op("reshape", [x], shape=(shape[0], shape[1], 1, int(np.prod(shape[2:]))))
        normed = node.op("reshape", [node.op("layernorm", [flat], axis=-1, epsilon=eps)], shape=tuple(shape))
    else:
        normed = node.op("layernorm", [x], axis=2, epsilon=eps)
    node.bind(node.op("scale", [normed, node.input(1), node.input(2)], axis=1))


__all__ = ["Window", "scalar"]
