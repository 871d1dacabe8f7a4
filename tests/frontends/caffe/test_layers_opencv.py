"""Layer by layer: small nets, one parameter form each, against OpenCV's Caffe importer.

Each case is a prototxt body (after an ``Input`` layer ``data``) run by
``reference.compare`` at -O0 and -O2 with seeded random weights and inputs.
Forms where OpenCV departs from Caffe (InnerProduct ``transpose``, LRN ``k``,
a partial Permute ``order``, Interp ``shrink_factor``, PriorBox ``img_h``/
``img_w`` and its ``clip`` default) are checked against Caffe's definition in
test_layers.py instead.
"""
from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")


def net(body: str, shape=(1, 4, 9, 11), extra_inputs: str = "") -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return (f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ {dims} }} }} }}\n{extra_inputs}{body}')


def layer(name, type_, bottoms=("data",), tops=None, params=""):
    tops = tops or (name,)
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


CASES = {
    # ---- convolution family
    "conv_basic": layer("c", "Convolution", params="convolution_param { num_output: 6 kernel_size: 3 }"),
    "conv_hw_forms": layer("c", "Convolution", params=(
        "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 2 pad_h: 2 pad_w: 1 "
        "stride_h: 2 stride_w: 3 bias_term: false }")),
    "conv_dilated_grouped": layer("c", "Convolution", params=(
        "convolution_param { num_output: 6 kernel_size: 3 dilation: 2 pad: 2 group: 2 }")),
    "conv_depthwise": layer("c", "Convolution", params=(
        "convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 4 }")),
    "deconv": layer("d", "Deconvolution", params=(
        "convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 }")),
    "deconv_no_bias": layer("d", "Deconvolution", params=(
        "convolution_param { num_output: 3 kernel_size: 3 stride: 3 bias_term: false }")),
    "ip": layer("f", "InnerProduct", params="inner_product_param { num_output: 7 }"),
    "ip_axis2": layer("f", "InnerProduct", params="inner_product_param { num_output: 5 axis: 2 }"),
    # ---- pooling: Caffe's ceil rounding, clipped last window, AVE divisor over the padded extent
    "pool_max_ceil": layer("p", "Pooling", params="pooling_param { pool: MAX kernel_size: 3 stride: 2 }"),
    "pool_max_pad": layer("p", "Pooling", params=(
        "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }")),
    "pool_ave_pad_ceil": layer("p", "Pooling", params=(
        "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }")),
    "pool_ave_clipped": layer("p", "Pooling", params=(
        "pooling_param { pool: AVE kernel_h: 4 kernel_w: 2 stride_h: 3 stride_w: 2 pad_h: 2 pad_w: 1 }")),
    "pool_global": layer("p", "Pooling", params="pooling_param { pool: AVE global_pooling: true }"),
    "pool_global_max": layer("p", "Pooling", params="pooling_param { pool: MAX global_pooling: true }"),
    # ---- activations
    "relu_leaky": layer("r", "ReLU", params="relu_param { negative_slope: 0.2 }"),
    "relu_inplace": layer("r", "ReLU", tops=("data",)),
    "prelu": layer("r", "PReLU"),
    "prelu_shared": layer("r", "PReLU", params="prelu_param { channel_shared: true }"),
    "elu": layer("r", "ELU", params="elu_param { alpha: 0.7 }"),
    "sigmoid_tanh": layer("s", "Sigmoid") + layer("t", "TanH", ("s",)),
    "absval_bnll": layer("a", "AbsVal") + layer("b", "BNLL", ("a",)),
    "power": layer("p", "Power", params="power_param { power: 2 scale: 0.5 shift: 1.5 }"),
    "power_scale_only": layer("p", "Power", params="power_param { scale: -3 }"),
    "dropout": layer("d", "Dropout", params="dropout_param { dropout_ratio: 0.3 }"),
    "softmax_axis": layer("s", "Softmax", params="softmax_param { axis: 2 }"),
    # ---- normalisation
    "batchnorm": layer("bn", "BatchNorm", params="batch_norm_param { eps: 0.001 }"),
    "batchnorm_scale": (layer("bn", "BatchNorm", tops=("data",)) +
                        layer("sc", "Scale", tops=("data",), params="scale_param { bias_term: true }")),
    "scale_axis0_2axes": layer("sc", "Scale", params="scale_param { axis: 0 num_axes: 2 }"),
    "scale_scalar": layer("sc", "Scale", params="scale_param { num_axes: 0 bias_term: true }"),
    "scale_axis2_rest": layer("sc", "Scale", params="scale_param { axis: 2 num_axes: -1 bias_term: true }"),
    "lrn_across": layer("n", "LRN", params="lrn_param { local_size: 3 alpha: 0.3 beta: 0.75 }"),
    "lrn_within": layer("n", "LRN", params=(
        "lrn_param { local_size: 3 alpha: 0.5 beta: 0.6 norm_region: WITHIN_CHANNEL }")),
    "normalize": layer("n", "Normalize", params="norm_param { across_spatial: false channel_shared: false }"),
    "normalize_spatial": layer("n", "Normalize", params="norm_param { across_spatial: true }"),
    # ---- eltwise and data movement
    "eltwise_sum_coeff": (layer("a", "ReLU", tops=("a",)) + layer("e", "Eltwise", ("data", "a", "data"), params=(
        "eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 1 }"))),
    "eltwise_sub": (layer("a", "Sigmoid") + layer("e", "Eltwise", ("data", "a"), params=(
        "eltwise_param { coeff: 1 coeff: -1 }"))),
    "eltwise_prod_max": (layer("a", "Sigmoid") + layer("e", "Eltwise", ("data", "a"), params=(
        "eltwise_param { operation: PROD }")) + layer("m", "Eltwise", ("e", "a"), params=(
            "eltwise_param { operation: MAX }"))),
    # (OpenCV addresses a layer's first top only: every Slice top goes through one more layer)
    "concat_slice": (layer("a", "Sigmoid") + layer("c", "Concat", ("data", "a"), params="concat_param { axis: 2 }")
                     + layer("s", "Slice", ("c",), ("s1", "s2", "s3"), "slice_param { axis: 2 slice_point: 4 slice_point: 13 }")
                     + layer("c2", "Concat", ("s3", "s1"), params="concat_param { axis: 2 }")
                     + layer("t", "TanH", ("s2",))),
    "slice_equal_concat_dim": (layer("s", "Slice", tops=("s1", "s2"), params="slice_param { slice_dim: 1 }")
                               + layer("c", "Concat", ("s2", "s1"), params="concat_param { concat_dim: 1 }")),
    "split": layer("sp", "Split", tops=("x1", "x2")) + layer("e", "Eltwise", ("x1", "x2")),
    "flatten_axis2": layer("f", "Flatten", params="flatten_param { axis: 2 }"),
    "flatten_middle": layer("f", "Flatten", params="flatten_param { axis: 1 end_axis: 2 }"),
    "reshape_copy_infer": layer("r", "Reshape", params="reshape_param { shape { dim: 0 dim: -1 dim: 11 } }"),
    "reshape_axis_num_axes": layer("r", "Reshape", params=(
        "reshape_param { shape { dim: 3 dim: 3 } axis: 2 num_axes: 1 }")),
    "permute": layer("p", "Permute", params="permute_param { order: 0 order: 2 order: 3 order: 1 }"),
    "interp_zoom": layer("i", "Interp", params="interp_param { zoom_factor: 2 }"),
    "interp_size": layer("i", "Interp", params="interp_param { height: 5 width: 17 }"),
}

