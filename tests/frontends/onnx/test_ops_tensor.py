"""Per-op numerics against onnxruntime: data movement, shapes, constants, reductions,
Resize/Upsample, DepthToSpace. Ops whose attributes became inputs are tested in both forms."""
from __future__ import annotations

import numpy as np
import pytest

from tidlc.diagnostics import TidlcError

I64 = np.int64


def ints(*v):
    return np.array(v, I64)


# ----------------------------------------------------------------------------- concat / split
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("opset", [7, 13])
def test_concat(ox, axis, opset):
    shape = [2, 3, 4]
    inputs = {}
    for k in range(3):
        s = list(shape)
        s[axis] += k
        inputs[f"x{k}"] = ox.randn(*s, seed=k)
    ox.check_node("Concat", inputs, {"axis": axis}, opset=opset)


def test_concat_with_constant(ox):
    ox.check_node("Concat", {"x": ox.randn(1, 2, 3)}, {"axis": 1}, initializers={"c": ox.randn(1, 4, 3, seed=1)})


SPLITS = [(0, None, 2), (1, (1, 3), 2), (-1, (2, 2, 2), 3), (2, None, 3)]


@pytest.mark.parametrize("axis,sizes,n", SPLITS, ids=str)
@pytest.mark.parametrize("opset", [7, 11, 13, 18])
def test_split(ox, axis, sizes, n, opset):
    x = ox.randn(4, 4, 6)
    outputs = [f"y{k}" for k in range(n)]
    attrs, inits, names = {"axis": axis}, {}, ["x"]
    if sizes is not None:
        if opset < 13:
            attrs["split"] = list(sizes)
        else:
            inits["split"] = ints(*sizes)
            names.append("split")
    elif opset >= 18:
        attrs["num_outputs"] = n
    ox.check_node("Split", {"x": x}, attrs, opset=opset, initializers=inits, input_names=names, outputs=outputs)


def test_split_18_uneven_num_outputs(ox):
    ox.check_node("Split", {"x": ox.randn(2, 7)}, {"axis": 1, "num_outputs": 3}, opset=18,
                  outputs=["a", "b", "c"])


# ----------------------------------------------------------------------------- slice
SLICES = [
    ((1,), (3,), None, None),
    ((0, 1), (2, -1), (0, 2), None),
    ((-3,), (9223372036854775807,), (1,), None),
    ((5,), (-9223372036854775807,), (2,), (-1,)),
    ((-1,), (-100,), (-1,), (-2,)),
    ((4, 0), (0, 5), (2, 1), (-1, 2)),
    ((10,), (20,), (0,), None),
    ((0,), (3,), (-1,), (2,)),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICES, ids=str)
@pytest.mark.parametrize("opset", [10, 13])
def test_slice(ox, starts, ends, axes, steps, opset):
    x = ox.randn(3, 4, 6)
    inits = {"starts": ints(*starts), "ends": ints(*ends)}
    names = ["x", "starts", "ends"]
    if axes is not None:
        inits["axes"] = ints(*axes)
        names.append("axes")
    if steps is not None:
        if axes is None:
            inits["axes"] = ints(*range(len(starts)))
            names.append("axes")
        inits["steps"] = ints(*steps)
        names.append("steps")
    ox.check_node("Slice", {"x": x}, opset=opset, initializers=inits, input_names=names)


@pytest.mark.parametrize("starts,ends,axes,steps", [s for s in SLICES if s[3] is None], ids=str)
def test_slice_v1_attrs(ox, starts, ends, axes, steps):
    attrs = {"starts": list(starts), "ends": list(ends)}
    if axes is not None:
        attrs["axes"] = list(axes)
    ox.check_node("Slice", {"x": ox.randn(3, 4, 6)}, attrs, opset=7)


def test_slice_non_constant_starts_is_a_clear_error(ox):
    from tidlc.diagnostics import TidlcError
    model = ox.make_model([ox.helper.make_node("Slice", ["x", "s", "e"], ["y"], name="cut")],
                          {"x": ox.randn(4, 5), "s": ints(1)}, ["y"], {"e": ints(3)}, opset=13)
    with pytest.raises(TidlcError) as info:
        ox.tidlc_graph(model, allow_host=False)
    assert str(info.value).startswith("test.onnx: 'cut': error: Slice: starts ('s') must be a constant initializer")
    (host,) = [op for op in ox.tidlc_graph(model).ops if op.kind == "host"]  # the host slices what is fed
    assert host.attrs["op_type"] == "Slice" and "starts ('s') is computed from the data" in host.attrs["reason"]


