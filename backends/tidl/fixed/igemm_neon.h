/* The u8 x s8 -> s32 convolution of igemm.h / igemm_port.h on aarch64 NEON: same ig_conv_t /
 * ig_stage_t contract, same packed weights ([M/IG_MR][K4][IG_MR][4] int8), same output stage
 * (int64 exactly as reference.mac_output and igemm_port.h's igp_epilogue, in NEON lanes), plus
 * a depthwise kernel with the ig_dw_t contract of ig_dw_channels. Compiled on aarch64 only;
 * elsewhere the entry points are stubs returning -1 and ign_have_* return 0.
 *
 * Two variants, chosen at run time (ign_have_dotprod: HWCAP_ASIMDDP):
 *  - SDOT (ARMv8.2 dotprod, target attribute: the rest of the build stays baseline armv8-a):
 *    vdotq_laneq_s32, 8 output channels x 8 pixels of int32 sums in 16 registers;
 *  - plain NEON (every aarch64 CPU: Cortex-A53/A72...): vmull_s8 (s8 x s8 -> s16, exact:
 *    |p| <= 2**14) and vpadalq_s16 (pairs of s16 added into s32), 8 channels x 4 pixels.
 *
 * Exactness. SDOT multiplies signed bytes by signed bytes, the contract's activations are
 * unsigned (signed input offset by +128, the caller folding -128 * row sum into the bias). So the
 * columns hold u - 128 = u ^ 0x80 as int8 (for signed input: the raw int8 bytes) and every sum
 * gets 128 * (row sum of the packed weights) back:
 *   sum_k w * u = sum_k w * (u - 128) + 128 * sum_k w.
 * |sum_k w * (u - 128)| <= K * 128 * 128 and the corrected sum is the contract's sum, which the
 * caller bounds by K * 255 * 128 < 2**31 (K <= 65792): every int32 step is exact, no product or
 * sum saturates (the only saturating instructions are the output stage's int32 clamps).
 *
 * Column layout per chunk of IG_CHUNK * IG_NR pixels: [pixels / 8][K4][8][4] int8 (a tile of 8
 * pixels reads one contiguous stream over k). Scratch use: K4 * 4 * IG_NR * IG_CHUNK bytes of
 * columns + 4 rows of IG_NR * IG_CHUNK bytes = ig_scratch_bytes(K) - 64 (what ConvPlan allocates);
 * the int32 sums of a channel block (IG_MR x IGN_LEN) live on the stack.
 */
#ifndef TIDLC_IGEMM_NEON_H
#define TIDLC_IGEMM_NEON_H

#include <stddef.h>

#include "igemm.h"

#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define IGN_HAVE_NEON 1
#include <arm_neon.h>
#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

#define IGN_TILE 8                    /* pixels per tile */
#define IGN_LEN (IG_NR * IG_CHUNK)    /* pixels per chunk (the row stride of the sums) */
#if defined(__clang__) /* the feature name (clang); GCC wants the architecture arm_neon.h's SDOT intrinsics ask for */
#define IGN_DOT_TARGET __attribute__((target("dotprod")))
#else
#define IGN_DOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
#endif

/* SDOT (the dotprod extension) is usable: the kernel reads it from the OS, never assumes it. */
static int ign_have_dotprod(void) {
#if defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
    int v = 0;
    size_t n = sizeof v;
    return sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &n, NULL, 0) == 0 && v;
#elif defined(__ARM_FEATURE_DOTPROD)
    return 1;
#else
    return 0;
#endif
}

static int ign_have_neon(void) { return 1; } /* Advanced SIMD is part of every aarch64 CPU */

