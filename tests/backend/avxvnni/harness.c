/* The AVX-VNNI GEMM of igemm_port.h on a CPU without AVX-VNNI (tests/backend/test_isa.py): its one
 * AVX-VNNI instruction, vpdpbusd (u8 x s8 quads summed into s32, no saturation), replaced by an exact
 * AVX2 form, the rest of the variant's code (packing, tiles, output stage, work split) as built. */
#include <immintrin.h>
__attribute__((target("avx2"), always_inline)) static inline __m256i emu_dpbusd(__m256i acc, __m256i x, __m256i w) {
    __m256i xlo = _mm256_and_si256(x, _mm256_set1_epi16(0x00ff)), xhi = _mm256_srli_epi16(x, 8);
    __m256i wlo = _mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8), whi = _mm256_srai_epi16(w, 8);
    return _mm256_add_epi32(acc, _mm256_add_epi32(_mm256_madd_epi16(xlo, wlo), _mm256_madd_epi16(xhi, whi)));
}
#define _mm256_dpbusd_avx_epi32(a, b, c) emu_dpbusd(a, b, c)
#include "igemm_port.h"
/* one image: its work items in `parts` parts one after the other; variant 0 AVX2, 1 AVX-VNNI */
int run(int variant, const uint8_t *x, int is_signed, int C, int H, int W, int kh, int kw, int sh, int sw, int dh, int dw,
        int Ho, int Wo, const int32_t *wpair, int M, const int64_t *bias, const int64_t *mult, int shift, int64_t lo,
        int64_t hi, int narrow, uint8_t *out, int out_kind, int msplit, int parts) {
    ig_conv_t p; memset(&p, 0, sizeof p);
    p.x = x; p.is_signed = is_signed; p.C = C; p.H = H; p.W = W; p.kh = kh; p.kw = kw; p.sh = sh; p.sw = sw;
    p.dh = dh; p.dw = dw; p.Ho = Ho; p.Wo = Wo; p.M = M; p.K = C * kh * kw; p.wpair = wpair; p.msplit = msplit;
    p.st.bias = bias; p.st.mult = mult; p.st.shift = shift; p.st.lo = lo; p.st.hi = hi; p.st.out = out;
    p.st.out_kind = out_kind; p.st.narrow = narrow;
    size_t sz = igp2_scratch_bytes(p.K) + 64;
    uint8_t *raw = malloc(sz), *s = (uint8_t *)(((size_t)raw + 63) & ~(size_t)63);
    int total = igp2_items(&p), rc = 0;
    for (int t = 0; t < parts && !rc; t++)
        rc = (variant ? igp_conv_items_avxvnni : igp_conv_items_avx2)(&p, total * t / parts, total * (t + 1) / parts, s);
    free(raw);
    return rc;
}
