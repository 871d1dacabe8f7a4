"""Automatic mixed precision (``--mixed-precision auto --time-budget F``, TIDL ``mixedPrecisionFactor``).

Which layers to compute in 16 bits so that the network outputs gain the most
SNR while the predicted time stays within ``F x`` the all-8-bit time:

1. **Cost**: the C7x performance model (``tidlc.backends.tidl.perf``) predicts
   the all-8-bit time once and, per candidate layer, the time with that layer
   (and the ops that inherit its scale, which become 16-bit with it) at 16 bits.
2. **Sensitivity** (measured in fixed point): on up to four calibration frames
   the all-8-bit fixed-point graph runs once keeping every tensor; per
   candidate, the graph with that layer alone in 16 bits is quantized (from
   the first op the promotion can change: ``ptq.RecordedQuantization``) and only its ops
   that differ (the layer, its consumers, which then read a 16-bit tensor
   with 16-bit weights, and what is downstream) are run, with the all-8-bit
   kernels where their parameters are unchanged. The output noise measured is
   exactly what promoting that layer alone does. The work is held to about
   ``RUNS_PER_CALIB_FRAME`` graph runs per calibration frame; past that, the
   candidates are measured in order of a cheap proxy (the float noise of the
   layer alone at 8 bits, per extra cycle) and the rest extrapolated from it.
3. **Choice**: candidates in order of measured gain (noise power of the mean
   output SNR in dB) per extra predicted cycle, free ones first, each taken
   if it still fits the budget (the perf model prices the set, shared tensors
   once); a layer whose promotion alone lowered the SNR is never taken.
4. **Check**: the chosen graph is quantized, its time predicted by the perf
   model on the quantized graph itself (what net.bin records) and its SNR
   measured (incrementally, as in 2); layers are dropped (least gain per
   cycle first) until the time fits, and if the measured SNR is not better
   the all-8-bit graph is kept.

Cost (docs/quantization.md has measurements): about one partial quantization
and one partial fixed-point run per candidate and frame, plus the float and
fixed-point runs of the sensitivity frames.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import numpy as np
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.dispatch import is_fixed
from tidlc.backends.tidl.fixed.executor import FUSED_PRELU, FixedExecutor

from tidlc.diagnostics import TidlcError
from tidlc.interp import Interpreter, evaluate_op, output_names
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import Trait
from tidlc.ir.types import numpy_dtype

from .calibrate import progress
from .ptq import (
    QuantConfig,
    QuantResult,
    RecordedQuantization,
    WeightCache,
    inherits_scale,
    quantize_prepared,
    scale_inheritors,
)

SNR_CAP_DB = 150.0  # an output without noise counts as this (as benchmarks/quant_quality.py does)
SENSITIVITY_FRAMES = 4  # at most; fewer when the work cap needs it
MAX_CHECKS = 6  # quantize-and-predict rounds while the chosen set is over budget
RUNS_PER_CALIB_FRAME = 2.0  # sensitivity work (downstream op work) per calibration frame, in graph runs


@attrs.define
class MixedChoice:
    """What automatic mixed precision chose, and why."""

    layers: tuple[str, ...]  # promoted by the search (in graph order)
    result: QuantResult  # the fixed-point graph with them (and the requested 16-bit layers)
    budget: float
    ms_8bit: float  # predicted time, all 8 bit (but the requested 16-bit layers)
    ms: float  # predicted time with the chosen layers
    snr_8bit: float  # dB, mean over the outputs, on the sensitivity frames
    snr: float
    frames: int
    candidates: int
    seconds: float
    unit: str = "ms"  # of ms_8bit and ms: ms (perf model), else cycles or MACs (8-bit MAC equivalents)

    @property
    def ratio(self) -> float:
        return self.ms / self.ms_8bit if self.ms_8bit > 0 else 1.0

    def summary(self) -> str:
        """One line for `tidlc compile` (also stored as the graph attribute ``quant.mixed_precision``)."""
        unit = self.unit
        names = ", ".join(self.layers[:6]) + (f", ... ({len(self.layers)})" if len(self.layers) > 6 else "")
        return (f"mixed precision: {len(self.layers)} layer(s) to 16 bit{': ' + names if self.layers else ''}; "
                f"predicted {self.ms:.3f} {unit} = {self.ratio:.2f}x all-8-bit {self.ms_8bit:.3f} {unit} "
                f"(budget {self.budget:g}x); output SNR {self.snr_8bit:.1f} -> {self.snr:.1f} dB "
                f"on {self.frames} calibration frame(s)")

    def graph_attrs(self) -> dict:
        return {"quant.mixed_precision": self.summary(), "quant.time_budget": float(self.budget),
                "quant.time_ratio": round(float(self.ratio), 4), "quant.snr_8bit_db": round(float(self.snr_8bit), 3),
                "quant.snr_db": round(float(self.snr), 3)}


# ----------------------------------------------------------------------------- SNR bookkeeping
def _float_outputs(ref_out: Mapping[str, np.ndarray]) -> list[str]:
    return [name for name, v in ref_out.items() if np.asarray(v).dtype.kind == "f"]


def output_noise(executor: FixedExecutor, frames: Sequence[Mapping[str, np.ndarray]],
                 float_outputs: Sequence[Mapping[str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(signal, noise) energy per float output name (in the order of the first reference)."""
    names = _float_outputs(float_outputs[0])
    signal, noise = np.zeros(len(names)), np.zeros(len(names))
    for feeds, ref_out in zip(frames, float_outputs):
        out = executor.run(feeds)
        for k, name in enumerate(names):
            r = np.asarray(ref_out[name], np.float64).reshape(-1)
            e = r - np.asarray(out[name], np.float64).reshape(-1)
            signal[k] += float(r @ r)
            noise[k] += float(e @ e)
    return signal, noise