/* the columns of pixels [n0, n0 + len) (len a multiple of IGN_TILE) in the tile layout, as int8 u ^ 0x80 */
static void ign_build(const ig_conv_t *p, int n0, int len, int k4n, int8_t *cols, uint8_t *rows) {
    ig_runs_t runs;
    ig_make_runs(p, n0, len, &runs);
    const uint8x8_t flip = vdup_n_u8(p->is_signed ? 0 : 0x80);
    size_t tile_stride = (size_t)k4n * 4 * IGN_TILE;
    for (int k4 = 0; k4 < k4n; k4++) {
        const uint8_t *r[4];
        for (int q = 0; q < 4; q++)
            r[q] = ig_build_row(p, &runs, 4 * k4 + q, n0, len, rows + (size_t)q * IG_NR * IG_CHUNK);
        uint8_t *d = (uint8_t *)cols + (size_t)k4 * 4 * IGN_TILE;
        for (int t = 0; t < len; t += IGN_TILE, d += tile_stride) {
            uint8x8x4_t v;
            v.val[0] = veor_u8(vld1_u8(r[0] + t), flip);
            v.val[1] = veor_u8(vld1_u8(r[1] + t), flip);
            v.val[2] = veor_u8(vld1_u8(r[2] + t), flip);
            v.val[3] = veor_u8(vld1_u8(r[3] + t), flip);
            vst4_u8(d, v); /* [pixel][tap] */
        }
    }
}

/* 128 * the row sums of a packed weight block (the +128 correction), IG_MR channels */
static void ign_row_corr(const int8_t *a, int k4n, int32_t *corr) {
    int32x4_t s0 = vdupq_n_s32(0), s1 = s0;
    for (int k4 = 0; k4 < k4n; k4++, a += 4 * IG_MR) { /* [IG_MR][4]: rows 0-3, then rows 4-7 */
        s0 = vaddq_s32(s0, vpaddlq_s16(vpaddlq_s8(vld1q_s8(a))));
        s1 = vaddq_s32(s1, vpaddlq_s16(vpaddlq_s8(vld1q_s8(a + 16))));
    }
    vst1q_s32(corr, vshlq_n_s32(s0, 7));
    vst1q_s32(corr + 4, vshlq_n_s32(s1, 7));
}

/* The output stage of n sums of channel m (acc, readable up to n rounded up to 8) into out (the
 * element at the first sum), exactly as igp_epilogue / reference.mac_output:
 * clamp(acc + bias, int32) * mult + half, >> shift, clamp(lo, hi), cast to the output type.
 * 8 values per step: acc + bias in int64 lanes, vqmovn_s64 (saturating narrow: the int32 clamp),
 * vmull_s32 (int32 x int32 -> int64, exact for |mult| <= 2**31), + half, vshlq_s64 by -shift (an
 * arithmetic shift right), vqmovn_s64 then the lo/hi clamp in int32 (the same value: lo and hi are
 * int32 here), then truncating narrows (C's casts). Multipliers or bounds beyond int32: scalar. */
