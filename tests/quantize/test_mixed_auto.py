"""Automatic mixed precision (--mixed-precision auto --time-budget F): budget, SNR, graph attrs, CLI."""
import numpy as np
import pytest
from tidlc.backends.tidl.fixed import FixedExecutor
from tidlc.backends.tidl.quantize.api import quantize_graph

from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.interp import Interpreter
from tidlc.metrics import SnrAccumulator

from .conftest import frames


def _q(graph, **kw):
    return quantize_graph(graph, CompileOptions.of(**kw), frames=frames(8), warn_synthetic=False)


def _snr(q, graph):
    acc = SnrAccumulator()
    ex, it = FixedExecutor(q.graph), Interpreter(graph)
    for f in frames(8, seed=5):
        ref, out = it.run(f), ex.run(f)
        for name in ref:
            acc.add(ref[name], out[name])
    return acc.db


@pytest.mark.parametrize("budget", [1.05, 1.5])
def test_auto_stays_within_budget_and_beats_8bit(cnn, budget):
    q8 = _q(cnn)
    q = _q(cnn, mixed_precision="auto", time_budget=budget)
    m = q.mixed
    assert m is not None and m.ratio <= budget + 1e-9
    assert list(q.graph.attrs.get("quant.layers_16bit", [])) == list(m.layers) == list(q.layers_16bit)
    assert "mixed precision" in q.graph.attrs["quant.mixed_precision"]
    if m.layers:
        assert m.snr > m.snr_8bit
        assert _snr(q, cnn) >= _snr(q8, cnn) - 0.5


def test_factor_is_the_same_mechanism(cnn):
    a = _q(cnn, mixed_precision_factor=1.5)
    b = _q(cnn, mixed_precision="auto", time_budget=1.5)
    assert a.layers_16bit == b.layers_16bit


def test_budget_checks(cnn):
    with pytest.raises(TidlcError):
        _q(cnn, time_budget=0.9)
    with pytest.raises(TidlcError):
        _q(cnn, time_budget=1.2, mixed_precision_factor=1.3)
    assert _q(cnn, mixed_precision="off", time_budget=1.5).mixed is None


def test_cli_records_layers_in_net_bin(tmp_path, small_caffe_net):
    from tidlc.backends.tidl.binfmt import read_compiled

    from tidlc.cli import main
    net = tmp_path / "net.prototxt"
    net.write_text(small_caffe_net)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(0).uniform(-1, 1, (4, 1, 3, 12, 12)).astype(np.float32))
    out = tmp_path / "out"
    code = main(["compile", str(net), "--random-weights", "1",
                "--calib", str(calib), "--mixed-precision", "auto", "--time-budget", "1.2", "-o", str(out)])
    assert code == 0
    attrs_ = read_compiled(str(out)).graph.attrs
    assert "quant.mixed_precision" in attrs_ and attrs_["quant.time_ratio"] <= 1.2 + 1e-9
    assert isinstance(attrs_.get("quant.layers_16bit", ()), (list, tuple))


ULTRAFACE = __import__("pathlib").Path(__file__).resolve().parents[2] / "examples" / "ultraface" / "ultraface-rfb320.onnx"


