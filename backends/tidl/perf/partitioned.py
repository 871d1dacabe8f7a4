"""`tidlc perf` of a partitioned model: C7x/MMA time per subgraph (the perf model on each),
host ops on the Arm Cortex-A72 (``arm.py``), a call overhead per subgraph and the DDR transfer
of every boundary tensor (docs/partition.md, "Performance").

Schema ``tidlc.perf.partitioned/1``.
"""
from __future__ import annotations

import json
import math

import attrs

from .arm import ARM, ArmModel, host_op_ms, transfer_ms

SCHEMA = "tidlc.perf.partitioned/1"


@attrs.frozen
class HostOpPerf:
    name: str
    kind: str
    ms: float
    macs: int
    bytes: int


@attrs.frozen
class PartitionedPerf:
    device: str
    subgraphs: tuple  # (index, ops, PerfReport)
    host_ops: tuple[HostOpPerf, ...]
    boundary: dict  # tensor -> bytes per frame
    arm: ArmModel
    ddr_bytes_per_s: float

    @property
    def c7x_ms(self) -> float:
        return sum(rep.ms for _, _, rep in self.subgraphs)

    @property
    def arm_ms(self) -> float:
        return sum(h.ms for h in self.host_ops)

    @property
    def call_ms(self) -> float:
        return len(self.subgraphs) * self.arm.call_overhead_us / 1e3

    @property
    def transfer_ms(self) -> float:
        return transfer_ms(sum(self.boundary.values()), self.ddr_bytes_per_s)

    @property
    def ms(self) -> float:
        """Per frame, with the units run one after another (host and C7x do not overlap)."""
        return self.c7x_ms + self.arm_ms + self.call_ms + self.transfer_ms

    @property
    def fps(self) -> float:
        return 1000.0 / self.ms if self.ms > 0 else math.inf

    def hints(self, top: int = 3) -> list[str]:
        out = []
        heavy = sorted(self.host_ops, key=lambda h: -h.ms)[:top]
        for h in heavy:
            share = 100.0 * h.ms / self.ms if self.ms else 0.0
            out.append(f"host op '{h.name}' ({h.kind}) costs {h.ms:.3f} ms on the A72 ({share:.0f}% of the frame): "
                       "make it an op TIDL runs, or move it out of the model")
        if len(self.subgraphs) > 1:
            out.append(f"{len(self.subgraphs)} subgraphs cost {self.call_ms:.2f} ms of call overhead; fewer host ops "
                       "between them (or --max-subgraphs) merge them")
        return out

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, "device": self.device,
                "ms": round(self.ms, 4), "fps": round(self.fps, 2) if math.isfinite(self.fps) else None,
                "c7x_ms": round(self.c7x_ms, 4), "arm_ms": round(self.arm_ms, 4),
                "call_ms": round(self.call_ms, 4), "transfer_ms": round(self.transfer_ms, 4),
                "subgraphs": [{"index": i, "ops": ops, "ms": round(rep.ms, 4), "cycles": round(rep.total_cycles)}
                              for i, ops, rep in self.subgraphs],
                "host_ops": [{"name": h.name, "kind": h.kind, "ms": round(h.ms, 4), "macs": h.macs, "bytes": h.bytes}
                             for h in self.host_ops],
                "boundary": {k: int(v) for k, v in sorted(self.boundary.items())},
                "arm": self.arm.to_dict(), "hints": self.hints()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n"

    def render_text(self) -> str:
        lines = [(f"partitioned model on {self.device}: {len(self.subgraphs)} subgraph(s), "
                  f"{len(self.host_ops)} host op(s)"),
                 f"  total      {self.ms:9.3f} ms/frame  ({self.fps:.1f} fps; units run one after another)",
                 f"  C7x/MMA    {self.c7x_ms:9.3f} ms",
                 f"  Arm A72    {self.arm_ms:9.3f} ms  (estimate)",
                 f"  calls      {self.call_ms:9.3f} ms  ({self.arm.call_overhead_us:.0f} us per subgraph, estimate)",
                 (f"  transfer   {self.transfer_ms:9.3f} ms  ({sum(self.boundary.values())} boundary bytes/frame "
                  "through DDR)"), "", f"  {'unit':<36} {'where':<8} {'ms':>9}"]
        for i, ops, rep in self.subgraphs:
            lines.append(f"  {f'subgraph {i} ({ops} ops)':<36} {'C7x':<8} {rep.ms:9.3f}")
        for h in self.host_ops:
            lines.append(f"  {h.name[:36]:<36} {'A72':<8} {h.ms:9.3f}")
        hints = self.hints()
        if hints:
            lines += ["", "hints:"] + [f"  - {h}" for h in hints]
        return "\n".join(lines) + "\n"


def estimate_partitioned(graph, partition, subgraph_graphs, device, options, estimate,
                         arm: ArmModel = ARM) -> PartitionedPerf:
    """``graph``: the float graph (host ops are costed from it); ``subgraph_graphs``: one graph per
    region (quantized, or float: the perf model takes ``options.bits``); ``estimate``: the C7x model."""
    from tidlc.partition import op_names
    names = op_names(graph)
    host = set(partition.host_ops)
    host_ops = []
    for op in graph.compute_ops():
        name = names[id(op)]
        if name in host:
            ms, macs, nbytes = host_op_ms(op, arm)
            host_ops.append(HostOpPerf(name, op.kind, ms, macs, nbytes))
    subgraphs = tuple((r.index, len(r.op_names), estimate(g, device, options))
                      for r, g in zip(partition.regions, subgraph_graphs))
    ddr = device.ddr_peak_bytes_per_s * device.ddr_efficiency
    return PartitionedPerf(device.name, subgraphs, tuple(host_ops), dict(partition.boundary), arm, ddr)