static void ign_row_out(const ig_stage_t *st, int m, const int32_t *acc, int n, void *out) {
    const int64_t b = st->bias[m], mult = st->mult[m];
    const int64_t half = st->shift > 0 ? ((int64_t)1 << (st->shift - 1)) : 0;
    const int64_t i32min = -((int64_t)1 << 31), i32max = ((int64_t)1 << 31) - 1;
    int kind = st->out_kind, q = 0;
    if (mult >= i32min && mult <= i32max && st->lo >= i32min && st->hi <= i32max && st->lo <= st->hi) {
        const int64x2_t vb = vdupq_n_s64(b), vh = vdupq_n_s64(half), vs = vdupq_n_s64(-(int64_t)st->shift);
        const int32x2_t vm = vdup_n_s32((int32_t)mult);
        const int32x4_t vlo = vdupq_n_s32((int32_t)st->lo), vhi = vdupq_n_s32((int32_t)st->hi);
        for (; q < n; q += 8) {
            int16x8_t r16;
            for (int h = 0; h < 2; h++) {
                int32x4_t a = vld1q_s32(acc + q + 4 * h);
                int32x2_t s0 = vqmovn_s64(vaddw_s32(vb, vget_low_s32(a)));
                int32x2_t s1 = vqmovn_s64(vaddw_high_s32(vb, a));
                int64x2_t p0 = vshlq_s64(vaddq_s64(vmull_s32(s0, vm), vh), vs);
                int64x2_t p1 = vshlq_s64(vaddq_s64(vmull_s32(s1, vm), vh), vs);
                int32x4_t r = vcombine_s32(vqmovn_s64(p0), vqmovn_s64(p1));
                r = vminq_s32(vmaxq_s32(r, vlo), vhi);
                int16x4_t r4 = vmovn_s32(r);
                r16 = h ? vcombine_s16(vget_low_s16(r16), r4) : vcombine_s16(r4, r4);
            }
            int left = n - q < 8 ? n - q : 8;
            if (kind <= 1) {
                int8x8_t r8 = vmovn_s16(r16);
                if (left == 8) vst1_s8((int8_t *)out + q, r8);
                else {
                    int8_t t[8];
                    vst1_s8(t, r8);
                    memcpy((int8_t *)out + q, t, (size_t)left);
                }
            } else if (left == 8) {
                vst1q_s16((int16_t *)out + q, r16);
            } else {
                int16_t t[8];
                vst1q_s16(t, r16);
                memcpy((int16_t *)out + q, t, sizeof(int16_t) * (size_t)left);
            }
        }
        return;
    }
    for (; q < n; q++) {
        int64_t v = (int64_t)acc[q] + b;
        v = v < i32min ? i32min : (v > i32max ? i32max : v);
        v = (v * mult + half) >> st->shift;
        v = v < st->lo ? st->lo : (v > st->hi ? st->hi : v);
        switch (kind) {
        case 0: ((int8_t *)out)[q] = (int8_t)v; break;
        case 1: ((uint8_t *)out)[q] = (uint8_t)v; break;
        case 2: ((int16_t *)out)[q] = (int16_t)v; break;
        default: ((uint16_t *)out)[q] = (uint16_t)v; break;
        }
    }
}

/* the output stage of a tile of sums acc[IG_MR][IGN_LEN]: rows m0.. (mv), pixels n0.. (nv) */
static void ign_epilogue(const ig_conv_t *p, const int32_t *acc, int m0, int mv, int n0, int nv) {
    size_t npix = (size_t)p->Ho * p->Wo, size = p->st.out_kind <= 1 ? 1 : 2;
    for (int r = 0; r < mv; r++)
        ign_row_out(&p->st, m0 + r, acc + (size_t)r * IGN_LEN, nv,
                    (uint8_t *)p->st.out + ((size_t)(m0 + r) * npix + (size_t)n0) * size);
}

/* SDOT: one tile, IG_MR channels x 8 pixels over k4n groups of 4 taps; a: [K4][IG_MR][4],
 * b: [K4][8][4]; the sums (+ corr) go to acc (row stride IGN_LEN). */
