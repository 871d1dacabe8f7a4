"""Post-training quantization: a calibrated float graph -> the fixed-point graph (TIDL's scheme).

The rules (docs/quantization.md has the full specification):

* weights: symmetric, ``scale = 2**(bits-1) / max|w|`` (``np2``), or with
  ``max|w|`` rounded up to a power of two (``p2``); per output channel only
  for depthwise layers with ``per_channel_depthwise``; capped so the bias
  fits the accumulator;
* MAC outputs (conv2d, deconv2d, dense, scale, matmul): the accumulator scale
  is ``input scale x weight scale``; the output scale is that divided by
  ``2**shift`` with TIDL's ``roundBits`` rule ``shift = ceil(log2(max *
  acc_scale / 2**elem_bits))`` (0 if negative); outputs are unsigned when the
  range is non-negative (ReLU, ReLU6, clip >= 0); a ReLU6/clip output gets
  the full-range scale ``qmax / hi`` and the weight scale is lowered so the
  shift stays a power of two (TIDL's fixed-range rule); biases are stored
  at the accumulator scale in 32 (8-bit layers) or 64 bits (16-bit layers);
* a prelu (constant slopes) or leaky_relu whose input is a conv2d or dense
  result read by it alone is fused into that layer as TIDL does (actType 2):
  one rounding, at the full-range scale of the prelu's output (``p2``: its
  power-of-2 one), instead of two; the layer multiplies its accumulator by
  ``m`` (``PRELU_MULT_BITS`` bits) where it is >= 0 and by ``slope x m``
  where it is negative;
* eltwise, prelu, table ops and graph inputs get the full-range scale
  ``qmax / max|x|`` of their calibrated range (or of the op's declared
  ``value_range``: sigmoid, tanh, ...); concat takes the coarsest input
  scale; pooling, resize and data movement keep their input's (a 16-bit
  average pool's result type also carries ``shift = 30``: its reciprocal is
  in Q30, not Q16);
* any op without a fixed-point kernel runs in float between ``data_convert`` ops.

What an op is comes from its traits (``tidlc.ir.opdef.Trait``), so an op a
plugin declares is quantized like a builtin one: ``MAC`` ops by the
accumulator scheme, ``SCALE_PRESERVING`` ops keep their data operands' scale,
``LUT`` ops get a scale of their own (a lookup table in fixed point). Which
ops have a fixed-point kernel at all is the executor's
(``has_integer_kernel``); the rules per kind that remain (eltwise kinds,
softmax, prelu, pad, argmax, matmul) describe TIDL's kernels for them.
* every graph output ends with a ``data_convert`` to f32.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable

import attrs
import numpy as np
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.executor import CLAMP_ACTS, FUSED_PRELU, has_integer_kernel
from tidlc.backends.tidl.fixed.spec_kernels import selects_codes

from tidlc.diagnostics import TidlcError
from tidlc.ir.builder import infer_types
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import OPS, Trait
from tidlc.ir.ops.nn import channel_slopes
from tidlc.ir.types import QuantInfo, TensorType, numpy_dtype
from tidlc.partition import between_floats

from ..constraints import bias_widens_k, is_tda4vm

# constant operands TIDL's kernel for the kind reads as parameters, not tensors to quantize
KERNEL_PARAMETERS = {"prelu": (1,), "layernorm": (1, 2)}  # operands that are the kernel's parameters
PRELU_MULT_BITS = 16  # a fused prelu's multipliers: the positive side's width (prelu_bits)
MIN_RANGE = 2.0 ** -16  # a tensor that is always 0 still gets a finite scale
# a concat at a graph output whose inputs' ranges differ more than this joins in float (its inputs
# keep their own steps): YOLOv8's boxes in pixels beside its class scores in [0, 1]
CONCAT_APART = 8.0
TABLE_WINDOW_POINTS = (1 << 18) + 1  # samples of a table op's function when finding where it saturates


@attrs.define
class QuantConfig:
    bits: int = 8
    style: str = "np2"  # np2 | p2
    per_channel_depthwise: bool = False
    layers_16bit: frozenset = frozenset()  # op (layer) names computed in 16 bits
    ensure_bias: bool = False  # give every MAC layer a bias (bias calibration adjusts it), unless it
    # would add an MMA panel to the layer's K on ``device`` (constraints.bias_widens_k)
    full_range_16: bool = False  # -O3: 16-bit MAC layers may take a full-range output scale (full_range_pays)
    # the device the layers run on (None: no device rules). TDA4VM: a matmul of two computed
    # tensors takes both signed (TI's operator table: "For TDA4VM variable input case, doesn't
    # support unsigned input"): the non-negative one (softmax probabilities, a ReLU's map) is
    # quantized signed, one bit less (:func:`signed_sources`)
    device: str | None = None


@attrs.define
class QuantResult:
    graph: Graph
    origin: dict[int, Value]  # fixed-point value id -> the prepared float value it stands for
    float_islands: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)


def _variadic(opdef) -> bool:
    return bool(opdef.operands) and opdef.operands[0].endswith(("+", "*"))


def data_operands(op: Op) -> list[int]:
    """The operands that are tensors to quantize: a SCALE_PRESERVING op's data operands (those of
    a variadic first operand, else the first: the others are shapes or indices), else all but
    the kernel's parameters."""
    opdef = op.opdef
    if opdef.has(Trait.SCALE_PRESERVING) and not _variadic(opdef):
        return [0] if op.operands else []
    params = KERNEL_PARAMETERS.get(op.kind, ())
    return [i for i in range(len(op.operands)) if i not in params]


def inherits_scale(op: Op) -> bool:
    """The result takes the scale of the op's one data operand: no range of its own to calibrate."""
    return op.opdef.has(Trait.SCALE_PRESERVING) and not _variadic(op.opdef)


def scale_inheritors(op: Op, users) -> list[Op]:
    """The ops downstream of ``op`` that take its scale, through one another, in the order found:
    data movement, pooling and concat (``Trait.SCALE_PRESERVING``); ``users``: value id -> readers."""
    found, todo, seen = [], [op], {id(op)}
    while todo:
        cur = todo.pop()
        for r in cur.results:
            for user in users.get(id(r), ()):
                if id(user) in seen or not user.opdef.has(Trait.SCALE_PRESERVING):
                    continue
                seen.add(id(user))
                found.append(user)
                todo.append(user)
    return found


