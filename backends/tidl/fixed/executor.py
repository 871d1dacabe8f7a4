"""The fixed-point reference executor: runs a quantized graph op by op, in integers.

Each op whose result is a fixed-point tensor runs an integer kernel of its
kind, chosen once per op by :func:`.dispatch.build_kernel` from the kernel
tables of the ``kernels`` mode (:data:`KERNEL_MODES`: the fast tables of
:mod:`.fast_kernels` where they accept the op, else the specification's,
:mod:`.spec_kernels`); the kernel's parameters (multipliers, shifts, tables,
clamps) are derived once per op from the operand and result types, exactly
as docs/quantization.md states. Ops with
float results (a float island such as detection post-processing, or the
final ``data_convert``) run their float reference. Graph outputs are what the
graph says: the quantize pass ends every output with a ``data_convert`` to
f32, so ``run`` returns dequantized values; ``raw=True`` returns the integer
tensors before that last conversion.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.util import find_spec

import attrs
import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.interp import check_feeds, free_after, output_names
from tidlc.ir.core import Graph, Op
from tidlc.ir.types import numpy_dtype

from .dispatch import Kernel, KernelContext, KernelTable, build_kernel, is_fixed
from .spec_kernels import (  # noqa: F401  (the parameters of the kernels, for the backend and the quantizer)
    CLAMP_ACTS,
    FUSED_PRELU,
    MAC_OPS,
    SPEC,
    _quant,
    act_bounds,
    avg_pool_counts,
    eltwise_params,
    mac_params,
    table_of,
)

_FAST_TABLES: tuple[KernelTable, ...] = ()
if all(find_spec(f"{__package__}.{name}") for name in ("_ops", "_requant", "_igemm")):
    from .fast_kernels import FAST, VNNI
    _FAST_TABLES = (VNNI, FAST)
# else an unbuilt source tree (no compiled kernels): every mode runs the specification

# The kernel chain of each ``kernels`` mode, most specialised table first; the specification ends
# every chain (dispatch.build_kernel). A kernel variant for another ISA is one more table in front.
KERNEL_MODES: dict[str, tuple[KernelTable, ...]] = {
    "numpy": (SPEC,),
    "auto": (*_FAST_TABLES, SPEC),
}


def graph_is_quantized(graph: Graph) -> bool:
    """True for a graph the quantize pass produced (graph attribute ``quantized``).

    A pre-quantized model as imported (TFLite int8, ONNX QDQ: ``quantize``/``dequantize``
    ops) is not: the float interpreter runs it, and the quantize pass maps it onto TIDL's scheme.
    """
    return bool(graph.attrs.get("quantized"))


def has_integer_kernel(op: Op) -> bool:
    """Whether the fixed-point executor can run ``op`` in integers (the quantizer keeps the other
    ops in float between data_convert ops): the specification's table has a kernel for it."""
    return SPEC.builder_for(op) is not None


def make_kernel(op: Op, kernels: str = "numpy", threads: int | None = None) -> Kernel:
    """The callable that runs ``op`` in the ``kernels`` mode: its integer kernel, or its float
    reference for float ops."""
    return build_kernel(op, KERNEL_MODES[kernels], KernelContext(threads=threads))


@attrs.frozen
class _Step:
    """One op of the run: its kernel, where its operands are, where its results go (with the
    element type a fixed-point result is stored as), what dies after it."""

    op: Op
    kernel: Kernel
    operands: tuple[int, ...]
    results: tuple[tuple[int, np.dtype | None], ...]
    frees: tuple[int, ...]


class FixedExecutor:
    """A quantized graph prepared for repeated execution (kernels and their parameters built once).

    ``kernels``: a mode of :data:`KERNEL_MODES`: ``"numpy"`` runs the specification
    (:mod:`.reference`) only; ``"auto"`` uses the exact fast kernels where they accept the op
    (bit-identical results, tested). ``threads``: worker threads of the fast kernels (default:
    :func:`.fast.threads`, i.e. ``TIDLC_NUM_THREADS``, else every CPU available)."""

    def __init__(self, graph: Graph, kernels: str = "numpy", threads: int | None = None):
        chain = KERNEL_MODES.get(kernels)
        if chain is None:
            raise TidlcError(f"unknown kernels {kernels!r}", hint=" or ".join(sorted(KERNEL_MODES)))
        if threads is not None and threads < 1:
            raise TidlcError(f"--threads must be at least 1, got {threads}")
        ctx = KernelContext(threads=threads)
        self.graph = graph
        self.consts = {id(op.results[0]): np.asarray(op.data) for op in graph.ops if op.kind == "const"}
        self.inputs = [(op.attrs["name"], id(op.results[0])) for op in graph.ops if op.kind == "input"]
        keep = {id(v) for v in graph.outputs} | set(self.consts)
        for v in graph.outputs:  # --raw reads the operand of a final data_convert
            if v.producer is not None and v.producer.kind == "data_convert":
                keep.add(id(v.producer.operands[0]))
        dies = free_after(graph, keep)
        self.steps = [
            _Step(op, build_kernel(op, chain, ctx), tuple(id(v) for v in op.operands),
                  tuple((id(v), numpy_dtype(v.type.dtype) if is_fixed(v.type) else None) for v in op.results),
                  tuple(dies[i]))
            for i, op in enumerate(graph.ops) if op.kind not in ("const", "input")]
        self.names = output_names(graph)

    def run(self, feeds: Mapping[str, np.ndarray],
            observer: Callable[[Op, list[np.ndarray]], None] | None = None,
            raw: bool = False) -> dict[str, np.ndarray]:
        """Outputs by name. ``raw=True``: the integer tensors before each output's final data_convert."""
        feeds = check_feeds(self.graph, feeds)
        env: dict[int, np.ndarray] = dict(self.consts)
        env.update((vid, feeds[name]) for name, vid in self.inputs)
        for step in self.steps:
            stored = [_stored(r, dtype) for r, (_, dtype) in zip(_call(step, env), step.results)]
            env.update(zip((vid for vid, _ in step.results), stored))
            if observer is not None:
                observer(step.op, stored)
            for vid in step.frees:
                env.pop(vid, None)
        return {name: env[id(_raw_source(v) if raw else v)] for name, v in zip(self.names, self.graph.outputs)}


def _call(step: _Step, env: dict[int, np.ndarray]) -> list:
    args = [env[vid] for vid in step.operands]
    try:
        return step.kernel(args)
    except TidlcError:
        raise
    except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
        raise TidlcError(f"{step.op.kind} failed in fixed point: {exc}", step.op.where()) from None


def _stored(result, dtype: np.dtype | None) -> np.ndarray:
    """A kernel's result as the executor keeps it: a fixed-point result in its type's element type."""
    result = np.asarray(result)
    return result if dtype is None or result.dtype == dtype else result.astype(dtype)


def _raw_source(v):
    """The integer tensor before an output's final data_convert (else the output itself)."""
    p = v.producer
    return p.operands[0] if p is not None and p.kind == "data_convert" and is_fixed(p.operands[0].type) else v


def run_fixed(graph: Graph, feeds: Mapping[str, np.ndarray], raw: bool = False) -> dict[str, np.ndarray]:
    return FixedExecutor(graph).run(feeds, raw=raw)
