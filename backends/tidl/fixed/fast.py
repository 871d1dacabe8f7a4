"""Fast exact MAC kernels for ``tidlc run --kernels auto``; :mod:`.reference` stays the specification.

The specification computes exact integer sums, so any *exact* way of computing
them gives the same bits. These kernels use float32 BLAS: float32 holds every
integer below 2**24 exactly, so a dot product whose partial sums stay below
2**24 (``K * max|x| * max|w| < 2**24``) is exact in a float32 GEMM. Longer
products are split along K into chunks that each satisfy the bound; the chunk
sums are added in float64 (exact below 2**53). Weights are converted once per
layer, not once per frame, and the output stage (bias, accumulator saturation,
multiplier, rounding shift, clamp) runs fused in Cython (``_requant.pyx``)
straight on the float sums.

8-bit convolutions (groups == 1), dense layers and depthwise convolutions skip the float GEMM:
``_igemm`` computes the sums exactly in integers with the output stage fused, split over
:func:`threads` OpenMP threads (:func:`set_threads`), in the variant :func:`isa` names (AVX-512
VNNI, AVX-VNNI, AVX2 or portable C: every one gives the same bits).
"""
from __future__ import annotations

import os

import numpy as np

from . import reference as ref

# The OpenMP worker threads spin briefly between parallel regions, then sleep (set before the first
# kernel module loads libgomp; OMP_WAIT_POLICY or GOMP_SPINCOUNT in the environment win). Measured
# on the shared 2-core machine (ResNet-50 8-bit, AVX2, 2 threads), under load: 1620 ms/frame with
# libgomp's default (300000 spins: the idle worker steals the core the Python thread needs between
# layers), 450 with 10000 spins, 310 passive; quiet: 58 passive, 55 with 20000 spins (MobileNetV2:
# 13.0 -> 10.8: the wake-up of a sleeping worker costs more than its short layers).
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "20000"

F32_EXACT = 1 << 24


