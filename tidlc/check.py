"""``tidlc check``: what of a model runs where, and why, before compiling (docs/check.md).

Every compute op of the optimised float graph gets the backend's verdict
(``Backend.supports``: accelerated, accelerated with a penalty, or host) with
the reason and a fix hint; inputs whose shape is still dynamic and ops that
stay in float inside an accelerated region are named; then the partition the
compiler would make (``tidlc.partition.plan_partition``): subgraphs, host
ops and the tensors crossing the boundary with their bytes per frame.
"""
from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from typing import Any

import attrs

from tidlc.config import CompileOptions

SCHEMA = "tidlc.check/1"
# verdict words in the table and the JSON document
LEVEL_WORDS = {"accelerated": "accelerated", "penalty": "penalty", "host": "host"}


@attrs.frozen
class LayerVerdict:
    name: str
    kind: str
    level: str  # accelerated | penalty | host
    reason: str
    hint: str
    shape: tuple[int, ...] | None  # the first result's shape (None: dynamic or not a tensor)
    float_island: bool = False  # stays float between data converts inside an accelerated region


@attrs.frozen
class CheckReport:
    model: str
    target: str
    device: str
    layers: tuple[LayerVerdict, ...]
    dynamic_inputs: tuple[tuple[str, tuple], ...]  # (name, shape with -1/None for unknown dims)
    partition: Any  # tidlc.partition.Partition, or None when the graph cannot be partitioned
    problems: tuple[str, ...] = ()  # whole-model problems (dynamic inputs, limits), one line each

    @property
    def host_layers(self) -> list[LayerVerdict]:
        return [v for v in self.layers if v.level == "host"]

    @property
    def exit_code(self) -> int:
        """0: the whole model is accelerated; 1: something runs on the host or must change first."""
        whole = self.partition is None or self.partition.is_whole
        return 0 if not self.host_layers and not self.dynamic_inputs and whole else 1

    def to_dict(self) -> dict:
        counts = Counter(v.level for v in self.layers)
        doc: dict[str, Any] = {
            "schema": SCHEMA, "model": self.model, "target": self.target, "device": self.device,
            "summary": {"layers": len(self.layers), "accelerated": counts.get("accelerated", 0),
                        "penalty": counts.get("penalty", 0), "host": counts.get("host", 0),
                        "float_islands": sum(v.float_island for v in self.layers),
                        "exit_code": self.exit_code},
            "layers": [{"name": v.name, "kind": v.kind, "verdict": v.level, "reason": v.reason, "hint": v.hint,
                        "shape": list(v.shape) if v.shape is not None else None, "float": v.float_island}
                       for v in self.layers],
            "dynamic_inputs": [{"name": n, "shape": list(s)} for n, s in self.dynamic_inputs],
            "problems": list(self.problems),
            "partition": None,
        }
        p = self.partition
        if p is not None:
            doc["partition"] = {
                "subgraphs": [{"index": r.index, "ops": list(r.op_names), "inputs": list(r.inputs),
                               "outputs": list(r.outputs), "cost": r.cost} for r in p.regions],
                "host_ops": list(p.host_ops),
                "boundary": [{"tensor": name, "bytes_per_frame": int(b)} for name, b in sorted(p.boundary.items())],
            }
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _supports(backend, op, device: str | None):
    params = inspect.signature(backend.supports).parameters
    if device is not None and "device" in params:
        return backend.supports(op, device=device)
    return backend.supports(op)


def _shape(op) -> tuple[int, ...] | None:
    if not op.results:
        return None
    t = op.results[0].type
    shape = getattr(t, "shape", None)
    return tuple(shape) if shape is not None and getattr(t, "is_static", False) else None


