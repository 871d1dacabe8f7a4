"""`tidlc eval` (issue 15, items 1 and 2): accuracy per precision on labeled data, agreement with
float on unlabeled data, COCO mAP and per-class AP, --plot, the tidlc.eval/1 document and its schema."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

LENET = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "caffe" / "lenet_mnist"
pytestmark = pytest.mark.skipif(not LENET.is_dir(), reason="shared corpus not available")
SCHEMA = json.loads((Path(__file__).resolve().parents[1] / "docs" / "schemas" / "tidlc.eval-1.json").read_text())


def _valid(doc: dict) -> dict:
    """``doc`` after checking it against docs/schemas/tidlc.eval-1.json."""
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, SCHEMA)
    return doc


def _lenet(*extra):
    return ("eval", LENET / "mnist_deploy.prototxt", "--weights", LENET / "lenet_iter_10000.caffemodel",
            "--scale", "0.00390625", *extra)


@pytest.fixture
def labeled(tmp_path) -> Path:
    """The ten MNIST samples (named img_LABEL_N.png) as a 'path label' list."""
    listing = tmp_path / "mnist.txt"
    listing.write_text("".join(f"{p} {p.name.split('_')[1]}\n" for p in sorted((LENET / "samples").glob("*.png"))))
    return listing


def test_labeled_list_reports_accuracy_per_precision(cli, labeled, tmp_path):
    code, out, err = cli(*_lenet("--data", labeled, "--calib", labeled, "--json", "-"))
    assert code == 0, err
    doc = _valid(json.loads(out))
    assert doc["schema"] == "tidlc.eval/1" and doc["labeled"] and doc["task"] == "classify"
    rows = {r["precision"]: r for r in doc["rows"]}
    assert set(rows) == {"float", "8", "16"} and all(r["frames"] == 10 for r in rows.values())
    assert rows["float"]["top1"] == 1.0  # LeNet reads its own samples right
    assert rows["16"]["top1_agreement"] == 1.0 and rows["16"]["snr_db"] > rows["8"]["snr_db"]
    assert rows["8"]["top1_delta"] == rows["8"]["top1"] - 1.0


def test_class_folders_and_the_text_table(cli, labeled, tmp_path):
    data = tmp_path / "classes"
    for line in labeled.read_text().splitlines():
        path, label = line.split()
        (data / f"class{label}").mkdir(parents=True, exist_ok=True)
        shutil.copy(path, data / f"class{label}")
    code, out, err = cli(*_lenet("--data", data, "--precision", "float,8", "--json", tmp_path / "e.json"))
    assert code == 0, err
    assert "float" in out and "top-1" in out and "wrote" in out
    doc = json.loads((tmp_path / "e.json").read_text())
    # folder labels are the sorted folder indices (the samples miss some digits, so index != digit)
    digits = sorted({int(line.split()[1]) for line in labeled.read_text().splitlines()})
    want = sum(digits.index(int(line.split()[1])) == int(line.split()[1])
               for line in labeled.read_text().splitlines()) / 10
    assert [r["precision"] for r in doc["rows"]] == ["float", "8"] and doc["rows"][0]["top1"] == want
    assert doc["labeled"] and doc["rows"][1]["top1_agreement"] == 1.0


def test_unlabeled_images_give_agreement_only(cli, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    for p in sorted((LENET / "samples").glob("*.png"))[:4]:
        shutil.copy(p, data)
    code, out, err = cli(*_lenet("--data", data, "--precision", "float,16", "--json", "-"))
    assert code == 0, err
    doc = _valid(json.loads(out))
    assert not doc["labeled"] and all(r["top1"] is None for r in doc["rows"])
    assert doc["breakdown"]["metric"] == "agreement"
    assert doc["rows"][1]["top1_agreement"] == 1.0


def test_a_bad_precision_is_a_one_line_error(cli, labeled):
    code, _, err = cli(*_lenet("--data", labeled, "--precision", "float,12"))
    assert code == 2 and "--precision 12" in err and len(err.strip().splitlines()) == 1


def digits_listing(folder: Path) -> Path:
    """scikit-learn's digits as 28x28 PNGs in ``folder`` and a 'path label' list beside them
    (benchmarks/eval_scaling.py uses it too)."""
    import cv2
    from sklearn.datasets import load_digits
    d = load_digits()
    lines = []
    for i, (img, label) in enumerate(zip(d.images, d.target)):
        big = cv2.resize((img * (255.0 / 16.0)).astype(np.float32), (20, 20), interpolation=cv2.INTER_LINEAR)
        canvas = np.zeros((28, 28), np.uint8)
        canvas[4:24, 4:24] = np.clip(np.rint(big), 0, 255).astype(np.uint8)
        path = folder / f"{i:04d}.png"
        cv2.imwrite(str(path), canvas)
        lines.append(f"{path} {int(label)}")
    listing = folder / "digits.txt"
    listing.write_text("\n".join(lines) + "\n")
    return listing


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """scikit-learn's 1,797 labeled handwritten digits (8x8, 0..16) as 28x28 PNGs, MNIST style:
    the digit scaled to 20x20 and centred, white on black; a 'path label' list beside them."""
    datasets = pytest.importorskip("sklearn.datasets")
    pytest.importorskip("cv2")
    listing = digits_listing(tmp_path_factory.mktemp("digits"))
    d = datasets.load_digits()
    return listing, d.target


def test_sklearn_digits_through_lenet(cli, digits, tmp_path):
    """Real labeled data: 8-bit top-1 within 1 point of float, and float's top-1 equal to a direct
    numpy computation over the interpreter's outputs."""
    from tidlc.compiler import load, optimize
    from tidlc.config import CompileOptions
    from tidlc.evaluate import _frames, dataset
    from tidlc.interp import Interpreter
    listing, target = digits
    code, out, err = cli(*_lenet("--data", listing, "--calib", listing, "--calib-frames", "64", "--json", "-"))
    assert code == 0, err
    rows = {r["precision"]: r for r in json.loads(out)["rows"]}
    assert rows["float"]["frames"] == len(target) == 1797
    assert abs(rows["8"]["top1"] - rows["float"]["top1"]) <= 0.01, rows
    assert abs(rows["16"]["top1"] - rows["float"]["top1"]) <= 0.001, rows
    options = CompileOptions.of(weights=str(LENET / "lenet_iter_10000.caffemodel"), scale=(0.00390625,), emit="ir")
    graph = load(str(LENET / "mnist_deploy.prototxt"), options)
    optimize(graph, options)
    images, labels = dataset(str(listing))
    interp = Interpreter(graph)
    predicted = [int(np.argmax(next(iter(interp.run(f).values())))) for f in _frames(graph, options, images)]
    assert rows["float"]["top1"] == float(np.mean(np.array(predicted) == np.array(labels)))
    print(f"sklearn digits through LeNet: top-1 float {rows['float']['top1']:.4f}, 8-bit {rows['8']['top1']:.4f}, "
          f"16-bit {rows['16']['top1']:.4f}")


