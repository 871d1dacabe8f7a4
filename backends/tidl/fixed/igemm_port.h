/* The u8 x s8 -> s32 convolution of igemm.h without AVX-512: an AVX2 variant and a portable C one,
 * same ig_conv_t / ig_stage_t contract, same packed weights ([M/IG_MR][K4][IG_MR][4]), same +128
 * offset of signed activations (the caller folds -128 * row sum into the bias).
 *
 * Exactness: the AVX2 inner loop widens the bytes to 16 bit (u8 -> [0, 255], s8 -> [-128, 127])
 * and uses vpmaddwd (s16 x s16 pairs summed into s32; 8 rows x 8 pixels of sums stay in registers over K): |pair| <= 2 * 255 * 128 < 2**31, and the
 * caller bounds K so that every int32 sum is exact (K * 255 * 128 < 2**31). The saturating
 * vpmaddubsw is never used. The C variant accumulates int32 products of widened values (exact by
 * the C semantics, whatever the compiler vectorizes them into). The output stage runs in int64
 * exactly as reference.mac_output: clamp(sum + bias, int32) * mult + half, >> shift, clamp(lo, hi).
 *
 * Work split: output-pixel panels as ig_conv_panels (threads never share scratch).
 */
#ifndef TIDLC_IGEMM_PORT_H
#define TIDLC_IGEMM_PORT_H

#include "igemm.h"

#define IGP_LEN (IG_NR * IG_CHUNK) /* pixels per chunk; one im2col row per tap, stride IGP_LEN */

/* the output stage of mv rows x nv pixels, acc[IG_MR][IGP_LEN] */
static void igp_epilogue(const ig_conv_t *p, const int32_t *acc, int m0, int mv, int n0, int nv) {
    size_t npix = (size_t)p->Ho * p->Wo;
    const int64_t half = p->st.shift > 0 ? ((int64_t)1 << (p->st.shift - 1)) : 0;
    for (int r = 0; r < mv; r++) {
        int m = m0 + r;
        int64_t b = p->st.bias[m], mult = p->st.mult[m];
        const int32_t *a = acc + (size_t)r * IGP_LEN;
        size_t o = (size_t)m * npix + (size_t)n0;
        for (int n = 0; n < nv; n++) {
            int64_t v = (int64_t)a[n] + b;
            if (v < -((int64_t)1 << 31)) v = -((int64_t)1 << 31);
            if (v > ((int64_t)1 << 31) - 1) v = ((int64_t)1 << 31) - 1;
            v = (v * mult + half) >> p->st.shift;
            if (v < p->st.lo) v = p->st.lo;
            if (v > p->st.hi) v = p->st.hi;
            switch (p->st.out_kind) {
            case 0: ((int8_t *)p->st.out)[o + n] = (int8_t)v; break;
            case 1: ((uint8_t *)p->st.out)[o + n] = (uint8_t)v; break;
            case 2: ((int16_t *)p->st.out)[o + n] = (int16_t)v; break;
            default: ((uint16_t *)p->st.out)[o + n] = (uint16_t)v; break;
            }
        }
    }
}

/* Build the K im2col rows of pixels [n0, n0 + len) into cols (row k at cols + k * IGP_LEN), as
 * unsigned bytes (signed input offset by +128; pads past K are zero rows). */
static void igp_build(const ig_conv_t *p, int n0, int len, uint8_t *cols, int kpad) {
    ig_runs_t runs;
    ig_make_runs(p, n0, len, &runs);
    for (int k = 0; k < kpad; k++) {
        uint8_t *dst = cols + (size_t)k * IGP_LEN;
        if (k >= p->K) {
            memset(dst, p->is_signed ? 0 : 0, IGP_LEN);  /* weights are 0 there too */
            continue;
        }
        const uint8_t *r = ig_build_row(p, &runs, k, n0, len, dst);
        if (r != dst) memcpy(dst, r, (size_t)len);
        if (len < IGP_LEN) memset(dst + len, 0, (size_t)(IGP_LEN - len));
        if (p->is_signed)
            for (int n = 0; n < IGP_LEN; n++) dst[n] ^= 0x80;
    }
}

/* the portable C body: acc[r][n] += w[r][k] * col[k][n] */
#define IGP_C_BODY                                                                            \
    for (int k4 = 0; k4 < k4n; k4++)                                                          \
        for (int q = 0; q < 4; q++) {                                                         \
            const uint8_t *col = cols + (size_t)(4 * k4 + q) * IGP_LEN;                        \
            for (int r = 0; r < mv; r++) {                                                    \
                int32_t w = a[((size_t)k4 * IG_MR + r) * 4 + q];                              \
                if (!w) continue;                                                             \
                int32_t *ac = acc + (size_t)r * IGP_LEN;                                      \
                for (int n = 0; n < len; n++) ac[n] += w * (int32_t)col[n];                   \
            }                                                                                 \
        }

