"""net.bin / io.bin: determinism, exact round trip, clean errors on corrupt or foreign files."""
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from tidlc.backends.tidl.binfmt import decode_net, encode_net, read_compiled
from tidlc.backends.tidl.binfmt.container import FORMAT_MAJOR
from tidlc.backends.tidl.fixed import FixedExecutor

from tidlc.cli import main
from tidlc.compiler import compile_model
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError

NET = '''name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "dw" type: "Convolution" bottom: "conv" top: "dw"
        convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "dw" top: "sum" }
layer { name: "pool" type: "Pooling" bottom: "sum" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def tidlc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("bin")
    (d / "net.prototxt").write_text(NET)
    opts = CompileOptions(emit="bin", outdir=str(d / "out"), random_weights=3)
    with pytest.warns(Warning):
        result = compile_model(str(d / "net.prototxt"), opts)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    np.save(d / "x.npy", x)
    return {"dir": d, "out": d / "out", "graph": result.graph, "x": x}


def test_compile_twice_is_byte_identical(compiled, tmp_path):
    opts = CompileOptions(emit="bin", outdir=str(tmp_path), random_weights=3)
    with pytest.warns(Warning):
        compile_model(str(compiled["dir"] / "net.prototxt"), opts)
    for name in ("net.bin", "io.bin"):
        assert (tmp_path / name).read_bytes() == (compiled["out"] / name).read_bytes()


def test_reader_round_trips_exactly(compiled):
    data = (compiled["out"] / "net.bin").read_bytes()
    graph, box = decode_net(data)
    perf = __import__("json").loads(bytes(box.section("PERF")))
    assert perf["total_mcycles"] > 0 if "total_mcycles" in perf else perf
    assert encode_net(graph, perf, box.device) == data
    assert [op.kind for op in graph.ops] == [op.kind for op in compiled["graph"].ops]
    for a, b in zip(graph.ops, compiled["graph"].ops):
        assert [r.type for r in a.results] == [r.type for r in b.results]
        if a.kind == "const":
            assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)


def test_io_descriptor(compiled):
    model = read_compiled(str(compiled["out"]))
    (inp,), (out,) = model.io["inputs"], model.io["outputs"]
    assert inp["name"] == "data" and inp["dims"] == [1, 3, 12, 12] and inp["device_element_type"] == "i8"
    assert inp["preprocess"]["channel_order"] == "rgb"
    assert out["name"] == "prob" and out["dims"] == [1, 5] and out["scale"]
    assert model.device == "tda4vm" and model.version[0] == FORMAT_MAJOR


def test_run_equals_the_fixed_executor_on_the_source_graph(compiled, capsys, tmp_path):
    expected = FixedExecutor(compiled["graph"]).run({"data": compiled["x"]})
    raw = FixedExecutor(compiled["graph"]).run({"data": compiled["x"]}, raw=True)
    for kernels in ("auto", "numpy"):
        code, _, err = tidlc(capsys, "run", compiled["out"], "--input", compiled["dir"] / "x.npy",
                             "--kernels", kernels, "-o", tmp_path / "o.npz")
        assert code == 0, err
        assert np.array_equal(np.load(tmp_path / "o.npz")["prob"], expected["prob"])
    code, out, err = tidlc(capsys, "run", compiled["out"], "--input", compiled["dir"] / "x.npy", "--raw",
                           "--repeat", "3", "--trace", tmp_path / "trace", "-o", tmp_path / "r.npz")
    assert code == 0, err
    got = np.load(tmp_path / "r.npz")["prob"]
    assert got.dtype == np.uint8 and np.array_equal(got, raw["prob"])
    assert "median" in out and "over 3 runs" in out
    trace = np.load(tmp_path / "trace" / "trace.npz")
    assert any(k.endswith("_conv") for k in trace.files) and len(trace.files) >= 8


def _rewrite_header(data: bytearray, **fields) -> bytearray:
    """Patch header fields and recompute the header CRC (a well-formed but hostile file)."""
    if "major" in fields:
        struct.pack_into("<H", data, 8, fields["major"])
    n = struct.unpack_from("<I", data, 20)[0]
    if "entry" in fields:
        index, offset, size = fields["entry"]
        struct.pack_into("<QQ", data, 64 + 32 * index + 8, offset, size)
    data[56:60] = b"\0\0\0\0"
    struct.pack_into("<I", data, 56, zlib.crc32(bytes(data[:64 + 32 * n])))
    return data


def _corruptions(data: bytes):
    yield "bad magic", b"XXXXXXXX" + data[8:], "bad magic"
    yield "newer version", bytes(_rewrite_header(bytearray(data), major=FORMAT_MAJOR + 1)), "newer"
    yield "truncated header", data[:40], "truncated"
    yield "truncated body", data[: len(data) // 2], "truncated"
    yield "empty", b"", "truncated"
    yield "huge offset", bytes(_rewrite_header(bytearray(data), entry=(1, 1 << 62, 16))), "outside"
    yield "huge size", bytes(_rewrite_header(bytearray(data), entry=(2, 128, 1 << 62))), "outside"
    flipped = bytearray(data)
    flipped[len(data) - 200] ^= 0x01
    yield "flipped param byte", bytes(flipped), "checksum"
    flipped = bytearray(data)
    flipped[30] ^= 0x40
    yield "flipped header byte", bytes(flipped), "checksum"


def test_corrupt_files_give_one_line_and_exit_2(compiled, capsys, tmp_path):
    data = (compiled["out"] / "net.bin").read_bytes()
    io = (compiled["out"] / "io.bin").read_bytes()
    for what, bad, needle in _corruptions(data):
        d = tmp_path / what.replace(" ", "_")
        d.mkdir()
        (d / "net.bin").write_bytes(bad)
        (d / "io.bin").write_bytes(io)
        code, _, err = tidlc(capsys, "run", d, "--input", compiled["dir"] / "x.npy")
        assert code == 2, (what, err)
        assert len(err.strip().splitlines()) == 1 and needle in err, (what, err)
        assert "net.bin" in err


def test_every_single_byte_flip_is_caught(compiled):
    data = (compiled["out"] / "net.bin").read_bytes()
    rng = np.random.default_rng(1)
    for pos in rng.choice(len(data), 200, replace=False):
        bad = bytearray(data)
        bad[pos] ^= 1 << int(rng.integers(8))
        try:
            decode_net(bytes(bad))
        except TidlcError:
            continue
        # only the zero padding between sections is not covered by a checksum
        graph, _ = decode_net(bytes(bad))
        assert encode_net(graph, __import__("json").loads(bytes(_.section("PERF"))), _.device) == data


def test_every_truncation_is_caught(compiled):
    data = (compiled["out"] / "net.bin").read_bytes()
    for n in range(0, len(data), max(1, len(data) // 97)):
        with pytest.raises(TidlcError):
            decode_net(data[:n])


def test_corrupt_io_bin(compiled, capsys, tmp_path):
    (tmp_path / "net.bin").write_bytes((compiled["out"] / "net.bin").read_bytes())
    io = bytearray((compiled["out"] / "io.bin").read_bytes())
    io[-70] ^= 0xFF
    (tmp_path / "io.bin").write_bytes(bytes(io))
    code, _, err = tidlc(capsys, "run", tmp_path, "--random-input", "0")
    assert code == 2 and "io.bin" in err and len(err.strip().splitlines()) == 1


def test_missing_net_bin(capsys, tmp_path):
    code, _, err = tidlc(capsys, "run", tmp_path / "nothing" / "net.bin")
    assert code == 2 and "no such file" in err


def test_emit_bin_from_the_cli(compiled, capsys, tmp_path):
    code, out, err = tidlc(capsys, "compile", compiled["dir"] / "net.prototxt", "--random-weights", "3",
                           "--emit", "bin", "-o", tmp_path)
    assert code == 0, err
    assert "net.bin" in out and (tmp_path / "io.bin").exists()
    assert not list(tmp_path.glob("*.tmp*"))


CIFAR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe" / "cifar10_quick"


@pytest.mark.skipif(not CIFAR.is_dir(), reason="corpus not available")
def test_trained_model_with_an_image_uses_io_bin_preprocessing(capsys, tmp_path):
    from tidlc.preprocess import Preprocess, read_image
    samples = CIFAR / "samples"
    listing = tmp_path / "calib.txt"
    listing.write_text("".join(f"{p} 0\n" for p in sorted(samples.glob("*.png"))))
    opts = CompileOptions(emit="bin", outdir=str(tmp_path / "out"), weights=str(CIFAR / "cifar10_quick_iter_5000.caffemodel"),
                          calib=str(listing), mean=(125.3, 123.0, 113.9), channel_order="bgr")
    result = compile_model(str(CIFAR / "cifar10_quick.prototxt"), opts)
    image = samples / "dog10.png"
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--input", image, "-o", tmp_path / "o.npz")
    assert code == 0, err
    pre = Preprocess(mean=(125.3, 123.0, 113.9), channel_order="bgr")
    name = result.graph.input_names()[0]
    shape = result.graph.inputs[0].type.shape
    x = pre.apply(read_image(str(image), 3), shape, result.graph.inputs[0].type.layout)
    expected = FixedExecutor(result.graph).run({name: x})
    got = np.load(tmp_path / "o.npz")
    for key, value in expected.items():
        assert np.array_equal(got[key], value)
