"""The IR text form (parser side): lark grammar ``ir.lark`` -> :class:`Graph`.

``print_graph(parse_graph(text, weights)) == text`` for every text the printer
wrote; this is a tested invariant.
"""
from __future__ import annotations

import functools
from typing import Mapping, Optional

import lark
import numpy as np

from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import get_opdef
from tidlc.ir.types import DTYPES, QuantInfo, TensorType


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark.open("ir.lark", rel_to=__file__, parser="lalr", propagate_positions=True)


def _unquote(token: str) -> str:
    body = token[1:-1]
    out, i = [], 0
    escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(escapes.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _symbol(token: str) -> str:
    return _unquote(token[1:]) if token.startswith('@"') else token[1:]


class _Values(lark.Transformer):
    """Bottom-up conversion of scalars, lists, types and locations."""

    def int_(self, items):
        return int(items[0])

    def float_(self, items):
        return float(items[0])

    def string(self, items):
        return _unquote(str(items[0]))

    def true(self, _):
        return True

    def false(self, _):
        return False

    def list(self, items):
        return [x for x in items if x is not None]

    def attr(self, items):
        return (str(items[0]), items[1])

    def attr_dict(self, items):
        return dict(x for x in items if x is not None)

    def quant_field(self, items):
        return (str(items[0]), items[1])

    def quant(self, items):
        fields = dict(x for x in items if x is not None)
        scale = fields.get("scale")
        return QuantInfo(bits=fields["bits"], signed=fields["signed"],
                         scale=scale if isinstance(scale, list) else [scale],
                         zero_point=fields.get("zp", 0), shift=fields.get("shift"), axis=fields.get("axis"))

    def type(self, items):
        spec = str(items[0])
        layout = next((str(x) for x in items[1:] if isinstance(x, lark.Token)), None)
        quant = next((x for x in items[1:] if isinstance(x, QuantInfo)), None)
        parts = spec.split("x")
        dtype = parts[-1]
        if parts[0] == "*":
            shape = None
        else:
            shape = tuple(None if d == "?" else int(d) for d in parts[:-1])
        return TensorType(shape, dtype, layout, quant)

    def loc(self, items):
        name = _unquote(str(items[0]))
        file = _unquote(str(items[1])) if len(items) > 1 and items[1] is not None else ""
        line = int(items[2]) if len(items) > 2 and items[2] is not None else 0
        col = int(items[3]) if len(items) > 3 and items[3] is not None else 0
        return Loc(name, file, line, col)

    def value_list(self, items):
        return [str(x) for x in items]


class _GraphBuilder:
    def __init__(self, weights: Mapping[str, np.ndarray], filename: str):
        self.weights = weights
        self.filename = filename
        self.values: dict[str, Value] = {}

    def err(self, meta, message: str, hint: str = "") -> TidlcError:
        return TidlcError(message, Loc("", self.filename, meta.line, meta.column), hint)

    def lookup(self, token, meta) -> Value:
        try:
            return self.values[str(token)]
        except KeyError:
            raise self.err(meta, f"use of undefined value {token}") from None

    def define(self, name: str, value: Value, meta) -> None:
        if name in self.values:
            raise self.err(meta, f"value {name} is defined twice")
        self.values[name] = value

    def build(self, tree) -> Graph:
        graph_node = tree.children[0]
        name_tok, *rest = graph_node.children
        graph = Graph(name=_symbol(str(name_tok)))
        for item in rest:
            if isinstance(item, dict):
                graph.attrs = item
            elif isinstance(item, lark.Tree) and item.data == "output":
                self.output(graph, item)
            elif isinstance(item, lark.Tree):
                graph.ops.append(self.op(item))
        return graph

    def _loc_name(self, loc: Optional[Loc]):
        if loc is None:
            return "", None
        name = loc.name
        return name, (Loc("", loc.file, loc.line, loc.col) if loc.file else None)

    def op(self, node) -> Op:
        meta = node.meta
        kids = node.children
        loc = kids[-1] if kids and isinstance(kids[-1], Loc) else None
        name, oploc = self._loc_name(loc)
        if node.data in ("input_op", "const_op"):
            lhs, payload, ty = kids[0], kids[1], kids[2]
            if len(lhs) != 1:
                raise self.err(meta, f"{node.data[:-3]} defines exactly one value")
            if node.data == "input_op":
                op = Op("input", [], [], {"name": _unquote(str(payload))}, name, oploc)
            else:
                op = Op("const", [], [], {}, name, oploc, data=self.payload(payload, ty, meta))
            value = Value(ty, op, 0)
            if node.data == "input_op":
                value.name = op.attrs["name"]
            op.results = [value]
            self.define(lhs[0], value, meta)
            return op
        # generic op
        idx = 0
        lhs: list[str] = []
        if isinstance(kids[0], list):
            lhs, idx = kids[0], 1
        kind = str(kids[idx])
        idx += 1
        operand_toks, attrs_, types = [], {}, []
        for item in kids[idx:]:
            if isinstance(item, lark.Token) and item.type == "VALUE":
                operand_toks.append(item)
            elif isinstance(item, dict):
                attrs_ = item
            elif isinstance(item, TensorType):
                types.append(item)
        try:
            opdef = get_opdef(kind)
        except KeyError:
            raise self.err(meta, f"unknown op '{kind}'", "is the plugin that defines it installed?") from None
        try:
            norm = opdef.normalize_attrs(attrs_)
        except ValueError as exc:
            raise self.err(meta, str(exc)) from None
        operands = [self.lookup(t, meta) for t in operand_toks]
        if len(types) != len(lhs):
            raise self.err(meta, f"{kind}: {len(lhs)} result(s) but {len(types)} type(s)")
        op = Op(kind, operands, [], norm, name, oploc)
        op.results = [Value(t, op, i) for i, t in enumerate(types)]
        for tok, v in zip(lhs, op.results):
            self.define(tok, v, meta)
        return op

    def payload(self, node, ty: TensorType, meta) -> np.ndarray:
        if not ty.is_static:
            raise self.err(meta, "a constant needs a static shape")
        dtype = DTYPES[ty.dtype]
        if node.data == "symbol_payload":
            sym = _symbol(str(node.children[0]))
            if sym not in self.weights:
                raise self.err(meta, f"constant {format_sym(sym)} not found in the weights file",
                               "keep the .weights file next to the .tir file")
            data = np.asarray(self.weights[sym])
            if data.shape != ty.shape or data.dtype != dtype:
                raise self.err(meta, f"constant @{sym} is {data.dtype}{list(data.shape)} in the weights "
                                     f"file but {ty} in the text")
            return data
        if node.data == "splat_payload":
            return np.broadcast_to(np.array(node.children[0], dtype=dtype), ty.shape)
        values = node.children[0]
        arr = np.array(values, dtype=dtype)
        if arr.size != int(np.prod(ty.shape)):
            raise self.err(meta, f"dense constant has {arr.size} values, type {ty} needs {int(np.prod(ty.shape))}")
        return arr.reshape(ty.shape)

    def output(self, graph: Graph, node) -> None:
        values = [self.lookup(t, node.meta) for t in node.children if isinstance(t, lark.Token)]
        attrs_ = next((x for x in node.children if isinstance(x, dict)), {})
        names = attrs_.get("names", [])
        if names and len(names) != len(values):
            raise self.err(node.meta, f"output has {len(values)} values but {len(names)} names")
        graph.outputs = values
        graph.output_names = list(names)
        for v, n in zip(values, names):
            if not v.name:
                v.name = n


def format_sym(sym: str) -> str:
    from tidlc.ir.printer import format_symbol
    return format_symbol(sym)


def parse_graph(text: str, weights: Optional[Mapping[str, np.ndarray]] = None,
                filename: str = "<ir>") -> Graph:
    """Parse IR text; ``weights`` resolves ``@symbol`` constants."""
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        line = text.splitlines()[exc.line - 1] if 0 < exc.line <= len(text.splitlines()) else ""
        expected = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or []
        exp = ", ".join(sorted(expected)[:8])
        raise TidlcError(f"syntax error{': expected ' + exp if exp else ''}",
                         Loc("", filename, exc.line, exc.column),
                         problems=[line, " " * max(exc.column - 1, 0) + "^"]) from None
    tree = _Values().transform(tree)
    return _GraphBuilder(weights or {}, filename).build(tree)