EXTRA_INPUT_CASES = {
    # cases with a second Input blob: (body, extra Input shape)
    "crop": (layer("c", "Crop", ("data", "ref"), params="crop_param { axis: 2 offset: 1 offset: 3 }"), (1, 2, 6, 5)),
    "crop_one_offset": (layer("c", "Crop", ("data", "ref"), params="crop_param { axis: 1 offset: 1 }"), (1, 2, 6, 5)),
    "scale_two_bottoms": (layer("s", "Scale", ("data", "ref"), params="scale_param { axis: 0 }"), (1, 4)),
    "priorbox_basic": (layer("pb", "PriorBox", ("data", "ref"), params=(
        "prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true "
        "clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }")), (1, 3, 90, 110)),
    "priorbox_clip_step_offset": (layer("pb", "PriorBox", ("data", "ref"), params=(
        "prior_box_param { min_size: 20 min_size: 50 aspect_ratio: 2 flip: false clip: true "
        "step: 8 offset: 0.25 variance: 0.1 }")), (1, 3, 64, 80)),
    "priorbox_step_hw": (layer("pb", "PriorBox", ("data", "ref"), params=(
        "prior_box_param { min_size: 40 max_size: 90 step_h: 10 step_w: 11 clip: false variance: 0.2 }")),
        (1, 3, 64, 80)),
}


