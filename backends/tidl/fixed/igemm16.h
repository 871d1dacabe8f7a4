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
 * (|product| <= 2**30) and accumulates in int64 (same packed weights and corrections). The depthwise
 * kernel reads uint16 activations with the same offset (its caller folds 32768 * sum of the
 * channel's weights into the bias), multiplies single taps with vpmaddwd of (x, *) . (w, 0) (one
 * exact product, |x w| <= 2**30: no pair, no -32768 case) and sums the taps of an output the same
 * s/h way (AVX2; plain int32 sums when 32768 * sum |w| of the channel < 2**31) or in int64 (C).
 * The AVX2 output stage runs in int64 lanes when mult < 2**32 and no 32-bit saturation applies
 * (i16_out8_avx2), else in scalar code, with the same wrapping arithmetic.
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
    for (int u = begin; u < end; u++) {
        int chunk = u / p->mgroups, mg = u % p->mgroups;
        int n0 = chunk * I16_LEN;
        int mb0 = (int)((int64_t)mblocks * mg / p->mgroups), mb1 = (int)((int64_t)mblocks * (mg + 1) / p->mgroups);
        if (built != chunk) {
            i16_build(p, n0, cols, toff, poff);
            built = chunk;
        }
        for (int mb = mb0; mb < mb1; mb++) {
            const int16_t *wb = p->wpack + (size_t)mb * K2 * 2 * I16_MR;
            int mv = p->M - mb * I16_MR < I16_MR ? p->M - mb * I16_MR : I16_MR;
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
/* scratch of one depthwise part: one output row of int64 sums */
static inline size_t i16_dw_scratch_bytes(int Wo) {
    return (size_t)(Wo + I16_NV) * sizeof(int64_t) + 64;
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

#if I16_HAVE_X86
/* 8 16-bit activations at x[i], x[i + s], ... (s = 1 or 2) in the low halves of 8 int32 lanes
 * (uint16 as x - 32768); the high halves are multiplied by 0 */
__attribute__((target("avx2"))) static inline __m256i i16_dw_load(const int16_t *x, int s, __m256i flip) {
    if (s == 1)
        return _mm256_cvtepi16_epi32(_mm_xor_si128(_mm_loadu_si128((const __m128i *)x), _mm256_castsi256_si128(flip)));
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)x), flip);  /* even elements in the low halves */
}

/* 16-bit activations, W stride 1 or 2: 8 outputs per vector, int32 products (|x w| <= 2**30)
 * accumulated exactly as s/h pairs (taps <= 32768). The vector loads stay inside the padded row
 * (the caller pads W so that the last vector's reads are in bounds). */
#define I16_DW_TAPS(ACC)                                                                      \
    for (int i = 0; i < p->kh; i++) {                                                         \
        const int16_t *row = plane + (size_t)(oh * p->sh + i * p->dh) * p->W + (size_t)ow * p->sw; \
        for (int j = 0; j < p->kw; j++) {                                                     \
            __m256i pr = _mm256_madd_epi16(i16_dw_load(row + (size_t)j * p->dw, p->sw, flip),  \
                                           _mm256_set1_epi32((uint16_t)w[i * p->kw + j]));    \
            ACC                                                                               \
        }                                                                                     \
    }

/* 8 outputs [ow, ow + 8) of one row into t[ow..]: plain int32 sums or s/h pairs */
__attribute__((target("avx2"))) static inline void i16_dw_vec(const i16_dw_t *p, const int16_t *plane,
                                                            const int16_t *w, int oh, int ow, __m256i flip,
                                                            int plain, int64_t *t) {
    __m256i s = _mm256_setzero_si256(), h = s;
    if (plain) {
        I16_DW_TAPS(s = _mm256_add_epi32(s, pr);)
        _mm256_storeu_si256((__m256i *)(t + ow), _mm256_cvtepi32_epi64(_mm256_castsi256_si128(s)));
        _mm256_storeu_si256((__m256i *)(t + ow + 4), _mm256_cvtepi32_epi64(_mm256_extracti128_si256(s, 1)));
        return;
    }
    I16_DW_TAPS(s = _mm256_add_epi32(s, pr); h = _mm256_add_epi32(h, _mm256_srai_epi32(pr, 16));)
    _mm256_storeu_si256((__m256i *)(t + ow), _mm256_setzero_si256());
    _mm256_storeu_si256((__m256i *)(t + ow + 4), _mm256_setzero_si256());
    i16_flush(t + ow, s, h);
}

/* One output row of one channel, 16-bit activations, W stride 1 or 2, 8 outputs per vector; the
 * last vector ends at Wo (overlapping the previous one) or, for Wo < 8, computes 8 and the caller
 * keeps Wo. The caller pads W so that every vector's reads stay inside the row:
 * W >= (max(Wo, 8) - 1) * sw + (kw - 1) * dw + 1 + (sw == 2). t holds Wo + 8 sums. */
__attribute__((target("avx2"))) static void i16_dw_row_avx2(const i16_dw_t *p, int c, int oh, int64_t *t) {
    const int16_t *w = p->w + (size_t)c * p->kh * p->kw;
    const int16_t *plane = (const int16_t *)p->x + (size_t)c * p->H * p->W;
    __m256i flip = _mm256_set1_epi16(p->x_kind == 2 ? (int16_t)-32768 : 0);
    int64_t wsum = 0;
    for (int k = 0; k < p->kh * p->kw; k++) wsum += w[k] < 0 ? -(int64_t)w[k] : w[k];
    int plain = wsum * 32768 < ((int64_t)1 << 31);  /* every int32 partial sum is exact (|x| <= 32768) */
    int ow = 0;
    for (; ow + I16_NV <= p->Wo; ow += I16_NV) i16_dw_vec(p, plane, w, oh, ow, flip, plain, t);
    if (ow < p->Wo) i16_dw_vec(p, plane, w, oh, p->Wo >= I16_NV ? p->Wo - I16_NV : 0, flip, plain, t);
}
#undef I16_DW_TAPS
#endif

/* channels [cb, ce) of a depthwise convolution */
static int i16_dw_channels(const i16_dw_t *p, int cb, int ce, uint8_t *scratch) {
    int64_t *t = (int64_t *)i16_align64(scratch);
    size_t npix = (size_t)p->Ho * p->Wo;
    for (int c = cb; c < ce; c++)
        for (int oh = 0; oh < p->Ho; oh++) {
#if I16_HAVE_X86
            if (p->use_avx2)
                i16_dw_row_avx2(p, c, oh, t);
            else
#endif
                i16_dw_row_c(p, c, oh, t);
            i16_out_any(&p->st, c, t, (size_t)c * npix + (size_t)oh * p->Wo, p->Wo, p->use_avx2);
        }
    return 0;
}

static int i16_dw_part(const void *p, int begin, int end, void *scratch) {
    return i16_dw_channels((const i16_dw_t *)p, begin, end, (uint8_t *)scratch);
}

#endif /* TIDLC_IGEMM16_H */
