"""Hot numeric kernels: Cython implementations with numpy twins.

Each kernel has a readable numpy twin in :mod:`tidlc.kernels.reference`
(the specification); the Cython version must equal it bit for bit. If the
compiled extension is missing (a source checkout that was never built) the
twin is used.
"""
from tidlc.kernels.reference import im2col_f32 as im2col_f32_numpy

try:
    from tidlc.kernels._im2col import im2col_f32  # type: ignore[attr-defined]
    HAVE_CYTHON = True
except ImportError:  # pragma: no cover - only in unbuilt source trees
    im2col_f32 = im2col_f32_numpy
    HAVE_CYTHON = False

__all__ = ["HAVE_CYTHON", "im2col_f32", "im2col_f32_numpy"]
