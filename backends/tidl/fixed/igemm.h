/* Exact 8-bit integer convolution: u8 x s8 -> s32 GEMM on AVX-512 VNNI (vpdpbusd), with the
 * im2col packing and the MAC output stage (bias, 32-bit saturation, multiplier, rounding shift,
 * clamp) fused. Used by _igemm.pyx; the numpy specification is reference.conv2d_acc +
 * reference.mac_output, and tests/backend/test_igemm.py checks that they agree bit for bit.
 *
 * Layouts (K = C * kh * kw in (c, i, j) order, K4 = ceil(K / 4), zero padded):
 *   packed weights  [M / IG_MR][K4][IG_MR][4]  int8    (prepared once per layer)
 *   packed columns  [panel][K4][IG_NR][4]      uint8   (built per IG_NR output pixels)
 * vpdpbusd multiplies unsigned bytes by signed bytes, so signed activations are offset by
 * +128 (x ^ 0x80) while packing (a zero pad becomes 128 too, consistently); the caller folds -128 * sum(weights of the row) into the bias.
 * Every sum is exact: |sum| <= K * 255 * 128 < 2**31 for K < 65793 (checked by the caller).
 *
 * Work is split by output-pixel panels, so threads never share a buffer: each call packs the
 * columns of its own panels into its own scratch and computes every output channel of them.
 * Without VNNI (or off x86-64 / GCC-compatible compilers) ig_available() is 0 and the caller
 * keeps its float-BLAS path. The same file holds an AVX-512 depthwise kernel (ig_dw_channels).
 */
#ifndef TIDLC_IGEMM_H
#define TIDLC_IGEMM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define IG_MR 8      /* output channels per micro tile */
#define IG_NR 32     /* output pixels per micro tile (two zmm of 16 int32 lanes) */
#define IG_CHUNK 8   /* panels packed together (IG_CHUNK * IG_NR columns stay in L2) */

/* A layer's output stage and where its results go (the GEMM's and the depthwise kernel's alike):
 * per output channel c, out[c] = clamp(round_shift((sum + bias[c]) * mult[c], shift), lo, hi). */
typedef struct {
    const int64_t *bias;   /* per channel (conv: minus 128 * row sum for signed x) */
    const int64_t *mult;   /* per channel, |m| < 2**31 */
    int shift;             /* 0 .. 62 */
    int64_t lo, hi;        /* output clamp */
    void *out;             /* (channels, Ho * Wo) of out_kind */
    int out_kind;          /* 0 int8, 1 uint8, 2 int16, 3 uint16 */
    int narrow;            /* the output stage may run in int32 lanes: 1 split, 2 direct (ig_row_out) */
} ig_stage_t;

typedef struct {
    const uint8_t *x;      /* one image, (C, H, W) bytes (int8 or uint8), padded already */
    int is_signed;         /* 1: x holds int8 (packed with +128) */
    int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo;
    const int8_t *apack;   /* packed weights */
    int M, K;
    ig_stage_t st;         /* M channels */
    const int32_t *wpair;  /* igemm_port.h AVX2: weights as int16 pairs (w[2k], w[2k+1]), [M/IGP_MR][K2][IGP_MR] */
    int msplit;            /* igemm_port.h AVX2: the output channels split into this many parts (threads) */
} ig_conv_t;

/* depthwise (groups == C == M) */
typedef struct {
    const uint8_t *x;      /* (C, H, W), int8 or uint8, not padded */
    int is_signed;
    int C, H, W, kh, kw, sh, sw, dh, dw, pt, pl, Ho, Wo;
    const int8_t *w;       /* (C, kh, kw) */
    ig_stage_t st;         /* C channels */
} ig_dw_t;

static inline size_t ig_scratch_bytes(int K) {
    size_t k4 = (size_t)((K + 3) / 4);
    return k4 * 4 * IG_NR * IG_CHUNK + 4 * (size_t)IG_NR * IG_CHUNK + 64;
}

/* Output pixels [n0, n0 + len) as runs along output rows: run q covers row positions
 * [t[q], t[q] + run[q]) and starts at input offset base[q] (without the tap's offset). */
typedef struct {
    int count;
    int t[IG_NR * IG_CHUNK + 1], run[IG_NR * IG_CHUNK + 1];
    size_t base[IG_NR * IG_CHUNK + 1];
} ig_runs_t;

