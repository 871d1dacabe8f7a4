"""tidlc run OUTDIR --post classify|segment."""
from pathlib import Path

import numpy as np
import pytest

from tidlc.cli import main

CIFAR = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "caffe" / "cifar10_quick"

SEG = '''name: "seg"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
'''


def tidlc(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.skipif(not CIFAR.is_dir(), reason="corpus not available")
def test_classify_prints_top5_and_accuracy(capsys, tmp_path):
    samples = CIFAR / "samples"
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{samples / 'cat10.png'} 3\n{samples / 'dog10.png'} 5\n{samples / 'truck10.png'} 9\n")
    code, _, err = tidlc(capsys, "compile", CIFAR / "cifar10_quick.prototxt", "--weights",
                         CIFAR / "cifar10_quick_iter_5000.caffemodel", "--calib", labels, "--mean", "125.3,123.0,113.9",
                         "--channel-order", "bgr", "--emit", "bin", "-o", tmp_path / "out")
    assert code == 0, err
    code, out, err = tidlc(capsys, "run", tmp_path / "out", "--post", "classify", "--labels", labels)
    assert code == 0, err
    top5 = [int(c) for c in out.split("top-5 classes:")[1].split("\n")[0].split()]
    assert len(top5) == 5 and len(set(top5)) == 5 and all(0 <= c < 10 for c in top5)
    line = next(ln for ln in out.splitlines() if ln.startswith("accuracy over"))
    top1 = float(line.split("top-1 ")[1].split("%")[0])
    top5_acc = float(line.split("top-5 ")[1].split("%")[0])
    assert top1 in (0.0, 33.33, 66.67, 100.0) and top5_acc >= top1 and top5_acc >= 66.0  # a trained net
    # --labels alone means classify (it used to fail with "missing input(s)")
    code, out2, err = tidlc(capsys, "run", tmp_path / "out", "--labels", labels)
    assert code == 0, err
    assert line in out2.splitlines()
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--labels", labels, "--post", "detect")
    assert code == 2 and "--labels scores classifications; it does not go with --post detect" in err


def test_segment_writes_a_blended_png(capsys, tmp_path):
    import cv2
    (tmp_path / "seg.prototxt").write_text(SEG)
    code, _, err = tidlc(capsys, "compile", tmp_path / "seg.prototxt", "--random-weights", "2", "--emit", "bin",
                         "-o", tmp_path / "out")
    assert code == 0, err
    image = np.random.default_rng(0).integers(0, 256, (20, 24, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "img.png"), image)
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--input", tmp_path / "img.png", "--post", "segment",
                           "--post-output", tmp_path / "seg.png")
    assert code == 0, err
    png = cv2.imread(str(tmp_path / "seg.png"))
    assert png.shape == (20, 24, 3)


def test_segment_needs_a_4d_output(capsys, tmp_path):
    net = SEG + 'layer { name: "fc" type: "InnerProduct" bottom: "score" top: "fc" inner_product_param { num_output: 3 } }\n'
    (tmp_path / "c.prototxt").write_text(net)
    assert tidlc(capsys, "compile", tmp_path / "c.prototxt", "--random-weights", "2", "--emit", "bin",
                 "-o", tmp_path / "out")[0] == 0
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--random-input", "0", "--post", "segment")
    assert code == 2 and "4-D" in err


def test_detect_draws_the_boxes_above_the_threshold(tmp_path):
    import cv2

    from tidlc.postprocess import detect_png, detections
    rows = np.zeros((1, 1, 4, 7), np.float32)
    rows[0, 0, 0] = [0, 3, 0.9, 0.1, 0.1, 0.5, 0.6]
    rows[0, 0, 1] = [0, 7, 0.3, 0.2, 0.2, 0.9, 0.9]  # below the threshold
    rows[0, 0, 2] = [0, 1, 0.8, 0.6, 0.6, 0.95, 0.9]
    outputs = {"detection_out": rows}
    assert [int(r[1]) for r in detections(outputs, 0.5)] == [3, 1]
    image = np.full((40, 60, 3), 255, np.uint8)
    cv2.imwrite(str(tmp_path / "in.png"), image)
    assert detect_png(outputs, str(tmp_path / "in.png"), (60, 40), str(tmp_path / "out.png")) == 2
    drawn = cv2.imread(str(tmp_path / "out.png"))
    assert drawn.shape == (40, 60, 3) and (drawn != 255).any()
    assert detect_png(outputs, None, (32, 24), str(tmp_path / "blank.png"), threshold=0.95) == 0
    assert cv2.imread(str(tmp_path / "blank.png")).shape == (24, 32, 3)


def test_detect_needs_a_detection_output(capsys, tmp_path):
    (tmp_path / "seg.prototxt").write_text(SEG)
    assert tidlc(capsys, "compile", tmp_path / "seg.prototxt", "--random-weights", "2", "--emit", "bin",
                 "-o", tmp_path / "out")[0] == 0
    code, _, err = tidlc(capsys, "run", tmp_path / "out", "--random-input", "0", "--post", "detect")
    assert code == 2 and "DetectionOutput" in err
