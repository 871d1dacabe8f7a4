"""Which IR ops become which TIDL layers, and the integer tables the cycle kernel reads.

After ``-O2`` a convolution carries its batchnorm and activation, so one IR op
is one TIDL layer; an activation TIDL does not fuse into its layer (sigmoid,
tanh, GELU, ELU, ...: only ReLU, ReLU6, clip and, on a conv or dense, PReLU
and leaky ReLU fuse) is a second layer after it, as the compiled net.bin has it
(the quantizer splits it off: :func:`split_activation`). The mapping
(docs/perf.md has the same table):

==========================================  ==================  ==========================
IR op                                       TIDL layer          runs on
==========================================  ==================  ==========================
conv2d (groups < Cin)                       Convolution         MMA
conv2d (depthwise: Cin/groups == 1)         Convolution         C7x vector (kH*kW taps)
deconv2d                                    Deconv2D            MMA (K = Cin*kH*kW/s^2)
dense, matmul                               InnerProduct        MMA (no width alignment)
scale, batchnorm, prelu, activations        BatchNorm           C7x vector
add, sub, mul, max, min, div, pow           EltWise             C7x vector
pool2d, global_pool                         Pooling             C7x vector
softmax, argmax, reduce, lrn, normalize     SoftMax, ArgMax...  C7x vector
resize                                      Resize              C7x vector
concat, split, slice, pad, transpose,       Concat, Slice, ...  C7x vector (copies)
depth_to_space, shuffle_channel, gather
reshape, flatten, squeeze, unsqueeze,       Reshape, Flatten,   nothing: same buffer
identity, dropout                           Squeeze (in place)
cast                                        DataConvert         C7x vector
detection_output                            DetectionOutput     C7x vector (rough)
prior_box, shape, constant_of_shape         (folded at import)  nothing
==========================================  ==================  ==========================

The tables below are TIDL's own (its layer names and the cost of each
layer kind), keyed by op kind. Ops a plugin brings fall back on their traits
and ``category``: ``Trait.MAC`` (or category ``mac``) -> MMA (from its MAC
count), ``vector`` -> vector, ``data`` -> copy, others -> nothing.
"""
from __future__ import annotations

import math

import attrs
import numpy as np
from tidlc.backends.tidl.fixed.spec_kernels import CLAMP_ACTS, FUSED_PRELU
from tidlc.backends.tidl.perf import columns as C

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import Trait

# Vector instructions per output vector, in milli-ops (1000 = one instruction).
# Estimates: one load+op+store pipeline per vector for simple maps, a lookup
# table (4) for transcendental activations, one instruction per window tap.
_ACT_COST = {"none": 0, "relu": 0, "relu6": 0, "clip": 0, "leaky_relu": 1000, "prelu": 1000,
             "sigmoid": 3000, "tanh": 3000, "hardsigmoid": 1000, "hardswish": 2000, "elu": 3000,
             "gelu": 3000}


def split_activation(op: Op) -> str | None:
    """The fused activation of ``op`` that runs as a layer of its own once compiled (TIDL fuses
    ReLU, ReLU6 and clip into any layer, PReLU and leaky ReLU into a conv or dense; the quantizer
    splits off the others: backends/tidl/quantize/prepare.py), else None."""
    act = op.attrs.get("act", "none")
    if act in CLAMP_ACTS or (act in FUSED_PRELU and op.kind in ("conv2d", "dense")):
        return None
    return act