def chunk_length(k_total: int, x_abs: int, w_abs: int) -> int:
    """Largest K-chunk whose float32 partial sums are exact (0: not even one term is)."""
    per_term = max(1, x_abs * w_abs)
    return min(k_total, (F32_EXACT - 1) // per_term)


class DenseWeights:
    """A conv2d (groups == 1) or dense weight tensor prepared for chunked float32 GEMMs."""

    def __init__(self, w: np.ndarray):
        self.shape = w.shape
        self.w2 = np.ascontiguousarray(w.reshape(w.shape[0], -1), dtype=np.float32)
        self.w_abs = ref._abs_max(w)
        self._w2_f64 = None

    def w2_f64(self) -> np.ndarray:
        if self._w2_f64 is None:
            self._w2_f64 = self.w2.astype(np.float64)
        return self._w2_f64


def conv2d_sums(x: np.ndarray, prepared: DenseWeights, strides, pads, dilations,
                max_chunks: int | None = 1) -> np.ndarray | None:
    """The exact sums of ``reference.conv2d_acc(x, w, ..., groups=1)`` held in a float array
    (float32 when K-chunks of exact float32 GEMMs suffice, else float64 like the specification),
    or None when even float64 is not exact (16-bit data).

    ``max_chunks``: use float32 chunks only up to this many (measured: one float64 GEMM beats
    several float32 GEMMs plus their float64 accumulation); None: always chunk (tests).
    """
    from tidlc.kernels import im2col_f32
    cout, cin, kh, kw = prepared.shape
    n = x.shape[0]
    taps, k = kh * kw, cin * kh * kw
    x_abs = ref._abs_max(x)
    step = chunk_length(k, x_abs, prepared.w_abs) // taps * taps
    chunks = -(-k // step) if step else 0
    if step and (max_chunks is None or chunks <= max_chunks):
        dtype, weights = np.float32, prepared.w2
    elif k * x_abs * max(prepared.w_abs, 1) < (1 << 53):
        dtype, weights, step = np.float64, prepared.w2_f64(), k
    else:
        return None
    xf = x.astype(dtype)
    if kh == kw == 1 and not any(pads):
        xs = xf[:, :, ::strides[0], ::strides[1]]
        ho, wo = xs.shape[2:]
        cols = np.ascontiguousarray(xs).reshape(n, cin, ho * wo)
    else:
        cols, ho, wo = im2col_f32(xf, kh, kw, strides, pads, dilations)
    out = np.empty((n, cout, ho * wo), dtype=dtype if step >= k else np.float64)
    for i in range(n):
        if step >= k:
            np.dot(weights, cols[i], out=out[i])
            continue
        acc = out[i]
        acc[...] = 0
        for k0 in range(0, k, step):
            acc += np.dot(weights[:, k0:k0 + step], cols[i][k0:k0 + step])
    return out.reshape(n, cout, ho, wo)


def conv2d_acc(x: np.ndarray, prepared: DenseWeights, strides, pads, dilations,
               max_chunks: int | None = 1) -> np.ndarray | None:
    """Equals ``reference.conv2d_acc(x, w, ..., groups=1)`` exactly (int64), or None (see conv2d_sums)."""
    sums = conv2d_sums(x, prepared, strides, pads, dilations, max_chunks)
    return None if sums is None else sums.astype(np.int64)


def mac_output(sums: np.ndarray, bias: np.ndarray | None, acc_width: int, mult, shift: int, lo: int, hi: int):
    """Equals ``reference.mac_output(add_bias(sums), ...)`` on NCHW sums, fused in Cython
    (32-bit accumulators; anything else runs the specification)."""
    from . import _requant
    n, c = sums.shape[:2]
    if acc_width != 32 or np.ndim(shift) != 0:
        acc = sums.astype(np.int64)
        if bias is not None:
            acc = acc + ref.channel_view(bias.astype(np.int64).reshape(-1), acc.ndim, 1)
        return ref.mac_output(acc, acc_width, mult, shift, lo, hi, 1)
    b = np.zeros(c, np.int64) if bias is None else np.ascontiguousarray(
        np.broadcast_to(bias.astype(np.int64).reshape(-1), (c,)))
    m = np.ascontiguousarray(np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (c,)))
    amin, amax = -(1 << 31), (1 << 31) - 1
    flat = np.ascontiguousarray(sums.reshape(n, c, -1))
    out = _requant.mac_output_channels(flat, b, m, int(shift), amin, amax, lo, hi)
    return out.reshape(sums.shape)


def dense_acc(x: np.ndarray, prepared: DenseWeights) -> np.ndarray:
    """Equals ``reference.dense_acc(x, w)`` exactly (int64 sums)."""
    k = prepared.w2.shape[1]
    step = chunk_length(k, ref._abs_max(x), prepared.w_abs)
    if step == 0:
        return None
    xf = x.astype(np.float32)
    if step >= k:
        return np.matmul(xf, prepared.w2.T).astype(np.int64)
    acc = np.zeros(x.shape[:-1] + (prepared.w2.shape[0],), dtype=np.float64)
    for k0 in range(0, k, step):
        acc += np.matmul(xf[..., k0:k0 + step], prepared.w2[:, k0:k0 + step].T)
    return acc.astype(np.int64)


# ----------------------------------------------------------------------------- VNNI integer path
_VNNI_OUT = (np.int8, np.uint8, np.int16, np.uint16)
_threads = 0  # 0: not chosen yet (TIDLC_NUM_THREADS, else every CPU this process may use)


def default_threads() -> int:
    env = os.environ.get("TIDLC_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def set_threads(n: int | None) -> int:
    """Threads of the integer kernels (None: the default); returns the number in use."""
    global _threads
    n = default_threads() if n is None else int(n)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _threads = n
    return n


def threads() -> int:
    return _threads or set_threads(None)


_default_threads = threads  # for the kernels' ``threads`` arguments, which shadow the name


def vnni_available() -> bool:
    """The AVX-512 VNNI variant is chosen (its depthwise and one-pixel kernels run)."""
    from . import _igemm
    isa()
    return _igemm.vnni_available()


def isa() -> str:
    """The integer-kernel variant in use: avx512vnni, avxvnni, avx2 or c (the best this CPU has, unless the
    environment variable TIDLC_ISA or :func:`set_isa` chose one)."""
    from . import _igemm
    global _isa_env_read
    if not _isa_env_read:
        _isa_env_read = True
        set_isa(os.environ.get("TIDLC_ISA") or None)
    return _igemm.isa()


_isa_env_read = False


def set_isa(name: str | None) -> str:
    """Force a variant (None: the best available); TidlcError when this CPU cannot run it."""
    from tidlc.diagnostics import TidlcError

    from . import _igemm
    global _isa_env_read
    _isa_env_read = True
    try:
        return _igemm.set_isa(name)
    except ValueError:
        raise TidlcError(f"TIDLC_ISA={name}: not available on this CPU (it has: "
                         f"{', '.join(_igemm.supported_isas())}; known: {', '.join(_igemm.ISAS)})") from None


class IntConvWeights:
    """int8 conv2d weights (groups == 1) packed for the VNNI kernel, with their row sums."""

    def __init__(self, w: np.ndarray):
        from . import _igemm
        self.shape = w.shape
        w2 = np.asarray(w).reshape(w.shape[0], -1)
        self.packed = _igemm.pack_weights(w2)
        self.row_sums = w2.astype(np.int64).sum(axis=1)
        self.packed_rows = w2
        self._packed = {}  # the layouts of the other kernels (AVX2 pairs, one-pixel), packed when first needed

    def gemm(self, layout: str) -> np.ndarray:
        """The AVX2 ("pairs") or AVX-VNNI ("quads") GEMM's layout (``_igemm.gemm_layout``)."""
        from . import _igemm
        if layout not in self._packed:
            self._packed[layout] = (_igemm.pack_weights_pairs(self.packed_rows) if layout == "pairs" else
                                    _igemm.pack_weights_quads(self.packed_rows))
        return self._packed[layout]

    def gemv(self) -> np.ndarray:
        """The one-pixel kernel's layout in the chosen variant (``_igemm.gemv_layout``)."""
        from . import _igemm
        layout = _igemm.gemv_layout()
        if layout not in self._packed:
            self._packed[layout] = (_igemm.pack_weights_gemv(self.packed_rows) if layout == "vnni16" else
                                    _igemm.pack_weights_pairs(self.packed_rows, 8) if layout == "pairs8" else
                                    np.ascontiguousarray(self.packed_rows, dtype=np.int8))
        return self._packed[layout]

    @staticmethod
    def supports(w) -> bool:
        from . import _igemm
        return (w is not None and w.dtype == np.int8 and w.ndim == 4
                and int(np.prod(w.shape[1:])) <= _igemm.MAX_K and _igemm.available())


class VnniConv:
    """One 8-bit conv2d layer (groups == 1) on the VNNI kernel: constants prepared once, then
    :meth:`run` per frame. Equals ``mac_output(add_bias(conv2d_acc(x, w, ..., 1), bias), 32, mult,
    shift, lo, hi)`` cast to ``out_dtype``. Build with :meth:`plan`, which returns None for cases
    the kernel does not cover (the caller keeps its other path)."""

    def __init__(self, weights: IntConvWeights, x_dtype, strides, pads, dilations, out_shape, mult, shift,
                 lo, hi, out_dtype, mult_arr):
        _, m, ho, wo = out_shape
        self.weights, self.signed = weights, np.dtype(x_dtype) == np.int8
        self.strides, self.pads, self.dilations = tuple(strides), tuple(pads), tuple(dilations)
        self.ho, self.wo, self.m = ho, wo, m
        self.mult, self.shift, self.lo, self.hi = mult_arr, int(shift), int(lo), int(hi)
        self.out_dtype = np.dtype(out_dtype)
        self._bias_key = self._plan = None
        kh, kw = weights.shape[2:]
        self.need_h = (ho - 1) * strides[0] + (kh - 1) * dilations[0] + 1
        self.need_w = (wo - 1) * strides[1] + (kw - 1) * dilations[1] + 1

    @classmethod
    def plan(cls, weights: IntConvWeights, x_dtype, strides, pads, dilations, out_shape, mult, shift, lo, hi,
             out_dtype) -> VnniConv | None:
        out_dtype = np.dtype(out_dtype)
        if (np.dtype(x_dtype) not in (np.int8, np.uint8) or out_dtype.type not in _VNNI_OUT
                or np.ndim(shift) != 0 or not 0 <= int(shift) <= 62 or len(out_shape) != 4):
            return None
        m = weights.shape[0]
        mult_arr = np.ascontiguousarray(np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (m,)))
        if int(np.abs(mult_arr).max()) >= 1 << 31:
            return None
        return cls(weights, x_dtype, strides, pads, dilations, out_shape, mult, shift, lo, hi, out_dtype, mult_arr)

    def _kernel_plan(self, bias, c: int):
        """The Cython plan for this bias (cached: a constant bias is the same array every frame)."""
        from . import _igemm
        key = (id(bias), c)
        if self._plan is None or self._bias_key != key:
            m = self.m
            b = np.zeros(m, np.int64) if bias is None else np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (m,))
            b = np.ascontiguousarray(b - 128 * self.weights.row_sums if self.signed else b)
            if int(np.abs(b).max()) >= 1 << 62:
                return None
            kh, kw = self.weights.shape[2:]
            self._plan = _igemm.ConvPlan(self.weights.packed, m, c, kh, kw, self.strides, self.dilations, self.ho,
                                         self.wo, b, self.mult, self.shift, self.lo, self.hi, self.out_dtype,
                                         self.signed)
            self._bias_key, self._bias_ref = key, bias
        layout = self._plan.needs_pairs
        if layout is not None:
            self._plan.set_pairs(self.weights.gemm(layout), layout)
        return self._plan

    def run(self, x: np.ndarray, bias, threads: int | None = None) -> np.ndarray | None:
        """The layer on ``x`` over ``threads`` worker threads (None: :func:`threads`), or None when
        ``x`` is not of the planned element type."""
        if x.ndim != 4 or (x.dtype == np.int8) != self.signed or x.dtype not in (np.int8, np.uint8):
            return None
        plan = self._kernel_plan(bias, x.shape[1])
        if plan is None:
            return None
        xb = np.ascontiguousarray(x).view(np.uint8)
        pt, pl = self.pads[:2]
        extra_h, extra_w = max(0, self.need_h - xb.shape[2] - pt), max(0, self.need_w - xb.shape[3] - pl)
        if pt or pl or extra_h or extra_w:  # zero is the code of 0 in both int8 and uint8
            xb = np.pad(xb, ((0, 0), (0, 0), (pt, extra_h), (pl, extra_w)))
        n = x.shape[0]
        out = np.empty((n, self.m, self.ho * self.wo), self.out_dtype)
        raw = out.view(np.uint8)
        kh, kw = self.weights.shape[2:]
        if xb.shape[2:] == (kh, kw) and self.ho == self.wo == 1 and self.dilations == (1, 1):  # a classifier
            packed = self.weights.gemv()
            for i in range(n):
                plan.gemv(packed, xb[i].reshape(-1), raw[i].reshape(-1))
            return out.reshape(n, self.m, 1, 1)
        threads = threads or _default_threads()
        for i in range(n):
            plan.run(xb[i], raw[i], threads)
        return out.reshape(n, self.m, self.ho, self.wo)