#define IGP_DRIVER(NAME, BODY, ATTR)                                                          \
    ATTR static int NAME(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {             \
        int k4n = (p->K + 3) / 4;                                                             \
        uint8_t *cols = scratch;                                                              \
        int npix = p->Ho * p->Wo;                                                             \
        int mblocks = (p->M + IG_MR - 1) / IG_MR;                                             \
        int32_t *acc = (int32_t *)(scratch + (size_t)k4n * 4 * IGP_LEN);                      \
        int32_t *wp = acc + IG_MR * IGP_LEN;                                                  \
        (void)wp;                                                                             \
        for (int c0 = pb; c0 < pe; c0 += IG_CHUNK) {                                          \
            int np = pe - c0 < IG_CHUNK ? pe - c0 : IG_CHUNK;                                 \
            int n0 = c0 * IG_NR;                                                              \
            int len = npix - n0 < np * IG_NR ? npix - n0 : np * IG_NR;                        \
            igp_build(p, n0, np * IG_NR, cols, 4 * k4n);                                      \
            for (int mb = 0; mb < mblocks; mb++) {                                            \
                const int8_t *a = p->apack + (size_t)mb * k4n * 4 * IG_MR;                    \
                int mv = p->M - mb * IG_MR < IG_MR ? p->M - mb * IG_MR : IG_MR;               \
                memset(acc, 0, sizeof(int32_t) * IG_MR * IGP_LEN);                            \
                BODY                                                                          \
                igp_epilogue(p, acc, mb * IG_MR, mv, n0, len);                                \
            }                                                                                 \
        }                                                                                     \
        return 0;                                                                             \
    }

/* scratch: the K4 * 4 rows plus the accumulators (64-byte aligned base) */
static inline size_t igp_scratch_bytes(int K) {
    return (size_t)((K + 3) / 4) * 4 * IGP_LEN + sizeof(int32_t) * IG_MR * IGP_LEN +
           sizeof(int32_t) * IG_MR * 2 * (size_t)((K + 3) / 4) + 64;
}

IGP_DRIVER(igp_conv_panels_c, IGP_C_BODY, )

#if IG_HAVE_VNNI /* x86-64 with a GCC-compatible compiler: immintrin.h is included */
/* AVX2: two taps at a time, 8 pixels per vector: bytes of taps k, k+1 interleaved, widened to
 * 16 x s16 (pairs), vpmaddwd with the broadcast pair (w_k, w_k+1) -> 8 exact s32 sums. */
#define IGP_AVX2_BODY                                                                         \
    {                                                                                         \
        int k2n = 2 * k4n;                                                                    \
        for (int k2 = 0; k2 < k2n; k2++)                                                      \
            for (int r = 0; r < IG_MR; r++) {                                                 \
                int k4 = k2 >> 1, q = (k2 & 1) * 2;                                           \
                int16_t w0 = a[((size_t)k4 * IG_MR + r) * 4 + q];                             \
                int16_t w1 = a[((size_t)k4 * IG_MR + r) * 4 + q + 1];                         \
                wp[(size_t)k2 * IG_MR + r] = (int32_t)(((uint32_t)(uint16_t)w1 << 16) | (uint16_t)w0); \
            }                                                                                 \
        for (int n = 0; n < len; n += 8) {                                                    \
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0; \
            const uint8_t *cp = cols + n;                                                     \
            const int32_t *w = wp;                                                            \
            for (int k2 = 0; k2 < k2n; k2++, cp += 2 * IGP_LEN, w += IG_MR) {                 \
                __m128i x0 = _mm_loadl_epi64((const __m128i *)cp);                            \
                __m128i x1 = _mm_loadl_epi64((const __m128i *)(cp + IGP_LEN));                \
                __m256i xv = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(x0, x1));                 \
                s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[0])));    \
                s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[1])));    \
                s2 = _mm256_add_epi32(s2, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[2])));    \
                s3 = _mm256_add_epi32(s3, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[3])));    \
                s4 = _mm256_add_epi32(s4, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[4])));    \
                s5 = _mm256_add_epi32(s5, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[5])));    \
                s6 = _mm256_add_epi32(s6, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[6])));    \
                s7 = _mm256_add_epi32(s7, _mm256_madd_epi16(xv, _mm256_set1_epi32(w[7])));    \
            }                                                                                 \
            _mm256_storeu_si256((__m256i *)(acc + 0 * IGP_LEN + n), s0);                      \
            _mm256_storeu_si256((__m256i *)(acc + 1 * IGP_LEN + n), s1);                      \
            _mm256_storeu_si256((__m256i *)(acc + 2 * IGP_LEN + n), s2);                      \
            _mm256_storeu_si256((__m256i *)(acc + 3 * IGP_LEN + n), s3);                      \
            _mm256_storeu_si256((__m256i *)(acc + 4 * IGP_LEN + n), s4);                      \
            _mm256_storeu_si256((__m256i *)(acc + 5 * IGP_LEN + n), s5);                      \
            _mm256_storeu_si256((__m256i *)(acc + 6 * IGP_LEN + n), s6);                      \
            _mm256_storeu_si256((__m256i *)(acc + 7 * IGP_LEN + n), s7);                      \
        }                                                                                     \
    }