def _write(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_opencv(case, reference, tmp_path):
    path = _write(tmp_path, net(CASES[case]))
    reference.compare(path)


@pytest.mark.parametrize("case", sorted(EXTRA_INPUT_CASES))
def test_layer_with_second_input_matches_opencv(case, reference, tmp_path):
    body, shape = EXTRA_INPUT_CASES[case]
    dims = " ".join(f"dim: {d}" for d in shape)
    extra = f'layer {{ name: "ref" type: "Input" top: "ref" input_param {{ shape {{ {dims} }} }} }}\n'
    reference.compare(_write(tmp_path, net(body, extra_inputs=extra)))


def test_batchnorm_moving_average_factor(reference, tmp_path):
    """mean and variance are divided by blob 2; OpenCV does the same."""
    path = _write(tmp_path, net(layer("bn", "BatchNorm")))

    def factor(value):
        def edit(blobs):
            kind, (mean, var, _) = blobs["bn"]
            return {"bn": (kind, [mean * value, var * value, np.float32([value])])}
        return edit
    errors = reference.compare(path, blob_edit=factor(7.5))
    assert max(errors.values()) < 1e-5


@pytest.mark.parametrize("code_type,share,background,keep,top_k,threshold", [
    ("CENTER_SIZE", True, 0, 20, 30, 0.2),
    ("CORNER", True, 0, 50, -1, 0.1),
    ("CENTER_SIZE", False, 0, 15, 40, 0.3),
    ("CENTER_SIZE", True, 2, 100, 200, 0.05),
])
def test_detection_output_matches_opencv(code_type, share, background, keep, top_k, threshold,
                                         reference, tmp_path):
    """DetectionOutput fed directly: decode, threshold, per-class NMS and keep_top_k."""
    rng = np.random.default_rng(5)
    priors, classes = 60, 4
    loc_classes = 1 if share else classes
    centers = rng.uniform(0.1, 0.9, (priors, 2))
    sizes = rng.uniform(0.05, 0.4, (priors, 2))
    boxes = np.concatenate([centers - sizes / 2, centers + sizes / 2], axis=1).reshape(-1)
    variances = np.tile([0.1, 0.1, 0.2, 0.2], priors)
    logits = rng.normal(0, 2, (priors, classes))
    conf = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    feeds = {"loc": rng.normal(0, 1, (1, priors * loc_classes * 4)).astype(np.float32),
             "conf": conf.reshape(1, -1).astype(np.float32),
             "prior": np.stack([boxes, variances])[None].astype(np.float32)}
    inputs = "".join(f'layer {{ name: "{n}" type: "Input" top: "{n}" input_param {{ shape {{ '
                     + " ".join(f"dim: {d}" for d in v.shape) + " } } }\n" for n, v in feeds.items())
    text = 'name: "det"\n' + inputs + layer("det", "DetectionOutput", ("loc", "conf", "prior"), params=(
        f"detection_output_param {{ num_classes: {classes} share_location: {str(share).lower()} "
        f"background_label_id: {background} nms_param {{ nms_threshold: 0.45 top_k: {top_k} }} "
        f"code_type: {code_type} keep_top_k: {keep} confidence_threshold: {threshold} }}"))
    path = _write(tmp_path, text)
    reference.compare(path, feeds=feeds)
    from tidlc.frontends.caffe.lower import lower_net
    from tidlc.frontends.caffe.netspec import load_netspec
    from tidlc.frontends.caffe.weights import ZeroWeights

    from tidlc.interp import run_graph
    out = run_graph(lower_net(load_netspec(path), ZeroWeights(), str(path)), feeds)["det"][0, 0]
    kept = out[out[:, 2] > 0]
    assert out.shape == (keep, 7) and len(kept) > 3
    # Caffe's order: by label, then by descending score; zero rows after the kept ones
    assert np.all(np.diff(kept[:, 1]) >= 0)
    for label in np.unique(kept[:, 1]):
        assert np.all(np.diff(kept[kept[:, 1] == label, 2]) <= 0)
    assert not np.any(out[len(kept):])
