"""Shared helpers of the ONNX frontend tests: build small models, run them in onnxruntime
and in tidlc (after import, at -O0 and at -O2), compare.

Test modules do not import each other (or this file): they get the helpers
through the ``ox`` fixture (``ox.check_node(...)``, ``ox.make_model(...)``, ...).
"""
from __future__ import annotations

import sys
import types
from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from tidlc.frontends.onnx.importer import import_model

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
randn = _tidlc_frontend_checks.randn
roundtrip = _tidlc_frontend_checks.roundtrip
verified = _tidlc_frontend_checks.verified

from tidlc.config import CompileOptions
from tidlc.interp import run_graph

NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int64): TensorProto.INT64,
              np.dtype(np.int32): TensorProto.INT32, np.dtype(np.bool_): TensorProto.BOOL,
              np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
              np.dtype(np.float16): TensorProto.FLOAT16}


def make_model(nodes: Sequence[onnx.NodeProto], inputs: dict, outputs, initializers: dict | None = None,
               opset: int = 13, name: str = "test") -> onnx.ModelProto:
    """A model from nodes; ``inputs`` name -> array (the feed), ``outputs`` names or (name, dtype)."""
    graph_inputs = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()]
    graph_outputs = []
    for out in outputs:
        out_name, dtype = (out, np.float32) if isinstance(out, str) else out
        graph_outputs.append(helper.make_tensor_value_info(out_name, NP_TO_ONNX[np.dtype(dtype)], None))
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (initializers or {}).items()]
    graph = helper.make_graph(list(nodes), name, graph_inputs, graph_outputs, inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tidlc-tests")
    model.ir_version = helper.find_min_ir_version_for(opsets, True)
    return model


def ort_run(model: onnx.ModelProto, feeds: dict) -> dict:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def tidlc_graph(model: onnx.ModelProto, level: int | None = 0, path: str = "test.onnx", **options):
    return verified(import_model(model, CompileOptions.of(**options), path), level)


def assert_close(got: np.ndarray, ref: np.ndarray, rtol: float = 1e-5, what: str = "") -> float:
    """Same shape and dtype kind; floats within ``rtol`` x max|ref| (exact for ints and bools)."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    if ref.dtype.kind in "biu":
        assert got.dtype.kind in "biu", f"{what}: dtype {got.dtype} vs reference {ref.dtype}"
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return 0.0
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != reference {ref.dtype}"
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(np.isfinite(got), finite, err_msg=f"{what}: inf/nan pattern differs")
    if not finite.any():
        return 0.0
    scale = max(float(np.max(np.abs(ref[finite]))), 1e-6)
    err = float(np.max(np.abs(got[finite].astype(np.float64) - ref[finite]))) if ref.size else 0.0
    assert err <= rtol * scale, f"{what}: max abs error {err:.3g} > {rtol:g} x {scale:.3g}"
    return err / scale


def check(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-5, levels=(0, 2)) -> dict:
    """ORT vs tidlc after import at each level; returns the reference outputs."""
    ref = ort_run(model, feeds)
    for level in levels:
        graph = tidlc_graph(model, level)
        got = run_graph(graph, feeds)
        assert sorted(got) == sorted(ref), f"output names {sorted(got)} != {sorted(ref)}"
        for name in ref:
            assert_close(got[name], ref[name], rtol, f"-O{level} output '{name}'")
        roundtrip(graph)
    return ref


def check_node(op_type: str, inputs: dict, attrs: dict | None = None, opset: int = 13,
               initializers: dict | None = None, outputs=("y",), input_names=None, rtol: float = 1e-5,
               **kw) -> dict:
    """One node over graph inputs ``inputs`` and ``initializers`` (inputs in the order given)."""
    names = list(input_names) if input_names is not None else list(inputs) + list(initializers or {})
    out_names = [o if isinstance(o, str) else o[0] for o in outputs]
    node = helper.make_node(op_type, names, out_names, name=f"{op_type.lower()}_node", **(attrs or {}))
    model = make_model([node], inputs, outputs, initializers, opset)
    return check(model, inputs, rtol, **kw)


@pytest.fixture(scope="session")
def ox():
    """The helpers of this file as one namespace."""
    return types.SimpleNamespace(
        make_model=make_model, ort_run=ort_run, tidlc_graph=tidlc_graph, assert_close=assert_close,
        roundtrip=roundtrip, check=check, check_node=check_node, randn=randn, helper=helper,
        numpy_helper=numpy_helper, TensorProto=TensorProto, run_graph=run_graph)
