/* The kernels of igemm.h without AVX-512 (convolution GEMM, depthwise, one-pixel matrix-vector):
 * AVX-VNNI (256-bit), AVX2 and portable C variants, same ig_conv_t / ig_dw_t / ig_stage_t contract,
 * same +128 offset of signed activations in the GEMM and one-pixel kernels (the caller folds
 * -128 * row sum into the bias; the depthwise kernels read signed bytes as they are).
 *
 * Exactness: the AVX2 kernels widen the bytes to 16 bit (u8 -> [0, 255], s8 -> [-128, 127]) and
 * use vpmaddwd (s16 x s16 pairs summed into s32): |pair| <= 2 * 255 * 128 < 2**31, and the caller
 * bounds K so that every int32 sum is exact (K * 255 * 128 < 2**31). The saturating vpmaddubsw is
 * never used. AVX-VNNI uses the non-saturating vpdpbusd. The C variant accumulates int32 products
 * of widened values (exact by the C semantics, whatever the compiler vectorizes them into). The
 * output stage equals reference.mac_output: clamp(sum + bias, int32) * mult + half, >> shift,
 * clamp(lo, hi), in int64 (C, and the AVX2 int64-lane form) or in the int32-lane forms of
 * igemm.h's ig_out16 where the plan proved them exact (ig_stage_t.narrow).
 *
 * Work split: the C variant by output-pixel panels as ig_conv_panels; the AVX2 / AVX-VNNI GEMM by
 * items (channel part, 16-pixel group) of igp2_items; depthwise by channels. Threads never share
 * scratch, so the results do not depend on the thread count.
 */
#ifndef TIDLC_IGEMM_PORT_H
#define TIDLC_IGEMM_PORT_H

#include "igemm.h"

#define IGP_LEN (IG_NR * IG_CHUNK) /* pixels per chunk; one im2col row per tap, stride IGP_LEN */

/* the output stage of one sum of channel m, stored at element o of the output */
static inline void igp_put(const ig_stage_t *st, int m, int64_t sum, size_t o) {
    const int64_t half = st->shift > 0 ? ((int64_t)1 << (st->shift - 1)) : 0;
    int64_t v = sum + st->bias[m];
    if (v < -((int64_t)1 << 31)) v = -((int64_t)1 << 31);
    if (v > ((int64_t)1 << 31) - 1) v = ((int64_t)1 << 31) - 1;
    v = (v * st->mult[m] + half) >> st->shift;
    if (v < st->lo) v = st->lo;
    if (v > st->hi) v = st->hi;
    switch (st->out_kind) {
    case 0: ((int8_t *)st->out)[o] = (int8_t)v; break;
    case 1: ((uint8_t *)st->out)[o] = (uint8_t)v; break;
    case 2: ((int16_t *)st->out)[o] = (int16_t)v; break;
    default: ((uint16_t *)st->out)[o] = (uint16_t)v; break;
    }
}

