"""net.bin / io.bin: determinism, exact round trip, clean errors on corrupt or foreign files."""
import hashlib
import json
import struct
import zlib
from pathlib import Path

import attrs
import numpy as np
import pytest
from tidlc.backends.tidl.binfmt import decode_net, encode_net, read_compiled
from tidlc.backends.tidl.binfmt.container import FORMAT_MAJOR, pack
from tidlc.backends.tidl.binfmt.net import decode_io
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
    opts = CompileOptions.of(emit="bin", outdir=str(d / "out"), random_weights=3)
    with pytest.warns(Warning):
        result = compile_model(str(d / "net.prototxt"), opts)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    np.save(d / "x.npy", x)
    return {"dir": d, "out": d / "out", "graph": result.graph, "x": x}


def test_compile_twice_is_byte_identical(compiled, tmp_path):
    opts = CompileOptions.of(emit="bin", outdir=str(tmp_path), random_weights=3)
    with pytest.warns(Warning):
        compile_model(str(compiled["dir"] / "net.prototxt"), opts)
    for name in ("net.bin", "io.bin"):
        assert (tmp_path / name).read_bytes() == (compiled["out"] / name).read_bytes()


def test_a_net_bin_that_would_not_read_back_is_not_written(compiled, tmp_path, monkeypatch, capsys):
    """The writer decodes what it encoded before committing the pair: a writer/reader mismatch (a
    QDQ model's f32 constant with an int8 scale once was one) is an internal error, no file."""
    from tidlc.backends.tidl import binfmt
    real = binfmt.encode_net
    monkeypatch.setattr(binfmt, "encode_net", lambda *a, **k: real(*a, **k)[:-7])  # a truncated net
    code, _, err = tidlc(capsys, "compile", compiled["dir"] / "net.prototxt", "--random-weights", "3",
                         "-o", tmp_path / "out")
    assert code != 0 and "internal error: the net.bin written does not read back" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "net.bin").exists()


