"""GPTQ weight rounding (backends/tidl/quantize/gptq.py, --weight-rounding gptq, on at -O3)."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.quantize import gptq
from tidlc.backends.tidl.quantize.api import quantize_graph

from tidlc.config import CompileOptions
from tidlc.interp import run_graph
from tidlc.ir.fixed_arith import round_half_away
from tidlc.metrics import snr_db

from .conftest import frames, small_cnn


def _correlated_inputs(rng, k: int, n: int) -> np.ndarray:
    """(k, n) inputs whose dimensions are strongly correlated, as neighbouring pixels are."""
    base = rng.normal(size=(k // 4 + 1, n))
    mix = rng.normal(size=(k, k // 4 + 1))
    return mix @ base + 0.05 * rng.normal(size=(k, n))


def _output_error(w, codes, scale, x):
    return float(np.sum((w @ x - (codes / scale) @ x) ** 2))


@pytest.mark.parametrize("k", [27, 200])
def test_gptq_lowers_the_layer_output_error(k):
    """The codes are on the same grid and range as nearest rounding's, and the layer's output
    error on the inputs that made H is lower (nearest rounding is one candidate GPTQ improves on)."""
    rng = np.random.default_rng(k)
    w = rng.normal(0, 0.2, (16, k))
    x = _correlated_inputs(rng, k, 2000)
    scale = 127 / np.abs(w).max()
    codes = gptq.round_weights(w, x @ x.T, scale, -127, 127)
    nearest = np.clip(round_half_away(w * scale), -127, 127)
    assert codes.shape == w.shape and np.array_equal(codes, np.round(codes))
    assert codes.min() >= -127 and codes.max() <= 127
    assert np.any(codes != nearest)
    assert np.max(np.abs(codes - w * scale)) < 8  # neighbours of the weights, not a new fit
    assert _output_error(w, codes, scale, x) < 0.7 * _output_error(w, nearest, scale, x)


def test_gptq_per_channel_hessians_and_scales():
    """Depthwise layers: one H and (with per-channel scales) one scale per channel."""
    rng = np.random.default_rng(3)
    c, k = 6, 9
    w = rng.normal(0, 0.3, (c, 1, 3, 3))
    xs = [_correlated_inputs(rng, k, 500) for _ in range(c)]
    h = np.stack([x @ x.T for x in xs])
    scale = 127 / np.abs(w.reshape(c, -1)).max(axis=1)
    codes = gptq.round_weights(w, h, scale, -127, 127)
    assert codes.shape == w.shape
    nearest = np.clip(round_half_away(w.reshape(c, -1) * scale[:, None]), -127, 127)
    got = sum(_output_error(w.reshape(c, -1)[i:i + 1], codes.reshape(c, -1)[i:i + 1], scale[i], xs[i]) for i in range(c))
    base = sum(_output_error(w.reshape(c, -1)[i:i + 1], nearest[i:i + 1], scale[i], xs[i]) for i in range(c))
    assert got < base


def test_dead_inputs_round_to_nearest():
    """An input that is always 0 leaves H singular: damping keeps it invertible, and the codes
    of its weights are the nearest ones (nothing to compensate through it)."""
    rng = np.random.default_rng(5)
    w = rng.normal(0, 0.2, (4, 5))
    x = rng.normal(size=(5, 300))
    x[2] = 0.0
    scale = 100.0
    codes = gptq.round_weights(w, x @ x.T, scale, -127, 127)
    assert np.isfinite(codes).all()


def test_hessians_are_integer_moments_of_the_input_codes():
    """H of each conv/dense layer is the second moment of its integer input codes in a nearest-
    rounded quantization: for the dense layer, the flattened sigmoid codes; a depthwise layer gets
    one 9x9 matrix per channel; exact integers."""
    graph = small_cnn()
    fs = frames(3)
    q = quantize_graph(graph, CompileOptions.of(), frames=frames(8), warn_synthetic=False)
    hs = gptq.hessians(q.graph, fs, {"c1", "dw", "fc"})
    assert hs["dw"].shape == (8, 9, 9)
    assert hs["c1"].shape == (27, 27)
    seen = []
    fc_input = next(op for op in q.graph.ops if op.name == "fc").operands[0]
    for f in fs:
        FixedExecutor(q.graph).run(f, lambda op, res: seen.extend(
            r.reshape(-1).astype(np.int64) for v, r in zip(op.results, res) if v is fc_input))
    want = sum(np.outer(v, v) for v in seen)
    assert np.array_equal(hs["fc"], want.astype(np.float64))
    assert all(np.array_equal(h, np.round(h)) for h in hs.values())


def test_a_dense_layer_over_the_last_axis_of_a_token_tensor_has_a_k_by_k_hessian():
    """A dense layer on (1, tokens, K) (a transformer's projections; the interpolation matrices of
    a resize or pool computed as dense layers on (1, C, H, W)) reads K inputs at tokens
    positions: H is (K, K), the sum over every position. Its input was flattened whole, a
    (tokens K)^2 matrix: 128 GiB for a 256x16x32 pooling input, and -O3 stopped out of memory."""
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType((1, 6, 10, 5)))
    w = b.const(rng.normal(0, 0.3, (4, 5)).astype(np.float32), "w")
    b.output(b.op("dense", [x, w], name="fc"), "y")
    fs = [{"x": rng.normal(size=(1, 6, 10, 5)).astype(np.float32)} for _ in range(3)]
    q = quantize_graph(b.graph, CompileOptions.of(), frames=fs, warn_synthetic=False)
    hs = gptq.hessians(q.graph, fs, {"fc"})
    assert hs["fc"].shape == (5, 5)
    rows = []
    fc_input = next(op for op in q.graph.ops if op.name == "fc").operands[0]
    for f in fs:
        FixedExecutor(q.graph).run(f, lambda op, res: rows.extend(
            r.reshape(-1, 5).astype(np.int64) for v, r in zip(op.results, res) if v is fc_input))
    want = sum(r.T @ r for r in rows)
    assert np.array_equal(hs["fc"], want.astype(np.float64))


def test_codes_do_not_depend_on_blas_threads(tmp_path):
    """H comes from integer codes: the GPTQ codes are the same with 1 or 2 BLAS threads (the float
    interpreter's activations are not, in their last bits)."""
    import subprocess
    import sys
    script = (
        "import sys, hashlib, numpy as np\n"
        "sys.path.insert(0, {here!r})\n"
        "from conftest import small_cnn, frames\n"
        "from tidlc.config import CompileOptions\n"
        "from tidlc.backends.tidl.quantize.api import quantize_graph\n"
        "q = quantize_graph(small_cnn(seed=4), CompileOptions.of(weight_rounding='gptq'), frames=frames(16),"
        " warn_synthetic=False)\n"
        "print(hashlib.sha256(b''.join(np.ascontiguousarray(op.data).tobytes() for op in q.graph.ops"
        " if op.kind == 'const')).hexdigest())\n").format(here=str(__import__("pathlib").Path(__file__).parent))
    out = []
    for threads in ("1", "2"):
        env = dict(__import__("os").environ, OMP_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads,
                   MKL_NUM_THREADS=threads)
        # (not from the checkout's root, whose tidlc/ is the source tree, not the installed package)
        run = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True,
                             cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        out.append(run.stdout.strip())
    assert out[0] == out[1] and len(out[0]) == 64


def test_weight_rounding_gptq_quantizes_and_tracks_float():
    """--weight-rounding gptq end to end: a valid fixed-point graph, recorded in its attributes,
    whose weight codes differ from nearest rounding's and whose output error is lower on the
    calibration frames' distribution."""
    graph = small_cnn(seed=4)
    calib, evals = frames(32, seed=1), frames(8, seed=2)
    results = {}
    for how in ("nearest", "gptq"):
        q = quantize_graph(graph, CompileOptions.of(weight_rounding=how), frames=calib, warn_synthetic=False)
        ex = FixedExecutor(q.graph)
        want = np.concatenate([run_graph(graph, f)["logits"].ravel() for f in evals])
        got = np.concatenate([ex.run(f)["logits"].ravel() for f in evals])
        results[how] = (q, snr_db(want, got))
    q = results["gptq"][0]
    assert q.graph.attrs["quant.weight_rounding"] == "gptq"
    assert "quant.weight_rounding" not in results["nearest"][0].graph.attrs
    c1 = [next(op for op in r[0].graph.ops if op.name == "c1").operands[1].const_value() for r in results.values()]
    assert not np.array_equal(*c1)
    assert results["gptq"][1] > results["nearest"][1], {k: v[1] for k, v in results.items()}


def test_weight_rounding_is_deterministic_and_checked():
    graph = small_cnn(seed=4)
    a, b = (quantize_graph(graph, CompileOptions.of(weight_rounding="gptq"), frames=frames(8), warn_synthetic=False)
            for _ in range(2))
    for x, y in zip(a.graph.ops, b.graph.ops):
        for u, v in zip(x.operands, y.operands):
            cu, cv = u.const_value(), v.const_value()
            if cu is not None:
                assert np.array_equal(cu, cv)
    from tidlc.diagnostics import TidlcError
    with pytest.raises(TidlcError, match="weight-rounding"):
        quantize_graph(graph, CompileOptions.of(weight_rounding="best"), frames=frames(2), warn_synthetic=False)


def test_O3_rounds_with_gptq_and_checks_it(tmp_path):
    """-O3 turns GPTQ on and keeps the best of GPTQ, GPTQ with per-channel depthwise scales and
    nearest rounding (-O2's) on calibration frames; the verdict is recorded."""
    from tidlc.compiler import compile_model, write_ir
    model = write_ir(small_cnn(seed=4), str(tmp_path), "cnn")[0]
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.stack([f["x"] for f in frames(16, seed=3)]))
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=str(calib))
    graph = compile_model(model, options).graph
    verdict = graph.attrs["quant.weights"]
    assert "gptq" in verdict and "per-channel depthwise" in verdict and "nearest" in verdict, verdict
    parts = [p.rsplit(" ", 2) for p in verdict.split(": ", 1)[1].split(" (mean")[0].split("; ")]
    scores = {label: float(db) for label, db, _ in parts}
    assert len(scores) == 3
    assert scores[verdict.split(":")[0]] == max(scores.values())
    # asked for explicitly, nothing is checked
    options = CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=str(calib), weight_rounding="nearest")
    assert "quant.weights" not in compile_model(model, options).graph.attrs


