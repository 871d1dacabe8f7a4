/* Exact 16-bit integer convolution (16-bit activations and/or 16-bit weights): im2col packing,
 * int16 x int16 -> int64 sums, and the MAC output stage (bias, accumulator width, multiplier,
 * rounding shift, clamp) fused. Used by _igemm16.pyx; the numpy specification is
 * reference.conv2d_acc (exact int64 sums) + reference.mac_output (64-bit accumulator for 16-bit
 * layers), and tests/backend/test_int16_kernels.py checks that they agree bit for bit.
 *
 * Operands: activations uint8, int8, uint16 or int16, weights int8 or int16, all read as int16.
 * uint16 activations are read as x - 32768 (x ^ 0x8000; a zero pad becomes -32768 too,
 * consistently); the caller folds 32768 * sum(weights of the row) into the bias. Every sum is
 * kept exact in int64, so the folded sum equals the specification's modulo 2**64, and the output
 * stage runs in uint64 arithmetic (wrapping exactly like numpy's int64 arrays):
 *   v = sum + bias; [acc32: clamp(v, int32)]; v = (v * mult + 2**(shift-1)) >> shift (arithmetic);
 *   clamp(v, lo, hi).
 *
 * Layouts (K = C * kh * kw in (c, i, j) order, K2 = ceil(K / 2), zero padded):
 *   packed weights  [ceil(M / I16_MR)][K2][I16_MR][2]  int16  (prepared once per layer)
 *   packed columns  [group][K2][I16_NV][2]              int16  (built per chunk of I16_LEN pixels)
 *
 * AVX2 exactness. vpmaddwd multiplies int16 pairs and adds the two products into int32: with
 * |x|, |w| <= 32768 each product is at most 2**30, and the pair sum overflows int32 only when all
 * four operands are -32768. So weights are packed clamped to [-32767, 32767] (|pair| <= 2 * 32767 *
 * 32768 < 2**31) and every weight that was -32768 is corrected after the tile, exactly:
 * sum(w x) = sum(w' x) - sum over those taps k of x_k (a sparse list per output channel, usually
 * empty or one tap: the extreme weight of a tensor). Pair sums p are then accumulated without loss
 * in two int32 lanes:
 *   s = sum(p) modulo 2**32 (wrapping vpaddd), h = sum(p >> 16) (vpsrad: floor division),
 * over blocks of at most I16_KBLOCK = 32768 pairs: |h| <= 32768 * 2**15 = 2**30 fits, and
 * L = sum(p - (p >> 16) * 2**16) lies in [0, 32768 * 65535] < 2**32, so
 *   sum(p) = h * 2**16 + L,   L = (uint32)(s - h * 2**16),
 * is recovered exactly in int64 at the end of each block. The C variant multiplies in int32
 * (|product| <= 2**30) and accumulates in int64 (same packed weights and corrections).
 * Direct tile (AVX2, K2 <= I16_DIRECT_K2, multiplier 1, the usual case of TIDL's power-of-2
 * scales): the s/h accumulators start at bias + half and the stage (shift, clamp, pack) runs on
 * them in int32 lanes, no int64 sums (i16_tile_direct; proof at i16_direct_stage); 1x1 stride-1
 * layers pack their columns with vector loads (i16_build_plain_avx2). The depthwise kernel reads
 * uint16 activations with the same offset (its caller folds 32768 * sum of the channel's weights
 * into the bias); AVX2: 16 outputs per step from vpmaddwd pairs of taps, exact int32 sums of
 * the weights as they are (32768 * sum |w| < 2**30) or split into bytes (w = 256 wh + wl), and the
 * same kind of int32 direct stage (i16_dw_row_avx2); C: int64 sums.
 * Elsewhere the AVX2 output stage runs in int64 lanes when mult < 2**32 and no 32-bit saturation
 * applies (i16_out8_avx2), else in scalar code, with the same wrapping arithmetic.
 *
 * AVX-512 VNNI and AVX-VNNI have no 16-bit dot product wider than vpmaddwd/vpdpwssd of the same
 * pairs; the caller runs this AVX2 variant under TIDLC_ISA=avx512vnni and avxvnni as well.
 *
 * Work: units of (chunk of I16_LEN output pixels, group of output-channel blocks); each call
 * builds the columns of its own chunk in its own scratch, so threads never share a buffer and
 * the result does not depend on the thread count. The depthwise kernel (groups == C == M) splits
 * channels the same way.
 */
#ifndef TIDLC_IGEMM16_H
#define TIDLC_IGEMM16_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define I16_MR 4                          /* output channels per tile (8 accumulator registers) */
#define I16_NV 8                          /* output pixels per tile (one ymm of int32 lanes) */
#define I16_GROUPS 8                      /* tiles of pixels per chunk */
#define I16_LEN (I16_NV * I16_GROUPS)     /* output pixels per chunk */
#define I16_KBLOCK 32768                  /* pairs per exact int32 block (see above) */

/* A layer's output stage: out[c] = clamp(round_shift((sum + bias[c]) [sat32] * mult[c], shift), lo, hi) */
typedef struct {
    const int64_t *bias;   /* per channel (uint16 activations: plus 32768 * row sum) */
    const int64_t *mult;   /* per channel */
    int shift;             /* 0 .. 62 */
    int acc32;             /* 1: saturate the sum to int32 first (32-bit accumulator) */
    int64_t lo, hi;        /* output clamp */
    void *out;             /* (channels, Ho * Wo) of out_kind */
    int out_kind;          /* 0 int8, 1 uint8, 2 int16, 3 uint16 */
} i16_stage_t;