def test_reader_round_trips_exactly(compiled):
    data = (compiled["out"] / "net.bin").read_bytes()
    graph, box = decode_net(data)
    perf = json.loads(bytes(box.section("PERF")))
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
    io[struct.unpack_from("<Q", io, 64 + 8)[0] + 5] ^= 0xFF  # a byte of the first section (IODS)
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
    opts = CompileOptions.of(emit="bin", outdir=str(tmp_path / "out"), weights=str(CIFAR / "cifar10_quick_iter_5000.caffemodel"),
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


# ----------------------------------------------------------------------------- hostile but well-formed files
# Each case below has valid checksums (and an io.bin bound to the edited net), so only the section
# parsers and the graph checks stand between it and the executor.


def _sections(data: bytes) -> dict:
    from tidlc.backends.tidl.binfmt.container import Container
    magic = data[:8]
    box = Container(data, magic, "file", "x")
    return {tag: bytes(view) for tag, view in box.sections.items()}


def _repack(data: bytes, **changes) -> bytes:
    """``data`` with some sections replaced (bytes) or dropped (None); checksums recomputed."""
    sections = {**_sections(data), **changes}
    return pack(data[:8], {k: v for k, v in sections.items() if v is not None}, "test", "tda4vm")


def _bound_io(io: bytes, net: bytes, **changes) -> bytes:
    return _repack(io, **{"BIND": hashlib.sha256(net).digest(), **changes})


def _run_pair(capsys, tmp_path, net: bytes, io: bytes, *extra) -> tuple[int, str]:
    d = tmp_path / "pair"
    d.mkdir(exist_ok=True)
    (d / "net.bin").write_bytes(net)
    (d / "io.bin").write_bytes(io)
    code, _, err = tidlc(capsys, "run", d, "--random-input", "0", *extra)
    return code, err


def _edited_net(compiled, edit) -> bytes:
    """The compiled net decoded, edited by ``edit(graph)``, encoded again (a valid container)."""
    data = (compiled["out"] / "net.bin").read_bytes()
    graph, box = decode_net(data)
    edit(graph)
    return encode_net(graph, json.loads(bytes(box.section("PERF"))), box.device)


def _assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def _retype(value, **quant):
    value.type = attrs.evolve(value.type, quant=attrs.evolve(value.type.quant, **quant))


@pytest.mark.parametrize("what,edit,needles", [
    # a 32-bit quantization in an i8 tensor made the fast kernels write past their buffers
    ("quant bits vs dtype", lambda g: _retype(g.ops[1].results[0], bits=32),
     ("tensor 1 holds 32-bit signed values in i8 (expected i32)", "net.bin: byte ")),
    ("unknown kind", lambda g: setattr(g.ops[3], "kind", "frobnicate"), ("has unknown kind 'frobnicate'",)),
    ("input without a name", lambda g: g.ops[0].attrs.pop("name"), ("layer 'data'", "name")),
    ("attribute of the wrong type", lambda g: g.ops[4].attrs.update(strides="x"), ("strides",)),
    ("inconsistent shapes", lambda g: setattr(g.ops[4].results[0], "type",
                                              g.ops[4].results[0].type.with_shape((1, 9, 12, 12))),
     ("inconsistent graph", "infers")),
    # a dynamic dim reached the conv kernel planner (TypeError on None, found by fuzzing)
    ("dynamic shape", lambda g: setattr(g.ops[4].results[0], "type",
                                        g.ops[4].results[0].type.with_shape((1, None, 12, 12))),
     ("has dimensions [1, -1, 12, 12] (a compiled net has static shapes)",)),
])
def test_hostile_graphs_are_one_line_errors(compiled, capsys, tmp_path, what, edit, needles):
    net = _edited_net(compiled, edit)
    code, err = _run_pair(capsys, tmp_path, net, _bound_io((compiled["out"] / "io.bin").read_bytes(), net))
    _assert_one_line(code, err, *needles)


def test_tensor_ids_out_of_range_and_out_of_order(compiled, capsys, tmp_path):
    io = (compiled["out"] / "io.bin").read_bytes()
    graph, _ = decode_net((compiled["out"] / "net.bin").read_bytes())
    n = sum(len(op.results) for op in graph.ops)

    def swap_first_two(g):  # a layer that reads a tensor before any layer writes it
        g.ops[0], g.ops[1] = g.ops[1], g.ops[0]
    net = _edited_net(compiled, swap_first_two)
    _assert_one_line(*_run_pair(capsys, tmp_path, net, _bound_io(io, net)),
                     "layer 'data' reads tensor 1 before any layer writes it")
    # operand ids are u32s in LAYR: the first layer with an operand gets one past the table
    data = (compiled["out"] / "net.bin").read_bytes()
    layr = bytearray(_sections(data)["LAYR"])
    needle = struct.pack("<II", 1, 0)  # "1 operand: tensor 0" (the data_convert reading the input)
    at = bytes(layr).index(needle)
    struct.pack_into("<I", layr, at + 4, n + 5)
    net = _repack(data, LAYR=bytes(layr))
    _assert_one_line(*_run_pair(capsys, tmp_path, net, _bound_io(io, net)),
                     f"name tensor {n + 5}; the table has {n}")


def test_huge_counts_are_checked_before_allocating(compiled, capsys, tmp_path):
    data = (compiled["out"] / "net.bin").read_bytes()
    io = (compiled["out"] / "io.bin").read_bytes()
    for tag, what in (("TENS", "tensors"), ("LAYR", "layers")):
        body = bytearray(_sections(data)[tag])
        struct.pack_into("<I", body, 0, 0xFFFFFFFF)
        net = _repack(data, **{tag: bytes(body)})
        _assert_one_line(*_run_pair(capsys, tmp_path, net, _bound_io(io, net)),
                         f"section {tag} claims 4294967295 {what}, more than it holds")


def test_bad_metadata(compiled, capsys, tmp_path):
    data = (compiled["out"] / "net.bin").read_bytes()
    io = (compiled["out"] / "io.bin").read_bytes()
    meta = json.loads(_sections(data)["META"])
    cases = [
        ({**meta, "outputs": [99]}, "output 0 names tensor 99, which no layer writes"),
        ({**meta, "outputs": ["x"]}, "META outputs must be tensor ids"),
        ({**meta, "attrs": {"$float": "inf"}}, None),  # an attribute named "$float" is just an attribute
        ({**meta, "settings": {"batches": 0}}, "setting 'batches' is out of range"),
        # the IR printer (tidlc ir OUTDIR) raised TypeError on graph attributes it cannot print
        ({**meta, "attrs": {**meta["attrs"], "x": None}}, "META graph attribute 'x' has the value None"),
        ({**meta, "attrs": {**meta["attrs"], "x": [1, {}]}}, "META graph attribute 'x' has the value (1, {})"),
        (7, "META is not a JSON object"),
    ]
    for value, needle in cases:
        net = _repack(data, META=json.dumps(value).encode())
        code, err = _run_pair(capsys, tmp_path, net, _bound_io(io, net))
        if needle is None:
            assert code == 0, err
        else:
            _assert_one_line(code, err, needle)
    deep = b"[" * 10000 + b"]" * 10000  # json.loads would recurse until RecursionError
    net = _repack(data, PERF=deep)
    _assert_one_line(*_run_pair(capsys, tmp_path, net, _bound_io(io, net)), "section PERF JSON nesting", "limit")


def test_io_descriptor_checks(compiled, capsys, tmp_path):
    net = (compiled["out"] / "net.bin").read_bytes()
    io = (compiled["out"] / "io.bin").read_bytes()
    desc, _ = decode_io(io)
    entry = desc["inputs"][0]

    def with_input(**changes) -> bytes:
        new = {**desc, "inputs": [{**entry, **changes}]}
        return _bound_io(io, net, IODS=json.dumps(new).encode())
    cases = [
        (with_input(dims=[1, 3, 12, 13]), "its inputs (data[1, 3, 12, 13]) are not the net's (data[1, 3, 12, 12])"),
        (with_input(layout="NCWH"), "inputs[0] has an unknown layout 'NCWH'"),
        (_bound_io(io, net, IODS=json.dumps({**desc, "inputs": [{k: v for k, v in entry.items() if k != "layout"}]})
                   .encode()), "inputs[0] has no 'layout'"),
        (with_input(preprocess={**entry["preprocess"], "resize": [65536, 65536]}), "over the image-pixels limit"),
        (with_input(scale=[0.0]), "scales must be positive finite numbers"),
        (_bound_io(io, net, BIND=b"short"), "the BIND section has 5 bytes, not 32"),
        (_bound_io(io, net, BIND=None), "section BIND is missing"),
    ]
    for bad, needle in cases:
        _assert_one_line(*_run_pair(capsys, tmp_path, net, bad), needle)


def test_image_input_of_a_non_image_model(capsys, tmp_path):
    """io.bin's pre-processing needs a 4-D input: anything else is a one-line input error."""
    import cv2
    (tmp_path / "m.prototxt").write_text(
        'name: "flat"\ninput: "x"\ninput_shape { dim: 1 dim: 12 }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 3 } }\n')
    code, _, err = tidlc(capsys, "compile", tmp_path / "m.prototxt", "--random-weights", "0", "-o", tmp_path / "out")
    assert code == 0, err
    cv2.imwrite(str(tmp_path / "x.png"), np.zeros((4, 4, 3), np.uint8))
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--input", f"x={tmp_path / 'x.png'}")
    _assert_one_line(code, err, "images need a 4-D input of non-zero size, 'x' is [1, 12]")


def test_compiled_ir_prints_the_graph_in_a_net_bin(compiled):
    from tidlc.run_compiled import compiled_ir
    text = compiled_ir(str(compiled["out"]))
    assert text.startswith("tidlc.graph") and "conv2d" in text and "!q<" in text
    assert compiled_ir(str(compiled["out"] / "net.bin")) == text
    assert compiled_ir(str(compiled["dir"] / "net.prototxt")) is None


def test_tidlc_ir_on_a_compiled_model(compiled, capsys):
    code, out, err = tidlc(capsys, "ir", compiled["out"] / "net.bin")
    assert code == 0 and "conv2d" in out, err