def test_O3_leaves_graphs_without_depthwise_layers_to_nearest_rounding(tmp_path):
    """-O3's GPTQ default is for depthwise-heavy graphs; elsewhere (measured: MTCNN) it is off."""
    from tidlc.compiler import compile_model, write_ir
    from tidlc.ir import Builder, TensorType
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", TensorType((1, 3, 8, 8), layout="NCHW"))
    c = b.op("conv2d", [x, b.const(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "c.w")], pads=(1, 1, 1, 1),
             act="relu", name="c")
    fc = b.op("dense", [b.op("flatten", [c], name="flat"), b.const(rng.normal(0, 0.1, (4, 512)).astype(np.float32), "fc.w")],
              name="fc")
    b.output(fc, "y")
    model = write_ir(b.graph, str(tmp_path), "plain")[0]
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.stack([f["x"] for f in frames(8, seed=3)]))
    graph = compile_model(model, CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=str(calib))).graph
    assert "quant.weights" not in graph.attrs and "quant.weight_rounding" not in graph.attrs
    graph = compile_model(model, CompileOptions.of(opt_level=3, emit="none", quantize=True, calib=str(calib),
                                                   weight_rounding="gptq")).graph
    assert graph.attrs["quant.weight_rounding"] == "gptq"


class _Terminal:
    """A stand-in stderr that says it is a terminal and keeps what is written to it."""

    def __init__(self):
        self.parts = []

    def isatty(self):
        return True

    def write(self, text):
        self.parts.append(text)
        return len(text)

    def flush(self):
        pass

    def fileno(self):
        raise OSError("not a real terminal")


def test_gptq_shows_progress_on_a_terminal_only(monkeypatch, capsys):
    """Collecting H and rounding take seconds on real models: both show a progress bar on a
    terminal, nothing when piped, and the codes do not depend on it."""
    import sys
    gptq._CACHE.clear()
    graph = small_cnn(seed=4)

    def codes():
        q = quantize_graph(graph, CompileOptions.of(weight_rounding="gptq"), frames=frames(8), warn_synthetic=False)
        return [np.asarray(op.data).tobytes() for op in q.graph.ops if op.kind == "const"]

    piped = codes()
    assert capsys.readouterr().err == ""
    gptq._CACHE.clear()
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    shown = codes()
    monkeypatch.undo()
    text = "".join(terminal.parts)
    assert "GPTQ: layer input statistics" in text and "GPTQ: rounding weights" in text
    assert shown == piped
