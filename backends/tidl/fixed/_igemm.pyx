# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Exact 8-bit convolutions (GEMM, depthwise, one-pixel), output stage fused, in the variant
:func:`isa` names: AVX-512 VNNI (igemm.h), AVX-VNNI, AVX2 or portable C (igemm_port.h).

Twin: ``reference.mac_output(reference.add_bias(reference.conv2d_acc(x, w, ...), b), 32, ...)``.
``run(x, out, threads)`` splits the work (output pixels and channels, or channels) into
``threads`` contiguous parts on OpenMP threads (when the build has OpenMP; else one after the
other): the parts never share a buffer, so the result does not depend on the thread count.
"""
from cython.parallel import prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t
from libc.stdlib cimport calloc, free, malloc

import numpy as np

cdef extern from "igemm.h" nogil:
    int IG_MR
    int IG_NR
    int IG_HAVE_VNNI
    ctypedef struct ig_stage_t:
        const int64_t *bias
        const int64_t *mult
        int shift
        int64_t lo, hi
        void *out
        int out_kind
        int narrow
    ctypedef struct ig_conv_t:
        const uint8_t *x
        int is_signed
        int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo
        const int8_t *apack
        int M, K
        ig_stage_t st
        const int32_t *wpair
        int msplit
    ctypedef struct ig_dw_t:
        const uint8_t *x
        int is_signed
        int C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo
        const int8_t *w
        ig_stage_t st
    size_t ig_scratch_bytes(int K)
    int ig_available()
    int ig_conv_panels(const ig_conv_t *p, int pb, int pe, uint8_t *scratch)
    int ig_dw_channels(const ig_dw_t *p, int cb, int ce, int32_t *acc)
    int ig_gemv(const ig_conv_t *p, const int8_t *wpack, const uint8_t *x)
    ctypedef int (*ig_part_fn)(const void *p, int begin, int end, void *scratch) noexcept nogil
    int ig_conv_part(const void *p, int begin, int end, void *scratch)
    int ig_dw_part(const void *p, int begin, int end, void *scratch)

cdef extern from "igemm_port.h" nogil:
    int IGP_MR
    int IGP_GROUP
    size_t igp_scratch_bytes(int K)
    size_t igp2_scratch_bytes(int K)
    int igp2_items(const ig_conv_t *p)
    size_t igp_dw_scratch_bytes(const ig_dw_t *p)
    int igp_gemv_avx2(const ig_conv_t *p, const int32_t *wpack, const uint8_t *x)
    int igp_gemv_c(const ig_conv_t *p, const int8_t *w, const uint8_t *x)
    int igp_dw_part_avx2(const void *p, int begin, int end, void *scratch)
    int igp_dw_part_c(const void *p, int begin, int end, void *scratch)
    int igp_have_avx2()
    int igp_have_avxvnni()
    int igp_conv_part_avxvnni(const void *p, int begin, int end, void *scratch)
    int igp_conv_part_c(const void *p, int begin, int end, void *scratch)
    int igp_conv_part_avx2(const void *p, int begin, int end, void *scratch)

cdef extern from "igemm_neon.h" nogil:  # aarch64 NEON (SDOT when the CPU has dotprod); stubs elsewhere
    int ign_have_neon()
    int ign_conv_part(const void *p, int begin, int end, void *scratch)
    int ign_dw_part(const void *p, int begin, int end, void *scratch)

MR = IG_MR
NR = IG_NR
MAX_K = 65792  # K * 255 * 128 < 2**31: every int32 sum is exact
OUT_KINDS = {np.dtype(np.int8): 0, np.dtype(np.uint8): 1, np.dtype(np.int16): 2, np.dtype(np.uint16): 3}


# The variants of the kernels, best first (igemm.h: AVX-512 VNNI; igemm_port.h: AVX-VNNI 256-bit
# vpdpbusd, AVX2 with vpmaddwd, portable C). The depthwise and one-pixel kernels of the avxvnni
# variant are the AVX2 ones (a CPU with AVX-VNNI has AVX2).
ISAS = ("avx512vnni", "avxvnni", "avx2", "neon", "c")  # neon: aarch64, igemm_neon.h
cdef int _isa = -1  # index into ISAS; -1: not chosen yet


def supported_isas() -> tuple:
    """The variants this CPU (and build) can run, best first."""
    have = []
    if ig_available():
        have.append("avx512vnni")
    if igp_have_avxvnni():
        have.append("avxvnni")
    if igp_have_avx2():
        have.append("avx2")
    if ign_have_neon():
        have.append("neon")
    have.append("c")
    return tuple(have)


def set_isa(name) -> str:
    """Choose the variant (None: the best this CPU has); ValueError when it cannot run here."""
    global _isa
    have = supported_isas()
    if name is None or name == "":
        name = have[0]
    if name not in have:
        raise ValueError(name)
    _isa = ISAS.index(name)
    return name


def isa() -> str:
    if _isa < 0:
        set_isa(None)
    return ISAS[_isa]


def available() -> bool:
    """The convolution kernel runs (always: the portable C variant is the last resort)."""
    return True


def vnni_available() -> bool:
    """The AVX-512 VNNI kernels are chosen."""
    return isa() == "avx512vnni"


def gemv_layout() -> str:
    """The weight layout :meth:`ConvPlan.gemv` reads in the chosen variant: "vnni16"
    (:func:`pack_weights_gemv`), "pairs8" (:func:`pack_weights_pairs` with mr 8) or "rows"
    (the (M, K) int8 rows as they are)."""
    name = isa()
    return "vnni16" if name == "avx512vnni" else ("pairs8" if name in ("avxvnni", "avx2") else "rows")


def gemm_layout():
    """The packed weights the chosen variant's GEMM reads besides :func:`pack_weights`: "pairs"
    (AVX2), "quads" (AVX-VNNI), or None."""
    name = isa()
    return "pairs" if name == "avx2" else ("quads" if name == "avxvnni" else None)


def pack_weights_quads(w) -> np.ndarray:
    """(M, K) int8 -> [M/IGP_MR][K4][IGP_MR] int32, zero padded: each int32 the 4 bytes w[m, 4k..4k+3]
    (the AVX-VNNI GEMM's layout)."""
    return np.ascontiguousarray(pack_weights(w, IGP_MR)).view(np.int32).reshape(-1, -(-np.shape(w)[1] // 4), IGP_MR)


def pack_weights_pairs(w, int mr=IGP_MR) -> np.ndarray:
    """(M, K) int8 -> [M/mr][K2][mr] int32, zero padded: each int32 holds the int16 pair
    (w[m, 2k], w[m, 2k + 1]) (low half first), the layout of the AVX2 kernels (igemm_port.h)."""
    w = np.asarray(w, dtype=np.int8)
    m, k = w.shape
    mp, k2 = -(-m // mr) * mr, -(-k // 2)
    padded = np.zeros((mp, 2 * k2), "<i2")
    padded[:m, :k] = w
    pairs = padded.view("<i4").astype(np.int32, copy=False)
    return np.ascontiguousarray(pairs.reshape(mp // mr, mr, k2).transpose(0, 2, 1))


def pack_weights(w, int mr=IG_MR) -> np.ndarray:
    """(M, K) int8 -> [M/mr][K4][mr][4] int8, zero padded (the layout ig_kernel reads with mr = MR)."""
    w = np.asarray(w, dtype=np.int8)
    m, k = w.shape
    mp, kp = -(-m // mr) * mr, -(-k // 4) * 4
    padded = np.zeros((mp, kp), np.int8)
    padded[:m, :k] = w
    return np.ascontiguousarray(padded.reshape(mp // mr, mr, kp // 4, 4).transpose(0, 2, 1, 3))


cdef int _run_parts(ig_part_fn fn, const void *p, int total, int threads, size_t scratch) except -9:
    """fn over [0, total) in ``threads`` contiguous parts on OpenMP threads, each with its own
    64-byte aligned scratch of ``scratch`` bytes; the first non-zero return code, or 0."""
    cdef int parts = max(1, min(threads, total)), t, rc = 0
    cdef size_t size = scratch + 64
    cdef uint8_t *raw = <uint8_t *>malloc(size * parts)
    cdef int *rcs = <int *>calloc(parts, sizeof(int))
    if raw == NULL or rcs == NULL:
        free(raw)
        free(rcs)
        raise MemoryError()
    with nogil:
        if parts == 1:  # no OpenMP region (its start and end cost more than the small layers)
            rcs[0] = fn(p, 0, total, <void *>((<size_t>raw + 63) & ~(<size_t>63)))
        else:
            for t in prange(parts, num_threads=parts, schedule="static", chunksize=1):
                rcs[t] = fn(p, total * t // parts, total * (t + 1) // parts,
                            <void *>((<size_t>(raw + size * t) + 63) & ~(<size_t>63)))
    for t in range(parts):
        rc = rc or rcs[t]
    free(raw)
    free(rcs)
    return rc


def pack_weights_gemv(w) -> np.ndarray:
    """(M, K) int8 -> [M/16][K4][16][4] int8, zero padded (the layout ig_gemv reads)."""
    w = np.asarray(w, dtype=np.int8)
    m, k = w.shape
    mp, kp = -(-m // 16) * 16, -(-k // 4) * 4
    padded = np.zeros((mp, kp), np.int8)
    padded[:m, :k] = w
    return np.ascontiguousarray(padded.reshape(mp // 16, 16, kp // 4, 4).transpose(0, 2, 1, 3))


cdef int _narrow(int64_t sum_abs, const int64_t[::1] bias, const int64_t[::1] mult, int shift):
    """The int32-lane form of the output stage the bounds allow (ig_row_out): 2 (direct) when
    (|sum| + |bias|) * |mult| + 2**(shift-1) < 2**31 for every channel; 1 (split) when
    |sum| + |bias| < 2**31, 0 <= mult < 2**15 and 17 <= shift <= 46; else 0 (int64 lanes)."""
    cdef Py_ssize_t i
    cdef int64_t v, m, limit = 1 << 31
    cdef bint direct = 0 <= shift <= 30, split = 17 <= shift <= 46
    for i in range(bias.shape[0]):
        v = sum_abs + (bias[i] if bias[i] >= 0 else -bias[i])
        m = mult[i] if mult[i] >= 0 else -mult[i]
        if v >= limit:
            return 0
        if direct and (m >= limit or v * m + ((<int64_t>1 << shift) >> 1) >= limit):
            direct = False
        if split and (mult[i] < 0 or mult[i] >= (1 << 15)):
            split = False
    return 2 if direct else (1 if split else 0)


cdef int _set_stage(ig_stage_t *st, const int64_t[::1] bias, const int64_t[::1] mult, int shift, int64_t lo,
                    int64_t hi, out_dtype, int64_t sum_abs) except -1:
    """The output stage of a plan (the arrays must outlive it: the plan keeps them)."""
    st.bias = &bias[0]
    st.mult = &mult[0]
    st.shift = shift
    st.lo, st.hi = lo, hi
    st.out_kind = OUT_KINDS[np.dtype(out_dtype)]
    st.narrow = _narrow(sum_abs, bias, mult, shift)
    return 0


cdef void *_out_rows(ig_stage_t *st, uint8_t[:, ::1] out, Py_ssize_t rows, Py_ssize_t pixels, name) except NULL:
    """Point the stage at ``out``, the (rows, pixels) result viewed as bytes, after checking its size."""
    cdef Py_ssize_t itemsize = 1 if st.out_kind <= 1 else 2
    if out.shape[0] != rows or out.shape[1] != pixels * itemsize:
        raise ValueError(f"{name}: bad output buffer")
    st.out = <void *>&out[0, 0]
    return st.out


cdef class ConvPlan:
    """One convolution layer's constants (packed weights, per-channel bias and multiplier, output
    stage); :meth:`run` computes panels of one image."""
    cdef ig_conv_t p
    cdef object keep  # the arrays p points into
    cdef object pairs  # the AVX2 / AVX-VNNI GEMM's weights, set by set_pairs
    cdef object pairs_layout
    cdef size_t scratch

    def __init__(self, const int8_t[:, :, :, ::1] apack, int m, int c, int kh, int kw, strides, dilations,
                 int ho, int wo, const int64_t[::1] bias, const int64_t[::1] mult, int shift, int64_t lo,
                 int64_t hi, out_dtype, bint is_signed):
        cdef int k = c * kh * kw
        if k > MAX_K or not 0 <= shift <= 62 or bias.shape[0] != m or mult.shape[0] != m or m < 1:
            raise ValueError("ConvPlan: unsupported parameters")
        if apack.shape[0] * IG_MR < m or apack.shape[1] * 4 < k:
            raise ValueError("ConvPlan: packed weights do not match")
        self.keep = (apack, bias, mult)
        self.p.is_signed = is_signed
        self.p.C, self.p.kh, self.p.kw = c, kh, kw
        self.p.sh, self.p.sw = strides
        self.p.dh, self.p.dw = dilations
        if min(self.p.sh, self.p.sw, self.p.dh, self.p.dw) < 1 or ho < 1 or wo < 1:
            raise ValueError("ConvPlan: bad geometry")
        self.p.Ho, self.p.Wo = ho, wo
        self.p.apack = &apack[0, 0, 0, 0]
        self.p.M, self.p.K = m, k
        _set_stage(&self.p.st, bias, mult, shift, lo, hi, out_dtype, <int64_t>k * 255 * 128)  # |packed sums|
        self.scratch = max(ig_scratch_bytes(k), igp_scratch_bytes(k), igp2_scratch_bytes(k))
        self.p.wpair = NULL
        self.pairs = None

    @property
    def needs_pairs(self):
        """The weight layout the chosen variant's GEMM reads when :meth:`set_pairs` has not given it
        ("pairs": :func:`pack_weights_pairs`, AVX2; "quads": :func:`pack_weights_quads`, AVX-VNNI), else None."""
        want = gemm_layout()
        return want if want is not None and want != self.pairs_layout else None

    def set_pairs(self, const int32_t[:, :, ::1] packed, layout):
        """The weights in ``layout`` ("pairs" or "quads", see :attr:`needs_pairs`)."""
        cdef int taps = 2 if layout == "pairs" else 4
        if layout not in ("pairs", "quads") or packed.shape[0] * IGP_MR < self.p.M or \
                packed.shape[1] * taps < self.p.K or packed.shape[2] != IGP_MR:
            raise ValueError("ConvPlan.set_pairs: packed weights do not match")
        self.pairs, self.pairs_layout = packed, layout
        self.p.wpair = &packed[0, 0, 0]

    @property
    def narrow(self) -> int:
        return self.p.st.narrow

    def gemv(self, wpack, const uint8_t[::1] x, uint8_t[::1] out):
        """One output pixel whose window is the whole input: ``x`` the K input bytes in (c, i, j)
        order, ``wpack`` the weights in the layout :func:`gemv_layout` names, ``out`` the M results
        as bytes."""
        cdef ig_conv_t p = self.p
        cdef int itemsize = 1 if p.st.out_kind <= 1 else 2, rc
        cdef const int8_t[:, :, :, ::1] w16
        cdef const int32_t[:, :, ::1] w8
        cdef const int8_t[:, ::1] rows
        if x.shape[0] != p.K or out.shape[0] != p.M * itemsize:
            raise ValueError("ConvPlan.gemv: buffers do not match the layer")
        p.st.out = <void *>&out[0]
        layout = gemv_layout()
        if layout == "vnni16":
            w16 = wpack
            if w16.shape[0] * 16 < p.M or w16.shape[1] * 4 < p.K:
                raise ValueError("ConvPlan.gemv: packed weights do not match the layer")
            with nogil:
                rc = ig_gemv(&p, &w16[0, 0, 0, 0], &x[0])
        elif layout == "pairs8":
            w8 = wpack
            if w8.shape[0] * 8 < p.M or w8.shape[1] * 2 < p.K or w8.shape[2] != 8:
                raise ValueError("ConvPlan.gemv: packed weights do not match the layer")
            with nogil:
                rc = igp_gemv_avx2(&p, &w8[0, 0, 0], &x[0])
        else:
            rows = wpack
            if rows.shape[0] != p.M or rows.shape[1] != p.K:
                raise ValueError("ConvPlan.gemv: weights do not match the layer")
            with nogil:
                rc = igp_gemv_c(&p, &rows[0, 0], &x[0])
        if rc != 0:
            raise RuntimeError("the one-pixel kernel failed")

    def run(self, const uint8_t[:, :, ::1] x, uint8_t[:, ::1] out, int threads=1):
        """One image: ``x`` (C, H, W) bytes padded already (zeros are the code of 0), ``out`` the
        (M, ho * wo) result viewed as bytes."""
        cdef ig_conv_t p = self.p
        cdef ig_part_fn fn = ig_conv_part
        if x.shape[0] != p.C or (p.Ho - 1) * p.sh + (p.kh - 1) * p.dh >= x.shape[1] or \
                (p.Wo - 1) * p.sw + (p.kw - 1) * p.dw >= x.shape[2]:
            raise ValueError("ConvPlan.run: the padded input does not match the layer")
        _out_rows(&p.st, out, p.M, p.Ho * p.Wo, "ConvPlan.run")
        p.x = &x[0, 0, 0]
        p.H, p.W = x.shape[1], x.shape[2]
        name = isa()
        cdef int total = (p.Ho * p.Wo + IG_NR - 1) // IG_NR, groups
        if name in ("avxvnni", "avx2"):
            if p.wpair == NULL or self.pairs_layout != gemm_layout():
                raise ValueError(f"ConvPlan.run: the {name} kernel needs set_pairs first")
            fn = igp_conv_part_avx2 if name == "avx2" else igp_conv_part_avxvnni
            # few pixel groups for the threads: split the output channels too (each part packs
            # the columns of its own pixels again, a small cost next to the channels it computes)
            groups = (p.Ho * p.Wo + IGP_GROUP - 1) // IGP_GROUP
            p.msplit = 1
            if threads > 1 and groups < 4 * threads:
                p.msplit = max(1, min(threads, (p.M + IGP_MR - 1) // IGP_MR))
            total = igp2_items(&p)
        elif name == "neon":
            fn = ign_conv_part
        elif name == "c":
            fn = igp_conv_part_c
        if _run_parts(fn, &p, total, threads, self.scratch) != 0:
            raise RuntimeError(f"the {name} convolution kernel is not available in this build")


cdef class DepthwisePlan:
    """One depthwise layer (groups == channels == outputs, 8-bit, stride 1 or 2 along W):
    :meth:`run` computes a range of channels of one image."""
    cdef ig_dw_t p
    cdef object keep

    def __init__(self, const int8_t[:, :, ::1] w, strides, pads, dilations, int ho, int wo, const int64_t[::1] bias,
                 const int64_t[::1] mult, int shift, int64_t lo, int64_t hi, out_dtype, bint is_signed):
        cdef int c = w.shape[0]
        if not 0 <= shift <= 62 or bias.shape[0] != c or mult.shape[0] != c or c < 1 or ho < 1 or wo < 1:
            raise ValueError("DepthwisePlan: unsupported parameters")
        self.keep = (w, bias, mult)
        self.p.is_signed = is_signed
        self.p.C, self.p.kh, self.p.kw = c, w.shape[1], w.shape[2]
        self.p.sh, self.p.sw = strides
        self.p.dh, self.p.dw = dilations
        self.p.pt, self.p.pl = pads[0], pads[1]
        if self.p.sw not in (1, 2) or min(self.p.sh, self.p.dh, self.p.dw) < 1 or min(self.p.pt, self.p.pl) < 0:
            raise ValueError("DepthwisePlan: stride along W must be 1 or 2")
        self.p.Ho, self.p.Wo = ho, wo
        self.p.w = &w[0, 0, 0]
        _set_stage(&self.p.st, bias, mult, shift, lo, hi, out_dtype, <int64_t>self.p.kh * self.p.kw * 255 * 128)

    @property
    def narrow(self) -> int:
        return self.p.st.narrow

    def run(self, const uint8_t[:, :, ::1] x, uint8_t[:, ::1] out, int threads=1):
        """One image: ``x`` (C, H, W) bytes, not padded; ``out`` the (C, ho * wo) result as bytes."""
        cdef ig_dw_t p = self.p
        if x.shape[0] != p.C or x.shape[1] < 1 or x.shape[2] < 1:
            raise ValueError("DepthwisePlan.run: the input does not match the layer")
        _out_rows(&p.st, out, p.C, p.Ho * p.Wo, "DepthwisePlan.run")
        p.x = &x[0, 0, 0]
        p.H, p.W = x.shape[1], x.shape[2]
        cdef ig_part_fn fn = ig_dw_part
        cdef size_t scratch = ((p.Wo + 31) // 32) * 32 * sizeof(int32_t)
        name = isa()
        if name in ("avxvnni", "avx2"):
            fn, scratch = igp_dw_part_avx2, igp_dw_scratch_bytes(&p)
        elif name == "neon":
            fn = ign_dw_part
        elif name == "c":
            fn = igp_dw_part_c
        if _run_parts(fn, &p, p.C, threads, scratch) != 0:
            raise RuntimeError(f"the {name} depthwise kernel is not available in this build")
