"""Partitioning into accelerator subgraphs + host ops (tidlc.partition, docs/partition.md):
the plan, the partitioned compile (model.tdp), `tidlc run OUTDIR` and the whole-model case."""
from __future__ import annotations

import os

import numpy as np
import pytest

from tidlc.cli import main
from tidlc.compiler import backend_for, compile_model, load, optimize
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph
from tidlc.metrics import snr_db
from tidlc.partition import extract_region, plan_partition, tensor_names

CHAIN = '''name: "chain"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool" top: "conv2" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 5 } }
'''

# conv1 feeds two branches (convA, convB) joined by an add, then conv3
DIAMOND = '''name: "diamond"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "convA" type: "Convolution" bottom: "conv1" top: "convA" convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "convB" type: "Convolution" bottom: "conv1" top: "convB" convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "convA" bottom: "convB" top: "sum" }
layer { name: "conv3" type: "Convolution" bottom: "sum" top: "conv3" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
'''


def _graph(tmp_path, text, name="m.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    options = CompileOptions.of(emit="ir", random_weights=1)
    graph = load(str(path), options)
    optimize(graph, options)
    return graph, str(path)


def _tidl():
    return backend_for("tidl")


def _acyclic(graph, partition) -> bool:
    """The graph contracted to subgraphs and host ops has no cycle."""
    from tidlc.partition import op_names
    names = op_names(graph)
    unit = {n: ("r", r.index) for r in partition.regions for n in r.op_names}
    unit.update({n: ("h", n) for n in partition.host_ops})
    edges: dict = {}
    for op in graph.compute_ops():
        for v in op.operands:
            p = v.producer
            if p is not None and id(p) in names:
                a, b = unit[names[id(p)]], unit[names[id(op)]]
                if a != b:
                    edges.setdefault(a, set()).add(b)
    state: dict = {}

    def visit(u) -> bool:
        state[u] = 1
        for w in edges.get(u, ()):
            if state.get(w) == 1 or (w not in state and not visit(w)):
                return False
        state[u] = 2
        return True
    return all(state.get(u) == 2 or visit(u) for u in set(unit.values()))


# --- the plan ---------------------------------------------------------------------------------
def test_chain_with_a_denied_op_in_the_middle(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_names=("pool",))
    assert not p.is_whole
    assert [r.op_names for r in p.regions] == [("conv1",), ("conv2", "fc/flatten", "fc")]
    assert p.host_ops == ("pool",)
    assert p.regions[0].inputs == ("data",) and p.regions[0].outputs == ("conv1",)
    assert p.regions[1].inputs == ("pool",) and p.regions[1].outputs == ("fc",)
    assert p.boundary == {"data": 3 * 144 * 4, "conv1": 8 * 144 * 4, "pool": 8 * 36 * 4, "fc": 20}
    whole = plan_partition(graph, _tidl())
    assert whole.is_whole and not whole.host_ops


def test_a_region_that_only_moves_data_runs_on_the_host(tmp_path):
    """Denying conv2 leaves the flatten before fc a region of its own between host ops: it moves data
    only (as the flatten and concat after an NMS-free YOLO's TopK), so the host runs it too."""
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_names=("conv2", "fc"))
    assert [r.op_names for r in p.regions] == [("conv1", "pool")]
    assert p.host_ops == ("conv2", "fc/flatten", "fc")
    only = plan_partition(graph, _tidl(), deny_types=("conv2d", "pool2d", "dense"))
    assert only.regions == () and "fc/flatten" in only.host_ops


def test_a_denied_type_goes_to_the_host(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_types=("pool2d",))
    assert p.host_ops == ("pool",) and len(p.regions) == 2


def test_diamond_with_a_host_branch_splits_the_region(tmp_path):
    graph, _ = _graph(tmp_path, DIAMOND)
    p = plan_partition(graph, _tidl(), deny_names=("convA",))
    assert p.host_ops == ("convA",)
    assert _acyclic(graph, p)
    assert len(p.regions) == 2
    first, second = p.regions
    assert "conv1" in first.op_names and "convB" in first.op_names
    assert "conv3" in second.op_names and "conv1" not in second.op_names
    assert set(second.inputs) == {"convA", tensor_names(graph)[id(graph.ops[[o.name for o in graph.ops].index("convB")].results[0])]}