# ----------------------------------------------------------------------------- pad
PADS = [((0, 1, 1, 0, 2, 0), "constant", 0.0), ((1, 0, 2, 2, 0, 1), "constant", 1.5),
        ((0, 2, 1, 0, 1, 2), "reflect", 0.0), ((1, 1, 2, 0, 3, 1), "edge", 0.0),
        ((0, -1, 1, 0, 2, -2), "constant", 0.0)]


@pytest.mark.parametrize("pads,mode,value", PADS, ids=str)
@pytest.mark.parametrize("opset", [7, 11, 13, 18])
def test_pad(ox, pads, mode, value, opset):
    x = ox.randn(2, 4, 5)
    if opset < 11:
        ox.check_node("Pad", {"x": x}, {"pads": list(pads), "mode": mode, "value": value}, opset=opset)
        return
    inits = {"pads": ints(*pads), "value": np.array(value, np.float32)}
    ox.check_node("Pad", {"x": x}, {"mode": mode}, opset=opset, initializers=inits)


def test_pad_wrap(ox):
    """Opset 19's wrap mode: the rows of the other side, as on a torus."""
    inits = {"pads": ints(0, 2, 1, 0, 1, 3)}
    ox.check_node("Pad", {"x": ox.randn(2, 4, 5)}, {"mode": "wrap"}, opset=19, initializers=inits)


def test_pad_18_axes(ox):
    inits = {"pads": ints(1, 2, 0, 3), "value": np.array(0.5, np.float32), "axes": ints(-1, 1)}
    ox.check_node("Pad", {"x": ox.randn(2, 3, 4)}, opset=18, initializers=inits)


def test_pad_no_value_input(ox):
    ox.check_node("Pad", {"x": ox.randn(1, 2, 3, 3)}, opset=13, initializers={"pads": ints(0, 0, 1, 1, 0, 0, 1, 1)})


# ----------------------------------------------------------------------------- reshape family
@pytest.mark.parametrize("target", [(2, -1), (0, 3, 4), (-1,), (4, 0, 2), (1, 1, 24)], ids=str)
@pytest.mark.parametrize("opset", [7, 13, 14])
def test_reshape(ox, target, opset):
    ox.check_node("Reshape", {"x": ox.randn(2, 3, 4)}, opset=opset, initializers={"shape": ints(*target)})


def test_reshape_allowzero(ox):
    ox.check_node("Reshape", {"x": ox.randn(0, 3, 4)}, {"allowzero": 1}, opset=14,
                  initializers={"shape": ints(3, 4, 0)})


def test_reshape_shape_from_graph(ox):
    # Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the PyTorch flatten idiom
    h = ox.helper
    nodes = [h.make_node("Shape", ["x"], ["s"]),
             h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             h.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
             h.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             h.make_node("Reshape", ["x", "target"], ["y"])]
    model = ox.make_model(nodes, {"x": ox.randn(2, 3, 4, 5)}, ["y"],
                          {"zero": np.array(0, I64), "axes0": ints(0), "minus1": ints(-1)}, opset=13)
    ox.check(model, {"x": ox.randn(2, 3, 4, 5)})
    graph = ox.tidlc_graph(model, 1)
    assert [op.kind for op in graph.compute_ops()] == ["reshape"]


@pytest.mark.parametrize("axis", [0, 1, 2, 4, -1, -4])
@pytest.mark.parametrize("opset", [9, 13])
def test_flatten(ox, axis, opset):
    if axis < 0 and opset < 11:
        pytest.skip("negative axes need opset 11")
    ox.check_node("Flatten", {"x": ox.randn(2, 3, 4, 5)}, {"axis": axis}, opset=opset)


@pytest.mark.parametrize("perm", [None, (0, 2, 3, 1), (3, 1, 0, 2)], ids=str)
def test_transpose(ox, perm):
    ox.check_node("Transpose", {"x": ox.randn(2, 3, 4, 5)}, {} if perm is None else {"perm": list(perm)})