/* the output stage of mv rows x nv pixels, acc[IG_MR][IGP_LEN] */
static void igp_epilogue(const ig_conv_t *p, const int32_t *acc, int m0, int mv, int n0, int nv) {
    size_t npix = (size_t)p->Ho * p->Wo;
    for (int r = 0; r < mv; r++) {
        const int32_t *a = acc + (size_t)r * IGP_LEN;
        size_t o = (size_t)(m0 + r) * npix + (size_t)n0;
        for (int n = 0; n < nv; n++) igp_put(&p->st, m0 + r, a[n], o + n);
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

/* One output pixel whose window is the whole input (igemm.h's ig_gemv), portable C: w the (M, K)
 * int8 rows as they are, x the K input bytes, offset by +128 when signed like the GEMM (the caller
 * folds -128 * row sum into the bias). The sums are exact in int32 (K <= MAX_K). */
static int igp_gemv_c(const ig_conv_t *p, const int8_t *w, const uint8_t *x) {
    uint8_t flip = p->is_signed ? 0x80 : 0;
    for (int m = 0; m < p->M; m++) {
        const int8_t *wr = w + (size_t)m * p->K;
        int32_t s = 0;
        for (int k = 0; k < p->K; k++) s += (int32_t)wr[k] * (int32_t)(uint8_t)(x[k] ^ flip);
        igp_put(&p->st, m, s, (size_t)m);
    }
    return 0;
}

/* Depthwise, portable C: channels [cb, ce), one output at a time over the taps inside the image
 * (a padding tap adds nothing). Exact: int32 sums of kh * kw products of at most 255 * 128. */
static int igp_dw_channels_c(const ig_dw_t *p, int cb, int ce, void *scratch) {
    (void)scratch;
    for (int c = cb; c < ce; c++) {
        const uint8_t *plane = p->x + (size_t)c * p->H * p->W;
        const int8_t *wc = p->w + (size_t)c * p->kh * p->kw;
        for (int oh = 0; oh < p->Ho; oh++)
            for (int ow = 0; ow < p->Wo; ow++) {
                int32_t s = 0;
                for (int i = 0; i < p->kh; i++) {
                    int ih = oh * p->sh - p->pt + i * p->dh;
                    if (ih < 0 || ih >= p->H) continue;
                    const uint8_t *row = plane + (size_t)ih * p->W;
                    for (int j = 0; j < p->kw; j++) {
                        int iw = ow * p->sw - p->pl + j * p->dw;
                        if (iw < 0 || iw >= p->W) continue;
                        int32_t v = p->is_signed ? (int32_t)(int8_t)row[iw] : (int32_t)row[iw];
                        s += v * (int32_t)wc[i * p->kw + j];
                    }
                }
                igp_put(&p->st, c, s, ((size_t)c * p->Ho + oh) * p->Wo + ow);
            }
    }
    return 0;
}

/* the padded plane of the AVX2 depthwise kernel: rows and columns the windows read, plus slack */
static inline int igp_dw_width(const ig_dw_t *p) {
    return (((p->Wo + 15) / 16) * 16 - 1) * p->sw + (p->kw - 1) * p->dw + 1 + 32;
}
static inline int igp_dw_height(const ig_dw_t *p) { return (p->Ho - 1) * p->sh + (p->kh - 1) * p->dh + 1; }
static inline size_t igp_dw_scratch_bytes(const ig_dw_t *p) {
    size_t pairs = (size_t)(p->kh * p->kw + 1) / 2;
    return (size_t)igp_dw_width(p) * (size_t)igp_dw_height(p) + 32 + (2 * pairs + 8) * 4 + 2 * pairs * sizeof(size_t) + 64;
}

#if IG_HAVE_VNNI /* x86-64 with a GCC-compatible compiler: immintrin.h is included */
/* ------------------------------------------------------------------ AVX2
 * GEMM: the columns of a chunk of output pixels are packed once as int16 pairs (taps 2k, 2k+1 of a
 * pixel in one int32, bytes offset by +128 when signed, like the other variants), in groups of 16
 * pixels: [group][K2][16] int32. The weights are packed once per layer the same way (ConvPlan:
 * p->wpair, [M/IGP_MR][K2][IGP_MR] int32). A micro tile of IGP_MR (6) output channels x 16 pixels
 * keeps 12 accumulators in registers over K: per pair of taps, two column loads, 6 broadcasts and
 * 12 vpmaddwd (exact s16 x s16 pair sums into s32). The output stage runs on the registers
 * (igp_stage8: the int32-lane forms of igemm.h's ig_out16 when the plan proved them exact, else
 * int64 lanes), so no accumulator goes through memory. */
#define IGP_MR 6
#define IGP_GROUP 16     /* pixels per micro tile */
#define IGP_CHUNK_BYTES (192 * 1024)  /* packed columns of a chunk: about half of a Zen 2 L2 */

/* 16-pixel groups per chunk: the packed columns stay in L2 (at least one group, at most 16) */
static inline int igp2_groups(int K) {
    int k2n = (K + 1) / 2, g = IGP_CHUNK_BYTES / (k2n * 64);
    return g < 1 ? 1 : (g > IG_NR * IG_CHUNK / IGP_GROUP ? IG_NR * IG_CHUNK / IGP_GROUP : g);
}

static inline size_t igp2_scratch_bytes(int K) {  /* the columns, then four im2col rows */
    return (size_t)((K + 1) / 2) * 64 * (size_t)igp2_groups(K) + 4 * IG_NR * IG_CHUNK + 128;
}

/* the output stage of 8 sums of channel (bias, mult) in int32 lanes, clamped to [lo, hi] */
__attribute__((target("avx2"), always_inline))
static inline __m256i igp_stage8(__m256i v, const ig_stage_t *st, int64_t bias, int64_t mult) {
    int shift = st->shift;
    if (st->narrow == 2) {  /* direct: |v + bias| * |mult| + half < 2**31 (proved by the plan) */
        v = _mm256_add_epi32(v, _mm256_set1_epi32((int32_t)bias));
        if (mult != 1)
            v = _mm256_mullo_epi32(v, _mm256_set1_epi32((int32_t)mult));
        v = _mm256_sra_epi32(_mm256_add_epi32(v, _mm256_set1_epi32(shift > 0 ? 1 << (shift - 1) : 0)),
                             _mm_cvtsi32_si128(shift));
    } else if (st->narrow == 1) {  /* split: |v + bias| < 2**31, 0 <= mult < 2**15, 17 <= shift <= 46 */
        const __m256i m = _mm256_set1_epi32((int32_t)mult);
        v = _mm256_add_epi32(v, _mm256_set1_epi32((int32_t)bias));
        __m256i a = _mm256_mullo_epi32(_mm256_srai_epi32(v, 16), m);
        __m256i c = _mm256_srli_epi32(_mm256_mullo_epi32(_mm256_and_si256(v, _mm256_set1_epi32(0xffff)), m), 16);
        v = _mm256_sra_epi32(_mm256_add_epi32(_mm256_add_epi32(a, _mm256_set1_epi32(1 << (shift - 17))), c),
                             _mm_cvtsi32_si128(shift - 16));
    } else {  /* int64 lanes: exact for any bias, |mult| < 2**31, shift <= 62 */
        const __m256i amin = _mm256_set1_epi64x(-((int64_t)1 << 31)), amax = _mm256_set1_epi64x(((int64_t)1 << 31) - 1);
        const __m256i b = _mm256_set1_epi64x(bias), m = _mm256_set1_epi64x(mult), zero = _mm256_setzero_si256();
        const __m256i half = _mm256_set1_epi64x(shift > 0 ? ((int64_t)1 << (shift - 1)) : 0);
        const __m256i vlo = _mm256_set1_epi64x(st->lo), vhi = _mm256_set1_epi64x(st->hi);
        const __m128i sh = _mm_cvtsi32_si128(shift);
        __m256i h[2] = {_mm256_cvtepi32_epi64(_mm256_castsi256_si128(v)), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(v, 1))};
        for (int q = 0; q < 2; q++) {
            __m256i x = _mm256_add_epi64(h[q], b);
            x = _mm256_blendv_epi8(x, amin, _mm256_cmpgt_epi64(amin, x));
            x = _mm256_blendv_epi8(x, amax, _mm256_cmpgt_epi64(x, amax));
            x = _mm256_add_epi64(_mm256_mul_epi32(x, m), half);  /* x in int32 range: vpmuldq is exact */
            __m256i sign = _mm256_cmpgt_epi64(zero, x);          /* arithmetic >> from the logical one */
            x = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(x, sign), sh), sign);
            x = _mm256_blendv_epi8(x, vlo, _mm256_cmpgt_epi64(vlo, x));
            h[q] = _mm256_blendv_epi8(x, vhi, _mm256_cmpgt_epi64(x, vhi));
        }
        const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6);  /* the low halves: in range */
        return _mm256_set_m128i(_mm256_castsi256_si128(_mm256_permutevar8x32_epi32(h[1], even)),
                                _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(h[0], even)));
    }
    return _mm256_min_epi32(_mm256_max_epi32(v, _mm256_set1_epi32((int32_t)st->lo)), _mm256_set1_epi32((int32_t)st->hi));
}

