"""layout: turn NHWC graphs into the backend's NCHW by moving transposes out of the network.

The TensorFlow and TFLite importers emit every layout-sensitive op as
``transpose(0,3,1,2) -> NCHW op -> transpose(0,2,3,1)`` (docs/architecture.md,
"Layouts"). This pass makes those transposes disappear from the interior of
the graph, with rules applied to a fixed point:

* **cancel / merge**: ``transpose(transpose(x, p), q)`` is one transpose by
  ``p[q]``, and nothing when that is the identity;
* **fold**: a transpose of a constant is a permuted constant;
* **sink**: a transpose whose only reader is a layout-agnostic op (an op
  declaring ``Trait.LAYOUT_AGNOSTIC``) moves below it, the op's attributes
  rewritten for the other axis order by its ``permute_attrs`` hook. Builtin:
  element-wise ops and activations, ``cast``, ``quantize``/``dequantize``
  (their channel axis), ``scale`` (axis), binary ops whose other operand is a
  constant (permuted, broadcasting kept), one value, or the same transpose, ``concat``
  (axis), ``pad`` (pads), ``slice`` (axes), ``split`` (axis), ``reduce``/
  ``argmax``/``squeeze`` (axes; dropped axes shrink the permutation),
  ``softmax`` (axis), ``resize`` (scales, sizes); a plugin's op declaring the
  trait too. A transpose read by several ops sinks only when every reader can
  take it (so no transpose is duplicated); an operand of an element-wise or
  concat op computed element-wise from a graph input joins through an inverse
  transpose, which moves up to the input;
* **share**: two transposes of one value by the same permutation become one;
* **unit transposes**: after the fixed point, an interior transpose that moves
  only axes of size 1 is a ``reshape`` (the memory order stays);
* **hoist**: a transpose after a chain of padding or (layout-agnostic)
  element-wise ops that starts at a graph input moves above the chain, next
  to the input.

Transposes sink towards the outputs until they meet their inverse (the
``transpose(0,3,1,2)`` in front of the next conv) and vanish, or stop at an op
that depends on the memory order (``reshape``, ``flatten``, ``dense`` on a
4-D tensor) or at a graph output: what is left sits at the graph boundary or
where an op needs it. Graph inputs keep the layout the compiled network
accepts, which ``--input-layout`` sets at load time (tidlc.shapes).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import attrs
import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.opdef import Trait
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter, apply_rules, until_unchanged


def inverse(perm) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _is_identity(perm) -> bool:
    return tuple(perm) == tuple(range(len(perm)))


def _transposed(rw: Rewriter, v, single_user: bool = True) -> tuple | None:
    """(source value, perm) if ``v`` is a transpose's result. With ``single_user``, only when
    sinking it cannot add transposes: it has one reader, or every reader can take it over."""
    op = v.producer
    if op is None or op.kind != "transpose":
        return None
    if single_user and rw.single_user(v) is None and not all(
            _sinkable(user) for user, _ in rw.users(v)):
        return None
    src = op.operands[0]
    if single_user and src.producer is not None and src.producer.kind == "input":
        return None  # at the boundary already (and hoisted there: sinking it back would loop)
    return src, tuple(op.attrs["perm"])


def _sinkable(op) -> bool:
    """Whether ``op`` can take a transpose of its operand (a rule below may still decline)."""
    return op.kind == "transpose" or op.opdef.has(Trait.LAYOUT_AGNOSTIC)


def _permuted(op, perm):
    """(attributes of ``op`` on the untransposed operand, the permutation of its results, or None
    when the results keep ``perm``), from the op's ``permute_attrs`` hook; None if it cannot move."""
    hook = op.opdef.permute_attrs
    if hook is None:
        return op.attrs, None
    out = hook(op.attrs, perm)
    if out is None:
        return None
    return (out, None) if isinstance(out, Mapping) else (out[0], tuple(out[1]))


