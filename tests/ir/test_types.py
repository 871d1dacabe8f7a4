"""TensorType and QuantInfo: frozen values, conversions, validation messages."""
import attrs
import numpy as np
import pytest

from tidlc.ir import QuantInfo, TensorType
from tidlc.ir.types import dtype_of, numpy_dtype


def test_types_are_frozen_values():
    a = TensorType((1, 3, None, None), "f32", "NCHW")
    b = TensorType([1, 3, -1, None], "f32", "NCHW")  # -1 and None both mean "unknown"
    assert a == b and hash(a) == hash(b) and a.shape == (1, 3, None, None)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        a.dtype = "f16"
    assert a.with_shape((1, 3, 4, 4)).is_static and not a.is_static
    assert a.with_dtype("i8").dtype == "i8" and a.with_layout(None).layout is None
    assert TensorType(np.array([2, 3])).shape == (2, 3)
    assert all(type(d) is int for d in TensorType(np.array([2, 3])).shape)


def test_rank_size_and_text():
    assert TensorType(None).rank is None and str(TensorType(None)) == "tensor<*xf32>"
    assert TensorType(()).rank == 0 and TensorType(()).size == 1 and str(TensorType((), "i64")) == "tensor<i64>"
    assert TensorType((2, 3, 4)).size == 24
    q = QuantInfo(8, False, 0.5, zero_point=3, shift=4)
    assert str(TensorType((1, None), "u8", quant=q)) == \
        "tensor<1x?xu8, !q<bits=8, signed=false, scale=0.5, zp=3, shift=4>>"
    with pytest.raises(ValueError, match=r"^size of a dynamic shape tensor<\?x3xf32>$"):
        _ = TensorType((None, 3)).size


@pytest.mark.parametrize("make, message", [
    (lambda: TensorType((1,), "f8"),
     "unknown element type 'f8'; one of f32, f64, f16, i8, u8, i16, u16, i32, u32, i64, bool"),
    (lambda: TensorType((1,), "f32", "NCWH"), "unknown layout 'NCWH'; one of NCHW, NHWC"),
    (lambda: QuantInfo(7, True, 1.0), "quantization bits must be one of 4, 8, 12, 16, 32, 64, got 7"),
    (lambda: QuantInfo(8, True, [1.0, 0.0]), "quantization scales must be positive and finite, got [1.0, 0.0]"),
    (lambda: QuantInfo(8, True, []), "quantization scales must be positive and finite, got []"),
    (lambda: dtype_of(np.complex64), "no IR element type for numpy dtype complex64"),
])
def test_validation_messages(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value) == message


def test_quant_ranges_and_storage():
    assert (QuantInfo(8, True, 1.0).qmin, QuantInfo(8, True, 1.0).qmax) == (-128, 127)
    assert (QuantInfo(8, False, 1.0).qmin, QuantInfo(8, False, 1.0).qmax) == (0, 255)
    assert (QuantInfo(16, True, 1.0).qmin, QuantInfo(16, True, 1.0).qmax) == (-32768, 32767)
    assert QuantInfo(4, False, 1.0).storage == "u8"
    assert QuantInfo(12, True, 1.0).storage == "i16"
    assert QuantInfo(32, True, 1.0).storage == "i32"
    per_channel = QuantInfo(8, True, np.array([0.5, 0.25], np.float32), axis=0)
    assert per_channel.scale == (0.5, 0.25) and all(type(s) is float for s in per_channel.scale)


def test_dtype_mapping():
    for name in ("f32", "f64", "f16", "i8", "u8", "i16", "u16", "i32", "u32", "i64", "bool"):
        assert dtype_of(numpy_dtype(name)) == name
        assert dtype_of(np.zeros(2, numpy_dtype(name))) == name
    assert dtype_of(np.float32(1)) == "f32" and dtype_of(np.int64) == "i64"