def test_two_workers_give_identical_metrics(cli, digits):
    listing, _ = digits
    docs = []
    for workers in ("1", "2"):
        code, out, err = cli(*_lenet("--data", listing, "--frames", "300", "--calib", listing,
                                      "--calib-frames", "32", "--workers", workers, "--json", "-"))
        assert code == 0, err
        docs.append([{k: v for k, v in r.items() if k != "fps"} for r in json.loads(out)["rows"]])
    assert docs[0] == docs[1]


ULTRAFACE = Path(__file__).resolve().parents[1] / "examples" / "ultraface" / "ultraface-rfb320.onnx"


def test_coco_map_is_pycocotools_own(tmp_path):
    pytest.importorskip("pycocotools")
    from tidlc.evaluate import coco_map
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600,
                           "iscrowd": 0}], "categories": [{"id": 1, "name": "face"}]}
    perfect = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [10, 10, 40, 40]}]
    shifted = [{"image_id": 1, "category_id": 1, "score": 0.9, "bbox": [20, 20, 40, 40]}]  # IoU 0.39
    assert coco_map(gt, perfect) == pytest.approx((1.0, 1.0), abs=1e-12)
    assert coco_map(gt, shifted) == (0.0, 0.0)
    assert coco_map(gt, []) == (0.0, 0.0)


@pytest.mark.skipif(not ULTRAFACE.exists(), reason="example model missing")
def test_detector_map_on_a_small_coco_set(cli, tmp_path):
    """UltraFace on a COCO-format set: a portrait (one face) and three CIFAR samples (none)."""
    pytest.importorskip("pycocotools")
    cv2 = pytest.importorskip("cv2")
    matplotlib = pytest.importorskip("matplotlib")
    face = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not face.exists():
        pytest.skip("matplotlib's sample data is not installed")
    files = [face, *sorted((LENET.parent / "cifar10_quick" / "samples").glob("*.png"))]
    images = []
    for i, f in enumerate(files, 1):
        shutil.copy(f, tmp_path / f.name)
        h, w = cv2.imread(str(f)).shape[:2]
        images.append({"id": i, "file_name": f.name, "width": w, "height": h})
    coco = {"images": images, "categories": [{"id": 1, "name": "face"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [170, 135, 185, 200],
                             "area": 37000, "iscrowd": 0}]}
    (tmp_path / "faces.json").write_text(json.dumps(coco))
    code, out, err = cli("eval", ULTRAFACE, "--task", "detect", "--data", tmp_path / "faces.json", "--mean", "127",
                          "--scale", "0.0078125", "--resize", "320,240", "--calib", face, "--precision", "float,8",
                          "--json", "-")
    assert code == 0, err
    doc = _valid(json.loads(out))
    rows = {r["precision"]: r for r in doc["rows"]}
    assert rows["float"]["map50"] == 1.0 and rows["8"]["map50"] == 1.0
    # one category: its AP is the mAP; deltas are to float
    assert doc["breakdown"] == {"by": "class", "metric": "ap", "keys": ["face"],
                                "values": {p: [rows[p]["map"]] for p in ("float", "8")}}
    assert rows["8"]["map_delta"] == round(rows["8"]["map"] - rows["float"]["map"], 4)
    assert 0.5 <= rows["float"]["map"] <= 1.0 and 0.5 <= rows["8"]["map"] <= 1.0


