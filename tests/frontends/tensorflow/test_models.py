import sys

"""Keras MobileNetV2 and ResNet50 frozen to .pb (make_models.py): tidlc vs TensorFlow, the layout
pass on real networks, ``--input-layout`` and the command line."""
import numpy as np
import pytest

checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
from tidlc.plugins.layout import interior_transposes

from tidlc.cli import main
from tidlc.interp import run_graph

MODELS = ["mobilenet_v2", "resnet50"]


def compiled(path, level, **options):
    return checks.compiled(path, level, input_shapes={"input": (1, 224, 224, 3)}, **options)


@pytest.mark.parametrize("name", MODELS)
def test_matches_tensorflow(tf_models, tf_refs, tfx, name):
    x, ref = tf_refs["input"], tf_refs[f"{name}.pb"]
    for level in (0, 2):
        graph = compiled(tf_models / f"{name}.pb", level)
        got = run_graph(graph, {"input": x})
        assert list(got) == ["Identity"]
        error = tfx.assert_close(got["Identity"], ref, 1e-4, f"{name} -O{level}")
        print(f"{name}.pb -O{level}: max error {error:.2e} x max|ref|")


@pytest.mark.parametrize("name", MODELS)
def test_layout_pass_leaves_no_interior_transpose(tf_models, tf_refs, tfx, name):
    x = tf_refs["input"]
    baseline = run_graph(compiled(tf_models / f"{name}.pb", 0), {"input": x})["Identity"]
    # the model's own NHWC interface: one transpose, right after the input
    graph = compiled(tf_models / f"{name}.pb", 2)
    kinds = [op.kind for op in graph.compute_ops()]
    assert kinds.count("transpose") == 1 and interior_transposes(graph) == []
    assert graph.inputs[0].type.layout == "NHWC"
    assert all(op.operands[0].type.layout == "NCHW" for op in graph.ops if op.kind in ("conv2d", "pool2d"))
    tfx.assert_close(run_graph(graph, {"input": x})["Identity"], baseline, 1e-5, "NHWC interface")
    # TIDL's usual inLayout: NCHW in, no transpose left at all
    graph = compiled(tf_models / f"{name}.pb", 2, input_layout="NCHW")
    assert "transpose" not in {op.kind for op in graph.compute_ops()}
    assert graph.inputs[0].type.shape == (1, 3, 224, 224) and graph.inputs[0].type.layout == "NCHW"
    got = run_graph(graph, {"input": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})["Identity"]
    tfx.assert_close(got, baseline, 1e-5, "NCHW interface")


def test_batchnorm_and_bias_fold_into_the_convolutions(tf_models):
    graph = compiled(tf_models / "resnet50.pb", 2, input_layout="NCHW")
    counts = {}
    for op in graph.compute_ops():
        counts[op.kind] = counts.get(op.kind, 0) + 1
    # 53 convs with bias, batch norm and relu fused; the 16 residual adds carry the relu; the zero
    # pad before conv1 is the conv's padding (fuse-patterns), the one before the max pool stays
    assert counts == {"conv2d": 53, "add": 16, "pad": 1, "pool2d": 1, "global_pool": 1, "squeeze": 1,
                      "dense": 1}, counts


def test_an_unknown_batch_is_taken_as_one(tf_models, capsys):
    """Keras graphs have a None batch: batch 1 with a warning (it was an error asking for
    --input-shape); --input-shape still picks another, and unknown H/W stay an error."""
    assert main(["ir", str(tf_models / "mobilenet_v2.pb")]) == 0
    out, err = capsys.readouterr()
    assert "warning: dynamic batch dimension taken as 1 (input=1,224,224,3)" in err
    assert '%input = input "input" : tensor<1x224x224x3xf32, NHWC>' in out
    assert main(["ir", str(tf_models / "mobilenet_v2.pb"), "--input-shape", "input=2,224,224,3"]) == 0
    out, err = capsys.readouterr()
    assert "dynamic batch" not in err and "tensor<2x224x224x3xf32, NHWC>" in out


def test_cli_compile_and_run(tf_models, tf_refs, tmp_path, capsys):
    model = str(tf_models / "mobilenet_v2.pb")
    np.save(tmp_path / "x.npy", np.ascontiguousarray(tf_refs["input"].transpose(0, 3, 1, 2)))
    shape = ["--input-shape", "input=1,224,224,3", "--input-layout", "NCHW"]
    assert main(["compile", model, *shape, "--emit", "ir", "-o", str(tmp_path / "out")]) == 0
    assert main(["run", str(tmp_path / "out" / "model.tir"), "--input", f"input={tmp_path / 'x.npy'}",
                 "-o", str(tmp_path / "y.npz")]) == 0
    got = np.load(tmp_path / "y.npz")["Identity"]
    ref = tf_refs["mobilenet_v2.pb"]
    assert np.max(np.abs(got - ref)) <= 1e-4 * np.max(np.abs(ref))
    text = (tmp_path / "out" / "model.tir").read_text()
    assert '%input = input "input" : tensor<1x3x224x224xf32, NCHW>' in text and "transpose" not in text
