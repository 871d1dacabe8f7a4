"""What the TensorFlow and TFLite importers share.

* :class:`ConverterTable`: op name -> converter function (+ an optional check
  run on every node before anything is converted, so all problems of a model
  are reported at once).
* :class:`ImporterBase`: builds the IR with a :class:`~tidlc.ir.builder.Builder`
  and *folds constants as it goes*: an op whose operands are all constants
  (and ``shape`` of a statically shaped value) becomes a ``const`` right away.
  Frozen graphs compute reshape targets (``Shape -> StridedSlice -> Pack``)
  and batch-norm factors (``Rsqrt``, ``Mul``) from constants; folding them
  at import gives the converters the plain values they need.
* The NHWC convention (docs/frontends/tensorflow.md): TensorFlow data is
  NHWC; the IR's window ops (``conv2d``, ``pool2d``, ...) are NCHW. Each
  layout-sensitive op is emitted as ``transpose -> NCHW op -> transpose``
  (:func:`nchw_op`) and the ``layout`` pass later cancels the pairs and moves
  the rest to the graph boundary. Weights are permuted at import.
* TensorFlow's padding rule (``SAME`` puts the odd pixel at the end), strided
  slices with masks, resize modes and fused activations.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np

from tidlc.diagnostics import Loc, TidlcError
from tidlc.interp import evaluate_op
from tidlc.plugins.fold_constants import check_fold_size
from tidlc.ir.builder import Builder, to_dtype
from tidlc.ir.core import Graph, Value
from tidlc.ir.types import dtype_of, numpy_dtype

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)
INT_MAX = 2**31 - 1


# ----------------------------------------------------------------------------- converter table
@attrs.frozen
class Converter:
    name: str
    convert: Callable[..., None]
    check: Callable[..., str | None] | None = None


class ConverterTable:
    """op name -> :class:`Converter`. ``@table.register("Relu", "Relu6")`` registers one function
    for several names; registering a name twice is an error."""

    def __init__(self, framework: str):
        self.framework = framework
        self._rows: dict[str, Converter] = {}

    def register(self, *names: str, check: Callable[..., str | None] | None = None):
        def decorate(fn):
            for name in names:
                if name in self._rows:
                    raise ValueError(f"{self.framework} converter for {name} is registered twice")
                self._rows[name] = Converter(name, fn, check)
            return fn
        return decorate

    def get(self, name: str) -> Converter | None:
        return self._rows.get(name)

    def names(self) -> list[str]:
        return sorted(self._rows)

    def __contains__(self, name: str) -> bool:
        return name in self._rows


# ----------------------------------------------------------------------------- importing
class ImporterBase:
    """The IR side of an importer: emitting ops (constants folded) and constants."""

    def __init__(self, path: str, options: Any, graph_name: str):
        self.path = path
        self.options = options
        self.builder = Builder(Graph(name=graph_name or "main"), file=path)

    @property
    def graph(self) -> Graph:
        return self.builder.graph

    def emit(self, kind: str, operands: Sequence[Value], attrs: dict, name: str, loc: Loc):
        op = self.builder.make(kind, list(operands), attrs, name, loc)
        folded = None
        if kind == "shape" and operands[0].type.is_static:
            folded = [np.array(operands[0].type.shape, dtype=np.int64)]
        elif op.opdef.foldable and op.opdef.compute is not None and operands and all(
                v.const_value() is not None for v in operands):
            check_fold_size(op)
            try:
                folded = evaluate_op(op, [v.const_value() for v in operands])
            except TidlcError:
                raise
            except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
                raise TidlcError(f"cannot evaluate {kind} of constants: {exc}", loc) from None
        if folded is None:
            self.graph.ops.append(op)
            return op.results[0] if len(op.results) == 1 else list(op.results)
        values = []
        for res, data in zip(op.results, folded):
            data = to_dtype(np.asarray(data), numpy_dtype(res.type.dtype))
            values.append(self.new_const(data, name, loc, layout=res.type.layout if data.ndim == 4 else None,
                                         quant=res.type.quant))
        return values[0] if len(values) == 1 else values

    def new_const(self, data: np.ndarray, name: str, loc: Loc | None = None, layout=None, quant=None) -> Value:
        try:
            dtype_of(data)
        except ValueError as exc:
            raise TidlcError(f"constant '{name}': {exc}", loc or self.path) from None
        value = self.builder.const(data, name, loc=loc, layout=layout)
        if quant is not None:
            value.type = value.type.with_quant(quant)
        return value


class NodeBase:
    """What every converter sees of one framework node: a name, a location, op emission."""

    importer: ImporterBase
    name: str
    op_type: str
    loc: Loc

    @property
    def label(self) -> str:
        return f"'{self.name}' ({self.op_type})"

    def error(self, message: str, hint: str = "", code: str = "model") -> TidlcError:
        return TidlcError(f"{self.op_type}: {message}", self.loc, hint=hint, code=code)

    def op(self, kind: str, operands: Sequence[Value], **attrs: Any):
        """Append an IR op named after this node (folded at once if all operands are constant)."""
        return self.importer.emit(kind, operands, attrs, self.name, self.loc)

    def const(self, data: Any, suffix: str = "") -> Value:
        return self.importer.new_const(np.asarray(data), f"{self.name}.{suffix}" if suffix else self.name, self.loc)

    def static_shape(self, value: Value, what: str = "input") -> tuple[int, ...]:
        if not value.type.is_static:
            raise self.error(f"needs the static shape of its {what}, which is "
                             f"{'unknown' if value.shape is None else value.type}",
                             hint="give the input shapes with --input-shape NAME=d0,d1,...")
        return tuple(value.shape)

    def need_rank(self, value: Value, what: str = "input") -> int:
        if value.type.rank is None:
            raise self.error(f"needs the rank of its {what}, which is unknown",
                             hint="give the input shapes with --input-shape NAME=d0,d1,...")
        return value.type.rank


# ----------------------------------------------------------------------------- layouts
def is_nchw(value: Value) -> bool:
    return value.type.layout == "NCHW"


def nchw_op(node: NodeBase, kind: str, x: Value, extra: Sequence[Value] = (), nhwc: bool = True,
            **attrs: Any) -> Value:
    """Run an NCHW-only IR op on ``x``: wrapped in transposes when the data is NHWC."""
    if not nhwc:
        return node.op(kind, [x, *extra], **attrs)
    xt = node.op("transpose", [x], perm=NHWC_TO_NCHW)
    y = node.op(kind, [xt, *extra], **attrs)
    return node.op("transpose", [y], perm=NCHW_TO_NHWC)


def permute_weight(node: NodeBase, w: Value, perm: Sequence[int], shape: Sequence[int] | None = None) -> Value:
    """A weight in the IR's order: a constant is permuted (and reshaped) in numpy, anything else by ops."""
    data = w.const_value()
    if data is not None:
        out = np.ascontiguousarray(np.transpose(data, perm))
        return node.const(out if shape is None else out.reshape(shape), "weight")
    out = node.op("transpose", [w], perm=tuple(perm))
    return out if shape is None else node.op("reshape", [out], shape=tuple(shape))


