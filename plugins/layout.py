"""layout: turn NHWC graphs into the backend's NCHW by moving transposes out of the network.

The TensorFlow and TFLite importers emit every layout-sensitive op as
``transpose(0,3,1,2) -> NCHW op -> transpose(0,2,3,1)`` (docs/architecture.md,
"Layouts"). This pass makes those transposes disappear from the interior of
the graph, with rules applied to a fixed point:

* **cancel / merge**: ``transpose(transpose(x, p), q)`` is one transpose by
  ``p[q]``, and nothing when that is the identity;
* **fold**: a transpose of a constant is a permuted constant;
* **sink**: a transpose whose only reader is a layout-agnostic op moves below
  it, the op's attributes rewritten for the other axis order: element-wise
  ops and activations, ``cast``, ``quantize``/``dequantize`` (their channel
  axis), ``scale`` (axis), binary ops whose other operand is a constant
  (permuted, broadcasting kept) or the same transpose, ``concat`` (axis),
  ``pad`` (pads), ``slice`` (axes), ``split`` (axis), ``reduce``/``argmax``/
  ``squeeze`` (axes; dropped axes shrink the permutation), ``softmax``
  (axis), ``resize`` (scales, sizes). A transpose read by several ops sinks
  only when every reader can take it (so no transpose is duplicated); a
  binary/concat operand computed element-wise from a graph input joins through
  an inverse transpose, which moves up to the input;
* **share**: two transposes of one value by the same permutation become one;
* **hoist**: a transpose after a chain of padding or element-wise ops that
  starts at a graph input moves above the chain, next to the input.

Transposes sink towards the outputs until they meet their inverse (the
``transpose(0,3,1,2)`` in front of the next conv) and vanish, or stop at an op
that depends on the memory order (``reshape``, ``flatten``, ``dense`` on a
4-D tensor) or at a graph output: what is left sits at the graph boundary or
where an op needs it. Graph inputs keep the layout the compiled network
accepts, which ``--input-layout`` sets at load time (tidlc.shapes).
"""
from __future__ import annotations

from typing import ClassVar

import attrs
import numpy as np

from tidlc.hookspecs import hookimpl
from tidlc.ir.ops.elementwise import ACT_PARAM_NAMES
from tidlc.passes.base import Pass
from tidlc.passes.rewrite import Rewriter, apply_rules

# ops that compute each element from the same element of their operand
UNARY = tuple(ACT_PARAM_NAMES) + ("exp", "log", "sqrt", "abs", "neg", "reciprocal", "floor", "ceil", "erf",
                                  "softplus", "identity", "dropout", "cast")
BINARY = ("add", "sub", "mul", "div", "max", "min", "pow", "prelu")


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
            user.kind in SINKABLE for user, _ in rw.users(v)):
        return None
    src = op.operands[0]
    if single_user and src.producer is not None and src.producer.kind == "input":
        return None  # at the boundary already (and hoisted there: sinking it back would loop)
    return src, tuple(op.attrs["perm"])


def _per_axis(values, perm) -> tuple:
    """A per-axis list of the transposed tensor, re-ordered for the source tensor."""
    inv = inverse(perm)
    return tuple(values[inv[j]] for j in range(len(perm)))


def _axis(axis: int, perm) -> int:
    return perm[axis % len(perm)]


def _sink(rw: Rewriter, op, operands, attrs_, perm) -> bool:
    """Replace ``op`` by ``op'(operands) -> transpose(perm)`` for each of its results."""
    new = rw.make(op.kind, operands, attrs_, op.name, op.loc)
    rw.insert_before(op, new)
    for old, res in zip(op.results, new.results):
        if old.type.quant is not None and res.type.quant is None:
            res.type = res.type.with_quant(_moved_quant(old.type.quant, perm))
        t = rw.make("transpose", [res], {"perm": perm}, op.name, op.loc)
        rw.insert_before(op, t)
        rw.replace(old, t.results[0])
    rw.erase(op)
    for v in op.operands:  # a transpose nobody reads any more
        if v.producer is not None and v.producer.kind == "transpose" and not rw.users(v) and not rw.is_output(v):
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
        rw.replace(op.results[0], value)
        rw.erase(op)
        return True
    inner = _transposed(rw, src, single_user=False)
    if inner is None:
        return False
    x, p = inner
    combined = tuple(p[i] for i in perm)
    if _is_identity(combined):
        out = op.results[0]
        if rw.is_output(out) and (rw.is_output(x) or x.producer.kind == "input"):
            return False  # keep a distinct output value
        rw.replace(out, x)
    else:
        new = rw.make("transpose", [x], {"perm": combined}, op.name, op.loc)
        rw.insert_before(op, new)
        rw.replace(op.results[0], new.results[0])
    rw.erase(op)
    if not rw.users(src) and not rw.is_output(src):
        rw.erase(src.producer)
    return True