static void ig_make_runs(const ig_conv_t *p, int n0, int len, ig_runs_t *runs) {
    int npix = p->Ho * p->Wo, oh = n0 / p->Wo, ow = n0 % p->Wo, t = 0;
    runs->count = 0;
    while (t < len && n0 + t < npix) {
        int run = p->Wo - ow;
        if (run > len - t) run = len - t;
        if (run > npix - (n0 + t)) run = npix - (n0 + t);
        int q = runs->count++;
        runs->t[q] = t;
        runs->run[q] = run;
        runs->base[q] = (size_t)oh * p->sh * p->W + (size_t)ow * p->sw;
        t += run;
        ow = 0;
        oh++;
    }
}

/* Copy n bytes src[0], src[2], ... (stride 2) to dst; `end` bounds the readable input. */
static inline void ig_copy_stride2(uint8_t *dst, const uint8_t *src, int n, const uint8_t *end);

/* One im2col row: the values of tap k for output pixels [n0, n0 + len), 0 beyond the last pixel.
 * The input is padded already. Returns a pointer straight into the input when the row is a
 * plain slice of it (1x1, stride 1), else builds it in `row`. */
static const uint8_t *ig_build_row(const ig_conv_t *p, const ig_runs_t *runs, int k, int n0, int len,
                                   uint8_t *row) {
    if (k >= p->K) {
        memset(row, 0, (size_t)len);
        return row;
    }
    int taps = p->kh * p->kw;
    int c = k / taps, r = k % taps, i = r / p->kw, j = r % p->kw;
    const uint8_t *plane = p->x + (size_t)c * p->H * p->W;
    if (taps == 1 && p->sh == 1 && p->sw == 1 && p->Wo == p->W && n0 + len <= p->Ho * p->Wo)
        return plane + n0;
    const uint8_t *src = plane + (size_t)i * p->dh * p->W + (size_t)j * p->dw;
    const uint8_t *end = p->x + (size_t)p->C * p->H * p->W;
    int filled = 0;
    for (int q = 0; q < runs->count; q++) {
        uint8_t *dst = row + runs->t[q];
        const uint8_t *s = src + runs->base[q];
        if (p->sw == 1)
            memcpy(dst, s, (size_t)runs->run[q]);
        else if (p->sw == 2)
            ig_copy_stride2(dst, s, runs->run[q], end);
        else
            for (int e = 0; e < runs->run[q]; e++) dst[e] = s[e * p->sw];
        filled = runs->t[q] + runs->run[q];
    }
    if (filled < len) memset(row + filled, 0, (size_t)(len - filled));
    return row;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    (defined(__clang__) || __GNUC__ >= 9)
#define IG_HAVE_VNNI 1
#include <immintrin.h>

static inline void ig_copy_stride2(uint8_t *dst, const uint8_t *src, int n, const uint8_t *end) {
    const __m128i even = _mm_set1_epi16(0x00ff);
    int e = 0;
    for (; e + 16 <= n && src + 2 * e + 32 <= end; e += 16) {
        __m128i lo = _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 2 * e)), even);
        __m128i hi = _mm_and_si128(_mm_loadu_si128((const __m128i *)(src + 2 * e + 16)), even);
        _mm_storeu_si128((__m128i *)(dst + e), _mm_packus_epi16(lo, hi));
    }
    for (; e < n; e++) dst[e] = src[2 * e];
}

/* Interleave 4 rows (len = npanels * IG_NR bytes each) into [panel][IG_NR][4] at k4 of each panel. */
static void ig_interleave(const uint8_t *r0, const uint8_t *r1, const uint8_t *r2, const uint8_t *r3,
                          int npanels, uint8_t *dst, size_t panel_stride, int flip) {
    const __m128i sign = _mm_set1_epi8(flip ? (char)0x80 : 0);
    for (int q = 0; q < npanels; q++) {
        uint8_t *d = dst + (size_t)q * panel_stride;
        for (int h = 0; h < IG_NR / 16; h++) {
            size_t o = (size_t)q * IG_NR + (size_t)h * 16;
            __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r0 + o)), sign);
            __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r1 + o)), sign);
            __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r2 + o)), sign);
            __m128i e = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r3 + o)), sign);
            __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
            __m128i ce_lo = _mm_unpacklo_epi8(c, e), ce_hi = _mm_unpackhi_epi8(c, e);
            __m128i *out = (__m128i *)(d + h * 64);
            _mm_storeu_si128(out + 0, _mm_unpacklo_epi16(ab_lo, ce_lo));
            _mm_storeu_si128(out + 1, _mm_unpackhi_epi16(ab_lo, ce_lo));
            _mm_storeu_si128(out + 2, _mm_unpacklo_epi16(ab_hi, ce_hi));
            _mm_storeu_si128(out + 3, _mm_unpackhi_epi16(ab_hi, ce_hi));
        }
    }
}