def snr_db(signal: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``10 log10(signal / noise)`` per output, capped at SNR_CAP_DB."""
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(np.maximum(signal, 1e-300) / np.maximum(noise, 1e-300))
    return np.minimum(db, SNR_CAP_DB)


def mean_snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """The mean over outputs of :func:`snr_db`, an output without signal counted as -SNR_CAP_DB."""
    if not len(signal):
        return SNR_CAP_DB
    return float(np.mean(np.where(signal > 0, snr_db(signal, noise), -SNR_CAP_DB)))


# ----------------------------------------------------------------------------- sensitivity
def _fake_quant(x: np.ndarray, quant) -> np.ndarray:
    """Quantize and dequantize ``x`` with a fixed-point type's QuantInfo (per tensor or per axis 0/1)."""
    scale = np.asarray(quant.scale, dtype=np.float64)
    if scale.size > 1:
        shape = [1] * x.ndim
        shape[quant.axis or 0] = -1
        scale = scale.reshape(shape)
    else:
        scale = float(scale.reshape(-1)[0])
    q = np.clip(ref.round_half_away(np.asarray(x, np.float64) * scale), quant.qmin, quant.qmax)
    return (q / scale).astype(x.dtype, copy=False)


@attrs.define
class _Candidate:
    op: Op
    index: int  # position in the float graph's ops
    weight: np.ndarray | None  # the 8-bit weights, dequantized (MAC layers with constant weights)
    out_quant: object  # the 8-bit output QuantInfo
    in_quant: dict  # operand index -> QuantInfo of a float tensor this layer quantizes first (graph inputs)
    wide: tuple[str, ...]  # op names computed in 16 bits when this layer is (it and its scale inheritors)
    then: Op | None = None  # the prelu fused into this layer (ptq.Quantizer.fusable_prelu), whose result is its


def _candidates(graph: Graph, q8: QuantResult, config: QuantConfig) -> list[_Candidate]:
    """Layers that could go to 16 bits: those with a fixed-point result of their own (MAC layers,
    eltwise, lookup tables, softmax, ...; not data movement, which follows its input)."""
    fixed_of: dict[int, Value] = {}
    for qop in q8.graph.ops:
        for r in qop.results:
            src = q8.origin.get(id(r))
            if src is not None and r.type.quant is not None and qop.kind != "data_convert":
                fixed_of[id(src)] = r
                if src.producer is not None and src.producer.kind in FUSED_PRELU and \
                        qop.attrs.get("act") == src.producer.kind:
                    fixed_of[id(src.producer.operands[0])] = r  # the float layer's result, fused with the prelu
    quantized_inputs: dict[int, object] = {}  # float value id -> QuantInfo of its data_convert
    for qop in q8.graph.ops:
        if qop.kind == "data_convert" and qop.results[0].type.quant is not None \
                and qop.operands[0].type.dtype[0] == "f":
            src = q8.origin.get(id(qop.results[0]))
            if src is not None:
                quantized_inputs[id(src)] = qop.results[0].type.quant
    users: dict[int, list[Op]] = {}
    first_reader: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for v in op.operands:
            users.setdefault(id(v), []).append(op)
            first_reader.setdefault(id(v), i)
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind in ("input", "const") or not op.name or op.name in config.layers_16bit or not op.results:
            continue
        if inherits_scale(op) or op.opdef.has(Trait.SCALE_PRESERVING) or op.kind == "argmax":
            continue
        fv = fixed_of.get(id(op.results[0]))
        if fv is None or fv.producer is None or fv.producer.kind != op.kind:
            continue  # a float island, or not quantized as itself
        weight = None
        if op.opdef.has(Trait.MAC) and len(fv.producer.operands) > 1:
            wconst = fv.producer.operands[1]
            if wconst.producer is not None and wconst.producer.kind == "const" and wconst.type.quant is not None:
                wq = wconst.type.quant
                codes = np.asarray(wconst.producer.data, np.float64)
                scale = np.asarray(wq.scale, np.float64)
                if scale.size > 1:
                    shape = [1] * codes.ndim
                    shape[wq.axis or 0] = -1
                    scale = scale.reshape(shape)
                ref_w = op.operands[1].const_value()
                if ref_w is not None and np.shape(ref_w) == codes.shape:
                    weight = (codes / scale).astype(np.asarray(ref_w).dtype)
        in_quant = {k: quantized_inputs[id(v)] for k, v in enumerate(op.operands)
                    if id(v) in quantized_inputs and first_reader.get(id(v)) == i}
        then = q8.origin[id(fv)].producer  # the float op whose result the fixed-point layer's is
        then = then if then is not op and then.kind in FUSED_PRELU else None  # a prelu fused into it
        wide = (op.name,) + _wide_closure(then, users) if then is not None else _wide_closure(op, users)
        out.append(_Candidate(op, i, weight, fv.type.quant, in_quant, wide, then))
    return out


def _wide_closure(op: Op, users: Mapping[int, list[Op]]) -> tuple[str, ...]:
    """``op`` and the ops downstream that inherit its scale (and so its 16 bits): pooling,
    data movement, concat (which takes the widest precision of its inputs)."""
    return (op.name,) + tuple(user.name for user in scale_inheritors(op, users) if user.name)


def _op_cost(op: Op) -> float:
    """Work of one float op, for budgeting the sensitivity runs: MACs, else output elements."""
    macs = float(op.opdef.macs(op) or 0) if op.opdef.has(Trait.MAC) else 0.0
    if macs:
        return macs
    return float(sum(int(np.prod(r.type.shape)) for r in op.results if r.type.shape is not None
                     and all(isinstance(d, int) for d in r.type.shape)))


class Sensitivity:
    """Per candidate and float output: the output noise energy of the fixed-point graph with that
    layer alone promoted to 16 bits (measured, not modelled: its 16-bit input and weights, the
    16-bit weights its consumers then use, everything downstream).

    The all-8-bit fixed-point graph runs once per frame keeping every tensor; a candidate's graph
    is quantized and only its ops that differ from the all-8-bit graph (the candidate, its
    consumers and what is downstream of them) are run, reusing the all-8-bit kernels where an
    op's parameters are unchanged. The cheap *local* noise of each layer (its own 8-bit
    quantization, in float) orders the candidates when the work cap does not allow them all; the
    unmeasured ones get their local noise times the median ratio of the measured ones."""

    def __init__(self, graph: Graph, candidates: Sequence[_Candidate], q8: QuantResult,
                 weights: WeightCache | None = None, recorded: RecordedQuantization | None = None):
        self.weights = weights if weights is not None else WeightCache()
        self.graph, self.candidates, self.q8 = graph, list(candidates), q8
        self.recorded = recorded  # q8's walk, to quantize the variants from their first changed op
        self.interp = Interpreter(graph)
        self._names = self.interp.names
        out_at = {id(v): k for k, v in enumerate(graph.outputs)}
        users: dict[int, list[int]] = {}
        for i, op in enumerate(graph.ops):
            for v in op.operands:
                users.setdefault(id(v), []).append(i)
        cost = [_op_cost(op) if op.kind not in ("input", "const") else 0.0 for op in graph.ops]
        self.full_work = float(sum(cost))
        self.reach_out = np.zeros((len(self.candidates), len(graph.outputs)), dtype=bool)
        self.work = np.zeros(len(self.candidates))  # float work downstream of the candidate (and it)
        for c_i, cand in enumerate(self.candidates):
            seen, todo = {cand.index}, [cand.index]
            while todo:
                i = todo.pop()
                for r in graph.ops[i].results:
                    if id(r) in out_at:
                        self.reach_out[c_i, out_at[id(r)]] = True
                    for u in users.get(id(r), ()):
                        if u not in seen:
                            seen.add(u)
                            todo.append(u)
            self.work[c_i] = sum(cost[i] for i in seen)
            # a candidate reading a graph input quantizes it (at 16 bits): the input's quantize too
            if cand.in_quant:
                self.work[c_i] += cost[cand.index]

    def run(self, frames: Sequence[Mapping[str, np.ndarray]], proxy: bool) -> None:
        """The float runs (every tensor kept if the ``proxy`` local noise is wanted), the all-8-bit
        fixed-point runs (every tensor kept) and the all-8-bit output noise."""
        graph, names = self.graph, self._names
        self.envs = [self.interp.values(f, keep_all=proxy) for f in frames]
        self.float_outputs = [{n: env[id(v)] for n, v in zip(names, graph.outputs)} for env in self.envs]
        self.names = _float_outputs(self.float_outputs[0])
        col = {n: k for k, n in enumerate(self.names)}
        keep = [j for j, n in enumerate(names) if n in col]
        self.reach = self.reach_out[:, keep] if keep else np.zeros((len(self.candidates), 0), dtype=bool)
        self.signal = np.zeros(len(self.names))
        for outs in self.float_outputs:
            for n, k in col.items():
                r = np.asarray(outs[n], np.float64).reshape(-1)
                self.signal[k] += float(r @ r)
        self.local = np.array([self._local(c) for c in self.candidates]) if proxy else \
            np.ones(len(self.candidates))
        self.base = _Reuse(self.q8.graph, self.q8.origin, frames)
        self.noise8 = self._noise(self.base.outputs)

    def _noise(self, outputs: Sequence[Mapping[str, np.ndarray]]) -> np.ndarray:
        noise = np.zeros(len(self.names))
        for ref_out, out in zip(self.float_outputs, outputs):
            for k, name in enumerate(self.names):
                e = np.asarray(ref_out[name], np.float64).reshape(-1) - np.asarray(out[name], np.float64).reshape(-1)
                noise[k] += float(e @ e)
        return noise

    def _layer(self, cand: _Candidate, env: Mapping[int, np.ndarray]) -> list[np.ndarray]:
        """The candidate's results with it (alone) in 8 bits: its quantized inputs, weights, output."""
        op = cand.op
        args = [env[id(v)] for v in op.operands]
        for k, q in cand.in_quant.items():
            args[k] = _fake_quant(args[k], q)
        if cand.weight is not None:
            args[1] = cand.weight
        results = [np.asarray(r) for r in evaluate_op(op, args)]
        if cand.then is not None:  # its fused prelu
            rest = [v.const_value() for v in cand.then.operands[1:]]
            results = [np.asarray(r) for r in evaluate_op(cand.then, [results[0]] + rest)]
        results[0] = _fake_quant(results[0], cand.out_quant)
        return results

    def _local(self, cand: _Candidate) -> float:
        noise = signal = 0.0
        for env in self.envs:
            y = np.asarray(env[id((cand.then or cand.op).results[0])], np.float64).reshape(-1)
            e = y - np.asarray(self._layer(cand, env)[0], np.float64).reshape(-1)
            noise += float(e @ e)
            signal += float(y @ y)
        return noise / signal if signal > 0 else 0.0

    def noise_of(self, layers_16bit: frozenset, ranges, config: QuantConfig) -> np.ndarray:
        """Output noise energy of the fixed-point graph with ``layers_16bit`` (run incrementally)."""
        config = attrs.evolve(config, layers_16bit=layers_16bit)
        result = self.recorded.variant(config) if self.recorded is not None else \
            quantize_prepared(self.graph, ranges, config, self.weights)
        return self._noise(self.base.run_variant(result))

    def measure(self, ranges, config: QuantConfig, priority: np.ndarray, work_cap: float,
                bar_description: str) -> np.ndarray:
        """Noise [candidates x outputs], each with that candidate alone promoted: measured for the
        highest ``priority`` first while the downstream work stays within ``work_cap``."""
        n = len(self.candidates)
        noise = np.tile(self.noise8, (n, 1))
        measured = np.zeros(n, dtype=bool)
        frames_work = self.work * len(self.envs)
        spent = 0.0
        picked = []
        for c_i in np.argsort(-priority, kind="stable"):
            if priority[c_i] == -np.inf or not self.reach[c_i].any() or spent + frames_work[c_i] > work_cap:
                continue
            picked.append(int(c_i))
            spent += frames_work[c_i]
        with progress(len(picked), bar_description, "layers") as bar:
            for c_i in picked:
                layers = config.layers_16bit | frozenset((self.candidates[c_i].op.name,))
                noise[c_i] = self.noise_of(layers, ranges, config)
                measured[c_i] = True
                bar.advance()
        # the others: their local noise x the median gain per unit of local noise of the measured ones
        gain = np.maximum(self.noise8[None, :] - noise, 0.0)
        for k in range(len(self.names)):
            ok = measured & self.reach[:, k] & (self.local > 0)
            factor = float(np.median(gain[ok, k] / self.local[ok])) if ok.any() else 0.0
            guess = ~measured & self.reach[:, k]
            noise[guess, k] = np.maximum(self.noise8[k] - self.local[guess] * factor, 0.0)
        self.measured = measured
        return noise


def _same(a, b) -> bool:
    try:
        return bool(a == b)
    except (ValueError, TypeError):  # arrays in attributes: not worth comparing
        return False


class _Reuse:
    """The all-8-bit fixed-point graph run on the sensitivity frames with every tensor kept, and
    variants of it (another precision for some layers) run incrementally: an op of the variant
    whose operands are the all-8-bit graph's tensors and whose parameters equal the all-8-bit
    op's gives the same integers (the kernels are exact functions of them), so it is not run;
    the others are, with the all-8-bit op's kernel when only their operand values differ."""

    def __init__(self, graph: Graph, origin: Mapping[int, Value], frames: Sequence[Mapping[str, np.ndarray]]):
        self.graph, self.origin, self.frames = graph, origin, list(frames)
        self.executor = FixedExecutor(graph, kernels="auto")
        self.kernels = {id(s.op): s.kernel for s in self.executor.steps}
        self.by_key: dict[tuple, Op] = {}
        self.consts: dict[tuple, Op] = {}
        self.inputs: dict[str, Value] = {}
        self.own = {id(op) for op in graph.ops}
        for op in graph.ops:
            if op.kind == "const":
                self.consts.setdefault(self._const_key(op), op)
            elif op.kind == "input":
                self.inputs[op.attrs["name"]] = op.results[0]
            elif op.results:
                self.by_key.setdefault(self._key(op), op)
        self.envs: list[dict[int, np.ndarray]] = []
        self.outputs = []
        for feeds in self.frames:
            env: dict[int, np.ndarray] = {}

            def keep(op, results, env=env):
                env.update((id(v), r) for v, r in zip(op.results, results))

            self.outputs.append(self.executor.run(feeds, keep))
            env.update(self.executor.consts)
            env.update((vid, np.asarray(feeds[name])) for name, vid in self.executor.inputs)
            self.envs.append(env)

    def _key(self, op: Op) -> tuple:
        r = op.results[0]
        src = self.origin.get(id(r))
        return (op.kind, op.name, id(src) if src is not None else None, r.type.dtype, r.type.quant)

    @staticmethod
    def _const_key(op: Op) -> tuple:
        t = op.results[0].type
        return (op.name, t.dtype, t.quant, np.shape(op.data))

    def _plan(self, variant: QuantResult) -> tuple[list, dict[int, int]]:
        """The ops of ``variant`` to run (op, kernel, operand sources) and its values that are the
        all-8-bit graph's (variant value id -> all-8-bit value id)."""
        vg, vorigin = variant.graph, variant.origin
        same: dict[int, int] = {}
        steps = []
        for op in vg.ops:
            if id(op) in self.own:  # shared with the all-8-bit graph (a resumed quantization's start)
                same.update((id(r), id(r)) for r in op.results)
                continue
            if op.kind == "const":
                base = self.consts.get(self._const_key(op))
                if base is not None and np.array_equal(base.data, op.data):
                    same[id(op.results[0])] = id(base.results[0])
                continue
            if op.kind == "input":
                base_v = self.inputs.get(op.attrs["name"])
                if base_v is not None:
                    same[id(op.results[0])] = id(base_v)
                continue
            r = op.results[0] if op.results else None
            src = vorigin.get(id(r)) if r is not None else None
            base = self.by_key.get((op.kind, op.name, id(src) if src is not None else None,
                                    r.type.dtype, r.type.quant)) if r is not None else None
            params_equal = base is not None and len(base.operands) == len(op.operands) and \
                len(base.results) == len(op.results) and _same(base.attrs, op.attrs) and \
                all(a.type.dtype == b.type.dtype and a.type.quant == b.type.quant and a.type.shape == b.type.shape
                    for a, b in zip(base.operands, op.operands)) and \
                all((a.producer is None or a.producer.kind != "const") or same.get(id(b)) == id(a)
                    for a, b in zip(base.operands, op.operands)) and \
                all(a.type == b.type for a, b in zip(base.results, op.results))
            if params_equal and all(same.get(id(b)) == id(a) for a, b in zip(base.operands, op.operands)):
                for a, b in zip(base.results, op.results):
                    same[id(b)] = id(a)
                continue
            kernel = self.kernels.get(id(base)) if params_equal else None
            if kernel is None:
                from tidlc.backends.tidl.fixed.executor import make_kernel
                kernel = make_kernel(op, "auto")
            dtypes = [numpy_dtype(v.type.dtype) if is_fixed(v.type) else None for v in op.results]
            steps.append((op, kernel, dtypes))
        return steps, same

    def run_variant(self, variant: QuantResult) -> list[dict[str, np.ndarray]]:
        """The outputs of ``variant`` on the frames (by output name)."""
        steps, same = self._plan(variant)
        vg = variant.graph
        names = output_names(vg)
        outs = []
        for base_env in self.envs:
            env: dict[int, np.ndarray] = {}
            for op in vg.ops:
                if op.kind == "const" and id(op.results[0]) not in same:
                    env[id(op.results[0])] = np.asarray(op.data)

            def get(v, env=env, base_env=base_env):
                got = env.get(id(v))
                return got if got is not None else base_env[same[id(v)]]

            for op, kernel, dtypes in steps:
                results = kernel([get(v) for v in op.operands])
                for v, r, dt in zip(op.results, results, dtypes):
                    r = np.asarray(r)
                    env[id(v)] = r if dt is None or r.dtype == dt else r.astype(dt)
            outs.append({n: get(v) for n, v in zip(names, vg.outputs)})
        return outs


# ----------------------------------------------------------------------------- cost
class _Costs:
    """Predicted cycles of the float graph with sets of layers at 16 bits: the perf model's tables
    built twice (8 bits, and every candidate at 16), a set's tables mixed row by row from them
    (a layer's row and its output tensors depend on its own precision only), one kernel run each.
    Without a perf estimate (dynamic shapes, ...): MACs, a 16-bit MAC costing four."""

    def __init__(self, graph: Graph, device: str, wide: frozenset, candidates: Sequence[str]):
        self.graph, self.device, self.wide = graph, device, tuple(sorted(wide))
        self.model = "perf"
        try:
            from tidlc.backends.tidl.perf import PerfOptions
            from tidlc.backends.tidl.perf import prepare as perf_prepare
            from tidlc.backends.tidl.perf.model import tables_for
            self.options = PerfOptions(bits=8, layers_16bit=self.wide, hints=False)
            self.prep = perf_prepare(graph, device, self.options)
            self.base = self.prep.frame_cycles()
            everything = tuple(sorted(set(self.wide) | set(candidates)))
            self.t8 = self.prep.tables
            self.t16 = tables_for(graph, self.prep.device, attrs.evolve(self.options, layers_16bit=everything))
            self.rows: dict[str, list[int]] = {}
            for i, info in enumerate(self.t8.info):
                self.rows.setdefault(info.name, []).append(i)
        except TidlcError:
            self.model = "macs"
            self.macs = {op.name: float(op.opdef.macs(op) or 0) for op in graph.compute_ops()
                         if op.opdef.has(Trait.MAC)}
            self.base = sum(self.macs.values()) + sum(3.0 * self.macs.get(n, 0.0) for n in self.wide)

    def with_16bit(self, names: Sequence[str]) -> float:
        if self.model == "macs":
            return self.base + sum(3.0 * self.macs.get(n, 0.0) for n in set(names) - set(self.wide))
        from tidlc.backends.tidl.perf import columns as C
        t8, t16 = self.t8, self.t16
        layers, tensors = t8.layers.copy(), t8.tensors.copy()
        for name in names:
            for i in self.rows.get(name, ()):
                layers[i] = t16.layers[i]
                out = t8.out_idx[t8.out_ptr[i]:t8.out_ptr[i + 1]]
                tensors[out, C.T_BYTES] = t16.tensors[out, C.T_BYTES]
        return self.prep.frame_cycles(self.options, attrs.evolve(t8, layers=layers, tensors=tensors))


def predicted_ms(qgraph: Graph, device: str, layers_16bit: Sequence[str]) -> float | None:
    """The perf model's time of a quantized graph (what net.bin records), or None."""
    try:
        from tidlc.backends.tidl.perf import PerfOptions, estimate
        return float(estimate(qgraph, device, PerfOptions(bits=8, layers_16bit=tuple(layers_16bit),
                                                          hints=False)).ms)
    except TidlcError:
        return None


# ----------------------------------------------------------------------------- the search
def greedy(noise: np.ndarray, signal: np.ndarray, measured: np.ndarray, costs: np.ndarray,
           allowance: float, set_cost: Callable[[list[int]], float] | None = None) -> list[int]:
    """Candidate indices promoted by measured gain per extra cost, while they fit ``allowance``.

    ``noise[c, o]``: output o's noise with candidate c alone promoted; ``measured[o]``: the
    all-8-bit noise. A candidate's gain is the noise it removes alone, on the scale of the
    figure being optimized (the mean over outputs of the SNR in dB, as a noise power
    ``10**(-snr/10)``); the candidates are taken in order of gain per extra cost (free ones
    first), skipping those that would overrun the allowance, and never one that made the SNR
    worse. The order is not re-evaluated after each pick: quantization noise sources are not
    independent (promoting either of two consecutive layers can remove most of the noise of
    both), so neither adding energies nor adding dB predicts a set better than the single gains
    rank it; the chosen set itself is measured afterwards. ``set_cost(chosen)``: the extra cost
    of a set (the perf model prices shared tensors once), else the sum of its members'."""
    base = 10.0 ** (-mean_snr_db(signal, measured) / 10.0)
    gain = np.array([base - 10.0 ** (-mean_snr_db(signal, n) / 10.0) for n in noise])
    cost = np.maximum(np.asarray(costs, dtype=np.float64), 0.0)
    rate = gain / np.maximum(cost, 1e-12 * max(allowance, 1.0))
    chosen: list[int] = []
    spent = 0.0
    for c in np.argsort(-rate, kind="stable"):
        c = int(c)
        if not gain[c] > 0 or spent + cost[c] > allowance:
            continue
        total = set_cost(chosen + [c]) if set_cost is not None else spent + cost[c]
        if total > allowance:
            continue
        chosen.append(c)
        spent = total
    return chosen


def choose_16bit_layers(graph: Graph, ranges: Callable[[Value], tuple[float, float]], config: QuantConfig,
                        frames: Sequence[Mapping[str, np.ndarray]], budget: float, device: str = "tda4vm",
                        q8: QuantResult | None = None, calib_frames: int = 8,
                        weights: WeightCache | None = None) -> MixedChoice:
    """Promote layers of the prepared float ``graph`` to 16 bits within ``budget x`` the all-8-bit
    time (see the module docstring); returns the choice with its quantized graph.

    ``calib_frames``: how many frames calibration ran; the sensitivity runs are held to about
    ``RUNS_PER_CALIB_FRAME x`` that many graph runs (so the search costs about as much as
    calibration)."""
    start = time.perf_counter()
    # each configuration tried re-quantizes the graph: its weights once per scale
    weights = weights if weights is not None and weights.keep else WeightCache(
        hessians=weights.hessians if weights is not None else None)
    recorded = None
    if q8 is None:
        recorded = RecordedQuantization(graph, ranges, config, weights)
        q8 = recorded.result
    frames = list(frames)[:SENSITIVITY_FRAMES]
    candidates = _candidates(graph, q8, config) if frames else []
    costs_model = _Costs(graph, device, config.layers_16bit, sorted({n for c in candidates for n in c.wide}))
    ms8 = predicted_ms(q8.graph, device, sorted(config.layers_16bit)) if costs_model.model == "perf" else None
    unit = "ms" if ms8 is not None else ("cycles" if costs_model.model == "perf" else "MACs")
    base_cycles = costs_model.base

    def done(layers, result, t, snr8, snr):
        base = ms8 if ms8 is not None else base_cycles
        return MixedChoice(tuple(layers), result, budget, base, t if t is not None else base, snr8, snr,
                           len(frames), len(candidates), time.perf_counter() - start, unit)

    if not candidates:
        return done((), q8, ms8, math.nan, math.nan)
    extra = np.array([max(costs_model.with_16bit(c.wide) - base_cycles, 0.0) for c in candidates])
    allowance = (budget - 1.0) * base_cycles
    sens = Sensitivity(graph, candidates, q8, weights, recorded)
    cap = RUNS_PER_CALIB_FRAME * max(calib_frames, 1) * sens.full_work
    fits = extra <= allowance
    per_frame = float(sens.work[fits].sum())
    while len(frames) > 1 and per_frame * len(frames) > cap:
        frames = frames[:-1]  # every candidate on fewer frames, rather than fewer candidates
    proxy = per_frame * len(frames) > cap  # not every candidate can be measured: order them by a proxy
    sens.run(frames, proxy)
    measured = sens.noise8
    snr8 = mean_snr_db(sens.signal, measured)

    def check(chosen: list[_Candidate], tries: int) -> MixedChoice | None:
        """Quantize with ``chosen`` (in pick order) and check it on the quantized graph itself: the
        time net.bin will record (dropping the last picked while over budget), the SNR it will have."""
        chosen = list(chosen)
        while chosen and tries > 0:
            tries -= 1
            trial = attrs.evolve(config, layers_16bit=config.layers_16bit | frozenset(c.op.name for c in chosen))
            result = quantize_prepared(graph, ranges, trial, weights)
            ms = predicted_ms(result.graph, device, sorted(trial.layers_16bit)) if ms8 is not None else None
            if ms8 is not None and (ms is None or ms > budget * ms8 * (1 + 1e-9)):
                chosen.pop()  # the last picked had the least gain per cycle
                continue
            snr = mean_snr_db(sens.signal, sens._noise(sens.base.run_variant(result)))
            if not snr > snr8:
                return None
            if ms is None:  # the cost model's own units
                ms = base_cycles + float(sum(extra[candidates.index(c)] for c in chosen))
            return done([c.op.name for c in sorted(chosen, key=lambda c: c.index)], result, ms, snr8, snr)
        return None

    if float(extra.sum()) <= allowance:  # every layer fits the budget: all of them, if the check agrees
        got = check(candidates, 1)
        if got is not None:
            return got
    # measured first: free layers, then by local noise per extra cycle; over the budget alone: never
    priority = sens.local * sens.reach.any(axis=1) / np.maximum(extra, 1e-9 * max(base_cycles, 1.0))
    priority[extra <= 0] = np.inf
    priority[~fits] = -np.inf
    noise = sens.measure(ranges, config, priority, cap,
                         "mixed precision: layer sensitivity")

    def set_cost(indices: list[int]) -> float:
        wide = [n for i in indices for n in candidates[i].wide]
        return max(costs_model.with_16bit(wide) - base_cycles, 0.0)

    order = greedy(noise, sens.signal, measured, extra, allowance, set_cost)
    got = check([candidates[i] for i in order], MAX_CHECKS)
    return got if got is not None else done((), q8, ms8, snr8, snr8)