typedef struct {
    const void *x;         /* one image, (C, H, W) of x_kind, padded already */
    int x_kind;            /* 0 uint8, 1 int8, 2 uint16 (read as x - 32768), 3 int16 */
    int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo;
    const int16_t *wpack;  /* packed weights, -32768 clamped to -32767 */
    const int32_t *fix_ptr, *fix_k; /* channel m: taps fix_k[fix_ptr[m] .. fix_ptr[m + 1]) had weight -32768 */
    int M, K;
    int mgroups;           /* output-channel block groups per chunk (work unit = chunk x group) */
    int use_avx2;          /* 1: the AVX2 tile (the caller checked the CPU) */
    i16_stage_t st;        /* M channels */
} i16_conv_t;

typedef struct {
    const void *x;         /* (C, H, W) of x_kind, padded already */
    int x_kind;
    int C, H, W, kh, kw, sh, sw, dh, dw, Ho, Wo;
    const int16_t *w;      /* (C, kh, kw) */
    int use_avx2;
    i16_stage_t st;        /* C channels */
} i16_dw_t;

/* one part of a layer's work: units [begin, end) with a private scratch (_run_parts) */
typedef int (*i16_part_fn)(const void *p, int begin, int end, void *scratch);

static inline int i16_k2(int K) { return (K + 1) / 2; }

/* scratch of one conv work part: columns, tap offsets, pixel offsets, one tile's int64 sums */
static inline size_t i16_scratch_bytes(int K) {
    return (size_t)i16_k2(K) * 2 * I16_LEN * sizeof(int16_t) + (size_t)(K + 1) * sizeof(int64_t) +
           I16_LEN * sizeof(int64_t) + I16_MR * I16_NV * sizeof(int64_t) + 4 * 64;
}

/* one activation as the kernels read it (uint16: x - 32768) */
static inline int32_t i16_value(const void *x, int kind, int64_t i) {
    switch (kind) {
    case 0: return ((const uint8_t *)x)[i];
    case 1: return ((const int8_t *)x)[i];
    case 2: return (int16_t)(((const uint16_t *)x)[i] ^ 0x8000u);
    default: return ((const int16_t *)x)[i];
    }
}

/* Columns of output pixels [n0, n0 + I16_LEN) (pixels past the image repeat the last one; their
 * results are never stored): cols[g][k2][v][t] = x at tap 2 * k2 + t of pixel n0 + 8 g + v. */
static void i16_build(const i16_conv_t *p, int n0, int16_t *cols, int64_t *toff, int64_t *poff) {
    int npix = p->Ho * p->Wo, K2 = i16_k2(p->K), k = 0;
    for (int n = 0; n < I16_LEN; n++) {
        int q = n0 + n < npix ? n0 + n : npix - 1;
        int oh = q / p->Wo, ow = q % p->Wo;
        poff[n] = (int64_t)oh * p->sh * p->W + (int64_t)ow * p->sw;
    }
    for (int c = 0; c < p->C; c++)
        for (int i = 0; i < p->kh; i++)
            for (int j = 0; j < p->kw; j++)
                toff[k++] = ((int64_t)c * p->H + (int64_t)i * p->dh) * p->W + (int64_t)j * p->dw;
    for (k = 0; k < 2 * K2; k++) {
        int16_t *dst = cols + (size_t)(k >> 1) * 2 * I16_NV + (k & 1);
        size_t gstride = (size_t)K2 * 2 * I16_NV;
        if (k >= p->K) {
            for (int n = 0; n < I16_LEN; n++) dst[(n / I16_NV) * gstride + 2 * (n % I16_NV)] = 0;
            continue;
        }
        int64_t t = toff[k];
#define I16_GATHER(EXPR)                                                                      \
        for (int g = 0; g < I16_GROUPS; g++)                                                  \
            for (int v = 0; v < I16_NV; v++) {                                                \
                int64_t i_ = t + poff[g * I16_NV + v];                                        \
                dst[g * gstride + 2 * v] = (int16_t)(EXPR);                                   \
            }
        switch (p->x_kind) {
        case 0: I16_GATHER(((const uint8_t *)p->x)[i_]) break;
        case 1: I16_GATHER(((const int8_t *)p->x)[i_]) break;
        case 2: I16_GATHER(((const uint16_t *)p->x)[i_] ^ 0x8000u) break;
        default: I16_GATHER(((const int16_t *)p->x)[i_]) break;
        }
#undef I16_GATHER
    }
}

/* the output stage of one channel: nv sums t[0..nv) to out[o..o+nv) */
static void i16_out(const i16_stage_t *st, int m, const int64_t *t, size_t o, int nv) {
    uint64_t b = (uint64_t)st->bias[m], mult = (uint64_t)st->mult[m];
    uint64_t half = st->shift > 0 ? (uint64_t)1 << (st->shift - 1) : 0;
    for (int n = 0; n < nv; n++) {
        int64_t v = (int64_t)((uint64_t)t[n] + b);
        if (st->acc32) {
            if (v < -((int64_t)1 << 31)) v = -((int64_t)1 << 31);
            if (v > ((int64_t)1 << 31) - 1) v = ((int64_t)1 << 31) - 1;
        }
        v = (int64_t)((uint64_t)v * mult + half) >> st->shift;
        if (v < st->lo) v = st->lo;
        if (v > st->hi) v = st->hi;
        switch (st->out_kind) {
        case 0: ((int8_t *)st->out)[o + n] = (int8_t)v; break;
        case 1: ((uint8_t *)st->out)[o + n] = (uint8_t)v; break;
        case 2: ((int16_t *)st->out)[o + n] = (int16_t)v; break;
        default: ((uint16_t *)st->out)[o + n] = (uint16_t)v; break;
        }
    }
}

