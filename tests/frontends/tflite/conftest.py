"""Helpers of the TFLite frontend tests: convert small ``tf.function`` graphs with TensorFlow's
TFLiteConverter (float or full-integer int8), run them in the TFLite interpreter and in tidlc
(imported through tidlc's own flatbuffer reader, at -O0 and -O2), compare.

Test modules reach the helpers through the ``tfl`` fixture; the Keras models come from the
session fixture ``tf_models`` of tests/frontends/conftest.py (tests/frontends/tensorflow/make_models.py,
cached on disk).
"""
from __future__ import annotations

import os
import sys
import types
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")
from tidlc.frontends.tflite.importer import import_model, parse_tflite

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
assert_close = _tidlc_frontend_checks.assert_close
check_layout_and_text = _tidlc_frontend_checks.check_layout_and_text
randn = _tidlc_frontend_checks.randn
roundtrip = _tidlc_frontend_checks.roundtrip
verified = _tidlc_frontend_checks.verified

from tidlc.config import CompileOptions
from tidlc.interp import run_graph


def convert(fn, inputs: dict, int8: bool = False, custom_ops: bool = False, seed: int = 0) -> bytes:
    """A .tflite of ``fn``: float, or full-integer int8 (int8 input and output) calibrated on
    inputs drawn like ``inputs`` (standard normal)."""
    specs = [tf.TensorSpec(a.shape, tf.as_dtype(a.dtype), name=name) for name, a in inputs.items()]
    concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    converter.allow_custom_ops = custom_ops
    if int8:
        rng = np.random.default_rng(seed + 100)

        def representative():
            for _ in range(16):
                yield [rng.standard_normal(a.shape).astype(np.float32) for a in inputs.values()]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def interpreter(model: bytes, delegates: bool = True):
    kind = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        it = tf.lite.Interpreter(model_content=model, experimental_op_resolver_type=kind.AUTO if delegates
                                 else kind.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    return it


def quantize_inputs(model: bytes, inputs: dict) -> dict:
    """Float feeds -> the int8 feeds of a full-integer model (by input order)."""
    it = interpreter(model)
    out = {}
    for (name, a), d in zip(inputs.items(), it.get_input_details()):
        scale, zero = d["quantization"]
        out[name] = np.clip(np.round(a / scale) + zero, -128, 127).astype(np.int8) if d["dtype"] == np.int8 else a
    return out


def tfl_run(model: bytes, feeds: dict, delegates: bool = True) -> list:
    it = interpreter(model, delegates)
    for a, d in zip(feeds.values(), it.get_input_details()):
        it.set_tensor(d["index"], a)
    it.invoke()
    return [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]


def tidlc_graph(model: bytes, level: int | None = 0, path: str = "test.tflite", **options):
    return verified(import_model(parse_tflite(model, path), CompileOptions.of(**options), path), level)


def lsb_diff(got, ref) -> int:
    """Largest difference in integer steps (LSB) between two quantized outputs."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    return int(np.max(np.abs(got.astype(np.int64) - ref.astype(np.int64)), initial=0))


def check(fn, inputs: dict, rtol: float = 1e-5, levels=(0, 2), int8: bool = False, lsb: int = 1,
          interior: int | None = 0) -> list:
    """TFLite interpreter vs tidlc: float outputs within ``rtol`` x max|ref|; int8 models (int8
    input and output) within ``lsb`` integer steps of both the default and the builtin kernels."""
    model = convert(fn, inputs, int8=int8)
    feeds = quantize_inputs(model, inputs) if int8 else inputs
    refs = tfl_run(model, feeds)
    builtin = tfl_run(model, feeds, delegates=False) if int8 else None
    for level in levels:
        graph = tidlc_graph(model, level)
        got = list(run_graph(graph, dict(zip(graph.input_names(), feeds.values()))).values())
        assert len(got) == len(refs)
        for k, (value, ref) in enumerate(zip(got, refs)):
            if int8:
                for name, expected in (("default", ref), ("builtin", builtin[k])):
                    diff = lsb_diff(value, expected)
                    assert diff <= lsb, f"-O{level} output {k}: {diff} LSB from the {name} kernels"
            else:
                assert_close(value, ref, rtol, f"-O{level} output {k}")
        check_layout_and_text(graph, level, interior)
    return refs


@pytest.fixture(scope="session")
def tfl():
    return types.SimpleNamespace(tf=tf, convert=convert, tfl_run=tfl_run, tidlc_graph=tidlc_graph,
                                 quantize_inputs=quantize_inputs, assert_close=assert_close, lsb_diff=lsb_diff,
                                 roundtrip=roundtrip, check=check, randn=randn, run_graph=run_graph)
