"""Helpers of the TFLite frontend tests: convert small ``tf.function`` graphs with TensorFlow's
TFLiteConverter (float or full-integer int8), run them in the TFLite interpreter and in tidlc
(imported through tidlc's own flatbuffer reader, at -O0 and -O2), compare.

Test modules reach the helpers through the ``tfl`` fixture; the Keras models come from the
session fixture ``tf_models`` (tests/frontends/tensorflow/make_models.py, cached on disk).
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
tf = pytest.importorskip("tensorflow")
from tidlc.frontends.tflite.importer import import_model, parse_tflite
from tidlc.plugins.layout import interior_transposes

from tidlc.compiler import optimize
from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify

MAKE_MODELS = pathlib.Path(__file__).resolve().parents[1] / "tensorflow" / "make_models.py"


@pytest.fixture(scope="session")
def tf_models() -> pathlib.Path:
    result = subprocess.run([sys.executable, str(MAKE_MODELS), "--cached"], capture_output=True, text=True,
                            timeout=1200, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode or not lines:
        pytest.fail(f"make_models.py failed ({result.returncode}):\n{result.stderr[-3000:]}", pytrace=False)
    return pathlib.Path(lines[-1])


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
    graph = import_model(parse_tflite(model, path), CompileOptions(**options), path)
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


def lsb_diff(got, ref) -> int:
    """Largest difference in integer steps (LSB) between two quantized outputs."""
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and got.dtype == ref.dtype, (got.shape, got.dtype, ref.shape, ref.dtype)
    return int(np.max(np.abs(got.astype(np.int64) - ref.astype(np.int64)), initial=0))


def roundtrip(graph) -> None:
    text, weights = print_graph(graph)
    assert print_graph(parse_graph(text, weights))[0] == text


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
        if level >= 2 and interior is not None:
            left = interior_transposes(graph)
            assert len(left) <= interior, [op.name for op in left]
        roundtrip(graph)
    return refs


def randn(*shape, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="session")
def tfl():
    return types.SimpleNamespace(tf=tf, convert=convert, tfl_run=tfl_run, tidlc_graph=tidlc_graph,
                                 quantize_inputs=quantize_inputs, assert_close=assert_close, lsb_diff=lsb_diff,
                                 roundtrip=roundtrip, check=check, randn=randn, run_graph=run_graph)
