"""Bias calibration: correct each layer's bias so its fixed-point channel means match float.

Quantization error is not zero-mean per channel (weight rounding, clipping),
and a mean offset in one layer passes to every layer after it. TIDL's
"advanced bias calibration" nudges every bias by ``factor x (float mean -
fixed mean)`` per iteration over the calibration frames (defaults: 50
iterations, factor 0.05), one fixed-point run of every frame per iteration.

tidlc does it in one layer-ordered pass (the result TIDL's iterations
approach, at the cost of about one fixed-point run per frame):

1. the float graph runs once per frame: the per-channel mean of every MAC
   layer's output (conv, deconv, dense, scale; after its fused activation);
2. the fixed-point graph runs op by op on all frames at once, each tensor
   kept until its last reader; at a MAC layer with a bias, the per-channel mean
   of its (dequantized) output is compared with float's, the difference is
   added to the bias in the accumulator's integer domain (``x`` its scale,
   rounded, saturated to the accumulator width), and that layer alone is run
   again, up to ``iterations`` times while the correction is still more than
   ``STOP_LSB`` of an output step (a clipping activation such as ReLU passes
   only part of a bias change: the next correction catches up);
3. the next layers then see the corrected outputs, so each layer corrects
   what the layers before it leave, and every layer is computed once (plus
   its own corrections).

Two things keep the correction from doing harm where TIDL's would:

* the float means are of float values clipped to what the fixed-point layer
  can represent: saturation the quantizer chose (a sigmoid's input where its
  table is flat, an 8-bit histogram range) is not an error to take back
  through the bias, which would move every value that does not saturate (a
  text detector's 16-bit output fell from 61 to 44 dB);
* each channel's mean error is shrunk toward zero by how much the frames
  disagree on it (:func:`shrunk_offset`): an error the calibration frames do
  not agree on is theirs, not the layer's (MTCNN PNet, one output pixel a
  frame, lost 1.2 dB at 16 bits and now gains 1.8).

``-O3`` runs it with TIDL's defaults (``QuantOptions.bias_iterations``); at 8 bits it is kept only
where calibration frames it was not fitted on agree (``api.calibrate_checked``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from tidlc.backends.tidl.fixed import reference as ref
from tidlc.backends.tidl.fixed.executor import MAC_OPS, FixedExecutor, _quant

from tidlc.interp import Interpreter
from tidlc.ir.core import Graph, Op

STOP_LSB = 0.05  # a layer's corrections stop when every channel's mean is off by less than this many output steps
MAX_CORRECTIONS = 2  # per layer (a re-run each), whatever --bias-calibration's iteration count


def _axis(op: Op) -> int:
    if op.kind in ("dense", "matmul"):
        return -1
    return op.attrs.get("axis", 1) if op.kind == "scale" else 1


def _channel_mean(x: np.ndarray, axis: int) -> np.ndarray:
    axis = axis % x.ndim
    return x.mean(axis=tuple(i for i in range(x.ndim) if i != axis), dtype=np.float64)


def _targets(qgraph: Graph) -> list[Op]:
    return [op for op in qgraph.ops if op.kind in MAC_OPS and len(op.operands) > 2
            and op.operands[2].producer is not None and op.operands[2].producer.kind == "const"]


def bias_constants(qgraph: Graph) -> dict[int, tuple[Op, np.ndarray]]:
    """The bias constants calibration may change, each with a copy of its data (to put back)."""
    return {id(b): (b, np.array(b.data)) for b in (op.operands[2].producer for op in _targets(qgraph))}


def representable(op: Op) -> tuple[float, float]:
    """The float range a fixed-point layer's output can hold: its integer range over its scale."""
    q = _quant(op.results[0])
    return q.qmin / q.scale[0], q.qmax / q.scale[0]


