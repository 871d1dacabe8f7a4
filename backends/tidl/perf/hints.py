"""Tuning hints, ranked by predicted gain (cycles per frame).

Where a knob exists (numBatches, msmcSize, weight persistence, 8-bit instead
of 16-bit, width alignment) the gain is *predicted*: the model runs again with
the knob changed. Channel alignment, "make this layer lighter" and "SiLU costs
two layers" are rough shares of layers' cycles (``exact = False``); their
messages say so.
"""
from __future__ import annotations

import math

import attrs
import numpy as np
from tidlc.backends.tidl.perf import columns as C
from tidlc.backends.tidl.perf.model import (
    Hint,
    PerfReport,
    Prepared,
    _channel_waste,
    batch_cycles,
    kernel_params,
    run_kernel,
)

MIN_SHARE = 0.005  # hints worth less than 0.5 % of the frame are not shown


def _pct(gain: float, total: float) -> str:
    return f"{100.0 * gain / total:.1f} %" if total else "-"


def _ms(prep: Prepared, cycles: float) -> str:
    return f"{prep.device.cycles_to_ms(cycles):.3f} ms"


def _batching(prep: Prepared, rep: PerfReport) -> list[Hint]:
    if prep.options.batches != 1:
        return []
    best = None
    for n in (2, 4, 8):
        cycles = prep.frame_cycles(attrs.evolve(prep.options, batches=n, hints=False))
        if best is None or cycles < best[1]:
            best = (n, cycles)
    n, cycles = best
    gain = rep.total_cycles - cycles
    if gain <= 0:
        return []
    return [Hint("batching", gain,
                 f"numBatches={n} (--batches {n}) processes {n} frames per call: {_ms(prep, cycles)} per frame "
                 f"instead of {_ms(prep, rep.total_cycles)} (-{_pct(gain, rep.total_cycles)}); weights and layer "
                 f"setup are paid once per call, latency per call becomes {_ms(prep, cycles * n)}")]


def _persistence(prep: Prepared, rep: PerfReport) -> list[Hint]:
    if prep.options.persist_weights:
        return []
    opts = attrs.evolve(prep.options, persist_weights=True, hints=False)
    res, _ = prep.run(opts)
    cycles = batch_cycles(res, prep.device) / opts.batches
    gain = rep.total_cycles - cycles
    if gain <= 0:
        return []
    kept = int(prep.tables.layers[res[:, C.R_W_LOC] == C.LOC_MSMC, C.L_WBYTES].sum())
    return [Hint("persist-weights", gain,
                 f"weight persistence (--persist-weights on) keeps {kept / 1024:.0f} KB of the "
                 f"{rep.weight_bytes / 1024:.0f} KB of weights in MSMC between frames: saves "
                 f"{_pct(gain, rep.total_cycles)} and {kept / 1e6:.2f} MB of DDR reads per "
                 f"{'frame' if opts.batches == 1 else 'call'}")]


def _msmc(prep: Prepared, rep: PerfReport, loc: np.ndarray) -> list[Hint]:
    dev, opts = prep.device, prep.options
    current = dev.msmc_kb if opts.msmc_kb is None else opts.msmc_kb
    hints = []
    if current < dev.msmc_kb:
        full = prep.frame_cycles(attrs.evolve(opts, msmc_kb=dev.msmc_kb, hints=False))
        gain = rep.total_cycles - full
        if gain > 0:
            hints.append(Hint("msmc-size", gain,
                              f"msmcSize {current} KB spills feature maps to DDR; the device's {dev.msmc_kb} KB "
                              f"(--msmc-size {dev.msmc_kb}) saves {_pct(gain, rep.total_cycles)}"))
    tables = prep.tables_for(opts)
    spilled = np.flatnonzero((loc == C.LOC_DDR) & (tables.tensors[:, C.T_PINNED] == 0))
    if len(spilled) and current >= dev.msmc_kb:
        # how much would be gained if everything fitted: a device with enough MSMC
        sizes = tables.tensors[:, C.T_BYTES] * opts.batches
        need_kb = dev.msmc_scratch_kb + math.ceil(_plan_top(tables, opts, prep) / 1024)
        unlimited = prep.frame_cycles(attrs.evolve(opts, msmc_kb=max(need_kb, current), hints=False))
        gain = rep.total_cycles - unlimited
        if gain > 0:
            worst = sorted(spilled, key=lambda t: -sizes[t])[:3]
            names = tuple(tables.tensor_names[t] for t in worst)
            hints.append(Hint("feature-spill", gain,
                              f"{len(spilled)} feature map(s) do not fit in {current} KB of MSMC and go through DDR "
                              f"(largest: {', '.join(f'{n} {sizes[t] / 1024:.0f} KB' for n, t in zip(names, worst))}); "
                              f"keeping them on chip would need {need_kb} KB and save {_pct(gain, rep.total_cycles)}: "
                              "reduce the resolution or the channels of those layers, or split the network",
                              names))
    return hints


