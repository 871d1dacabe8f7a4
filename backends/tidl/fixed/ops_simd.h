/* SIMD forms of the hot kernels of _ops.pyx, with a run-time choice between AVX2 and portable C
 * (the caller passes use_avx2: fast.isa() != "c", so TIDLC_ISA=c tests the C forms).
 *
 * ops_add8: out = clamp((a * ma + b * mb + half) >> shift, lo, hi) over n elements of two 8-bit
 * tensors of the same shape, contiguous (reference.eltwise_add; sub is mb negated by the caller).
 * Exact: the caller checks |ma|, |mb| < 2**15 and |a| * |ma| + |b| * |mb| + 2**shift < 2**31, so
 * the int16 pairs (a, b) x (ma, mb) of vpmaddwd sum exactly into int32 and nothing after overflows.
 *
 * The other kernels here are AVX2 only (ops_*_avx2; their C forms are the Cython loops of _ops.pyx):
 * each returns 0 when this build or CPU has no AVX2 (the caller then runs the C form), else 1.
 * They compute 8-bit codes (is_signed: int8, else uint8) in int32 lanes, exactly as the C forms,
 * and end with the "narrow" stage v = clamp((v * mult + half) >> shift, lo, hi): the callers prove
 * that every intermediate fits int32 and that [lo, hi] lies inside the result type (kind: 0 i8,
 * 1 u8, 2 i16, 3 u16), so the saturating packs store the values unchanged.
 *   ops_requant8_avx2   requantization / one concat input, a row at a time
 *   ops_max_pool8_avx2  separable max pooling (vertical max over the window rows, then over the
 *                       columns: stride 1 or 2 in SIMD, other strides scalar)
 *   ops_avg_pool8_avx2  separable sums (int16 column sums, int32 window sums), then
 *                       round_shift(sum * avg_mult[oy, ox], 16)
 *   ops_global8_avx2    row max (vpmaxub/vpmaxsb) or row sum (vpsadbw), then round_shift(sum * m, 16)
 *   ops_resize8_avx2    Q10 separable linear resize (vpmaddwd on row pairs, gathered column pairs)
 *   ops_quantize_avx2   float32/float64 -> 8/16-bit codes, the specification's double arithmetic
 *   ops_dequantize_avx2 8/16-bit codes -> float32: ((double) q - zp) / scale, or ((float) q - zp) *
 *                       (float) (1 / scale) in float32 where a check of every code of the type
 *                       (256, or 65536 for long 16-bit tensors) finds it equal */
#ifndef TIDLC_OPS_SIMD_H
#define TIDLC_OPS_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline int32_t ops_load8(const uint8_t *p, size_t i, int is_signed) {
    return is_signed ? (int32_t)(int8_t)p[i] : (int32_t)p[i];
}

static inline void ops_put(void *out, int kind, size_t i, int32_t v) {
    switch (kind) {
    case 0: ((int8_t *)out)[i] = (int8_t)v; break;
    case 1: ((uint8_t *)out)[i] = (uint8_t)v; break;
    case 2: ((int16_t *)out)[i] = (int16_t)v; break;
    default: ((uint16_t *)out)[i] = (uint16_t)v; break;
    }
}

static void ops_add8_c(const uint8_t *a, int as, const uint8_t *b, int bs, size_t begin, size_t n, int32_t ma,
                       int32_t mb, int shift, int32_t lo, int32_t hi, void *out, int kind) {
    int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    for (size_t i = begin; i < n; i++) {
        int32_t v = (ops_load8(a, i, as) * ma + ops_load8(b, i, bs) * mb + half) >> shift;
        ops_put(out, kind, i, v < lo ? lo : (v > hi ? hi : v));
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define OPS_HAVE_AVX2 1

__attribute__((target("avx2"), always_inline))
static inline __m256i ops_widen16(__m128i v, int is_signed) {
    return is_signed ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
}

/* 16 elements a step: a and b widened to int16, interleaved into (a, b) pairs, vpmaddwd with
 * (ma, mb), + half, >> shift, clamp, packed (the values are in the output type: the saturating
 * packs are exact) */
__attribute__((target("avx2")))
static size_t ops_add8_avx2(const uint8_t *a, int as, const uint8_t *b, int bs, size_t n, int32_t ma, int32_t mb,
                            int shift, int32_t lo, int32_t hi, void *out, int kind) {
    const __m256i m = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)mb << 16) | (uint16_t)ma));
    const __m256i half = _mm256_set1_epi32(shift > 0 ? (int32_t)1 << (shift - 1) : 0);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    const __m128i sh = _mm_cvtsi32_si128(shift);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i x = ops_widen16(_mm_loadu_si128((const __m128i *)(a + i)), as);
        __m256i y = ops_widen16(_mm_loadu_si128((const __m128i *)(b + i)), bs);
        /* lanes of unpacklo: elements 0-3, 8-11; of unpackhi: 4-7, 12-15 */
        __m256i lo4 = _mm256_madd_epi16(_mm256_unpacklo_epi16(x, y), m);
        __m256i hi4 = _mm256_madd_epi16(_mm256_unpackhi_epi16(x, y), m);
        lo4 = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(_mm256_add_epi32(lo4, half), sh), vlo), vhi);
        hi4 = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(_mm256_add_epi32(hi4, half), sh), vlo), vhi);
        /* packs per 128-bit lane: [0-3, 4-7 | 8-11, 12-15]: the order is restored */
        __m256i p16 = kind == 3 ? _mm256_packus_epi32(lo4, hi4) : _mm256_packs_epi32(lo4, hi4);
        if (kind <= 1) {
            __m256i p8 = kind == 0 ? _mm256_packs_epi16(p16, p16) : _mm256_packus_epi16(p16, p16);
            __m128i r = _mm_unpacklo_epi64(_mm256_castsi256_si128(p8), _mm256_extracti128_si256(p8, 1));
            _mm_storeu_si128((__m128i *)((uint8_t *)out + i), r);
        } else {
            _mm256_storeu_si256((__m256i *)((uint16_t *)out + i), p16);
        }
    }
    return i;
}

