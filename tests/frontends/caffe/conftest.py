"""Fixtures of the Caffe frontend tests: the shared corpus, a caffemodel writer, OpenCV as reference.

``opencv_reference`` runs a prototxt in OpenCV's Caffe importer with exactly
the weights tidlc used: the blobs tidlc's weight source handed out (a real
caffemodel, or seeded random values for structure-only models) are written
into a temporary caffemodel with ``caffemodel_writer``.

OpenCV 5 dropped ``cv2.dnn.readNetFromCaffe``; the test extra pins
``opencv-python-headless<5``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import attrs
import numpy as np
import pytest

_tidlc_frontend_checks = sys.modules["tidlc_frontend_checks"]  # loaded from a file by tests/frontends/conftest.py
load_helper = _tidlc_frontend_checks.load_helper

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[2].parent / "shared" / "corpus" / "caffe"


# tests run in importlib mode (no sys.path entry for this folder): the helper is loaded by path
WRITER = load_helper("tidlc_test_caffemodel_writer", HERE / "caffemodel_writer.py")


@pytest.fixture(scope="session")
def caffemodel_writer():
    """The test utility module ``caffemodel_writer`` (write_caffemodel, encode_net)."""
    return WRITER


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip("shared corpus not available")
    return CORPUS


def _cv2():
    cv2 = pytest.importorskip("cv2")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.fail(f"OpenCV {cv2.__version__} has no Caffe importer (removed in OpenCV 5); "
                    "install opencv-python-headless<5 (the test extra pins it)", pytrace=False)
    return cv2


def relative_error(ours: np.ndarray, ref: np.ndarray) -> float:
    """max |ours - ref| / max |ref| (the acceptance measure: <= 1e-4)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64).reshape(ours.shape)
    scale = np.abs(ref).max() if ref.size else 0.0
    return float(np.abs(ours - ref).max() / scale) if scale else float(np.abs(ours - ref).max())


def sorted_detections(out: np.ndarray) -> np.ndarray:
    """[1, 1, rows, 7] detection rows in a canonical order (OpenCV sorts by score, Caffe by label).

    Rows [image, label, score, x1, y1, x2, y2] sort by image, label, then box: saturated random
    weights give boxes of one class equal scores that differ only in the last float bits.
    """
    rows = np.asarray(out).reshape(-1, 7)
    image, label, score, x1, y1, x2, y2 = rows.T
    return rows[np.lexsort((score, y2, x2, y1, x1, label, image))]


@attrs.define
class Reference:
    """Runs nets in tidlc and OpenCV with the same weights and inputs."""

    tmp_path: Path

    def blobs_for(self, prototxt: Path, source) -> dict:
        from tidlc.frontends.caffe.netspec import load_netspec
        types = {layer.name: layer.type for layer in load_netspec(prototxt).layers}
        return {name: (types.get(name, ""), blobs) for name, blobs in source.blobs_in_caffe_layout().items()}

    def opencv(self, prototxt: Path, blobs: dict, feeds: dict, names: list[str],
               prototxt_text: str | None = None) -> list[np.ndarray]:
        cv2 = _cv2()
        model = WRITER.write_caffemodel(self.tmp_path / "ref.caffemodel", blobs)
        if prototxt_text is not None:
            prototxt = self.tmp_path / "ref.prototxt"
            prototxt.write_text(prototxt_text)
        net = cv2.dnn.readNetFromCaffe(str(prototxt), str(model))
        for name, value in feeds.items():
            net.setInput(np.ascontiguousarray(value, np.float32), name)
        out = net.forward(names)
        return [np.asarray(o) for o in out]

    def compare(self, prototxt: Path, *, seed: int = 7, input_shapes: dict | None = None,
                levels=(0, 2), extra: tuple[str, ...] = (), feeds: dict | None = None,
                prototxt_text: str | None = None, blob_edit=None, weights: Path | None = None,
                tolerance: float = 1e-4) -> dict:
        """Run ``prototxt`` in tidlc at each -O level and in OpenCV; assert every output (and
        the ``extra`` ops' results, by op name) within ``tolerance`` x max |ref|.

        Weights come from ``weights`` (a caffemodel) or are random (``seed``). Returns
        ``{(level, name): relative error}``.
        """
        from tidlc.frontends.caffe.caffemodel import read_caffemodel
        from tidlc.frontends.caffe.lower import lower_net
        from tidlc.frontends.caffe.netspec import load_netspec
        from tidlc.frontends.caffe.weights import FileWeights, RandomWeights

        from tidlc.compiler import optimize
        from tidlc.config import CompileOptions
        from tidlc.interp import run_graph

        def lowered(level):
            source = FileWeights(read_caffemodel(weights)) if weights else RandomWeights(seed)
            graph = lower_net(load_netspec(prototxt), source, str(prototxt), dict(input_shapes or {}))
            for name in extra:
                value = next(op.results[0] for op in graph.ops if op.name == name)
                graph.outputs.append(value)
                graph.output_names.append(name)
            if level is not None:
                optimize(graph, CompileOptions.of(opt_level=level))
            return graph, source

        graph, source = lowered(None)
        if feeds is None:
            rng = np.random.default_rng(seed + 1)
            feeds = {op.attrs["name"]: rng.uniform(-1, 1, op.results[0].type.shape).astype(np.float32)
                     for op in graph.input_ops}
        blobs = self.blobs_for(prototxt, source)
        if blob_edit is not None:
            blobs = blob_edit(blobs)
        names = list(graph.output_names)
        # OpenCV names outputs by layer: the layer that wrote the blob last (in-place chains)
        layers = [v.producer.name for v in graph.outputs]
        refs = dict(zip(names, self.opencv(prototxt, blobs, feeds, layers, prototxt_text)))
        errors = {}
        for level in levels:
            graph = lowered(level)[0]
            ours = run_graph(graph, feeds)
            for name in names:
                o, r = ours[name], refs[name]
                assert o.size == r.size, f"{name}: tidlc shape {o.shape}, OpenCV {r.shape}"
                if o.ndim == 4 and o.shape[1] == 1 and o.shape[-1] == 7 and graph.outputs[
                        names.index(name)].producer.kind == "detection_output":
                    o, r = sorted_detections(o), sorted_detections(r)
                errors[(level, name)] = relative_error(o, r)
        bad = {k: v for k, v in errors.items() if not v <= tolerance}
        assert not bad, f"{prototxt.name}: relative error above {tolerance}: {bad}"
        return errors


@pytest.fixture
def reference(tmp_path) -> Reference:
    return Reference(tmp_path)