/* portable C tile: tot[r][v] = sum over k2 of the pair products (int32 products, int64 sums) */
static void i16_tile_c(const int16_t *colg, const int16_t *wb, int K2, int64_t *tot) {
    memset(tot, 0, sizeof(int64_t) * I16_MR * I16_NV);
    for (int k2 = 0; k2 < K2; k2++) {
        const int16_t *xp = colg + (size_t)k2 * 2 * I16_NV;
        const int16_t *w = wb + (size_t)k2 * 2 * I16_MR;
        for (int r = 0; r < I16_MR; r++) {
            int32_t w0 = w[2 * r], w1 = w[2 * r + 1];
            if (!w0 && !w1) continue;
            int64_t *t = tot + r * I16_NV;
            for (int v = 0; v < I16_NV; v++)
                t[v] += (int64_t)(w0 * (int32_t)xp[2 * v]) + (int64_t)(w1 * (int32_t)xp[2 * v + 1]);
        }
    }
}

/* The direct tile (i16_direct_stage, i16_direct_init): the s/h accumulators of row r start at the stage's constant
 * B = bias + half = Bh * 2**16 + Bl (0 <= Bl < 2**16) as h = Bh, s = B mod 2**32, so that after
 * the pairs (and the -32768 corrections, as one more pair -x each) h * 2**16 + (uint32)(s - h * 2**16)
 * = B + sum exactly (at most 3 * I16_DIRECT_K2 pairs: |h| < 2**31, the low part < 2**32). With
 * mult 1 the stage is y >> shift, y = A * 2**16 + r (A = h + (low >> 16), r = low & 0xffff):
 *   shift >= 16: A >> (shift - 16);  shift < 16: A * 2**(16 - shift) + (r >> shift), A clamped to
 *   +-2**(shift + 1) first (beyond it the result is past +-2**17 either way, outside lo..hi);
 * then clamp(lo, hi) in int32 lanes (lo, hi within the output type: the packs never saturate). */
#define I16_DIRECT_K2 8192

static inline int i16_direct_stage(const i16_stage_t *st) {
    static const int64_t tmin[4] = {-128, 0, -32768, 0}, tmax[4] = {127, 255, 32767, 65535};
    return !st->acc32 && st->shift <= 42 && st->lo >= tmin[st->out_kind] && st->hi <= tmax[st->out_kind];
}

/* channel m's B as (h, s) initial values, or 0 when the direct stage does not apply to it */
static inline int i16_direct_init(const i16_stage_t *st, int m, int32_t *h0, int32_t *s0) {
    int64_t b = st->bias[m];
    if (st->mult[m] != 1 || b <= -((int64_t)1 << 43) || b >= ((int64_t)1 << 43)) return 0;
    b += st->shift > 0 ? (int64_t)1 << (st->shift - 1) : 0;
    *h0 = (int32_t)(b >> 16);
    *s0 = (int32_t)(uint32_t)(uint64_t)b;
    return 1;
}

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define I16_HAVE_X86 1
#include <immintrin.h>

static int i16_have_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}

/* tot[r][v] += h * 2**16 + (uint32)(s - h * 2**16), lanes of one row */
__attribute__((target("avx2"))) static inline void i16_flush(int64_t *t, __m256i s, __m256i h) {
    __m256i l = _mm256_sub_epi32(s, _mm256_slli_epi32(h, 16));
    __m256i lo = _mm256_add_epi64(_mm256_cvtepu32_epi64(_mm256_castsi256_si128(l)),
                                  _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm256_castsi256_si128(h)), 16));
    __m256i hi = _mm256_add_epi64(_mm256_cvtepu32_epi64(_mm256_extracti128_si256(l, 1)),
                                  _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm256_extracti128_si256(h, 1)), 16));
    _mm256_storeu_si256((__m256i *)t, _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)t), lo));
    _mm256_storeu_si256((__m256i *)(t + 4), _mm256_add_epi64(_mm256_loadu_si256((const __m256i *)(t + 4)), hi));
}

/* one pair step of tile row R: s += the pair sums, h += their high halves (i16_tile_avx2 and the
 * direct tile below) */
#define I16_ROW(R)                                                                            \
    {                                                                                         \
        int32_t wv;                                                                           \
        memcpy(&wv, w + 2 * (R), sizeof wv);                                                  \
        __m256i pr = _mm256_madd_epi16(xv, _mm256_set1_epi32(wv));                            \
        s##R = _mm256_add_epi32(s##R, pr);                                                    \
        h##R = _mm256_add_epi32(h##R, _mm256_srai_epi32(pr, 16));                             \
    }

__attribute__((target("avx2"))) static void i16_tile_avx2(const int16_t *colg, const int16_t *wb, int K2,
                                                          int64_t *tot) {
    memset(tot, 0, sizeof(int64_t) * I16_MR * I16_NV);
    for (int kb = 0; kb < K2; kb += I16_KBLOCK) {
        int ke = K2 - kb < I16_KBLOCK ? K2 : kb + I16_KBLOCK;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
        __m256i h0 = s0, h1 = s0, h2 = s0, h3 = s0;
        const int16_t *xp = colg + (size_t)kb * 2 * I16_NV;
        const int16_t *w = wb + (size_t)kb * 2 * I16_MR;
        for (int k2 = kb; k2 < ke; k2++, xp += 2 * I16_NV, w += 2 * I16_MR) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)xp);
            I16_ROW(0) I16_ROW(1) I16_ROW(2) I16_ROW(3)
        }
        i16_flush(tot + 0 * I16_NV, s0, h0);
        i16_flush(tot + 1 * I16_NV, s1, h1);
        i16_flush(tot + 2 * I16_NV, s2, h2);
        i16_flush(tot + 3 * I16_NV, s3, h3);
    }
}