def _sink(rw: Rewriter, op, operands, attrs_, perm, result_perm=None) -> bool:
    """Replace ``op`` by ``op'(operands) -> transpose(perm)`` for each of its results.

    ``result_perm``: the results have other axes than the operand (a reduction): they are
    transposed by it instead, and not at all when it is the identity."""
    new = rw.make(op.kind, operands, attrs_, op.name, op.loc)
    rw.insert_before(op, new)
    out_perm = perm if result_perm is None else None if _is_identity(result_perm) else result_perm
    outs = []
    for old, res in zip(op.results, new.results):
        if result_perm is None and old.type.quant is not None and res.type.quant is None:
            res.type = res.type.with_quant(_moved_quant(old.type.quant, perm))
        if out_perm is not None:
            t = rw.make("transpose", [res], {"perm": out_perm}, op.name, op.loc)
            rw.insert_before(op, t)
            res = t.results[0]
        outs.append(res)
    rw.replace_op(op, outs)
    for v in op.operands:  # a transpose nobody reads any more
        if v.producer is not None and v.producer.kind == "transpose" and rw.unused(v):
            rw.erase(v.producer)
    return True


def _moved_quant(quant, perm):
    """The quantization of ``x`` when ``transpose(x, perm)`` has ``quant`` (its channel axis moves)."""
    if quant.axis is None:
        return quant
    return attrs.evolve(quant, axis=perm[quant.axis % len(perm)])


# ----------------------------------------------------------------------------- transpose itself
def _merge(rw: Rewriter, op) -> bool:
    src = op.operands[0]
    data = src.const_value()
    perm = tuple(op.attrs["perm"])
    if data is not None:
        value = rw.const(np.ascontiguousarray(np.transpose(data, perm)), src.producer.name, anchor=op)
        value.type = op.results[0].type
        rw.replace_op(op, value)
        return True
    inner = _transposed(rw, src, single_user=False)
    if inner is None:
        return False
    x, p = inner
    combined = tuple(p[i] for i in perm)
    if _is_identity(combined):
        if rw.is_output(op.results[0]) and (rw.is_output(x) or x.producer.kind == "input"):
            return False  # keep a distinct output value
        rw.replace_op(op, x)
    else:
        rw.replace_op(op, rw.make("transpose", [x], {"perm": combined}, op.name, op.loc))
    if rw.unused(src):
        rw.erase(src.producer)
    return True


# ----------------------------------------------------------------------------- layout-agnostic ops
def _sink_rule(rw: Rewriter, op) -> bool:
    """A transpose of an operand of a LAYOUT_AGNOSTIC op moves below it. Which operands are
    transposed: every one of an ELEMENTWISE op (broadcasting) or of a variadic first operand
    (concat); else the first (the others are parameters its attributes index: scale's vectors)."""
    opdef = op.opdef
    if not opdef.has(Trait.LAYOUT_AGNOSTIC) or not op.operands:
        return False
    if opdef.has(Trait.ELEMENTWISE) and len(op.operands) > 1:
        return _broadcasting(rw, op)
    if opdef.operands and opdef.operands[0].endswith(("+", "*")):
        return _variadic(rw, op)
    return _first_operand(rw, op)


def _first_operand(rw: Rewriter, op) -> bool:
    """One transposed operand (unary element-wise ops, softmax, scale, pad, slice, split, resize,
    reductions): the attributes follow the axes (``permute_attrs``)."""
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    moved = _permuted(op, perm)
    if moved is None:
        return False
    attrs_, result_perm = moved
    return _sink(rw, op, [x] + op.operands[1:], attrs_, perm, result_perm)


def _expanded_const(data: np.ndarray, rank: int, per_channel_axis1: bool) -> np.ndarray:
    if per_channel_axis1:  # prelu's 1-D slope of C values means axis 1
        shape = [1] * rank
        shape[1] = -1
        return data.reshape(shape)
    return data.reshape((1,) * (rank - data.ndim) + data.shape)


