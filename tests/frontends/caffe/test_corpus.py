"""Every corpus prototxt imports, compiles at -O2, verifies and round-trips as IR text.

Models without a caffemodel import structure-only (zero-splat weights, one
warning); the one net that cannot import fails with the complete list of its
unsupported layers.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from tidlc.compiler import compile_model
from tidlc.config import CompileOptions
from tidlc.diagnostics import TidlcError, TidlcWarning
from tidlc.ir.parser import parse_graph
from tidlc.ir.printer import print_graph
from tidlc.ir.verifier import verify
from tidlc.ir.weights import read_weights

CORPUS = Path(__file__).resolve().parents[3].parent / "shared" / "corpus" / "caffe"
PROTOTXTS = sorted(CORPUS.glob("*/*.prototxt")) if CORPUS.is_dir() else []
WEIGHTS = {  # prototxt -> its trained caffemodel (other stems than the prototxt's)
    "cifar10_quick/cifar10_quick.prototxt": "cifar10_quick/cifar10_quick_iter_5000.caffemodel",
    "lenet_mnist/mnist_deploy.prototxt": "lenet_mnist/lenet_iter_10000.caffemodel",
}
# Nets that cannot be imported, and why (docs/frontends/caffe.md lists them too).
FAILS: dict[str, tuple[str, int]] = {}  # (enet_deploy.prototxt's 27 Python SpatialDropout layers: dropout)
# Outputs (Caffe's rule: blobs nobody consumes) and their shapes, for a few nets.
OUTPUTS = {
    "mtcnn/det1.prototxt": {"conv4-2": (1, 4, 1, 1), "prob1": (1, 2, 1, 1)},
    "mtcnn/det3.prototxt": {"conv6-2": (1, 4), "conv6-3": (1, 10), "prob1": (1, 2)},
    "mobilenet_ssd/MobileNetSSD_deploy.prototxt": {"detection_out": (1, 1, 100, 7)},
    "ultraface_rfb320/RFB-320.prototxt": {"boxes": (1, 4420, 4), "scores": (1, 4420, 2)},
    "enet/enet_deploy_final.prototxt": {"deconv6_0_0": (1, 19, 512, 1024)},
    "enet/enet_deploy.prototxt": {"deconv6_0_0": (1, 19, 512, 1024)},
    "jacinto_cityscapes5_jsegnet21v2/deploy.prototxt": {"argMaxOut": (1, 1, 512, 1024)},
}


pytestmark = pytest.mark.skipif(not PROTOTXTS, reason="shared corpus not available")


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", PROTOTXTS, ids=[_id(p) for p in PROTOTXTS])
def test_corpus_net_compiles_verifies_and_round_trips(path, tmp_path):
    key = _id(path)
    weights = str(CORPUS / WEIGHTS[key]) if key in WEIGHTS else None
    options = CompileOptions.of(opt_level=2, emit="ir", outdir=str(tmp_path), weights=weights)
    if key in FAILS:
        layer_type, count = FAILS[key]
        with pytest.raises(TidlcError) as info:
            compile_model(str(path), options)
        error = info.value
        assert f"{count} layer(s) of the net cannot be imported" in error.message
        assert len(error.problems) == count
        assert all(f"unsupported layer type '{layer_type}'" in p and p.startswith(f"{path}:")
                   for p in error.problems)
        return
    has_weights = weights is not None or path.with_suffix(".caffemodel").is_file()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = compile_model(str(path), options)
    missing = [w for w in caught if issubclass(w.category, TidlcWarning) and "no weights" in str(w.message)]
    assert len(missing) == (0 if has_weights else 1)
    graph = result.graph
    assert graph.attrs.get("missing_weights", False) is (not has_weights)
    verify(graph)
    assert {p.name for p in map(Path, result.outputs)} == {"model.tir", "model.weights"}
    text, weights_table = print_graph(graph)
    assert print_graph(parse_graph(text, weights_table))[0] == text
    assert (tmp_path / "model.tir").read_text() == text
    if key in OUTPUTS:
        assert dict(zip(graph.output_names, (tuple(v.type.shape) for v in graph.outputs))) == OUTPUTS[key]
    for op in graph.ops:
        if op.kind == "input":
            assert op.results[0].type.layout == ("NCHW" if op.results[0].type.rank == 4 else None)
        elif op.kind != "const":
            assert op.loc is not None and op.loc.file == str(path) and op.loc.line > 0


def test_structure_only_constants_are_zero_splats():
    from tidlc.frontends.caffe.lower import load_caffe
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TidlcWarning)
        graph = load_caffe(str(CORPUS / "resnet50" / "ResNet-50-deploy.prototxt"), CompileOptions())
    consts = [op.data for op in graph.ops if op.kind == "const"]
    assert len(consts) > 300
    # every weight is a zero-stride view: ResNet-50's 25M weights cost no memory
    assert all(c.size == 1 or all(s == 0 for s in c.strides) for c in consts)
    conv_weights = [op.operands[1].producer.data for op in graph.ops if op.kind == "conv2d"]
    assert len(conv_weights) == 53 and all(float(w.reshape(-1)[0]) == 0.0 for w in conv_weights)


@pytest.mark.parametrize("key", ["mobilenet_ssd/MobileNetSSD_deploy.prototxt", "enet/enet_deploy_final.prototxt",
                                 "jacinto_cityscapes5_jsegnet21v2/deploy.prototxt"])
def test_detection_and_unpool_ops_round_trip_at_O0(key, tmp_path):
    """At -O0 prior_box (no operands), detection_output, max_pool_index and max_unpool stay ops."""
    result = compile_model(str(CORPUS / key), CompileOptions.of(opt_level=0, emit="ir", outdir=str(tmp_path),
                                                             random_weights=1))
    kinds = {op.kind for op in result.graph.ops}
    assert kinds & {"prior_box", "detection_output", "max_pool_index", "max_unpool", "argmax"}
    text = (tmp_path / "model.tir").read_text()
    assert print_graph(parse_graph(text, read_weights(str(tmp_path / "model.weights"))))[0] == text
