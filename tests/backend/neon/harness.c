/* Runs one integer-kernel variant of igemm_neon.h / igemm_port.h on the cases of a file, for
 * tests/backend/test_neon.py (cross-compiled for aarch64, run under qemu-user).
 *
 *   harness VARIANT CASES OUT     VARIANT: dot | plain | auto | c
 *
 * CASES: a sequence of little-endian records, each int64 kind (0 conv, 1 depthwise) then
 *   conv:      int64 is_signed C H W kh kw sh sw dh dw Ho Wo M K shift out_kind lo hi,
 *              x (C*H*W bytes, padded already), packed weights (ceil(M/8)*ceil(K/4)*32 bytes),
 *              bias int64[M] (the +128 offset folded in for signed x), mult int64[M];
 *   depthwise: int64 is_signed C H W kh kw sh sw dh dw pt pl Ho Wo shift out_kind lo hi,
 *              x (C*H*W bytes, not padded), w (C*kh*kw int8), bias int64[C], mult int64[C].
 * For every case OUT gets the output bytes twice: the work in 1 part, then in 3 parts (as
 * _igemm.pyx splits it over threads; each part has its own scratch of the size the module gives).
 * "auto" is the run-time choice (SDOT if HWCAP_ASIMDDP, else plain NEON); "dot" exits with 3 on a
 * CPU without dotprod; the input ends at an inaccessible page (reading past it faults);
 * depthwise cases run ign_dw_part for every NEON variant (c: skipped, no output). Scratch and
 * output buffers are followed by guard bytes. Exit codes: 0 ok, 2 bad input, 3 variant
 * unavailable, 4 a write past the scratch or the output, 5 kernel error. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "igemm_port.h"
#include "igemm_neon.h"

#define GUARD 256

static int read_all(FILE *f, void *dst, size_t n) { return fread(dst, 1, n, f) == n; }

static void *read_block(FILE *f, size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p || !read_all(f, p, n)) {
        fprintf(stderr, "harness: truncated input\n");
        exit(2);
    }
    return p;
}

/* n bytes read into memory that ends right before an inaccessible page: a kernel reading past
 * the input faults (the input's last bytes are the last row of the last channel) */
static uint8_t *read_guarded(FILE *f, size_t n, void **base, size_t *mapped) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE), span = (n + page - 1) / page * page + page;
    uint8_t *m = (uint8_t *)mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED || mprotect(m + span - page, page, PROT_NONE)) exit(5);
    uint8_t *p = m + span - page - n;
    if (!read_all(f, p, n)) {
        fprintf(stderr, "harness: truncated input\n");
        exit(2);
    }
    *base = m;
    *mapped = span;
    return p;
}

/* an output buffer of n bytes followed by GUARD bytes of 0xA5, filled with 0x5A */
static uint8_t *out_buffer(size_t n) {
    uint8_t *o = (uint8_t *)malloc(n + GUARD);
    if (!o) exit(5);
    memset(o, 0x5A, n);
    memset(o + n, 0xA5, GUARD);
    return o;
}

static void check_guard(const uint8_t *o, size_t n) {
    for (int g = 0; g < GUARD; g++)
        if (o[n + g] != 0xA5) {
            fprintf(stderr, "harness: the kernel wrote past its output\n");
            exit(4);
        }
}