def _broadcasting(rw: Rewriter, op) -> bool:
    """Element-wise ops with several operands: every operand is transposed the same way (a constant
    is permuted, broadcasting kept; a graph input joins through an inverse transpose)."""
    out_rank = op.results[0].type.rank
    if out_rank is None:
        return False
    found = [_transposed(rw, v) for v in op.operands]
    perms = {t[1] for t in found if t is not None}
    if len(perms) != 1:
        return False
    perm = perms.pop()
    if len(perm) != out_rank:
        return False
    moved = _permuted(op, perm)
    if moved is None or moved[1] is not None:
        return False
    operands = []
    for i, (v, t) in enumerate(zip(op.operands, found)):
        if t is not None:
            operands.append(t[0])
            continue
        shape = v.type.shape
        if shape is not None and len(shape) <= out_rank and all(d == 1 for d in shape):
            operands.append(v)  # one value (a pre-quantized model's dequantized scalar) broadcasts in any order
            continue
        data = v.const_value()
        if data is None:
            deq = permuted_dequantized(rw, op, v, out_rank, perm)
            if deq is not None:
                operands.append(deq)
                continue
            joined = _from_input(rw, op, v, perm)
            if joined is None:
                return False
            operands.append(joined)
            continue
        if data.ndim > out_rank:
            return False
        axis1 = (op.kind == "prelu" and i == 1 and data.ndim == 1 and out_rank > 1
                 and data.size == op.results[0].type.shape[1] and data.size > 1)
        permuted = np.transpose(_expanded_const(data, out_rank, axis1), inverse(perm))
        if data.size == 1:
            permuted = data  # a scalar broadcasts the same way in any order
        operands.append(rw.const(np.ascontiguousarray(permuted), v.producer.name, anchor=op))
    return _sink(rw, op, operands, moved[0], perm)


def permuted_dequantized(rw: Rewriter, op, v, out_rank: int, perm):
    """A constant behind a ``dequantize`` (an int8 TFLite model's batch-norm multiplier, per channel
    on NHWC's last axis), permuted like a float constant: the integer codes are transposed by
    ``inverse(perm)`` (after leading 1s up to ``out_rank``), the dequantize's channel axis follows,
    and the new dequantize is placed before ``op``; None when ``v`` is no dequantized constant. Without it the op stayed NHWC between two transposes
    (DenseNet121 int8: 125 transposes, 13.5 ms predicted against the float model's 8.1 ms)."""
    deq = v.producer
    if deq is None or deq.kind != "dequantize":
        return None
    data = deq.operands[0].const_value()
    if data is None or data.ndim > out_rank or data.ndim == 0:
        return None
    shift = out_rank - data.ndim
    permuted = np.ascontiguousarray(np.transpose(data.reshape((1,) * shift + data.shape), inverse(perm)))
    attrs_ = dict(deq.attrs)
    if len(attrs_["scale"]) > 1:
        attrs_["axis"] = perm[attrs_["axis"] % data.ndim + shift]
    code = rw.const(permuted, deq.operands[0].producer.name, anchor=op)
    new = rw.make("dequantize", [code], attrs_, deq.name, deq.loc)
    rw.insert_before(op, new)
    return new.results[0]


def _from_input(rw: Rewriter, op, v, perm):
    """An operand that is a graph input (through element-wise ops) joins in the other order via an
    inverse transpose, which then moves up to the input (hoist) and meets the input's other transposes."""
    if v.type.rank != len(perm) or not _leads_to_input(rw, v):
        return None
    t = rw.make("transpose", [v], {"perm": inverse(perm)}, op.name, op.loc)
    rw.insert_before(op, t)
    return t.results[0]