def test_host_verdicts_are_honoured(tmp_path):
    """An op whose verdict level is "host" stays on the host without any deny list."""
    from tidlc.backend import Verdict
    graph, _ = _graph(tmp_path, DIAMOND)
    tidl = _tidl()

    class Fake:
        name = "fake"

        def supports(self, op):
            return Verdict("host", "no") if op.name == "convA" else tidl.supports(op)
    p = plan_partition(graph, Fake())
    assert p.host_ops == ("convA",) and len(p.regions) == 2 and _acyclic(graph, p)


def test_max_subgraphs_keeps_the_costliest(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_names=("pool",), max_subgraphs=1)
    assert [r.op_names for r in p.regions] == [("conv2", "fc/flatten", "fc")]
    assert p.regions[0].index == 0
    assert p.host_ops == ("conv1", "pool")
    assert set(p.boundary) == {"pool", "fc"}
    # with a cost that makes the first region the larger one, it is the one kept
    cost = lambda ops: 100.0 if any(o.name == "conv1" for o in ops) else 1.0
    p = plan_partition(graph, _tidl(), deny_names=("pool",), max_subgraphs=1, cost=cost)
    assert [r.op_names for r in p.regions] == [("conv1",)] and p.regions[0].cost == 100.0
    assert p.host_ops == ("pool", "conv2", "fc/flatten", "fc")


def test_min_subgraph_ops(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_names=("pool",), min_subgraph_ops=2)
    assert [r.op_names for r in p.regions] == [("conv2", "fc/flatten", "fc")]
    assert p.host_ops == ("conv1", "pool")
    p = plan_partition(graph, _tidl(), deny_names=("pool",), min_subgraph_ops=4)
    assert p.regions == () and len(p.host_ops) == 5 and not p.is_whole