IGN_DOT_TARGET static void ign_tile_dot(const int8_t *a, const int8_t *b, int k4n, int32_t *acc, const int32_t *corr) {
    int32x4_t c00 = vdupq_n_s32(0), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
              c40 = c00, c41 = c00, c50 = c00, c51 = c00, c60 = c00, c61 = c00, c70 = c00, c71 = c00;
    for (int k4 = 0; k4 < k4n; k4++, a += 4 * IG_MR, b += 4 * IGN_TILE) {
        int8x16_t x0 = vld1q_s8(b), x1 = vld1q_s8(b + 16); /* pixels 0-3, 4-7, 4 taps each */
        int8x16_t w0 = vld1q_s8(a), w1 = vld1q_s8(a + 16); /* rows 0-3, 4-7, 4 taps each */
        c00 = vdotq_laneq_s32(c00, x0, w0, 0); c01 = vdotq_laneq_s32(c01, x1, w0, 0);
        c10 = vdotq_laneq_s32(c10, x0, w0, 1); c11 = vdotq_laneq_s32(c11, x1, w0, 1);
        c20 = vdotq_laneq_s32(c20, x0, w0, 2); c21 = vdotq_laneq_s32(c21, x1, w0, 2);
        c30 = vdotq_laneq_s32(c30, x0, w0, 3); c31 = vdotq_laneq_s32(c31, x1, w0, 3);
        c40 = vdotq_laneq_s32(c40, x0, w1, 0); c41 = vdotq_laneq_s32(c41, x1, w1, 0);
        c50 = vdotq_laneq_s32(c50, x0, w1, 1); c51 = vdotq_laneq_s32(c51, x1, w1, 1);
        c60 = vdotq_laneq_s32(c60, x0, w1, 2); c61 = vdotq_laneq_s32(c61, x1, w1, 2);
        c70 = vdotq_laneq_s32(c70, x0, w1, 3); c71 = vdotq_laneq_s32(c71, x1, w1, 3);
    }
#define IGN_STORE(r, lo, hi)                                                    \
    {                                                                           \
        int32x4_t k = vdupq_n_s32(corr[r]);                                     \
        vst1q_s32(acc + (size_t)(r) * IGN_LEN, vaddq_s32(lo, k));               \
        vst1q_s32(acc + (size_t)(r) * IGN_LEN + 4, vaddq_s32(hi, k));           \
    }
    IGN_STORE(0, c00, c01) IGN_STORE(1, c10, c11) IGN_STORE(2, c20, c21) IGN_STORE(3, c30, c31)
    IGN_STORE(4, c40, c41) IGN_STORE(5, c50, c51) IGN_STORE(6, c60, c61) IGN_STORE(7, c70, c71)
}

/* plain NEON: the same tile as two halves of 4 pixels. Per row r, vmull_s8 of 2 pixels x 4 taps
 * by the row's 4 weights (twice) gives 8 exact s16 products, vpadalq_s16 adds them by pairs into
 * 4 s32 lanes (pixel 0: taps 0+1, 2+3; pixel 1: ...); vpaddq_s32 of the two halves finishes the sums. */
static void ign_tile_plain(const int8_t *a0, const int8_t *b0, int k4n, int32_t *acc, const int32_t *corr) {
    for (int h = 0; h < 2; h++) {
        int32x4_t l0 = vdupq_n_s32(0), l1 = l0, l2 = l0, l3 = l0, l4 = l0, l5 = l0, l6 = l0, l7 = l0;
        int32x4_t u0 = l0, u1 = l0, u2 = l0, u3 = l0, u4 = l0, u5 = l0, u6 = l0, u7 = l0;
        const int8_t *a = a0, *b = b0 + 16 * h;
        for (int k4 = 0; k4 < k4n; k4++, a += 4 * IG_MR, b += 4 * IGN_TILE) {
            int8x16_t x = vld1q_s8(b);
            int8x8_t xl = vget_low_s8(x);
            int32x4_t w0 = vreinterpretq_s32_s8(vld1q_s8(a)), w1 = vreinterpretq_s32_s8(vld1q_s8(a + 16));
#define IGN_PLAIN(l, u, wv, lane)                                                               \
            {                                                                                   \
                int8x16_t wr = vreinterpretq_s8_s32(vdupq_laneq_s32(wv, lane));                 \
                l = vpadalq_s16(l, vmull_s8(xl, vget_low_s8(wr)));                              \
                u = vpadalq_s16(u, vmull_high_s8(x, wr));                                       \
            }
            IGN_PLAIN(l0, u0, w0, 0) IGN_PLAIN(l1, u1, w0, 1) IGN_PLAIN(l2, u2, w0, 2) IGN_PLAIN(l3, u3, w0, 3)
            IGN_PLAIN(l4, u4, w1, 0) IGN_PLAIN(l5, u5, w1, 1) IGN_PLAIN(l6, u6, w1, 2) IGN_PLAIN(l7, u7, w1, 3)
#undef IGN_PLAIN
        }
        int32_t *o = acc + 4 * h;
#define IGN_OUT(r, l, u) vst1q_s32(o + (size_t)(r) * IGN_LEN, vaddq_s32(vpaddq_s32(l, u), vdupq_n_s32(corr[r])));
        IGN_OUT(0, l0, u0) IGN_OUT(1, l1, u1) IGN_OUT(2, l2, u2) IGN_OUT(3, l3, u3)
        IGN_OUT(4, l4, u4) IGN_OUT(5, l5, u5) IGN_OUT(6, l6, u6) IGN_OUT(7, l7, u7)
#undef IGN_OUT
    }
}