/* copy exactly n bytes, reading src[0, n) only: short copies as a few overlapping moves (no call) */
static inline void igp_copy(uint8_t *dst, const uint8_t *src, size_t n) {
    if (n >= 32) {
        size_t i = 0;
        for (; i + 32 <= n; i += 32) __builtin_memcpy(dst + i, src + i, 32);
        if (i < n) __builtin_memcpy(dst + n - 32, src + n - 32, 32);
    } else if (n >= 16) {
        __builtin_memcpy(dst, src, 16);
        __builtin_memcpy(dst + n - 16, src + n - 16, 16);
    } else if (n >= 8) {
        __builtin_memcpy(dst, src, 8);
        __builtin_memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        __builtin_memcpy(dst, src, 4);
        __builtin_memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        for (size_t i = 0; i < n; i++) dst[i] = src[i];
    }
}

/* store the first n (1..16) of r0 (8 values), r1 (8 values) as out_kind; the values are in the
 * type's range already, so the saturating packs are exact */
__attribute__((target("avx2"), always_inline))
static inline void igp_store16(__m256i r0, __m256i r1, int n, int out_kind, void *out) {
    if (out_kind <= 1) {
        __m256i p16 = _mm256_packs_epi32(r0, r1);
        __m256i p8 = out_kind == 0 ? _mm256_packs_epi16(p16, p16) : _mm256_packus_epi16(p16, p16);
        __m128i b = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 0, 4, 1, 5)));
        if (n >= 16) {
            _mm_storeu_si128((__m128i *)out, b);
        } else {
            uint8_t tmp[16];
            _mm_storeu_si128((__m128i *)tmp, b);
            igp_copy((uint8_t *)out, tmp, (size_t)n);
        }
    } else {
        __m256i p = out_kind == 2 ? _mm256_packs_epi32(r0, r1) : _mm256_packus_epi32(r0, r1);
        p = _mm256_permute4x64_epi64(p, 0xd8);
        if (n >= 16) {
            _mm256_storeu_si256((__m256i *)out, p);
        } else {
            uint16_t tmp[16];
            _mm256_storeu_si256((__m256i *)tmp, p);
            igp_copy((uint8_t *)out, (const uint8_t *)tmp, (size_t)n * 2);
        }
    }
}

/* channel ch: the output stage of 16 sums (a0: the first 8), the first n stored at out */
__attribute__((target("avx2"), always_inline))
static inline void igp_out16(const ig_stage_t *st, int ch, __m256i a0, __m256i a1, int n, void *out) {
    int64_t b = st->bias[ch], m = st->mult[ch];
    __m256i r0 = igp_stage8(a0, st, b, m);
    __m256i r1 = n > 8 ? igp_stage8(a1, st, b, m) : r0;
    igp_store16(r0, r1, n, st->out_kind, out);
}

