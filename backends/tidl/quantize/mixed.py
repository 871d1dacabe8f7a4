"""Automatic mixed precision (``--mixed-precision auto --time-budget F``, TIDL ``mixedPrecisionFactor``).

Which layers to compute in 16 bits so that the network outputs gain the most
SNR while the predicted time stays within ``F x`` the all-8-bit time:

1. **Cost**: the C7x performance model (``tidlc.backends.tidl.perf``) predicts
   the all-8-bit time once and, per candidate layer, the time with that layer
   (and the ops that inherit its scale, which become 16-bit with it) at 16 bits.
2. **Sensitivity** (noise injection, float): on a few calibration frames the
   float graph runs once, keeping every tensor; then, per candidate, only that
   layer is quantized to 8 bits, exactly as the all-8-bit graph quantizes it
   (its weight codes and output scale; a graph input it quantizes first too),
   and only the ops downstream of it are re-run in float. The output noise
   energy that layer alone causes is what promoting it removes.
3. **Choice**: the all-8-bit graph's measured output noise (fixed-point
   executor, same frames) is split over the layers in proportion to their
   noise; greedily, the layer with the most SNR gained (mean over the
   outputs, in dB) per extra predicted cycle is promoted while the budget
   allows, re-evaluating the gains after each pick.
4. **Check**: the chosen graph is quantized, its time predicted by the perf
   model on the quantized graph itself (what net.bin records) and its SNR
   measured; layers are dropped (least gain per cycle first) until the time
   fits, and if the measured SNR is not better the all-8-bit graph is kept.

Cost: one float run per sensitivity frame plus the downstream part of it per
candidate, one perf-kernel run per candidate and a few quantizations and
fixed-point runs (about a plain 8-bit calibration of 8 frames, see
docs/quantization.md).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence

import attrs
import numpy as np
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.executor import FixedExecutor

from tidlc.diagnostics import TidlcError
from tidlc.interp import Interpreter, evaluate_op
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import Trait

from .calibrate import progress_bar
from .ptq import QuantConfig, QuantResult, inherits_scale, quantize_prepared

SNR_CAP_DB = 150.0  # an output without noise counts as this (as benchmarks/quant_quality.py does)
SENSITIVITY_FRAMES = 2
MAX_CHECKS = 6  # quantize-and-predict rounds while the chosen set is over budget
WORK_PER_CALIB_FRAME = 0.5  # downstream sensitivity runs: float work per calibration frame


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


def mean_snr_db(signal: np.ndarray, noise: np.ndarray) -> float:
    """The mean over outputs of ``10 log10(signal / noise)``, each capped at SNR_CAP_DB."""
    if not len(signal):
        return SNR_CAP_DB
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10.0 * np.log10(np.maximum(signal, 1e-300) / np.maximum(noise, 1e-300))
    db = np.where(signal > 0, db, -SNR_CAP_DB)
    return float(np.mean(np.minimum(db, SNR_CAP_DB)))


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


def _candidates(graph: Graph, q8: QuantResult, config: QuantConfig) -> list[_Candidate]:
    """Layers that could go to 16 bits: those with a fixed-point result of their own (MAC layers,
    eltwise, lookup tables, softmax, ...; not data movement, which follows its input)."""
    fixed_of: dict[int, Value] = {}
    for qop in q8.graph.ops:
        for r in qop.results:
            src = q8.origin.get(id(r))
            if src is not None and r.type.quant is not None and qop.kind != "data_convert":
                fixed_of[id(src)] = r
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
        out.append(_Candidate(op, i, weight, fv.type.quant, in_quant, _wide_closure(op, users)))
    return out


def _wide_closure(op: Op, users: Mapping[int, list[Op]]) -> tuple[str, ...]:
    """``op`` and the ops downstream that inherit its scale (and so its 16 bits): pooling,
    data movement, concat (which takes the widest precision of its inputs)."""
    names, todo, seen = [op.name], [op], {id(op)}
    while todo:
        cur = todo.pop()
        for r in cur.results:
            for user in users.get(id(r), ()):
                if id(user) in seen or not user.opdef.has(Trait.SCALE_PRESERVING):
                    continue
                seen.add(id(user))
                if user.name:
                    names.append(user.name)
                todo.append(user)
    return tuple(names)


def _op_cost(op: Op) -> float:
    """Work of one float op, for budgeting the sensitivity runs: MACs, else output elements."""
    macs = float(op.opdef.macs(op) or 0) if op.opdef.has(Trait.MAC) else 0.0
    if macs:
        return macs
    return float(sum(int(np.prod(r.type.shape)) for r in op.results if r.type.shape is not None
                     and all(isinstance(d, int) for d in r.type.shape)))


class Sensitivity:
    """Per candidate and float output: the output noise energy of quantizing that layer alone to 8 bits.

    The float graph runs once per frame (``run``) keeping every tensor. Every candidate's *local* noise
    (relative noise energy at its own output) comes from re-running that layer alone; the
    *propagated* noise (at the network outputs) from re-running the ops downstream of it, for
    the candidates most likely to be chosen (local noise per extra cycle) while the downstream
    work stays within ``work_cap`` float-op units. The others get their local noise times the
    median propagation factor of the measured candidates that reach the same output."""

    def __init__(self, graph: Graph, candidates: Sequence[_Candidate]):
        self.graph, self.candidates = graph, list(candidates)
        self.interp = Interpreter(graph)
        names = self.interp.names
        # reach: which outputs each candidate's noise gets to, and the float work downstream of it
        out_at = {id(v): k for k, v in enumerate(graph.outputs)}
        users: dict[int, list[int]] = {}
        for i, op in enumerate(graph.ops):
            for v in op.operands:
                users.setdefault(id(v), []).append(i)
        cost = [_op_cost(op) if op.kind not in ("input", "const") else 0.0 for op in graph.ops]
        self.full_work = float(sum(cost))
        self.reach_out = np.zeros((len(self.candidates), len(graph.outputs)), dtype=bool)
        self.work = np.zeros(len(self.candidates))
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
        self._names = names

    def run(self, frames: Sequence[Mapping[str, np.ndarray]]) -> None:
        """The float runs (every tensor kept) and each candidate's local noise."""
        graph, names = self.graph, self._names
        self.envs = [self.interp.values(f, keep_all=True) for f in frames]
        self.float_outputs = [{n: env[id(v)] for n, v in zip(names, graph.outputs)} for env in self.envs]
        self.names = _float_outputs(self.float_outputs[0])
        col = {n: k for k, n in enumerate(self.names)}
        self.out_col = {id(v): col[n] for n, v in zip(names, graph.outputs) if n in col}
        keep = [j for j, n in enumerate(names) if n in col]
        self.reach = self.reach_out[:, keep] if keep else np.zeros((len(self.candidates), 0), dtype=bool)
        self.signal = np.zeros(len(self.names))
        for outs in self.float_outputs:
            for n, k in col.items():
                r = np.asarray(outs[n], np.float64).reshape(-1)
                self.signal[k] += float(r @ r)
        self.local = np.array([self._local(c) for c in self.candidates])

    def _layer(self, cand: _Candidate, env: Mapping[int, np.ndarray]) -> list[np.ndarray]:
        """The candidate's results with it (alone) in 8 bits: its quantized inputs, weights, output."""
        op = cand.op
        args = [env[id(v)] for v in op.operands]
        for k, q in cand.in_quant.items():
            args[k] = _fake_quant(args[k], q)
        if cand.weight is not None:
            args[1] = cand.weight
        results = [np.asarray(r) for r in evaluate_op(op, args)]
        results[0] = _fake_quant(results[0], cand.out_quant)
        return results

    def _local(self, cand: _Candidate) -> float:
        noise = signal = 0.0
        for env in self.envs:
            y = np.asarray(env[id(cand.op.results[0])], np.float64).reshape(-1)
            e = y - np.asarray(self._layer(cand, env)[0], np.float64).reshape(-1)
            noise += float(e @ e)
            signal += float(y @ y)
        return noise / signal if signal > 0 else 0.0

    def _propagate(self, cand: _Candidate, env: Mapping[int, np.ndarray], outs: Mapping[str, np.ndarray],
                   into: np.ndarray) -> None:
        op = cand.op
        overlay = {id(v): r for v, r in zip(op.results, self._layer(cand, env))}
        for later in self.graph.ops[cand.index + 1:]:
            if later.kind in ("input", "const") or not any(id(v) in overlay for v in later.operands):
                continue
            args = [overlay.get(id(v), env.get(id(v))) for v in later.operands]
            for r_v, r in zip(later.results, evaluate_op(later, args)):
                overlay[id(r_v)] = np.asarray(r)
        for vid, k in self.out_col.items():
            if vid in overlay:
                ref_v = np.asarray(outs[self.names[k]], np.float64).reshape(-1)
                e = ref_v - np.asarray(overlay[vid], np.float64).reshape(-1)
                into[k] += float(e @ e)

    def measure(self, priority: np.ndarray, work_cap: float, bar_description: str) -> np.ndarray:
        """Noise [candidates x outputs]: measured for the highest ``priority`` first, within ``work_cap``."""
        n = len(self.candidates)
        noise = np.zeros((n, len(self.names)))
        measured = np.zeros(n, dtype=bool)
        frames_work = self.work * len(self.envs)
        spent = 0.0
        picked = []
        for c_i in np.argsort(-priority, kind="stable"):
            if not self.reach[c_i].any() or spent + frames_work[c_i] > work_cap:
                continue
            picked.append(int(c_i))
            spent += frames_work[c_i]
        with progress_bar(len(picked), bar_description) as bar:
            for c_i in picked:
                for env, outs in zip(self.envs, self.float_outputs):
                    self._propagate(self.candidates[c_i], env, outs, noise[c_i])
                measured[c_i] = True
                bar.advance()
        # the others: local noise x the median propagation factor (per output) of the measured ones
        for k in range(len(self.names)):
            ok = measured & self.reach[:, k] & (self.local > 0)
            factor = float(np.median(noise[ok, k] / (self.local[ok] * self.signal[k]))) if ok.any() else 1.0
            guess = ~measured & self.reach[:, k]
            noise[guess, k] = self.local[guess] * self.signal[k] * factor
        self.measured = measured
        return noise


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
           allowance: float) -> list[int]:
    """Candidate indices promoted greedily by predicted SNR gain per extra cost within ``allowance``.

    ``noise[c, o]``: output o's noise from candidate c alone; ``measured[o]``: the all-8-bit noise,
    split over the candidates in proportion (the part no candidate explains stays)."""
    total = np.maximum(noise.sum(axis=0), measured)
    share = np.where(total > 0, measured / np.maximum(total, 1e-300), 0.0)  # measured noise per unit injected

    def snr(removed: np.ndarray) -> float:
        return mean_snr_db(signal, np.maximum(measured - removed * share, measured * 1e-6))

    removed = np.zeros_like(measured)
    current = snr(removed)
    chosen: list[int] = []
    spent = 0.0
    left = set(range(len(noise)))
    while left:
        best, best_rate = None, 0.0
        for c in left:
            cost = max(float(costs[c]), 1e-9)
            if spent + max(float(costs[c]), 0.0) > allowance:
                continue
            gain = snr(removed + noise[c]) - current
            if gain > 1e-6 and gain / cost > best_rate:
                best, best_rate = c, gain / cost
        if best is None:
            break
        chosen.append(best)
        left.discard(best)
        spent += max(float(costs[best]), 0.0)
        removed = removed + noise[best]
        current = snr(removed)
    return chosen


