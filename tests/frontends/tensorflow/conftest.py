"""Helpers of the TensorFlow frontend tests: freeze small ``tf.function`` graphs, run them in
TensorFlow and in tidlc (imported through tidlc's own GraphDef reader, at -O0 and -O2), compare.

Test modules reach the helpers through the ``tfx`` fixture; the Keras models
come from the session fixture ``tf_models`` of tests/frontends/conftest.py (built
once by make_models.py and cached on disk).
"""
from __future__ import annotations

import os
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

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
assert_close = _tidlc_frontend_checks.assert_close
check_layout_and_text = _tidlc_frontend_checks.check_layout_and_text
randn = _tidlc_frontend_checks.randn
roundtrip = _tidlc_frontend_checks.roundtrip
verified = _tidlc_frontend_checks.verified

from tidlc.config import CompileOptions
from tidlc.interp import run_graph


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
    return verified(import_graphdef(parse_graphdef(data), CompileOptions.of(**options), "test.pb", outputs), level)


def check(fn, inputs: dict, rtol: float = 1e-5, levels=(0, 2), interior: int | None = 0) -> list:
    """TensorFlow vs tidlc at each level; at -O2 at most ``interior`` transposes stay inside."""
    data, outputs, refs = freeze(fn, inputs)
    for level in levels:
        graph = tidlc_graph(data, outputs, level)
        got = run_graph(graph, inputs)
        assert len(got) == len(refs)
        for (name, value), ref in zip(got.items(), refs):
            assert_close(value, ref, rtol, f"-O{level} output '{name}'")
        check_layout_and_text(graph, level, interior)
    return refs


@pytest.fixture(scope="session")
def tfx():
    return types.SimpleNamespace(tf=tf, freeze=freeze, tidlc_graph=tidlc_graph, assert_close=assert_close,
                                 roundtrip=roundtrip, check=check, randn=randn, run_graph=run_graph)