/* The output stage of n sums of one output channel, written to out (element type out_kind); acc
 * is readable up to n rounded up to 16 (the lanes past n are computed and dropped):
 * clamp(acc + bias, int32) * mult, + half, >> shift, clamp(lo, hi), narrowed (values are in range,
 * so truncation is exact). Two exact forms:
 *  - 16 int32 lanes, narrow == 2 (direct; the caller proved |acc + bias| * |mult| + 2**(shift-1)
 *    < 2**31, e.g. TIDL's power-of-2 scales: mult 1, small shifts): every step in int32;
 *  - 16 int32 lanes, narrow == 1 (split; the caller proved |acc + bias| < 2**31, 0 <= mult < 2**15
 *    and 17 <= shift <= 46): v = vh * 2**16 + vl with vl in [0, 2**16), so
 *    (v * mult + 2**(shift-1)) >> shift == (vh * mult + 2**(shift-17) + ((vl * mult) >> 16)) >> (shift - 16),
 *    every term fitting int32;
 *  - else 8 int64 lanes (vpmuldq is exact for |int32| x |mult| < 2**31). */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline))
static inline void ig_out16(__m512i acc, int n, int64_t bias, int64_t mult, int shift, int64_t lo, int64_t hi,
                            int out_kind, void *out, int narrow) {
    /* an int32-lane form (narrow 1: split, 2: direct) on 16 sums in a register; n (>= 1) stored */
    __mmask16 k = n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1);
    const __m512i m = _mm512_set1_epi32((int32_t)mult);
    __m512i v = _mm512_add_epi32(acc, _mm512_set1_epi32((int32_t)bias)), r;
    if (narrow == 2) {
        if (mult != 1)
            v = _mm512_mullo_epi32(v, m);
        r = _mm512_sra_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0)),
                             _mm_cvtsi32_si128(shift));
    } else {
        __m512i a = _mm512_mullo_epi32(_mm512_srai_epi32(v, 16), m);
        __m512i c = _mm512_srli_epi32(_mm512_mullo_epi32(_mm512_and_si512(v, _mm512_set1_epi32(0xffff)), m), 16);
        r = _mm512_sra_epi32(_mm512_add_epi32(_mm512_add_epi32(a, _mm512_set1_epi32(1 << (shift - 17))), c),
                             _mm_cvtsi32_si128(shift - 16));
    }
    r = _mm512_min_epi32(_mm512_max_epi32(r, _mm512_set1_epi32((int32_t)lo)), _mm512_set1_epi32((int32_t)hi));
    if (out_kind <= 1)
        _mm512_mask_cvtepi32_storeu_epi8(out, k, r);
    else
        _mm512_mask_cvtepi32_storeu_epi16(out, k, r);
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
static void ig_row_out(const int32_t *acc, int n, int64_t bias, int64_t mult, int shift, int64_t lo, int64_t hi,
                       int narrow, int out_kind, void *out) {
    if (narrow) {
        for (int q = 0; q < n; q += 16)
            ig_out16(_mm512_loadu_si512((const void *)(acc + q)), n - q, bias, mult, shift, lo, hi, out_kind,
                     (uint8_t *)out + (size_t)q * (out_kind <= 1 ? 1 : 2), narrow);
        return;
    }
    const __m512i amin = _mm512_set1_epi64(-((int64_t)1 << 31)), amax = _mm512_set1_epi64(((int64_t)1 << 31) - 1);
    const __m512i half = _mm512_set1_epi64(shift > 0 ? ((int64_t)1 << (shift - 1)) : 0);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    const __m512i vlo = _mm512_set1_epi64(lo), vhi = _mm512_set1_epi64(hi);
    const __m512i b = _mm512_set1_epi64(bias), m = _mm512_set1_epi64(mult);
    for (int q = 0; q < n; q += 8) {
        __mmask8 k = n - q >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (n - q)) - 1);
        __m512i v = _mm512_cvtepi32_epi64(_mm256_loadu_si256((const __m256i *)(acc + q)));
        v = _mm512_min_epi64(_mm512_max_epi64(_mm512_add_epi64(v, b), amin), amax);
        v = _mm512_sra_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, m), half), sh);
        v = _mm512_min_epi64(_mm512_max_epi64(v, vlo), vhi);
        if (out_kind <= 1)
            _mm512_mask_cvtepi64_storeu_epi8((uint8_t *)out + q, k, v);
        else
            _mm512_mask_cvtepi64_storeu_epi16((uint16_t *)out + q, k, v);
    }
}