/* The packed columns of 16 pixels (at o) for one step of the K loop, from the im2col rows r[]
 * (bytes, offset by +128 via `sign` when signed): AVX2, two taps as int16 pairs (2 x 8 int32);
 * AVX-VNNI, four taps as byte quads (4 x 4 int32); pixel order either way. */
__attribute__((target("avx2"), always_inline))
static inline void igp2_pack_pairs(const uint8_t *const *r, int o, __m128i sign, __m256i *d) {
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[0] + o)), sign);
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[1] + o)), sign);
    _mm256_store_si256(d, _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(a, b)));
    _mm256_store_si256(d + 1, _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(a, b)));
}

__attribute__((target("avx2"), always_inline))
static inline void igp2_pack_quads(const uint8_t *const *r, int o, __m128i sign, __m256i *d) {
    __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[0] + o)), sign);
    __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[1] + o)), sign);
    __m128i c = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[2] + o)), sign);
    __m128i e = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(r[3] + o)), sign);
    __m128i ab_lo = _mm_unpacklo_epi8(a, b), ab_hi = _mm_unpackhi_epi8(a, b);
    __m128i ce_lo = _mm_unpacklo_epi8(c, e), ce_hi = _mm_unpackhi_epi8(c, e);
    _mm256_store_si256(d, _mm256_set_m128i(_mm_unpackhi_epi16(ab_lo, ce_lo), _mm_unpacklo_epi16(ab_lo, ce_lo)));
    _mm256_store_si256(d + 1, _mm256_set_m128i(_mm_unpackhi_epi16(ab_hi, ce_hi), _mm_unpacklo_epi16(ab_hi, ce_hi)));
}

/* the direct output stage with multiplier 1 (TIDL's power-of-2 scales) is (sum + bias + half) >>
 * shift: the tile starts its sums at bias + half (every partial sum stays within the bound the
 * plan proved for the whole), returned here (0: the sums start at 0, igp_out16 does the stage) */
static inline int igp2_preload(const ig_conv_t *p, int m0, int mv) {
    if (p->st.narrow != 2) return 0;
    for (int r = 0; r < mv; r++)
        if (p->st.mult[m0 + r] != 1) return 0;
    return 1;
}

/* the stage of a preloaded tile row: >> shift, clamp, store */
__attribute__((target("avx2"), always_inline))
static inline void igp2_out_pre(const ig_conv_t *p, __m256i a0, __m256i a1, int nv, void *out) {
    const __m128i sh = _mm_cvtsi32_si128(p->st.shift);
    const __m256i lo = _mm256_set1_epi32((int32_t)p->st.lo), hi = _mm256_set1_epi32((int32_t)p->st.hi);
    __m256i r0 = _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(a0, sh), lo), hi);
    __m256i r1 = nv > 8 ? _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(a1, sh), lo), hi) : r0;
    igp_store16(r0, r1, nv, p->st.out_kind, out);
}

#define IGP2_DOT_MADD(acc, x, w) _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))  /* s16 pairs -> s32 */
#define IGP2_DOT_DPBUSD(acc, x, w) _mm256_dpbusd_avx_epi32(acc, x, w)  /* u8 x s8 quads -> s32, no saturation */

/* row r of a tile: its broadcast weight times the 8 or 16 pixels of this step (MV, NV constants) */
#define IGP2_ROW(DOT, r)                                                                                       \
    if (MV > r) {                                                                                              \
        wv = _mm256_set1_epi32(w[r]);                                                                          \
        c##r##0 = DOT(c##r##0, x0, wv);                                                                        \
        if (NV == 2) c##r##1 = DOT(c##r##1, x1, wv);                                                           \
    }

/* One GEMM per variant, the same code but for the dot step (DOT), the taps per step (TAPS) and the
 * column packing (PACK):
 *   SFX_tile: MV (1..6) channels from m0 x 8 * NV (1, 2) pixels from n (nv valid): w [Kn][IGP_MR],
 *     c [Kn][16] int32 (Kn = K / TAPS rounded up), 12 accumulators in registers at most;
 *   SFX_conv: pixel groups [gb, ge) x channel tiles [tb, te), the columns of a chunk of groups packed
 *     once into scratch (igp2_scratch_bytes(K), 64-byte aligned);
 *   igp_conv_items_SFX: work items [begin, end) of igp2_items (channel part major). */
