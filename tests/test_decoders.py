"""Post-processors (issue 15, item 2): NMS, SSD priors, the UltraFace decoder on a real face
(matplotlib's Grace Hopper portrait), task/name selection and the plugin hook's checks."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tidlc.decoders import BUILTIN, nms, pick, priors, registry
from tidlc.diagnostics import TidlcError

ULTRAFACE = Path(__file__).resolve().parents[1] / "examples" / "ultraface" / "ultraface-rfb320.onnx"


def _nms_reference(boxes, scores, iou):
    """Brute force: walk by descending score, keep a box unless it overlaps a kept one above iou."""
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0
    keep = []
    for i in sorted(range(len(scores)), key=lambda k: (-scores[k], k)):
        if all(overlap(boxes[i], boxes[j]) <= iou for j in keep):
            keep.append(i)
    return keep


def test_nms_matches_a_brute_force_reference():
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 0.8, (60, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.3, (60, 2))], axis=1)
        scores = rng.uniform(size=60).round(2)  # ties too
        assert list(nms(boxes, scores, 0.4)) == _nms_reference(boxes, scores, 0.4)


def test_ultraface_priors():
    p = priors(320, 240)
    assert p.shape == (4420, 4)  # UltraFace RFB-320's box count
    np.testing.assert_allclose(p[0], [0.5 / 40, 0.5 / 30, 10 / 320, 10 / 240])
    assert p.min() >= 0 and p.max() <= 1


def test_selection_by_task_and_name():
    table = registry()
    assert {p.name for p in BUILTIN} <= set(table)
    ssd_out = {"detection_out": np.zeros((1, 1, 4, 7), np.float32)}
    assert pick("detect", ssd_out, {}).name == "ssd"
    heads = {"scores": np.zeros((1, 4420, 2), np.float32), "boxes": np.zeros((1, 4420, 4), np.float32)}
    assert pick("detect", heads, {"input_size": (320, 240)}).name == "ultraface"
    with pytest.raises(TidlcError, match="no detect decoder fits"):
        pick("detect", {"logits": np.zeros((1, 10), np.float32)}, {})
    with pytest.raises(TidlcError, match="unknown --post"):
        pick("yolo9", heads, {})


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="example model missing")
def test_ultraface_finds_the_face_in_a_portrait(cli, tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    face = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not face.exists():
        pytest.skip("matplotlib's sample data is not installed")
    out = tmp_path / "uf"
    code, _, err = cli("compile", ULTRAFACE, "--mean", "127", "--scale", "0.0078125", "--resize", "320,240",
                        "--calib", face, "-o", out)
    assert code == 0, err
    png = tmp_path / "det.png"
    code, text, err = cli("run", out, "--input", face, "--post", "detect", "--post-output", png)
    assert code == 0, err
    boxes = [tuple(map(float, m)) for m in
             re.findall(r"box class 1 score ([\d.]+): \(([\d.]+), ([\d.]+)\) - \(([\d.]+), ([\d.]+)\)", text)]
    assert len(boxes) == 1, text
    score, x0, y0, x1, y1 = boxes[0]
    # the face of the 512x600 portrait is around x 0.33..0.70, y 0.22..0.56
    assert score > 0.9 and 0.25 < x0 < 0.4 and 0.6 < x1 < 0.8 and 0.15 < y0 < 0.3 and 0.5 < y1 < 0.65
    assert png.stat().st_size > 1000
    code, _, err = cli("run", out, "--input", face, "--post", "nope")
    assert code == 2 and "unknown --post 'nope'" in err