/* The tile of output rows m0.. (mv valid) x pixels n0.. (nv valid): packed weights block x packed
 * column panel over k4 groups of 4 taps. With p->st.narrow the output stage runs straight on the
 * registers; else the sums go to acc[IG_MR][IG_NR] for ig_epilogue. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
static void ig_kernel(const int8_t *a, const uint8_t *b, int k4, int32_t *acc, const ig_conv_t *p, int m0, int mv,
                      int n0, int nv) {
    __m512i c00 = _mm512_setzero_si512(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00,
            c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00,
            c70 = c00, c71 = c00;
    const int32_t *aw = (const int32_t *)a;
    for (int k = 0; k < k4; k++) {
        __m512i b0 = _mm512_loadu_si512((const void *)b);
        __m512i b1 = _mm512_loadu_si512((const void *)(b + 64));
        __m512i w;
#define IG_STEP(r, x0, x1)                       \
        w = _mm512_set1_epi32(aw[r]);             \
        x0 = _mm512_dpbusd_epi32(x0, b0, w);      \
        x1 = _mm512_dpbusd_epi32(x1, b1, w);
        IG_STEP(0, c00, c01) IG_STEP(1, c10, c11) IG_STEP(2, c20, c21) IG_STEP(3, c30, c31)
        IG_STEP(4, c40, c41) IG_STEP(5, c50, c51) IG_STEP(6, c60, c61) IG_STEP(7, c70, c71)
#undef IG_STEP
        aw += IG_MR;
        b += IG_NR * 4;
    }
    if (p->st.narrow) {
        size_t npix = (size_t)p->Ho * p->Wo, size = p->st.out_kind <= 1 ? 1 : 2;
#define IG_OUT(r, x0, x1)                                                                                  \
        if ((r) < mv) {                                                                                    \
            int m = m0 + (r);                                                                              \
            uint8_t *o = (uint8_t *)p->st.out + ((size_t)m * npix + (size_t)n0) * size;                       \
            ig_out16(x0, nv, p->st.bias[m], p->st.mult[m], p->st.shift, p->st.lo, p->st.hi, p->st.out_kind, o, p->st.narrow);   \
            if (nv > 16)                                                                                   \
                ig_out16(x1, nv - 16, p->st.bias[m], p->st.mult[m], p->st.shift, p->st.lo, p->st.hi, p->st.out_kind,         \
                         o + 16 * size, p->st.narrow);                                                        \
        }
        IG_OUT(0, c00, c01) IG_OUT(1, c10, c11) IG_OUT(2, c20, c21) IG_OUT(3, c30, c31)
        IG_OUT(4, c40, c41) IG_OUT(5, c50, c51) IG_OUT(6, c60, c61) IG_OUT(7, c70, c71)
#undef IG_OUT
        return;
    }
#define IG_STORE(r, x0, x1)                                          \
    _mm512_storeu_si512((void *)(acc + (r) * IG_NR), x0);            \
    _mm512_storeu_si512((void *)(acc + (r) * IG_NR + 16), x1);
    IG_STORE(0, c00, c01) IG_STORE(1, c10, c11) IG_STORE(2, c20, c21) IG_STORE(3, c30, c31)
    IG_STORE(4, c40, c41) IG_STORE(5, c50, c51) IG_STORE(6, c60, c61) IG_STORE(7, c70, c71)
#undef IG_STORE
}

/* The output stage of one tile: rows m0.., pixels n0.. (mv x nv valid entries). */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
static void ig_epilogue(const ig_conv_t *p, const int32_t *acc, int m0, int mv, int n0, int nv) {
    size_t npix = (size_t)p->Ho * p->Wo, size = p->st.out_kind <= 1 ? 1 : 2;
    for (int r = 0; r < mv; r++) {
        int m = m0 + r;
        ig_row_out(acc + r * IG_NR, nv, p->st.bias[m], p->st.mult[m], p->st.shift, p->st.lo, p->st.hi, p->st.narrow, p->st.out_kind,
                   (uint8_t *)p->st.out + ((size_t)m * npix + (size_t)n0) * size);
    }
}

