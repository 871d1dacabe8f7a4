"""Helpers shared by the frontend test folders (ONNX, TensorFlow, TFLite, Caffe).

``tests/frontends/conftest.py`` loads this file by path as the module ``tidlc_frontend_checks``
(pytest runs in importlib mode: no test folder is on ``sys.path``); conftests and tests below
import it under that name.
"""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from tidlc.plugins.layout import interior_transposes

from tidlc.cli import main
from tidlc.compiler import load, optimize
from tidlc.config import CompileOptions
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify

MAKE_MODELS = pathlib.Path(__file__).resolve().parent / "tensorflow" / "make_models.py"

# (method, keyword arguments) of tf.compat.v1.image.resize_*: every coordinate mode of both
RESIZE_CASES = [("bilinear", {}), ("bilinear", {"align_corners": True}), ("bilinear", {"half_pixel_centers": True}),
                ("nearest", {}), ("nearest", {"align_corners": True}), ("nearest", {"half_pixel_centers": True})]


def load_helper(name: str, path: pathlib.Path):
    """The module at ``path``, imported as ``name`` (and registered in ``sys.modules``)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def tf_models_folder() -> pathlib.Path:
    """The cached output of tests/frontends/tensorflow/make_models.py (built on first use; ~30 s)."""
    result = subprocess.run([sys.executable, str(MAKE_MODELS), "--cached"], capture_output=True, text=True,
                            timeout=1200, check=False)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    if result.returncode or not lines:
        pytest.fail(f"make_models.py failed ({result.returncode}):\n{result.stderr[-3000:]}", pytrace=False)
    return pathlib.Path(lines[-1])


def verified(graph, level: int | None):
    """``graph`` verified, then optimised at ``-O<level>`` with --verify-each (not if None)."""
    verify(graph)
    if level is not None:
        optimize(graph, CompileOptions.of(opt_level=level, verify_each=True))
    return graph


def compiled(path, level: int, **options):
    """A model file loaded and optimised at ``-O<level>`` with --verify-each."""
    opts = CompileOptions.of(opt_level=level, verify_each=True, **options)
    graph = load(str(path), opts)
    optimize(graph, opts)
    return graph


def assert_close(got, ref, rtol: float = 1e-5, what: str = "") -> float:
    """Same shape; floats within ``rtol`` x max|ref| (exact for ints and bools)."""
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
    """The IR text of ``graph`` parses back to the same text."""
    text, weights = print_graph(graph)
    assert print_graph(parse_graph(text, weights))[0] == text


def check_layout_and_text(graph, level: int, interior: int | None) -> None:
    """At -O2 and above at most ``interior`` transposes stay inside the graph (None: any); the IR
    text round-trips."""
    if level >= 2 and interior is not None:
        left = interior_transposes(graph)
        assert len(left) <= interior, [op.name for op in left]
    roundtrip(graph)


def randn(*shape, seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def assert_one_line_error(capsys, path: pathlib.Path, data: bytes, message: str) -> None:
    """``tidlc ir`` on a file holding ``data`` exits 2 with one line ``PATH: error: MESSAGE...``."""
    path.write_bytes(data)
    assert main(["ir", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{path}: error: {message}"), err


def keras_encoder_block(keras, tokens: int = 9, dim: int = 16, heads: int = 2):
    """A transformer encoder block as Keras writes one (LayerNormalization, MultiHeadAttention, Dense
    with the exact GELU), seeded, with random biases, betas and gammas (Keras starts them at 0 and
    1, and TFLite drops an add of zeros): ``fn(x)`` on ``(1, tokens, dim)`` tokens."""
    keras.utils.set_random_seed(0)
    layers = keras.layers
    init = {"beta_initializer": "random_normal", "gamma_initializer": keras.initializers.RandomUniform(0.5, 1.5)}
    x = keras.Input((tokens, dim), batch_size=1)
    h = layers.LayerNormalization(epsilon=1e-6, **init)(x)
    h = layers.MultiHeadAttention(heads, dim // heads, bias_initializer="random_normal")(h, h)
    y = x + h
    h = layers.LayerNormalization(epsilon=1e-6, **init)(y)
    h = layers.Dense(2 * dim, activation="gelu", bias_initializer="random_normal")(h)
    y = y + layers.Dense(dim, bias_initializer="random_normal")(h)
    model = keras.Model(x, y)
    return lambda t: model(t)


def encoder_block_kinds(graph) -> list[str]:
    """The compute op kinds of :func:`keras_encoder_block` at -O2, for the assertions both TensorFlow
    frontends share: two layernorms, the projections as dense layers with their biases, GELU fused."""
    return [op.kind + (f"+{op.attrs['act']}" if op.attrs.get("act", "none") != "none" else "")
            for op in graph.compute_ops()]