@pytest.mark.parametrize("axes", [None, (0,), (2, 0), (-1,)], ids=str)
@pytest.mark.parametrize("opset", [7, 11, 13, 21])
def test_squeeze(ox, axes, opset):
    if axes and min(axes) < 0 and opset < 11:
        pytest.skip("negative axes need opset 11")
    x = ox.randn(1, 3, 1, 4, 1)
    if axes is None:
        ox.check_node("Squeeze", {"x": x}, opset=opset)
    elif opset < 13:
        ox.check_node("Squeeze", {"x": x}, {"axes": list(axes)}, opset=opset)
    else:
        ox.check_node("Squeeze", {"x": x}, opset=opset, initializers={"axes": ints(*axes)})


@pytest.mark.parametrize("axes", [(0,), (1, 3), (-1,), (0, -1)], ids=str)
@pytest.mark.parametrize("opset", [7, 11, 13, 21])
def test_unsqueeze(ox, axes, opset):
    if min(axes) < 0 and opset < 11:
        pytest.skip("negative axes need opset 11")
    x = ox.randn(3, 4)
    if opset < 13:
        ox.check_node("Unsqueeze", {"x": x}, {"axes": list(axes)}, opset=opset)
    else:
        ox.check_node("Unsqueeze", {"x": x}, opset=opset, initializers={"axes": ints(*axes)})


@pytest.mark.parametrize("target", [(2, 3, 4), (3, 1), (2, 1, 1, 4)], ids=str)
def test_expand(ox, target):
    ox.check_node("Expand", {"x": ox.randn(3, 1)}, opset=13, initializers={"shape": ints(*target)})


@pytest.mark.parametrize("repeats", [(1, 1, 2, 3), (2, 1, 1, 1), (1, 1, 1, 1)], ids=["hw", "batch", "ones"])
def test_tile(ox, repeats):
    ox.check_node("Tile", {"x": ox.randn(1, 2, 3, 4)}, initializers={"r": np.array(repeats, np.int64)})


def test_tile_bad_repeats(ox):
    node = ox.helper.make_node("Tile", ["x", "r"], ["y"], name="t")
    model = ox.make_model([node], {"x": ox.randn(2, 3)}, ["y"], {"r": np.array([2, 0], np.int64)})
    with pytest.raises(TidlcError, match=r"repeats \[2, 0\] must be positive"):
        ox.tidlc_graph(model, None)


# ----------------------------------------------------------------------------- pass-through
def test_identity(ox):
    ox.check_node("Identity", {"x": ox.randn(2, 3)})


@pytest.mark.parametrize("opset", [7, 10, 12, 13])
@pytest.mark.parametrize("declared_mask", [False, True])
def test_dropout(ox, opset, declared_mask):
    outputs = ["y", "mask"] if declared_mask else ["y"]
    node = ox.helper.make_node("Dropout", ["x", "r"] if opset >= 12 else ["x"], outputs,
                               **({} if opset >= 12 else {"ratio": 0.3}))
    model = ox.make_model([node], {"x": ox.randn(2, 3)}, ["y"],
                          {"r": np.array(0.3, np.float32)} if opset >= 12 else {}, opset=opset)
    ox.check(model, {"x": ox.randn(2, 3)})


def test_dropout_used_mask_is_rejected(ox):
    from tidlc.diagnostics import TidlcError
    node = ox.helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop")
    model = ox.make_model([node], {"x": ox.randn(2, 3)}, ["y", ("mask", np.bool_)], opset=13)
    with pytest.raises(TidlcError, match="1 unsupported ONNX op") as info:
        ox.tidlc_graph(model)
    assert info.value.problems == [("'drop' (Dropout): the mask output is not supported "
                                   "(export the model in eval mode)")]


# ----------------------------------------------------------------------------- constants / shapes
CONSTANTS = {
    "value": {"value": None}, "value_float": {"value_float": 2.5}, "value_floats": {"value_floats": [1.0, -2.0]},
    "value_int": {"value_int": 7}, "value_ints": {"value_ints": [3, 4, 5]},
}


@pytest.mark.parametrize("form", sorted(CONSTANTS))
def test_constant(ox, form):
    attrs = dict(CONSTANTS[form])
    if form == "value":
        attrs["value"] = ox.numpy_helper.from_array(ox.randn(2, 3, seed=4))
    opset = 9 if form == "value" else 13
    dtype = np.int64 if "int" in form else np.float32
    nodes = [ox.helper.make_node("Constant", [], ["c"], **attrs),
             ox.helper.make_node("Identity", ["c"], ["y"])]
    model = ox.make_model(nodes, {}, [("y", dtype)], opset=opset)
    ox.check(model, {})