def check_graph(graph, backend, options: CompileOptions, model: str = "") -> CheckReport:
    """The report for an optimised float ``graph`` on ``backend``."""
    from tidlc.partition import plan_partition
    target = options.target
    # one row per op: the ops one source node became share its name (InstanceNormalization: reshape,
    # layernorm, reshape, scale), and each has its own verdict
    # a pre-quantized model's quantize/dequantize ops are ranges the quantizer takes and removes, not
    # layers (an ONNX QDQ MobileNetV3-Large: 452 'layers' for its 113)
    from tidlc.ir.ops.quant import QDQ_KINDS
    verdicts = [(op, _supports(backend, op, target.device)) for op in graph.compute_ops()
                if op.kind not in QDQ_KINDS]
    dynamic = []
    for op in graph.input_ops:
        t = op.results[0].type
        if not t.is_static:
            dims = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (getattr(t, "shape", None) or ()))
            dynamic.append((op.attrs["name"], dims))
    from tidlc.shapes import shape_hint
    layouts = {op.attrs["name"]: op.results[0].type.layout for op in graph.input_ops}
    problems = [f"input '{name}' has a dynamic shape {list(shape)}: give {shape_hint(name, shape, layouts[name])}"
                for name, shape in dynamic]
    partition = None
    if not dynamic:
        partition = plan_partition(graph, backend, max_subgraphs=target.max_subgraphs,
                                   min_subgraph_ops=target.min_subgraph_ops,
                                   deny_types=target.deny_op_types, deny_names=target.deny_op_names)
    in_region = set()
    host_by_plan: set[str] = set()
    if partition is not None:
        in_region = {name for r in partition.regions for name in r.op_names}
        host_by_plan = set(partition.host_ops)
    from tidlc.partition import NO_I64, RUN_TIME_SIZE
    layers, kept = [], []
    waiting = 0  # layers sized by a dynamic input: nothing to say until it has a size
    for op, verdict in verdicts:
        name, level, reason, hint = op.name, verdict.level, verdict.reason, verdict.hint
        if dynamic and level == "host" and (RUN_TIME_SIZE in reason or NO_I64 in reason):
            waiting += 1
            continue
        kept.append(op)
        if level != "host" and name in host_by_plan:  # denied, or a region too small / beyond --max-subgraphs
            level, reason = "host", _why_host(op, target)
            hint = hint or "--max-subgraphs / --min-subgraph-ops / the deny lists decide this"
        float_island = level == "penalty" and "float" in reason and name in in_region
        layers.append(LayerVerdict(name, op.kind, level, reason, hint, _shape(op), float_island))
    if waiting:
        problems.append(f"{waiting} layer(s) sized by the dynamic input(s) are checked once the input shapes are given")
    layers = _between_floats(graph, kept, layers)
    if partition is not None:
        floats = sum(v.float_island for v in layers)
        if floats:
            problems.append(f"{floats} op(s) stay in float inside accelerated subgraphs, each between "
                            "data_convert ops (costed as C7x float work)")
    return CheckReport(model, target.backend, target.device, tuple(layers), tuple(dynamic), partition,
                       tuple(problems))


def _between_floats(graph, ops, layers: list[LayerVerdict]) -> list[LayerVerdict]:
    """The verdicts with the accelerated layers that compile runs in float because they sit
    between float layers (``tidlc.partition.between_floats``, the quantizer's rule) marked so."""
    from tidlc.partition import between_floats
    row = {id(op): i for i, op in enumerate(ops)}
    users = graph.users()

    def is_float(v) -> bool:
        i = row.get(id(v.producer))
        return i is not None and layers[i].float_island

    def integer(op) -> bool:
        i = row.get(id(op))
        return i is not None and layers[i].level != "host" and not layers[i].float_island

    for op in ops:
        i = row[id(op)]
        v = layers[i]
        if v.level == "accelerated" and between_floats(op, is_float, lambda r: (u for u, _ in users.get(r, ())),
                                                       integer):
            layers[i] = attrs.evolve(v, level="penalty", float_island=True,
                                     reason=f"{v.reason}, run in float: between float layers, in fixed point "
                                            "it would only add a data convert on each side",
                                     hint=v.hint or "nothing to change (it joins the float layers around it)")
    return layers


def _why_host(op, target) -> str:
    if op.kind in target.deny_op_types:
        return f"--deny-op-type {op.kind}"
    if op.name in target.deny_op_names:
        return f"--deny-op-name {op.name}"
    from tidlc.partition import DATA_MOVES
    if op.kind in DATA_MOVES:
        return "its accelerated region is too small, beyond --max-subgraphs, or only moves data between host ops"
    return "its accelerated region is too small or beyond --max-subgraphs"


def check_model(path: str, options: CompileOptions, plugins=None) -> CheckReport:
    """Load and optimise ``path`` (float, as ``tidlc compile`` would before quantizing) and check it."""
    from tidlc.compiler import backend_for, float_graph, plugins_for
    plugins = plugins or plugins_for(options)
    backend = backend_for(options, plugins)  # an unknown --target fails before any work
    graph = float_graph(path, options, plugins)
    return check_graph(graph, backend, options.replace(emit="ir", quantize=False), path)