/* 8 int32 results (within the output type) to out[o .. o + nv) */
__attribute__((target("avx2"))) static inline void i16_store8(int kind, void *out, size_t o, __m256i r, int nv) {
    __m128i a = _mm256_castsi256_si128(r), b = _mm256_extracti128_si256(r, 1);
    __m128i w16 = kind == 3 ? _mm_packus_epi32(a, b) : _mm_packs_epi32(a, b);
    int size = kind >= 2 ? 2 : 1;
    uint8_t tmp[16];
    uint8_t *dst = nv == 8 ? (uint8_t *)out + o * size : tmp;
    if (kind >= 2)
        _mm_storeu_si128((__m128i *)dst, w16);
    else
        _mm_storel_epi64((__m128i *)dst, kind == 1 ? _mm_packus_epi16(w16, w16) : _mm_packs_epi16(w16, w16));
    if (nv < 8) memcpy((uint8_t *)out + o * size, tmp, (size_t)nv * size);
}

/* i16_build for a 1x1 stride-1 convolution over an unpadded image (pixel n of channel c at
 * x[c * npix + n]) and a chunk inside it: 8 pixels of taps 2 k2 and 2 k2 + 1 interleaved per vector */
static inline int i16_build_plain(const i16_conv_t *p, int n0) {
    return p->kh == 1 && p->kw == 1 && p->sh == 1 && p->sw == 1 && p->H == p->Ho && p->W == p->Wo &&
           n0 + I16_LEN <= p->Ho * p->Wo;
}

__attribute__((target("avx2"))) static inline __m128i i16_load8(const void *x, int kind, size_t i) {
    switch (kind) {
    case 0: return _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)((const uint8_t *)x + i)));
    case 1: return _mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)((const int8_t *)x + i)));
    case 2: return _mm_xor_si128(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i)), _mm_set1_epi16(-32768));
    default: return _mm_loadu_si128((const __m128i *)((const int16_t *)x + i));
    }
}

__attribute__((target("avx2"))) static void i16_build_plain_avx2(const i16_conv_t *p, int n0, int16_t *cols) {
    size_t npix = (size_t)p->Ho * p->Wo, gstride = (size_t)i16_k2(p->K) * 2 * I16_NV;
    for (int k = 0; k < p->K; k += 2) {
        int16_t *dst = cols + (size_t)(k >> 1) * 2 * I16_NV;
        for (int g = 0; g < I16_GROUPS; g++) {
            size_t i = (size_t)k * npix + (size_t)n0 + (size_t)g * I16_NV;
            __m128i a = i16_load8(p->x, p->x_kind, i);
            __m128i b = k + 1 < p->K ? i16_load8(p->x, p->x_kind, i + npix) : _mm_setzero_si128();
            _mm_storeu_si128((__m128i *)(dst + g * gstride), _mm_unpacklo_epi16(a, b));
            _mm_storeu_si128((__m128i *)(dst + g * gstride + I16_NV), _mm_unpackhi_epi16(a, b));
        }
    }
}

/* The stage of 8 lanes holding v = a * 2**B + (low mod 2**B) (the GEMM's s/h lanes: B = 16; the
 * depthwise kernel's byte-split sums: B = 8): v >> shift, clamped to [lo, hi] (inside the output
 * type). Below shift B the high part is first clamped to +-2**(shift + 17 - B): the shifted value
 * is then within +-2**17, still beyond any 16-bit bound, and cannot overflow int32. */
__attribute__((target("avx2"), always_inline)) static inline __m256i i16_radix_stage(const i16_stage_t *st, __m256i a,
                                                                                   __m256i low, const int B) {
    __m256i y;
    if (st->shift >= B) {
        y = _mm256_sra_epi32(a, _mm_cvtsi32_si128(st->shift - B));
    } else {
        __m256i cl = _mm256_set1_epi32(1 << (st->shift + 17 - B));
        a = _mm256_min_epi32(_mm256_max_epi32(a, _mm256_sub_epi32(_mm256_setzero_si256(), cl)), cl);
        y = _mm256_add_epi32(_mm256_sll_epi32(a, _mm_cvtsi32_si128(B - st->shift)),
                             _mm256_srl_epi32(_mm256_and_si256(low, _mm256_set1_epi32((1 << B) - 1)),
                                              _mm_cvtsi32_si128(st->shift)));
    }
    y = _mm256_max_epi32(y, _mm256_set1_epi32((int32_t)st->lo));
    return _mm256_min_epi32(y, _mm256_set1_epi32((int32_t)st->hi));
}

/* the direct stage of one row's s/h lanes (see above) */
__attribute__((target("avx2"))) static inline __m256i i16_direct8(const i16_stage_t *st, __m256i s, __m256i h) {
    __m256i low = _mm256_sub_epi32(s, _mm256_slli_epi32(h, 16));
    return i16_radix_stage(st, _mm256_add_epi32(h, _mm256_srli_epi32(low, 16)), low, 16);
}