# ----------------------------------------------------------------------------- windows
def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow SAME padding: output ceil(size / stride); the odd pixel goes at the end."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def window_pads(node: NodeBase, padding: str, hw: Sequence[int | None], kernel: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int] = (1, 1),
                explicit: Sequence[int] | None = None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) pads for TF's ``padding`` attribute."""
    if padding == "VALID":
        return (0, 0, 0, 0)
    if padding == "EXPLICIT":
        if explicit is None or len(explicit) != 4:
            raise node.error(f"EXPLICIT padding needs 4 values (top, bottom, left, right), got {explicit}")
        top, bottom, left, right = explicit
        return (top, left, bottom, right)
    if padding != "SAME":
        raise node.error(f"padding '{padding}' is not SAME, VALID or EXPLICIT")
    if any(d is None for d in hw):
        raise node.error("SAME padding needs the static height and width of the input",
                         hint="give the input shapes with --input-shape NAME=d0,d1,...")
    (pt, pb), (pl, pr) = (same_pads(hw[i], kernel[i], strides[i], dilations[i]) for i in range(2))
    return (pt, pl, pb, pr)


def deconv_pads(node: NodeBase, padding: str, in_hw: Sequence[int], out_hw: Sequence[int],
                kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int] = (1, 1)):
    """Pads and output padding of a transposed conv that must produce ``out_hw`` (TF's
    Conv2DBackpropInput / TFLite TRANSPOSE_CONV: the forward conv's padding, read backwards)."""
    pads_begin, pads_end, extra = [], [], []
    for i in range(2):
        k_eff = (kernel[i] - 1) * dilations[i] + 1
        if padding == "SAME":
            total = max((in_hw[i] - 1) * strides[i] + k_eff - out_hw[i], 0)
            begin = total // 2
        elif padding == "VALID":
            begin = 0
        else:
            raise node.error(f"padding '{padding}' is not SAME or VALID")
        full = (in_hw[i] - 1) * strides[i] + k_eff
        end = full - out_hw[i] - begin
        pads_begin.append(begin)
        pads_end.append(max(end, 0))
        extra.append(max(-end, 0))  # a larger requested output than the sweep covers: zeros at the end
    return (pads_begin[0], pads_begin[1], pads_end[0], pads_end[1]), tuple(extra)