@pytest.mark.parametrize("value", [None, np.array([1.5], np.float32), np.array([3], I64)], ids=str)
def test_constant_of_shape(ox, value):
    h = ox.helper
    attrs = {} if value is None else {"value": ox.numpy_helper.from_array(value)}
    nodes = [h.make_node("Shape", ["x"], ["s"]), h.make_node("ConstantOfShape", ["s"], ["y"], **attrs)]
    dtype = np.float32 if value is None else value.dtype
    model = ox.make_model(nodes, {"x": ox.randn(2, 3)}, [("y", dtype)], opset=13)
    ox.check(model, {"x": ox.randn(2, 3)})


@pytest.mark.parametrize("bounds", [{}, {"start": 1}, {"end": -1}, {"start": -3, "end": 3}], ids=str)
def test_shape(ox, bounds):
    ox.check_node("Shape", {"x": ox.randn(2, 3, 4, 5)}, bounds, opset=15 if bounds else 13,
                  outputs=[("y", I64)])


def test_size(ox):
    ox.check_node("Size", {"x": ox.randn(2, 3, 4)}, outputs=[("y", I64)])


@pytest.mark.parametrize("axis,indices", [(0, ints(2, 0)), (1, np.array(-1, I64)), (2, ints(0, 2, 1, 3)),
                                          (-1, np.array([[1, 0], [2, 2]], I64))], ids=str)
def test_gather(ox, axis, indices):
    ox.check_node("Gather", {"x": ox.randn(3, 4, 5)}, {"axis": axis}, initializers={"i": indices})


def test_gather_runtime_indices(ox):
    ox.check_node("Gather", {"x": ox.randn(3, 4), "i": ints(2, 0, 1)}, {"axis": 0})


# ----------------------------------------------------------------------------- reductions
REDUCE_OPS = ["ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2",
              "ReduceSumSquare", "ReduceL1", "ReduceLogSum", "ReduceLogSumExp"]


@pytest.mark.parametrize("op_type", REDUCE_OPS)
@pytest.mark.parametrize("axes,keepdims", [((1,), 1), ((0, 2), 0), ((-1,), 1), (None, 0)], ids=str)
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reduce(ox, op_type, axes, keepdims, opset):
    x = ox.randn(2, 3, 4)
    if op_type in ("ReduceLogSum", "ReduceProd"):
        x = np.abs(x) + 0.5
    attrs = {"keepdims": keepdims}
    axes_as_input = opset >= (13 if op_type == "ReduceSum" else 18)
    if axes is None:
        ox.check_node(op_type, {"x": x}, attrs, opset=opset)
    elif axes_as_input:
        ox.check_node(op_type, {"x": x}, attrs, opset=opset, initializers={"axes": ints(*axes)})
    else:
        ox.check_node(op_type, {"x": x}, dict(attrs, axes=list(axes)), opset=opset)


@pytest.mark.parametrize("op_type,opset", [("ReduceSum", 13), ("ReduceMean", 18)])
def test_reduce_noop_with_empty_axes(ox, op_type, opset):
    ox.check_node(op_type, {"x": ox.randn(2, 3)}, {"noop_with_empty_axes": 1}, opset=opset)


@pytest.mark.parametrize("op_type", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis,keepdims", [(0, 1), (1, 0), (-1, 1)], ids=str)
@pytest.mark.parametrize("opset", [7, 11, 13])
def test_argmax(ox, op_type, axis, keepdims, opset):
    if axis < 0 and opset < 11:
        pytest.skip("negative axes need opset 11")
    x = np.round(ox.randn(3, 4, 5) * 2)  # ties: the first index wins
    ox.check_node(op_type, {"x": x}, {"axis": axis, "keepdims": keepdims}, opset=opset, outputs=[("y", I64)])


# ----------------------------------------------------------------------------- depth / space
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("opset", [11, 13])
def test_depth_to_space(ox, mode, opset):
    ox.check_node("DepthToSpace", {"x": ox.randn(2, 8, 3, 4)}, {"blocksize": 2, "mode": mode}, opset=opset)


def test_depth_to_space_v1(ox):
    ox.check_node("DepthToSpace", {"x": ox.randn(1, 9, 2, 2)}, {"blocksize": 3}, opset=7)


def test_space_to_depth(ox):
    ox.check_node("SpaceToDepth", {"x": ox.randn(2, 3, 4, 6)}, {"blocksize": 2}, opset=13)


# ----------------------------------------------------------------------------- Resize / Upsample
COORDS = ["half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
SCALES = [(1, 1, 2, 2), (1, 1, 0.5, 0.5), (1, 1, 1.5, 3), (1, 1, 0.6, 1.7), (1, 1, 2, 1.05), (1, 1, 1.1, 1.05)]


@pytest.mark.parametrize("scales", SCALES, ids=str)
@pytest.mark.parametrize("coord", COORDS + ["tf_half_pixel_for_nn"])
@pytest.mark.parametrize("nearest", NEAREST)
def test_resize_nearest(ox, scales, coord, nearest):
    x = ox.randn(1, 2, 5, 6)
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)}
    ox.check_node("Resize", {"x": x}, {"mode": "nearest", "coordinate_transformation_mode": coord,
                                           "nearest_mode": nearest}, opset=11, initializers=inits)


