"""Automatic mixed precision (TIDL ``mixedPrecisionFactor``): which layers to compute in 16 bits.

Cost model (until the C7x perf model is wired in): a MAC layer costs its MAC
count in 8 bits and four times that in 16 bits (the MMA does a quarter of
the 16-bit MACs per cycle). The budget is ``factor x`` the all-8-bit cost.
Each MAC layer is promoted alone and the SNR of the network outputs (over a
few calibration frames) measured; layers are then promoted greedily by SNR
gained per extra cost until the budget is spent.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs
import numpy as np
from tidlc.backends.tidl.fixed.executor import MAC_OPS, FixedExecutor

from tidlc.interp import Interpreter
from tidlc.ir.core import Graph, Value

from tidlc.metrics import SnrAccumulator
from .ptq import QuantConfig, quantize_prepared


def output_snr(qgraph: Graph, float_outputs: Sequence[Mapping[str, np.ndarray]],
               frames: Sequence[Mapping[str, np.ndarray]]) -> float:
    acc = SnrAccumulator()
    executor = FixedExecutor(qgraph)
    for feeds, ref_out in zip(frames, float_outputs):
        out = executor.run(feeds)
        for name, value in ref_out.items():
            if value.dtype.kind == "f":
                acc.add(value, out[name])
    return acc.db


def choose_16bit_layers(graph: Graph, ranges: Callable[[Value], tuple[float, float]], config: QuantConfig,
                        frames: Sequence[Mapping[str, np.ndarray]], factor: float) -> list[str]:
    candidates = [(op.name, op.opdef.macs(op)) for op in graph.compute_ops()
                  if op.kind in MAC_OPS and op.name and op.name not in config.layers_16bit]
    candidates = [(name, macs) for name, macs in candidates if macs > 0]
    if not candidates or not frames:
        return []
    total = sum(op.opdef.macs(op) for op in graph.compute_ops() if op.kind in MAC_OPS)
    budget = (factor - 1.0) * total
    interp = Interpreter(graph)
    float_outputs = [interp.run(f) for f in frames]
    base = output_snr(quantize_prepared(graph, ranges, config).graph, float_outputs, frames)
    gains = []
    for name, macs in candidates:
        trial = attrs.evolve(config, layers_16bit=config.layers_16bit | {name})
        snr = output_snr(quantize_prepared(graph, ranges, trial).graph, float_outputs, frames)
        gains.append((name, snr - base, 3.0 * macs))
    chosen, spent = [], 0.0
    for name, gain, cost in sorted(gains, key=lambda g: -g[1] / g[2]):
        if gain <= 0:
            break
        if spent + cost <= budget:
            chosen.append(name)
            spent += cost
    return chosen