# ----------------------------------------------------------------------------- element-wise
def _unary(rw: Rewriter, op) -> bool:
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    return _sink(rw, op, [x] + op.operands[1:], op.attrs, perm)


def _with_axis(rw: Rewriter, op) -> bool:
    """quantize, dequantize, scale, softmax: one axis attribute."""
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    attrs_ = dict(op.attrs)
    if op.kind in ("quantize", "dequantize") and len(op.attrs["scale"]) == 1:
        pass  # per tensor: the axis means nothing
    else:
        attrs_["axis"] = _axis(op.attrs["axis"], perm)
    return _sink(rw, op, [x] + op.operands[1:], attrs_, perm)


def _expanded_const(data: np.ndarray, rank: int, per_channel_axis1: bool) -> np.ndarray:
    if per_channel_axis1:  # prelu's 1-D slope of C values means axis 1
        shape = [1] * rank
        shape[1] = -1
        return data.reshape(shape)
    return data.reshape((1,) * (rank - data.ndim) + data.shape)


def _binary(rw: Rewriter, op) -> bool:
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
    operands = []
    for i, (v, t) in enumerate(zip(op.operands, found)):
        if t is not None:
            operands.append(t[0])
            continue
        data = v.const_value()
        if data is None:
            moved = _from_input(rw, op, v, perm)
            if moved is None:
                return False
            operands.append(moved)
            continue
        if data.ndim > out_rank:
            return False
        axis1 = (op.kind == "prelu" and i == 1 and data.ndim == 1 and out_rank > 1
                 and data.size == op.results[0].type.shape[1] and data.size > 1)
        moved = np.transpose(_expanded_const(data, out_rank, axis1), inverse(perm))
        if data.size == 1:
            moved = data  # a scalar broadcasts the same way in any order
        operands.append(rw.const(np.ascontiguousarray(moved), v.producer.name, anchor=op))
    return _sink(rw, op, operands, op.attrs, perm)


def _from_input(rw: Rewriter, op, v, perm):
    """An operand that is a graph input (through element-wise ops) joins in the other order via an
    inverse transpose, which then moves up to the input (hoist) and meets the input's other transposes."""
    if v.type.rank != len(perm) or not _leads_to_input(rw, v):
        return None
    t = rw.make("transpose", [v], {"perm": inverse(perm)}, op.name, op.loc)
    rw.insert_before(op, t)
    return t.results[0]


# ----------------------------------------------------------------------------- data movement
def _concat(rw: Rewriter, op) -> bool:
    found = [_transposed(rw, v) for v in op.operands]
    perms = {t[1] for t in found if t is not None}
    if len(perms) != 1:
        return False
    perm = perms.pop()
    operands = []
    for v, t in zip(op.operands, found):
        if t is not None:
            operands.append(t[0])
        elif v.const_value() is not None:
            data = np.ascontiguousarray(np.transpose(v.const_value(), inverse(perm)))
            operands.append(rw.const(data, v.producer.name, anchor=op))
        else:
            moved = _from_input(rw, op, v, perm)
            if moved is None:
                return False
            operands.append(moved)
    return _sink(rw, op, operands, {**op.attrs, "axis": _axis(op.attrs["axis"], perm)}, perm)


def _pad(rw: Rewriter, op) -> bool:
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    rank = len(perm)
    pads = op.attrs["pads"]
    begins, ends = _per_axis(pads[:rank], perm), _per_axis(pads[rank:], perm)
    return _sink(rw, op, [x], {**op.attrs, "pads": begins + ends}, perm)


def _slice(rw: Rewriter, op) -> bool:
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    axes = tuple(_axis(a, perm) for a in op.attrs["axes"])
    return _sink(rw, op, [x], {**op.attrs, "axes": axes}, perm)


def _split(rw: Rewriter, op) -> bool:
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    return _sink(rw, op, [x], {**op.attrs, "axis": _axis(op.attrs["axis"], perm)}, perm)


def _resize(rw: Rewriter, op) -> bool:
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    attrs_ = dict(op.attrs)
    attrs_["scales"] = _per_axis(op.attrs["scales"], perm)
    if op.attrs["sizes"]:
        attrs_["sizes"] = _per_axis(op.attrs["sizes"], perm)
    return _sink(rw, op, [x], attrs_, perm)


