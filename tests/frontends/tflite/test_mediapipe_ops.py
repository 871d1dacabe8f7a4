"""MediaPipe's attention-crop custom ops (face_landmark_with_attention.tflite): their FlexBuffer
options, read by tidlc's own reader, checked against the ``flatbuffers`` package's; and the three
ops on models built here, checked against independent references:

* ``TransformTensorBilinear``: scipy's ``map_coordinates`` (order 1) at the pixel centers the
  matrix maps each output pixel to (version 2; corners in version 1), 0 outside the input;
* ``Landmarks2TransformMatrix``: by what the matrix must do, not how it is built: mapped back
  through it, the subset points' box is centered in the crop, ``output / scale`` wide and high,
  and the left -> right line is horizontal;
* ``TransformLandmarks``: the matrix's first two rows applied to (x, y), z kept.

Then the ops compiled at 16 bits run (as float layers) within rounding of the float graph; and,
when ``TIDLC_MEDIAPIPE`` names the extracted ``mediapipe`` 0.10.14 wheel and scikit-image is
installed, the real model on its astronaut photograph: the refined lips and eyes lie within 3 px
of the mesh points they refine (192 px crop)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
schema = pytest.importorskip("tensorflow.lite.python.schema_py_generated")
flexbuffers = pytest.importorskip("flatbuffers.flexbuffers")
import flatbuffers
from hypothesis import given, settings
from hypothesis import strategies as st
from tidlc.frontends.tflite import flexbuf
from tidlc.frontends.tflite.flatbuf import FlatBufferError
from tidlc.frontends.tflite.importer import import_model, parse_tflite

from tidlc.diagnostics import TidlcError
from tidlc.interp import run_graph

ndimage = pytest.importorskip("scipy.ndimage")

# ----------------------------------------------------------------------------- FlexBuffers
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(1 << 63), (1 << 63) - 1),
                     st.floats(-2.0 ** 100, 2.0 ** 100), st.text(max_size=8))  # (the encoder fails past float32)
_keys = st.text(st.characters(min_codepoint=1, max_codepoint=127), min_size=1, max_size=8)  # ASCII, no NUL
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.lists(st.integers(-(1 << 31), 1 << 31), max_size=6),
    st.lists(st.floats(-2.0 ** 100, 2.0 ** 100, width=32), max_size=4),
    st.dictionaries(_keys, inner, max_size=5)),
    max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_flexbuffer_reader_agrees_with_the_flatbuffers_package(value):
    data = flexbuffers.Dumps(value)
    assert flexbuf.loads(data) == flexbuffers.Loads(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_is_a_flatbuffer_error_or_a_value(data):
    try:
        flexbuf.loads(data)
    except FlatBufferError:
        pass


def test_truncated_options_say_where():
    data = flexbuffers.Dumps({"subset_idxs": list(range(40)), "scale_x": 1.5})
    with pytest.raises(FlatBufferError, match="FlexBuffer"):
        flexbuf.loads(data[5:])


# ----------------------------------------------------------------------------- models
def _model(ops: list[tuple[str, int, list[str], list[str], dict | None]], shapes: dict[str, tuple],
           inputs: list[str], outputs: list[str], raw_options: dict[str, bytes] | None = None) -> bytes:
    """A .tflite of custom ``ops`` (code, version, input names, output names, FlexBuffer options)."""
    names = list(shapes)
    tensors = []
    for name in names:
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer = name, list(shapes[name]), schema.TensorType.FLOAT32, 0
        tensors.append(t)
    codes, operators = [], []
    for code, version, ins, outs, options in ops:
        c = schema.OperatorCodeT()
        c.builtinCode = c.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        c.customCode, c.version = code, version
        codes.append(c)
        op = schema.OperatorT()
        op.opcodeIndex = len(codes) - 1
        op.inputs, op.outputs = [names.index(n) for n in ins], [names.index(n) for n in outs]
        raw = (raw_options or {}).get(outs[0])
        if raw is None and options is not None:
            raw = flexbuffers.Dumps(options)
        if raw:
            op.customOptions = list(raw)
        operators.append(op)
    sg = schema.SubGraphT()
    sg.tensors, sg.operators, sg.name = tensors, operators, "main"
    sg.inputs, sg.outputs = [names.index(n) for n in inputs], [names.index(n) for n in outputs]
    model = schema.ModelT()
    model.version, model.subgraphs, model.buffers, model.operatorCodes = 3, [sg], [schema.BufferT()], codes
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _graph(model: bytes):
    return import_model(parse_tflite(model), None, "m.tflite")


def _l2tm(subset, left, right, out_hw=(16, 16), scale=(1.5, 1.5), target=0.0) -> dict:
    return {"subset_idxs": list(subset), "left_rotation_idx": left, "right_rotation_idx": right,
            "target_rotation_radians": target, "output_height": out_hw[0], "output_width": out_hw[1],
            "scale_x": scale[0], "scale_y": scale[1]}


def _crop_model(n_points: int, hw: tuple[int, int], channels: int, options: dict, version: int = 2) -> bytes:
    """points -> Landmarks2TransformMatrix -> m; TransformTensorBilinear(features, m) -> crop;
    TransformLandmarks(pts2, m) -> moved: the wiring of face_landmark_with_attention."""
    oh, ow = options["output_height"], options["output_width"]
    shapes = {"points": (1, n_points, 3), "features": (1, *hw, channels), "pts2": (1, 5, 2),
              "m": (1, 4, 4), "crop": (1, oh, ow, channels), "moved": (1, 5, 2)}
    return _model([("Landmarks2TransformMatrix", version, ["points"], ["m"], options),
                   ("TransformTensorBilinear", 2, ["features", "m"], ["crop"], {"output_height": oh, "output_width": ow}),
                   ("TransformLandmarks", 2, ["pts2", "m"], ["moved"], None)],
                  shapes, ["points", "features", "pts2"], ["m", "crop", "moved"])


@pytest.mark.parametrize("target,scale", [(0.0, (1.5, 1.5)), (0.0, (1.2, 2.0)), (0.7, (1.5, 1.5))])
@pytest.mark.parametrize("seed", range(3))
def test_the_matrix_frames_the_subset_as_specified(seed, target, scale):
    rng = np.random.default_rng(seed)
    n, subset, left, right = 30, list(range(3, 20)) + [25], 4, 11  # odd subset: MediaPipe repeats the last
    pts = np.zeros((1, n, 3), np.float32)
    pts[0, :, :2] = rng.uniform(5, 40, (n, 2))
    pts[0, :, 2] = rng.normal(0, 3, n)
    options = _l2tm(subset, left, right, (16, 12), scale, target)
    graph = _graph(_crop_model(n, (48, 48), 4, options))
    m = run_graph(graph, {"points": pts, "features": np.zeros((1, 48, 48, 4), np.float32),
                          "pts2": np.zeros((1, 5, 2), np.float32)})["m"][0].astype(np.float64)
    assert np.allclose(m[2:], np.eye(4)[2:]) and np.allclose(m[:2, 2], 0)
    inv = np.linalg.inv(m[:2, :2])
    crop = (pts[0, subset, :2] - m[:2, 3]) @ inv.T  # the subset in the crop's pixel grid
    lo, hi = crop.min(axis=0), crop.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, [12 / 2, 16 / 2], atol=1e-4)
    np.testing.assert_allclose(hi - lo, [12 / scale[0], 16 / scale[1]], rtol=1e-5)
    # the linear part is a rotation times a scale per crop axis: undo the scale, and the left -> right
    # line lies at the target angle in the crop
    cols = m[:2, :2]
    assert abs(cols[:, 0] @ cols[:, 1]) < 1e-5 * np.linalg.norm(cols[:, 0]) * np.linalg.norm(cols[:, 1])
    v = ((pts[0, right, :2] - pts[0, left, :2]) @ inv.T) * np.linalg.norm(cols, axis=0)
    turn = np.arctan2(v[1], v[0]) - target
    assert abs(np.arctan2(np.sin(turn), np.cos(turn))) < 1e-5


def _warp_reference(x: np.ndarray, m: np.ndarray, out_hw, half_pixel: bool) -> np.ndarray:
    """scipy's bilinear interpolation at the matrix's image of every output pixel (NHWC, batch 1)."""
    h, w = x.shape[1:3]
    oy, ox = np.meshgrid(np.arange(out_hw[0], dtype=np.float64), np.arange(out_hw[1], dtype=np.float64),
                         indexing="ij")
    shift = 0.5 if half_pixel else 0.0
    sx = m[0, 0] * (ox + shift) + m[0, 1] * (oy + shift) + m[0, 3] - shift
    sy = m[1, 0] * (ox + shift) + m[1, 1] * (oy + shift) + m[1, 3] - shift
    inside = (sx >= 0) & (sx <= w - 1) & (sy >= 0) & (sy <= h - 1)
    out = np.stack([ndimage.map_coordinates(x[0, :, :, c].astype(np.float64), [sy, sx], order=1, mode="nearest")
                    for c in range(x.shape[3])], axis=-1)
    return np.where(inside[..., None], out, 0.0)[None]


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_the_bilinear_crop_equals_scipy(seed, version):
    rng = np.random.default_rng(10 + seed)
    hw, c, out_hw = (20, 17), 3, (9, 11)
    angle, s = rng.uniform(-np.pi, np.pi), rng.uniform(0.5, 2.5)
    m = np.eye(4, dtype=np.float32)[None].copy()
    m[0, :2, :2] = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    # the output grid's center near the input's, off by a few pixels: some output pixels fall outside
    m[0, :2, 3] = np.array([hw[1], hw[0]]) / 2 - m[0, :2, :2] @ np.array([out_hw[1], out_hw[0]]) / 2 + \
        rng.uniform(-6, 6, 2)
    x = rng.normal(0, 1, (1, *hw, c)).astype(np.float32)
    shapes = {"x": (1, *hw, c), "m": (1, 4, 4), "y": (1, *out_hw, c)}
    model = _model([("TransformTensorBilinear", version, ["x", "m"], ["y"],
                     {"output_height": out_hw[0], "output_width": out_hw[1]})], shapes, ["x", "m"], ["y"])
    got = run_graph(_graph(model), {"x": x, "m": m})["y"]
    want = _warp_reference(x, m[0].astype(np.float64), out_hw, version == 2)
    assert 0 < np.count_nonzero(np.all(want == 0, axis=-1)) < want[..., 0].size  # both kinds of pixel
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_transform_landmarks_moves_x_and_y_and_keeps_z():
    rng = np.random.default_rng(5)
    m = rng.normal(0, 1, (1, 4, 4)).astype(np.float32)
    for d in (2, 3):
        p = rng.normal(0, 10, (1, 7, d)).astype(np.float32)
        model = _model([("TransformLandmarks", 2, ["p", "m"], ["q"], None)],
                       {"p": (1, 7, d), "m": (1, 4, 4), "q": (1, 7, d)}, ["p", "m"], ["q"])
        got = run_graph(_graph(model), {"p": p, "m": m})["q"]
        want = p.astype(np.float64).copy()
        want[0, :, :2] = p[0, :, :2].astype(np.float64) @ m[0, :2, :2].T.astype(np.float64) + m[0, :2, 3]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_compiled_at_16_bits_the_crop_runs_as_float_layers():
    from tidlc.backends.tidl.fixed import FixedExecutor

    from tidlc.compiler import compile_model
    from tidlc.config import CompileOptions
    rng = np.random.default_rng(2)
    n = 24
    model = _crop_model(n, (32, 32), 8, _l2tm(range(6, 20), 6, 13, (8, 8)))
    frames = []
    for _ in range(4):
        pts = np.zeros((1, n, 3), np.float32)
        pts[0, :, :2] = rng.uniform(8, 24, (n, 2))
        frames.append({"points": pts, "features": rng.uniform(0, 1, (1, 32, 32, 8)).astype(np.float32),
                       "pts2": rng.uniform(0, 8, (1, 5, 2)).astype(np.float32)})
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tidlc-mp-{os.getpid()}.tflite"
    path.write_bytes(model)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            q = compile_model(str(path), CompileOptions.of(emit="none", quantize=True, bits=16)).graph
    finally:
        path.unlink()
    kinds = {op.kind for op in q.ops}
    assert {"landmarks_to_matrix", "warp_bilinear", "transform_landmarks"} <= kinds
    from tidlc.backends.tidl.perf import PerfOptions, estimate
    rows = {lay.op: lay for lay in estimate(q, "tda4vm", PerfOptions(hints=False)).layers}
    for kind in ("landmarks_to_matrix", "warp_bilinear", "transform_landmarks"):  # float layers cost cycles
        assert rows[kind].unit == "vector" and rows[kind].cycles > 0, rows[kind]
    assert rows["landmarks_to_matrix"].note == "rough cost"
    ref = _graph(model)
    for feeds in frames:
        want, got = run_graph(ref, feeds), FixedExecutor(q).run(feeds)
        for name in ("m", "crop", "moved"):
            err = np.abs(got[name] - want[name]).max()
            assert err <= 2e-3 * max(1.0, np.abs(want[name]).max()), (name, err)


# ----------------------------------------------------------------------------- errors
def test_version_1_of_the_matrix_op_is_named():
    model = _crop_model(10, (8, 8), 1, _l2tm([1, 2], 1, 2), version=1)
    with pytest.raises(TidlcError, match=r"Landmarks2TransformMatrix'\).*version 1 is not supported"):
        _graph(model)


def test_unreadable_options_are_an_import_error():
    shapes = {"points": (1, 10, 3), "m": (1, 4, 4)}
    model = _model([("Landmarks2TransformMatrix", 2, ["points"], ["m"], None)], shapes, ["points"], ["m"],
                   raw_options={"m": b"\x07\x07\x07\x07"})
    with pytest.raises(TidlcError, match=r"CUSTOM 'Landmarks2TransformMatrix'\): its custom options are not a "
                                         r"readable FlexBuffer"):
        _graph(model)


def test_options_of_the_wrong_type_are_named():
    options = _l2tm([1, 2], 1, 2)
    options["subset_idxs"] = ["a", "b"]
    with pytest.raises(TidlcError, match="options hold a value of the wrong type"):
        _graph(_crop_model(10, (8, 8), 1, options))


def test_a_subset_point_past_the_landmarks_is_named():
    model = _crop_model(10, (8, 8), 1, _l2tm([1, 12], 1, 2))
    with pytest.raises(TidlcError, match="point index 12 is outside the 10 points"):
        _graph(model)


# ----------------------------------------------------------------------------- the real model
def test_face_mesh_with_attention_refines_where_the_mesh_is():
    root = os.environ.get("TIDLC_MEDIAPIPE")
    path = Path(root or ".") / "mediapipe/modules/face_landmark/face_landmark_with_attention.tflite"
    if not root or not path.is_file():
        pytest.skip("set TIDLC_MEDIAPIPE to the extracted mediapipe 0.10.14 wheel")
    data = pytest.importorskip("skimage.data")
    import cv2
    face = cv2.resize(data.astronaut()[15:215, 128:328], (192, 192), interpolation=cv2.INTER_AREA)
    graph = import_model(parse_tflite(path.read_bytes()), None, str(path))
    out = run_graph(graph, {"input_1": face[None].astype(np.float32) / 255.0})
    mesh = out["output_mesh_identity"].reshape(468, 3)
    options = {op.name: op.attrs for op in graph.ops if op.kind == "landmarks_to_matrix"}
    assert len(options) == 3
    regions = {"output_lips": "landmarks_to_transform_matrix_v2",
               "output_left_eye": "landmarks_to_transform_matrix_v2_1",
               "output_right_eye": "landmarks_to_transform_matrix_v2_2"}
    for name, matrix_op in regions.items():
        refined = out[name].reshape(-1, 2)
        dist = np.linalg.norm(refined - mesh[list(options[matrix_op]["subset"]), :2], axis=1)
        assert np.median(dist) < 2.0 and dist.max() < 3.0, (name, np.median(dist), dist.max())