@pytest.mark.parametrize("scales", SCALES, ids=str)
@pytest.mark.parametrize("coord", COORDS)
def test_resize_linear(ox, scales, coord):
    x = ox.randn(1, 2, 5, 6)
    inits = {"roi": np.zeros(0, np.float32), "scales": np.array(scales, np.float32)}
    ox.check_node("Resize", {"x": x}, {"mode": "linear", "coordinate_transformation_mode": coord}, opset=11,
                  initializers=inits)


@pytest.mark.parametrize("sizes", [(1, 2, 10, 12), (1, 2, 3, 4), (1, 2, 7, 13)], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_resize_sizes(ox, sizes, mode, opset):
    x = ox.randn(1, 2, 5, 6)
    inits = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32), "sizes": ints(*sizes)}
    names = ["x", "roi", "scales", "sizes"]
    if opset >= 13:
        inits, names = {"sizes": inits["sizes"]}, ["x", "", "", "sizes"]
    ox.check_node("Resize", {"x": x}, {"mode": mode}, opset=opset, initializers=inits, input_names=names)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [13, 18, 19])
def test_resize_scales_13(ox, mode, opset):
    inits = {"scales": np.array([1, 1, 2, 1.5], np.float32)}
    ox.check_node("Resize", {"x": ox.randn(1, 3, 4, 4)}, {"mode": mode}, opset=opset, initializers=inits,
                  input_names=["x", "", "scales"])


@pytest.mark.parametrize("scale", [0.7, 2.3, 0.3])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_output_length_in_float32(ox, scale, mode):
    # 10 x 0.7 is 6.99.. in double but 7 in float32: onnxruntime makes 7 outputs
    ox.check_node("Resize", {"x": ox.randn(1, 2, 3, 10)}, {"mode": mode}, opset=13,
                  initializers={"scales": np.array([1, 1, 1, scale], np.float32)}, input_names=["x", "", "scales"])


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_to_the_size_of_another_tensor(ox, mode):
    """PyTorch's ``F.interpolate(x, size=skip.shape[-2:])`` (FPN, U-Net): sizes computed by Shape ->
    Slice -> Concat from static shapes, evaluated at import (it was 'must be a constant initializer');
    with a dynamic input the same graph still asks for --input-shape."""
    h = ox.helper
    nodes = [h.make_node("MaxPool", ["x"], ["small"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Shape", ["x"], ["xs"]), h.make_node("Slice", ["xs", "two", "four"], ["hw"]),
             h.make_node("Shape", ["small"], ["ss"]), h.make_node("Slice", ["ss", "zero", "two"], ["nc"]),
             h.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
             h.make_node("Resize", ["small", "", "", "sizes"], ["up"], mode=mode, name="up"),
             h.make_node("Add", ["up", "x"], ["y"])]
    consts = {"zero": ints(0), "two": ints(2), "four": ints(4)}
    model = ox.make_model(nodes, {"x": ox.randn(1, 3, 10, 14)}, ["y"], consts)
    ox.check(model, {"x": ox.randn(1, 3, 10, 14)})
    graph = ox.tidlc_graph(model, 2)
    assert [op.kind for op in graph.compute_ops()] == ["pool2d", "resize", "add"]  # the shape ops are gone
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "H"
    from tidlc.diagnostics import TidlcError
    with pytest.raises(TidlcError, match="sizes .'sizes'. must be a constant.*--input-shape"):
        ox.tidlc_graph(model)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_18_axes(ox, mode):
    inits = {"scales": np.array([2, 0.5], np.float32)}
    ox.check_node("Resize", {"x": ox.randn(1, 3, 4, 6)}, {"mode": mode, "axes": [2, 3]}, opset=18,
                  initializers=inits, input_names=["x", "", "scales"])
    ox.check_node("Resize", {"x": ox.randn(1, 3, 4, 6)}, {"mode": mode, "axes": [-1]}, opset=18,
                  initializers={"sizes": ints(9)}, input_names=["x", "", "", "sizes"])


@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 0.5, 0.7), (1, 1, 1.6, 0.5)], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_19_half_pixel_symmetric(ox, scales, mode):
    inits = {"scales": np.array(scales, np.float32)}
    ox.check_node("Resize", {"x": ox.randn(1, 2, 5, 7)},
                  {"mode": mode, "coordinate_transformation_mode": "half_pixel_symmetric"}, opset=19,
                  initializers=inits, input_names=["x", "", "scales"])