def _photo_frames(count, seed):
    """Crops of matplotlib's sample photos, 320x240, as UltraFace's pre-processing makes them."""
    cv2 = pytest.importorskip("cv2")
    matplotlib = pytest.importorskip("matplotlib")
    import glob
    import os
    paths = sorted(glob.glob(os.path.join(matplotlib.get_data_path(), "sample_data", "*.jpg")) +
                   glob.glob(os.path.join(matplotlib.get_data_path(), "sample_data", "*.png")))
    images = [img for img in (cv2.imread(p, cv2.IMREAD_COLOR) for p in paths) if img is not None and min(img.shape[:2]) > 60]
    if not images:
        pytest.skip("matplotlib's sample data is not installed")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        ch = int(min(h, w * 3 / 4) * rng.uniform(0.4, 1.0))
        cw = int(ch * 4 / 3)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = cv2.resize(img[y:y + ch, x:x + cw], (320, 240), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        out.append({"input": ((crop.astype(np.float32) - 127.0) / 128.0).transpose(2, 0, 1)[None].copy()})
    return out


@pytest.mark.slow
@pytest.mark.skipif(not ULTRAFACE.exists(), reason="example model missing")
def test_auto_beats_random_layers_on_ultraface():
    """At a tight budget the measured ranking beats random picks of as many 16-bit layers (their
    mean), and all-8-bit; within the budget. SNR on held-out frames against the float model."""
    from tidlc.backends.tidl.quantize.mixed import _candidates
    from tidlc.backends.tidl.quantize.ptq import QuantConfig, QuantResult

    from tidlc.compiler import load, optimize
    opts = CompileOptions.of(opt_level=2)
    graph = load(str(ULTRAFACE), opts)
    optimize(graph, opts)
    calib, held_out = _photo_frames(8, 1), _photo_frames(4, 2)
    it = Interpreter(graph)
    refs = [it.run(f) for f in held_out]

    def snr(q):
        ex = FixedExecutor(q.graph, kernels="auto")
        outs = [ex.run(f) for f in held_out]
        accs = {n: SnrAccumulator() for n in refs[0]}
        for ref, out in zip(refs, outs):
            for n in ref:
                accs[n].add(ref[n], out[n])
        return float(np.mean([a.db for a in accs.values()]))

    def q(**kw):
        return quantize_graph(graph, CompileOptions.of(opt_level=2, **kw), frames=calib, warn_synthetic=False)

    q8 = q()
    auto = q(mixed_precision="auto", time_budget=1.1)
    m = auto.mixed
    assert m.layers and m.ratio <= 1.1 + 1e-9
    pool = [c.op.name for c in _candidates(q8.reference, QuantResult(q8.graph, q8.origin), QuantConfig())]
    assert len(m.layers) < len(pool)
    rng = np.random.default_rng(0)
    randoms = [snr(q(layers_16bit=sorted(rng.choice(pool, len(m.layers), replace=False).tolist())))
               for _ in range(5)]
    got = snr(auto)
    assert got > snr(q8)
    assert got > float(np.mean(randoms)), (got, randoms)


def test_auto_that_promotes_nothing_compiles_what_o3_compiles(cli, tmp_path):
    """-O3 checks its weight rounding (and equalization) against the alternatives; with automatic
    mixed precision it skips those checks, whose variants would not have its 16-bit layers. When it
    promoted nothing it skipped them too, and compiled a worse net than plain -O3 (PP-PicoDet's
    layout detector: -1.2 against -0.2 dB in `tidlc tune`). Now the checks run: the same net."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    scale = np.geomspace(0.02, 2.0, 8).astype(np.float32)  # depthwise channels of very different ranges
    inits = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array((rng.normal(0, 1, (8, 1, 3, 3)) * scale[:, None, None, None]).astype(np.float32),
                                     "w2"),
             numpy_helper.from_array(rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["c"], pads=[1, 1, 1, 1], group=8),
             helper.make_node("Relu", ["c"], ["d"]), helper.make_node("Conv", ["d", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "dw.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    np.save(tmp_path / "calib.npy", rng.uniform(-1, 1, (8, 3, 16, 16)).astype(np.float32))
    np.save(tmp_path / "x.npy", rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32))
    runs = {}
    for name, extra in (("plain", ()), ("auto", ("--mixed-precision", "auto", "--time-budget", "1.0"))):
        code, out, err = cli("compile", path, "-O3", "--calib", tmp_path / "calib.npy", *extra,
                             "-o", tmp_path / name, quiet=False)
        assert code == 0, out + err
        assert "weights " in out, out  # (-O3's weights check ran)
        if name == "auto":
            assert "mixed precision: 0 layer(s) to 16 bit" in out, out
        code, _, err = cli("run", tmp_path / name, "--input", tmp_path / "x.npy", "-o", tmp_path / f"{name}.npz")
        assert code == 0, err
        runs[name] = np.load(tmp_path / f"{name}.npz")["y"]
    np.testing.assert_array_equal(runs["auto"], runs["plain"])
