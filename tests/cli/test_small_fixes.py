"""Small things found while fuzzing (issue 11, item 7), each pinned here."""
from __future__ import annotations

import pathlib
import re

from tidlc.frontends.onnx.importer import supported_ops

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"


def test_onnx_docs_count_and_table_match_the_converter_table():
    doc = (DOCS / "frontends" / "onnx.md").read_text()
    counts = {int(n) for n in re.findall(r"lists the (\d+) supported op types", doc)}
    assert counts == {len(supported_ops())}
    listed = set()
    for line in doc.splitlines():
        if line.startswith("| ") and not line.startswith(("| ONNX op", "|---")):
            listed.update(name.strip() for name in line.split("|")[1].split(","))
    assert listed == set(supported_ops())


def test_onnx_unsupported_error_names_the_same_count(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from tidlc.cli import main
    node = helper.make_node("NonMaxSuppression", ["x", "x"], ["y"], name="nms")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 3])])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert main(["ir", str(path), "--no-host"]) == 2
    assert f"lists the {len(supported_ops())} supported op types" in err.getvalue()


LONG = ["MobilenetV2/expanded_conv_13/depthwise/BatchNorm/FusedBatchNormV3",
        "MobilenetV2/expanded_conv_13/depthwise/BatchNorm/FusedBatchNormV3_1"]


def test_compare_table_shows_full_layer_names():
    from tidlc.commands.compare import Row, format_table
    rows = [Row(name, "conv2d", [1, 8, 4, 4], "u8", 1.0, None, 40.0, 0.999, 0.1, 0.0, 1.0, 1.0, 200)
            for name in LONG]
    text = format_table(rows, 30.0)
    assert all(name in text for name in LONG)


def test_perf_table_shows_full_layer_names():
    from tidlc.backends.tidl.perf import PerfOptions, estimate
    from tidlc.backends.tidl.perf.report import render_text
    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    import tempfile
    proto = "\n".join([
        'input: "data"', "input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }",
        f'layer {{ name: "{LONG[0]}" type: "Convolution" bottom: "data" top: "a" '
        "convolution_param { num_output: 8 kernel_size: 1 } }",
        f'layer {{ name: "{LONG[1]}" type: "Convolution" bottom: "a" top: "b" '
        "convolution_param { num_output: 8 kernel_size: 1 } }"])
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/long.prototxt"
        with open(path, "w") as fh:
            fh.write(proto)
        options = CompileOptions.of(random_weights=0)
        graph = load(path, options)
        optimize(graph, options)
    text = render_text(estimate(graph, "tda4vm", PerfOptions(hints=False)))
    assert all(name in text for name in LONG)