def _variadic(rw: Rewriter, op) -> bool:
    """concat: every operand is transposed the same way (constants permuted, inputs joined)."""
    found = [_transposed(rw, v) for v in op.operands]
    perms = {t[1] for t in found if t is not None}
    if len(perms) != 1:
        return False
    perm = perms.pop()
    moved = _permuted(op, perm)
    if moved is None or moved[1] is not None:
        return False
    operands = []
    for v, t in zip(op.operands, found):
        if t is not None:
            operands.append(t[0])
        elif v.const_value() is not None:
            data = np.ascontiguousarray(np.transpose(v.const_value(), inverse(perm)))
            operands.append(rw.const(data, v.producer.name, anchor=op))
        else:
            joined = _from_input(rw, op, v, perm)
            if joined is None:
                return False
            operands.append(joined)
    return _sink(rw, op, operands, moved[0], perm)


# ----------------------------------------------------------------------------- towards the inputs
def _hoistable(op) -> bool:
    """A transpose may move above ``op``: a one-operand layout-agnostic op that is element-wise
    (or a pad, which the importers write right after an input)."""
    opdef = op.opdef
    if not (opdef.has(Trait.LAYOUT_AGNOSTIC) and (opdef.has(Trait.ELEMENTWISE) or op.kind == "pad")):
        return False
    return len(op.operands) == 1 and len(op.results) == 1


def _leads_to_input(rw: Rewriter, v) -> bool:
    """``v`` is a graph input seen through single-reader ops that a transpose can move above
    (or merge with)."""
    while True:
        op = v.producer
        if op is None:
            return False
        if op.kind == "input":
            return True
        if not (_hoistable(op) or op.kind == "transpose") or rw.single_user(v) is None:
            return False
        v = op.operands[0]


def _hoist(rw: Rewriter, op) -> bool:
    """``transpose(f(x))`` -> ``f'(transpose(x))`` on a chain that starts at a graph input, so the
    transpose ends right after the input (the boundary) instead of after the input's padding."""
    src = op.operands[0]
    prod = src.producer
    if prod is None or not _hoistable(prod) or rw.single_user(src) is not op:
        return False
    if not _leads_to_input(rw, prod.operands[0]):
        return False
    perm = tuple(op.attrs["perm"])
    moved = _permuted(prod, inverse(perm))  # f(y) transposed is f'(transpose(y)): f' follows the inverse
    if moved is None or moved[1] is not None:
        return False
    attrs_ = dict(moved[0])
    t = rw.make("transpose", [prod.operands[0]], {"perm": perm}, op.name, op.loc)
    rw.insert_before(op, t)
    rw.replace_op(op, rw.make(prod.kind, [t.results[0]] + prod.operands[1:], attrs_, prod.name, prod.loc))
    rw.erase(prod)
    return True


def _gather_rule(rw: Rewriter, op) -> bool:
    """A gather by a 1-D index keeps the rank (fuse-patterns' mirror pads are such gathers, of
    rows and columns): a transpose of its data moves below it, the axis following."""
    t = _transposed(rw, op.operands[0])
    idx = op.operands[1].type.shape
    if t is None or idx is None or len(idx) != 1:
        return False
    x, perm = t
    return _sink(rw, op, [x, op.operands[1]], {**op.attrs, "axis": perm[op.attrs["axis"] % len(perm)]}, perm)


# the transpose rules, then one rule for every op kind: sink through a LAYOUT_AGNOSTIC op (and a
# rank-keeping gather)
RULES = [("transpose", _merge), ("transpose", _hoist), ("gather", _gather_rule), ("*", _sink_rule)]


def share_transposes(graph) -> bool:
    """Two transposes of the same value by the same permutation become one."""
    rw = Rewriter(graph)
    seen: dict[tuple, object] = {}
    changed = False
    for op in graph.ops:
        if op.kind != "transpose":
            continue
        key = (id(op.operands[0]), tuple(op.attrs["perm"]))
        first = seen.get(key)
        if first is None:
            seen[key] = op
            continue
        if rw.is_output(op.results[0]) and rw.is_output(first.results[0]):
            continue
        rw.replace_op(op, first.results[0])
        changed = True
    rw.commit()
    return changed