# ----------------------------------------------------------------------------- strided slice
def strided_slice(node: NodeBase, x: Value, begin: Sequence[int], end: Sequence[int], strides: Sequence[int],
                  begin_mask: int = 0, end_mask: int = 0, ellipsis_mask: int = 0, new_axis_mask: int = 0,
                  shrink_axis_mask: int = 0) -> Value:
    """TensorFlow's StridedSlice (all five masks) as slice + squeeze + unsqueeze."""
    rank = node.need_rank(x)
    n = len(begin)
    if len(end) != n or len(strides) != n:
        raise node.error(f"begin/end/strides have different lengths {len(begin)}/{len(end)}/{len(strides)}")
    if any(s == 0 for s in strides):
        raise node.error("a stride of 0")
    bit = lambda mask, i: bool(mask >> i & 1)
    spec_dims = sum(1 for i in range(n) if not bit(new_axis_mask, i) and not bit(ellipsis_mask, i))
    starts, ends, axes, steps, shrink, new_axes = [], [], [], [], [], []
    dim = 0  # input dim
    out_pos = 0  # position in the output (after shrinking, with new axes)
    for i in range(n):
        if bit(ellipsis_mask, i):
            span = rank - spec_dims
            dim += span
            out_pos += span
            continue
        if bit(new_axis_mask, i):
            new_axes.append(out_pos)
            out_pos += 1
            continue
        if dim >= rank:
            raise node.error(f"slice spec of {n} entries is longer than the input's rank {rank}")
        stride = strides[i]
        if bit(shrink_axis_mask, i):
            b = begin[i]
            starts.append(b)
            ends.append(b + 1 if b != -1 else INT_MAX)
            axes.append(dim)
            steps.append(1)
            shrink.append(dim)
        else:
            b = (0 if stride > 0 else INT_MAX) if bit(begin_mask, i) else begin[i]
            e = (INT_MAX if stride > 0 else -INT_MAX - 1) if bit(end_mask, i) else end[i]
            full = stride == 1 and bit(begin_mask, i) and bit(end_mask, i)
            if not full:
                starts.append(b)
                ends.append(e)
                axes.append(dim)
                steps.append(stride)
            out_pos += 1
        dim += 1
    y = x
    if axes:
        y = node.op("slice", [y], starts=starts, ends=ends, axes=axes, steps=steps)
    if shrink:
        y = node.op("squeeze", [y], axes=tuple(shrink))
    if new_axes:
        y = node.op("unsqueeze", [y], axes=tuple(new_axes))
    return y


# ----------------------------------------------------------------------------- resize
def resize_modes(bilinear: bool, align_corners: bool, half_pixel: bool) -> dict[str, str]:
    """IR resize attributes matching TF/TFLite ResizeBilinear / ResizeNearestNeighbor."""
    if bilinear:
        coord = "align_corners" if align_corners else "half_pixel" if half_pixel else "asymmetric"
        return {"mode": "linear", "coord_mode": coord}
    if align_corners:  # round(o * (in - 1) / (out - 1)), halves away from zero
        return {"mode": "nearest", "coord_mode": "align_corners", "nearest_mode": "round_prefer_ceil"}
    if half_pixel:  # floor((o + 0.5) * in / out)
        return {"mode": "nearest", "coord_mode": "tf_half_pixel_for_nn", "nearest_mode": "floor"}
    return {"mode": "nearest", "coord_mode": "asymmetric", "nearest_mode": "floor"}


def resize_nhwc(node: NodeBase, x: Value, size: Sequence[int], **modes: str) -> Value:
    """Resize the H and W of an NHWC (or, if typed so, NCHW) tensor to ``size``."""
    shape = node.static_shape(x)
    if len(shape) != 4:
        raise node.error(f"expects a 4-D input, got {x.type}")
    if len(size) != 2 or not all(int(v) > 0 for v in size) or not all(d > 0 for d in shape):
        raise node.error(f"cannot resize {x.type} to size {list(size)}: two positive values for a non-empty input")
    h_axis = 2 if is_nchw(x) else 1
    out = list(shape)
    out[h_axis], out[h_axis + 1] = int(size[0]), int(size[1])
    scales = [o / i for o, i in zip(out, shape)]
    return node.op("resize", [x], scales=scales, sizes=out, **modes)


__all__ = [
    "NCHW_TO_NHWC",
    "NHWC_TO_NCHW",
    "ConverterTable",
    "ImporterBase",
    "NodeBase",
    "deconv_pads",
    "is_nchw",
    "nchw_op",
    "permute_weight",
    "resize_modes",
    "resize_nhwc",
    "same_pads",
    "strided_slice",
    "window_pads",
]