#define IGP2_DEFINE(SFX, TARGET, TAPS, DOT, PACK)                                                              \
    __attribute__((target(TARGET), always_inline))                                                             \
    static inline void SFX##_tile(const ig_conv_t *p, const int32_t *w, const int32_t *c, int kn, int m0, int n, \
                                  int nv, const int MV, const int NV) {                                        \
        __m256i a0[IGP_MR], a1[IGP_MR];                                                                        \
        int pre = igp2_preload(p, m0, MV);                                                                     \
        int64_t half = p->st.shift > 0 ? (int64_t)1 << (p->st.shift - 1) : 0;                                  \
        for (int r = 0; r < MV; r++)                                                                           \
            a0[r] = a1[r] = _mm256_set1_epi32(pre ? (int32_t)(p->st.bias[m0 + r] + half) : 0);                  \
        /* named accumulators (an array indexed in the loop is kept on the stack by GCC) */                    \
        __m256i c00 = a0[0], c01 = a1[0], c10 = a0[MV > 1], c11 = a1[MV > 1], c20 = a0[MV > 2 ? 2 : 0],        \
                c21 = a1[MV > 2 ? 2 : 0], c30 = a0[MV > 3 ? 3 : 0], c31 = a1[MV > 3 ? 3 : 0],                  \
                c40 = a0[MV > 4 ? 4 : 0], c41 = a1[MV > 4 ? 4 : 0], c50 = a0[MV > 5 ? 5 : 0],                  \
                c51 = a1[MV > 5 ? 5 : 0];                                                                      \
        for (int k = 0; k < kn; k++, c += IGP_GROUP, w += IGP_MR) {                                            \
            __m256i x0 = _mm256_load_si256((const __m256i *)c), x1 = x0, wv;                                   \
            if (NV == 2) x1 = _mm256_load_si256((const __m256i *)(c + 8));                                     \
            IGP2_ROW(DOT, 0) IGP2_ROW(DOT, 1) IGP2_ROW(DOT, 2) IGP2_ROW(DOT, 3) IGP2_ROW(DOT, 4)               \
            IGP2_ROW(DOT, 5)                                                                                   \
        }                                                                                                      \
        a0[0] = c00, a1[0] = c01, a0[1] = c10, a1[1] = c11, a0[2] = c20, a1[2] = c21;                          \
        a0[3] = c30, a1[3] = c31, a0[4] = c40, a1[4] = c41, a0[5] = c50, a1[5] = c51;                          \
        size_t npix = (size_t)p->Ho * p->Wo, size = p->st.out_kind <= 1 ? 1 : 2;                               \
        for (int r = 0; r < MV; r++) {                                                                         \
            void *o = (uint8_t *)p->st.out + ((size_t)(m0 + r) * npix + (size_t)n) * size;                     \
            if (pre)                                                                                           \
                igp2_out_pre(p, a0[r], a1[r], nv, o);                                                          \
            else                                                                                               \
                igp_out16(&p->st, m0 + r, a0[r], a1[r], nv, o);                                                \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    __attribute__((target(TARGET)))                                                                            \
    static void SFX##_tile_any(const ig_conv_t *p, const int32_t *w, const int32_t *c, int kn, int m0, int mv,   \
                               int n, int nv) {                                                                \
        switch (mv * 2 + (nv > 8)) {                                                                           \
        case 2: SFX##_tile(p, w, c, kn, m0, n, nv, 1, 1); break;                                               \
        case 3: SFX##_tile(p, w, c, kn, m0, n, nv, 1, 2); break;                                               \
        case 4: SFX##_tile(p, w, c, kn, m0, n, nv, 2, 1); break;                                               \
        case 5: SFX##_tile(p, w, c, kn, m0, n, nv, 2, 2); break;                                               \
        case 6: SFX##_tile(p, w, c, kn, m0, n, nv, 3, 1); break;                                               \
        case 7: SFX##_tile(p, w, c, kn, m0, n, nv, 3, 2); break;                                               \
        case 8: SFX##_tile(p, w, c, kn, m0, n, nv, 4, 1); break;                                               \
        case 9: SFX##_tile(p, w, c, kn, m0, n, nv, 4, 2); break;                                               \
        case 10: SFX##_tile(p, w, c, kn, m0, n, nv, 5, 1); break;                                              \
        case 11: SFX##_tile(p, w, c, kn, m0, n, nv, 5, 2); break;                                              \
        case 12: SFX##_tile(p, w, c, kn, m0, n, nv, 6, 1); break;                                              \
        default: SFX##_tile(p, w, c, kn, m0, n, nv, 6, 2); break;                                              \
        }                                                                                                      \
    }                                                                                                          \
                                                                                                               \
    __attribute__((target(TARGET)))                                                                            \
    static int SFX##_conv(const ig_conv_t *p, int gb, int ge, int tb, int te, uint8_t *scratch) {              \
        int kn = (p->K + TAPS - 1) / TAPS, gmax = igp2_groups(p->K), npix = p->Ho * p->Wo;                     \
        int32_t *cols = (int32_t *)scratch;                                                                    \
        uint8_t *rows = scratch + (size_t)kn * 64 * gmax;                                                      \
        const __m128i sign = _mm_set1_epi8(p->is_signed ? (char)0x80 : 0);                                     \
        ig_runs_t runs;                                                                                        \
        if (!p->wpair) return -3;                                                                              \
        for (int g0 = gb; g0 < ge; g0 += gmax) {                                                               \
            int ng = ge - g0 < gmax ? ge - g0 : gmax, n0 = g0 * IGP_GROUP, len = ng * IGP_GROUP;               \
            ig_make_runs(p, n0, len, &runs);                                                                   \
            for (int ks = 0; ks < kn; ks++) {                                                                  \
                const uint8_t *r[TAPS];                                                                        \
                for (int t = 0; t < TAPS; t++)                                                                 \
                    r[t] = ig_build_row(p, &runs, TAPS * ks + t, n0, len, rows + (size_t)t * IG_NR * IG_CHUNK); \
                for (int q = 0; q < ng; q++)                                                                   \
                    PACK(r, q * IGP_GROUP, sign, (__m256i *)(cols + ((size_t)q * kn + ks) * IGP_GROUP));       \
            }                                                                                                  \
            for (int t = tb; t < te; t++) {                                                                    \
                int m0 = t * IGP_MR, mv = p->M - m0 < IGP_MR ? p->M - m0 : IGP_MR;                             \
                const int32_t *w = p->wpair + (size_t)t * kn * IGP_MR;                                         \
                for (int q = 0; q < ng; q++) {                                                                 \
                    int n = n0 + q * IGP_GROUP, nv = npix - n < IGP_GROUP ? npix - n : IGP_GROUP;              \
                    if (nv <= 0) break;                                                                        \
                    SFX##_tile_any(p, w, cols + (size_t)q * kn * IGP_GROUP, kn, m0, mv, n, nv);                \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
        return 0;                                                                                              \
    }                                                                                                          \
                                                                                                               \
    static int igp_conv_items_##SFX(const ig_conv_t *p, int begin, int end, uint8_t *scratch) {                \
        int groups = (p->Ho * p->Wo + IGP_GROUP - 1) / IGP_GROUP, parts = p->msplit > 0 ? p->msplit : 1;       \
        int tiles = (p->M + IGP_MR - 1) / IGP_MR;                                                              \
        for (int i = begin; i < end;) {                                                                        \
            int part = i / groups, g = i % groups, stop = (part + 1) * groups < end ? (part + 1) * groups : end; \
            int rc = SFX##_conv(p, g, g + (stop - i), tiles * part / parts, tiles * (part + 1) / parts, scratch); \
            if (rc) return rc;                                                                                 \
            i = stop;                                                                                          \
        }                                                                                                      \
        return 0;                                                                                              \
    }

/* The work items of a layer: (channel part, pixel group), channel part major; begin/end split them. */
static inline int igp2_items(const ig_conv_t *p) {
    int groups = (p->Ho * p->Wo + IGP_GROUP - 1) / IGP_GROUP;
    return groups * (p->msplit > 0 ? p->msplit : 1);
}

IGP2_DEFINE(avx2, "avx2", 2, IGP2_DOT_MADD, igp2_pack_pairs)

/* One-pixel layer, AVX2: 8 output channels per register (lanes over m), weights packed as int16
 * pairs [M/8][K2][8] (pack_weights_pairs(w, 8)), the input pair (x[2k], x[2k+1]) broadcast; x
 * offset by +128 when signed like the GEMM (the caller folds -128 * row sum into the bias). */
__attribute__((target("avx2")))
static int igp_gemv_avx2(const ig_conv_t *p, const int32_t *wpack, const uint8_t *x) {
    int k2n = (p->K + 1) / 2, mblocks = (p->M + 7) / 8;
    int32_t *xs = (int32_t *)malloc(sizeof(int32_t) * (size_t)k2n);
    if (!xs) return -2;
    uint8_t flip = p->is_signed ? 0x80 : 0;
    for (int k2 = 0; k2 < k2n; k2++) {
        uint32_t lo = (uint8_t)(x[2 * k2] ^ flip), hi = 2 * k2 + 1 < p->K ? (uint8_t)(x[2 * k2 + 1] ^ flip) : 0;
        xs[k2] = (int32_t)(lo | (hi << 16));  /* a pad tap meets zero weights */
    }
    for (int mb = 0; mb < mblocks; mb++) {
        const int32_t *w = wpack + (size_t)mb * k2n * 8;
        __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
        int k = 0;
        for (; k + 3 < k2n; k += 4) {
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 8 * k)), _mm256_set1_epi32(xs[k])));
            a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 8 * k + 8)), _mm256_set1_epi32(xs[k + 1])));
            a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 8 * k + 16)), _mm256_set1_epi32(xs[k + 2])));
            a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 8 * k + 24)), _mm256_set1_epi32(xs[k + 3])));
        }
        for (; k < k2n; k++)
            a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 8 * k)), _mm256_set1_epi32(xs[k])));
        int32_t acc[8];
        _mm256_storeu_si256((__m256i *)acc, _mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
        for (int r = 0; r < 8 && mb * 8 + r < p->M; r++) igp_put(&p->st, mb * 8 + r, acc[r], (size_t)(mb * 8 + r));
    }
    free(xs);
    return 0;
}