def test_per_class_breakdown_and_plot(cli, labeled, tmp_path):
    """--plot writes a PNG of the per-class deltas; the breakdown is each class's top-1 accuracy,
    recomputed here from the per-frame predictions."""
    png = tmp_path / "plots" / "classes.png"
    code, out, err = cli(*_lenet("--data", labeled, "--calib", labeled, "--precision", "float,8", "--plot", png,
                                 "--json", tmp_path / "e.json"))
    assert code == 0, err
    assert f"wrote {png}" in out and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000
    doc = _valid(json.loads((tmp_path / "e.json").read_text()))
    truth = [int(line.split()[1]) for line in labeled.read_text().splitlines()]
    assert doc["breakdown"]["keys"] == [str(k) for k in sorted(set(truth))]
    assert doc["breakdown"]["values"]["float"] == [1.0] * len(set(truth))  # every sample read right
    assert not list(png.parent.glob("*.tmp*"))  # written atomically: no temporary left


@pytest.mark.parametrize("bad, message", [("plot.txt", "expected a .png file name"),
                                          ("afile/plot.png", "is not a folder"),
                                          ("adir", "expected a .png file name")])
def test_bad_plot_paths_are_one_line_errors(cli, labeled, tmp_path, bad, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    code, out, err = cli(*_lenet("--data", labeled, "--plot", tmp_path / bad))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_match_detections_one_to_one_by_class():
    from tidlc.metrics import match_detections
    ref = np.array([[0, 1, 0.9, 0.1, 0.1, 0.5, 0.5], [0, 1, 0.8, 0.12, 0.1, 0.52, 0.5],
                    [0, 2, 0.7, 0.6, 0.6, 0.9, 0.9]])
    test = np.array([[0, 1, 0.95, 0.1, 0.1, 0.5, 0.5],   # the first reference box (IoU 1 beats 0.9)
                     [0, 1, 0.6, 0.1, 0.1, 0.5, 0.5],    # the second (the first is taken)
                     [0, 1, 0.5, 0.6, 0.6, 0.9, 0.9]])   # class 1 where only class 2 is: no match
    pairs = match_detections(ref, test)
    assert [(i, j) for i, j, _ in pairs] == [(0, 0), (1, 1)] and pairs[0][2] == 1.0
    assert match_detections(ref, test[:0]) == [] and match_detections(ref, test, iou=0.95) == [(0, 0, 1.0)]


def test_plot_of_many_classes_draws_those_that_move_most(tmp_path):
    from tidlc.evalplot import MAX_KEYS, deltas, plot
    keys = [str(k) for k in range(100)]
    base = [0.5] * 100
    moved = [0.5 - (0.01 * k if k % 7 == 0 else 0.0) for k in range(100)]
    doc = {"model": "m", "task": "classify", "breakdown": {"by": "class", "metric": "accuracy", "keys": keys,
                                                           "values": {"float": base, "8": moved, "16": base}}}
    got_keys, series, relative = deltas(doc)
    assert relative and got_keys == keys and set(series) == {"8", "16"}
    assert series["8"][14] == pytest.approx(-0.14) and series["16"] == [0.0] * 100
    plot(doc, str(tmp_path / "many.png"))
    assert (tmp_path / "many.png").read_bytes()[:4] == b"\x89PNG" and MAX_KEYS < 100


@pytest.mark.parametrize("task", ["classify", "segment"])
def test_a_batched_deploy_input_is_one_line_naming_input_shape(cli, tmp_path, task):
    """BVLC deploy files declare a batch of 10 (ten crops): eval scores one image per inference, so
    it says so before quantizing (it was a FrameSource error located at a temporary list file)."""
    proto = tmp_path / "b.prototxt"
    proto.write_text('input: "data"\ninput_dim: 10\ninput_dim: 1\ninput_dim: 28\ninput_dim: 28\n'
                     'layer { name: "c" type: "Convolution" bottom: "data" top: "c"\n'
                     '  convolution_param { num_output: 2 kernel_size: 3 } }\n')
    code, _, err = cli("eval", proto, "--random-weights", "1", "--data", LENET / "samples", "--task", task)
    assert code == 2 and err.strip() == (
        "b.prototxt: error: the input 'data' [10, 1, 28, 28] takes a batch of 10 images; tidlc eval scores one "
        "image per inference (hint: add --input-shape data=1,1,28,28)"), err
    code, _, err = cli("eval", proto, "--random-weights", "1", "--data", LENET / "samples", "--task", task,
                       "--input-shape", "data=1,1,28,28", "--precision", "float,8")
    assert code == 0, err