def _reduce(rw: Rewriter, op) -> bool:
    """reduce / argmax: the reduced axes move; without keepdims the permutation shrinks."""
    t = _transposed(rw, op.operands[0])
    if t is None:
        return False
    x, perm = t
    rank = len(perm)
    attrs_ = dict(op.attrs)
    if op.kind == "argmax":
        reduced = {op.attrs["axis"] % rank}
        attrs_["axis"] = _axis(op.attrs["axis"], perm)
    else:
        reduced = {a % rank for a in op.attrs["axes"]} if op.attrs["axes"] else set(range(rank))
        attrs_["axes"] = tuple(sorted(perm[a] for a in reduced))
    if op.attrs["keepdims"]:
        return _sink(rw, op, [x], attrs_, perm)
    # the result keeps x's remaining axes in x's order; the transposed tensor wants them in perm's
    kept_src = sorted(perm[a] for a in range(rank) if a not in reduced)
    wanted = [perm[a] for a in range(rank) if a not in reduced]
    rest = tuple(kept_src.index(a) for a in wanted)
    new = rw.make(op.kind, [x], attrs_, op.name, op.loc)
    rw.insert_before(op, new)
    out = new.results[0]
    if not _is_identity(rest):
        t2 = rw.make("transpose", [out], {"perm": rest}, op.name, op.loc)
        rw.insert_before(op, t2)
        out = t2.results[0]
    rw.replace(op.results[0], out)
    rw.erase(op)
    src = op.operands[0]
    if not rw.users(src) and not rw.is_output(src):
        rw.erase(src.producer)
    return True


# ----------------------------------------------------------------------------- towards the inputs
_HOISTABLE = UNARY + ("pad", "quantize", "dequantize")


def _hoistable(op) -> bool:
    if op.kind in ("quantize", "dequantize"):
        return len(op.attrs["scale"]) == 1
    return op.kind in _HOISTABLE


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
    t = rw.make("transpose", [prod.operands[0]], {"perm": perm}, op.name, op.loc)
    rw.insert_before(op, t)
    attrs_ = dict(prod.attrs)
    if prod.kind == "pad":
        rank = len(perm)
        pads = prod.attrs["pads"]
        attrs_["pads"] = tuple(pads[perm[a]] for a in range(rank)) + tuple(pads[rank + perm[a]] for a in range(rank))
    new = rw.make(prod.kind, [t.results[0]] + prod.operands[1:], attrs_, prod.name, prod.loc)
    rw.insert_before(op, new)
    rw.replace(op.results[0], new.results[0])
    rw.erase(op)
    rw.erase(prod)
    return True


def _squeeze(rw: Rewriter, op) -> bool:
    """squeeze drops axes: like a reduction without keepdims."""
    t = _transposed(rw, op.operands[0])
    if t is None or not op.attrs["axes"]:
        return False
    x, perm = t
    rank = len(perm)
    dropped = {a % rank for a in op.attrs["axes"]}
    kept_src = sorted(perm[a] for a in range(rank) if a not in dropped)
    wanted = [perm[a] for a in range(rank) if a not in dropped]
    rest = tuple(kept_src.index(a) for a in wanted)
    new = rw.make("squeeze", [x], {"axes": tuple(sorted(perm[a] for a in dropped))}, op.name, op.loc)
    rw.insert_before(op, new)
    out = new.results[0]
    if not _is_identity(rest):
        t2 = rw.make("transpose", [out], {"perm": rest}, op.name, op.loc)
        rw.insert_before(op, t2)
        out = t2.results[0]
    rw.replace(op.results[0], out)
    rw.erase(op)
    src = op.operands[0]
    if not rw.users(src) and not rw.is_output(src):
        rw.erase(src.producer)
    return True


RULES = ([("transpose", _merge), ("transpose", _hoist)] + [(kind, _unary) for kind in UNARY]
         + [(kind, _with_axis) for kind in ("quantize", "dequantize", "scale", "softmax")]
         + [(kind, _binary) for kind in BINARY]
         + [("concat", _concat), ("pad", _pad), ("slice", _slice), ("split", _split), ("resize", _resize),
            ("reduce", _reduce), ("argmax", _reduce), ("squeeze", _squeeze)])
SINKABLE = {kind for kind, _ in RULES}


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
        rw.replace(op.results[0], first.results[0])
        rw.erase(op)
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
    summary: ClassVar[str] = "NHWC -> NCHW: cancel transposes, move the rest to the graph boundary"
    max_iters: int = 64

    def run(self, ctx, graph) -> bool:
        if not any(op.kind == "transpose" for op in graph.ops):
            return False
        changed = False
        for _ in range(4):  # sharing can enable more sinking (a transpose with one reader left)
            step = apply_rules(graph, RULES, max_iters=self.max_iters)
            step |= share_transposes(graph)
            changed |= step
            if not step:
                break
        if changed:
            from tidlc.plugins.cleanup import live_ops
            live = live_ops(graph)
            graph.remove_ops([op for op in graph.ops if op.kind in ("const", "transpose") and id(op) not in live])
            name_transposes(graph)
        left = interior_transposes(graph)
        if left and ctx is not None:
            ctx.note(f"{len(left)} transpose(s) stay inside the graph (first: "
                     f"{left[0].name or left[0].kind!r} before {_readers(graph, left[0])})")
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


__all__ = ["RULES", "Layout", "interior_transposes", "inverse", "name_transposes", "share_transposes"]