/* 16 inputs of a padded row at columns 0, SW, 2 SW, ... as int16 lanes */
__attribute__((target("avx2"), always_inline))
static inline __m256i igp_dw_load(const uint8_t *p, const int SW, const int SIGNED) {
    if (SW == 1) {
        __m128i b = _mm_loadu_si128((const __m128i *)p);
        return SIGNED ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
    }
    __m256i v = _mm256_loadu_si256((const __m256i *)p);  /* the even bytes are the inputs */
    return SIGNED ? _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8) : _mm256_and_si256(v, _mm256_set1_epi16(0xff));
}

/* 8 inputs of each of two padded rows (a, then b) at columns 0, SW, ..., 7 SW as int16 lanes */
__attribute__((target("avx2"), always_inline))
static inline __m256i igp_dw_load2(const uint8_t *a, const uint8_t *b, const int SW, const int SIGNED) {
    if (SW == 1) {
        __m128i v = _mm_unpacklo_epi64(_mm_loadl_epi64((const __m128i *)a), _mm_loadl_epi64((const __m128i *)b));
        return SIGNED ? _mm256_cvtepi8_epi16(v) : _mm256_cvtepu8_epi16(v);
    }
    __m256i v = _mm256_set_m128i(_mm_loadu_si128((const __m128i *)b), _mm_loadu_si128((const __m128i *)a));
    return SIGNED ? _mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8) : _mm256_and_si256(v, _mm256_set1_epi16(0xff));
}