/* A layer with one output pixel whose window is the whole input (a classifier: dense, or a 1x1
 * convolution on 1x1): out[m] = sum_k w[m][k] x[k], 16 output channels per register, lanes over m
 * (weights packed [M/16][K4][16][4]; x broadcast 4 bytes at a time, offset by +128 when signed
 * like the GEMM). Then the output stage per channel, in int64 (M values: no need for lanes). */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static int ig_gemv(const ig_conv_t *p, const int8_t *wpack, const uint8_t *x) {
    int k4n = (p->K + 3) / 4, mblocks = (p->M + 15) / 16;
    uint8_t *xs = (uint8_t *)calloc((size_t)k4n * 4, 1);
    int32_t *acc = (int32_t *)malloc(sizeof(int32_t) * 16 * (size_t)mblocks);
    if (!xs || !acc) {
        free(xs);
        free(acc);
        return -2;
    }
    memcpy(xs, x, (size_t)p->K);
    if (p->is_signed)
        for (int k = 0; k < p->K; k++) xs[k] ^= 0x80;  /* padding past K meets zero weights */
    const int32_t *x4 = (const int32_t *)xs;
    for (int mb = 0; mb < mblocks; mb++) {
        const int8_t *w = wpack + (size_t)mb * k4n * 64;
        __m512i a0 = _mm512_setzero_si512(), a1 = a0;
        int k = 0;
        for (; k + 1 < k4n; k += 2) {
            a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x4[k]), _mm512_loadu_si512((const void *)(w + 64 * k)));
            a1 = _mm512_dpbusd_epi32(a1, _mm512_set1_epi32(x4[k + 1]),
                                     _mm512_loadu_si512((const void *)(w + 64 * k + 64)));
        }
        if (k < k4n)
            a0 = _mm512_dpbusd_epi32(a0, _mm512_set1_epi32(x4[k]), _mm512_loadu_si512((const void *)(w + 64 * k)));
        _mm512_storeu_si512((void *)(acc + 16 * mb), _mm512_add_epi32(a0, a1));
    }
    const int64_t amin = -((int64_t)1 << 31), amax = ((int64_t)1 << 31) - 1;
    const int64_t half = p->st.shift > 0 ? ((int64_t)1 << (p->st.shift - 1)) : 0;
    for (int m = 0; m < p->M; m++) {
        int64_t v = (int64_t)acc[m] + p->st.bias[m];
        v = v < amin ? amin : (v > amax ? amax : v);
        v = (v * p->st.mult[m] + half) >> p->st.shift;
        v = v < p->st.lo ? p->st.lo : (v > p->st.hi ? p->st.hi : v);
        switch (p->st.out_kind) {
        case 0: ((int8_t *)p->st.out)[m] = (int8_t)v; break;
        case 1: ((uint8_t *)p->st.out)[m] = (uint8_t)v; break;
        case 2: ((int16_t *)p->st.out)[m] = (int16_t)v; break;
        default: ((uint16_t *)p->st.out)[m] = (uint16_t)v; break;
        }
    }
    free(xs);
    free(acc);
    return 0;
}

static int ig_available(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
}

/* Output pixels of panels [pb, pe); scratch: ig_scratch_bytes(K), 64-byte aligned. Returns 0. */
static int ig_conv_panels(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    int k4n = (p->K + 3) / 4;
    size_t panel_stride = (size_t)k4n * 4 * IG_NR;
    uint8_t *cols = scratch;
    uint8_t *rows = scratch + panel_stride * IG_CHUNK;
    int npix = p->Ho * p->Wo;
    int mblocks = (p->M + IG_MR - 1) / IG_MR;
    int32_t acc[IG_MR * IG_NR] __attribute__((aligned(64)));
    ig_runs_t runs;
    for (int c0 = pb; c0 < pe; c0 += IG_CHUNK) {
        int np = pe - c0 < IG_CHUNK ? pe - c0 : IG_CHUNK;
        int len = np * IG_NR, n0 = c0 * IG_NR;
        ig_make_runs(p, n0, len, &runs);
        for (int k4 = 0; k4 < k4n; k4++) {
            const uint8_t *r[4];
            for (int q = 0; q < 4; q++)
                r[q] = ig_build_row(p, &runs, 4 * k4 + q, n0, len, rows + (size_t)q * IG_NR * IG_CHUNK);
            ig_interleave(r[0], r[1], r[2], r[3], np, cols + (size_t)k4 * 4 * IG_NR, panel_stride,
                          p->is_signed);
        }
        for (int mb = 0; mb < mblocks; mb++) {
            const int8_t *a = p->apack + (size_t)mb * k4n * 4 * IG_MR;
            int mv = p->M - mb * IG_MR < IG_MR ? p->M - mb * IG_MR : IG_MR;
            for (int q = 0; q < np; q++) {
                int n = n0 + q * IG_NR;
                int nv = npix - n < IG_NR ? npix - n : IG_NR;
                ig_kernel(a, cols + (size_t)q * panel_stride, k4n, acc, p, mb * IG_MR, mv, n, nv);
                if (!p->st.narrow)
                    ig_epilogue(p, acc, mb * IG_MR, mv, n, nv);
            }
        }
    }
    return 0;
}