def test_bad_deny_names_name_the_nearest(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    with pytest.raises(TidlcError) as exc:
        plan_partition(graph, _tidl(), deny_names=("pol",))
    assert "pol" in str(exc.value) and "'pool'" in str(exc.value)
    with pytest.raises(TidlcError) as exc:
        plan_partition(graph, _tidl(), deny_types=("max_pool2d",))
    assert "'pool2d'" in str(exc.value)


def test_bad_deny_name_on_the_command_line_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "m.prototxt").write_text(CHAIN)
    code = main(["compile", str(tmp_path / "m.prototxt"), "--random-weights", "1", "-o", str(tmp_path / "o"),
                 "--deny-op-name", "conv_1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'conv1'" in err[0], err


def test_extract_region_is_a_standalone_graph(tmp_path):
    graph, _ = _graph(tmp_path, CHAIN)
    p = plan_partition(graph, _tidl(), deny_names=("pool",))
    sub = extract_region(graph, p.regions[1])
    assert sub.input_names() == ["pool"] and sub.output_names == ["fc"]
    assert [op.name for op in sub.compute_ops()] == ["conv2", "fc/flatten", "fc"]
    feeds = {"data": np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)}
    whole = run_graph(graph, feeds, keep_all=True)
    env = {}
    run_graph(graph, feeds, observer=lambda op, res: env.__setitem__(op.name, res[0]))
    got = run_graph(sub, {"pool": env["pool"]})
    np.testing.assert_array_equal(got["fc"], whole["fc"])


# --- partitioned compile and run ----------------------------------------------------------------
def _compile(tmp_path, text, out="out", **kw):
    """Compile with real calibration data: 16 frames uniform in [-1, 1], as the tests' inputs."""
    path = tmp_path / "m.prototxt"
    path.write_text(text)
    outdir = str(tmp_path / out)
    shape = (1, 3, 12, 12) if text is CHAIN else (1, 3, 10, 10)
    calib = tmp_path / "calib.npy"
    np.save(calib, np.random.default_rng(7).uniform(-1, 1, (16, *shape[1:])).astype(np.float32))
    options = CompileOptions.of(outdir=outdir, random_weights=1, **{"emit": "bin", "calib": str(calib), **kw})
    return compile_model(str(path), options), str(path), outdir


def _reference(path, feeds):
    options = CompileOptions.of(emit="ir", random_weights=1)
    graph = load(path, options)
    return run_graph(graph, feeds)


@pytest.mark.parametrize(("bits", "floor"), [(8, 25.0), (16, 50.0)])
@pytest.mark.parametrize("model", ["chain", "diamond"])
def test_partitioned_compile_runs_close_to_float(tmp_path, model, bits, floor):
    text, deny = (CHAIN, "pool") if model == "chain" else (DIAMOND, "convA")
    result, path, outdir = _compile(tmp_path, text, deny_op_names=(deny,), bits=bits)
    shape = (1, 3, 12, 12) if text is CHAIN else (1, 3, 10, 10)
    names = [os.path.relpath(p, outdir) for p in result.outputs]
    assert sorted(names) == ["model.tdp", "model.tir", "model.weights", "subgraph_0/io.bin", "subgraph_0/net.bin",
                             "subgraph_1/io.bin", "subgraph_1/net.bin"]
    assert names[-1] == "model.tdp"
    assert not os.path.exists(os.path.join(outdir, "net.bin"))
    backend = _tidl()
    assert backend.recognizes(outdir)
    exe = backend.load(outdir)
    assert exe.input_info() == [("data", shape, "float32")]
    rng = np.random.default_rng(3)
    for _ in range(4):
        feeds = {"data": rng.uniform(-1, 1, shape).astype(np.float32)}
        want = _reference(path, feeds)
        got = exe.run(feeds)
        assert set(got) == set(want)
        for name in want:
            assert snr_db(want[name], got[name]) >= floor, (bits, name, snr_db(want[name], got[name]))


def test_partitioned_run_from_the_command_line(tmp_path, capsys):
    _, path, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "y.npz"
    code = main(["run", outdir, "--input", str(tmp_path / "x.npy"), "-o", str(out), "--trace", str(tmp_path / "tr")])
    assert code == 0, capsys.readouterr()
    got = np.load(out)["fc"]
    assert snr_db(_reference(path, {"data": x})["fc"], got) > 20
    trace = np.load(tmp_path / "tr" / "trace.npz")
    assert any(k.endswith("_pool") for k in trace.files)  # the host op is traced too
    # bit-exact with the subgraphs' own executors, fed the same boundary tensors
    backend = _tidl()
    sub0 = backend.load(os.path.join(outdir, "subgraph_0")).run({"data": x})["conv1"]
    from tidlc.interp import evaluate_op
    exe = backend.load(outdir)
    pooled = evaluate_op(exe.by_name["pool"], [sub0])[0]
    sub1 = backend.load(os.path.join(outdir, "subgraph_1")).run({"pool": pooled})["fc"]
    np.testing.assert_array_equal(sub1, got)


def _image(tmp_path, size=(12, 12)):
    import cv2
    rng = np.random.default_rng(5)
    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return path


def test_partitioned_run_takes_an_image_with_the_compiles_preprocessing(tmp_path, capsys):
    """`tidlc run OUTDIR --input frame.png` of a partitioned model: the image goes through the
    pre-processing given to the compile (kept in model.tdp), as for a whole-model net.bin; --post,
    --repeat and --json work the same; --raw is a one-line error (the host gets float)."""
    from tidlc.preprocess import Preprocess, read_image
    _, _, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",), mean=(127.5,), scale=(1 / 127.5,))
    manifest = _tidl().load(outdir).manifest
    assert manifest["inputs"][0]["preprocess"]["mean"] == [127.5]
    image = _image(tmp_path)
    code = main(["run", outdir, "--input", str(image), "-o", str(tmp_path / "y.npz"), "--repeat", "2",
                 "--post", "classify"])
    out, err = capsys.readouterr()
    assert code == 0 and "top-5 classes:" in out and "median" in out and err == "", (out, err)
    x = Preprocess(mean=(127.5,), scale=(1 / 127.5,)).apply(read_image(str(image), 3), (1, 3, 12, 12), "NCHW")
    np.testing.assert_array_equal(np.load(tmp_path / "y.npz")["fc"], _tidl().load(outdir).run({"data": x})["fc"])
    assert main(["run", outdir, "--input", str(image), "--raw"]) == 2
    assert "--raw: a partitioned model" in capsys.readouterr().err


def test_partitioned_run_warns_when_the_image_misses_the_calibrated_range(tmp_path, capsys):
    """Compiled without --mean/--scale (calibrated on [-1, 1]): raw pixels saturate its first subgraph."""
    _, _, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    assert main(["run", outdir, "--input", str(_image(tmp_path))]) == 0
    err = capsys.readouterr().err
    assert err.count("outside the range it was calibrated for") == 1 and "on 16 frames of '" in err, err


def test_ir_of_a_partitioned_outdir_prints_the_run_order_and_every_graph(tmp_path, capsys):
    """`tidlc ir OUTDIR` of a partitioned model was 'is a directory'; it prints the schedule as
    comments, then each subgraph's fixed-point graph and model.tir."""
    _, _, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    assert main(["ir", outdir]) == 0
    text = capsys.readouterr().out
    assert text.startswith("// partitioned model (") and "2 subgraph(s), 1 host op(s); run order:" in text
    assert "//   subgraph_0: " in text and "//   host: pool\n" in text and "// subgraph_1/net.bin\n" in text
    assert text.count("tidlc.graph @") == 3 and "quantized = true" in text


def test_a_partitioned_compile_without_calib_says_its_subgraphs_were_calibrated_synthetically(tmp_path):
    path = tmp_path / "m.prototxt"
    path.write_text(CHAIN)
    options = CompileOptions.of(outdir=str(tmp_path / "out"), random_weights=1, emit="bin", deny_op_names=("pool",))
    with pytest.warns(UserWarning):
        compile_model(str(path), options)
    exe = _tidl().load(str(tmp_path / "out"))
    assert [g.attrs["quant.calib_source"] for g in exe.fixed_graphs()] == ["synthetic", "synthetic"]


def test_an_image_into_a_source_model_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "m.prototxt"
    path.write_text(CHAIN)
    assert main(["run", str(path), "--random-weights", "1", "--input", str(_image(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "an image, but a source model takes pre-processed tensors (.npy)" in err[0], err
    assert "tidlc compile MODEL --mean M --scale S -o OUTDIR" in err[0]


def test_emit_ir_of_a_partitioned_model_is_the_float_graph(tmp_path):
    result, path, outdir = _compile(tmp_path, CHAIN, emit="ir", deny_op_names=("pool",))
    assert sorted(os.path.basename(p) for p in result.outputs) == ["model.tir", "model.weights"]
    assert "2 subgraph(s)" in result.graph.attrs["partition"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    graph = load(os.path.join(outdir, "model.tir"), CompileOptions())
    np.testing.assert_array_equal(run_graph(graph, {"data": x})["fc"], _reference(path, {"data": x})["fc"])


def test_emit_qir_of_a_partitioned_model_points_at_bin(tmp_path):
    with pytest.raises(TidlcError) as exc:
        _compile(tmp_path, CHAIN, emit="qir", deny_op_names=("pool",))
    assert "--emit bin" in str(exc.value)


def test_a_flipped_manifest_byte_is_a_one_line_error(tmp_path, capsys):
    _, _, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    manifest = os.path.join(outdir, "model.tdp")
    with open(manifest, "rb") as fh:
        data = bytearray(fh.read())
    for offset in (0, 14, len(data) // 2, len(data) - 2):
        bad = bytearray(data)
        bad[offset] ^= 0x01
        with open(manifest, "wb") as fh:
            fh.write(bad)
        code = main(["run", outdir, "--random-input", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "model.tdp" in err[0], (offset, err)
    with open(manifest, "wb") as fh:
        fh.write(data)
    assert main(["run", outdir, "--random-input", "1"]) == 0


def test_the_whole_model_case_is_unchanged(tmp_path):
    """No host op: one net.bin + io.bin, no model.tdp, the same bytes as a compile that plans nothing."""
    result, path, outdir = _compile(tmp_path, CHAIN)
    assert sorted(os.listdir(outdir)) == ["io.bin", "net.bin"]
    assert [os.path.basename(p) for p in result.outputs] == ["net.bin", "io.bin"]
    # a partitioned compile into the same folder, then a whole one again: no stale model.tdp
    _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    assert not os.path.exists(os.path.join(outdir, "net.bin"))
    again, _, _ = _compile(tmp_path, CHAIN)
    assert not os.path.exists(os.path.join(outdir, "model.tdp"))
    assert [os.path.basename(p) for p in again.outputs] == ["net.bin", "io.bin"]
    # byte-identical to the pipeline run in one go (optimize with the quantize pass, then emit)
    from tidlc.backends.tidl.binfmt import write_bin
    options = CompileOptions.of(emit="bin", random_weights=1, outdir=str(tmp_path / "ref"),
                                calib=str(tmp_path / "calib.npy"))
    graph = load(path, options)
    optimize(graph, options)
    write_bin(graph, str(tmp_path / "ref"), options)
    for name in ("net.bin", "io.bin"):
        with open(os.path.join(outdir, name), "rb") as a, open(tmp_path / "ref" / name, "rb") as b:
            assert a.read() == b.read()


def test_a_denied_activation_is_not_fused_away(tmp_path):
    """--deny-op-name of an op that -O2 would fuse into its producer keeps it, on the host."""
    _, path, outdir = _compile(tmp_path, CHAIN, deny_op_names=("relu2",), bits=16)
    exe = _tidl().load(outdir)
    assert exe.manifest["host_ops"] == ["relu2"] and len(exe.manifest["subgraphs"]) == 2
    x = np.random.default_rng(5).uniform(-1, 1, (1, 3, 12, 12)).astype(np.float32)
    assert snr_db(_reference(path, {"data": x})["fc"], exe.run({"data": x})["fc"]) > 50
    # the whole-model compile still fuses it
    whole, _, _ = _compile(tmp_path, CHAIN, out="whole")
    assert "relu2" not in {op.name for op in whole.graph.compute_ops()}


def test_perf_of_a_partitioned_model(tmp_path, capsys):
    import json
    _, path, outdir = _compile(tmp_path, CHAIN, deny_op_names=("pool",))
    for target in (outdir, path):
        extra = ("--random-weights", "1", "--deny-op-name", "pool") if target == path else ()
        assert main(["perf", target, "--json", *extra]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["schema"] == "tidlc.perf.partitioned/1"
        assert [s["ops"] for s in doc["subgraphs"]] == [1, 3] and doc["host_ops"][0]["name"] == "pool"
        assert doc["c7x_ms"] > 0 and doc["arm_ms"] > 0 and doc["transfer_ms"] > 0 and doc["call_ms"] > 0
        assert abs(doc["ms"] - (doc["c7x_ms"] + doc["arm_ms"] + doc["call_ms"] + doc["transfer_ms"])) < 1e-3
        assert "pool" in doc["hints"][0]
        assert doc["arm"]["sources"]["efficiency"] == "estimate"
    assert main(["perf", outdir]) == 0
    out = capsys.readouterr().out
    assert "C7x/MMA" in out and "Arm A72" in out and "transfer" in out
    # a whole model: the usual report
    assert main(["perf", path, "--random-weights", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "tidlc.perf/1"


def test_two_branches_joined_merge_into_one_region(tmp_path):
    """Ops reached from two regions join them when no host op lies between (one subgraph)."""
    graph, _ = _graph(tmp_path, DIAMOND)
    p = plan_partition(graph, _tidl(), deny_names=("conv1",))
    assert p.host_ops == ("conv1",) and len(p.regions) == 1 and _acyclic(graph, p)
    assert p.regions[0].inputs == ("conv1",)


def _shrink_model(tmp_path):
    """conv -> ONNX Shrink (a host op: tidlc has no converter) -> conv."""
    pytest.importorskip("onnxruntime")
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, .3, (4, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, .3, (4, 4, 3, 3)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Shrink", ["c1"], ["s"], name="shrink", lambd=0.1, bias=0.05),
             helper.make_node("Conv", ["s", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], [w1, w2])
    path = tmp_path / "host.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_perf_of_a_model_that_splits_names_the_split(tmp_path, capsys):
    """Without --partitioned, `tidlc perf MODEL` keeps the whole-model table, which costs a host op
    as nothing; a warning gives what the compiled split costs (the --partitioned figure)."""
    import json
    path = str(_shrink_model(tmp_path))
    assert main(["perf", path, "--json", "--partitioned"]) == 0
    split_ms = json.loads(capsys.readouterr().out)["ms"]
    assert main(["perf", path, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["schema"] == "tidlc.perf/1" and json.loads(out)["ms"] < split_ms
    import re
    said = re.search(r"splits into 2 subgraph\(s\) and 1 host op\(s\) \(shrink\): ([0-9.]+) ms/frame", err)
    assert said and abs(float(said.group(1)) - split_ms) < 1.5e-3, err


def test_an_onnx_op_tidlc_cannot_lower_runs_on_the_host(tmp_path):
    """A `host` op (ONNX Shrink, kept opaque by the frontend) splits the model by its verdict alone."""
    path = _shrink_model(tmp_path)
    rng = np.random.default_rng(0)
    float_graph = load(str(path), CompileOptions.of(emit="ir"))
    if not any(op.kind == "host" for op in float_graph.compute_ops()):
        pytest.skip("this tidlc keeps no host ops (ONNX Shrink is lowered or refused)")
    calib = tmp_path / "calib.npy"
    np.save(calib, rng.uniform(-1, 1, (16, 3, 8, 8)).astype(np.float32))
    outdir = str(tmp_path / "out")
    compile_model(str(path), CompileOptions.of(emit="bin", outdir=outdir, bits=16, calib=str(calib)))
    exe = _tidl().load(outdir)
    assert exe.manifest["host_ops"] == ["shrink"] and len(exe.manifest["subgraphs"]) == 2
    x = rng.uniform(-1, 1, (1, 3, 8, 8)).astype(np.float32)
    assert snr_db(run_graph(float_graph, {"x": x})["y"], exe.run({"x": x})["y"]) >= 50


def test_perf_of_a_model_file_is_partitioned_only_when_asked(tmp_path, capsys):
    import json
    _, path = _graph(tmp_path, CHAIN)
    assert main(["perf", path, "--random-weights", "1", "--json", "--min-subgraph-ops", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "tidlc.perf/1"  # a whole plan: the usual report
    assert main(["perf", path, "--random-weights", "1", "--json", "--partitioned", "--deny-op-type", "pool2d"]) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "tidlc.perf.partitioned/1"


UPSAMPLE = '''name: "up"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
  convolution_param { num_output: 4 group: 4 kernel_size: 4 stride: 2 pad: 1 bias_term: false } }
layer { name: "head" type: "Convolution" bottom: "up" top: "head" convolution_param { num_output: 2 kernel_size: 1 } }
'''


@pytest.mark.parametrize("deny", [{"deny_op_names": ("up",)}, {"deny_op_types": ("deconv2d",)}])
def test_a_denied_op_is_not_rewritten_by_the_patterns(tmp_path, deny):
    """-O2 rewrites a grouped deconv into phase convs + depth_to_space; denied by name or kind, it
    stays the deconv the user named and runs on the host (before, --deny-op-type deconv2d matched
    nothing and --deny-op-name put the depth_to_space alone on the host)."""
    path = tmp_path / "up.prototxt"
    path.write_text(UPSAMPLE)
    options = CompileOptions.of(opt_level=2, random_weights=1)
    graph = load(str(path), options)
    from tidlc.compiler import backend_for, optimize_and_plan, plugins_for
    _, partition = optimize_and_plan(graph, options.replace(**deny), plugins_for(options), backend_for(options))
    assert partition.host_ops == ("up",) and [op.kind for op in graph.compute_ops() if op.name == "up"] == ["deconv2d"]
    graph = load(str(path), options)
    _, partition = optimize_and_plan(graph, options, plugins_for(options), backend_for(options))
    assert partition.is_whole and "deconv2d" not in {op.kind for op in graph.compute_ops()}