def _plan_top(tables, opts, prep) -> int:
    from tidlc.backends.tidl.perf.model import kernel
    params = kernel_params(prep.device, attrs.evolve(opts, msmc_kb=1 << 40))
    return int(kernel.place_tensors(tables.tensors, params)[1])


def _bits(prep: Prepared, rep: PerfReport) -> list[Hint]:
    if prep.options.bits == 8 and not prep.options.layers_16bit:
        return []
    cycles = prep.frame_cycles(attrs.evolve(prep.options, bits=8, layers_16bit=(), hints=False))
    gain = rep.total_cycles - cycles
    if gain <= 0:
        return []
    return [Hint("bits", gain, f"8-bit inference (--bits 8) would take {_ms(prep, cycles)} per frame "
                               f"(-{_pct(gain, rep.total_cycles)}); keep 16 bits only where accuracy needs it "
                               "(mixed precision)")]


def _width(prep: Prepared, rep: PerfReport) -> list[Hint]:
    if rep.width_waste_cycles <= 0:
        return []
    tables = prep.tables_for(prep.options)
    lay = tables.layers
    align = lay[:, C.L_ALIGN]
    width = lay[:, C.L_W]
    padded = -(-width // align) * align
    waste = np.where((lay[:, C.L_KIND] != C.KIND_NONE) & (padded > width),
                     [layer.compute_cycles for layer in rep.layers] * (1 - width / np.maximum(padded, 1)), 0.0)
    worst = [i for i in np.argsort(-waste, kind="stable")[:3] if waste[i] > 0]
    detail = ", ".join(f"{rep.layers[i].name} W={width[i]} computed as {padded[i]}" for i in worst)
    return [Hint("width-alignment", rep.width_waste_cycles,
                 f"{int(((padded > width) & (lay[:, C.L_KIND] != C.KIND_NONE)).sum())} layers compute on rows padded "
                 f"to a multiple of 8 (16 at stride 2): {_pct(rep.width_waste_cycles, rep.total_cycles)} of the "
                 f"frame ({detail}); input sizes whose feature widths are multiples of 8 avoid it",
                 tuple(rep.layers[i].name for i in worst))]


def _channels(prep: Prepared, rep: PerfReport, res: np.ndarray) -> list[Hint]:
    tables = prep.tables_for(prep.options)
    params = kernel_params(prep.device, prep.options)
    waste = _channel_waste(tables, res, params) / prep.options.batches
    total = float(waste.sum())
    if total <= 0:
        return []
    lay = tables.layers
    panel = prep.device.mma_panel_bytes // (1 if prep.options.bits <= 8 else 2)
    worst = [i for i in np.argsort(-waste, kind="stable")[:3] if waste[i] > 0]
    parts = []
    for i in worst:
        k, cout = int(lay[i, C.L_K]), int(lay[i, C.L_COUT_G])
        kp, cp = -(-k // panel) * panel, -(-cout // panel) * panel
        parts.append(f"{rep.layers[i].name}: K={k} of {kp}, Cout={cout} of {cp}")
    return [Hint("channel-alignment", total,
                 f"MMA panels of {panel}x{panel} are partly empty: about {_pct(total, rep.total_cycles)} of the "
                 f"frame ({'; '.join(parts)}); kH*kW*Cin/groups (+1 for the bias) and Cout that are multiples of "
                 f"{panel} fill them", tuple(rep.layers[i].name for i in worst), exact=False)]


def _heaviest(prep: Prepared, rep: PerfReport) -> list[Hint]:
    ranked = sorted(rep.layers, key=lambda layer: -layer.cycles)[:3]
    hints = []
    for layer in ranked:
        if layer.percent < 5:
            break
        why = {"compute": "compute-bound on the " + ("MMA" if layer.unit == "mma" else "C7x vector unit"),
               "dma": "memory-bound (" + _dma_reason(layer) + ")",
               "setup": "dominated by its fixed setup"}.get(layer.bound, "")
        hints.append(Hint("heavy-layer", layer.cycles / 2,
                          f"{layer.name} ({layer.tidl_layer}{', ' + layer.note if layer.note else ''}) takes "
                          f"{layer.percent:.1f} % of the frame, {why}; halving its work saves about "
                          f"{_ms(prep, layer.cycles / 2)}", (layer.name,), exact=False))
    return hints


def _silu(prep: Prepared, rep: PerfReport) -> list[Hint]:
    """``x * sigmoid(x)`` (SiLU, swish: YOLOv5/v8/11, EfficientNet) is a Sigmoid and an EltWise layer
    each, as TIDL has no SiLU; a ReLU (ReLU6) fuses into the layer before it for free."""
    cycles = {layer.name: layer.cycles for layer in rep.layers}
    found, total = [], 0.0
    for op in prep.graph.ops:
        if op.kind != "mul" or len(op.operands) != 2 or op.attrs.get("act", "none") != "none":
            continue
        a, b = op.operands
        for x, s in ((a, b), (b, a)):
            sig = s.producer
            if sig is not None and sig.kind == "sigmoid" and sig.operands[0] is x \
                    and sig.name in cycles and op.name in cycles:
                found.append(op.name)
                total += cycles[sig.name] + cycles[op.name]
                break
    if not found:
        return []
    return [Hint("silu", total,
                 f"{len(found)} SiLU (swish) activations, x * sigmoid(x), run as a Sigmoid and an EltWise layer "
                 f"each (TIDL has no SiLU): about {_ms(prep, total)}, {_pct(total, rep.total_cycles)} of the frame; "
                 f"ReLU or ReLU6 fuses into the conv before it for free (TI's -lite models and EfficientNet-Lite "
                 f"are trained so); the accuracy of the swap needs fine-tuning", tuple(found[:3]), exact=False)]


def _dma_reason(layer) -> str:
    if layer.weights_location == "DDR" and layer.ddr_read_bytes and layer.output_location != "DDR":
        return "weights from DDR"
    if layer.output_location == "DDR":
        return "output spilled to DDR"
    return "feature maps from MSMC/DDR"


def tuning_hints(prep: Prepared, rep: PerfReport, res: np.ndarray, loc: np.ndarray) -> list[Hint]:
    """Every applicable hint, largest predicted gain first (ties: kind name)."""
    hints = (_width(prep, rep) + _channels(prep, rep, res) + _batching(prep, rep) + _persistence(prep, rep)
             + _msmc(prep, rep, loc) + _bits(prep, rep) + _heaviest(prep, rep) + _silu(prep, rep))
    keep = [h for h in hints if h.gain_cycles >= MIN_SHARE * rep.total_cycles]
    return sorted(keep, key=lambda h: (-h.gain_cycles, h.kind))


# ----------------------------------------------------------------------------- -O3 decisions
BATCH_CHOICES = (1, 2, 4, 8)  # numBatches tried at -O3 (latency per call grows with it: kept small)
BATCH_KNEE = 0.10  # double the batch only while that saves at least 10 % per frame


def _what_if(graph, device, options, prep):
    """(base options without hints, the prepared graph) for the -O3 what-if estimates; ``prep``: a
    ``model.prepare`` of the graph to reuse (its tables depend on the bits and 16-bit layers only)."""
    from tidlc.backends.tidl.perf.model import PerfOptions, prepare
    base = attrs.evolve(PerfOptions.from_options(options), hints=False)
    return base, prep if prep is not None else prepare(graph, device, base)


def choose_batches(graph, device, options=None, prep=None) -> tuple[int, list[float]]:
    """numBatches for ``-O3``: the perf model's cycles per frame at each of ``BATCH_CHOICES``, and
    the batch after which doubling saves less than ``BATCH_KNEE`` per frame (1 when batching
    does not pay: a large input's per-call costs are a small share of its frame). Small inputs,
    whose frame is dominated by per-call costs (layer setup, weight loads), get the largest
    gains. Returns (numBatches, cycles per frame for each choice)."""
    base, prep = _what_if(graph, device, options, prep)
    cycles = [prep.frame_cycles(attrs.evolve(base, batches=n)) for n in BATCH_CHOICES]
    chosen = 0
    for i in range(1, len(BATCH_CHOICES)):
        if cycles[i] > cycles[chosen] * (1 - BATCH_KNEE):
            break
        chosen = i
    return BATCH_CHOICES[chosen], cycles


def choose_persistence(graph, device, options=None, prep=None) -> tuple[bool, list[float]]:
    """Weight persistence for ``-O3``: on when the perf model predicts fewer cycles per frame with
    it (the weights that fit in the MSMC left by the feature maps are loaded once, not per frame)
    at the options' numBatches. Returns (on?, cycles per frame [off, on])."""
    base, prep = _what_if(graph, device, options, prep)
    cycles = [prep.frame_cycles(attrs.evolve(base, persist_weights=on)) for on in (False, True)]
    return cycles[1] < cycles[0], cycles


__all__ = ["choose_batches", "choose_persistence", "run_kernel", "tuning_hints"]
