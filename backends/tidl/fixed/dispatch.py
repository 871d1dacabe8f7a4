"""Kernel tables and the one dispatcher that picks an op's kernel from them.

A *kernel table* maps an op kind (or, failing that, a trait of the op) to a *kernel builder*. Every
builder of every table has one signature::

    builder(op, ctx) -> Kernel | None        # once per op, when the executor is built
    kernel(inputs) -> results | NotImplemented  # once per op per frame

The builder derives what does not change between frames (multipliers, shifts, tables, packed
weights, kernel plans) and returns the per-frame callable, or ``None`` to *decline* an op it cannot
compute exactly (16-bit data for an 8-bit kernel, weights that are not constant, a CPU without the
instructions). A kernel may also decline one frame by returning ``NotImplemented`` (an input of
another element type than it was planned for). :func:`build_kernel` walks a *chain* of tables, most
specialised first, ending with the specification (:mod:`.spec_kernels`, which never declines): the
first builder that accepts the op wins, and a frame its kernel declines runs on the kernel the rest
of the chain gives. Every kernel of every table returns the specification's bits.

A new variant (another ISA, say) is one more table in front of the chain of the ``auto`` mode
(:data:`tidlc.backends.tidl.fixed.executor.KERNEL_MODES`): it lists only the op kinds it does
better, and declines what it cannot do.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from tidlc.diagnostics import TidlcError
from tidlc.interp import evaluate_op
from tidlc.ir.core import Op
from tidlc.ir.opdef import Trait

Kernel = Callable[[list], Any]  # operand arrays -> result arrays, or NotImplemented (declined)


@attrs.frozen
class KernelContext:
    """What every builder may read besides the op: the executor's run-time settings."""

    threads: int | None = None  # worker threads of the multi-threaded kernels (None: fast.threads())


KernelBuilder = Callable[[Op, KernelContext], Any]  # -> Kernel, or None (declined)


@attrs.frozen
class KernelTable:
    """Kernel builders by op kind, then by trait (the first trait of ``traits`` the op has)."""

    name: str
    kinds: Mapping[str, KernelBuilder]
    traits: tuple[tuple[Trait, KernelBuilder], ...] = ()
    # kind -> which ops of it the kind's builder takes (the others have no kernel here): a reduce's max
    when: Mapping[str, Callable[[Op], bool]] = attrs.Factory(dict)

    def builder_for(self, op) -> KernelBuilder | None:
        builder = self.kinds.get(op.kind)
        if builder is not None:
            accepts = self.when.get(op.kind)
            return builder if accepts is None or accepts(op) else None
        return next((b for trait, b in self.traits if op.opdef.has(trait)), None)


def is_fixed(t) -> bool:
    """Whether a tensor type holds fixed-point codes (a quantized integer tensor)."""
    return t.quant is not None and t.dtype[0] in "iu"


def build_kernel(op: Op, chain: Sequence[KernelTable], ctx: KernelContext) -> Kernel:
    """The kernel that runs ``op``: from the first table of ``chain`` whose builder accepts it
    (the last table must be the specification); a float op (no fixed-point operand or result)
    runs its float reference."""
    if op.kind != "data_convert":  # data_convert is the boundary: it has a kernel either way
        fixed_results = any(is_fixed(r.type) for r in op.results)
        if not (fixed_results or any(is_fixed(v.type) for v in op.operands)):
            return lambda args: evaluate_op(op, args)
        if chain[-1].builder_for(op) is None:
            raise TidlcError(f"op '{op.kind}' has no fixed-point kernel", op.where(),
                             hint="the quantize pass keeps such ops in float between data_convert ops")
        if not fixed_results and op.kind != "argmax":
            raise TidlcError(f"{op.kind} reads fixed-point operands but has a float result", op.where(),
                             hint="insert a data_convert to f32 before it")
    return _first_accepting(op, chain, ctx)


def _first_accepting(op: Op, chain: Sequence[KernelTable], ctx: KernelContext) -> Kernel:
    for i, table in enumerate(chain):
        builder = table.builder_for(op)
        kernel = None if builder is None else builder(op, ctx)
        if kernel is None:
            continue
        if i == len(chain) - 1:
            return kernel
        return _falling_back(kernel, lambda rest=chain[i + 1:]: _first_accepting(op, rest, ctx))
    raise AssertionError(f"the specification table {chain[-1].name!r} declined {op.kind}")


def _falling_back(kernel: Kernel, build_rest: Callable[[], Kernel]) -> Kernel:
    """``kernel``; a frame it declines runs on the rest of the chain (built when first needed)."""
    rest: list[Kernel] = []

    def run(args):
        results = kernel(args)
        if results is not NotImplemented:
            return results
        if not rest:
            rest.append(build_rest())
        return rest[0](args)
    return run


def accepted_by(op: Op, table: KernelTable, ctx: KernelContext | None = None) -> bool:
    """Whether ``table`` itself has a kernel for ``op`` (its builder exists and does not decline)."""
    builder = table.builder_for(op)
    return builder is not None and builder(op, ctx or KernelContext()) is not None


__all__ = ["Kernel", "KernelBuilder", "KernelContext", "KernelTable", "accepted_by", "build_kernel", "is_fixed"]