_VECTOR_OPS = {  # kind -> (TIDL layer, milli-ops per output vector)
    "scale": ("BatchNorm", 2000), "batchnorm": ("BatchNorm", 2000), "prelu": ("BatchNorm", 2000),
    "relu": ("BatchNorm", 1000), "relu6": ("BatchNorm", 1000), "clip": ("BatchNorm", 1000),
    "leaky_relu": ("BatchNorm", 2000), "sigmoid": ("Sigmoid", 4000), "tanh": ("Tanh", 4000),
    "hardsigmoid": ("HardSigmoid", 2000), "hardswish": ("BatchNorm", 3000), "elu": ("ELU", 4000),
    "gelu": ("BatchNorm", 4000), "layernorm": ("LayerNorm", 4000),  # (two passes: the sums, then the rows)
    "add": ("EltWise", 2000), "sub": ("EltWise", 2000), "mul": ("EltWise", 2000),
    "max": ("EltWise", 2000), "min": ("EltWise", 2000), "div": ("EltWise", 6000), "pow": ("EltWise", 6000),
    "exp": ("Unary", 4000), "log": ("Unary", 4000), "sqrt": ("Unary", 4000), "abs": ("Unary", 1000),
    "neg": ("Unary", 1000), "reciprocal": ("Unary", 4000), "floor": ("Unary", 1000),
    "ceil": ("Unary", 1000), "erf": ("Unary", 4000), "softplus": ("Unary", 4000),
    "where": ("Where", 3000), "cast": ("DataConvert", 1000), "expand": ("Copy", 1000),
    "resize": ("Resize", 3000), "concat": ("Concat", 1000), "split": ("Slice", 1000),
    "slice": ("Slice", 1000), "pad": ("Pad", 1000), "transpose": ("Transpose", 2000),
    "depth_to_space": ("DepthToSpace", 2000), "shuffle_channel": ("ShuffleChannel", 2000),
    "gather": ("Gather", 2000), "normalize": ("Normalize", 4000),
    "data_convert": ("DataConvert", 1000),
}
# ONNX QDQ and int8 TFLite models import QuantizeLinear/DequantizeLinear as these; the quantize pass
# takes each pair as the tensor's range and removes it (docs/quantization.md, "Pre-quantized models"),
# so the estimate of the float graph prices them as views (MobileNetV3-Large QDQ: 8.16 ms as 367
# layers before, the float model's 3.24 ms after)
_QDQ = {"quantize": "(QuantizeLinear)", "dequantize": "(DequantizeLinear)"}
_ON_INPUT = {  # reductions: the work is proportional to the input, not the output
    "global_pool": ("Pooling", 1000), "softmax": ("SoftMax", 8000), "argmax": ("ArgMax", 2000),
    "reduce": ("Reduce", 1000), "lrn": ("LRN", 8000), "detection_output": ("DetectionOutput", 8000),
}
_VIEWS = {"reshape": "Reshape", "flatten": "Flatten", "squeeze": "Squeeze", "unsqueeze": "Reshape",
          "identity": "Identity", "dropout": "DropOut"}
_FREE = {"prior_box": "PriorBox", "shape": "Shape", "constant_of_shape": "ConstData"}
_MMA = {"conv2d": "Convolution", "deconv2d": "Deconv2D", "dense": "InnerProduct", "matmul": "InnerProduct"}


@attrs.define
class LayerInfo:
    """One TIDL layer: what the report shows besides the kernel's numbers."""

    name: str
    op: str  # IR op kind
    tidl: str  # TIDL layer type
    unit: str  # mma | vector | none
    macs: int
    out_shape: tuple
    alias: int = -1  # NONE layers: the tensor they view (for "where the output lives")
    note: str = ""  # e.g. "depthwise"


@attrs.define
class Tables:
    """Everything the kernel needs, for one graph at one precision."""

    layers: np.ndarray  # (n, L_COLS)
    in_ptr: np.ndarray
    in_idx: np.ndarray
    out_ptr: np.ndarray
    out_idx: np.ndarray
    tensors: np.ndarray  # (t, T_COLS)
    info: list[LayerInfo]
    tensor_names: list[str]
    bits: int


def _static(value: Value, op: Op) -> tuple[int, ...]:
    t = value.type
    if not t.is_static:
        if op.kind == "input":  # the model's own input: name the --input-shape to give
            from tidlc.shapes import dynamic_input_error
            raise dynamic_input_error(op.attrs["name"], t.shape, t.layout, op.where())
        raise TidlcError(f"cannot estimate '{op.name or op.kind}': its {'output' if value.producer is op else 'input'} "
                         f"shape {t.shape} is not fully known", op.where(),
                         hint="give --input-shape NAME=d0,d1,... for dynamic inputs")
    return tuple(int(d) for d in t.shape)


def _shape(value: Value, op: Op) -> tuple[int, ...]:
    """The static shape in NCHW order (TIDL's layout): an NHWC tensor's channels move to axis 1."""
    shape = _static(value, op)
    if value.type.layout == "NHWC" and len(shape) == 4:
        n, h, w, c = shape
        return n, c, h, w
    return shape


def _elem_bytes(value: Value, bits: int) -> int:
    q = value.type.quant
    b = q.bits if q is not None else bits
    return 1 if b <= 8 else 2 if b <= 16 else 4