/* Depthwise, AVX2: per channel, the plane copied into a zero-padded one (so every load is plain;
 * the padding is zeroed once per call: every channel writes the same interior), then 16 outputs of
 * a row at a time (of two rows, 8 each, when the rows have at most 8), the taps two at a time: the
 * 16 inputs of each widened to int16, interleaved into (tap a, tap b) pairs and multiplied by the
 * pair of weights with vpmaddwd (exact s16 x s16 pair sums into s32; an odd last tap is paired
 * with a zero weight); the accumulators (pixels 0-3, 8-11 and 4-7, 12-15 by the interleave) stay
 * in registers over the taps, reordered once for the output stage (igp_out16). Scratch: the padded
 * plane, then per tap pair its two offsets and its broadcast weight pair. */
__attribute__((target("avx2"), always_inline))
static inline void igp_dw_body(const ig_dw_t *p, int cb, int ce, uint8_t *pad, const int SW, const int SIGNED) {
    int wp = igp_dw_width(p), hp = igp_dw_height(p), wv = (p->Wo + 15) / 16, taps = p->kh * p->kw;
    int ho = p->Ho, wo = p->Wo, sh_ = p->sh, two = wo <= 8;
    const ig_stage_t st = p->st;  /* a local copy: the output stores cannot alias it */
    int npairs = (taps + 1) / 2;
    size_t size = p->st.out_kind <= 1 ? 1 : 2;
    size_t plane_bytes = ((size_t)wp * hp + 31) & ~(size_t)31;
    int32_t *wpair = (int32_t *)(pad + plane_bytes);
    size_t *off = (size_t *)(wpair + 2 * npairs + 8);
    int ncopy = p->W < wp - p->pl ? p->W : wp - p->pl;  /* the interior bytes of a padded row */
    for (int t = 0; t < 2 * npairs; t++) {
        int tt = t < taps ? t : taps - 1;  /* the pad tap reads a real tap, with weight 0 */
        off[t] = (size_t)(tt / p->kw) * p->dh * wp + (size_t)(tt % p->kw) * p->dw;
    }
    memset(pad, 0, plane_bytes);
    for (int c = cb; c < ce; c++) {
        const uint8_t *plane = p->x + (size_t)c * p->H * p->W;
        const int8_t *wc = p->w + (size_t)c * taps;
        for (int q = 0; q < npairs; q++) {
            uint16_t w0 = (uint16_t)(int16_t)wc[2 * q], w1 = 2 * q + 1 < taps ? (uint16_t)(int16_t)wc[2 * q + 1] : 0;
            wpair[q] = (int32_t)((uint32_t)w0 | ((uint32_t)w1 << 16));
        }
        if (ncopy > 0)
            for (int r = 0; r < hp; r++) {
                int ih = r - p->pt;
                if (ih >= 0 && ih < p->H) igp_copy(pad + (size_t)r * wp + p->pl, plane + (size_t)ih * p->W, (size_t)ncopy);
            }
        /* the direct stage with multiplier 1: the sums start at bias + half (as igp2_preload) */
        int pre = st.narrow == 2 && st.mult[c] == 1;
        const __m256i init = _mm256_set1_epi32(pre ? (int32_t)(st.bias[c] + (st.shift > 0 ? (int64_t)1 << (st.shift - 1) : 0)) : 0);
        const __m128i sh = _mm_cvtsi32_si128(st.shift);
        const __m256i vlo = _mm256_set1_epi32((int32_t)st.lo), vhi = _mm256_set1_epi32((int32_t)st.hi);
        uint8_t *outc = (uint8_t *)st.out + (size_t)c * ho * wo * size;
        for (int oh = 0; oh < ho; oh += two ? 2 : 1) {
            const uint8_t *base = pad + (size_t)oh * sh_ * wp;
            /* two rows: the second from the next output row (the last row of an odd count: itself again) */
            const uint8_t *base2 = oh + 1 < ho ? base + (size_t)sh_ * wp : base;
            for (int v = 0; v < wv; v++) {
                const uint8_t *row = base + (size_t)v * 16 * SW;
                __m256i lo = init, hi = init;
                for (int q = 0; q < npairs; q++) {
                    __m256i xa, xb;
                    size_t oa = off[2 * q], ob = off[2 * q + 1];
                    if (two) {
                        xa = igp_dw_load2(row + oa, base2 + oa, SW, SIGNED);
                        xb = igp_dw_load2(row + ob, base2 + ob, SW, SIGNED);
                    } else {
                        xa = igp_dw_load(row + oa, SW, SIGNED);
                        xb = igp_dw_load(row + ob, SW, SIGNED);
                    }
                    __m256i wq = _mm256_set1_epi32(wpair[q]);
                    lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), wq));
                    hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), wq));
                }
                int q0 = 16 * v, n = two ? 16 : (wo - q0 < 16 ? wo - q0 : 16);
                __m256i r0 = _mm256_permute2x128_si256(lo, hi, 0x20), r1 = _mm256_permute2x128_si256(lo, hi, 0x31);
                uint8_t *o = outc + ((size_t)oh * wo + (size_t)q0) * size;
                uint8_t tmp[32];
                uint8_t *dst = two ? tmp : o;  /* two rows: r0 the first 8 of row oh, r1 of row oh + 1 */
                if (pre)
                    igp_store16(_mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(r0, sh), vlo), vhi),
                                _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(r1, sh), vlo), vhi), n, st.out_kind, dst);
                else
                    igp_out16(&st, c, r0, r1, n, dst);
                if (two) {
                    igp_copy(o, tmp, (size_t)wo * size);
                    if (oh + 1 < ho) igp_copy(o + (size_t)wo * size, tmp + 8 * size, (size_t)wo * size);
                }
            }
        }
    }
}