/* Output pixels of panels [pb, pe) (IG_NR pixels each); scratch: ig_scratch_bytes(K), 64-byte
 * aligned. Returns 0. */
#define IGN_DRIVER(NAME, TILE, ATTR)                                                          \
    ATTR static int NAME(const ig_conv_t *p, int pb, int pe, uint8_t *scratch) {             \
        int k4n = (p->K + 3) / 4;                                                             \
        int8_t *cols = (int8_t *)scratch;                                                     \
        uint8_t *rows = scratch + (size_t)k4n * 4 * IG_NR * IG_CHUNK;                         \
        size_t tile_stride = (size_t)k4n * 4 * IGN_TILE;                                      \
        int npix = p->Ho * p->Wo, mblocks = (p->M + IG_MR - 1) / IG_MR;                       \
        int32_t acc[IG_MR * IGN_LEN] __attribute__((aligned(16)));                            \
        int32_t corr[IG_MR] __attribute__((aligned(16)));                                     \
        for (int c0 = pb; c0 < pe; c0 += IG_CHUNK) {                                          \
            int np = pe - c0 < IG_CHUNK ? pe - c0 : IG_CHUNK;                                 \
            int n0 = c0 * IG_NR;                                                              \
            int len = npix - n0 < np * IG_NR ? npix - n0 : np * IG_NR;                        \
            int tiles = (len + IGN_TILE - 1) / IGN_TILE;                                      \
            ign_build(p, n0, tiles * IGN_TILE, k4n, cols, rows);                              \
            for (int mb = 0; mb < mblocks; mb++) {                                            \
                const int8_t *a = p->apack + (size_t)mb * k4n * 4 * IG_MR;                    \
                int mv = p->M - mb * IG_MR < IG_MR ? p->M - mb * IG_MR : IG_MR;               \
                ign_row_corr(a, k4n, corr);                                                   \
                for (int t = 0; t < tiles; t++)                                               \
                    TILE(a, cols + (size_t)t * tile_stride, k4n, acc + t * IGN_TILE, corr);   \
                ign_epilogue(p, acc, mb * IG_MR, mv, n0, len);                                \
            }                                                                                 \
        }                                                                                     \
        return 0;                                                                             \
    }

IGN_DRIVER(ign_conv_panels_dot, ign_tile_dot, IGN_DOT_TARGET)
IGN_DRIVER(ign_conv_panels_plain, ign_tile_plain, )

/* ------------------------------------------------------------------ depthwise (groups == C == M)
 * One output row of one channel at a time: per tap, the outputs whose input column is inside the
 * image (the others read padding: zero, they add nothing) take 8 inputs widened to s16 times the
 * tap's weight, widened into s32 (vmlal_n_s16: exact) on the row of sums in acc; then the output
 * stage of the GEMM (ign_row_out). Any W stride (1 and 2 vectorized). */