/* ------------------------------------------------------------------ depthwise (groups == C == M)
 * One channel plane at a time, 32 outputs of a row at a time: per tap, 32 inputs widened to
 * int16 (masked loads: zero outside the image, so the input needs no padding), times the tap's
 * weight (|u8 x s8| <= 32640 fits int16), added into int32 accumulators held in registers; then
 * the same output stage as the GEMM. */

/* the byte mask of the valid columns among nbytes starting at column iw0: [0, W) */
static inline uint64_t ig_col_mask(int iw0, int W, int nbytes) {
    int lo = iw0 < 0 ? -iw0 : 0, hi = W - iw0;
    if (hi > nbytes) hi = nbytes;
    if (hi <= lo) return 0;
    return (hi >= 64 ? ~(uint64_t)0 : (((uint64_t)1 << hi) - 1)) & ~(((uint64_t)1 << lo) - 1);
}

/* the 32 inputs at columns iw0 + q * SW (SW 1 or 2) as int16 lanes, 0 where the mask is off: a
 * masked load never touches the bytes it leaves out, so the input needs no padding */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline))
static inline __m512i ig_load16(const uint8_t *p, uint64_t m, const int SW, const int SIGNED) {
    if (SW == 1) {
        __m256i b = _mm256_maskz_loadu_epi8((__mmask32)m, (const void *)p);
        return SIGNED ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
    }
    __m512i v = _mm512_maskz_loadu_epi8((__mmask64)m, (const void *)p);  /* the even bytes are the inputs */
    return SIGNED ? _mm512_srai_epi16(_mm512_slli_epi16(v, 8), 8) : _mm512_and_si512(v, _mm512_set1_epi16(0xff));
}

__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
static void ig_dw_store(const ig_dw_t *p, int c, int oh, const int32_t *acc) {
    size_t size = p->st.out_kind <= 1 ? 1 : 2;
    ig_row_out(acc, p->Wo, p->st.bias[c], p->st.mult[c], p->st.shift, p->st.lo, p->st.hi, p->st.narrow, p->st.out_kind,
               (uint8_t *)p->st.out + ((size_t)c * p->Ho + oh) * p->Wo * size);
}

/* Channels [cb, ce) for a given W stride and signedness (constants after inlining). masks/offs:
 * per 32-output block v and tap column j, the valid-column mask and the first column. */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl"), always_inline))
