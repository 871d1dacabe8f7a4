"""Einsum and batched matmul as the IR's ``matmul`` / ``dense``, for every frontend.

Keras' ``MultiHeadAttention`` and ``EinsumDense`` write their projections and attention as
``Einsum`` (``abc,cde->abde``, ``aecd,abcd->acbe``); TFLite converts them to ``BATCH_MATMUL``
with ``adj_x`` / ``adj_y``; PyTorch exports ``torch.einsum`` as ONNX ``Einsum``. TIDL runs
matrix products as InnerProduct (a constant right operand) or MatMul, so an equation of one or
two operands lowers to transposes and reshapes around one ``matmul`` (``dense`` when the right
operand is a constant and no index is batched), the summed indices of one operand reduced
first. Repeated indices within one operand (a diagonal, ``ii->i``) are not lowered: the
converter's check names them.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np

from tidlc.frontend import NodeContext
from tidlc.ir.core import Value

_SPARE = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # letters for the axes an ellipsis stands for


def swap_last(node: NodeContext, x: Value, what: str = "input") -> Value:
    """``x`` with its last two axes swapped (BatchMatMul's ``adj_x`` / ``adj_y``)."""
    rank = node.need_rank(x, what)
    perm = tuple(range(rank - 2)) + (rank - 1, rank - 2)
    return node.op("transpose", [x], perm=perm)


def batch_matmul(node: NodeContext, a: Value, b: Value, adj_a: bool, adj_b: bool) -> Value:
    """TensorFlow's BatchMatMul(V2, V3) and TFLite's BATCH_MATMUL: ``matmul`` with the adjoint
    flags as transposes of the last two axes (real data: the adjoint is the transpose)."""
    if adj_a:
        a = swap_last(node, a, "first input")
    if adj_b:
        b = swap_last(node, b, "second input")
    return node.op("matmul", [a, b])


def equation_problem(equation: str, count: int | None = None) -> str | None:
    """Why ``equation`` cannot be lowered (None: it can), before the operands are known."""
    eq = equation.replace(" ", "")
    lhs, _, out = eq.partition("->")
    terms = lhs.split(",")
    if count is not None and len(terms) != count:
        return f"equation '{equation}' has {len(terms)} operand(s), the node {count}"
    if len(terms) > 2:
        return f"equation '{equation}': einsum of {len(terms)} operands is not lowered (1 or 2)"
    for t in terms + ([out] if "->" in eq else []):
        letters = t.replace("...", "")
        if not all(c.isalpha() for c in letters) or t.count("...") > 1 or ("." in letters):
            return f"equation '{equation}': '{t}' is not a list of index letters"
        if len(set(letters)) != len(letters):
            return f"equation '{equation}': an index repeated within '{t}' (a diagonal) is not lowered"
    return None


def _expand(node: NodeContext, equation: str, ranks: Sequence[int]) -> tuple[list[str], str]:
    """The operand terms and the output with each ellipsis spelled as spare letters (right-aligned,
    numpy broadcasting), and the implicit output (``ij,jk`` -> ``ik``) made explicit."""
    eq = equation.replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    spare = [c for c in _SPARE if c not in eq]
    widths = [rank - (len(t) - 3) if "..." in t else 0 for t, rank in zip(terms, ranks)]
    for t, rank in zip(terms, ranks):
        if "..." not in t and len(t) != rank:
            raise node.error(f"einsum '{equation}': '{t}' names {len(t)} axes, the operand has {rank}")
    width = max(widths, default=0)
    if width < 0 or width > len(spare):
        raise node.error(f"einsum '{equation}': the ellipsis does not fit the operands' ranks {list(ranks)}")
    ell = "".join(spare[:width])
    terms = [t.replace("...", ell[width - w:]) for t, w in zip(terms, widths)]
    if arrow:
        out = out.replace("...", ell)
    else:
        once = [c for c in sorted(set("".join(terms))) if "".join(terms).count(c) == 1 and c not in ell]
        out = ell + "".join(once)
    return terms, out


def _sum_out(node: NodeContext, x: Value, term: str, keep: str) -> tuple[Value, str]:
    """Reduce-sum the axes of ``x`` whose letters are not in ``keep``."""
    axes = tuple(i for i, c in enumerate(term) if c not in keep)
    if not axes:
        return x, term
    y = node.op("reduce", [x], op="sum", axes=axes, keepdims=False)
    return y, "".join(c for c in term if c in keep)


def _permute(node: NodeContext, x: Value, term: str, order: str) -> Value:
    perm = tuple(term.index(c) for c in order)
    return x if perm == tuple(range(len(perm))) else node.op("transpose", [x], perm=perm)


def einsum(node: NodeContext, equation: str, xs: Sequence[Value]) -> Value:
    """``einsum(equation, *xs)`` for one or two operands with static shapes (see the module text)."""
    problem = equation_problem(equation, len(xs))
    if problem is not None:
        raise node.error(problem)
    shapes = [node.static_shape(x, f"operand {i}") for i, x in enumerate(xs)]
    terms, out = _expand(node, equation, [len(s) for s in shapes])
    size: dict[str, int] = {}
    for t, shape in zip(terms, shapes):
        for c, d in zip(t, shape):
            if c in size and d != size[c] and 1 not in (d, size[c]):
                raise node.error(f"einsum '{equation}': index '{c}' has sizes {size[c]} and {d}")
            size[c] = max(size.get(c, d), d)
    if any(c not in "".join(terms) for c in out):
        raise node.error(f"einsum '{equation}': the output names an index no operand has")
    if len(xs) == 1:
        y, term = _sum_out(node, xs[0], terms[0], out)
        return _permute(node, y, term, out)
    (ta, tb), (a, b) = terms, xs
    a, ta = _sum_out(node, a, ta, tb + out)  # indices of one operand only, not in the output: summed
    b, tb = _sum_out(node, b, tb, ta + out)
    batch = [c for c in out if c in ta and c in tb]
    summed = [c for c in ta if c in tb and c not in out]
    a_free = [c for c in ta if c not in tb]
    b_free = [c for c in tb if c not in ta]
    k = prod(size[c] for c in summed)
    w = b.const_value()
    if not batch and w is not None:  # a constant right operand: one InnerProduct over the last axis
        x = _permute(node, a, ta, "".join(a_free + summed))
        if len(summed) != 1:
            x = node.op("reshape", [x], shape=tuple(size[c] for c in a_free) + (k,))
        weight = np.transpose(np.asarray(w), [tb.index(c) for c in b_free + summed])
        y = node.op("dense", [x, node.const(np.ascontiguousarray(weight.reshape(-1, k)), "weight")])
    else:
        shape_a = tuple(shapes[0][terms[0].index(c)] if c in terms[0] else 1 for c in batch)
        shape_b = tuple(shapes[1][terms[1].index(c)] if c in terms[1] else 1 for c in batch)
        x = _permute(node, a, ta, "".join(batch + a_free + summed))
        x = node.op("reshape", [x], shape=shape_a + (prod(size[c] for c in a_free), k))
        z = _permute(node, b, tb, "".join(batch + summed + b_free))
        z = node.op("reshape", [z], shape=shape_b + (k, prod(size[c] for c in b_free)))
        y = node.op("matmul", [x, z])
    full = tuple(size[c] for c in batch + a_free + b_free)
    if y.type.shape is None or tuple(y.type.shape) != full:
        y = node.op("reshape", [y], shape=full)
    return _permute(node, y, "".join(batch + a_free + b_free), out)