/* ---- shared pieces of the AVX2 kernels below */
typedef struct {
    __m256i mult, half, lo, hi;
    __m128i shift;
} ops_stage_v;

__attribute__((target("avx2"), always_inline))
static inline ops_stage_v ops_stage_make(int32_t mult, int shift, int32_t lo, int32_t hi) {
    ops_stage_v s;
    s.mult = _mm256_set1_epi32(mult);
    s.half = _mm256_set1_epi32(shift > 0 ? (int32_t)1 << (shift - 1) : 0);
    s.lo = _mm256_set1_epi32(lo);
    s.hi = _mm256_set1_epi32(hi);
    s.shift = _mm_cvtsi32_si128(shift);
    return s;
}

/* clamp((v * mult + half) >> shift, lo, hi) on 8 int32 lanes */
__attribute__((target("avx2"), always_inline))
static inline __m256i ops_stage8(__m256i v, const ops_stage_v *s) {
    v = _mm256_sra_epi32(_mm256_add_epi32(_mm256_mullo_epi32(v, s->mult), s->half), s->shift);
    return _mm256_min_epi32(_mm256_max_epi32(v, s->lo), s->hi);
}

static inline int32_t ops_stage1(int32_t v, int32_t mult, int shift, int32_t lo, int32_t hi) {
    int32_t half = shift > 0 ? (int32_t)1 << (shift - 1) : 0;
    v = (v * mult + half) >> shift;
    return v < lo ? lo : (v > hi ? hi : v);
}

/* out[i .. i + 8) = 8 int32 lanes already inside the type of kind (the saturating packs are exact) */
__attribute__((target("avx2"), always_inline))
static inline void ops_store8(void *out, size_t i, int kind, __m256i v) {
    __m256i p16 = kind == 3 ? _mm256_packus_epi32(v, v) : _mm256_packs_epi32(v, v);  /* [0-3 0-3 | 4-7 4-7] */
    if (kind <= 1) {
        __m256i p8 = kind == 0 ? _mm256_packs_epi16(p16, p16) : _mm256_packus_epi16(p16, p16);
        __m128i r = _mm_unpacklo_epi32(_mm256_castsi256_si128(p8), _mm256_extracti128_si256(p8, 1));
        _mm_storel_epi64((__m128i *)((uint8_t *)out + i), r);
    } else {
        __m128i r = _mm_unpacklo_epi64(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
        _mm_storeu_si128((__m128i *)((uint16_t *)out + i), r);
    }
}

/* 8 codes at p widened to int32 lanes */
__attribute__((target("avx2"), always_inline))
static inline __m256i ops_load8x32(const uint8_t *p, int is_signed) {
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    return is_signed ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
}

__attribute__((target("avx2"), always_inline))
static inline __m256i ops_max8(__m256i a, __m256i b, int is_signed) {
    return is_signed ? _mm256_max_epi8(a, b) : _mm256_max_epu8(a, b);
}

static inline uint8_t ops_max1(uint8_t a, uint8_t b, int is_signed) {
    if (is_signed)
        return (int8_t)a > (int8_t)b ? a : b;
    return a > b ? a : b;
}

/* ---- requantization: out[0 .. n) = stage(x[0 .. n)) */
__attribute__((target("avx2")))
static void ops_requant8_impl(const uint8_t *x, int is_signed, size_t n, int32_t mult, int shift, int32_t lo,
                              int32_t hi, void *out, int kind) {
    const ops_stage_v s = ops_stage_make(mult, shift, lo, hi);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        ops_store8(out, i, kind, ops_stage8(ops_load8x32(x + i, is_signed), &s));
        ops_store8(out, i + 8, kind, ops_stage8(ops_load8x32(x + i + 8, is_signed), &s));
        ops_store8(out, i + 16, kind, ops_stage8(ops_load8x32(x + i + 16, is_signed), &s));
        ops_store8(out, i + 24, kind, ops_stage8(ops_load8x32(x + i + 24, is_signed), &s));
    }
    for (; i < n && n >= 8; i += 8) {  /* the last step overlaps the one before (it stores the same values) */
        i = i + 8 > n ? n - 8 : i;
        ops_store8(out, i, kind, ops_stage8(ops_load8x32(x + i, is_signed), &s));
    }
    for (; i < n; i++)
        ops_put(out, kind, i, ops_stage1(ops_load8(x, i, is_signed), mult, shift, lo, hi));
}