static void ign_dw_tap(int32_t *acc, const uint8_t *row, int W, int Wo, int sw, int off, int16_t w, int is_signed) {
    int lo = off >= 0 ? 0 : (-off + sw - 1) / sw;             /* first output whose column is >= 0 */
    int hi = off > W - 1 ? 0 : (W - 1 - off) / sw + 1;         /* past the last one whose column is < W */
    if (hi > Wo) hi = Wo;
    int ow = lo;
    if (sw == 1 || sw == 2)
        for (; ow + 8 <= hi && (ow + 7) * sw + (sw - 1) + off < W; ow += 8) {
            const uint8_t *s = row + (ptrdiff_t)ow * sw + off;
            uint8x8_t v = sw == 1 ? vld1_u8(s) : vld2_u8(s).val[0];
            int16x8_t x = is_signed ? vmovl_s8(vreinterpret_s8_u8(v)) : vreinterpretq_s16_u16(vmovl_u8(v));
            int32x4_t a0 = vld1q_s32(acc + ow), a1 = vld1q_s32(acc + ow + 4);
            vst1q_s32(acc + ow, vmlal_n_s16(a0, vget_low_s16(x), w));
            vst1q_s32(acc + ow + 4, vmlal_high_n_s16(a1, x, w));
        }
    for (; ow < hi; ow++) {
        uint8_t b = row[(ptrdiff_t)ow * sw + off];
        acc[ow] += (int32_t)w * (is_signed ? (int32_t)(int8_t)b : (int32_t)b);
    }
}

/* Channels [cb, ce); acc: Wo int32 of scratch. Returns 0. */
static int ign_dw_channels(const ig_dw_t *p, int cb, int ce, int32_t *acc) {
    int taps = p->kh * p->kw, wo8 = (p->Wo + 7) / 8 * 8; /* ign_row_out reads sums up to wo8 */
    size_t size = p->st.out_kind <= 1 ? 1 : 2;
    for (int c = cb; c < ce; c++) {
        const uint8_t *plane = p->x + (size_t)c * p->H * p->W;
        const int8_t *wc = p->w + (size_t)c * taps;
        for (int oh = 0; oh < p->Ho; oh++) {
            memset(acc, 0, sizeof(int32_t) * (size_t)wo8);
            for (int i = 0; i < p->kh; i++) {
                int ih = oh * p->sh - p->pt + i * p->dh;
                if (ih < 0 || ih >= p->H) continue; /* a padding row adds nothing */
                const uint8_t *row = plane + (size_t)ih * p->W;
                for (int j = 0; j < p->kw; j++)
                    if (wc[i * p->kw + j])
                        ign_dw_tap(acc, row, p->W, p->Wo, p->sw, j * p->dw - p->pl, wc[i * p->kw + j], p->is_signed);
            }
            ign_row_out(&p->st, c, acc, p->Wo, (uint8_t *)p->st.out + ((size_t)c * p->Ho + oh) * p->Wo * size);
        }
    }
    return 0;
}

static int ign_conv_part_dot(const void *p, int begin, int end, void *scratch) {
    return ign_conv_panels_dot((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int ign_conv_part_plain(const void *p, int begin, int end, void *scratch) {
    return ign_conv_panels_plain((const ig_conv_t *)p, begin, end, (uint8_t *)scratch);
}
static int ign_dw_part(const void *p, int begin, int end, void *scratch) {
    return ign_dw_channels((const ig_dw_t *)p, begin, end, (int32_t *)scratch);
}

#endif /* aarch64 */

#ifndef IGN_HAVE_NEON /* not aarch64: nothing of the above; the entry points say "not here" */
#define IGN_HAVE_NEON 0
static int ign_have_dotprod(void) { return 0; }
static int ign_have_neon(void) { return 0; }
static int ign_conv_part_dot(const void *p, int begin, int end, void *scratch) {
    (void)p; (void)begin; (void)end; (void)scratch;
    return -1;
}
static int ign_conv_part_plain(const void *p, int begin, int end, void *scratch) {
    (void)p; (void)begin; (void)end; (void)scratch;
    return -1;
}
static int ign_dw_part(const void *p, int begin, int end, void *scratch) {
    (void)p; (void)begin; (void)end; (void)scratch;
    return -1;
}
#endif

/* The convolution on the best NEON variant of this CPU (SDOT when it has dotprod). */
static int ign_conv_part(const void *p, int begin, int end, void *scratch) {
    return ign_have_dotprod() ? ign_conv_part_dot(p, begin, end, scratch) : ign_conv_part_plain(p, begin, end, scratch);
}

#endif /* TIDLC_IGEMM_NEON_H */