/* Channels [cb, ce); scratch: igp_dw_scratch_bytes(p). Returns 0 (-1: W stride not 1 or 2). */
__attribute__((target("avx2")))
static int igp_dw_channels_avx2(const ig_dw_t *p, int cb, int ce, void *scratch) {
    uint8_t *pad = (uint8_t *)scratch;
    if (p->sw == 1)
        p->is_signed ? igp_dw_body(p, cb, ce, pad, 1, 1) : igp_dw_body(p, cb, ce, pad, 1, 0);
    else if (p->sw == 2)
        p->is_signed ? igp_dw_body(p, cb, ce, pad, 2, 1) : igp_dw_body(p, cb, ce, pad, 2, 0);
    else
        return -1;
    return 0;
}

static int igp_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

#if defined(__clang__) || __GNUC__ >= 11
#define IGP_HAVE_AVXVNNI 1
/* AVX-VNNI (256-bit vpdpbusd, VEX): the AVX2 GEMM with four taps per step, byte quads (u8 columns,
 * s8 weights: ConvPlan.set_pairs with pack_weights(w, IGP_MR)) and vpdpbusd, which does not
 * saturate (vpdpbusds would): every s32 sum is exact under the caller's K bound. */
IGP2_DEFINE(avxvnni, "avx2,avxvnni", 4, IGP2_DOT_DPBUSD, igp2_pack_quads)

static int igp_have_avxvnni(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avxvnni");
}
#endif
#endif
#ifndef IGP_HAVE_AVXVNNI
static int igp_conv_items_avxvnni(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    (void)p; (void)pb; (void)pe; (void)scratch;
    return -1;
}
static int igp_have_avxvnni(void) { return 0; }
#endif
#if !IG_HAVE_VNNI
static int igp_conv_items_avx2(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {
    (void)p; (void)pb; (void)pe; (void)scratch;
    return -1;
}
static int igp_have_avx2(void) { return 0; }
static inline size_t igp2_scratch_bytes(int K) { (void)K; return 0; }
static int igp_gemv_avx2(const ig_conv_t *p, const int32_t *wpack, const uint8_t *x) {
    (void)p; (void)wpack; (void)x;
    return -1;
}
static int igp_dw_channels_avx2(const ig_dw_t *p, int cb, int ce, void *scratch) {
    (void)p; (void)cb; (void)ce; (void)scratch;
    return -1;
}
static inline int igp2_items(const ig_conv_t *p) { (void)p; return 1; }
#ifndef IGP_MR /* the AVX2 layout constants _igemm.pyx names on every host (aarch64 too) */
#define IGP_MR 6
#define IGP_GROUP 16
#endif
#endif

static int igp_conv_part_c(const void *p, int begin, int end, void *scratch) {
    return igp_conv_panels_c((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int igp_conv_part_avxvnni(const void *p, int begin, int end, void *scratch) {
    return igp_conv_items_avxvnni((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int igp_conv_part_avx2(const void *p, int begin, int end, void *scratch) {
    return igp_conv_items_avx2((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}

static int igp_dw_part_c(const void *p, int begin, int end, void *scratch) {
    return igp_dw_channels_c((const ig_dw_t *)p, begin, end, scratch);
}
static int igp_dw_part_avx2(const void *p, int begin, int end, void *scratch) {
    return igp_dw_channels_avx2((const ig_dw_t *)p, begin, end, scratch);
}

#endif /* TIDLC_IGEMM_PORT_H */