# ----------------------------------------------------------------------------- rendering
def _rows(report: CheckReport) -> list[tuple[str, ...]]:
    rows = []
    for v in report.layers:
        if v.level == "accelerated" and not v.float_island:
            continue
        what = v.level + (" (float)" if v.float_island else "")
        rows.append((v.name, v.kind, what, v.reason, v.hint))
    return rows


def render_text(report: CheckReport) -> str:
    counts = Counter(v.level for v in report.layers)
    lines = [f"{report.model}: {len(report.layers)} layers on {report.target} ({report.device}): "
             f"{counts.get('accelerated', 0)} accelerated, {counts.get('penalty', 0)} with a penalty, "
             f"{counts.get('host', 0)} on the host"]
    rows = _rows(report)
    if rows:
        header = ("layer", "kind", "verdict", "reason", "hint")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        lines.append("")
        for r in [header, *rows]:
            lines.append(("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]).rstrip())
    for problem in report.problems:
        lines.append(f"problem: {problem}")
    lines += _alignment_lines(report)
    lines += _partition_lines(report)
    return "\n".join(lines).rstrip() + "\n"


_WASTE = re.compile(r"(\d+)% of (?:the )?(?:MMA|vector) work")


def alignment_waste(report: CheckReport, most: int = 5) -> tuple[int, list[tuple[str, str, str]]]:
    """(how many accelerated layers pad their work, the ``most`` worst as (name, kind, note))."""
    rows = []
    for v in report.layers:
        if v.level != "accelerated" or "alignment:" not in v.reason:
            continue
        note = v.reason.split("alignment:", 1)[1].strip()
        together = re.search(r"together (\d+)%", note)
        worst = int(together.group(1)) if together else max((int(m) for m in _WASTE.findall(note)), default=0)
        rows.append((worst, v.name, v.kind, note))
    rows.sort(key=lambda r: -r[0])
    return len(rows), [(name, kind, note) for _, name, kind, note in rows[:most]]


def _alignment_lines(report: CheckReport) -> list[str]:
    count, worst = alignment_waste(report)
    if not count:
        return []
    lines = ["", f"alignment: {count} accelerated layer(s) pad their work to the MMA's sizes; the worst:"]
    lines += [f"  {name} ({kind}): {note}" for name, kind, note in worst]
    return lines


def _partition_lines(report: CheckReport) -> list[str]:
    p = report.partition
    if p is None:
        return []
    if p.is_whole:
        return ["", "partition: the whole model is one accelerated subgraph"]
    lines = ["", f"partition: {len(p.regions)} subgraph(s), {len(p.host_ops)} host op(s), "
                 f"{sum(p.boundary.values()) / 1024:.1f} KiB per frame across the boundary"]
    for r in p.regions:
        lines.append(f"  subgraph {r.index}: {len(r.op_names)} ops ({r.op_names[0]} .. {r.op_names[-1]}), "
                     f"in {', '.join(r.inputs)} -> out {', '.join(r.outputs)}")
    if p.host_ops:
        lines.append(f"  host: {', '.join(p.host_ops)}")
    for name, nbytes in sorted(p.boundary.items()):
        lines.append(f"  boundary {name}: {int(nbytes)} bytes/frame")
    return lines


def render_rich(report: CheckReport) -> str:
    """The same content with rich tables (for a terminal)."""
    import io

    from rich.console import Console
    from rich.table import Table
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    counts = Counter(v.level for v in report.layers)
    console.print(f"[bold]{report.model}[/]: {len(report.layers)} layers on {report.target} ({report.device}): "
                  f"[green]{counts.get('accelerated', 0)} accelerated[/], "
                  f"[yellow]{counts.get('penalty', 0)} with a penalty[/], [red]{counts.get('host', 0)} on the host[/]")
    rows = _rows(report)
    if rows:
        table = Table("layer", "kind", "verdict", "reason", "hint")
        colour = {"host": "red", "penalty": "yellow"}
        for name, kind, what, reason, hint in rows:
            table.add_row(name, kind, f"[{colour.get(what.split()[0], 'green')}]{what}[/]", reason, hint)
        console.print(table)
    for problem in report.problems:
        console.print(f"[yellow]problem:[/] {problem}")
    for line in _alignment_lines(report) + _partition_lines(report):
        console.print(line, highlight=False)
    return buf.getvalue()