class VnniDense:
    """An 8-bit dense layer (x (..., K) @ w.T (M, K)) on the VNNI kernel, as a 1x1 convolution of
    the K x rows matrix (so a fixed-point run calls no BLAS: OpenBLAS threads spin after every
    call and would steal the cores of the worker threads)."""

    def __init__(self, conv: VnniConv, rows: int):
        self.conv, self.rows = conv, rows

    @classmethod
    def plan(cls, w: np.ndarray, x_dtype, out_shape, mult, shift, lo, hi, out_dtype) -> VnniDense | None:
        w = np.asarray(w)
        if w.ndim != 2 or not IntConvWeights.supports(w.reshape(w.shape + (1, 1))):
            return None
        rows = int(np.prod(out_shape[:-1]))
        conv = VnniConv.plan(IntConvWeights(w.reshape(w.shape + (1, 1))), x_dtype, (1, 1), (0, 0, 0, 0), (1, 1),
                             (1, w.shape[0], 1, rows), mult, shift, lo, hi, out_dtype)
        return None if conv is None else cls(conv, rows)

    def run(self, x: np.ndarray, bias, threads: int | None = None) -> np.ndarray | None:
        k = x.shape[-1]
        if x.size != self.rows * k:
            return None
        cols = np.ascontiguousarray(x.reshape(self.rows, k).T).reshape(1, k, 1, self.rows)
        out = self.conv.run(cols, bias, threads)
        return None if out is None else out.reshape(-1, self.rows).T.reshape(x.shape[:-1] + (-1,))


