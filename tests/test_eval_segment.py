"""`tidlc eval --task segment` (issue 15): mIoU and pixel accuracy per precision on a small segmentation
set built here (coloured rectangles on a dark noisy background, PNG label masks with a 255 border
band), against a numpy reference computed class by class from onnxruntime's float predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
onnx = pytest.importorskip("onnx")

SIZE = 24
CLASSES = 4  # 0 background, 1 red, 2 green, 3 blue
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "schemas" / "tidlc.eval-1.json"


def _valid(doc: dict) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
    return doc


def _model(path: Path, argmax: bool = False) -> None:
    """A per-pixel classifier: 3x3 conv (3 -> 8, colour channels kept, a little blur and noise), ReLU,
    1x1 conv to 4 class logits (background: a constant; class c: 2 x colour c - the others)."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(7)
    w1 = rng.normal(0, 0.02, (8, 3, 3, 3)).astype(np.float32)
    for c in range(3):
        w1[c, c] += 0.05
        w1[c, c, 1, 1] += 0.55
    b1 = np.zeros(8, np.float32)
    w2 = rng.normal(0, 0.05, (CLASSES, 8, 1, 1)).astype(np.float32)
    for c in range(3):
        w2[c + 1, :3, 0, 0] = -1.0
        w2[c + 1, c, 0, 0] = 2.0
    b2 = np.array([0.45, 0, 0, 0], np.float32)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Conv", ["r", "w2", "b2"], ["logits"])]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES, SIZE, SIZE])
    if argmax:  # the classes themselves, as a Caffe ArgMax layer gives them: [1, 1, H, W]
        nodes.append(helper.make_node("ArgMax", ["logits"], ["classes"], axis=1, keepdims=1))
        output = helper.make_tensor_value_info("classes", TensorProto.INT64, [1, 1, SIZE, SIZE])
    graph = helper.make_graph(
        nodes, "seg", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])], [output],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"),
         numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def segset(tmp_path_factory) -> Path:
    """model.onnx, images/NN.png (RGB rectangles), masks/NN.png (class per pixel, 255 on the
    rectangles' 1-pixel outline; some masks also claim a patch the image does not show)."""
    root = tmp_path_factory.mktemp("seg")
    _model(root / "model.onnx")
    _model(root / "argmax.onnx", argmax=True)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    rng = np.random.default_rng(3)
    for n in range(10):
        rgb = rng.integers(0, 60, (SIZE, SIZE, 3)).astype(np.uint8)
        mask = np.zeros((SIZE, SIZE), np.uint8)
        for _ in range(3):
            c = int(rng.integers(1, CLASSES))
            x0, y0 = rng.integers(0, SIZE - 6, 2)
            x1, y1 = x0 + rng.integers(4, 12), y0 + rng.integers(4, 12)
            rgb[y0:y1, x0:x1] = rng.integers(0, 70, 3)
            rgb[y0:y1, x0:x1, c - 1] = rng.integers(150, 256)
            mask[y0:y1, x0:x1] = c
            outline = np.zeros_like(mask, bool)
            outline[max(y0 - 1, 0):y1 + 1, max(x0 - 1, 0):x1 + 1] = True
            outline[y0 + 1:y1 - 1, x0 + 1:x1 - 1] = False
            mask[outline] = 255
        if n % 3 == 0:  # a label the image does not show: the metrics must be below 1
            mask[0:3, 0:5] = 2
        cv2.imwrite(str(root / "images" / f"{n:02d}.png"), rgb[:, :, ::-1])
        cv2.imwrite(str(root / "masks" / f"{n:02d}.png"), mask)
    return root


def _reference_scores(predictions, masks) -> tuple[float, float, list]:
    """mIoU, pixel accuracy and IoU per class, counted class by class (no confusion matrix code shared
    with tidlc): IoU = TP / (TP + FP + FN) over the pixels whose mask is not 255."""
    valid = [m != 255 for m in masks]
    ious = []
    for c in range(CLASSES):
        tp = sum(int(((p == c) & (m == c) & v).sum()) for p, m, v in zip(predictions, masks, valid))
        fp = sum(int(((p == c) & (m != c) & v).sum()) for p, m, v in zip(predictions, masks, valid))
        fn = sum(int(((p != c) & (m == c) & v).sum()) for p, m, v in zip(predictions, masks, valid))
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else None)
    present = [i for i in ious if i is not None]
    correct = sum(int(((p == m) & v).sum()) for p, m, v in zip(predictions, masks, valid))
    return sum(present) / len(present), correct / sum(int(v.sum()) for v in valid), ious