/* the identity stage on codes of the result's own type: a copy */
static inline int ops_is_copy(int is_signed, int32_t mult, int shift, int32_t lo, int32_t hi, int kind) {
    return mult == 1 && shift == 0 && kind == (is_signed ? 0 : 1) && lo <= (is_signed ? -128 : 0)
           && hi >= (is_signed ? 127 : 255);
}

/* geo: kh, kw, sh, sw, pt, pl, dh, dw, ho, wo (as pool2d's) */
enum { G_KH, G_KW, G_SH, G_SW, G_PT, G_PL, G_DH, G_DW, G_HO, G_WO };

static ptrdiff_t ops_span(ptrdiff_t W, const ptrdiff_t *g) {
    ptrdiff_t a = g[G_PL] + W, b = (g[G_WO] - 1) * g[G_SW] + (g[G_KW] - 1) * g[G_DW] + 1;
    return a > b ? a : b;
}

/* ---- max pooling of planes (H, W) -> (ho, wo); every window holds a tap in each axis (the caller
 * checks), the column buffer is padded with the type's minimum, which never wins */
__attribute__((target("avx2")))
static int ops_max_pool8_impl(const uint8_t *x, int sg, size_t planes, ptrdiff_t H, ptrdiff_t W, const ptrdiff_t *g,
                              int32_t mult, int shift, int32_t lo, int32_t hi, void *out, int kind) {
    const ptrdiff_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], pt = g[G_PT], pl = g[G_PL];
    const ptrdiff_t dh = g[G_DH], dw = g[G_DW], ho = g[G_HO], wo = g[G_WO];
    const ptrdiff_t span = ops_span(W, g);
    const uint8_t low = sg ? 0x80 : 0;
    uint8_t *col = (uint8_t *)malloc((size_t)(span + 64) + (size_t)(wo + 64));
    if (!col)
        return -1;
    uint8_t *row = col + span + 64, *cx = col + pl;
    const int copy = ops_is_copy(sg, mult, shift, lo, hi, kind);
    const size_t osz = kind <= 1 ? 1 : 2;
    const __m256i even = _mm256_set1_epi16(0x00FF);
    memset(col, low, (size_t)(span + 64));
    size_t r = 0;
    for (size_t p = 0; p < planes; p++) {
        const uint8_t *xp = x + p * (size_t)(H * W);
        for (ptrdiff_t oy = 0; oy < ho; oy++, r++) {
            int started = 0;
            for (ptrdiff_t i = 0; i < kh; i++) {
                ptrdiff_t iy = oy * sh - pt + i * dh, q = 0;
                if (iy < 0 || iy >= H)
                    continue;
                const uint8_t *xr = xp + iy * W;
                if (!started) {
                    memcpy(cx, xr, (size_t)W);
                    started = 1;
                    continue;
                }
                for (; q < W && W >= 32; q += 32) {  /* max is idempotent: the last step may overlap */
                    q = q + 32 > W ? W - 32 : q;
                    __m256i a = _mm256_loadu_si256((const __m256i *)(xr + q));
                    __m256i c = _mm256_loadu_si256((const __m256i *)(cx + q));
                    _mm256_storeu_si256((__m256i *)(cx + q), ops_max8(a, c, sg));
                }
                for (; q < W; q++)
                    cx[q] = ops_max1(xr[q], cx[q], sg);
            }
            ptrdiff_t ox = 0;
            if (sw == 1) {
                for (; ox < wo && wo >= 32; ox += 32) {  /* the last step may overlap the one before */
                    ox = ox + 32 > wo ? wo - 32 : ox;
                    __m256i m = _mm256_loadu_si256((const __m256i *)(col + ox));
                    for (ptrdiff_t j = 1; j < kw; j++)
                        m = ops_max8(m, _mm256_loadu_si256((const __m256i *)(col + ox + j * dw)), sg);
                    _mm256_storeu_si256((__m256i *)(row + ox), m);
                }
            } else if (sw == 2) {  /* the even bytes of 64 columns: col[2 * (ox + t) + j * dw], t < 32 */
                for (; ox < wo && wo >= 32; ox += 32) {
                    ox = ox + 32 > wo ? wo - 32 : ox;
                    __m256i m = _mm256_setzero_si256();
                    for (ptrdiff_t j = 0; j < kw; j++) {
                        const uint8_t *c = col + 2 * ox + j * dw;
                        __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)c), even);
                        __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(c + 32)), even);
                        __m256i e = _mm256_permute4x64_epi64(_mm256_packus_epi16(a, b), 0xD8);
                        m = j ? ops_max8(m, e, sg) : e;
                    }
                    _mm256_storeu_si256((__m256i *)(row + ox), m);
                }
            }
            for (; ox < wo; ox++) {
                uint8_t m = col[ox * sw];
                for (ptrdiff_t j = 1; j < kw; j++)
                    m = ops_max1(col[ox * sw + j * dw], m, sg);
                row[ox] = m;
            }
            if (copy)
                memcpy((uint8_t *)out + r * (size_t)wo, row, (size_t)wo);
            else
                ops_requant8_impl(row, sg, (size_t)wo, mult, shift, lo, hi, (uint8_t *)out + r * (size_t)wo * osz,
                                  kind);
        }
    }
    free(col);
    return 1;
}