/* row R of the direct tile: preload, and after the pairs the corrections and the stage */
#define I16_DROW_INIT(R) __m256i s##R = _mm256_set1_epi32(sinit[R]), h##R = _mm256_set1_epi32(hinit[R]);
#define I16_DROW_END(R)                                                                       \
    if ((R) < mv) {                                                                           \
        int m = m0 + (R);                                                                     \
        for (int f = p->fix_ptr[m]; f < p->fix_ptr[m + 1]; f++) {                             \
            int k = p->fix_k[f];                                                              \
            __m256i xk = _mm256_loadu_si256((const __m256i *)(colg + (size_t)(k >> 1) * 2 * I16_NV)); \
            xk = (k & 1) ? _mm256_srai_epi32(xk, 16) : _mm256_srai_epi32(_mm256_slli_epi32(xk, 16), 16); \
            __m256i q = _mm256_sub_epi32(_mm256_setzero_si256(), xk);                         \
            s##R = _mm256_add_epi32(s##R, q);                                                 \
            h##R = _mm256_add_epi32(h##R, _mm256_srai_epi32(q, 16));                          \
        }                                                                                     \
        i16_store8(p->st.out_kind, p->st.out, (size_t)m * npix + (size_t)g0, i16_direct8(&p->st, s##R, h##R), nv); \
    }

/* One tile of mv (<= I16_MR) channels from m0 x nv pixels from g0, K2 <= I16_DIRECT_K2, stage fused */
__attribute__((target("avx2"))) static void i16_tile_direct(const i16_conv_t *p, const int16_t *colg,
                                                            const int16_t *wb, int K2, int m0, int mv, int g0,
                                                            int nv, int npix, const int32_t *hinit,
                                                            const int32_t *sinit) {
    I16_DROW_INIT(0) I16_DROW_INIT(1) I16_DROW_INIT(2) I16_DROW_INIT(3)
    const int16_t *xp = colg, *w = wb;
    for (int k2 = 0; k2 < K2; k2++, xp += 2 * I16_NV, w += 2 * I16_MR) {
        __m256i xv = _mm256_loadu_si256((const __m256i *)xp);
        I16_ROW(0) I16_ROW(1) I16_ROW(2) I16_ROW(3)
    }
    I16_DROW_END(0) I16_DROW_END(1) I16_DROW_END(2) I16_DROW_END(3)
}
#undef I16_DROW_INIT
#undef I16_DROW_END
#undef I16_ROW

/* the output stage of 8 sums of channel m (i16_out) in int64 lanes, when the stage allows it:
 * no 32-bit saturation and 0 <= mult < 2**32 (v * mult modulo 2**64 = lo32(v) * mult + (hi32(v) *
 * mult << 32), both exact vpmuludq); the arithmetic shift is ~(~y >> s) for negative y. */
static inline int i16_vec_stage(const i16_stage_t *st, int m) {
    return !st->acc32 && st->mult[m] >= 0 && st->mult[m] < ((int64_t)1 << 32);
}

__attribute__((target("avx2"))) static inline __m256i i16_stage4(__m256i v, __m256i b, __m256i mult, __m256i half,
                                                                 __m128i sh, __m256i lo, __m256i hi) {
    v = _mm256_add_epi64(v, b);
    __m256i y = _mm256_add_epi64(_mm256_mul_epu32(v, mult),
                                 _mm256_slli_epi64(_mm256_mul_epu32(_mm256_srli_epi64(v, 32), mult), 32));
    y = _mm256_add_epi64(y, half);
    __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), y);
    __m256i r = _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(y, sign), sh), sign);
    r = _mm256_blendv_epi8(r, lo, _mm256_cmpgt_epi64(lo, r));
    return _mm256_blendv_epi8(r, hi, _mm256_cmpgt_epi64(r, hi));
}

__attribute__((target("avx2"))) static void i16_out8_avx2(const i16_stage_t *st, int m, const int64_t *t, size_t o) {
    __m256i b = _mm256_set1_epi64x(st->bias[m]), mult = _mm256_set1_epi64x(st->mult[m]);
    __m256i half = _mm256_set1_epi64x(st->shift > 0 ? (int64_t)1 << (st->shift - 1) : 0);
    __m256i lo = _mm256_set1_epi64x(st->lo), hi = _mm256_set1_epi64x(st->hi);
    __m128i sh = _mm_cvtsi32_si128(st->shift);
    __m256i r0 = i16_stage4(_mm256_loadu_si256((const __m256i *)t), b, mult, half, sh, lo, hi);
    __m256i r1 = i16_stage4(_mm256_loadu_si256((const __m256i *)(t + 4)), b, mult, half, sh, lo, hi);
    /* the low dwords (every result fits int32 after the clamp), in order */
    const __m256i idx = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
    __m256i d = _mm256_inserti128_si256(_mm256_permutevar8x32_epi32(r0, idx),
                                        _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(r1, idx)), 1);
    __m128i w16 = st->out_kind == 3 ? _mm_packus_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1))
                                    : _mm_packs_epi32(_mm256_castsi256_si128(d), _mm256_extracti128_si256(d, 1));
    switch (st->out_kind) {
    case 0: _mm_storel_epi64((__m128i *)((int8_t *)st->out + o), _mm_packs_epi16(w16, w16)); break;
    case 1: _mm_storel_epi64((__m128i *)((uint8_t *)st->out + o), _mm_packus_epi16(w16, w16)); break;
    case 2: _mm_storeu_si128((__m128i *)((int16_t *)st->out + o), w16); break;
    default: _mm_storeu_si128((__m128i *)((uint16_t *)st->out + o), w16); break;
    }
}
#else
#define I16_HAVE_X86 0
static int i16_have_avx2(void) { return 0; }
static void i16_tile_avx2(const int16_t *colg, const int16_t *wb, int K2, int64_t *tot) {
    i16_tile_c(colg, wb, K2, tot);
}
static inline int i16_vec_stage(const i16_stage_t *st, int m) { (void)st; (void)m; return 0; }
static void i16_out8_avx2(const i16_stage_t *st, int m, const int64_t *t, size_t o) { i16_out(st, m, t, o, I16_NV); }
#endif

/* i16_out, 8 at a time in AVX2 where it may */
static inline void i16_out_any(const i16_stage_t *st, int m, const int64_t *t, size_t o, int n, int use_avx2) {
    int i = 0;
    if (use_avx2 && i16_vec_stage(st, m))
        for (; i + I16_NV <= n; i += I16_NV) i16_out8_avx2(st, m, t + i, o + i);
    if (i < n) i16_out(st, m, t + i, o + i, n - i);
}

static inline uint8_t *i16_align64(uint8_t *ptr) {
    return (uint8_t *)(((uintptr_t)ptr + 63) & ~(uintptr_t)63);
}