def _ort_predictions(segset: Path) -> list[np.ndarray]:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(segset / "model.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for path in sorted((segset / "images").glob("*.png")):
        x = cv2.imread(str(path))[:, :, ::-1].astype(np.float32) / 255.0  # RGB, --scale 1/255
        logits = session.run(None, {"image": x.transpose(2, 0, 1)[None].copy()})[0][0]
        top2 = np.sort(logits, axis=0)[-2:]
        assert (top2[1] - top2[0]).min() > 1e-5  # no near-ties: the float interpreter must agree exactly
        out.append(logits.argmax(axis=0))
    return out


def _masks(segset: Path) -> list[np.ndarray]:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((segset / "masks").glob("*.png"))]


def _eval(cli, segset, *extra, model="model.onnx"):
    return cli("eval", segset / model, "--task", "segment", "--data", segset / "images",
               "--scale", str(1 / 255), "--calib", segset / "images", *extra)


def test_miou_and_pixel_accuracy_match_a_numpy_reference(cli, segset):
    code, out, err = _eval(cli, segset, "--masks", segset / "masks", "--json", "-")
    assert code == 0, err
    doc = _valid(json.loads(out))
    assert doc["task"] == "segment" and doc["labeled"] and doc["schema"] == "tidlc.eval/1"
    rows = {r["precision"]: r for r in doc["rows"]}
    assert set(rows) == {"float", "8", "16"} and all(r["frames"] == 10 for r in rows.values())
    miou, acc, ious = _reference_scores(_ort_predictions(segset), _masks(segset))
    assert 0.5 < miou < 1.0 and 0.8 < acc < 1.0  # the planted wrong labels cost something
    assert rows["float"]["miou"] == round(miou, 4) and rows["float"]["pixel_accuracy"] == round(acc, 4)
    assert doc["breakdown"]["by"] == "class" and doc["breakdown"]["metric"] == "iou"
    assert doc["breakdown"]["values"]["float"] == [None if i is None else round(i, 4) for i in ious]
    # the quantized rows: the same reference over tidlc's own 8-bit predictions
    from tidlc.config import CompileOptions
    from tidlc.evaluate import _frames
    from tidlc.evaluate_tasks import runners
    options = CompileOptions.of(scale=(1 / 255,), calib=str(segset / "images"))
    run = runners(str(segset / "model.onnx"), options)
    execute = run.make("8")
    images = sorted(str(p) for p in (segset / "images").glob("*.png"))
    predicted = [np.asarray(execute(f)["logits"])[0].argmax(axis=0) for f in _frames(run.graph, options, images)]
    miou8, acc8, _ = _reference_scores(predicted, _masks(segset))
    assert rows["8"]["miou"] == round(miou8, 4) and rows["8"]["pixel_accuracy"] == round(acc8, 4)
    assert rows["8"]["miou_delta"] == round(rows["8"]["miou"] - rows["float"]["miou"], 4)
    assert abs(rows["8"]["miou_delta"]) < 0.05 and abs(rows["16"]["miou_delta"]) < 0.01
    # agreement with float: the pixels where 8-bit and onnxruntime's float predictions are equal
    float_pred = _ort_predictions(segset)
    agree = sum(int((p == f).sum()) for p, f in zip(predicted, float_pred)) / (10 * SIZE * SIZE)
    assert rows["8"]["pixel_agreement"] == round(agree, 4) and rows["float"]["pixel_agreement"] == 1.0


def test_an_argmax_output_scores_the_same(cli, segset):
    """A one-channel output that already holds the classes (Caffe ArgMax): the classes are not the
    channel count but those seen in predictions and masks; the metrics equal the score map's."""
    docs = []
    for model in ("model.onnx", "argmax.onnx"):
        code, out, err = _eval(cli, segset, "--masks", segset / "masks", "--precision", "float,8", "--json", "-",
                               model=model)
        assert code == 0, err
        docs.append(json.loads(out))
    assert [{k: v for k, v in r.items() if k != "fps"} for r in docs[0]["rows"]] == \
        [{k: v for k, v in r.items() if k != "fps"} for r in docs[1]["rows"]]
    assert docs[0]["breakdown"] == docs[1]["breakdown"]


