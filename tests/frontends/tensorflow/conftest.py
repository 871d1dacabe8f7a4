"""Helpers of the TensorFlow frontend tests: freeze small ``tf.function`` graphs, run them in
TensorFlow and in tidlc (imported through tidlc's own GraphDef reader, at -O0 and -O2), compare.

Test modules reach the helpers through the ``tfx`` fixture; the Keras models
come from the session fixture ``tf_models`` (built once by make_models.py and
cached on disk).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import types

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")
from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
from tidlc.frontends.tensorflow.graphdef import parse_graphdef
from tidlc.frontends.tensorflow.importer import import_graphdef
from tidlc.plugins.layout import interior_transposes

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify

MAKE_MODELS = pathlib.Path(__file__).with_name("make_models.py")


def models_folder() -> pathlib.Path:
    """The cached output of make_models.py (built on first use; ~30 s)."""
    result = subprocess.run([sys.executable, str(MAKE_MODELS), "--cached"], capture_output=True, text=True,
                            timeout=1200, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode or not lines:
        pytest.fail(f"make_models.py failed ({result.returncode}):\n{result.stderr[-3000:]}", pytrace=False)
    return pathlib.Path(lines[-1])


@pytest.fixture(scope="session")
def tf_models() -> pathlib.Path:
    return models_folder()


def freeze(fn, inputs: dict):
    """(GraphDef bytes, output node names, reference outputs) of ``fn`` over named inputs."""
    specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name=name) for name, a in inputs.items()]
    concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
    frozen = convert_variables_to_constants_v2(concrete)
    outputs = [t.name.split(":")[0] for t in frozen.outputs]
    refs = frozen(*[tf.constant(a) for a in inputs.values()])
    refs = [np.asarray(r) for r in (refs if isinstance(refs, (list, tuple)) else [refs])]
    return frozen.graph.as_graph_def().SerializeToString(), outputs, refs


def tidlc_graph(data: bytes, outputs=None, level: int | None = 0, **options):
    graph = import_graphdef(parse_graphdef(data), CompileOptions(**options), "test.pb", outputs)
    verify(graph)
    if level is not None:
        optimize(graph, CompileOptions(opt_level=level, verify_each=True))
    return graph


def assert_close(got, ref, rtol: float = 1e-5, what: str = "") -> float:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    if ref.dtype.kind in "biu":
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return 0.0
    scale = max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-6)
    err = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol:g} x {scale:.3g}"
    return err / scale


def roundtrip(graph) -> None:
    text, weights = print_graph(graph)
    assert print_graph(parse_graph(text, weights))[0] == text


def check(fn, inputs: dict, rtol: float = 1e-5, levels=(0, 2), interior: int | None = 0) -> list:
    """TensorFlow vs tidlc at each level; at -O2 at most ``interior`` transposes stay inside."""
    data, outputs, refs = freeze(fn, inputs)
    for level in levels:
        graph = tidlc_graph(data, outputs, level)
        got = run_graph(graph, inputs)
        assert len(got) == len(refs)
        for (name, value), ref in zip(got.items(), refs):
            assert_close(value, ref, rtol, f"-O{level} output '{name}'")
        if level >= 2 and interior is not None:
            left = interior_transposes(graph)
            assert len(left) <= interior, [op.name for op in left]
        roundtrip(graph)
    return refs


def randn(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="session")
def tfx():
    return types.SimpleNamespace(tf=tf, freeze=freeze, tidlc_graph=tidlc_graph, assert_close=assert_close,
                                 roundtrip=roundtrip, check=check, randn=randn, run_graph=run_graph)
