"""The IR text form (parser side): lark grammar ``ir.lark`` -> :class:`Graph`.

``print_graph(parse_graph(text, weights))[0] == text`` for every text the
printer wrote; this is a tested invariant. Every error is a TidlcError at
``file:line:col`` followed by the offending line and a caret.
"""
from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

import lark
import numpy as np

from tidlc import limits
from tidlc.diagnostics import Loc, TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.opdef import get_opdef
from tidlc.ir.types import DTYPES, QuantInfo, TensorType

QUANT_FIELDS = ("bits", "signed", "scale", "zp", "shift", "axis")
# How the terminals of the grammar are named in "expected ..." messages.
_TERMINAL_NAMES = {
    "VALUE": "%value", "SYMBOL": "@symbol", "IDENT": "identifier", "STRING": "string",
    "INT": "integer", "FLOAT": "number", "SHAPE_DTYPE": "shape and element type (e.g. 1x3x?xf32)",
    "LAYOUT": "layout (NCHW or NHWC)", "$END": "end of input",
}


@functools.lru_cache(maxsize=1)
def _parser() -> lark.Lark:
    return lark.Lark.open("ir.lark", rel_to=__file__, parser="lalr", propagate_positions=True,
                          cache=True)


def unquote(token: str) -> str:
    """The text of a quoted string token (escapes resolved)."""
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
    return unquote(token[1:]) if token.startswith('@"') else token[1:]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _quant_info(fields: dict[str, Any]) -> QuantInfo:
    """Validate the fields of a ``!q<...>`` annotation (ValueError with a readable message)."""
    missing = [k for k in ("bits", "signed", "scale") if k not in fields]
    if missing:
        raise ValueError(f"quantization needs {', '.join(missing)}")
    signed, scale = fields["signed"], fields["scale"]
    if not isinstance(signed, bool):
        raise ValueError(f"quantization signed must be true or false, got {signed!r}")
    scales = scale if isinstance(scale, list) else [scale]
    if not scales or not all(_is_number(s) for s in scales):
        raise ValueError("quantization scale must be a number or a list of numbers")
    for key in ("zp", "shift", "axis"):
        if key in fields and not _is_int(fields[key]):
            raise ValueError(f"quantization {key} must be an integer, got {fields[key]!r}")
    if len(scales) > 1 and "axis" not in fields:
        raise ValueError("per-channel quantization (a list of scales) needs an axis")
    return QuantInfo(bits=fields["bits"], signed=signed, scale=scales, zero_point=fields.get("zp", 0),
                     shift=fields.get("shift"), axis=fields.get("axis"))  # validates bits and scales


class _Values(lark.Transformer):
    """Bottom-up conversion of scalars, lists, types and locations (tokens keep positions)."""

    def int_(self, items):
        return int(items[0])

    def float_(self, items):
        return float(items[0])

    def string(self, items):
        return unquote(str(items[0]))

    def true(self, _):
        return True

    def false(self, _):
        return False

    def list(self, items):
        return [x for x in items if x is not None]

    def attr(self, items):
        key = items[0]
        return (unquote(str(key)) if key.type == "STRING" else str(key), items[1])

    def attr_dict(self, items):
        out: dict[str, Any] = {}
        for key, value in (x for x in items if x is not None):
            if key in out:
                raise ValueError(f"attribute '{key}' is given twice")
            out[key] = value
        return out

    def quant_field(self, items):
        return (str(items[0]), items[1])

    def quant(self, items):
        fields: dict[str, Any] = {}
        for key, value in (x for x in items if x is not None):
            if key not in QUANT_FIELDS:
                raise ValueError(f"unknown quantization field '{key}'; known: {', '.join(QUANT_FIELDS)}")
            if key in fields:
                raise ValueError(f"quantization field '{key}' is given twice")
            fields[key] = value
        return _quant_info(fields)

    def type(self, items):
        spec = str(items[0])
        layout = next((str(x) for x in items[1:] if isinstance(x, lark.Token)), None)
        quant = next((x for x in items[1:] if isinstance(x, QuantInfo)), None)
        *dims, dtype = spec.split("x")
        if dims != ["*"]:  # a declared type must fit the limits before anything of it is allocated
            limits.check("rank", len(dims), "tensor type rank")
        shape = None if dims == ["*"] else tuple(None if d == "?" else int(d) for d in dims)
        if shape is not None:
            limits.check_shape(shape, np.dtype(DTYPES[dtype]).itemsize, "tensor type")
        return TensorType(shape, dtype, layout, quant)

    def loc(self, items):
        name = unquote(str(items[0]))
        file = unquote(str(items[1])) if len(items) > 1 and items[1] is not None else ""
        line = int(items[2]) if len(items) > 2 and items[2] is not None else 0
        col = int(items[3]) if len(items) > 3 and items[3] is not None else 0
        return Loc(name, file, line, col)

    def value_list(self, items):
        return list(items)


