"""Fixtures for pass tests: the builtin pass registry and a numerics-preserving pass runner."""
import numpy as np
import pytest
from tidlc.plugins.cleanup import CommonSubexpressions, DeadCodeElimination, RemoveIdentity, ShapeInference
from tidlc.plugins.fold_constants import FoldConstants
from tidlc.plugins.fuse import FuseActivation, FuseBatchNorm
from tidlc.plugins.layout import Layout
from tidlc.plugins.equalize import Equalize
from tidlc.plugins.patterns import FusePatterns
from tidlc.plugins.prune import PruneChannels
from tidlc.backends.tidl.quantize import Quantize

from tidlc.interp import run_graph
from tidlc.ir import verify
from tidlc.passes.manager import PassManager

BUILTIN_PASSES = (ShapeInference, DeadCodeElimination, RemoveIdentity, FoldConstants, FuseBatchNorm,
                  FuseActivation, Quantize, Layout, FusePatterns, Equalize, PruneChannels, CommonSubexpressions)


@pytest.fixture
def registry():
    """name -> pass class, as the plugin manager would collect them."""
    return {cls.name: cls for cls in BUILTIN_PASSES}


@pytest.fixture
def run_passes(registry):
    """``run_passes(graph, "a,b{x=1}", feeds)``: run a pipeline with --verify-each and check that
    every graph output is unchanged (relative 1e-4). Returns whether the graph changed."""
    def run(graph, pipeline, feeds, rtol=1e-4):
        verify(graph)
        before = run_graph(graph, feeds)
        changed = PassManager.from_string(registry, pipeline, verify_each=True).run(graph)
        verify(graph)
        after = run_graph(graph, feeds)
        assert list(after) == list(before)
        for name in before:
            scale = max(float(np.abs(before[name]).max(initial=0.0)), 1e-6)
            np.testing.assert_allclose(after[name], before[name], rtol=rtol, atol=rtol * scale, err_msg=name)
        return changed
    return run


@pytest.fixture
def count():
    """``count(graph)`` -> {op kind: number of ops} (inputs and constants left out)."""
    def counter(graph):
        out = {}
        for op in graph.compute_ops():
            out[op.kind] = out.get(op.kind, 0) + 1
        return out
    return counter