@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 0.5, 0.5), (1, 1, 2, 0.5), (1, 1, 3, 1.5)], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_10(ox, scales, mode):
    ox.check_node("Resize", {"x": ox.randn(1, 2, 4, 6)}, {"mode": mode}, opset=10,
                  initializers={"scales": np.array(scales, np.float32)})


@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 2, 3)], ids=str)
@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("opset", [7, 9])
def test_upsample(ox, scales, mode, opset):
    x = ox.randn(1, 2, 3, 4)
    if opset == 7:
        ox.check_node("Upsample", {"x": x}, {"mode": mode, "scales": [float(s) for s in scales]}, opset=7)
    else:
        ox.check_node("Upsample", {"x": x}, {"mode": mode}, opset=9,
                      initializers={"scales": np.array(scales, np.float32)})


def _box_indices(shape, lo, hi):
    """ScatterND indices of the box [lo, hi) over the first len(lo) axes, in C order (PyTorch's
    export of ``x[a0:b0, a1:b1, ...] = y``)."""
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    return np.stack(grids, -1).astype(np.int64)


@pytest.mark.parametrize(("shape", "lo", "hi"), [
    ((1, 6, 4), (0, 0, 0), (1, 6, 2)),  # Conditional DETR's boxes[..., :2] += reference points
    ((1, 6, 4), (0, 2, 1), (1, 5, 3)),  # a box in two axes
    ((2, 3, 4, 5), (1, 1), (2, 3)),  # whole trailing rows (k < rank)
    ((1, 3, 4), (0, 0, 0), (1, 3, 4)),  # everything: the updates
])
def test_scatter_nd_of_a_slice_is_slices_and_concats(ox, shape, lo, hi):
    idx = _box_indices(shape, lo, hi)
    upd = ox.randn(*idx.shape[:-1], *shape[len(lo):], seed=4)
    ox.check_node("ScatterND", {"x": ox.randn(*shape), "u": upd}, opset=16, initializers={"i": idx},
                  input_names=["x", "i", "u"])
    model = ox.make_model([ox.helper.make_node("ScatterND", ["x", "i", "u"], ["y"])],
                          {"x": ox.randn(*shape), "u": upd}, ["y"], {"i": idx}, 16)
    assert "host" not in [op.kind for op in ox.tidlc_graph(model, 2).compute_ops()]


@pytest.mark.parametrize("case", ["scattered", "reduction"])
def test_scatter_nd_of_no_slice_runs_on_the_host(ox, case):
    idx = np.array([[0, 0], [0, 3], [0, 1]], np.int64) if case == "scattered" else _box_indices((1, 5, 4), (0, 1), (1, 3))
    upd = ox.randn(*idx.shape[:-1], 4, seed=4)
    attrs = {"reduction": "add"} if case == "reduction" else {}
    model = ox.make_model([ox.helper.make_node("ScatterND", ["x", "i", "u"], ["y"], **attrs)],
                          {"x": ox.randn(1, 5, 4), "u": upd}, ["y"], {"i": idx}, 16)
    ox.check(model, {"x": ox.randn(1, 5, 4), "u": upd})
    graph = ox.tidlc_graph(model, 2)
    (host,) = [op for op in graph.ops if op.kind == "host"]
    assert ("the host runs it" in host.attrs["reason"]) == (case == "scattered"), host.attrs