/* work units [begin, end) of a convolution: unit u = (chunk u / mgroups, channel group u % mgroups) */
static int i16_conv_units(const i16_conv_t *p, int begin, int end, uint8_t *scratch) {
    int K2 = i16_k2(p->K), npix = p->Ho * p->Wo, mblocks = (p->M + I16_MR - 1) / I16_MR;
    int16_t *cols = (int16_t *)i16_align64(scratch);
    int64_t *toff = (int64_t *)i16_align64((uint8_t *)(cols + (size_t)K2 * 2 * I16_LEN));
    int64_t *poff = (int64_t *)i16_align64((uint8_t *)(toff + p->K + 1));
    int64_t *tot = (int64_t *)i16_align64((uint8_t *)(poff + I16_LEN));
    int built = -1;
    int direct = p->use_avx2 && K2 <= I16_DIRECT_K2 && i16_direct_stage(&p->st);
    for (int u = begin; u < end; u++) {
        int chunk = u / p->mgroups, mg = u % p->mgroups;
        int n0 = chunk * I16_LEN;
        int mb0 = (int)((int64_t)mblocks * mg / p->mgroups), mb1 = (int)((int64_t)mblocks * (mg + 1) / p->mgroups);
        if (built != chunk) {
#if I16_HAVE_X86
            if (p->use_avx2 && i16_build_plain(p, n0))
                i16_build_plain_avx2(p, n0, cols);
            else
#endif
            i16_build(p, n0, cols, toff, poff);
            built = chunk;
        }
        for (int mb = mb0; mb < mb1; mb++) {
            const int16_t *wb = p->wpack + (size_t)mb * K2 * 2 * I16_MR;
            int mv = p->M - mb * I16_MR < I16_MR ? p->M - mb * I16_MR : I16_MR;
#if I16_HAVE_X86
            if (direct) {
                int32_t h0[I16_MR] = {0}, s0[I16_MR] = {0};
                int ok = 1;
                for (int r = 0; r < mv; r++) ok &= i16_direct_init(&p->st, mb * I16_MR + r, h0 + r, s0 + r);
                if (ok) {
                    for (int g = 0; g < I16_GROUPS && n0 + g * I16_NV < npix; g++) {
                        int g0 = n0 + g * I16_NV, nv = npix - g0 < I16_NV ? npix - g0 : I16_NV;
                        i16_tile_direct(p, cols + (size_t)g * K2 * 2 * I16_NV, wb, K2, mb * I16_MR, mv, g0, nv, npix,
                                        h0, s0);
                    }
                    continue;
                }
            }
#endif
            for (int g = 0; g < I16_GROUPS; g++) {
                int g0 = n0 + g * I16_NV;
                if (g0 >= npix) break;
                int nv = npix - g0 < I16_NV ? npix - g0 : I16_NV;
                const int16_t *colg = cols + (size_t)g * K2 * 2 * I16_NV;
                if (p->use_avx2)
                    i16_tile_avx2(colg, wb, K2, tot);
                else
                    i16_tile_c(colg, wb, K2, tot);
                for (int r = 0; r < mv; r++) {
                    int m = mb * I16_MR + r;
                    for (int f = p->fix_ptr[m]; f < p->fix_ptr[m + 1]; f++) {  /* the -32768 weights */
                        const int16_t *xk = colg + (size_t)(p->fix_k[f] >> 1) * 2 * I16_NV + (p->fix_k[f] & 1);
                        for (int v = 0; v < I16_NV; v++) tot[r * I16_NV + v] -= xk[2 * v];
                    }
                    i16_out_any(&p->st, m, tot + r * I16_NV, (size_t)m * npix + (size_t)g0, nv, p->use_avx2);
                }
            }
        }
    }
    return 0;
}

static int i16_conv_part(const void *p, int begin, int end, void *scratch) {
    return i16_conv_units((const i16_conv_t *)p, begin, end, (uint8_t *)scratch);
}

/* ---------------------------------------------------------------------------- depthwise */
#define I16_DW_SLOTS 512   /* vector loads per output step at most: kh * (kw + 1), kh * kw <= I16_DW_TAPS */
#define I16_DW_TAPS 255

/* the program of one channel (i16_dw_prog) and one output row of int64 sums (Wo + 16) */
typedef struct {
    int n, split;
    int32_t off[I16_DW_SLOTS];                      /* element offset of each load from the row start */
    int32_t el[I16_DW_SLOTS], eh[I16_DW_SLOTS];     /* weight pairs of the first vector (lo, hi parts) */
    int32_t ol[I16_DW_SLOTS], oh[I16_DW_SLOTS];     /* of the second (stride 1: the odd outputs) */
} i16_dw_prog_t;

static inline size_t i16_dw_scratch_bytes(int Wo) {
    return sizeof(i16_dw_prog_t) + (size_t)(Wo + 16) * sizeof(int64_t) + 2 * 64;
}

static void i16_dw_row_c(const i16_dw_t *p, int c, int oh, int64_t *t) {
    const int16_t *w = p->w + (size_t)c * p->kh * p->kw;
    int64_t plane = (int64_t)c * p->H * p->W;
    for (int ow = 0; ow < p->Wo; ow++) t[ow] = 0;
    for (int i = 0; i < p->kh; i++) {
        int64_t row = plane + (int64_t)(oh * p->sh + i * p->dh) * p->W;
        for (int j = 0; j < p->kw; j++) {
            int32_t wv = w[i * p->kw + j];
            if (!wv) continue;
            for (int ow = 0; ow < p->Wo; ow++)
                t[ow] += (int64_t)(wv * i16_value(p->x, p->x_kind, row + (int64_t)ow * p->sw + j * p->dw));
        }
    }
}

