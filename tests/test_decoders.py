"""Post-processors (issue 15, item 2): NMS, SSD priors, the UltraFace decoder on a real face
(matplotlib's Grace Hopper portrait), task/name selection and the plugin hook's checks."""
from __future__ import annotations

import json
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


# ----------------------------------------------------------------------------- YOLOv5 / YOLOX grid heads
def _sig(v: float) -> float:
    import math
    return 1.0 / (1.0 + math.exp(-v))


V5_ANCHORS = ((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119), (116, 90, 156, 198, 373, 326))


def _v5_heads(planted, size=64, classes=3):
    """YOLOv5 heads [1, 3, H, W, 5+C] per stride (8, 16, 32) of logits -20 except the planted cells:
    (level, anchor, y, x, [tx, ty, tw, th, obj, *cls])."""
    heads = [np.full((1, 3, size // s, size // s, 5 + classes), -20.0, np.float32) for s in (8, 16, 32)]
    for level, anchor, y, x, values in planted:
        heads[level][0, anchor, y, x] = values
    return heads


def _v5_expected(planted, size=64):
    """The boxes of the planted cells by YOLOv5's formulas, written out per cell (sorted by score)."""
    rows = []
    for level, anchor, y, x, (tx, ty, tw, th, obj, *cls) in planted:
        stride = (8, 16, 32)[level]
        aw, ah = V5_ANCHORS[level][2 * anchor], V5_ANCHORS[level][2 * anchor + 1]
        cx, cy = (2 * _sig(tx) - 0.5 + x) * stride, (2 * _sig(ty) - 0.5 + y) * stride
        w, h = (2 * _sig(tw)) ** 2 * aw, (2 * _sig(th)) ** 2 * ah
        label = int(np.argmax(cls))
        corners = [min(max(v, 0.0), 1.0) for v in ((cx - w / 2) / size, (cy - h / 2) / size,
                                                     (cx + w / 2) / size, (cy + h / 2) / size)]
        rows.append([0, label, _sig(obj) * _sig(cls[label]), *corners])  # clipped to the image
    return sorted(rows, key=lambda r: -r[2])


PLANTED_V5 = [(0, 1, 2, 5, [0.3, -0.2, 0.1, 0.5, 3.0, -5, 4, -5]),     # class 1 at stride 8
              (2, 0, 1, 0, [0.0, 0.4, -0.3, 0.2, 2.0, -5, -5, 1.5]),    # class 2 at stride 32
              (1, 0, 1, 2, [0.1, 0.1, 0.0, 0.0, 1.0, 2.0, -5, -5])]     # class 0 at stride 16


def test_yolov5_grid_heads_decode_to_the_formulas():
    heads = _v5_heads(PLANTED_V5)
    options = {"input_size": (64, 64), "threshold": 0.25}
    got = pick("yolov5", {f"p{i}": h for i, h in enumerate(heads)}, options).decode(
        {f"p{i}": h for i, h in enumerate(heads)}, options)
    np.testing.assert_allclose(got, _v5_expected(PLANTED_V5), rtol=1e-6, atol=1e-9)
    # the conv layout [1, A*(5+C), H, W] (channel = anchor * (5+C) + k) decodes the same
    flat = {f"p{i}": h[0].transpose(0, 3, 1, 2).reshape(1, -1, *h.shape[2:4]) for i, h in enumerate(heads)}
    np.testing.assert_allclose(pick("detect", flat, options).decode(flat, options), got)
    assert pick("detect", flat, options).name == "yolov5"


def test_the_yolov5_export_with_detect_in_the_graph_decodes_alike():
    """Ultralytics' default export keeps Detect: one [1, N, 5+C] of boxes in input pixels (centre, size)
    and sigmoid scores, N = 3 anchors x the cells of strides 8, 16, 32; it was no decoder's."""
    rows = []
    for level, h in enumerate(_v5_heads(PLANTED_V5)):
        stride, s = (8, 16, 32)[level], 1 / (1 + np.exp(-h[0].astype(np.float64)))
        a, gh, gw, _ = s.shape
        cy, cx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
        anchors = np.asarray(V5_ANCHORS[level], np.float64).reshape(3, 2)
        xy = np.stack([(s[..., 0] * 2 - 0.5 + cx) * stride, (s[..., 1] * 2 - 0.5 + cy) * stride], -1)
        wh = (s[..., 2:4] * 2) ** 2 * anchors[:, None, None, :]
        rows.append(np.concatenate([xy, wh, s[..., 4:]], -1).reshape(a * gh * gw, -1))
    out = {"output0": np.concatenate(rows)[None].astype(np.float32)}
    options = {"input_size": (64, 64), "threshold": 0.25}
    assert out["output0"].shape == (1, 3 * (64 + 16 + 4), 8) and pick("detect", out, options).name == "yolov5"
    np.testing.assert_allclose(pick("detect", out, options).decode(out, options), _v5_expected(PLANTED_V5),
                               rtol=1e-5, atol=1e-6)


def test_the_yolov8_export_decodes_boxes_and_class_scores():
    """Ultralytics YOLOv8 / YOLO11: [1, 4+C, N], N the cells of strides 8, 16, 32, no objectness."""
    n, classes = 64 + 16 + 4, 3
    out = np.zeros((1, 4 + classes, n), np.float32)
    out[0, :, 10] = [20, 24, 16, 8, 0.1, 0.9, 0.2]  # class 1, 0.9
    out[0, :, 70] = [60, 10, 30, 40, 0.7, 0.1, 0.05]  # class 0, 0.7, clipped at the right and top
    out[0, :, 71] = [21, 24, 16, 8, 0.1, 0.6, 0.2]  # a weaker copy of the first: NMS removes it
    heads, options = {"output0": out}, {"input_size": (64, 64), "threshold": 0.25}
    assert pick("detect", heads, options).name == "yolov8"
    expected = [[0, 1, 0.9, 12 / 64, 20 / 64, 28 / 64, 28 / 64], [0, 0, 0.7, 45 / 64, 0.0, 1.0, 30 / 64]]
    np.testing.assert_allclose(pick("detect", heads, options).decode(heads, options), expected, rtol=1e-6)
    assert len(pick("yolov8{iou=0.99}", heads, options).decode(heads, options)) == 3


def test_yolov5_nms_threshold_objectness_and_anchors():
    # a weaker copy of the first box from the next cell (its offset pulls it back; IoU ~0.9, same
    # class): NMS removes it; of another class it stays
    shifted = [(0, 1, 2, 6, [-2.0, -0.2, 0.1, 0.5, 2.0, -5, 4, -5]),
               (0, 1, 2, 6, [-2.0, -0.2, 0.1, 0.5, 2.0, 4, -5, -5])]
    planted = PLANTED_V5[:1] + shifted[:1]
    heads = {f"p{i}": h for i, h in enumerate(_v5_heads(planted))}
    options = {"input_size": (64, 64), "threshold": 0.25}
    got = pick("yolov5", heads, options).decode(heads, options)
    np.testing.assert_allclose(got, _v5_expected(PLANTED_V5[:1]), rtol=1e-6)
    kept = pick("yolov5{iou=0.99}", heads, options).decode(heads, options)  # no overlap is that high
    assert len(kept) == 2
    other = {f"p{i}": h for i, h in enumerate(_v5_heads(PLANTED_V5[:1] + [(0, 1, 2, 6, shifted[1][4])]))}
    assert sorted(pick("yolov5", other, options).decode(other, options)[:, 1]) == [0, 1]
    # objectness=false: the class score alone; a threshold above every score: nothing
    no_obj = pick("yolov5{objectness=false}", heads, options).decode(heads, options)
    assert no_obj[0, 2] == pytest.approx(_sig(4))
    assert pick("yolov5", heads, {**options, "threshold": 0.99}).decode(heads, {**options, "threshold": 0.99}).size == 0
    # anchors given as options: the first level's anchor 1 twice as large, twice as wide a box
    anchors = [[10, 13, 32, 60, 33, 23], list(V5_ANCHORS[1]), list(V5_ANCHORS[2])]
    single = {f"p{i}": h for i, h in enumerate(_v5_heads(PLANTED_V5[:1]))}
    base = pick("yolov5", single, options).decode(single, options)[0]
    spec = "yolov5{anchors=" + json.dumps(anchors).replace(" ", "") + "}"
    big = pick(spec, single, options).decode(single, options)[0]
    np.testing.assert_allclose((big[5] - big[3]) * 64, 2 * (base[5] - base[3]) * 64, rtol=1e-9)


def _yolox_heads(planted, size=64, classes=2):
    """YOLOX heads [1, 5+C, H, W] per stride (8, 16, 32): reg 0, obj/cls logits -20, except the planted
    (level, y, x, [rx, ry, rw, rh, obj, *cls])."""
    heads = [np.zeros((1, 5 + classes, size // s, size // s), np.float32) for s in (8, 16, 32)]
    for h in heads:
        h[:, 4:] = -20.0
    for level, y, x, values in planted:
        heads[level][0, :, y, x] = values
    return heads


PLANTED_X = [(1, 1, 2, [0.4, 0.6, float(np.log(3)), float(np.log(2)), 2.0, -4, 3]),
             (0, 5, 3, [0.5, 0.5, 0.0, 0.5, 1.0, 2.5, -4])]


def test_yolox_heads_and_the_flat_export_decode_to_the_formulas():
    heads = {f"x{i}": h for i, h in enumerate(_yolox_heads(PLANTED_X))}
    options = {"input_size": (64, 64), "threshold": 0.1}
    expected = []
    for level, y, x, (rx, ry, rw, rh, obj, *cls) in PLANTED_X:
        stride = (8, 16, 32)[level]
        cx, cy, w, h = (rx + x) * stride, (ry + y) * stride, np.exp(rw) * stride, np.exp(rh) * stride
        label = int(np.argmax(cls))
        expected.append([0, label, _sig(obj) * _sig(cls[label]), (cx - w / 2) / 64, (cy - h / 2) / 64,
                         (cx + w / 2) / 64, (cy + h / 2) / 64])
    expected.sort(key=lambda r: -r[2])
    assert pick("detect", heads, options).name == "yolox"  # 7 channels: not 3 anchors x (5 + C)
    got = pick("yolox", heads, options).decode(heads, options)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)
    # the export's [1, N, 5+C]: grids concatenated row by row, objectness and classes already sigmoid
    rows = np.concatenate([h[0].reshape(7, -1).T for h in heads.values()])
    rows[:, 4:] = 1 / (1 + np.exp(-rows[:, 4:].astype(np.float64)))
    flat = {"output": rows[None].astype(np.float32)}
    np.testing.assert_allclose(pick("detect", flat, options).decode(flat, options), expected, rtol=1e-5, atol=1e-7)
    shifted = pick("yolox{label_offset=1,max_detections=1}", heads, options).decode(heads, options)
    assert shifted.shape == (1, 7) and shifted[0, 1] == expected[0][1] + 1


def test_decoder_specs_and_their_errors():
    from tidlc.decoders import split_spec, task_of
    assert split_spec("yolov5{classes=80, iou=0.5,strides=[8,16,32],sigmoid=false}") == \
        ("yolov5", {"classes": 80, "iou": 0.5, "strides": [8, 16, 32], "sigmoid": False})
    assert split_spec("ssd") == ("ssd", {}) and task_of("yolox{iou=0.6}") == "detect"
    heads = {f"p{i}": h for i, h in enumerate(_v5_heads(PLANTED_V5))}
    with pytest.raises(TidlcError, match="unknown option 'clases'.*did you mean 'classes'"):
        pick("yolov5{clases=3}", heads, {})
    with pytest.raises(TidlcError, match="needs a value"):
        split_spec("yolov5{iou}")
    with pytest.raises(TidlcError, match="closing"):
        split_spec("yolov5{iou=0.5")
    with pytest.raises(TidlcError, match="options go with a decoder's name"):
        pick("detect{iou=0.5}", heads, {"input_size": (64, 64)})
    with pytest.raises(TidlcError, match="anchors"):
        pick("yolov5{anchors=[[1,2,3]]}", heads, {"input_size": (64, 64)}).decode(heads, {"input_size": (64, 64)})
    with pytest.raises(TidlcError, match="yolov5 decoder needs one"):
        pick("yolov5{classes=7}", heads, {"input_size": (64, 64)}).decode(heads, {"input_size": (64, 64)})


@pytest.fixture(scope="module")
def tiny_yolox(tmp_path_factory):
    """An ONNX model with YOLOX-shaped heads (random weights): 64x64 RGB, five 3x3 stride-2 conv+ReLU,
    1x1 heads after the 3rd, 4th and 5th -> [1, 7, 8, 8], [1, 7, 4, 4], [1, 7, 2, 2] (strides 8, 16,
    32; 2 classes); and six 64x64 images of coloured blobs."""
    cv2 = pytest.importorskip("cv2")
    from onnx import TensorProto, helper, numpy_helper, save
    rng = np.random.default_rng(11)
    nodes, inits, outs, x, cin = [], [], [], "image", 3
    for k in range(5):
        w = rng.normal(0, np.sqrt(2.0 / (9 * cin)), (8, cin, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes += [helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1]), helper.make_node("Relu", [f"c{k}"], [f"r{k}"])]
        x, cin = f"r{k}", 8
        if k >= 2:
            stride = 2 ** (k + 1)
            inits += [numpy_helper.from_array(rng.normal(0, 0.6, (7, 8, 1, 1)).astype(np.float32), f"h{stride}"),
                      numpy_helper.from_array(np.array([0, 0, 0, 0, 1.0, 0, 0], np.float32), f"b{stride}")]
            nodes.append(helper.make_node("Conv", [x, f"h{stride}", f"b{stride}"], [f"head{stride}"]))
            outs.append(helper.make_tensor_value_info(f"head{stride}", TensorProto.FLOAT,
                                                      [1, 7, 64 // stride, 64 // stride]))
    graph = helper.make_graph(nodes, "yolox_tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                   [1, 3, 64, 64])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    root = tmp_path_factory.mktemp("yolox")
    save(model, str(root / "yolox.onnx"))
    (root / "images").mkdir()
    for n in range(6):
        img = rng.integers(0, 80, (64, 64, 3)).astype(np.uint8)
        for _ in range(3):
            x, y = rng.integers(0, 48, 2)
            img[y:y + rng.integers(8, 16), x:x + rng.integers(8, 16)] = rng.integers(0, 256, 3)
        cv2.imwrite(str(root / "images" / f"{n}.png"), img)
    return root


def test_run_post_yolox_by_name_with_options(cli, tiny_yolox, tmp_path):
    out = tmp_path / "out"
    code, _, err = cli("compile", tiny_yolox / "yolox.onnx", "--scale", "0.0039", "--calib", tiny_yolox / "images",
                       "-o", out)
    assert code == 0, err
    image = tiny_yolox / "images" / "0.png"
    run = ("run", out, "--input", image, "--kernels", "numpy")
    code, text, err = cli(*run, "--post", "yolox{classes=2,iou=0.5}", "--threshold", "0.3",
                          "--post-output", tmp_path / "boxes.png")
    assert code == 0, err
    assert "box class" in text and (tmp_path / "boxes.png").stat().st_size > 500
    code, _, err = cli(*run, "--post", "yolox{classes=3}")
    assert code == 2 and "yolox decoder needs" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(*run, "--post", "yolox{nms=0.5}")
    assert code == 2 and "unknown option 'nms'" in err


def _greedy_matches(reference, test, iou=0.5):
    """Box matching written out: test boxes by descending score take the best-overlapping unmatched
    reference box of their class, if the IoU is at least ``iou``."""
    def overlap(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
        return w * h / union if union > 0 else 0.0
    taken, count = set(), 0
    for i in sorted(range(len(test)), key=lambda k: (-test[k][2], k)):
        best, best_iou = None, iou
        for j, r in enumerate(reference):
            if j not in taken and r[1] == test[i][1] and overlap(test[i][3:], r[3:]) >= best_iou:
                best, best_iou = j, overlap(test[i][3:], r[3:])
        if best is not None:
            taken.add(best)
            count += 1
    return count


def test_eval_detector_agreement_without_labels(cli, tiny_yolox):
    """--task detect on unlabeled images: each precision's boxes against float's, recomputed here."""
    code, out, err = cli("eval", tiny_yolox / "yolox.onnx", "--task", "detect", "--data", tiny_yolox / "images",
                         "--decoder", "yolox{classes=2}", "--score-threshold", "0.3", "--scale", "0.0039",
                         "--calib", tiny_yolox / "images", "--json", "-")
    assert code == 0, err
    doc = json.loads(out)
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads((Path(__file__).resolve().parents[1] / "docs" / "schemas" /
                                         "tidlc.eval-1.json").read_text()))
    assert doc["task"] == "detect" and not doc["labeled"] and doc["breakdown"]["by"] == "image"
    rows = {r["precision"]: r for r in doc["rows"]}
    assert rows["float"]["precision_vs_float"] == rows["float"]["recall_vs_float"] == 1.0
    assert rows["float"]["detections"] > 10
    from tidlc.config import CompileOptions
    from tidlc.evaluate import _frames
    from tidlc.evaluate_tasks import runners
    options = CompileOptions.of(scale=(0.0039,), calib=str(tiny_yolox / "images"))
    run = runners(str(tiny_yolox / "yolox.onnx"), options)
    images = sorted(str(p) for p in (tiny_yolox / "images").glob("*.png"))
    feeds = _frames(run.graph, options, images)
    dec = {"input_size": (64, 64), "threshold": 0.3}
    decoded = {p: [pick("yolox", o, dec).decode(o, dec).tolist() for o in map(run.make(p), feeds)]
               for p in ("float", "8")}
    matched = sum(_greedy_matches(f, q) for f, q in zip(decoded["float"], decoded["8"]))
    found, reference = sum(map(len, decoded["8"])), sum(map(len, decoded["float"]))
    assert rows["8"]["detections"] == found and rows["8"]["matched"] == matched
    assert rows["8"]["precision_vs_float"] == round(matched / found, 4)
    assert rows["8"]["recall_vs_float"] == round(matched / reference, 4)
    assert rows["16"]["recall_vs_float"] >= rows["8"]["recall_vs_float"] - 0.05
    code, text, err = cli("eval", tiny_yolox / "yolox.onnx", "--task", "detect", "--data", tiny_yolox / "images",
                          "--decoder", "yolox", "--scale", "0.0039", "--precision", "float,8")
    assert code == 0, err
    assert "matched" in text and "prec/fp" in text and "IoU >= 0.5" in text