IGP_DRIVER(igp_conv_panels_avx2, IGP_AVX2_BODY, __attribute__((target("avx2"))))

static int igp_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

#if defined(__clang__) || __GNUC__ >= 11
#define IGP_HAVE_AVXVNNI 1
/* AVX-VNNI (256-bit vpdpbusd, VEX): four taps per step, 8 pixels per vector: the bytes of taps
 * 4k..4k+3 interleaved per pixel (u8), times the row's 4 packed weights (s8) broadcast. vpdpbusd
 * does not saturate (vpdpbusds would): every s32 sum is exact under the caller's K bound. */
#define IGP_AVXVNNI_BODY                                                                      \
    for (int n = 0; n < len; n += 8) {                                                        \
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0; \
        const uint8_t *cp = cols + n;                                                         \
        for (int k4 = 0; k4 < k4n; k4++, cp += 4 * IGP_LEN) {                                 \
            __m128i x0 = _mm_loadl_epi64((const __m128i *)cp);                                \
            __m128i x1 = _mm_loadl_epi64((const __m128i *)(cp + IGP_LEN));                    \
            __m128i x2 = _mm_loadl_epi64((const __m128i *)(cp + 2 * IGP_LEN));                \
            __m128i x3 = _mm_loadl_epi64((const __m128i *)(cp + 3 * IGP_LEN));                \
            __m128i a01 = _mm_unpacklo_epi8(x0, x1), a23 = _mm_unpacklo_epi8(x2, x3);         \
            __m256i xv = _mm256_set_m128i(_mm_unpackhi_epi16(a01, a23), _mm_unpacklo_epi16(a01, a23)); \
            int32_t w[IG_MR];                                                                 \
            memcpy(w, a + (size_t)k4 * IG_MR * 4, sizeof w);                                  \
            s0 = _mm256_dpbusd_avx_epi32(s0, xv, _mm256_set1_epi32(w[0]));                    \
            s1 = _mm256_dpbusd_avx_epi32(s1, xv, _mm256_set1_epi32(w[1]));                    \
            s2 = _mm256_dpbusd_avx_epi32(s2, xv, _mm256_set1_epi32(w[2]));                    \
            s3 = _mm256_dpbusd_avx_epi32(s3, xv, _mm256_set1_epi32(w[3]));                    \
            s4 = _mm256_dpbusd_avx_epi32(s4, xv, _mm256_set1_epi32(w[4]));                    \
            s5 = _mm256_dpbusd_avx_epi32(s5, xv, _mm256_set1_epi32(w[5]));                    \
            s6 = _mm256_dpbusd_avx_epi32(s6, xv, _mm256_set1_epi32(w[6]));                    \
            s7 = _mm256_dpbusd_avx_epi32(s7, xv, _mm256_set1_epi32(w[7]));                    \
        }                                                                                     \
        _mm256_storeu_si256((__m256i *)(acc + 0 * IGP_LEN + n), s0);                          \
        _mm256_storeu_si256((__m256i *)(acc + 1 * IGP_LEN + n), s1);                          \
        _mm256_storeu_si256((__m256i *)(acc + 2 * IGP_LEN + n), s2);                          \
        _mm256_storeu_si256((__m256i *)(acc + 3 * IGP_LEN + n), s3);                          \
        _mm256_storeu_si256((__m256i *)(acc + 4 * IGP_LEN + n), s4);                          \
        _mm256_storeu_si256((__m256i *)(acc + 5 * IGP_LEN + n), s5);                          \
        _mm256_storeu_si256((__m256i *)(acc + 6 * IGP_LEN + n), s6);                          \
        _mm256_storeu_si256((__m256i *)(acc + 7 * IGP_LEN + n), s7);                          \
    }
IGP_DRIVER(igp_conv_panels_avxvnni, IGP_AVXVNNI_BODY, __attribute__((target("avx2,avxvnni"))))

static int igp_have_avxvnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
}
#endif
#endif
#ifndef IGP_HAVE_AVXVNNI
static int igp_conv_panels_avxvnni(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    (void)p; (void)pb; (void)pe; (void)scratch;
    return -1;
}
static int igp_have_avxvnni(void) { return 0; }
#endif
#if !IG_HAVE_VNNI
static int igp_conv_panels_avx2(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    (void)p; (void)pb; (void)pe; (void)scratch;
    return -1;
}
static int igp_have_avx2(void) { return 0; }
#endif

static int igp_conv_part_c(const void *p, int begin, int end, void *scratch) {
    return igp_conv_panels_c((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int igp_conv_part_avxvnni(const void *p, int begin, int end, void *scratch) {
    return igp_conv_panels_avxvnni((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int igp_conv_part_avx2(const void *p, int begin, int end, void *scratch) {
    return igp_conv_panels_avx2((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}

#endif /* TIDLC_IGEMM_PORT_H */