def _nchw(shape: tuple) -> tuple[int, int, int, int]:
    """(N, C, H, W) of a tensor of any rank: trailing axes are H, W; leading ones fold into N."""
    if len(shape) == 0:
        return 1, 1, 1, 1
    if len(shape) == 1:
        return 1, 1, 1, shape[0]
    if len(shape) == 2:
        return 1, shape[0], 1, shape[1]
    if len(shape) == 3:
        return 1, shape[0], shape[1], shape[2]
    return math.prod(shape[:-3]), shape[-3], shape[-2], shape[-1]


def _row(kind: int, **cols: int) -> list[int]:
    row = [0] * C.L_COLS
    row[C.L_KIND] = kind
    row[C.L_ALIGN] = 1
    row[C.L_GROUPS] = 1
    for key, value in cols.items():
        row[getattr(C, "L_" + key.upper())] = int(value)
    return row


def _is_const(v: Value, derived: set[int] | frozenset[int]) -> bool:
    """A constant, or computed from constants only (``derived``: e.g. weights behind a dequantize)."""
    return v.producer is not None and v.producer.kind == "const" or id(v) in derived


@attrs.define
class Classifier:
    """Turns one op into a kernel row, given the precision and the device's row granularity.

    Rows are computed in multiples of ``width_align`` columns (``width_align_stride2``
    for strided layers); feature maps are stored with that line pitch too.
    """

    bits: int = 8
    bias_in_k: bool = True
    width_align: int = 8
    width_align_stride2: int = 16
    derived: set = attrs.Factory(set)  # id(Value) of constant-derived results (not feature maps)

    def align(self, stride: int) -> int:
        return self.width_align_stride2 if stride >= 2 else self.width_align

    def tensor_bytes(self, shape: tuple, elem: int) -> int:
        """Bytes of a stored feature map: rows of rank >= 3 tensors have the aligned line pitch."""
        if len(shape) >= 3:
            a = self.width_align
            return math.prod(shape[:-1]) * (-(-shape[-1] // a) * a) * elem
        return math.prod(shape) * elem

    def const_bytes(self, op: Op, elem: int) -> int:
        """Bytes of the constant operands (weights, per-channel parameters)."""
        return sum(math.prod(v.type.shape) * elem for v in op.operands
                   if _is_const(v, self.derived) and v.type.shape is not None)

    def is_const(self, v: Value) -> bool:
        return _is_const(v, self.derived)

    # -- rows -----------------------------------------------------------------
    def mma_row(self, op: Op, elem: int) -> list[int] | None:
        """The MMA row of a conv / deconv / dense / matmul, or None for a depthwise conv."""
        out = _static(op.results[0], op)
        kind = op.kind
        bias = int(len(op.operands) > 2 and self.bias_in_k)
        if kind in ("conv2d", "deconv2d"):
            x = _static(op.operands[0], op)
            w = _static(op.operands[1], op)
            n, cout, ho, wo = out
            groups = op.attrs["groups"]
            kh, kw = w[2], w[3]
            if kind == "conv2d":
                if w[1] == 1 and groups > 1 and groups == x[1]:
                    return None  # depthwise
                k = w[1] * kh * kw
                stride = op.attrs["strides"][1]
            else:  # each output pixel sums ceil(kH/sH) * ceil(kW/sW) taps of every input channel
                sh, sw = op.attrs["strides"]
                k = (x[1] // groups) * math.ceil(kh / sh) * math.ceil(kw / sw)
                stride = 1
            return _row(C.KIND_MMA, rows=n * ho, w=wo, align=self.align(stride), k=k + bias,
                        cout_g=cout // groups, groups=groups, elem=elem,
                        wbytes=math.prod(w) * elem + cout * 4)
        if kind == "dense":
            m, k = _static(op.operands[1], op)
            rows = math.prod(out[:-1]) if len(out) > 1 else 1
            return _row(C.KIND_MMA, rows=rows, w=1, align=1, k=k + bias, cout_g=m, elem=elem,
                        wbytes=m * k * elem + m * 4)
        # matmul: a (..., M, K) x b (..., K, N), b a weight or another feature map
        a = _static(op.operands[0], op)
        _static(op.operands[1], op)
        rows = math.prod(out[:-1]) if len(out) > 1 else 1
        return _row(C.KIND_MMA, rows=rows, w=1, align=1, k=a[-1] if a else 1, cout_g=out[-1] if out else 1,
                    elem=elem, wbytes=self.const_bytes(op, elem))

    def vector_row(self, op: Op, work: tuple, ops_milli: int, elem: int, stride: int = 1,
                   weights: bool = True) -> list[int]:
        n, c, h, w = _nchw(work)
        return _row(C.KIND_VEC, rows=h, w=w, align=self.align(stride) if len(work) >= 3 else 1,
                    planes=n * c, ops=ops_milli, elem=elem, wbytes=self.const_bytes(op, elem) if weights else 0)

    def classify(self, op: Op, bits: int) -> tuple[list[int] | None, str, str, str]:
        """(row or None for a view / folded op, TIDL layer name, unit, note)."""
        kind = op.kind
        out_v = op.results[0]
        elem = _elem_bytes(out_v, bits)
        act_cost = 0 if split_activation(op) else _ACT_COST.get(op.attrs.get("act", "none"), 1000)
        if kind in _MMA:
            row = self.mma_row(op, elem)
            if row is not None:
                return row, _MMA[kind], "mma", ""
            # depthwise: one vector MAC per tap per output vector (+ the fused activation)
            w = _static(op.operands[1], op)
            cost = w[2] * w[3] * 1000 + act_cost
            return (self.vector_row(op, _shape(out_v, op), cost, elem, op.attrs["strides"][1]),
                    "Convolution", "vector", "depthwise")
        if kind in _VIEWS:
            return None, _VIEWS[kind], "none", "view"
        if kind in _QDQ:  # a pre-quantized model's quantize/dequantize: a range, not a layer, once compiled
            return None, _QDQ[kind], "none", "view"
        if kind in _FREE:
            return None, _FREE[kind], "none", "folded"
        if kind == "pool2d":
            kh, kw = op.attrs["kernel"]
            cost = kh * kw * 1000 + (1000 if op.attrs["mode"] == "avg" else 0)
            return (self.vector_row(op, _shape(out_v, op), cost, elem, op.attrs["strides"][1]),
                    "Pooling", "vector", "")
        if kind in _ON_INPUT:
            tidl, cost = _ON_INPUT[kind]
            work = max((_shape(v, op) for v in op.operands if not self.is_const(v)),
                       key=math.prod, default=_shape(out_v, op))
            return self.vector_row(op, work, cost, elem), tidl, "vector", ""
        if kind in _VECTOR_OPS:
            tidl, cost = _VECTOR_OPS[kind]
            if kind not in ("relu", "relu6", "clip"):
                cost += act_cost
            work = max((_shape(v, op) for v in op.results), key=math.prod)
            if kind == "split":
                work = _shape(op.operands[0], op)
            return self.vector_row(op, work, cost, elem), tidl, "vector", ""
        category = op.opdef.category
        if op.opdef.has(Trait.MAC) or category == "mac":  # a plugin's MAC op: an inner product with its MACs
            macs = int(op.opdef.macs(op) or 0)
            out = _shape(out_v, op)
            n, c, h, w = _nchw(out)
            k = max(1, macs // max(1, math.prod(out)))
            return (_row(C.KIND_MMA, rows=n * h, w=w, align=self.width_align, k=k, cout_g=c, elem=elem,
                         wbytes=self.const_bytes(op, elem)), "Custom", "mma", "")
        if category in ("vector", "data", "detection"):
            cost = {"vector": 2000, "data": 1000, "detection": 8000}[category]
            return self.vector_row(op, _shape(out_v, op), cost, elem), "Custom", "vector", ""
        if kind != "host":  # any other op (MediaPipe's crop geometry: a 4x4 matrix from 478 points):
            # a few vector operations per element of its largest tensor, not 0 cycles
            work = max((_shape(v, op) for v in [*op.operands, *op.results] if not self.is_const(v)),
                       key=math.prod)
            return self.vector_row(op, work, 4000, elem), "Custom", "vector", "rough cost"
        return None, "Custom", "none", "no cost model"


def build_tables(graph: Graph, bits: int = 8, bias_in_k: bool = True, layers_16bit=(),
                 width_align: int = 8, width_align_stride2: int = 16) -> Tables:
    """Walk the graph in order; one layer per compute op, one tensor per feature map.

    ``bits`` is the precision of every layer, except those named in
    ``layers_16bit`` (mixed precision) and tensors whose type says otherwise.
    Ops computed from constants only (weight pre-processing) are folded: no layer.
    """
    wide = set(layers_16bit)
    cls = Classifier(bits, bias_in_k, width_align, width_align_stride2)
    tensor_of: dict[int, int] = {}  # id(Value) -> tensor index
    t_bytes: list[int] = []
    t_first: list[int] = []
    t_last: list[int] = []
    t_names: list[str] = []
    rows: list[list[int]] = []
    info: list[LayerInfo] = []
    ins: list[list[int]] = []
    outs: list[list[int]] = []

    def new_tensor(v: Value, producer_layer: int, op: Op, layer_bits: int) -> int:
        shape = _shape(v, op)
        tensor_of[id(v)] = len(t_bytes)
        t_bytes.append(cls.tensor_bytes(shape, _elem_bytes(v, layer_bits)))
        t_first.append(producer_layer)
        t_last.append(producer_layer)
        t_names.append(v.name or op.name or op.kind)
        return len(t_bytes) - 1

    for op in graph.ops:
        if op.kind == "input":
            new_tensor(op.results[0], -1, op, bits)
            continue
        if op.kind == "const":
            continue
        if op.operands and all(cls.is_const(v) for v in op.operands):
            cls.derived.update(id(v) for v in op.results)
            continue
        index = len(rows)
        feature_inputs = [tensor_of[id(v)] for v in op.operands if id(v) in tensor_of]
        for t in feature_inputs:
            t_last[t] = max(t_last[t], index)
        layer_bits = 16 if op.name in wide else bits
        row, tidl, unit, note = cls.classify(op, layer_bits)
        macs = int(op.opdef.macs(op) or 0) if unit == "mma" or note == "depthwise" else 0
        out_shape = op.results[0].type.shape or ()
        if row is None:
            # a view shares its input's buffer: its results are that tensor; a folded op
            # (prior boxes, shape arithmetic) has no feature-map output at all
            alias = feature_inputs[0] if feature_inputs and note == "view" else -1
            for v in op.results:
                if alias >= 0:
                    tensor_of[id(v)] = alias
            rows.append(_row(C.KIND_NONE))
            ins.append([])
            outs.append([])
            info.append(LayerInfo(op.name or op.kind, op.kind, tidl, unit, 0, tuple(out_shape), alias, note))
            continue
        rows.append(row)
        ins.append(feature_inputs)
        outs.append([new_tensor(v, index, op, layer_bits) for v in op.results])
        info.append(LayerInfo(op.name or op.kind, op.kind, tidl, unit, macs, tuple(out_shape), -1, note))
        act = split_activation(op)
        if act is not None and len(op.results) == 1:  # its own layer: reads the pre-activation tensor
            act_tidl, cost = _VECTOR_OPS.get(act, ("BatchNorm", 4000))
            elem = _elem_bytes(op.results[0], layer_bits)
            rows.append(cls.vector_row(op, _shape(op.results[0], op), cost, elem, weights=False))
            ins.append([outs[-1][0]])
            t_last[outs[-1][0]] = index + 1
            outs.append([new_tensor(op.results[0], index + 1, op, layer_bits)])
            info.append(LayerInfo(f"{op.name or op.kind}.{act}", act, act_tidl, "vector", 0, tuple(out_shape), -1, ""))

    unknown = sorted(wide - {op.name for op in graph.ops})
    if unknown:
        raise TidlcError(f"16-bit layer name(s) not in the graph: {', '.join(unknown)}",
                         hint="use the layer names `tidlc perf` prints")
    pinned = [0] * len(t_bytes)
    for op in graph.input_ops:
        pinned[tensor_of[id(op.results[0])]] = 1
    n_layers = len(rows)
    for v in graph.outputs:
        t = tensor_of.get(id(v))
        if t is not None:
            pinned[t] = 1
            t_last[t] = n_layers  # read by the application after the last layer
    for t in range(len(t_bytes)):  # inputs nobody reads still arrive at layer 0
        if t_first[t] < 0:
            t_last[t] = max(t_last[t], 0)

    def csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        ptr = np.zeros(len(lists) + 1, dtype=np.int64)
        ptr[1:] = np.cumsum([len(x) for x in lists]) if lists else 0
        idx = np.array([t for x in lists for t in x], dtype=np.int64)
        return ptr, idx

    in_ptr, in_idx = csr(ins)
    out_ptr, out_idx = csr(outs)
    tensors = np.zeros((len(t_bytes), C.T_COLS), dtype=np.int64)
    if len(t_bytes):
        tensors[:, C.T_BYTES] = t_bytes
        tensors[:, C.T_FIRST] = t_first
        tensors[:, C.T_LAST] = t_last
        tensors[:, C.T_PINNED] = pinned
    layers = np.array(rows, dtype=np.int64).reshape(len(rows), C.L_COLS)
    return Tables(layers, in_ptr, in_idx, out_ptr, out_idx, tensors, info, t_names, bits)
