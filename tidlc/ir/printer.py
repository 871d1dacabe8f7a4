"""The IR text form (printer side). ``parser.py`` reads it back; the pair round-trips.

One op per line, SSA names, types carry layout and quantization::

    tidlc.graph @lenet {source = "lenet.prototxt"} {
      %data = input "data" : tensor<1x1x28x28xf32, NCHW>
      %0 = const @conv1.w : tensor<20x1x5x5xf32>
      %1 = conv2d(%data, %0) {act = "relu"} : tensor<1x20x24x24xf32, NCHW> loc("conv1" "lenet.prototxt":12:1)
      output(%1) {names = ["conv1"]}
    }

Constants with at most ``INLINE_LIMIT`` elements, and splats (one value
repeated), are written inline as ``dense<...>``; larger ones are referenced by
``@symbol`` and their data goes to a sidecar weights file (``weights.py``).
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import QuantInfo, TensorType

INLINE_LIMIT = 16
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_.$-]*")  # used with fullmatch: "$" would accept "x\n"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def format_float(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return repr(v)


def format_element(v: np.floating) -> str:
    """Shortest text that reads back to the same value *in v's own precision* (1e-08, not 9.99...e-09)."""
    if np.isnan(v):
        return "nan"
    return str(v)  # numpy prints the shortest round-tripping digits of float16/32/64 scalars


def format_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def format_symbol(name: str) -> str:
    return "@" + (name if _BARE.fullmatch(name) else format_string(name))


def format_attr_key(key: str) -> str:
    return key if _IDENT.fullmatch(key) else format_string(key)


def format_attr_value(v: Any) -> str:
    if isinstance(v, np.generic):  # frontends may hand over numpy scalars
        v = v.item()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_float(v)
    if isinstance(v, str):
        return format_string(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr_value(x) for x in v) + "]"
    raise TypeError(f"cannot print attribute value {v!r}")


def format_quant(q: QuantInfo) -> str:
    parts = [f"bits={q.bits}", f"signed={'true' if q.signed else 'false'}",
             "scale=" + (format_float(q.scale[0]) if len(q.scale) == 1
                         else "[" + ", ".join(format_float(s) for s in q.scale) + "]")]
    if q.zero_point:
        parts.append(f"zp={q.zero_point}")
    if q.shift is not None:
        parts.append(f"shift={q.shift}")
    if q.axis is not None:
        parts.append(f"axis={q.axis}")
    return "!q<" + ", ".join(parts) + ">"


def format_type(t: TensorType) -> str:
    if t.shape is None:
        body = f"*x{t.dtype}"
    else:
        body = "".join(("?" if d is None else str(d)) + "x" for d in t.shape) + t.dtype
    extra = ""
    if t.layout:
        extra += f", {t.layout}"
    if t.quant is not None:
        extra += f", {format_quant(t.quant)}"
    return f"tensor<{body}{extra}>"


def format_dense(data: np.ndarray) -> str:
    flat = data.reshape(-1)
    fmt = format_element if data.dtype.kind == "f" else (
        (lambda b: "true" if b else "false") if data.dtype.kind == "b" else (lambda x: str(int(x))))
    if data.ndim == 0 or (is_splat(data) and data.size > 1):  # scalars and splats: one value
        return f"dense<{fmt(flat[0])}>"
    return "dense<[" + ", ".join(fmt(x) for x in flat) + "]>"


def is_splat(data: np.ndarray) -> bool:
    """True for arrays that are one value repeated by broadcasting (zero strides)."""
    return data.size > 0 and (data.size == 1 or all(s == 0 for s in data.strides))


def format_loc(op: Op, implied_name: str = "") -> str:
    """`` loc("name" "file":line:col)``; the name is left out when the line already says it."""
    loc = op.loc
    name = op.name if op.name != implied_name else ""
    if not name and (loc is None or not loc.file):
        return ""
    text = f" loc({format_string(name)}"
    if loc is not None and loc.file:
        text += f" {format_string(loc.file)}"
        if loc.line:
            text += f":{loc.line}:{loc.col}"
    return text + ")"


