"""Float reference interpreter: runs any IR graph with numpy, op by op.

Each op's float reference implementation comes from its OpDef; convolutions
and dense layers use im2col + BLAS. Intermediate tensors are released as soon
as their last reader has run.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np

from tidlc.diagnostics import TidlcError
from tidlc.ir.core import Graph, Op, Value
from tidlc.ir.types import numpy_dtype
from tidlc.parallel import one_blas_thread


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Match feeds to graph inputs by name (or position for a single input); check shapes."""
    inputs = graph.input_ops
    names = [op.attrs["name"] for op in inputs]
    unknown = sorted(set(feeds) - set(names))
    if unknown and not (len(inputs) == 1 and len(feeds) == 1):
        raise TidlcError(f"unknown input(s) {', '.join(unknown)}", hint=f"the model's inputs are: {', '.join(names)}", code="input")
    if len(inputs) == 1 and len(feeds) == 1:
        feeds = {names[0]: next(iter(feeds.values()))}
    missing = [n for n in names if n not in feeds]
    if missing:
        raise TidlcError(f"missing input(s) {', '.join(missing)}", hint="pass --input NAME=FILE.npy for each", code="input")
    out = {}
    for op in inputs:
        name = op.attrs["name"]
        t = op.results[0].type
        arr = np.asarray(feeds[name])
        if t.shape is not None:
            ok = len(arr.shape) == len(t.shape) and all(d is None or d == a for d, a in zip(t.shape, arr.shape))
            if not ok:
                raise TidlcError(f"input '{name}' has shape {tuple(arr.shape)}, the model expects "
                                 f"{tuple('?' if d is None else d for d in t.shape)}",
                                 hint="use --input-shape NAME=d0,d1,... to change the model's input shape", code="input")
        out[name] = np.asarray(arr.astype(numpy_dtype(t.dtype), copy=False), order="C")  # (0-d stays 0-d)
    return out


def evaluate_op(op: Op, args: list[np.ndarray]) -> list[np.ndarray]:
    """Run one op's float reference implementation; always returns a list."""
    compute = op.opdef.compute
    if compute is None:
        raise TidlcError(f"op '{op.kind}' has no reference implementation", op.where())
    out = compute(op, *args)
    results = list(out) if isinstance(out, (list, tuple)) else [out]
    if len(results) != len(op.results):  # a bug in the op's reference, not in the model
        raise RuntimeError(f"{op.kind} reference returned {len(results)} results for {len(op.results)}")
    return results


def free_after(graph: Graph, keep: set[int]) -> list[list[int]]:
    """For each op position, the ids of values last read there (minus ``keep``): free them after it runs."""
    last_use: dict[int, int] = {}
    for i, op in enumerate(graph.ops):
        for v in op.operands:
            last_use[id(v)] = i
    dead: list[list[int]] = [[] for _ in graph.ops]
    for vid, i in last_use.items():
        if vid not in keep:
            dead[i].append(vid)
    return dead


def output_names(graph: Graph) -> list[str]:
    """The names results are returned under (declared names, else value names, else outputN)."""
    return graph.output_names or [v.name or f"output{k}" for k, v in enumerate(graph.outputs)]


class GraphRunner:
    """The walk every executor of a graph shares: constants ready once, feeds bound to the
    inputs, each compute op run on its operands in order, every value freed after its last
    reader (except the outputs and what ``keep`` names).

    A subclass says how one op computes (:meth:`compute`); the float interpreter below and the
    fixed-point executor differ only there and in what they do with the values at the end."""

    def __init__(self, graph: Graph, consts: dict[int, np.ndarray], keep: Iterable[int] = ()):
        self.graph = graph
        self.consts = consts
        self.free_after = free_after(graph, {id(v) for v in graph.outputs} | set(consts) | set(keep))
        self.names = output_names(graph)

    def compute(self, index: int, op: Op, args: list[np.ndarray]) -> list[np.ndarray]:
        """The results of ``op`` (at position ``index`` in the graph) on the operand arrays."""
        raise NotImplementedError

    def values(self, feeds: Mapping[str, np.ndarray],
               observer: Callable[[Op, list[np.ndarray]], None] | None = None,
               keep_all: bool = False) -> dict[int, np.ndarray]:
        """Run once; the live values by value id at the end (every value with ``keep_all``).
        ``observer(op, results)`` sees each compute op's stored results. numpy's BLAS runs on
        one thread (:func:`tidlc.parallel.one_blas_thread`)."""
        graph = self.graph
        feeds = check_feeds(graph, feeds)
        env: dict[int, np.ndarray] = dict(self.consts)
        with one_blas_thread():  # (same sums on any machine; see tidlc.parallel)
            for i, op in enumerate(graph.ops):
                if op.kind == "input":
                    env[id(op.results[0])] = feeds[op.attrs["name"]]
                    continue
                if op.kind == "const":
                    continue
                try:
                    args = [env[id(v)] for v in op.operands]
                except KeyError:
                    raise TidlcError("operand used before it was computed", op.where()) from None
                results = self.compute(i, op, args)
                for v, r in zip(op.results, results):
                    env[id(v)] = r
                if observer is not None:
                    observer(op, results)
                if not keep_all:
                    for vid in self.free_after[i]:
                        env.pop(vid, None)
        return env


class Interpreter(GraphRunner):
    """A graph prepared for repeated float execution.

    Constants are made contiguous once (splat weights are materialised here,
    not on every run) and the point after which each value is dead is
    precomputed, so intermediate tensors are freed as early as possible.
    """

    def __init__(self, graph: Graph):
        if graph.attrs.get("missing_weights"):
            raise TidlcError("the model has no weights (structure only), so it cannot be run",
                             graph.attrs.get("source", graph.name),
                             hint="pass --weights FILE or --random-weights SEED", code="weights")
        consts: dict[int, np.ndarray] = {}
        for op in graph.ops:
            if op.kind == "const":
                data = op.data  # (ascontiguousarray would turn 0-d into 1-d)
                consts[id(op.results[0])] = data if data.flags.c_contiguous else data.copy(order="C")
        super().__init__(graph, consts)

    def compute(self, index: int, op: Op, args: list[np.ndarray]) -> list[np.ndarray]:
        try:
            results = evaluate_op(op, args)
        except TidlcError:
            raise
        except (ValueError, IndexError, TypeError, ArithmeticError) as exc:
            raise TidlcError(f"{op.kind} failed: {exc}", op.where()) from None
        return [np.asarray(r) for r in results]

    def run(self, feeds: Mapping[str, np.ndarray],
            observer: Callable[[Op, list[np.ndarray]], None] | None = None,
            keep_all: bool = False) -> dict[str, np.ndarray]:
        env = self.values(feeds, observer, keep_all)
        return {n: env[id(v)] for n, v in zip(self.names, self.graph.outputs)}


def run_graph(graph: Graph, feeds: Mapping[str, np.ndarray],
              observer: Callable[[Op, list[np.ndarray]], None] | None = None,
              keep_all: bool = False) -> dict[str, np.ndarray]:
    """Execute ``graph`` once; returns ``{output name: array}``.

    ``observer(op, results)`` is called after each compute op (calibration, tracing).
    For repeated runs, build an :class:`Interpreter` once.
    """
    return Interpreter(graph).run(feeds, observer, keep_all)


def value_of(env: dict, v: Value) -> np.ndarray:
    return env[id(v)]