static inline void ig_dw_body(const ig_dw_t *p, int cb, int ce, int32_t *acc, const uint64_t *masks,
                              const int *offs, const int SW, const int SIGNED) {
    int wv = (p->Wo + 31) / 32, taps = p->kh * p->kw;
    for (int c = cb; c < ce; c++) {
        const uint8_t *plane = p->x + (size_t)c * p->H * p->W;
        const int8_t *wc = p->w + (size_t)c * taps;
        for (int oh = 0; oh < p->Ho; oh++) {
            for (int v = 0; v < wv; v++) {  /* 32 outputs, accumulated in registers over the taps */
                __m512i a0 = _mm512_setzero_si512(), a1 = a0;
                for (int i = 0; i < p->kh; i++) {
                    int ih = oh * p->sh - p->pt + i * p->dh;
                    if (ih < 0 || ih >= p->H) continue;  /* a padding row adds nothing */
                    const uint8_t *row = plane + (size_t)ih * p->W;
                    for (int j = 0; j < p->kw; j++) {
                        int t = v * p->kw + j;
                        __m512i x = ig_load16(row + offs[t], masks[t], SW, SIGNED);
                        __m512i prod = _mm512_mullo_epi16(x, _mm512_set1_epi16((short)wc[i * p->kw + j]));
                        a0 = _mm512_add_epi32(a0, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(prod)));
                        a1 = _mm512_add_epi32(a1, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(prod, 1)));
                    }
                }
                if (p->st.narrow) {  /* the output stage straight from the registers */
                    size_t size = p->st.out_kind <= 1 ? 1 : 2, q = (size_t)32 * v;
                    uint8_t *o = (uint8_t *)p->st.out + (((size_t)c * p->Ho + oh) * p->Wo + q) * size;
                    ig_out16(a0, p->Wo - (int)q, p->st.bias[c], p->st.mult[c], p->st.shift, p->st.lo, p->st.hi, p->st.out_kind, o,
                             p->st.narrow);
                    if (p->Wo - (int)q > 16)
                        ig_out16(a1, p->Wo - (int)q - 16, p->st.bias[c], p->st.mult[c], p->st.shift, p->st.lo, p->st.hi,
                                 p->st.out_kind, o + 16 * size, p->st.narrow);
                    continue;
                }
                _mm512_storeu_si512((void *)(acc + 32 * v), a0);
                _mm512_storeu_si512((void *)(acc + 32 * v + 16), a1);
            }
            if (!p->st.narrow)
                ig_dw_store(p, c, oh, acc);
        }
    }
}

/* Channels [cb, ce); acc: ceil(Wo / 32) * 32 int32 of scratch. Returns 0 (-1: W stride not 1/2,
 * -2: out of memory). */
__attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
static int ig_dw_channels(const ig_dw_t *p, int cb, int ce, int32_t *acc) {
    if (p->sw != 1 && p->sw != 2) return -1;
    int wv = (p->Wo + 31) / 32;
    uint64_t *masks = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)wv * p->kw);
    int *offs = (int *)malloc(sizeof(int) * (size_t)wv * p->kw);
    if (!masks || !offs) {
        free(masks);
        free(offs);
        return -2;
    }
    for (int v = 0; v < wv; v++)
        for (int j = 0; j < p->kw; j++) {
            int iw0 = 32 * v * p->sw - p->pl + j * p->dw;
            masks[v * p->kw + j] = ig_col_mask(iw0, p->W, 32 * p->sw);
            offs[v * p->kw + j] = iw0;
        }
    if (p->sw == 1)
        p->is_signed ? ig_dw_body(p, cb, ce, acc, masks, offs, 1, 1) : ig_dw_body(p, cb, ce, acc, masks, offs, 1, 0);
    else
        p->is_signed ? ig_dw_body(p, cb, ce, acc, masks, offs, 2, 1) : ig_dw_body(p, cb, ce, acc, masks, offs, 2, 0);
    free(masks);
    free(offs);
    return 0;
}

#else  /* no VNNI kernel on this platform/compiler */
#define IG_HAVE_VNNI 0
static int ig_available(void) { return 0; }
static int ig_dw_channels(const ig_dw_t *p, int cb, int ce, int32_t *acc) {
    (void)p; (void)cb; (void)ce; (void)acc;
    return -1;
}
static int ig_gemv(const ig_conv_t *p, const int8_t *wpack, const uint8_t *x) {
    (void)p; (void)wpack; (void)x;
    return -1;
}
static inline void ig_copy_stride2(uint8_t *dst, const uint8_t *src, int n, const uint8_t *end) {
    (void)end;
    for (int e = 0; e < n; e++) dst[e] = src[2 * e];
}
static int ig_conv_panels(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    (void)p; (void)pb; (void)pe; (void)scratch;
    (void)ig_build_row;
    (void)ig_make_runs;
    return -1;
}
#endif

/* One signature for the parallel driver (_igemm.pyx): a part [begin, end) of the work of p. */
typedef int (*ig_part_fn)(const void *p, int begin, int end, void *scratch);
static int ig_conv_part(const void *p, int begin, int end, void *scratch) {
    return ig_conv_panels((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int ig_dw_part(const void *p, int begin, int end, void *scratch) {
    return ig_dw_channels((const ig_dw_t *)p, begin, end, (int32_t *)scratch);
}

#endif /* TIDLC_IGEMM_H */