/* ---- average pooling: column sums over the window rows in int16 (the caller checks kh * 128 and
 * kh * 255 < 2**15), window sums in int32, then round_shift(sum * am[oy, ox], 16) and the stage */
__attribute__((target("avx2")))
static int ops_avg_pool8_impl(const uint8_t *x, int sg, size_t planes, ptrdiff_t H, ptrdiff_t W, const ptrdiff_t *g,
                              const int32_t *am, int32_t mult, int shift, int32_t lo, int32_t hi, void *out,
                              int kind) {
    const ptrdiff_t kh = g[G_KH], kw = g[G_KW], sh = g[G_SH], sw = g[G_SW], pt = g[G_PT], pl = g[G_PL];
    const ptrdiff_t dh = g[G_DH], dw = g[G_DW], ho = g[G_HO], wo = g[G_WO];
    const ptrdiff_t span = ops_span(W, g);
    int16_t *col = (int16_t *)calloc((size_t)(span + 32), sizeof(int16_t));
    if (!col)
        return -1;
    int16_t *cx = col + pl;
    const ops_stage_v s = ops_stage_make(mult, shift, lo, hi);
    const __m256i round = _mm256_set1_epi32(32768);
    const size_t osz = kind <= 1 ? 1 : 2;
    size_t r = 0;
    for (size_t p = 0; p < planes; p++) {
        const uint8_t *xp = x + p * (size_t)(H * W);
        for (ptrdiff_t oy = 0; oy < ho; oy++, r++) {
            memset(cx, 0, (size_t)W * sizeof(int16_t));
            for (ptrdiff_t i = 0; i < kh; i++) {
                ptrdiff_t iy = oy * sh - pt + i * dh, q = 0;
                if (iy < 0 || iy >= H)
                    continue;
                const uint8_t *xr = xp + iy * W;
                for (; q + 16 <= W; q += 16) {
                    __m128i b = _mm_loadu_si128((const __m128i *)(xr + q));
                    __m256i v = sg ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
                    __m256i c = _mm256_loadu_si256((const __m256i *)(cx + q));
                    _mm256_storeu_si256((__m256i *)(cx + q), _mm256_add_epi16(c, v));
                }
                for (; q + 8 <= W; q += 8) {
                    __m128i b = _mm_loadl_epi64((const __m128i *)(xr + q));
                    __m128i v = sg ? _mm_cvtepi8_epi16(b) : _mm_cvtepu8_epi16(b);
                    __m128i c = _mm_loadu_si128((const __m128i *)(cx + q));
                    _mm_storeu_si128((__m128i *)(cx + q), _mm_add_epi16(c, v));
                }
                for (; q < W; q++)
                    cx[q] = (int16_t)(cx[q] + ops_load8(xr, (size_t)q, sg));
            }
            const int32_t *amr = am + oy * wo;
            uint8_t *dst = (uint8_t *)out + r * (size_t)wo * osz;
            ptrdiff_t ox = 0;
            if (sw == 1 || sw == 2) {
                for (; ox < wo && wo >= 8; ox += 8) {  /* the last step may overlap the one before */
                    ox = ox + 8 > wo ? wo - 8 : ox;
                    __m256i acc = _mm256_setzero_si256();
                    for (ptrdiff_t j = 0; j < kw; j++) {
                        const int16_t *c = col + ox * sw + j * dw;
                        __m256i v;
                        if (sw == 1) {
                            v = _mm256_cvtepi16_epi32(_mm_loadu_si128((const __m128i *)c));
                        } else {  /* the even int16 of 16: sign-extended low halves of the int32 lanes */
                            v = _mm256_loadu_si256((const __m256i *)c);
                            v = _mm256_srai_epi32(_mm256_slli_epi32(v, 16), 16);
                        }
                        acc = _mm256_add_epi32(acc, v);
                    }
                    acc = _mm256_mullo_epi32(acc, _mm256_loadu_si256((const __m256i *)(amr + ox)));
                    acc = _mm256_srai_epi32(_mm256_add_epi32(acc, round), 16);
                    ops_store8(dst, (size_t)ox, kind, ops_stage8(acc, &s));
                }
            }
            for (; ox < wo; ox++) {
                int32_t acc = 0;
                for (ptrdiff_t j = 0; j < kw; j++)
                    acc += col[ox * sw + j * dw];
                acc = (acc * amr[ox] + 32768) >> 16;
                ops_put(dst, kind, (size_t)ox, ops_stage1(acc, mult, shift, lo, hi));
            }
        }
    }
    free(col);
    return 1;
}

