"""TIDL's advanced bias calibration: nudge biases until fixed-point channel means match float.

Per iteration, over the bias-calibration frames: run the fixed-point graph,
take each MAC layer's per-channel output mean (dequantized), compare it with
the float graph's, and move the bias by ``factor x (float mean - fixed mean)``
(converted to the accumulator scale, rounded, saturated to the accumulator).
TIDL's defaults: 50 iterations, factor 0.05.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.executor import MAC_OPS, FixedExecutor, _quant

from tidlc.interp import Interpreter
from tidlc.ir.core import Graph, Op

from .calibrate import progress_bar


def _axis(op: Op) -> int:
    if op.kind in ("dense", "matmul"):
        return -1
    return op.attrs.get("axis", 1) if op.kind == "scale" else 1


def _channel_mean(x: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % x.ndim
    return x.mean(axis=tuple(i for i in range(x.ndim) if i != axis), dtype=np.float64)


def calibrate_biases(float_graph: Graph, qgraph: Graph, origin: Mapping[int, object],
                     frames: Sequence[Mapping[str, np.ndarray]], iterations: int, factor: float) -> int:
    """Adjust the bias constants of ``qgraph`` in place; returns the number of layers adjusted."""
    layers = [op for op in qgraph.ops if op.kind in MAC_OPS and len(op.operands) > 2
              and op.operands[2].producer is not None and op.operands[2].producer.kind == "const"]
    if not layers or not frames or iterations <= 0:
        return 0
    targets = {id(origin[id(op.results[0])]): op for op in layers}
    float_means: dict[int, np.ndarray] = {}
    interp = Interpreter(float_graph)

    def float_observer(fop, results):
        for v, r in zip(fop.results, results):
            op = targets.get(id(v))
            if op is not None:
                m = _channel_mean(np.asarray(r, np.float64), _axis(op))
                float_means[id(op)] = float_means.get(id(op), 0.0) + m / len(frames)

    for feeds in frames:
        interp.run(feeds, float_observer)
    scales = {id(op): _quant(op.results[0]).scale[0] for op in layers}
    fixed_means: dict[int, np.ndarray] = {}

    def fixed_observer(op, results):
        if id(op) in scales:
            m = _channel_mean(np.asarray(results[0], np.float64), _axis(op)) / scales[id(op)]
            fixed_means[id(op)] = fixed_means.get(id(op), 0.0) + m / len(frames)

    executor = FixedExecutor(qgraph, kernels="auto")  # the exact fast kernels, built once
    with progress_bar(iterations, "bias calibration") as bar:
        for _ in range(iterations):
            fixed_means.clear()
            for feeds in frames:
                executor.run(feeds, fixed_observer)
            for op in layers:
                bias_op = op.operands[2].producer
                bq = bias_op.results[0].type.quant
                s_acc = np.asarray(bq.scale, dtype=np.float64)
                delta = factor * (float_means[id(op)] - fixed_means[id(op)]) * s_acc
                if delta.size != bias_op.data.size:  # one bias for every channel
                    delta = np.atleast_1d(delta.mean())
                width = bq.bits
                lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
                old = bias_op.data.astype(np.int64).reshape(-1)
                new = np.clip(old + ref.round_half_away(delta).astype(np.int64), lo, hi)
                bias_op.data = new.astype(bias_op.data.dtype).reshape(bias_op.data.shape)
                executor.consts[id(bias_op.results[0])] = np.asarray(bias_op.data)
            bar.advance()
    return len(layers)