class VnniDepthwise:
    """An 8-bit depthwise conv2d (groups == channels == outputs, int8 weights, W stride 1 or 2) on
    the depthwise kernel of the chosen variant (igemm.h: AVX-512; igemm_port.h: AVX2, portable C),
    output stage fused; channels split over the worker threads."""

    def __init__(self, plan, signed: bool, pads, out_shape, out_dtype):
        self.plan, self.signed, self.pads = plan, signed, tuple(pads)
        self.out_shape, self.out_dtype = tuple(out_shape), np.dtype(out_dtype)

    @classmethod
    def plan_for(cls, w: np.ndarray, groups: int, x_dtype, strides, pads, dilations, out_shape, mult, shift, lo, hi,
                 out_dtype) -> VnniDepthwise | None:
        w = np.asarray(w)
        out_dtype = np.dtype(out_dtype)
        if (w.ndim != 4 or w.dtype != np.int8 or w.shape[1] != 1 or w.shape[0] != groups or len(out_shape) != 4
                or np.dtype(x_dtype) not in (np.int8, np.uint8) or out_dtype.type not in _VNNI_OUT or min(pads) < 0
                or np.ndim(shift) != 0 or not 0 <= int(shift) <= 62 or strides[1] not in (1, 2)):
            return None
        c = w.shape[0]
        mult_arr = np.ascontiguousarray(np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (c,)))
        if int(np.abs(mult_arr).max()) >= 1 << 31:
            return None
        ho, wo = out_shape[2:]
        plan = (np.ascontiguousarray(w.reshape(c, w.shape[2], w.shape[3])), tuple(strides), tuple(dilations), ho, wo,
                mult_arr, int(shift), int(lo), int(hi), out_dtype, np.dtype(x_dtype) == np.int8)
        return cls(plan, plan[-1], pads, out_shape, out_dtype)

    def _kernel(self, bias):
        from . import _igemm
        if getattr(self, "_bias_ref", self) is not bias:
            c = self.plan[0].shape[0]
            b = np.zeros(c, np.int64) if bias is None else np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (c,))
            w, strides, dilations, ho, wo, mult, shift, lo, hi, out_dtype, signed = self.plan
            self._compiled = _igemm.DepthwisePlan(w, strides, self.pads, dilations, ho, wo, np.ascontiguousarray(b), mult,
                                                  shift, lo, hi, out_dtype, signed)
            self._bias_ref = bias
        return self._compiled

    def run(self, x: np.ndarray, bias, threads: int | None = None) -> np.ndarray | None:
        if x.ndim != 4 or x.dtype not in (np.int8, np.uint8) or (x.dtype == np.int8) != self.signed:
            return None
        threads = threads or _default_threads()
        kernel = self._kernel(bias)
        xb = np.ascontiguousarray(x).view(np.uint8)  # the kernel reads padding as zeros itself
        n, c, ho, wo = x.shape[0], *self.out_shape[1:]
        out = np.empty((n, c, ho * wo), self.out_dtype)
        raw = out.view(np.uint8)
        for i in range(n):
            kernel.run(xb[i], raw[i], threads)
        return out.reshape(n, c, ho, wo)


def conv2d_vnni(x: np.ndarray, prepared: IntConvWeights, bias, strides, pads, dilations, out_shape,
                mult, shift: int, lo: int, hi: int, out_dtype) -> np.ndarray | None:
    """One-off :class:`VnniConv` (tests): the result, or None when the kernel does not cover the case."""
    conv = VnniConv.plan(prepared, x.dtype, strides, pads, dilations, out_shape, mult, shift, lo, hi, out_dtype)
    return None if conv is None else conv.run(x, bias)