/* ---- global pooling of rows of P codes: res[r] = the max, or round_shift(sum * avg_mult, 16) */
__attribute__((target("avx2")))
static void ops_global8_impl(const uint8_t *x, int sg, size_t rows, size_t P, int is_max, int64_t avg_mult,
                             int64_t *res) {
    const __m256i flip = _mm256_set1_epi8((char)0x80), zero = _mm256_setzero_si256();
    for (size_t r = 0; r < rows; r++) {
        const uint8_t *xr = x + r * P;
        size_t k = 0;
        if (is_max) {
            uint8_t m = xr[0];
            if (P >= 32) {
                __m256i v = _mm256_loadu_si256((const __m256i *)xr);
                for (k = 32; k < P; k += 32) {  /* idempotent: the last step may overlap */
                    k = k + 32 > P ? P - 32 : k;
                    v = ops_max8(v, _mm256_loadu_si256((const __m256i *)(xr + k)), sg);
                }
                uint8_t lanes[32];
                _mm256_storeu_si256((__m256i *)lanes, v);
                for (int t = 0; t < 32; t++)
                    m = ops_max1(lanes[t], m, sg);
            }
            for (; k < P; k++)
                m = ops_max1(xr[k], m, sg);
            res[r] = ops_load8(&m, 0, sg);
        } else {  /* vpsadbw sums unsigned bytes; int8 codes are summed as code + 128 */
            __m256i acc = _mm256_setzero_si256();
            for (; k + 32 <= P; k += 32) {
                __m256i v = _mm256_loadu_si256((const __m256i *)(xr + k));
                acc = _mm256_add_epi64(acc, _mm256_sad_epu8(sg ? _mm256_xor_si256(v, flip) : v, zero));
            }
            if (k < P && P >= 32) {  /* the last 32 codes, those summed already masked to 0 */
                static const uint8_t keep[64] = {
                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
                    255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255};
                __m256i v = _mm256_loadu_si256((const __m256i *)(xr + P - 32));
                v = sg ? _mm256_xor_si256(v, flip) : v;
                v = _mm256_and_si256(v, _mm256_loadu_si256((const __m256i *)(keep + (P - k))));
                acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
                k = P;
            }
            int64_t lanes[4], sum;
            _mm256_storeu_si256((__m256i *)lanes, acc);
            sum = lanes[0] + lanes[1] + lanes[2] + lanes[3] - (sg ? 128 * (int64_t)k : 0);
            for (; k < P; k++)
                sum += ops_load8(xr, k, sg);
            res[r] = (sum * avg_mult + 32768) >> 16;
        }
    }
}

/* ---- Q10 linear resize of planes (H, W) -> (HO, WO): a row pair blended with (1024 - wy, wy) in
 * int32 (vpmaddwd), then column pairs (gathered) with (1024 - wx, wx), round_shift 20, the stage */
