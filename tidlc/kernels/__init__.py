"""Hot numeric kernels: Cython implementations with numpy twins.

Each kernel has a readable numpy twin in :mod:`tidlc.kernels.reference`
(the specification); the Cython version must equal it bit for bit. If the
compiled extensions are missing (a source checkout that was never built) the
twins are used.
"""
from tidlc.kernels import reference

im2col_f32_numpy = reference.im2col_f32
max_pool2d = reference.max_pool2d  # vectorised numpy is already fast (separable passes)

try:
    from tidlc.kernels._im2col import im2col_f32  # type: ignore[attr-defined]
    from tidlc.kernels._window import depthwise_conv2d, pool2d_window  # type: ignore[attr-defined]
    HAVE_CYTHON = True
except ImportError:  # pragma: no cover - only in unbuilt source trees
    im2col_f32 = reference.im2col_f32
    depthwise_conv2d = reference.depthwise_conv2d
    pool2d_window = reference.pool2d_window
    HAVE_CYTHON = False

__all__ = ["HAVE_CYTHON", "depthwise_conv2d", "im2col_f32", "im2col_f32_numpy", "max_pool2d",
           "pool2d_window", "reference"]
