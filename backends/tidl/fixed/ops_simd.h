/* SIMD forms of the hottest element-wise kernels of _ops.pyx, with a run-time choice between AVX2
 * and portable C (the caller passes use_avx2: fast.isa() != "c", so TIDLC_ISA=c tests the C form).
 *
 * ops_add8: out = clamp((a * ma + b * mb + half) >> shift, lo, hi) over n elements of two 8-bit
 * tensors of the same shape, contiguous (reference.eltwise_add; sub is mb negated by the caller).
 * Exact: the caller checks |ma|, |mb| < 2**15 and |a| * |ma| + |b| * |mb| + 2**shift < 2**31, so
 * the int16 pairs (a, b) x (ma, mb) of vpmaddwd sum exactly into int32 and nothing after overflows. */
#ifndef TIDLC_OPS_SIMD_H
#define TIDLC_OPS_SIMD_H

#include <stddef.h>
#include <stdint.h>
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
#else
#define OPS_HAVE_AVX2 0
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

/* kind: 0 int8, 1 uint8, 2 int16, 3 uint16 */
static void ops_add8(const uint8_t *a, int as, const uint8_t *b, int bs, size_t n, int32_t ma, int32_t mb, int shift,
                     int32_t lo, int32_t hi, void *out, int kind, int use_avx2) {
    size_t done = use_avx2 && ops_have_avx2() ? ops_add8_avx2(a, as, b, bs, n, ma, mb, shift, lo, hi, out, kind) : 0;
    ops_add8_c(a, as, b, bs, done, n, ma, mb, shift, lo, hi, out, kind);
}

#endif /* TIDLC_OPS_SIMD_H */