__attribute__((target("avx2")))
static int ops_resize8_impl(const uint8_t *x, int sg, size_t planes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t HO,
                            ptrdiff_t WO, const int32_t *y0, const int32_t *y1, const int32_t *wy, const int32_t *x0,
                            const int32_t *x1, const int32_t *wx, int32_t mult, int shift, int32_t lo, int32_t hi,
                            void *out, int kind) {
    int32_t *tmp = (int32_t *)malloc((size_t)W * sizeof(int32_t));
    if (!tmp)
        return -1;
    const ops_stage_v s = ops_stage_make(mult, shift, lo, hi);
    const __m256i one = _mm256_set1_epi32(1024), round = _mm256_set1_epi32(1 << 19);
    const size_t osz = kind <= 1 ? 1 : 2;
    size_t r = 0;
    for (size_t p = 0; p < planes; p++) {
        const uint8_t *xp = x + p * (size_t)(H * W);
        for (ptrdiff_t oy = 0; oy < HO; oy++, r++) {
            const uint8_t *r0 = xp + y0[oy] * W, *r1 = xp + y1[oy] * W;
            const int32_t a = 1024 - wy[oy], b = wy[oy];
            const __m256i ab = _mm256_set1_epi32((int32_t)(((uint32_t)(uint16_t)b << 16) | (uint16_t)a));
            ptrdiff_t i = 0;
            for (; i < W && W >= 16; i += 16) {  /* the last step may overlap the one before */
                i = i + 16 > W ? W - 16 : i;
                __m128i u = _mm_loadu_si128((const __m128i *)(r0 + i)), v = _mm_loadu_si128((const __m128i *)(r1 + i));
                __m256i p0 = sg ? _mm256_cvtepi8_epi16(u) : _mm256_cvtepu8_epi16(u);
                __m256i p1 = sg ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
                __m256i lo4 = _mm256_madd_epi16(_mm256_unpacklo_epi16(p0, p1), ab);  /* 0-3 | 8-11 */
                __m256i hi4 = _mm256_madd_epi16(_mm256_unpackhi_epi16(p0, p1), ab);  /* 4-7 | 12-15 */
                _mm256_storeu_si256((__m256i *)(tmp + i), _mm256_permute2x128_si256(lo4, hi4, 0x20));
                _mm256_storeu_si256((__m256i *)(tmp + i + 8), _mm256_permute2x128_si256(lo4, hi4, 0x31));
            }
            for (; i < W; i++)
                tmp[i] = ops_load8(r0, (size_t)i, sg) * a + ops_load8(r1, (size_t)i, sg) * b;
            uint8_t *dst = (uint8_t *)out + r * (size_t)WO * osz;
            ptrdiff_t ox = 0;
            for (; ox < WO && WO >= 8; ox += 8) {
                ox = ox + 8 > WO ? WO - 8 : ox;
                __m256i w1 = _mm256_loadu_si256((const __m256i *)(wx + ox));
                __m256i t0 = _mm256_i32gather_epi32(tmp, _mm256_loadu_si256((const __m256i *)(x0 + ox)), 4);
                __m256i t1 = _mm256_i32gather_epi32(tmp, _mm256_loadu_si256((const __m256i *)(x1 + ox)), 4);
                __m256i v = _mm256_add_epi32(_mm256_mullo_epi32(t0, _mm256_sub_epi32(one, w1)),
                                             _mm256_mullo_epi32(t1, w1));
                v = _mm256_srai_epi32(_mm256_add_epi32(v, round), 20);
                ops_store8(dst, (size_t)ox, kind, ops_stage8(v, &s));
            }
            for (; ox < WO; ox++) {
                int32_t v = (tmp[x0[ox]] * (1024 - wx[ox]) + tmp[x1[ox]] * wx[ox] + (1 << 19)) >> 20;
                ops_put(dst, kind, (size_t)ox, ops_stage1(v, mult, shift, lo, hi));
            }
        }
    }
    free(tmp);
    return 1;
}

/* ---- quantize: clamp(trunc(v + copysign(0.5, v)), lo, hi) + zp with v = x * scale in double
 * (lo = qmin - zp, hi = qmax - zp, |lo|, |hi|, |zp| < 2**30: truncation is monotonic, so clamping
 * before it equals clip(round_half_away(v) + zp, qmin, qmax)); NaN gives 0 (the low bits of
 * numpy's float -> int64 cast, INT64_MIN, on x86), as the C form */
static inline int32_t ops_quantize1(double v, double scale, double lo, double hi, int32_t zp) {
    v = v * scale;
    v = v + copysign(0.5, v);
    if (v != v)
        return 0;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    return (int32_t)v + zp;
}

/* max_pd / min_pd return their second operand when either is NaN: a NaN stays NaN through the clamp
 * and truncates to INT32_MIN, which no clamped value (|lo|, |hi| < 2**30) can be */