def _builtin_inherit_ops() -> frozenset:
    import tidlc.ir.ops  # noqa: F401  (registers the builtin ops)
    return frozenset(name for name in OPS.with_trait(Trait.SCALE_PRESERVING)
                     if OPS.get(name).plugin == "builtin" and not _variadic(OPS.get(name)))


# the builtin kinds inherits_scale() is true of, for callers that still test op.kind (api.py)
INHERIT_OPS = _builtin_inherit_ops()


def float_pad(op) -> bool:
    """A pad TIDL's Pad layer does not make (it pads with a constant): reflect, symmetric, edge or
    wrap padding (monodepth2's ReflectionPad2d) stays float (at -O2 fuse-patterns has made it
    gathers). It then needs a range of its own."""
    return op.kind == "pad" and op.attrs["mode"] != "constant"


def sets_own_precision(op) -> bool:
    """Whether ``--16bit-layers`` naming ``op`` makes its result 16-bit: MAC, element-wise, table
    and average-pool layers change precision; data movement, max pooling, concat and softmax take
    their inputs' (tidl-facts: "only Conv, BatchNorm, Pooling (not max), EltWise can change
    precision between in/out; others inherit"), as :meth:`Quantizer.quantize_op` does."""
    if op.kind in ("softmax", "data_convert", "argmax") or selects_codes(op):
        return False
    return not op.opdef.has(Trait.SCALE_PRESERVING) or _is_average(op)


def layers_for_16bit(op) -> list[str]:
    """What ``--16bit-layers`` must name to compute ``op`` in 16 bits: the op itself when it sets
    its own precision, else the layers that set it (:func:`precision_sources`)."""
    if sets_own_precision(op) and op.name:
        return [op.name]
    return precision_sources(op)


def precision_sources(op) -> list[str]:
    """The layers that set the precision of ``op`` (a concat, slice, reshape, max pool: TIDL changes
    precision only in MAC, element-wise, table and average-pool layers; the others take their
    inputs'), by their names in the float graph, what ``--16bit-layers`` takes: the layers before it
    that can change precision, found through the ones that cannot."""
    names: list[str] = []
    stack, seen = list(op.operands), set()
    while stack:
        v = stack.pop(0)
        p = v.producer
        if p is None or id(p) in seen or p.kind in ("const", "input"):
            continue
        seen.add(id(p))
        moves = p.kind == "data_convert" or (p.opdef.has(Trait.SCALE_PRESERVING) and not (
            p.kind == "pool2d" and p.attrs.get("mode") == "avg"))
        if moves:
            stack.extend(p.operands[:1] if p.kind != "concat" else p.operands)
        elif p.name and p.name not in names:
            names.append(p.name)
    return names


def signed_sources(graph: Graph) -> frozenset:
    """The ids of the float values whose quantization sets the signedness of an operand of a
    matmul of two computed tensors: each operand, back through the ops that keep their input's
    scale (reshapes, transposes; a concat's every input), to the op that chooses it."""
    found: set[int] = set()
    for op in graph.ops:
        if op.kind != "matmul" or any(v.const_value() is not None for v in op.operands):
            continue
        stack = list(op.operands)
        while stack:
            v = stack.pop()
            p = v.producer
            if id(v) in found or p is None or p.kind == "const":
                continue
            if p.kind not in ("input", "softmax", "argmax") and (inherits_scale(p) or p.kind == "concat"):
                stack.extend(p.operands[i] for i in data_operands(p))
                continue
            found.add(id(v))
    return frozenset(found)


def is_depthwise(op: Op) -> bool:
    if op.kind != "conv2d":
        return False
    w = op.operands[1].type.shape
    x = op.operands[0].type.shape
    return w is not None and x is not None and w[1] == 1 and op.attrs["groups"] == x[1] == w[0] and x[1] > 1


def has_depthwise(graph: Graph) -> bool:
    return any(is_depthwise(op) for op in graph.ops)


def weight_range(w: np.ndarray, per_channel: bool, bits: int | None = None):
    """``max |w|`` (a float, or one per output channel if ``per_channel``). With ``bits``: the range
    whose ``2**(bits-1) / range`` scale keeps every code in ``[-2**(bits-1), 2**(bits-1) - 1]``:
    ``max(-min w, max w * q / (q - 1))`` with ``q = 2**(bits-1)``, so the largest positive weight
    is not clipped a step short (as ``max |w|`` would clip it, when it is the positive one)."""
    rows = w.reshape(w.shape[0], -1) if per_channel else w.reshape(1, -1)
    if bits is None:
        got = np.abs(rows).max(axis=1, initial=0.0)
    else:
        q = float(1 << (bits - 1))
        got = np.maximum(-rows.min(axis=1, initial=0.0), rows.max(axis=1, initial=0.0) * (q / (q - 1.0)))
    return got if per_channel else float(got[0])


def weight_scale(absmax, bits: int, style: str):
    """``2**(bits-1) / absmax`` (np2) or with absmax rounded up to a power of two (p2)."""
    absmax = np.maximum(np.asarray(absmax, dtype=np.float64), MIN_RANGE)
    if style == "p2":
        absmax = 2.0 ** np.ceil(np.log2(absmax))
    return float(1 << (bits - 1)) / absmax


def round_bits(max_abs: float, acc_scale: float, elem_bits: int) -> int:
    """TIDL's ``roundBits``: ``ceil(log2(max * accScale / 2**elemBits))``, 0 if that is negative."""
    out_div = max_abs * acc_scale / float(1 << elem_bits)
    return max(0, math.ceil(math.log2(out_div))) if out_div > 1 else 0


def full_range_scale(lo: float, hi: float, bits: int, signed: bool) -> float:
    qmax = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    r = max(abs(lo), abs(hi)) if signed else hi
    return qmax / max(r, MIN_RANGE)


def storage(bits: int, signed: bool) -> str:
    return ("i" if signed else "u") + ("8" if bits <= 8 else "16" if bits <= 16 else "32" if bits <= 32 else "64")


# how much more a weight rounding error costs the outputs than white output rounding noise of the
# same power (Quantizer.full_range_pays). Measured at -O3 (benchmarks/quant16_quality.py, 16 evaluation
# frames, 22 models): 1 cost a conv -> exp head 2.8 dB; 2 cost none more than 0.13 dB and gained up to
# 1.6; 4 cost UltraFace TFLite 2.6 dB (docs/quantization.md)
SIGNAL_LIKE = 2.0