/* AVX2 depthwise, 16-bit activations (uint16 read as x - 32768), W stride 1 or 2, kh * kw <= 255.
 * One step computes 16 outputs [ow, ow + 16) of a row in two vectors of 8 int32 lanes, each a sum of
 * vpmaddwd pairs over unaligned 16-element loads: stride 2, the load at 2 ow + o holds in lane m
 * (x[2 (ow + m) + o], x[2 (ow + m) + o + 1]), taps (j, j + 1) of output ow + m (weight pairs
 * (w_o, w_o+1), second vector: the load 16 further on); stride 1, the same load feeds the even
 * outputs ow + 2m (pairs (w_o, w_o+1)) and the odd ones ow + 2m + 1 (pairs (w_o-1, w_o)). Loads at
 * even o = 0, 2, .. cover the row's taps (dilation 1; else one load per tap, pairs (w_j, 0) /
 * (0, w_j)). Exactness: a channel with 32768 * sum |w| < 2**30 sums its pairs in int32 as they are
 * (plain); else the weights are split w = 256 wh + wl (wl in [0, 255], wh in [-128, 127], -32768
 * included) and Sl = sum x wl (|pair| < 2**24), Sh = sum x wh (|pair| <= 2**23) are exact int32 sums
 * for up to 255 taps: sum = 256 Sh + Sl. The direct stage (mult 1, |bias + half| < 2**37, see
 * i16_direct_stage) starts Sh at B >> 8 and Sl at B & 255 (B = bias + half): y = 256 A + r with
 * A = Sh + (Sl >> 8), r = Sl & 255, and y >> shift is A >> (shift - 8) (shift >= 8) or
 * clamp(A, +-2**(shift + 9)) << (8 - shift) + (r >> shift), then clamp(lo, hi). Otherwise the
 * int64 sums go through i16_out. The caller pads W so that every load stays inside the row:
 * W >= sw * max(Wo, 16) + (kw - 1) * dw + 1; the last step ends at Wo (overlapping the previous
 * one) or, for Wo < 16, computes 16 and stores Wo. */
static inline void i16_dw_prog(const i16_dw_t *p, int c, i16_dw_prog_t *g) {
    const int16_t *w = p->w + (size_t)c * p->kh * p->kw;
    int64_t wsum = 0;
    for (int k = 0; k < p->kh * p->kw; k++) wsum += w[k] < 0 ? -(int64_t)w[k] : w[k];
    g->split = wsum * 32768 >= ((int64_t)1 << 30);
    g->n = 0;
#define I16_W(J) ((J) >= 0 && (J) < p->kw ? (int32_t)w[i * p->kw + (J)] : 0)
#define I16_PAIR(A, B, SH) ((int32_t)((uint32_t)(uint16_t)(SH(A)) | ((uint32_t)(uint16_t)(SH(B)) << 16)))
#define I16_LO(V) (g->split ? ((V) & 255) : (V))
#define I16_HI(V) (g->split ? ((V) - ((V) & 255)) / 256 : 0)
    for (int i = 0; i < p->kh; i++) {
        int pairs = p->dw == 1, nl = pairs ? p->kw / 2 + 1 : p->kw;
        for (int l = 0; l < nl; l++) {
            int j = pairs ? 2 * l : l, o = pairs ? 2 * l : l * p->dw;
            int32_t e0 = I16_W(j), e1 = pairs ? I16_W(j + 1) : 0;
            int32_t d0 = pairs ? I16_W(j - 1) : 0, d1 = I16_W(j);
            if (p->sw == 2) d0 = d1 = 0;
            if (!e0 && !e1 && !d0 && !d1) continue;
            g->off[g->n] = (i * p->dh) * p->W + o;
            g->el[g->n] = I16_PAIR(e0, e1, I16_LO);
            g->eh[g->n] = I16_PAIR(e0, e1, I16_HI);
            g->ol[g->n] = I16_PAIR(d0, d1, I16_LO);
            g->oh[g->n] = I16_PAIR(d0, d1, I16_HI);
            g->n++;
        }
    }
#undef I16_W
#undef I16_PAIR
#undef I16_LO
#undef I16_HI
}

#if I16_HAVE_X86
/* 16 int16 values (the output type's range) in order to out[o .. o + nv) */
__attribute__((target("avx2"))) static inline void i16_store16(int kind, void *out, size_t o, __m256i v, int nv) {
    int size = kind >= 2 ? 2 : 1;
    uint8_t tmp[32];
    uint8_t *dst = nv == 16 ? (uint8_t *)out + o * size : tmp;
    if (kind >= 2) {
        _mm256_storeu_si256((__m256i *)dst, v);
    } else {
        __m128i a = _mm256_castsi256_si128(v), b = _mm256_extracti128_si256(v, 1);
        _mm_storeu_si128((__m128i *)dst, kind == 1 ? _mm_packus_epi16(a, b) : _mm_packs_epi16(a, b));
    }
    if (nv < 16) memcpy((uint8_t *)out + o * size, tmp, (size_t)nv * size);
}

/* the direct stage of 8 lanes (Sh, Sl preloaded with B) */
__attribute__((target("avx2"))) static inline __m256i i16_dw_direct8(const i16_stage_t *st, __m256i sl, __m256i sh) {
    return i16_radix_stage(st, _mm256_add_epi32(sh, _mm256_srai_epi32(sl, 8)), sl, 8);
}

