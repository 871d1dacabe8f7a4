"""Partition a graph into accelerator subgraphs and host ops (docs/partition.md).

``plan_partition(graph, backend, ...)`` is generic over backends: an op is
accelerated when ``backend.supports(op).supported`` (its verdict level is not
``host``) and no deny list names it. Accelerated ops are grouped into
*regions*: connected sets such that the graph contracted to regions and host
ops stays acyclic (no path region -> host op -> same region), so each region
runs as one call. Ops are assigned in topological order; an op joins the
regions of its accelerated producers only when that creates no cycle, else it
starts a region of its own. Then regions smaller than ``min_subgraph_ops``, regions
that only move data (when the model has more than that region), and all but the
``max_subgraphs`` most costly ones fall back to the host.

``extract_region(graph, region)`` is a region as a standalone graph: its
inputs are the tensors it reads from outside, its outputs those read outside
(or graph outputs). Tensors are named by :func:`tensor_names`.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Sequence

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import numpy_dtype

# verdict texts of layers on a tensor sized only at run time and on 64-bit integers (a backend's
# constraints write them): while a graph input is still dynamic, both come from its open size
# (layers on its unknown dims, the Shape arithmetic that folds once it has one), and ``tidlc check``
# leaves such layers out of its table
RUN_TIME_SIZE = "its size is known only at run time"
NO_I64 = "TIDL has no i64 tensors"
# ops that only move or copy elements (no arithmetic: a resize interpolates, a quantize rounds)
DATA_MOVES = frozenset({"concat", "split", "slice", "reshape", "flatten", "transpose", "squeeze", "unsqueeze",
                        "expand", "gather", "depth_to_space", "shuffle_channel", "identity", "dropout", "pad"})


@attrs.frozen
class Region:
    """One accelerated subgraph: ``op_names`` in graph order, the tensors it reads from outside
    (``inputs``) and those read outside it or graph outputs (``outputs``), its cost."""

    index: int
    op_names: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    cost: float


@attrs.frozen
class Partition:
    regions: tuple[Region, ...]
    host_ops: tuple[str, ...]  # op names, graph order
    boundary: dict  # tensor name -> bytes per frame, every tensor between host and a region

    @property
    def is_whole(self) -> bool:
        return len(self.regions) == 1 and not self.host_ops

    def summary(self) -> str:
        if self.is_whole:
            return "partition: whole model on the accelerator"
        total = sum(self.boundary.values())
        return (f"partition: {len(self.regions)} subgraph(s) "
                f"({', '.join(str(len(r.op_names)) for r in self.regions) or 'none'} ops), "
                f"{len(self.host_ops)} host op(s), {len(self.boundary)} boundary tensor(s), {total} bytes/frame")

    def to_dict(self) -> dict:
        return {"subgraphs": [{"index": r.index, "ops": list(r.op_names), "inputs": list(r.inputs),
                               "outputs": list(r.outputs), "cost": r.cost} for r in self.regions],
                "host_ops": list(self.host_ops),
                "boundary": {k: int(v) for k, v in sorted(self.boundary.items())}}


def op_names(graph: Graph) -> dict[int, str]:
    """op id -> a unique name for every compute op (its own name, else ``kind_N``)."""
    names: dict[int, str] = {}
    seen: set[str] = set()
    for i, op in enumerate(graph.compute_ops()):
        name = op.name or f"{op.kind}_{i}"
        if name in seen:
            name = f"{name}_{i}"
        seen.add(name)
        names[id(op)] = name
    return names


def tensor_names(graph: Graph) -> dict[int, str]:
    """value id -> a unique tensor name: a graph input's name, else its producer's name (``OP``,
    ``OP:k`` for the k-th of several results). Only op names: they survive the IR text round trip
    (model.tir), value names do not."""
    ops = op_names(graph)
    names: dict[int, str] = {}
    seen: set[str] = set()
    for op in graph.ops:
        for k, v in enumerate(op.results):
            if op.kind == "input":
                name = op.attrs["name"]
            else:
                base = ops.get(id(op)) or op.name or op.kind
                name = base if len(op.results) == 1 else f"{base}:{k}"
            if name in seen:
                name = f"{ops.get(id(op), op.name or op.kind)}:{k}"
                while name in seen:
                    name += "'"
            seen.add(name)
            names[id(v)] = name
    return names


def tensor_bytes(v: Value) -> int:
    """Bytes per frame of a value (0 when its shape is not static)."""
    t = v.type
    if t.shape is None or any(d is None for d in t.shape):
        return 0
    return int(np.prod(t.shape, dtype=np.int64)) * numpy_dtype(t.dtype).itemsize


def between_floats(op: Op, is_float: Callable[[Value], bool], readers: Callable[[Value], Iterable[Op]],
                   integer: Callable[[Op], bool]) -> bool:
    """Whether ``op``, which has an integer kernel, is better run in float: it is not a MAC layer,
    every input it computes on is a float layer's result (``is_float``; not a graph input) and no
    reader of its results computes in integers (``integer``; graph outputs and host ops do not).
    In fixed point it would add a data convert on each side and round its values to one
    per-tensor step for nothing. The quantizer (``Quantizer.between_floats``) and ``tidlc check``
    share this rule, so what check reports is what compile builds."""
    from tidlc.ir.opdef import Trait
    if op.opdef.has(Trait.MAC):
        return False  # the accelerator's own work, worth its conversions
    data = [v for v in op.operands if v.const_value() is None]
    if not data or not all(v.producer is not None and v.producer.kind != "input" and is_float(v) for v in data):
        return False
    return not any(integer(reader) for r in op.results for reader in readers(r))


def _nearest(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.0)
    return close[0] if close else ""


def check_deny_lists(graph: Graph, deny_types: Sequence[str], deny_names: Sequence[str]) -> None:
    """A deny-list entry that names no op kind / no op of the graph is an error naming the nearest."""
    from tidlc.ir.opdef import OPS
    kinds = set(OPS.names()) | {op.kind for op in graph.compute_ops()}
    for kind in deny_types:
        if kind not in kinds:
            near = _nearest(kind, {op.kind for op in graph.compute_ops()} or kinds)
            raise TidlcError(f"--deny-op-type {kind}: no such op kind" + (f" (nearest: '{near}')" if near else ""),
                             hint="the kinds are tidlc IR op names (`tidlc ir MODEL` shows them)", code="option")
    names = {op.name for op in graph.compute_ops() if op.name} | set(op_names(graph).values())
    for name in deny_names:
        if name not in names:
            near = _nearest(name, names)
            raise TidlcError(f"--deny-op-name {name}: no op of that name" + (f" (nearest: '{near}')" if near else ""),
                             hint="op names are shown by `tidlc ir MODEL`", code="option")


def plan_partition(graph: Graph, backend, *, max_subgraphs: int = 16, min_subgraph_ops: int = 1,
                   deny_types: Sequence[str] = (), deny_names: Sequence[str] = (),
                   cost: Callable[[list[Op]], float] | None = None) -> Partition:
    """The partition of ``graph`` into accelerated regions and host ops (see the module doc)."""
    check_deny_lists(graph, deny_types, deny_names)
    deny_types, deny_names = set(deny_types), set(deny_names)
    names = op_names(graph)
    tnames = tensor_names(graph)
    compute = list(graph.compute_ops())
    pos = {id(op): i for i, op in enumerate(compute)}
    accelerated = {id(op) for op in compute
                   if op.kind not in deny_types and op.name not in deny_names and names[id(op)] not in deny_names
                   and backend.supports(op).supported}
    succ: dict[int, list[Op]] = {}
    pred: dict[int, list[Op]] = {}
    for op in compute:
        for v in op.operands:
            p = v.producer
            if p is not None and id(p) in pos:
                succ.setdefault(id(p), []).append(op)
                pred.setdefault(id(op), []).append(p)

    region_of: dict[int, int] = {}
    members: dict[int, list[Op]] = {}
    leaving: dict[int, dict[int, Op]] = {}  # per region: the ops outside it that read its members
    next_id = 0

    def acyclic(group: list[int], op: Op) -> bool:
        """Whether regions ``group`` + ``op`` can be one node of an acyclic contracted graph: no
        path leaves them through an op outside and comes back in. Such a path runs through
        outside ops only, from one that reads a member, all before ``op`` (the ops are in
        topological order). Only that part of the graph is walked: a region that grows over
        the whole model does not make every op walk it all (PSPNet at 1024x2048, 11,500 ops:
        4 minutes)."""
        groups = set(group)
        hi = pos[id(op)]

        def inside(o: Op) -> bool:
            return o is op or region_of.get(id(o)) in groups

        stack = [o for r in group for o in leaving[r].values() if pos[id(o)] < hi and not inside(o)]
        seen = {id(o) for o in stack}
        while stack:
            for nxt in succ.get(id(stack.pop()), ()):
                if inside(nxt):
                    return False  # (back in)
                if pos[id(nxt)] < hi and id(nxt) not in seen:
                    seen.add(id(nxt))
                    stack.append(nxt)
        return True

    for op in compute:
        if id(op) not in accelerated:
            continue
        candidates: list[int] = []
        for p in pred.get(id(op), ()):
            r = region_of.get(id(p))
            if r is not None and r not in candidates:
                candidates.append(r)
        candidates.sort(key=lambda r: -len(members[r]))
        chosen: list[int] = []
        for r in candidates:
            if acyclic([*chosen, r], op):
                chosen.append(r)
        if not chosen:
            target = next_id
            next_id += 1
            members[target] = []
            leaving[target] = {}
        else:
            target = chosen[0]
            for r in chosen[1:]:
                for o in members.pop(r):
                    region_of[id(o)] = target
                    members[target].append(o)
                leaving[target].update(leaving.pop(r))
        members[target].append(op)
        region_of[id(op)] = target
        leaving[target].update((id(o), o) for o in succ.get(id(op), ()))
        leaving[target] = {k: o for k, o in leaving[target].items() if region_of.get(k) != target}

    cost = cost or (lambda ops: float(len(ops)))
    groups = [sorted(ops, key=lambda o: pos[id(o)]) for ops in members.values()]
    groups = [g for g in groups if len(g) >= max(1, min_subgraph_ops)]
    if len(groups) > 1 or len(accelerated) < len(compute):
        # a region that only moves data (a flatten or concat between an NMS's host ops) saves the
        # host no work and costs a call and two crossings: the host moves it (unless it is the model)
        groups = [g for g in groups if not all(o.kind in DATA_MOVES for o in g)]
    costs = [float(cost(g)) for g in groups]
    keep = sorted(range(len(groups)), key=lambda i: (-costs[i], pos[id(groups[i][0])]))[:max(0, max_subgraphs)]
    kept = sorted(keep, key=lambda i: pos[id(groups[i][0])])
    in_region = {id(o) for i in kept for o in groups[i]}

    readers: dict[int, list[Op]] = {}
    for op in compute:
        for v in op.operands:
            readers.setdefault(id(v), []).append(op)
    graph_outputs = {id(v) for v in graph.outputs}
    regions: list[Region] = []
    boundary: dict[str, int] = {}
    for index, i in enumerate(kept):
        ops = groups[i]
        own = {id(o) for o in ops}
        inputs: list[Value] = []
        outputs: list[Value] = []
        for o in ops:
            for v in o.operands:
                p = v.producer
                if p is not None and p.kind == "const":
                    continue
                if (p is None or id(p) not in own) and v not in inputs:
                    inputs.append(v)
            for v in o.results:
                outside = any(id(r) not in own for r in readers.get(id(v), ()))
                if (outside or id(v) in graph_outputs) and v not in outputs:
                    outputs.append(v)
        for v in (*inputs, *outputs):
            boundary[tnames[id(v)]] = tensor_bytes(v)
        regions.append(Region(index, tuple(names[id(o)] for o in ops), tuple(tnames[id(v)] for v in inputs),
                              tuple(tnames[id(v)] for v in outputs), costs[i]))
    host_ops = tuple(names[id(op)] for op in compute if id(op) not in in_region)
    return Partition(tuple(regions), host_ops, boundary)


def extract_region(graph: Graph, region: Region) -> Graph:
    """``region`` of ``graph`` as a standalone graph (inputs and outputs named by tensor names;
    ops keep their names and attributes; the constants they read are copied)."""
    from tidlc.ir.builder import Builder
    names = op_names(graph)
    tnames = tensor_names(graph)
    by_name = {names[id(op)]: op for op in graph.compute_ops()}
    missing = [n for n in region.op_names if n not in by_name]
    if missing:
        raise TidlcError(f"subgraph {region.index}: no op named {missing[0]!r} in the graph", code="mismatch")
    sub = Graph(name=f"{graph.name}_subgraph_{region.index}")
    for key in ("layout", "source"):
        if key in graph.attrs:
            sub.attrs[key] = graph.attrs[key]
    b = Builder(sub)
    env: dict[int, Value] = {}
    values = {tnames[id(v)]: v for op in graph.ops for v in op.results}
    for name in region.inputs:
        v = values[name]
        env[id(v)] = b.input(name, v.type, v.producer.loc if v.producer else None)
    for name in region.op_names:
        op = by_name[name]
        operands = []
        for v in op.operands:
            if id(v) not in env:
                p = v.producer
                if p is None or p.kind != "const":
                    raise TidlcError(f"subgraph {region.index}: op {name!r} reads {tnames[id(v)]!r}, which is "
                                     "neither computed in the subgraph nor one of its inputs", code="mismatch")
                c = Op("const", [], [], dict(p.attrs), p.name, p.loc, data=p.data)
                c.results = [Value(v.type, c, 0, v.name)]
                sub.ops.append(c)
                env[id(v)] = c.results[0]
            operands.append(env[id(v)])
        new = Op(op.kind, operands, [], dict(op.attrs), op.name, op.loc, op.data)
        new.results = [Value(r.type, new, k, r.name) for k, r in enumerate(op.results)]
        sub.ops.append(new)
        for r, nr in zip(op.results, new.results):
            env[id(r)] = nr
    for name in region.outputs:
        v = values[name]
        out = env[id(v)]
        sub.outputs.append(out)
        sub.output_names.append(name)
    return sub