__attribute__((target("avx2"), always_inline))
static inline __m128i ops_quantize4(__m256d v, __m256d scale, __m256d lo, __m256d hi) {
    const __m256d sign = _mm256_set1_pd(-0.0), half = _mm256_set1_pd(0.5);
    v = _mm256_mul_pd(v, scale);
    v = _mm256_add_pd(v, _mm256_or_pd(_mm256_and_pd(v, sign), half));
    v = _mm256_min_pd(hi, _mm256_max_pd(lo, v));
    return _mm256_cvttpd_epi32(v);
}

__attribute__((target("avx2")))
static void ops_quantize_impl(const void *x, int is_f64, size_t n, double scale, double lo, double hi, int32_t zp,
                              void *out, int kind) {
    const __m256d vs = _mm256_set1_pd(scale), vlo = _mm256_set1_pd(lo), vhi = _mm256_set1_pd(hi);
    const __m256i vzp = _mm256_set1_epi32(zp), nan = _mm256_set1_epi32(INT32_MIN);
    const float *xf = (const float *)x;
    const double *xd = (const double *)x;
    size_t i = 0;
    for (; i < n && n >= 8; i += 8) {  /* the last step may overlap the one before */
        i = i + 8 > n ? n - 8 : i;
        __m256d a, b;
        if (is_f64) {
            a = _mm256_loadu_pd(xd + i);
            b = _mm256_loadu_pd(xd + i + 4);
        } else {
            __m256 f = _mm256_loadu_ps(xf + i);
            a = _mm256_cvtps_pd(_mm256_castps256_ps128(f));
            b = _mm256_cvtps_pd(_mm256_extractf128_ps(f, 1));
        }
        __m256i q = _mm256_set_m128i(ops_quantize4(b, vs, vlo, vhi), ops_quantize4(a, vs, vlo, vhi));
        q = _mm256_andnot_si256(_mm256_cmpeq_epi32(q, nan), _mm256_add_epi32(q, vzp));  /* NaN: 0 */
        ops_store8(out, i, kind, q);
    }
    for (; i < n; i++)
        ops_put(out, kind, i, ops_quantize1(is_f64 ? xd[i] : (double)xf[i], scale, lo, hi, zp));
}

/* ---- dequantize: out = (float) (((double) q - zp) / scale); code size 1 or 2 bytes */
static inline float ops_dequantize1(int32_t q, double scale, double zp) {
    return (float)(((double)q - zp) / scale);
}

__attribute__((target("avx2"), always_inline))
static inline __m128 ops_dequantize4(__m128i q, __m256d scale, __m256d zp) {
    return _mm256_cvtpd_ps(_mm256_div_pd(_mm256_sub_pd(_mm256_cvtepi32_pd(q), zp), scale));
}

/* (float) code - zpf) * inv in float32 (8 lanes a step), when that equals the specification's double
 * division for every code of the type (checked on all of them: 256 or 65536 codes) */
static int ops_dequantize_f32_exact(int size, int is_signed, double scale, double zp, float zpf, float inv) {
    int32_t lo = size == 1 ? (is_signed ? -128 : 0) : (is_signed ? -32768 : 0);
    int32_t count = size == 1 ? 256 : 65536;
    for (int32_t q = lo; q < lo + count; q++) {
        float want = ops_dequantize1(q, scale, zp), got = ((float)q - zpf) * inv;
        if (memcmp(&want, &got, sizeof(float)))
            return 0;
    }
    return 1;
}

__attribute__((target("avx2")))
static void ops_dequantize_impl(const void *x, int size, int is_signed, size_t n, double scale, double zp,
                                float *out) {
    const uint8_t *x8 = (const uint8_t *)x;
    const uint16_t *x16 = (const uint16_t *)x;
    const float zpf = (float)zp, inv = (float)(1.0 / scale);
    const int f32 = (size == 1 || n >= (1u << 18)) && ops_dequantize_f32_exact(size, is_signed, scale, zp, zpf, inv);
    const __m256d vs = _mm256_set1_pd(scale), vzp = _mm256_set1_pd(zp);
    const __m256 vinv = _mm256_set1_ps(inv), vzpf = _mm256_set1_ps(zpf);
    size_t i = 0;
    for (; i < n && n >= 8; i += 8) {  /* the last step may overlap the one before */
        i = i + 8 > n ? n - 8 : i;
        __m256i q;
        if (size == 1)
            q = ops_load8x32(x8 + i, is_signed);
        else {
            __m128i h = _mm_loadu_si128((const __m128i *)(x16 + i));
            q = is_signed ? _mm256_cvtepi16_epi32(h) : _mm256_cvtepu16_epi32(h);
        }
        if (f32) {
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(q), vzpf), vinv));
        } else {
            __m128 a = ops_dequantize4(_mm256_castsi256_si128(q), vs, vzp);
            __m128 b = ops_dequantize4(_mm256_extracti128_si256(q, 1), vs, vzp);
            _mm256_storeu_ps(out + i, _mm256_set_m128(b, a));
        }
    }
    for (; i < n; i++) {
        int32_t q = size == 1 ? ops_load8(x8, i, is_signed) : (is_signed ? (int32_t)(int16_t)x16[i] : x16[i]);
        out[i] = ops_dequantize1(q, scale, zp);
    }
}