/* one output row of channel c: direct stage (bh8, bl set) or int64 sums into t, stored by the caller */
__attribute__((target("avx2"))) static void i16_dw_row_avx2(const i16_dw_t *p, const i16_dw_prog_t *g, int c,
                                                           int oh, int direct, int32_t bh8, int32_t bl,
                                                           int64_t *t) {
    const int16_t *row = (const int16_t *)p->x + (size_t)c * p->H * p->W + (size_t)oh * p->sh * p->W;
    const __m256i flip = _mm256_set1_epi16(p->x_kind == 2 ? (int16_t)-32768 : 0);
    size_t npix = (size_t)p->Ho * p->Wo, o0 = (size_t)c * npix + (size_t)oh * p->Wo;
    int sw = p->sw, split = g->split;
    for (int ow = 0;; ow += 16) {
        int last = ow + 16 >= p->Wo, nv = 16;
        if (last && p->Wo >= 16) ow = p->Wo - 16;
        if (last && p->Wo < 16) nv = p->Wo;
        __m256i al = _mm256_set1_epi32(direct ? bl : 0), ah = _mm256_set1_epi32(direct ? bh8 : 0);
        __m256i bl_ = al, bh_ = ah;
        const int16_t *base = row + (size_t)ow * sw;
        if (sw == 1) {
            for (int k = 0; k < g->n; k++) {
                __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(base + g->off[k])), flip);
                al = _mm256_add_epi32(al, _mm256_madd_epi16(x, _mm256_set1_epi32(g->el[k])));
                bl_ = _mm256_add_epi32(bl_, _mm256_madd_epi16(x, _mm256_set1_epi32(g->ol[k])));
                if (split) {
                    ah = _mm256_add_epi32(ah, _mm256_madd_epi16(x, _mm256_set1_epi32(g->eh[k])));
                    bh_ = _mm256_add_epi32(bh_, _mm256_madd_epi16(x, _mm256_set1_epi32(g->oh[k])));
                }
            }
        } else {
            for (int k = 0; k < g->n; k++) {
                __m256i x = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(base + g->off[k])), flip);
                __m256i y = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(base + 16 + g->off[k])), flip);
                __m256i wl = _mm256_set1_epi32(g->el[k]);
                al = _mm256_add_epi32(al, _mm256_madd_epi16(x, wl));
                bl_ = _mm256_add_epi32(bl_, _mm256_madd_epi16(y, wl));
                if (split) {
                    __m256i wh = _mm256_set1_epi32(g->eh[k]);
                    ah = _mm256_add_epi32(ah, _mm256_madd_epi16(x, wh));
                    bh_ = _mm256_add_epi32(bh_, _mm256_madd_epi16(y, wh));
                }
            }
        }
        if (direct) {
            __m256i ra = i16_dw_direct8(&p->st, al, ah), rb = i16_dw_direct8(&p->st, bl_, bh_), v;
            if (sw == 1)  /* lane m: outputs 2m (even, ra) and 2m + 1 (odd, rb) */
                v = _mm256_or_si256(_mm256_and_si256(ra, _mm256_set1_epi32(0xffff)), _mm256_slli_epi32(rb, 16));
            else
                v = _mm256_permute4x64_epi64(p->st.out_kind == 3 ? _mm256_packus_epi32(ra, rb) : _mm256_packs_epi32(ra, rb),
                                             0xd8);
            i16_store16(p->st.out_kind, p->st.out, o0 + (size_t)ow, v, nv);
        } else {
            int32_t la[8], ha[8], lb[8], hb[8];
            _mm256_storeu_si256((__m256i *)la, al);
            _mm256_storeu_si256((__m256i *)ha, ah);
            _mm256_storeu_si256((__m256i *)lb, bl_);
            _mm256_storeu_si256((__m256i *)hb, bh_);
            for (int m = 0; m < 8; m++) {
                int64_t sa = (int64_t)ha[m] * 256 + la[m], sb = (int64_t)hb[m] * 256 + lb[m];
                if (sw == 1) {
                    t[ow + 2 * m] = sa;
                    t[ow + 2 * m + 1] = sb;
                } else {
                    t[ow + m] = sa;
                    t[ow + 8 + m] = sb;
                }
            }
        }
        if (last) break;
    }
}
#endif

/* channels [cb, ce) of a depthwise convolution */
static int i16_dw_channels(const i16_dw_t *p, int cb, int ce, uint8_t *scratch) {
    i16_dw_prog_t *g = (i16_dw_prog_t *)i16_align64(scratch);
    int64_t *t = (int64_t *)i16_align64((uint8_t *)(g + 1));
    size_t npix = (size_t)p->Ho * p->Wo;
#if I16_HAVE_X86
    int direct_ok = p->use_avx2 && i16_direct_stage(&p->st);
#endif
    for (int c = cb; c < ce; c++) {
#if I16_HAVE_X86
        if (p->use_avx2) {
            int32_t bh8 = 0, bl = 0;
            int64_t b = p->st.bias[c];
            int direct = direct_ok && p->st.mult[c] == 1 && b > -((int64_t)1 << 36) && b < ((int64_t)1 << 36) &&
                         p->st.shift <= 35;
            if (direct) {
                b += p->st.shift > 0 ? (int64_t)1 << (p->st.shift - 1) : 0;
                bh8 = (int32_t)(b >> 8);
                bl = (int32_t)(b & 255);
            }
            i16_dw_prog(p, c, g);
            for (int oh = 0; oh < p->Ho; oh++) {
                i16_dw_row_avx2(p, g, c, oh, direct, bh8, bl, t);
                if (!direct) i16_out_any(&p->st, c, t, (size_t)c * npix + (size_t)oh * p->Wo, p->Wo, 1);
            }
            continue;
        }
#endif
        for (int oh = 0; oh < p->Ho; oh++) {
            i16_dw_row_c(p, c, oh, t);
            i16_out_any(&p->st, c, t, (size_t)c * npix + (size_t)oh * p->Wo, p->Wo, 0);
        }
    }
    return 0;
}

static int i16_dw_part(const void *p, int begin, int end, void *scratch) {
    return i16_dw_channels((const i16_dw_t *)p, begin, end, (uint8_t *)scratch);
}

#endif /* TIDLC_IGEMM16_H */