def float_frame_means(float_graph: Graph, origin: Mapping[int, object], layers: Sequence[Op],
                      frames: Sequence[Mapping[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """id(fixed-point layer) -> its float counterpart's per-channel means, one row per frame, each
    value clipped to what the layer's output can represent: a range the quantizer chose to saturate
    (a sigmoid's input beyond where the table is flat, an 8-bit histogram range) is part of its
    design, not an error for the bias to take back (matching the unclipped mean would move every
    value that does not saturate)."""
    targets = {id(origin[id(op.results[0])]): (op, representable(op)) for op in layers}
    rows: dict[int, list[np.ndarray]] = {}
    interp = Interpreter(float_graph)

    def observer(fop, results):
        for v, r in zip(fop.results, results):
            if id(v) in targets:
                op, (lo, hi) = targets[id(v)]
                clipped = np.clip(np.asarray(r, np.float64), lo, hi)
                rows.setdefault(id(op), []).append(_channel_mean(clipped, _axis(op)))

    for feeds in frames:
        interp.run(feeds, observer)
    return {k: np.stack(v) for k, v in rows.items()}


def shrunk_offset(errors: np.ndarray) -> np.ndarray:
    """The per-channel correction for ``errors`` (float - fixed channel means, one row per frame):
    their mean, shrunk toward 0 by ``max(0, 1 - v / mean**2)`` where ``v`` is the variance of that
    mean over frames (James-Stein's positive part). A mean the frames do not agree on is mostly
    noise of these frames: correcting it fully costs other frames more than it saves (MTCNN PNet,
    one output pixel a frame, lost 1.2 dB at 16 bits). One frame: the mean as it is."""
    mean = errors.mean(axis=0)
    if errors.shape[0] < 2:
        return mean
    var = errors.var(axis=0, ddof=1) / errors.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        keep = np.where(mean != 0.0, np.clip(1.0 - var / (mean * mean), 0.0, 1.0), 0.0)
    return mean * keep


def _nudge(bias_op: Op, delta: np.ndarray) -> bool:
    """Add ``delta`` (accumulator units) to a bias constant, rounded and saturated; False if no code moved."""
    bq = bias_op.results[0].type.quant
    if delta.size != bias_op.data.size:  # one bias for every channel
        delta = np.atleast_1d(delta.mean())
    lo, hi = bq.qmin, bq.qmax
    old = bias_op.data.astype(np.int64).reshape(-1)
    new = np.clip(old + ref.round_half_away(delta).astype(np.int64), lo, hi)
    if np.array_equal(new, old):
        return False
    bias_op.data = new.astype(bias_op.data.dtype).reshape(bias_op.data.shape)
    return True


def calibrate_biases(float_graph: Graph, qgraph: Graph, origin: Mapping[int, object],
                     frames: Sequence[Mapping[str, np.ndarray]], iterations: int, factor: float = 1.0) -> int:
    """Adjust the bias constants of ``qgraph`` in place (the one-pass method of the module
    docstring); ``iterations`` bounds the corrections per layer (at most MAX_CORRECTIONS),
    ``factor`` is TIDL's per-iteration step: each layer moves the fraction ``1 - (1 - factor) **
    iterations`` of the way to the float means (what that many of TIDL's iterations reach on one
    linear layer: 92% with TIDL's defaults; factor 1: all of it). Returns the number of layers."""
    from .calibrate import progress
    layers = _targets(qgraph)
    if not layers or not frames or iterations <= 0:
        return 0
    frames = list(frames)
    float_means = float_frame_means(float_graph, origin, layers, frames)
    is_target = {id(op) for op in layers}
    executor = FixedExecutor(qgraph, kernels="auto")  # the exact fast kernels, built once
    envs = []
    for feeds in frames:
        env = dict(executor.consts)
        env.update((vid, np.asarray(feeds[name])) for name, vid in executor.inputs)
        envs.append(env)
    corrections = min(int(iterations), MAX_CORRECTIONS)
    fraction = 1.0 - (1.0 - min(max(float(factor), 0.0), 1.0)) ** int(iterations)

    def run(step) -> list[list[np.ndarray]]:
        out = []
        for env in envs:
            results = step.kernel([env[vid] for vid in step.operands])
            out.append([np.asarray(r) if dt is None else np.asarray(r).astype(dt, copy=False)
                        for r, (_, dt) in zip(results, step.results)])
        return out

    with progress(len(layers), "bias calibration", "layers") as bar:
        for step in executor.steps:
            per_frame = run(step)
            op = step.op
            if id(op) in is_target:
                bias_op = op.operands[2].producer
                bias_id = id(bias_op.results[0])
                s_out = _quant(op.results[0]).scale[0]
                s_acc = np.asarray(bias_op.results[0].type.quant.scale, dtype=np.float64)
                target = None
                for _ in range(corrections):
                    fixed = np.stack([_channel_mean(np.asarray(r[0], np.float64), _axis(op))
                                      for r in per_frame]) / s_out  # one row per frame
                    if target is None:
                        target = fixed.mean(axis=0) + fraction * shrunk_offset(float_means[id(op)] - fixed)
                    diff = target - fixed.mean(axis=0)
                    if float(np.max(np.abs(diff), initial=0.0)) * s_out < STOP_LSB:
                        break
                    if not _nudge(bias_op, diff * s_acc):
                        break
                    for env in envs:
                        env[bias_id] = np.asarray(bias_op.data)
                    per_frame = run(step)
                bar.advance()
            for env, results in zip(envs, per_frame):
                env.update(zip((vid for vid, _ in step.results), results))
                for vid in step.frees:
                    env.pop(vid, None)
    return len(layers)
