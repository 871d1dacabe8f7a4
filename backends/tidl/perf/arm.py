"""Host (Arm Cortex-A72) estimates for partitioned models: host ops, subgraph calls, boundary transfers.

The device files have no ``[arm]`` table (``device.py`` rejects unknown keys), so the constants
live here, in the device files' style: each value with where it comes from ("fact" or
"estimate"; every host number is an estimate: TI publishes no A72 timing for TIDL's host side).
"""
from __future__ import annotations

import math
from typing import ClassVar

import attrs
import numpy as np

from tidlc.ir.types import numpy_dtype


@attrs.frozen
class ArmModel:
    mhz: float = 2000.0  # A72 clock on TDA4VM (J721E: 2 x A72 at up to 2 GHz)
    macs_per_cycle: float = 8.0  # NEON: 2 x 128-bit FMA pipes = 8 f32 MACs per cycle (one core)
    efficiency: float = 0.25  # achieved / peak for a framework runtime's generic kernels (onnxruntime, TFLite)
    bytes_per_s: float = 6.0e9  # what one A72 core streams from DDR (reads + writes)
    op_overhead_us: float = 5.0  # per host op: dispatch, allocation, cache misses on small tensors
    call_overhead_us: float = 300.0  # per subgraph call: TIDL-RT process call, A72 <-> C7x IPC, cache maintenance

    SOURCES: ClassVar[dict] = {
        "mhz": "fact: TDA4VM datasheet (SPRSP36), Cortex-A72 up to 2.0 GHz",
        "macs_per_cycle": "fact: Cortex-A72 NEON, 2 x 128-bit FMA pipes",
        "efficiency": "estimate",
        "bytes_per_s": "estimate",
        "op_overhead_us": "estimate",
        "call_overhead_us": "estimate",
    }

    def to_dict(self) -> dict:
        return {"values": attrs.asdict(self), "sources": dict(self.SOURCES)}


ARM = ArmModel()


def _bytes(v) -> int:
    t = v.type
    if t.shape is None or any(d is None for d in t.shape):
        return 0
    return int(np.prod(t.shape, dtype=np.int64)) * numpy_dtype(t.dtype).itemsize


def op_macs(op) -> int:
    try:
        return int(op.opdef.macs(op) or 0)
    except Exception:  # noqa: BLE001 - an op whose MACs cannot be counted (dynamic shapes): 0
        return 0


def host_op_ms(op, arm: ArmModel = ARM) -> tuple[float, int, int]:
    """(ms, MACs, bytes) of one op on the A72: the slower of compute and memory, plus a fixed overhead."""
    macs = op_macs(op)
    nbytes = sum(_bytes(v) for v in op.operands if v.producer is None or v.producer.kind != "const")
    nbytes += sum(_bytes(v) for v in op.results)
    nbytes += sum(_bytes(v) for v in op.operands if v.producer is not None and v.producer.kind == "const")
    compute_s = macs / (arm.mhz * 1e6 * arm.macs_per_cycle * arm.efficiency)
    memory_s = nbytes / arm.bytes_per_s
    return max(compute_s, memory_s) * 1e3 + arm.op_overhead_us / 1e3, macs, nbytes


def transfer_ms(nbytes: float, ddr_bytes_per_s: float) -> float:
    """A boundary tensor through DDR: written by one side and read by the other."""
    if nbytes <= 0 or not math.isfinite(ddr_bytes_per_s) or ddr_bytes_per_s <= 0:
        return 0.0
    return 2.0 * nbytes / ddr_bytes_per_s * 1e3