def interior_transposes(graph) -> list:
    """Transposes that are neither right after a graph input nor right before a graph output."""
    outputs = {id(v) for v in graph.outputs}
    uses = graph.users()
    found = []
    for op in graph.ops:
        if op.kind != "transpose":
            continue
        src = op.operands[0].producer
        at_input = src is not None and src.kind == "input"
        at_output = id(op.results[0]) in outputs and not uses.get(op.results[0])
        if not (at_input or at_output):
            found.append(op)
    return found


@attrs.frozen
class Layout(Pass):
    name: ClassVar[str] = "layout"
    opt_level: ClassVar[int] = 2
    order: ClassVar[int] = 40  # first at -O2: the fusions see conv -> scale once the NHWC transposes are gone
    summary: ClassVar[str] = "NHWC -> NCHW: cancel transposes, move the rest to the graph boundary"
    max_iters: int = 64

    def run(self, ctx, graph) -> bool:
        if not any(op.kind == "transpose" for op in graph.ops):
            return False
        # sharing can enable more sinking (a transpose with one reader left): both, repeated
        changed = until_unchanged(
            lambda: apply_rules(graph, RULES, max_iters=self.max_iters) | share_transposes(graph), 4)
        changed |= unit_transposes_to_reshapes(graph)
        if changed:
            graph.prune({"const", "transpose"})
            name_transposes(graph)
        left = interior_transposes(graph)
        if left and ctx is not None:
            ctx.note(f"{len(left)} transpose(s) stay inside the graph (first: "
                     f"{left[0].name or left[0].kind!r} before {_readers(graph, left[0])})")
        return changed


def unit_transposes_to_reshapes(graph) -> bool:
    """An interior transpose that moves only axes of size 1 (the non-unit axes keep their order:
    ``(1, 1, 1, C) -> (1, C, 1, 1)`` before a squeeze-excite conv, where a pre-quantized model's
    quantize/dequantize pairs kept the rules from cancelling it) leaves the memory order as it is:
    a ``reshape``, which TIDL runs as a view instead of a Transpose layer."""
    rw = Rewriter(graph)
    changed = False
    for op in interior_transposes(graph):
        shape, out = op.operands[0].type.shape, op.results[0].type.shape
        if shape is None or out is None or None in shape:
            continue
        perm = tuple(op.attrs["perm"])
        if [a for a in perm if shape[a] != 1] != [a for a in range(len(shape)) if shape[a] != 1]:
            continue
        rw.replace_op(op, rw.make("reshape", [op.operands[0]], {"shape": tuple(out)}, op.name, op.loc))
        changed = True
    rw.commit()
    return changed


def name_transposes(graph) -> None:
    """Transposes the rules made carry the name of the op they came from; where that name is
    taken by another op, the transpose gets a derived one (``conv1/transpose``, ``conv1/transpose.2``)
    so every name stays unique (``--16bit-layers NAME`` and trace files name one layer)."""
    taken: dict[str, int] = {}
    for op in graph.ops:
        if op.name and op.kind != "transpose":
            taken[op.name] = taken.get(op.name, 0) + 1
    for op in graph.ops:
        if op.kind != "transpose" or not op.name:
            continue
        if op.name not in taken:
            taken[op.name] = 1
            continue
        base = f"{op.name}/transpose"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}.{k}"
        op.name = name
        taken[name] = 1


def _readers(graph, op) -> str:
    uses = graph.users().get(op.results[0], [])
    return ", ".join(sorted({user.kind for user, _ in uses})) or "an output"


@hookimpl
def tidlc_passes():
    return [Layout]


__all__ = ["RULES", "Layout", "interior_transposes", "inverse", "name_transposes", "share_transposes",
           "unit_transposes_to_reshapes"]