class Quantizer:
    """Builds the fixed-point graph from a prepared float graph and the ranges of its tensors.

    ``ranges(value, bits) -> (lo, hi)`` gives the clipping range of a float value
    quantized to ``bits`` (from calibration or a pre-quantized model's hints). When it also
    has ``mean_square(value) -> float | None`` (calibration's, :class:`api.CalibratedRanges`),
    16-bit MAC layers may take a full-range output scale (:meth:`full_range_pays`).
    """

    def __init__(self, fgraph: Graph, ranges: Callable[[Value], tuple[float, float]], config: QuantConfig,
                 cache: WeightCache | None = None):
        self.f = fgraph
        self.cache = cache if cache is not None else WeightCache(keep=False)
        self.ranges = ranges
        self.mean_square = getattr(ranges, "mean_square", None)
        self.cfg = config
        self.g = Graph(fgraph.name, [], [], list(fgraph.output_names), dict(fgraph.attrs))
        self.qv: dict[int, Value] = {}  # float value id -> fixed-point value
        self.fv: dict[int, Value] = {}  # float value id -> float value in the new graph
        self.origin: dict[int, Value] = {}
        self.islands: list[str] = []
        self.notes: list[str] = []
        self.users: dict[int, list[Op]] = {}
        # (insertion-ordered dicts used as sets, like qv/fv/origin: a recorded walk's state before
        # any op is the first so many entries of each, see :class:`RecordedQuantization`)
        self.fused: dict[int, None] = {}  # prelu ops fused into the MAC layer before them
        self.windowed: dict[int, None] = {}  # float values whose range ends where their readers' tables saturate
        self.float_tail: dict[int, None] = {}  # data movement after a concat joined in float (to the outputs)
        self.marks: list[tuple[int, ...]] | None = None  # per op of the walk: the state's sizes before it
        for op in fgraph.ops:
            for v in op.operands:
                self.users.setdefault(id(v), []).append(op)
        self.must_sign = signed_sources(fgraph) if config.device and is_tda4vm(config.device) else frozenset()

    def signed(self, v: Value, lo: float) -> bool:
        """Whether float value ``v``, of lower bound ``lo``, is quantized signed."""
        return lo < 0 or id(v) in self.must_sign

    # --- helpers ---------------------------------------------------------------------
    def layer_bits(self, op: Op) -> int:
        return 16 if op.name in self.cfg.layers_16bit else self.cfg.bits

    def emit(self, op: Op) -> Op:
        self.g.ops.append(op)
        return op

    def new_op(self, kind: str, operands: list[Value], attrs_: dict, like: Op, name: str = "") -> Op:
        op = Op(kind, list(operands), [], dict(attrs_), name or like.name, like.loc)
        op.results = [Value(TensorType(None), op, i) for i in range(len(like.results) if kind == like.kind else 1)]
        for v, t in zip(op.results, infer_types(op)):
            v.type = t
        return op

    def const(self, data: np.ndarray, name: str, quant: QuantInfo | None = None, like: Value | None = None) -> Value:
        from tidlc.ir.types import dtype_of
        op = Op("const", [], [], {}, name, like.producer.loc if like is not None and like.producer else None,
                data=data)
        layout = like.type.layout if like is not None else None
        op.results = [Value(TensorType(data.shape, dtype_of(data), layout, quant), op, 0)]
        return self.emit(op).results[0]

    def float_of(self, v: Value) -> Value:
        """The float value of ``v`` in the new graph (dequantizing if needed)."""
        got = self.fv.get(id(v))
        if got is not None:
            return got
        if v.producer is not None and v.producer.kind == "const":
            # a plain float constant: a pre-quantized model's dequantized weight keeps its int8 scale on
            # its type, which a float layer (a LayerNorm's gamma) does not take and net.bin refuses
            out = self.const(v.producer.data, v.producer.name, None, v)
            self.fv[id(v)] = out
            return out
        q = self.qv[id(v)]
        op = Op("data_convert", [q], [], {"dtype": v.type.dtype if v.type.dtype[0] == "f" else "f32"},
                f"{v.producer.name}.dequantize" if v.producer else "", v.producer.loc if v.producer else None)
        op.results = [Value(TensorType(q.type.shape, op.attrs["dtype"], q.type.layout), op, 0, v.name)]
        self.emit(op)
        self.fv[id(v)] = op.results[0]
        self.origin[id(op.results[0])] = v
        return op.results[0]

    def quant_of(self, v: Value, bits: int | None = None) -> Value:
        """The fixed-point value of ``v`` (quantizing a float value or constant if needed)."""
        got = self.qv.get(id(v))
        if got is not None:
            return got
        bits = bits or self.cfg.bits
        if v.producer is not None and v.producer.kind == "const":
            data = np.asarray(v.producer.data, dtype=np.float64)
            lo, hi = float(data.min(initial=0.0)), float(data.max(initial=0.0))
            signed = lo < 0
            q = QuantInfo(bits, signed, full_range_scale(lo, hi, bits, signed))
            codes = ref.quantize(data, q.scale[0], q.qmin, q.qmax).astype(numpy_dtype(storage(bits, signed)))
            out = self.const(codes, v.producer.name, q, v)
            self.qv[id(v)] = out
            return out
        src = self.float_of(v)
        lo, hi = self.ranges(v, bits)
        signed = self.signed(v, lo)
        q = QuantInfo(bits, signed, full_range_scale(lo, hi, bits, signed))
        name = f"{v.producer.name}.quantize" if v.producer is not None and v.producer.kind != "input" else \
            (v.name or "input")
        op = Op("data_convert", [src], [], {"dtype": storage(bits, signed)}, name,
                v.producer.loc if v.producer else None)
        op.results = [Value(TensorType(src.type.shape, storage(bits, signed), src.type.layout, q), op, 0)]
        self.emit(op)
        self.qv[id(v)] = op.results[0]
        self.origin[id(op.results[0])] = v
        return op.results[0]

    def finish(self, fop: Op, op: Op, quants: list[QuantInfo | None]) -> None:
        """Give ``op``'s results their fixed-point types and bind them to ``fop``'s."""
        for fres, res, q in zip(fop.results, op.results, quants):
            if q is not None:
                res.type = TensorType(res.type.shape, storage(q.bits, q.signed), res.type.layout, q)
                self.qv[id(fres)] = res
            else:
                self.fv[id(fres)] = res
            res.name = fres.name
            self.origin[id(res)] = fres
        self.emit(op)

    def out_range(self, fop: Op, bits: int, index: int = 0) -> tuple[float, float]:
        lo, hi = self.ranges(fop.results[index], bits)
        act = fop.attrs.get("act", "none")
        if fop.opdef.value_range is not None:
            lo, hi = fop.opdef.value_range
        elif fop.kind == "clip":
            lo, hi = _finite_clip(fop.attrs["min"], fop.attrs["max"], lo, hi)
        if act == "relu":
            lo = max(lo, 0.0)
        elif act == "relu6":
            lo, hi = 0.0, 6.0
        elif act == "clip":
            lo, hi = _finite_clip(*fop.attrs["act_params"], lo, hi)
        if bits > 8 and lo < hi:
            window = self.table_window(fop.results[index], bits, lo, hi)
            if window is not None:  # beyond it the readers' tables are constant: a free, finer step
                narrowed = max(lo, window[0]), min(hi, window[1])
                if max(abs(narrowed[0]), abs(narrowed[1])) < max(abs(lo), abs(hi)):
                    self.windowed[id(fop.results[index])] = None
                lo, hi = narrowed
        return lo, hi

    def table_window(self, v: Value, bits: int, lo: float, hi: float) -> tuple[float, float] | None:
        """The input interval outside which the output code of every reader of ``v`` is constant, when
        every reader is a table op (``Trait.LUT``) computed in fixed point: at 16 bits sigmoid is
        code 0 below -11.8 and 65535 above 11.8, so a logit calibrated to [-40, 20] can end at
        [-11.8, 11.8] and round 3.4x finer (TIDL's tables saturate the same way). None otherwise
        (a graph output, another reader, no saturation within ``[lo, hi]``)."""
        readers = self.users.get(id(v), [])
        if not readers or any(o is v for o in self.f.outputs):
            return None
        window = None
        for op in readers:
            if not op.opdef.has(Trait.LUT) or not self.supported(op) or op.operands[0] is not v or \
                    op.opdef.compute is None:
                return None
            q = self.free_quant(op, 16 if op.name in self.cfg.layers_16bit else bits)
            x = np.linspace(lo, hi, TABLE_WINDOW_POINTS)
            with np.errstate(all="ignore"):
                y = np.asarray(op.opdef.compute(op, x), dtype=np.float64)
            if y.shape != x.shape:
                return None
            y = np.nan_to_num(y, nan=0.0, posinf=q.qmax / q.scale[0], neginf=q.qmin / q.scale[0])
            codes = np.clip(ref.round_half_away(y * q.scale[0]), q.qmin, q.qmax)
            first = np.flatnonzero(codes != codes[0])
            if first.size == 0:
                return None  # constant over the whole range: nothing to gain
            last = np.flatnonzero(codes != codes[-1])
            a, b = float(x[first[0] - 1]), float(x[last[-1] + 1])
            window = (a, b) if window is None else (min(window[0], a), max(window[1], b))
        return window

    def free_quant(self, fop: Op, bits: int, index: int = 0) -> QuantInfo:
        lo, hi = self.out_range(fop, bits, index)
        signed = self.signed(fop.results[index], lo)
        return QuantInfo(bits, signed, full_range_scale(lo, hi, bits, signed))

    # --- the walk ------------------------------------------------------------------------
    def run(self, start: int = 0) -> QuantResult:
        """The walk over the float graph's ops from position ``start`` (0 but for a resumed
        walk), then the outputs."""
        for fop in self.f.ops[start:]:
            if self.marks is not None:
                self.marks.append(self._sizes())
            if fop.kind == "input":
                new = Op("input", [], [], dict(fop.attrs), fop.name, fop.loc)
                new.results = [Value(fop.results[0].type.with_quant(None), new, 0, fop.results[0].name)]
                self.emit(new)
                self.fv[id(fop.results[0])] = new.results[0]
                self.origin[id(new.results[0])] = fop.results[0]
            elif fop.kind == "const" or id(fop) in self.fused:
                continue  # constants are created where they are used (quantized or float)
            elif id(fop) in self.float_tail:
                self.float_op(fop, "after a concat joined in float")
            elif not self.supported(fop):
                self.float_op(fop)
            elif between := self.between_floats(fop):
                self.float_op(fop, between)
            elif apart := self.joins_apart(fop):
                self.float_op(fop, apart)
            else:
                self.quantize_op(fop)
        if self.marks is not None:
            self.marks.append(self._sizes())  # (and after the last)
        outputs = []
        for v in self.f.outputs:
            outputs.append(self.float_of(v))
        self.emitted = self.g.ops  # (prune gives the graph a new list)
        self.g.outputs = outputs
        for v, name in zip(outputs, self.g.output_names or []):
            v.name = v.name or name
        self.g.prune()
        self.g.attrs["quantized"] = True
        return QuantResult(self.g, self.origin, self.islands, self.notes)

    # the walk's state besides the emitted ops: lists and insertion-ordered dicts that only grow
    GROWING = ("qv", "fv", "origin", "islands", "notes", "fused", "windowed", "float_tail")

    def _sizes(self) -> tuple[int, ...]:
        return (len(self.g.ops),) + tuple(len(getattr(self, name)) for name in self.GROWING)

    def resume(self, base: Quantizer, start: int) -> None:
        """Take ``base``'s state (a walk recorded with ``marks``) as it was before op ``start``."""
        sizes = base.marks[start]
        self.g.ops = base.emitted[:sizes[0]]
        for name, n in zip(self.GROWING, sizes[1:]):
            got = getattr(base, name)
            setattr(self, name, got[:n] if isinstance(got, list) else dict(itertools.islice(got.items(), n)))

    def supported(self, fop: Op) -> bool:
        kind = fop.kind
        if kind == "argmax":  # TIDL's ArgMax reads the codes (per-tensor scale: the same order); its index is exact
            return fop.operands[0].type.dtype[0] == "f"
        if not has_integer_kernel(fop) or not fop.results or fop.results[0].type.dtype[0] != "f":
            return False
        if not all(v.type.is_static for v in fop.results):
            return False
        if fop.opdef.has(Trait.MAC):
            if kind == "matmul":
                return fop.operands[1].const_value() is None or fop.operands[1].type.rank == 2
            weights_const = fop.operands[1].const_value() is not None
            bias_ok = len(fop.operands) < 3 or fop.operands[2].const_value() is not None
            if kind == "scale":
                return weights_const and bias_ok and fop.operands[0].type.rank is not None
            return weights_const and bias_ok and fop.attrs.get("act", "none") in CLAMP_ACTS
        if kind in ("add", "sub", "mul", "max", "min"):
            return fop.attrs["act"] in CLAMP_ACTS
        if kind == "softmax":
            return not fop.attrs["log"]
        if kind == "prelu":  # one slope, or one per channel: (C,), (1, C, 1, 1), PyTorch's (C, 1, 1)
            slope = fop.operands[1].const_value()
            return slope is not None and channel_slopes(slope, fop.operands[0].type.shape) is not None
        if kind == "pad":
            return not float_pad(fop)
        if kind == "layernorm":
            return all(v.const_value() is not None for v in fop.operands[1:]) and fop.operands[0].type.is_static
        return True

    def joins_apart(self, fop: Op) -> str:
        """Why ``fop`` joins in float ("" when it does not): a concat that only feeds graph outputs
        (through the ops that take its scale: data movement, pooling, concat) and joins ranges more
        than ``CONCAT_APART`` times apart: it then joins in float, each input with its own step. In fixed point the inputs share the widest one's step: YOLOv8n's output joins
        boxes in pixels (to 640) and class scores in [0, 1], and at 8 bits (step 5) every score
        was 0. The data movement and concats after it stay in float too (YOLOv8-pose joins each
        keypoint's x, y in pixels and its visibility in [0, 1], then that with the boxes)."""
        if fop.kind != "concat" or not all(id(v) in self.qv for v in fop.operands):
            return ""
        spans = [q.qmax / q.scale[0] for q in (self.qv[id(v)].type.quant for v in fop.operands)]
        if min(spans) * CONCAT_APART >= max(spans):
            return ""
        tail = scale_inheritors(fop, self.users)
        inside = {id(fop)} | {id(op) for op in tail}
        outputs = {id(v) for v in self.f.outputs}
        for op in (fop, *tail):
            for v in op.results:
                readers = self.users.get(id(v), [])
                if any(id(r) not in inside for r in readers) or not (readers or id(v) in outputs):
                    return ""  # (a layer reads it, or a value nobody reads)
        self.float_tail.update(dict.fromkeys(id(op) for op in tail))
        return f"joins ranges {min(spans):.3g} to {max(spans):.3g} at an output: each keeps its own step"

    def between_floats(self, fop: Op) -> str:
        """Why ``fop``, which has an integer kernel, runs in float ("" when it does not): it is not a
        MAC layer, every input it computes on is a float layer's result and every reader of its
        results is a float layer (or a graph output). In fixed point it would add a data convert on
        each side and round its values to one per-tensor step for nothing: MediaPipe's attention
        crop scales its 4x4 crop matrix (rotation terms near 1, translations near 100) by a constant
        between two float layers, and at 8 bits that step moved the refined lips by up to 11 px.
        TIDL's partitioner would not make a subgraph of such a lone layer either (min_subgraph_ops)."""
        floats = between_floats(fop, lambda v: id(v) not in self.qv and id(v) in self.fv,
                                lambda v: self.users.get(id(v), ()), self.supported)
        return "between float layers" if floats else ""

    def float_op(self, fop: Op, why: str = "") -> None:
        operands = [self.float_of(v) for v in fop.operands]
        op = Op(fop.kind, operands, [], dict(fop.attrs), fop.name, fop.loc, fop.data)
        # (a pre-quantized model's own integer ops run as they are, by their float reference)
        op.results = [Value(r.type.with_quant(None), op, i, r.name) for i, r in enumerate(fop.results)]
        self.finish(fop, op, [None] * len(op.results))
        # (an op on integers only, as the reshape of an argmax's indices, computes nothing in float)
        if fop.kind not in ("shape", "constant_of_shape", "prior_box") and any(
                v.type.dtype[0] == "f" for v in (*fop.operands, *fop.results)):
            self.islands.append(f"{fop.name or fop.kind} ({fop.kind}{': ' + why if why else ''})")

    def quantize_op(self, fop: Op) -> None:
        kind = fop.kind
        opdef = fop.opdef
        if opdef.has(Trait.MAC):
            return self.mac(fop)
        bits = self.layer_bits(fop)
        data_idx = data_operands(fop)
        in_bits = bits if fop.name in self.cfg.layers_16bit else None
        operands = [self.quant_of(v, in_bits) if i in data_idx else self.float_of(v) for i, v in enumerate(fop.operands)]
        op = self.new_op(kind, operands, fop.attrs, fop)
        first = operands[data_idx[0]].type.quant if data_idx else None
        if kind == "argmax":
            return self.finish(fop, op, [None])
        if opdef.has(Trait.SCALE_PRESERVING) or selects_codes(fop):  # data movement, pooling, resize, pad, concat
            qs = [attrs.evolve(operands[i].type.quant, shift=None) for i in data_idx]
            if all(q == qs[0] for q in qs):
                if _is_average(fop) and qs[0].bits > 8:  # a Q30 reciprocal: Q16 caps 7x7 at 69 dB
                    return self.finish(fop, op, [attrs.evolve(qs[0], shift=ref.AVG_POOL_SHIFT_16)])
                return self.finish(fop, op, [qs[0]] * len(op.results))
            # (concat) the widest input range at the widest precision; the other inputs are requantized
            signed = any(q.signed for q in qs)
            bits = max(q.bits for q in qs)
            r = max(q.qmax / q.scale[0] for q in qs)
            q = QuantInfo(bits, signed, full_range_scale(-r, r, bits, signed))
            return self.finish(fop, op, [q] * len(op.results))
        if kind == "softmax":  # (a 16-bit softmax of 8-bit logits: the Q30 table, outputs in steps of 1/65535)
            b = 16 if fop.name in self.cfg.layers_16bit else first.bits
            signed = self.signed(fop.results[0], 0.0)
            return self.finish(fop, op, [QuantInfo(b, signed, float(ref.qrange(b, signed)[1]))])
        if opdef.has(Trait.LUT):
            b = 16 if fop.name in self.cfg.layers_16bit else first.bits
            return self.finish(fop, op, [self.free_quant(fop, b)])
        # add/sub/mul/max/min, prelu: a free output scale
        return self.finish(fop, op, [self.free_quant(fop, bits)])

    def mac(self, fop: Op) -> None:
        kind = fop.kind
        bits_out = self.layer_bits(fop)
        x = self.quant_of(fop.operands[0], bits_out if fop.name in self.cfg.layers_16bit else None)
        xq = x.type.quant
        sx = xq.scale[0]
        bw = max(xq.bits, bits_out)
        acc_w = ref.acc_bits(bw)
        if kind == "matmul" and fop.operands[1].const_value() is None:
            wv = self.quant_of(fop.operands[1], bw)
            return self._finish_mac(fop, [x, wv], sx * wv.type.quant.scale[0], None, bits_out)
        wf = fop.operands[1]
        w = self.cache.weights(wf)
        b = np.asarray(fop.operands[2].const_value(), dtype=np.float64).reshape(-1) if len(fop.operands) > 2 else None
        if b is None and self.cfg.ensure_bias and kind != "matmul" and not (
                self.cfg.device and bias_widens_k(fop, self.cfg.device, bw)):  # (bias calibration needs one to adjust)
            b = np.zeros(_out_channels(fop, w))
        per_channel = self.cfg.per_channel_depthwise and (is_depthwise(fop) or (kind == "scale" and w.size > 1))
        given = wf.type.quant  # a pre-quantized model's weight scale
        # 16-bit weights: no positive weight clipped a step short (TIDL's 2**(bits-1) / max|w| clips the
        # largest one when it is positive: one step, 2x the rounding error of every other weight;
        # measured on UltraFace slim-320 16-bit: 46.2 -> 50.9 dB). 8-bit keeps TIDL's scale, where the
        # change is within the rounding noise (docs/quantization.md)
        absmax = self.cache.absmax(wf, per_channel, bw if bw > 8 else None)
        sw = weight_scale(absmax, bw, self.cfg.style)
        if given is not None and len(given.scale) == 1 and not given.zero_point and not per_channel \
                and given.bits <= bw and self.cfg.style == "np2":
            sw = given.scale[0] * float(1 << (bw - given.bits))  # keep the model's grid (exact codes)
        if b is not None and b.size:
            # cap the weight scale so the bias fits the accumulator (TIDL's maxScale)
            bmax = np.abs(b).max() if not per_channel else np.abs(b)
            cap = ((1 << (acc_w - 1)) - 1) / (np.maximum(bmax, MIN_RANGE) * sx)
            sw = np.minimum(sw, cap) if per_channel else min(float(sw), float(cap))
        prelu = self.fusable_prelu(fop, bits_out)
        mult_bits = None  # a fused prelu's multiplier width (prelu_bits)
        if prelu is not None:
            slopes = _slopes(prelu)
            mult_bits = prelu_bits(w, _out_channels(fop, w), np.max(sw), x.type.quant, b, bw, acc_w,
                                   float(np.abs(slopes).max()))
            p_lo, p_hi = self.out_range(prelu, bits_out)
            p_ratio = full_range_scale(p_lo, p_hi, bits_out, p_lo < 0) / (sx * float(np.min(sw)))
            if mult_bits is None or (p_lo >= 0 and np.any(slopes < 0)) or p_ratio >= 2.0 ** (mult_bits - 1):
                prelu = mult_bits = None  # (a negative slope needs a signed output: spec_kernels.prelu_sides)
        out_op = prelu or fop  # whose result the layer's is
        lo, hi = self.out_range(out_op, bits_out)
        signed = self.signed(out_op.results[0], lo)
        elem_bits = bits_out - (1 if signed else 0)
        act = fop.attrs.get("act", "none")
        if not per_channel:
            sw = float(sw)
            # (not for a pre-quantized model's weights: their codes are kept exactly)
            # (a range ended by table saturation is such a fixed range: nothing lies beyond it)
            free = self.cfg.style == "np2" and given is None and prelu is None
            target = full_range_scale(lo, hi, bits_out, signed)
            fixed = free and (act in ("relu6", "clip") or id(out_op.results[0]) in self.windowed or
                              (bits_out > 8 and self.full_range_pays(fop, w, sw, sx, target)))
            if fixed:  # TIDL: a fixed output range sets the output scale; the weight scale follows
                n = math.floor(math.log2(sw * sx / target))
                if n >= 0:
                    sw = target * 2.0 ** n / sx
                    shift = n
                else:
                    fixed = False
            s_acc = sx * sw
            if prelu is not None and self.cfg.style == "np2":  # the layer multiplies anyway: the output
                out_scale = full_range_scale(lo, hi, bits_out, signed)  # gets the full-range scale
                _, shift = ref.multiplier(out_scale / s_acc, mult_bits)
            else:
                if not fixed:
                    shift = round_bits(max(abs(lo), abs(hi)), s_acc, elem_bits)
                out_scale = s_acc / 2.0 ** shift
                if prelu is not None:  # p2: that power-of-2 output scale, the multiplier 2**(mult_bits - 1)
                    shift += mult_bits - 1
            wq = QuantInfo(bw, True, sw)
        else:
            sw = np.asarray(sw, dtype=np.float64)
            s_acc = sx * sw
            out_scale = full_range_scale(lo, hi, bits_out, signed)
            _, shift = ref.multiplier(float(np.max(out_scale / s_acc)), mult_bits or ref.MULTIPLIER_BITS)
            # the channels share one shift, so a channel whose ratio is far below the largest would get
            # a multiplier of few bits (a gain error of up to half its step); instead each channel's
            # weight scale shrinks to make its multiplier the integer just above its ratio: exact
            # requantization for a weight grid at most 1/m coarser
            mult = np.maximum(np.ceil(out_scale * 2.0 ** shift / s_acc * (1 - 1e-12)), 1.0)
            sw = out_scale * 2.0 ** shift / (sx * mult)
            s_acc = sx * sw
            wq = QuantInfo(bw, True, tuple(sw), axis=0)
        qmin, qmax = ref.qrange(bw, True)
        codes = self.cache.codes(wf, sw, qmin, qmax, numpy_dtype(storage(bw, True)))
        wv = self.const(codes, wf.producer.name, wq, wf)
        operands = [x, wv]
        if b is not None:
            amin, amax = -(1 << (acc_w - 1)), (1 << (acc_w - 1)) - 1
            bias_codes = ref.quantize(b, s_acc, amin, amax).astype(np.int32 if acc_w == 32 else np.int64)
            bq = QuantInfo(acc_w, True, tuple(np.atleast_1d(s_acc)) if per_channel else s_acc,
                           axis=0 if per_channel else None)
            has_bias = len(fop.operands) > 2
            operands.append(self.const(bias_codes, fop.operands[2].producer.name if has_bias else f"{fop.name}.bias",
                                       bq, fop.operands[2] if has_bias else None))
        attrs_ = fop.attrs
        if prelu is not None:  # the slopes go with the layer; mac_params makes them multipliers
            attrs_ = dict(fop.attrs, act=prelu.kind, act_params=tuple(float(v) for v in slopes))
            self.fused[id(prelu)] = None
        q_out = QuantInfo(bits_out, signed, float(out_scale), shift=int(shift))
        op = self.new_op(kind, operands, attrs_, fop)
        self.finish(prelu or fop, op, [q_out])

    def full_range_pays(self, fop: Op, w: np.ndarray, sw: float, sx: float, target: float) -> bool:
        """Whether a 16-bit MAC layer should take the full-range output scale ``target`` (its weight
        scale lowered by ``rho`` in [1, 2), as for a fixed range) instead of TIDL's power-of-two
        ``roundBits`` scale (``target * rho / 2``, up to 2x coarser). Per output value, the
        weights' rounding adds ``fan_in * E[x**2] / (12 S_w**2)`` (E[x**2]: the input's calibrated
        mean square) and the output's ``1 / (12 S_out**2)``; with W the weights' part at the
        present weight scale and O the output's at the full-range scale, the full range pays when
        ``W * (rho**2 - 1) < O * (4 / rho**2 - 1)``, W counted SIGNAL_LIKE times:
        their error is the input filtered by the weight error, correlated across positions and
        frames like the signal itself (its mean is a bias on every value), where the output's is
        white. Only with ``full_range_16`` (-O3) and the input's mean square (calibration's
        ranges); else never. (At -O2, on unequalized, nearest-rounded weights, it cost the
        UltraFace nets 5-6 dB: there a weight error costs far more than twice the output's.)"""
        if not self.cfg.full_range_16 or self.mean_square is None:
            return False
        ratio = sw * sx / target
        if ratio < 1.0:  # (the weight scale cannot reach the full range: TIDL's shift is 0 anyway)
            return False
        rho = ratio / 2.0 ** math.floor(math.log2(ratio))
        v = fop.operands[0]
        while v.producer is not None and inherits_scale(v.producer) and self.mean_square(v) is None:
            v = v.producer.operands[0]  # (a value that keeps its input's scale: reshape, max pool, ...)
        ms = self.mean_square(v)
        if not ms:
            return False
        weights = SIGNAL_LIKE * (w.size // _out_channels(fop, w)) * ms / (12.0 * sw * sw)
        output = 1.0 / (12.0 * target * target)
        return weights * (rho * rho - 1.0) < output * (4.0 / (rho * rho) - 1.0)

    def fusable_prelu(self, fop: Op, bits: int) -> Op | None:
        """The prelu (or leaky_relu: one slope) TIDL fuses into the conv2d / dense ``fop`` (actType 2),
        or None: the one reader of its result (not a graph output), of the same precision, with
        constant finite slopes, one or one per channel of the result (axis 1). Its output range
        then sets the layer's."""
        if fop.kind not in ("conv2d", "dense") or fop.attrs.get("act", "none") != "none" or len(fop.results) != 1:
            return None
        r = fop.results[0]
        readers = self.users.get(id(r), [])
        if len(readers) != 1 or any(o is r for o in self.f.outputs):
            return None
        op = readers[0]
        if op.kind not in FUSED_PRELU or op.operands[0] is not r or self.layer_bits(op) != bits or \
                not self.supported(op):
            return None
        slope = _slopes(op)
        if r.type.rank is None or r.type.rank < 2 or not np.all(np.isfinite(slope)):
            return None
        if slope.size > 1 and fop.kind == "dense" and r.type.rank != 2:
            return None  # the slopes run along axis 1, the layer's channels along the last axis
        return op

    def _finish_mac(self, fop, operands, s_acc, _b, bits_out) -> None:
        lo, hi = self.out_range(fop, bits_out)
        signed = self.signed(fop.results[0], lo)
        shift = round_bits(max(abs(lo), abs(hi)), s_acc, bits_out - (1 if signed else 0))
        op = self.new_op(fop.kind, operands, fop.attrs, fop)
        self.finish(fop, op, [QuantInfo(bits_out, signed, s_acc / 2.0 ** shift, shift=shift)])


def _slopes(op: Op) -> np.ndarray:
    """The negative-side slopes of a prelu (its constant operand) or leaky_relu (its alpha), float64 1-D."""
    if op.kind == "leaky_relu":
        return np.array([float(op.attrs["alpha"])])
    return np.asarray(op.operands[1].const_value(), np.float64).reshape(-1)


def prelu_bits(w: np.ndarray, channels: int, sw: float, xq: QuantInfo, b: np.ndarray | None, bw: int,
               acc_width: int, slope_max: float) -> int | None:
    """The multiplier width of a layer with a fused prelu (its positive side ``m``, its negative side
    ``slope x m``): PRELU_MULT_BITS, or fewer where accumulator x multiplier could pass 62 bits
    (the largest accumulator: taps x the largest weight and input codes + the bias; 32-bit
    accumulators saturate at 2**31, and their multipliers stay within 31 bits: the 8-bit kernels'
    limit); None (no fusion) below 8 bits."""
    acc = w.size / max(channels, 1) * float(1 << (bw - 1)) * max(abs(xq.qmin), abs(xq.qmax))
    if b is not None and b.size:
        acc += float(np.abs(b).max()) * xq.scale[0] * sw
    room = 61.0 - math.log2(min(acc, 2.0 ** 31) if acc_width <= 32 else max(acc, 1.0))
    bits = math.floor(min(room, 31.0) - math.log2(max(slope_max, 1.0)))
    return min(PRELU_MULT_BITS, bits) if bits >= 8 else None


def _out_channels(fop: Op, w: np.ndarray) -> int:
    if fop.kind == "conv2d":
        return w.shape[0]
    if fop.kind == "deconv2d":
        return w.shape[1] * fop.attrs["groups"]
    if fop.kind == "dense":
        return w.shape[0]
    return w.size  # scale


def _is_average(op: Op) -> bool:
    return op.kind in ("pool2d", "global_pool") and op.attrs.get("mode") == "avg"


def _finite_clip(a: float, b: float, lo: float, hi: float) -> tuple[float, float]:
    return (a if math.isfinite(a) else lo), (b if math.isfinite(b) else hi)


class WeightCache:
    """A float graph's weights as float64, their ranges and their integer codes per scale: what
    quantizing the same graph again (mixed precision tries one configuration per candidate layer)
    need not compute again. Keyed by the weight value's identity: one cache per float graph.
    ``keep=False`` computes without keeping anything (a single quantization: the weights of a large
    model are not held as float64 for the whole run)."""

    def __init__(self, keep: bool = True, hessians: dict[int, np.ndarray] | None = None):
        self.keep = keep
        self.hessians = hessians or {}  # by weight value id: GPTQ rounding (gptq.py), else nearest
        self._w: dict[int, np.ndarray] = {}
        self._absmax: dict[tuple, object] = {}
        self._codes: dict[tuple, np.ndarray] = {}
        self._bar = None  # GPTQ rounding's progress bar, opened on the first layer it rounds
        self._bar_total: int | None = None

    @contextlib.contextmanager
    def rounding(self, fgraph: Graph):
        """Show progress (on a terminal) while GPTQ rounds the weights of ``fgraph``'s layers in the
        block: a large layer takes about a second. Nothing shows when every code is cached."""
        self._bar_total = sum(1 for op in fgraph.ops for v in op.operands[1:2] if id(v) in self.hessians)
        try:
            yield
        finally:
            if self._bar is not None:
                self._bar.__exit__(None, None, None)
            self._bar, self._bar_total = None, None

    def weights(self, v: Value) -> np.ndarray:
        got = self._w.get(id(v))
        if got is None:
            got = np.asarray(v.const_value(), dtype=np.float64)
            if self.keep:
                self._w[id(v)] = got
        return got

    def absmax(self, v: Value, per_channel: bool, bits: int | None = None):
        """:func:`weight_range` of ``v``'s weights, kept."""
        key = (id(v), per_channel, bits)
        got = self._absmax.get(key)
        if got is None:
            got = weight_range(self.weights(v), per_channel, bits)
            if self.keep:
                self._absmax[key] = got
        return got

    def codes(self, v: Value, sw, qmin: int, qmax: int, dtype) -> np.ndarray:
        """The codes of ``v`` at weight scale ``sw`` (a float, or one per output channel), a fresh array."""
        key = (id(v), np.asarray(sw, dtype=np.float64).tobytes(), qmin, qmax, np.dtype(dtype).str)
        got = self._codes.get(key)
        if got is None:
            w = self.weights(v)
            h = self.hessians.get(id(v))
            if h is not None and (h.ndim == 2 or h.shape[0] == w.shape[0]):
                from .gptq import round_weights
                if self._bar is None and self._bar_total:
                    from .calibrate import progress
                    self._bar = progress(self._bar_total, "GPTQ: rounding weights", "layers").__enter__()
                got = round_weights(w, h, sw, qmin, qmax).astype(dtype)
                if self._bar is not None:
                    self._bar.advance()
            else:
                view = sw if np.ndim(sw) == 0 else np.asarray(sw).reshape((-1,) + (1,) * (w.ndim - 1))
                got = ref.quantize(w, view, qmin, qmax).astype(dtype)
            if not self.keep:
                return got
            self._codes[key] = got
        return got.copy()


def quantize_prepared(fgraph: Graph, ranges, config: QuantConfig, cache: WeightCache | None = None) -> QuantResult:
    """The fixed-point graph of ``fgraph``; ``cache`` (one per float graph) spares re-quantizing its
    weights when it is quantized again with other settings."""
    return _walk(Quantizer(fgraph, ranges, config, cache))


def _walk(quantizer: Quantizer, start: int = 0) -> QuantResult:
    """``quantizer``'s walk from op ``start``, with GPTQ rounding's progress when its cache rounds so,
    and an error that says where."""
    cache, fgraph = quantizer.cache, quantizer.f
    try:
        with cache.rounding(fgraph) if cache.hessians else contextlib.nullcontext():
            return quantizer.run(start)
    except (ValueError, ZeroDivisionError, OverflowError) as exc:  # a bug, but say where
        raise TidlcError(f"quantization failed: {exc}", fgraph.name) from None


class RecordedQuantization:
    """A quantization of a prepared float graph that can be redone from the middle: the walk's
    state is recorded before each op, so another configuration that differs only by more 16-bit
    layers is quantized from the first op it can change (a layer's own quantization depends on
    its precision; its producers' on their readers' precision: fused prelus, table windows).
    Everything before is shared, op objects included, with :attr:`result` (mixed precision
    quantizes one such variant per candidate layer: about half the walk saved on average)."""

    def __init__(self, fgraph: Graph, ranges, config: QuantConfig, cache: WeightCache | None = None):
        self.fgraph, self.ranges, self.config, self.cache = fgraph, ranges, config, cache
        self.quantizer = Quantizer(fgraph, ranges, config, cache)
        self.quantizer.marks = []
        self.result = _walk(self.quantizer)
        self.position = {id(op): i for i, op in enumerate(fgraph.ops)}

    def start_of(self, names: frozenset) -> int:
        """The first position of the walk whose result can depend on ``names`` being 16-bit."""
        start = len(self.fgraph.ops)
        for i, op in enumerate(self.fgraph.ops):
            if op.name in names:
                start = min([start, i] + [self.position[id(v.producer)] for v in op.operands
                                          if v.producer is not None and v.producer.kind != "const"])
        return start

    def variant(self, config: QuantConfig) -> QuantResult:
        """The quantization with ``config`` (this one's but for more 16-bit layers: else a full walk)."""
        if attrs.evolve(config, layers_16bit=self.config.layers_16bit) != self.config or \
                not config.layers_16bit >= self.config.layers_16bit:
            return quantize_prepared(self.fgraph, self.ranges, config, self.cache)
        start = self.start_of(config.layers_16bit - self.config.layers_16bit)
        q = Quantizer(self.fgraph, self.ranges, config, self.quantizer.cache)
        q.resume(self.quantizer, start)
        return _walk(q, start)