def _dense_array(values: Any, dtype: np.dtype) -> np.ndarray:
    """Inline constant values -> array; refuses lossy or meaningless conversions."""
    flat = list(_flatten(values))
    if dtype.kind == "b":
        ok = all(isinstance(v, bool) for v in flat)
    elif dtype.kind in "iu":
        ok = all(_is_int(v) for v in flat)
    else:
        ok = all(_is_number(v) for v in flat)
    if not ok:
        raise ValueError(f"dense values do not fit element type {np.dtype(dtype).name}")
    try:
        return np.array(flat, dtype=dtype)
    except OverflowError as exc:
        raise ValueError(f"dense value out of range: {exc}") from None


def _flatten(values):
    if isinstance(values, list):
        for v in values:
            yield from _flatten(v)
    else:
        yield values


class _GraphBuilder:
    """Lowers the located parse tree to IR; remembers where each value was defined."""

    def __init__(self, text: str, weights: Mapping[str, np.ndarray], filename: str):
        self.lines = text.splitlines()
        self.weights = weights
        self.filename = filename
        self.values: dict[str, Value] = {}
        self.defined_at: dict[str, int] = {}

    def err(self, pos, message: str, hint: str = "") -> TidlcError:
        return located_error(self.lines, self.filename, pos.line, pos.column, message, hint)

    def lookup(self, token) -> Value:
        try:
            return self.values[str(token)]
        except KeyError:
            raise self.err(token, f"use of undefined value {token}",
                           "values must be defined by an earlier line") from None

    def define(self, token, value: Value) -> None:
        name = str(token)
        if name in self.values:
            raise self.err(token, f"value {name} is defined twice",
                           f"first defined on line {self.defined_at[name]}")
        self.values[name] = value
        self.defined_at[name] = token.line

    def build(self, tree) -> Graph:
        graph_node = tree.children[0]
        name_tok, *rest = graph_node.children
        graph = Graph(name=_symbol(str(name_tok)))
        limits.check("ops", len(rest), "the graph's ops", Loc("", self.filename, graph_node.meta.line))
        for item in rest:
            if isinstance(item, dict):
                graph.attrs = item
            elif isinstance(item, lark.Tree) and item.data == "output":
                self.output(graph, item)
            elif isinstance(item, lark.Tree):
                graph.ops.append(self.op(item))
        return graph

    @staticmethod
    def _loc_name(loc: Loc | None):
        if loc is None:
            return "", None
        return loc.name, (Loc("", loc.file, loc.line, loc.col) if loc.file else None)

    def op(self, node) -> Op:
        kids = node.children
        loc = kids[-1] if kids and isinstance(kids[-1], Loc) else None
        name, oploc = self._loc_name(loc)
        if node.data in ("input_op", "const_op"):
            return self.boundary_op(node, name, oploc)
        lhs: list = []
        idx = 0
        if isinstance(kids[0], list):
            lhs, idx = kids[0], 1
        kind_tok = kids[idx]
        kind = str(kind_tok)
        operand_toks, attrs_, types = [], {}, []
        for item in kids[idx + 1:]:
            if isinstance(item, lark.Token) and item.type == "VALUE":
                operand_toks.append(item)
            elif isinstance(item, dict):
                attrs_ = item
            elif isinstance(item, TensorType):
                types.append(item)
        try:
            opdef = get_opdef(kind)
        except KeyError:
            raise self.err(kind_tok, f"unknown op '{kind}'", "is the plugin that defines it installed?") from None
        if kind in ("input", "const"):
            raise self.err(kind_tok, f"'{kind}' is written without parentheses")
        try:
            norm = opdef.normalize_attrs(attrs_)
        except ValueError as exc:
            raise self.err(kind_tok, str(exc)) from None
        n = len(operand_toks)
        if n < opdef.min_operands or n > opdef.max_operands:
            raise self.err(kind_tok, f"{kind} takes {opdef.arity} operand(s), got {n}")
        operands = [self.lookup(t) for t in operand_toks]
        want = opdef.result_count(norm)
        if len(lhs) != want:
            raise self.err(kind_tok, f"{kind} has {want} result(s), {len(lhs)} named")
        if len(types) != len(lhs):
            raise self.err(kind_tok, f"{kind}: {len(lhs)} result(s) but {len(types)} type(s)")
        op = Op(kind, operands, [], norm, name, oploc)
        op.results = [Value(t, op, i) for i, t in enumerate(types)]
        for tok, v in zip(lhs, op.results):
            self.define(tok, v)
        return op

    def boundary_op(self, node, name: str, oploc: Loc | None) -> Op:
        lhs, payload, ty = node.children[0], node.children[1], node.children[2]
        kind = node.data[:-3]
        if len(lhs) != 1:
            raise self.err(lhs[1], f"{kind} defines exactly one value")
        # a missing loc name is the one the line implies: the input name or the weight symbol
        if kind == "input":
            input_name = unquote(str(payload))
            op = Op("input", [], [], {"name": input_name}, name or input_name, oploc)
        else:
            implied = _symbol(str(payload.children[0])) if payload.data == "symbol_payload" else ""
            op = Op("const", [], [], {}, name or implied, oploc, data=self.payload(payload, ty, node.meta))
        value = Value(ty, op, 0)
        if kind == "input":
            value.name = op.attrs["name"]
        op.results = [value]
        self.define(lhs[0], value)
        return op

    def payload(self, node, ty: TensorType, meta) -> np.ndarray:
        if not ty.is_static:
            raise self.err(meta, f"a constant needs a static shape, got {ty}")
        dtype = np.dtype(DTYPES[ty.dtype])
        if node.data == "symbol_payload":
            tok = node.children[0]
            sym = _symbol(str(tok))
            if sym not in self.weights:
                raise self.err(tok, f"constant {tok} not found in the weights file",
                               "keep the .weights file next to the .tir file")
            data = np.asarray(self.weights[sym])
            if data.shape != ty.shape or data.dtype != dtype:
                raise self.err(tok, f"constant {tok} is {data.dtype}{list(data.shape)} in the weights "
                                    f"file but {ty} in the text")
            return data
        try:
            if node.data == "splat_payload":
                return np.broadcast_to(_dense_array(node.children[0], dtype).reshape(()), ty.shape)
            arr = _dense_array(node.children[0], dtype)
        except ValueError as exc:
            raise self.err(meta, str(exc)) from None
        if arr.size != ty.size:
            raise self.err(meta, f"dense constant has {arr.size} values, type {ty} needs {ty.size}")
        return arr.reshape(ty.shape)

    def output(self, graph: Graph, node) -> None:
        values = [self.lookup(t) for t in node.children if isinstance(t, lark.Token)]
        attrs_ = next((x for x in node.children if isinstance(x, dict)), {})
        extra = sorted(set(attrs_) - {"names"})
        if extra:
            raise self.err(node.meta, f"output: unknown attribute(s) {', '.join(extra)}; known: names")
        names = attrs_.get("names", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise self.err(node.meta, "output names must be a list of strings")
        if names and len(names) != len(values):
            raise self.err(node.meta, f"output has {len(values)} values but {len(names)} names")
        graph.outputs = values
        graph.output_names = list(names)
        for v, n in zip(values, names):
            if not v.name:
                v.name = n


def located_error(lines: list[str], filename: str, line: int, col: int, message: str,
                  hint: str = "", code: str = "syntax") -> TidlcError:
    """``file:line:col: error: message`` followed by the source line (at most 200 characters
    of it around the column) and a caret."""
    problems = []
    if 0 < line <= len(lines):
        text, caret = lines[line - 1], max(col - 1, 0)
        start = max(0, caret - 100)
        problems = [text[start:start + 200], " " * (caret - start) + "^"]
    return TidlcError(message, Loc("", filename, line, col), hint, problems=problems, code=code)


def _expected(exc: lark.exceptions.UnexpectedInput) -> str:
    names = getattr(exc, "expected", None) or getattr(exc, "allowed", None) or []
    terminals = {t.name: t for t in _parser().terminals}
    shown = set()
    for name in names:
        term = terminals.get(name)
        if name in _TERMINAL_NAMES:
            shown.add(_TERMINAL_NAMES[name])
        elif term is not None and isinstance(term.pattern, lark.lexer.PatternStr):
            shown.add(f"'{term.pattern.value}'")
        else:
            shown.add(name)
    return ", ".join(sorted(shown))


# what the nesting scan skips (strings, comments) and counts (list brackets: the only
# construct of the grammar that nests without bound)
_NESTING = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|//[^\n]*|[\[\]]')


def _check_nesting(text: str, lines: list[str], filename: str) -> None:
    """Refuse lists nested deeper than the nesting limit before lark builds (and the
    transformer recurses over) the tree; the error points at the first bracket too deep."""
    depth, deepest, first = 0, 0, -1
    limit = limits.current().nesting
    for m in _NESTING.finditer(text):
        token = m.group()
        if token == "[":
            depth += 1
            deepest = max(deepest, depth)
            if depth > limit and first < 0:
                first = m.start()
        elif token == "]":
            depth = max(0, depth - 1)
    if first >= 0:
        line = text.count("\n", 0, first) + 1
        col = first - (text.rfind("\n", 0, first) + 1) + 1
        err = limits.exceeded("nesting", deepest, "list nesting")
        raise located_error(lines, filename, line, col, err.message, err.hint, "limit")


def parse_graph(text: str, weights: Mapping[str, np.ndarray] | None = None,
                filename: str = "<ir>") -> Graph:
    """Parse IR text; ``weights`` resolves ``@symbol`` constants."""
    lines = text.splitlines()
    _check_nesting(text, lines, filename)
    try:
        tree = _parser().parse(text)
    except lark.exceptions.UnexpectedInput as exc:
        token = getattr(exc, "token", None)
        if token is not None and token.type == "$END":
            what = "unexpected end of input"
        elif token is not None:
            shown = str(token)
            what = f"unexpected '{shown[:60]}{'...' if len(shown) > 60 else ''}'"
        else:
            char = getattr(exc, "char", "")
            what = f"unexpected character '{char}'" if char else "unexpected character"
        exp = _expected(exc)
        raise located_error(lines, filename, exc.line, exc.column,
                            f"syntax error: {what}" + (f"; expected {exp}" if exp else "")) from None
    try:
        tree = _Values().transform(tree)
    except lark.exceptions.VisitError as exc:
        meta = getattr(exc.obj, "meta", None)
        line, col = (meta.line, meta.column) if meta is not None and not meta.empty else (0, 0)
        orig = exc.orig_exc
        if isinstance(orig, TidlcError):  # a limit: keep its message, hint and code
            raise located_error(lines, filename, line, col, orig.message, orig.hint, orig.code) from None
        raise located_error(lines, filename, line, col, str(orig)) from None
    return _GraphBuilder(text, weights or {}, filename).build(tree)
