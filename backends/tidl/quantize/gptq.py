"""Error-compensating weight rounding (``--weight-rounding gptq``, on at -O3).

Rounding each weight to its nearest code is optimal for the weight, not for the layer: a
layer computes ``y = W x``, and what matters is ``||W X - Q X||`` over the inputs ``X`` it
really sees. GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", ICLR 2023, after Hassibi & Stork's Optimal Brain Surgeon) rounds
the input dimensions one at a time and spreads each rounding error over the dimensions not
yet rounded, in proportion to the inverse of the inputs' second moments ``H = X X^T``: the
least-squares correction of the layer's output. The codes stay on the same grid (the same
per-tensor or per-channel scale, the same range), so the result is an ordinary TIDL layer;
only which neighbour each weight rounds to changes.

Measured (benchmarks/quant_quality.py, MobileNetV2 with trained-like batch norm): 8-bit output
SNR 14.0 -> 16.3 dB, 16-bit 46.2 -> 50.5 dB.

``H`` is collected from the integer input codes of each layer in a nearest-rounded
quantization of the graph (run by the bit-exact executor) over at most :data:`FRAMES`
calibration frames, at most :data:`POSITIONS` evenly strided output positions per frame and
layer: integer sums, exact in any order, so the codes are the same whatever ``--workers``,
BLAS threads or CPU. Depthwise layers get one ``kh*kw`` matrix per channel; other grouped
convolutions and deconvolutions keep nearest rounding.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from tidlc.ir.core import Graph
from tidlc.ir.fixed_arith import round_half_away

from .ptq import is_depthwise

FRAMES = 32  # calibration frames whose layer inputs make H
POSITIONS = 4096  # output positions per frame and layer at most (evenly strided); at most 2**12
DAMP = 0.001  # H's diagonal is raised by this fraction of its mean (a rank-deficient H stays invertible)
BLOCK = 128  # input dimensions rounded per block (the rest is updated once per block)


def _layers(graph: Graph) -> dict[int, object]:
    """The layers GPTQ rounds, by id of their weight value: dense and conv2d (regular or depthwise)."""
    out = {}
    for op in graph.ops:
        if op.kind not in ("conv2d", "dense") or len(op.operands) < 2:
            continue
        w = op.operands[1].const_value()
        if w is None or w.dtype.kind != "f":
            continue
        if op.kind == "conv2d" and op.attrs.get("groups", 1) > 1 and not is_depthwise(op):
            continue
        out[id(op.operands[1])] = op
    return out


def _columns(op, x: np.ndarray) -> np.ndarray:
    """The layer's input as (N, K, L) float64 columns: K input dimensions (OIHW order), L positions."""
    if op.kind == "dense":  # (over the last axis: every other axis but the batch is positions)
        cols = np.asarray(x).reshape(x.shape[0], -1, x.shape[-1]).transpose(0, 2, 1)
        step = -(-cols.shape[2] // POSITIONS)
        return np.asarray(cols[:, :, ::step] if step > 1 else cols, dtype=np.float64)
    w = op.operands[1].type.shape
    a = op.attrs
    kh, kw = w[2], w[3]
    if kh == kw == 1 and not any(a["pads"]):
        xs = x[:, :, ::a["strides"][0], ::a["strides"][1]]
        cols = xs.reshape(xs.shape[0], xs.shape[1], -1)
    else:
        from tidlc.ir.ops.nn import im2col
        cols, _, _ = im2col(np.ascontiguousarray(x, dtype=np.float32), kh, kw, a["strides"], a["pads"], a["dilations"])
    step = -(-cols.shape[2] // POSITIONS)
    return np.asarray(cols[:, :, ::step] if step > 1 else cols, dtype=np.float64)


def hessians(fixed: Graph, frames: Iterable[Mapping[str, np.ndarray]], names: set[str]) -> dict[str, np.ndarray]:
    """``sum X X^T`` of the integer input codes of each layer of ``fixed`` (a nearest-rounded
    quantization of the float graph) named in ``names``, by name: (K, K), or (C, kh*kw, kh*kw)
    for a depthwise layer. The codes are integers (|q| < 2**16), so every product and every sum
    (at most 2**12 positions a frame, :data:`FRAMES` frames) is exact in float64: the same bits in
    any summation order, whatever BLAS, its threads or the CPU (the float graph's activations
    differ in their last bits between thread counts, and GPTQ's choices would follow them)."""
    from tidlc.backends.tidl.fixed import FixedExecutor
    layers = {op.name: op for op in fixed.ops if op.name in names and op.kind in ("conv2d", "dense")}
    readers: dict[int, list] = {}
    for op in layers.values():
        readers.setdefault(id(op.operands[0]), []).append(op)
    sums: dict[str, np.ndarray] = {}
    pending: dict[str, list[np.ndarray]] = {}  # columns not yet in the sum, (c, k/c, positions) each

    def flush(name: str) -> None:
        per = np.concatenate(pending.pop(name), axis=2)
        h = np.matmul(per, per.transpose(0, 2, 1))
        h = h if h.shape[0] > 1 else h[0]
        sums[name] = sums[name] + h if name in sums else h

    def add(op, x) -> None:
        # the columns are gathered until there are as many positions as rows, then multiplied at
        # once: a layer with few positions and a long K (PP-OCRv4's recognizer: K = 2880, 40
        # positions) made one (K, K) product per frame, each a memory-bound rank-40 update (most of
        # a 5-minute -O3 compile). The sums are of integer products, exact in any grouping.
        cols = _columns(op, x)
        n, k, _ = cols.shape
        c = op.attrs["groups"] if op.kind == "conv2d" and op.attrs.get("groups", 1) > 1 else 1
        for i in range(n):
            pending.setdefault(op.name, []).append(np.ascontiguousarray(cols[i]).reshape(c, k // c, -1))
            if sum(p.shape[2] for p in pending[op.name]) >= max(k // c, 256):
                flush(op.name)

    def observe(op, results):
        for v, r in zip(op.results, results):
            for reader in readers.get(id(v), ()):
                add(reader, r)

    from .calibrate import progress
    executor = FixedExecutor(fixed, kernels="auto")
    total = min(FRAMES, len(frames)) if hasattr(frames, "__len__") else None
    with progress(total, "GPTQ: layer input statistics") as bar:
        for count, feeds in enumerate(frames):
            if count >= FRAMES:
                break
            executor.run(feeds, observe)
            bar.advance()
    for name in list(pending):
        flush(name)
    return sums


_CACHE: dict[bytes, dict[str, np.ndarray]] = {}
CACHE_ENTRIES = 2  # -O3 quantizes one float graph (and its equalized twin) several times


def cached_hessians(reference: Graph, fixed: Graph, frames: list[Mapping[str, np.ndarray]]) -> dict[int, np.ndarray]:
    """:func:`hessians` of the GPTQ layers of ``reference`` (the float graph), by id of their
    weight value, computed once per nearest-rounded ``fixed`` graph and frames (a digest of its
    constants, types and the frames)."""
    import hashlib
    layers = _layers(reference)
    digest = hashlib.sha256()
    for op in fixed.ops:
        digest.update(f"{op.kind}:{op.name}:{[str(r.type) for r in op.results]};".encode())
        if op.kind == "const":
            digest.update(np.ascontiguousarray(op.data).tobytes())
    for feeds in frames[:FRAMES]:
        for name in sorted(feeds):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(feeds[name]).tobytes())
    key = digest.digest()
    by_name = _CACHE.get(key)
    if by_name is None:
        by_name = hessians(fixed, frames, {op.name for op in layers.values()})
        while len(_CACHE) >= CACHE_ENTRIES:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = by_name
    return {vid: by_name[op.name] for vid, op in layers.items() if op.name in by_name}


def round_weights(w: np.ndarray, h: np.ndarray, scale, qmin: int, qmax: int) -> np.ndarray:
    """The codes of ``w`` (output channels first) at ``scale`` (a float, or one per output
    channel) that GPTQ chooses for the inputs' second moments ``h`` ((K, K), or (C, K, K) per
    channel of a depthwise layer): float64 integers in ``[qmin, qmax]``, ``w``'s shape."""
    shape = w.shape
    ws = np.asarray(w, dtype=np.float64).reshape(shape[0], -1) * (
        np.asarray(scale, dtype=np.float64).reshape(-1, 1) if np.ndim(scale) else float(scale))
    k = ws.shape[1]
    per_channel = h.ndim == 3
    hh = np.array(h if per_channel else h[None], dtype=np.float64)
    d = np.arange(k)
    diag = hh[:, d, d].copy()
    dead = diag <= 0  # an input that is always 0: its weight does not matter, round it to nearest
    hh[:, d, d] += DAMP * np.maximum(diag.mean(axis=1, keepdims=True), 1e-30) + dead
    # the widest inputs first (GPTQ's "act order"): their errors are spread over the most others
    order = np.argsort(-diag.mean(axis=0), kind="stable") if not per_channel else d
    ws = ws[:, order]
    hh = hh[:, order][:, :, order]
    try:
        lower = np.linalg.cholesky(hh)
        inv_lower = np.linalg.inv(lower)
        upper = np.swapaxes(np.linalg.cholesky(np.swapaxes(inv_lower, 1, 2) @ inv_lower), 1, 2)
    except np.linalg.LinAlgError:  # not positive definite even damped: nearest rounding
        out = np.empty_like(ws)
        out[:, order] = np.clip(round_half_away(ws), qmin, qmax)
        return out.reshape(shape)
    q = np.empty_like(ws)
    for start in range(0, k, BLOCK):
        end = min(start + BLOCK, k)
        errs = np.empty((ws.shape[0], end - start))
        for i in range(start, end):
            q[:, i] = np.clip(round_half_away(ws[:, i]), qmin, qmax)  # as nearest rounding does
            u = upper[:, i] if per_channel else upper[0, i]  # (C, K) or (K,)
            err = (ws[:, i] - q[:, i]) / (u[:, i] if per_channel else u[i])
            if per_channel:
                ws[:, i + 1:end] -= err[:, None] * u[:, i + 1:end]
            else:
                ws[:, i + 1:end] -= np.outer(err, u[i + 1:end])
            errs[:, i - start] = err
        if end < k:  # the block's errors reach the dimensions after it in one product
            if per_channel:
                ws[:, end:] -= np.einsum("cb,cbk->ck", errs, upper[:, start:end, end:])
            else:
                ws[:, end:] -= errs @ upper[0, start:end, end:]
    out = np.empty_like(q)
    out[:, order] = q
    return out.reshape(shape)