def test_text_table_and_unlabeled_agreement(cli, segset):
    code, out, err = _eval(cli, segset, "--masks", segset / "masks", "--precision", "float,8")
    assert code == 0, err
    assert "mIoU" in out and "pix acc" in out and "ignore index 255" in out
    code, out, err = _eval(cli, segset, "--precision", "float,8", "--json", "-")
    assert code == 0, err
    doc = _valid(json.loads(out))
    assert not doc["labeled"] and all(r["miou"] is None for r in doc["rows"])
    assert doc["rows"][0]["pixel_agreement"] == 1.0 and doc["rows"][0]["miou_vs_float"] == 1.0
    assert 0.9 < doc["rows"][1]["pixel_agreement"] <= 1.0 and doc["breakdown"]["metric"] == "iou_vs_float"


def test_mask_geometry_follows_resize_and_crop(segset):
    """A mask goes through --resize and the centre crop with nearest-neighbour sampling, then to the
    output size."""
    from tidlc.evaluate_tasks import fit_mask
    from tidlc.preprocess import Preprocess
    mask = np.arange(40 * 60).reshape(40, 60) % 7
    got = fit_mask(mask, Preprocess(resize=(30, 20), crop=(20, 10)), (20, 10), (10, 20))
    want = cv2.resize(mask.astype(np.uint8), (30, 20), interpolation=cv2.INTER_NEAREST)[5:15, 5:25]
    np.testing.assert_array_equal(got, want)
    half = fit_mask(mask, Preprocess(), (60, 40), (20, 30))  # the output at half the input size
    np.testing.assert_array_equal(half, cv2.resize(mask.astype(np.uint8), (30, 20), interpolation=cv2.INTER_NEAREST))


def test_confusion_metrics_on_a_hand_made_case():
    from tidlc.metrics import class_iou, confusion, mean_iou, pixel_accuracy
    target = np.array([[0, 0, 1, 255], [2, 2, 1, 1]])
    predicted = np.array([[0, 1, 1, 0], [2, 0, 1, 2]])
    m = confusion(predicted, target, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 1], [1, 0, 1]]
    # IoU: class 0: 1 / (1 + 1 + 1); class 1: 2 / (2 + 1 + 1); class 2: 1 / (1 + 1 + 1)
    np.testing.assert_allclose(class_iou(m), [1 / 3, 1 / 2, 1 / 3])
    assert mean_iou(m) == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3) and pixel_accuracy(m) == 4 / 7
    assert np.isnan(class_iou(confusion(predicted, target, 4))[3])  # a class nobody has: no IoU


def test_bad_masks_are_one_line_errors(cli, segset, tmp_path):
    masks = tmp_path / "masks"
    masks.mkdir()
    for p in sorted((segset / "masks").glob("*.png"))[1:]:
        (masks / p.name).write_bytes(p.read_bytes())
    code, _, err = _eval(cli, segset, "--masks", masks, "--precision", "float")
    assert code == 2 and "no mask for 00.png" in err and len(err.strip().splitlines()) == 1
    cv2.imwrite(str(masks / "00.png"), np.full((SIZE, SIZE), 9, np.uint8))
    code, _, err = _eval(cli, segset, "--masks", masks, "--precision", "float")
    assert code == 2 and "label 9 but the model has 4 classes" in err and len(err.strip().splitlines()) == 1
    code, _, err = _eval(cli, segset, "--masks", masks / "nope")
    assert code == 2 and "--masks: not a folder" in err


def test_palette_and_16_bit_masks_are_read_as_indices(tmp_path):
    """PASCAL VOC's masks are palette PNGs: their indices are the classes, not the colours."""
    image = pytest.importorskip("PIL.Image")
    from tidlc.evaluate_tasks import read_mask
    labels = (np.arange(12 * 16).reshape(12, 16) % 5).astype(np.uint8)
    labels[0, :4] = 255
    pal = image.fromarray(labels, mode="P")
    pal.putpalette([v for c in range(256) for v in ((c * 37) % 256, (c * 91) % 256, (c * 53) % 256)])
    pal.save(tmp_path / "voc.png")
    assert cv2.imread(str(tmp_path / "voc.png")).ndim == 3  # OpenCV alone would see colours
    np.testing.assert_array_equal(read_mask(str(tmp_path / "voc.png")), labels)
    wide = np.where(labels == 255, 1000, labels.astype(np.int64) * 300)  # 16-bit class indices
    cv2.imwrite(str(tmp_path / "wide.png"), wide.astype(np.uint16))
    np.testing.assert_array_equal(read_mask(str(tmp_path / "wide.png")), wide)
    cv2.imwrite(str(tmp_path / "rgb.png"), np.dstack([labels] * 3))
    from tidlc.diagnostics import TidlcError
    with pytest.raises(TidlcError, match="the mask is a colour image"):
        read_mask(str(tmp_path / "rgb.png"))