/* fn over [0, total) in `parts` parts, each with a fresh guarded scratch of `bytes` */
static int run_parts(ig_part_fn fn, const void *p, int total, int parts, size_t bytes) {
    if (parts > total) parts = total;
    if (parts < 1) parts = 1;
    for (int t = 0; t < parts; t++) {
        uint8_t *raw = (uint8_t *)malloc(bytes + 64 + GUARD);
        if (!raw) exit(5);
        uint8_t *s = (uint8_t *)(((size_t)raw + 63) & ~(size_t)63);
        memset(s + bytes, 0xA5, GUARD);
        int rc = fn(p, (int)((long)total * t / parts), (int)((long)total * (t + 1) / parts), s);
        for (int g = 0; g < GUARD; g++)
            if (s[bytes + g] != 0xA5) {
                fprintf(stderr, "harness: the kernel wrote past its scratch (%zu bytes)\n", bytes);
                exit(4);
            }
        free(raw);
        if (rc) return rc;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: harness dot|plain|auto|c CASES OUT\n");
        return 2;
    }
    const char *variant = argv[1];
    ig_part_fn conv_fn;
    if (!strcmp(variant, "dot")) {
        if (!ign_have_dotprod()) {
            fprintf(stderr, "harness: this CPU has no dotprod (SDOT)\n");
            return 3;
        }
        conv_fn = ign_conv_part_dot;
    } else if (!strcmp(variant, "plain")) {
        conv_fn = ign_conv_part_plain;
    } else if (!strcmp(variant, "auto")) {
        conv_fn = ign_conv_part;
    } else if (!strcmp(variant, "c")) {
        conv_fn = igp_conv_part_c;
    } else {
        fprintf(stderr, "harness: unknown variant %s\n", variant);
        return 2;
    }
    if (!ign_have_neon()) {
        fprintf(stderr, "harness: not built for aarch64\n");
        return 3;
    }
    FILE *in = fopen(argv[2], "rb"), *out = fopen(argv[3], "wb");
    if (!in || !out) {
        fprintf(stderr, "harness: cannot open the files\n");
        return 2;
    }
    int64_t kind;
    while (fread(&kind, sizeof kind, 1, in) == 1) {
        int64_t h[18];
        if (!read_all(in, h, sizeof h)) return 2;
        int64_t lo = h[16], hi = h[17];
        if (kind == 0) {
            ig_conv_t p;
            memset(&p, 0, sizeof p);
            p.is_signed = (int)h[0];
            p.C = (int)h[1]; p.H = (int)h[2]; p.W = (int)h[3]; p.kh = (int)h[4]; p.kw = (int)h[5];
            p.sh = (int)h[6]; p.sw = (int)h[7]; p.dh = (int)h[8]; p.dw = (int)h[9]; p.Ho = (int)h[10];
            p.Wo = (int)h[11]; p.M = (int)h[12]; p.K = (int)h[13];
            p.st.shift = (int)h[14]; p.st.out_kind = (int)h[15]; p.st.lo = lo; p.st.hi = hi;
            size_t xn = (size_t)p.C * p.H * p.W, an = (size_t)((p.M + IG_MR - 1) / IG_MR) * ((p.K + 3) / 4) * 4 * IG_MR;
            void *xbase;
            size_t xspan;
            uint8_t *x = read_guarded(in, xn, &xbase, &xspan);
            int8_t *a = (int8_t *)read_block(in, an);
            int64_t *bias = (int64_t *)read_block(in, sizeof(int64_t) * p.M);
            int64_t *mult = (int64_t *)read_block(in, sizeof(int64_t) * p.M);
            p.x = x; p.apack = a; p.st.bias = bias; p.st.mult = mult;
            size_t npix = (size_t)p.Ho * p.Wo, size = p.st.out_kind <= 1 ? 1 : 2, bytes = p.M * npix * size;
            /* NEON: ig_scratch_bytes, the least ConvPlan gives (it allocates the max over the variants) */
            size_t scratch = ig_scratch_bytes(p.K);
            if (conv_fn == igp_conv_part_c && igp_scratch_bytes(p.K) > scratch) scratch = igp_scratch_bytes(p.K);
            for (int parts = 1; parts <= 3; parts += 2) {
                uint8_t *o = out_buffer(bytes);
                p.st.out = o;
                if (run_parts(conv_fn, &p, (int)((npix + IG_NR - 1) / IG_NR), parts, scratch)) return 5;
                check_guard(o, bytes);
                fwrite(o, 1, bytes, out);
                free(o);
            }
            munmap(xbase, xspan); free(a); free(bias); free(mult);
        } else if (kind == 1) {
            ig_dw_t p;
            memset(&p, 0, sizeof p);
            p.is_signed = (int)h[0];
            p.C = (int)h[1]; p.H = (int)h[2]; p.W = (int)h[3]; p.kh = (int)h[4]; p.kw = (int)h[5];
            p.sh = (int)h[6]; p.sw = (int)h[7]; p.dh = (int)h[8]; p.dw = (int)h[9]; p.pt = (int)h[10];
            p.pl = (int)h[11]; p.Ho = (int)h[12]; p.Wo = (int)h[13];
            p.st.shift = (int)h[14]; p.st.out_kind = (int)h[15]; p.st.lo = lo; p.st.hi = hi;
            size_t xn = (size_t)p.C * p.H * p.W, wn = (size_t)p.C * p.kh * p.kw;
            void *xbase;
            size_t xspan;
            uint8_t *x = read_guarded(in, xn, &xbase, &xspan);
            int8_t *w = (int8_t *)read_block(in, wn);
            int64_t *bias = (int64_t *)read_block(in, sizeof(int64_t) * p.C);
            int64_t *mult = (int64_t *)read_block(in, sizeof(int64_t) * p.C);
            p.x = x; p.w = w; p.st.bias = bias; p.st.mult = mult;
            size_t size = p.st.out_kind <= 1 ? 1 : 2, bytes = (size_t)p.C * p.Ho * p.Wo * size;
            if (strcmp(variant, "c"))
                for (int parts = 1; parts <= 3; parts += 2) {
                    uint8_t *o = out_buffer(bytes);
                    p.st.out = o;
                    if (run_parts(ign_dw_part, &p, p.C, parts, (size_t)((p.Wo + 31) / 32) * 32 * sizeof(int32_t)))
                        return 5;
                    check_guard(o, bytes);
                    fwrite(o, 1, bytes, out);
                    free(o);
                }
            munmap(xbase, xspan); free(w); free(bias); free(mult);
        } else {
            fprintf(stderr, "harness: bad record kind %lld\n", (long long)kind);
            return 2;
        }
    }
    fclose(in);
    return fclose(out) ? 2 : 0;
}