#define OPS_AVX2(code) if (ops_have_avx2()) { code }  /* else the caller runs the C form */
#else
#define OPS_HAVE_AVX2 0
#define OPS_AVX2(code)
static size_t ops_add8_avx2(const uint8_t *a, int as, const uint8_t *b, int bs, size_t n, int32_t ma, int32_t mb,
                            int shift, int32_t lo, int32_t hi, void *out, int kind) {
    (void)a; (void)as; (void)b; (void)bs; (void)n; (void)ma; (void)mb; (void)shift; (void)lo; (void)hi;
    (void)out; (void)kind;
    return 0;
}
#endif

static int ops_have_avx2(void) {
#if OPS_HAVE_AVX2
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
#else
    return 0;
#endif
}

/* the AVX2 kernels: 0 without AVX2 (the caller runs the C form), -1 out of memory, 1 done */
static int ops_requant8_avx2(const uint8_t *x, int is_signed, size_t n, int32_t mult, int shift, int32_t lo,
                             int32_t hi, void *out, int kind) {
    OPS_AVX2(ops_requant8_impl(x, is_signed, n, mult, shift, lo, hi, out, kind); return 1;)
    return 0;
}

static int ops_max_pool8_avx2(const uint8_t *x, int is_signed, size_t planes, ptrdiff_t H, ptrdiff_t W,
                              const ptrdiff_t *geo, int32_t mult, int shift, int32_t lo, int32_t hi, void *out,
                              int kind) {
    OPS_AVX2(return ops_max_pool8_impl(x, is_signed, planes, H, W, geo, mult, shift, lo, hi, out, kind);)
    return 0;
}

static int ops_avg_pool8_avx2(const uint8_t *x, int is_signed, size_t planes, ptrdiff_t H, ptrdiff_t W,
                              const ptrdiff_t *geo, const int32_t *avg_mult, int32_t mult, int shift, int32_t lo,
                              int32_t hi, void *out, int kind) {
    OPS_AVX2(return ops_avg_pool8_impl(x, is_signed, planes, H, W, geo, avg_mult, mult, shift, lo, hi, out, kind);)
    return 0;
}

static int ops_global8_avx2(const uint8_t *x, int is_signed, size_t rows, size_t P, int is_max, int64_t avg_mult,
                            int64_t *res) {
    OPS_AVX2(ops_global8_impl(x, is_signed, rows, P, is_max, avg_mult, res); return 1;)
    return 0;
}

static int ops_resize8_avx2(const uint8_t *x, int is_signed, size_t planes, ptrdiff_t H, ptrdiff_t W, ptrdiff_t HO,
                            ptrdiff_t WO, const int32_t *y0, const int32_t *y1, const int32_t *wy, const int32_t *x0,
                            const int32_t *x1, const int32_t *wx, int32_t mult, int shift, int32_t lo, int32_t hi,
                            void *out, int kind) {
    OPS_AVX2(return ops_resize8_impl(x, is_signed, planes, H, W, HO, WO, y0, y1, wy, x0, x1, wx, mult, shift, lo, hi,
                                     out, kind);)
    return 0;
}

static int ops_quantize_avx2(const void *x, int is_f64, size_t n, double scale, double lo, double hi, int32_t zp,
                             void *out, int kind) {
    OPS_AVX2(ops_quantize_impl(x, is_f64, n, scale, lo, hi, zp, out, kind); return 1;)
    return 0;
}

static int ops_dequantize_avx2(const void *x, int size, int is_signed, size_t n, double scale, double zp,
                               float *out) {
    OPS_AVX2(ops_dequantize_impl(x, size, is_signed, n, scale, zp, out); return 1;)
    return 0;
}

/* kind: 0 int8, 1 uint8, 2 int16, 3 uint16 */
static void ops_add8(const uint8_t *a, int as, const uint8_t *b, int bs, size_t n, int32_t ma, int32_t mb, int shift,
                     int32_t lo, int32_t hi, void *out, int kind, int use_avx2) {
    size_t done = use_avx2 && ops_have_avx2() ? ops_add8_avx2(a, as, b, bs, n, ma, mb, shift, lo, hi, out, kind) : 0;
    ops_add8_c(a, as, b, bs, done, n, ma, mb, shift, lo, hi, out, kind);
}

#endif /* TIDLC_OPS_SIMD_H */