class Printer:
    """Prints a graph; collects large constants in ``weights`` (symbol -> array)."""

    def __init__(self, graph: Graph, inline_limit: int = INLINE_LIMIT):
        self.graph = graph
        self.inline_limit = inline_limit
        self.names: dict[int, str] = {}
        self.weights: dict[str, np.ndarray] = {}
        self._used: set[str] = set()
        self._counter = 0

    def _unique(self, base: str, used: set[str]) -> str:
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        return name

    def value_name(self, v: Value) -> str:
        try:
            return "%" + self.names[id(v)]
        except KeyError:
            raise ValueError(f"value {v!r} is used before it is defined") from None

    def _define(self, v: Value, hint: str | None = None) -> str:
        if hint and _BARE.fullmatch(hint) and not hint[0].isdigit():
            name = self._unique(hint, self._used)
        else:
            while str(self._counter) in self._used:
                self._counter += 1
            name = str(self._counter)
            self._used.add(name)
            self._counter += 1
        self.names[id(v)] = name
        return "%" + name

    def _weight_symbol(self, op: Op) -> str:
        base = op.name or f"w{len(self.weights)}"
        sym = self._unique(base, set(self.weights))
        return sym

    def print_op(self, op: Op) -> str:
        operands = [self.value_name(v) for v in op.operands]
        if op.kind == "input":
            name = op.attrs["name"]
            lhs = self._define(op.results[0], name)
            return f"{lhs} = input {format_string(name)} : {format_type(op.results[0].type)}{format_loc(op, name)}"
        if op.kind == "const":
            lhs = self._define(op.results[0])
            data = op.data
            sym = ""
            if data.size <= self.inline_limit or is_splat(data):
                payload = format_dense(data)
            else:
                sym = self._weight_symbol(op)
                self.weights[sym] = data
                payload = format_symbol(sym)
            return f"{lhs} = const {payload} : {format_type(op.results[0].type)}{format_loc(op, sym)}"
        lhs = ", ".join(self._define(r) for r in op.results)
        defaults = op.opdef.attrs
        shown = {k: v for k, v in op.attrs.items() if k not in defaults or defaults[k].default != v}
        attr_text = ""
        if shown:
            attr_text = " {" + ", ".join(f"{k} = {format_attr_value(v)}" for k, v in shown.items()) + "}"
        types = ", ".join(format_type(r.type) for r in op.results)
        head = f"{lhs} = " if op.results else ""
        return f"{head}{op.kind}({', '.join(operands)}){attr_text} : {types}{format_loc(op)}"

    def print(self) -> str:
        g = self.graph
        head = f"tidlc.graph {format_symbol(g.name)}"
        if g.attrs:
            head += " {" + ", ".join(f"{format_attr_key(k)} = {format_attr_value(g.attrs[k])}"
                                     for k in sorted(g.attrs)) + "}"
        lines = [head + " {"]
        for op in g.ops:
            lines.append("  " + self.print_op(op))
        outs = ", ".join(self.value_name(v) for v in g.outputs)
        names = list(g.output_names) or [v.name for v in g.outputs]
        names_text = f" {{names = {format_attr_value(names)}}}" if any(names) else ""
        lines.append(f"  output({outs}){names_text}")
        lines.append("}")
        return "\n".join(lines) + "\n"


def print_graph(graph: Graph, inline_limit: int = INLINE_LIMIT) -> tuple[str, dict[str, np.ndarray]]:
    """Text form of ``graph`` and the sidecar constants it references."""
    printer = Printer(graph, inline_limit)
    return printer.print(), printer.weights


def to_text(graph: Graph) -> str:
    """Text form with every constant inline-or-referenced (weights dropped); for display."""
    return print_graph(graph)[0]