def choose_16bit_layers(graph: Graph, ranges: Callable[[Value], tuple[float, float]], config: QuantConfig,
                        frames: Sequence[Mapping[str, np.ndarray]], budget: float, device: str = "tda4vm",
                        q8: QuantResult | None = None, calib_frames: int = 8) -> MixedChoice:
    """Promote layers of the prepared float ``graph`` to 16 bits within ``budget x`` the all-8-bit
    time (see the module docstring); returns the choice with its quantized graph.

    ``calib_frames``: how many frames calibration ran; the downstream sensitivity runs are held
    to about half that many float runs (so the search costs about as much as calibration)."""
    start = time.perf_counter()
    q8 = q8 or quantize_prepared(graph, ranges, config)
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
    sens = Sensitivity(graph, candidates)
    cap = WORK_PER_CALIB_FRAME * max(calib_frames, 1) * sens.full_work
    if len(frames) > 1 and sens.work.sum() * len(frames) > cap:
        frames = frames[:1]  # all of them on one frame, rather than fewer on two
    sens.run(frames)
    executor8 = FixedExecutor(q8.graph, kernels="auto")
    _, measured = output_noise(executor8, frames, sens.float_outputs)
    snr8 = mean_snr_db(sens.signal, measured)

    def check(chosen: list[_Candidate], tries: int) -> MixedChoice | None:
        """Quantize with ``chosen`` (in pick order) and check it on the quantized graph itself: the
        time net.bin will record (dropping the last picked while over budget), the SNR it will have."""
        chosen = list(chosen)
        while chosen and tries > 0:
            tries -= 1
            trial = attrs.evolve(config, layers_16bit=config.layers_16bit | frozenset(c.op.name for c in chosen))
            result = quantize_prepared(graph, ranges, trial)
            ms = predicted_ms(result.graph, device, sorted(trial.layers_16bit)) if ms8 is not None else None
            if ms8 is not None and (ms is None or ms > budget * ms8 * (1 + 1e-9)):
                chosen.pop()  # the last picked had the least gain per cycle
                continue
            _, noise16 = output_noise(FixedExecutor(result.graph, kernels="auto"), frames, sens.float_outputs)
            snr = mean_snr_db(sens.signal, noise16)
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
    priority = sens.local * sens.reach.any(axis=1) / np.maximum(extra, 1e-9 * max(base_cycles, 1.0))
    noise = sens.measure(priority, cap, "mixed precision: layer sensitivity")
    order = greedy(noise, sens.signal, measured, extra, allowance)
    got = check([candidates[i] for i in order], MAX_CHECKS)
    return got if got is not None else done((), q8, ms8, snr8, snr8)
