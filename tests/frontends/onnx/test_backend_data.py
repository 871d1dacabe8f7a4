"""The PyTorch-exported node models that ship with the onnx package (``onnx/backend/test/data/
pytorch-converted`` and ``pytorch-operator``): each imports and the float interpreter gives the
outputs PyTorch recorded beside it (``test_data_set_0``), an independent reference.

Most are opset 6 (PyTorch 0.3): they go through the in-memory upgrade (importer.upgrade_model),
PReLU's 1-D per-channel slope of those opsets included; the 3-D convolutions and poolings are host
ops run by onnxruntime, with the reason kept on the op."""
from __future__ import annotations

import glob
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tidlc.frontends.onnx.importer import MIN_OPSET, load_onnx, model_opset, read_model

from tidlc.diagnostics import TidlcWarning
from tidlc.interp import run_graph

DATA = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
CASES = sorted(glob.glob(os.path.join(DATA, "pytorch-converted", "*")) +
               glob.glob(os.path.join(DATA, "pytorch-operator", "*")))


def _tensors(folder: str, kind: str) -> list[np.ndarray]:
    return [numpy_helper.to_array(onnx.load_tensor(p))
            for p in sorted(glob.glob(os.path.join(folder, "test_data_set_0", f"{kind}_*.pb")))]


def test_the_data_is_there():
    assert len(CASES) >= 100  # the onnx wheel ships them; an empty list would pass everything below


@pytest.mark.parametrize("case", CASES, ids=os.path.basename)
def test_pytorch_node_model(case):
    path = os.path.join(case, "model.onnx")
    model = read_model(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = load_onnx(path)
    upgraded = [w for w in caught if isinstance(w.message, TidlcWarning) and w.message.code == "version"]
    assert len(upgraded) == (model_opset(model, path) < MIN_OPSET)
    initializers = {t.name for t in model.graph.initializer}
    names = [i.name for i in model.graph.input if i.name not in initializers]
    with np.errstate(all="ignore"):  # pow and sqrt of negative numbers: NaN, as PyTorch recorded
        got = run_graph(graph, dict(zip(names, _tensors(case, "input"))))
    expected = _tensors(case, "output")
    assert len(graph.output_names) == len(expected)
    for name, ref in zip(graph.output_names, expected):
        out = np.asarray(got[name])
        assert out.shape == ref.shape, name
        np.testing.assert_allclose(out.astype(np.float64), ref.astype(np.float64), rtol=1e-4, atol=1e-5,
                                   equal_nan=True, err_msg=name)
    hosts = {op.attrs["op_type"]: op.attrs["reason"] for op in graph.ops if op.kind == "host"}
    if any(k in os.path.basename(case) for k in ("Conv3d", "Pool3d")):
        assert set(hosts.values()) <= {"3-D convolution is not supported (1-D and 2-D only)",
                                       "3-D pooling is not supported (1-D and 2-D only)"} and hosts
    else:
        assert not hosts
