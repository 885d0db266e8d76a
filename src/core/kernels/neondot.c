/* kernels/neondot.c - int8 products with the Armv8.2 dot-product
 * instructions (SDOT, vdotq_s32), for aarch64 CPUs that have them
 * (Cortex-A55 / A76 / A78, Raspberry Pi 5, most phones since 2018).
 *
 * For int8 models the rows of x are quantized on the fly, one symmetric
 * scale per row (s_x = max|x| / 127, xq = round(x / s_x)), and multiplied
 * with the stored weights four inputs at a time in exact int32 arithmetic.
 * The stored byte is q + 128; XOR 0x80 gives q as a signed byte, so SDOT
 * multiplies signed by signed with no correction term:
 *
 *     y = bias + s_w * s_x * sum_k q_k * xq_k
 *
 * as avx512vnni.c does on x86.  A row's result depends only on that row, so
 * row groups, streams and threads give the same bits.  Everything else
 * (float32 / float16 weights, the gates, rows holding NaN or inf, K above
 * 2^17 where int32 sums could overflow) goes to the NEON kernels.  Chosen
 * only when the CPU reports the dot-product extension (dispatch.c: HWCAP
 * ASIMDDP on Linux). */
#include <stdint.h>
#include <string.h>

#include "../internal.h"

GL_KERNEL_OPTIMIZE

#if defined(GL_HAVE_NEONDOT_KERNELS)

#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")   /* SDOT is an Armv8.2 extension */

#include <arm_neon.h>

/* |q * xq| <= 127 * 127 per input: 2^17 inputs stay below 2^31. */
#define DOT_MAX_K 131072
#define DOT_MC 64
/* Micro-kernel sizes, for kernels/blocking.h: 2 rows x 2 vectors (16
 * int32x4 accumulators, 8 weight registers), and one row x 4 vectors. */
#define GL_MR 2
#define GL_NV_MR 2
#define GL_NV1 4
#include "blocking.h"

/* Quantizes each row of x: xq (ldq bytes a row, zero past K) and its scale
 * sx.  Returns -1 if a row holds NaN or inf. */
static int quantize_rows(size_t rows, const float *x, size_t ldx, size_t K, int8_t *xq,
                         size_t ldq, float *sx)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float amax = 0.0f;
        for (size_t k = 0; k < K; k++) {
            const float a = xr[k] < 0.0f ? -xr[k] : xr[k];
            if (!(a <= 3.402823466e38f)) return -1;        /* NaN or inf */
            amax = a > amax ? a : amax;
        }
        sx[r] = amax / 127.0f;
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        int8_t *qr = xq + r * ldq;
        size_t k = 0;
        const float32x4_t vinv = vdupq_n_f32(inv);
        for (; k + 8 <= K; k += 8) {      /* round to nearest, ties to even (FCVTNS) */
            const int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xr + k), vinv));
            const int32x4_t b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(xr + k + 4), vinv));
            vst1_s8(qr + k, vmovn_s16(vcombine_s16(vmovn_s32(a), vmovn_s32(b))));
        }
        for (; k < K; k++) qr[k] = (int8_t)vcvtns_s32_f32(xr[k] * inv);
        for (; k < ldq; k++) qr[k] = 0;
    }
    return 0;
}

/* 64 bytes of an int8 panel (16 lanes x 4 inputs) as signed bytes, lanes
 * 0-3, 4-7, 8-11, 12-15. */
static inline int8x16_t dot_load(const uint8_t *p)
{
    return vreinterpretq_s8_u8(veorq_u8(vld1q_u8(p), vdupq_n_u8(0x80)));
}

#define DOT_MK(MR, NV) DOT_MK_(MR, NV)             /* MR, NV may be macros */
#define DOT_MK_(MR, NV) dot_mk_##MR##x##NV
#define DOT_DEFINE_MK(MR, NV)                                                          \
static void DOT_MK(MR, NV)(size_t K4, const int8_t *xq, size_t ldq, const uint8_t *w,   \
                           size_t qs, const size_t *woff, const size_t *yoff,          \
                           const float *bias, const float *scale, const float *sx,     \
                           float *y, size_t ldy)                                       \
{                                                                                      \
    int32x4_t acc[MR][NV][4];                                                          \
    for (int i = 0; i < MR; i++)                                                       \
        for (int j = 0; j < NV; j++)                                                   \
            for (int q = 0; q < 4; q++) acc[i][j][q] = vdupq_n_s32(0);                 \
    for (size_t kq = 0; kq < K4; kq++) {                                               \
        int8x16_t wv[NV][4];                                                           \
        for (int j = 0; j < NV; j++)                                                   \
            for (int q = 0; q < 4; q++) wv[j][q] = dot_load(w + kq * qs + woff[j] + 16 * q); \
        for (int i = 0; i < MR; i++) {                                                 \
            int32_t quad;                                                              \
            memcpy(&quad, xq + (size_t)i * ldq + 4 * kq, 4);                           \
            const int8x16_t xb = vreinterpretq_s8_s32(vdupq_n_s32(quad));              \
            for (int j = 0; j < NV; j++)                                               \
                for (int q = 0; q < 4; q++)                                            \
                    acc[i][j][q] = vdotq_s32(acc[i][j][q], wv[j][q], xb);              \
        }                                                                              \
    }                                                                                  \
    for (int j = 0; j < NV; j++) {                                                     \
        for (int q = 0; q < 4; q++) {                                                  \
            const float32x4_t s = vld1q_f32(scale + yoff[j] + 4 * q);                  \
            const float32x4_t b0 = bias ? vld1q_f32(bias + yoff[j] + 4 * q) : vdupq_n_f32(0.0f); \
            for (int i = 0; i < MR; i++)                                               \
                vst1q_f32(y + (size_t)i * ldy + yoff[j] + 4 * q,                       \
                          vfmaq_f32(b0, vcvtq_f32_s32(acc[i][j][q]),                   \
                                    vmulq_n_f32(s, sx[i])));                           \
        }                                                                              \
    }                                                                                  \
}

DOT_DEFINE_MK(2, 2)
DOT_DEFINE_MK(2, 1)
DOT_DEFINE_MK(1, 4)
DOT_DEFINE_MK(1, 2)
DOT_DEFINE_MK(1, 1)

/* DOT_MK(R, NV) on quantized rows r .. r+R-1 (kernels/blocking.h). */
#define GL_DOT_CALL(R, NV, r) DOT_MK(R, NV)(K4, xq + (r) * ldq, ldq, w, qs, woff, yoff, p->b,  \
                                            p->scale, sx + (r), y + (r) * ldy, ldy)

/* One quantized row (a sequence's step): groups of 4 vectors, then 2, 1;
 * out of line, as gemv_f32 in kernels/gemm.h. */
__attribute__((noinline)) static void dot_gemv_q(const int8_t *xq, const float *sx,
                                                 const gl_panel *p, size_t g0, size_t gc,
                                                 float *y)
{
    const size_t K4 = gl_panel_k4(p->K), ldq = 4 * K4, ldy = 0;
    const size_t nv = p->nb * gc, qs = p->G * GL_LANES * 4;
    const uint8_t *w = p->w;
    size_t woff[GL_NV1], yoff[GL_NV1];
    GL_DOT_ONE_ROW();
}

/* The products of `rows` quantized rows (xq, sx from quantize_rows). */
static void dot_gemm_q(size_t rows, const int8_t *xq, size_t ldq, const float *sx,
                       const gl_panel *p, size_t g0, size_t gc, float *y, size_t ldy)
{
    const size_t K4 = gl_panel_k4(p->K);
    const size_t nv = p->nb * gc, qs = p->G * GL_LANES * 4;
    const uint8_t *w = p->w;
    size_t woff[GL_NV1], yoff[GL_NV1];
    if (rows == 1) {
        dot_gemv_q(xq, sx, p, g0, gc, y);
        return;
    }
    GL_DOT_ROWS(rows, DOT_MC)
}

static void dot_gemm(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                     size_t g0, size_t gc, float *y, size_t ldy, void *tmp)
{
    const size_t K = p->K, ldq = 4 * gl_panel_k4(K);
    /* tmp (gl_gemm_tmp_bytes): xq (rows * ldq bytes, a multiple of 4), then sx. */
    int8_t *xq = tmp;
    float *sx = (float *)(void *)((unsigned char *)tmp + rows * ldq);
    if (p->dtype != GRULITE_DTYPE_I8 || !tmp || K > DOT_MAX_K) {
        gl_kernels_neon.gemm(rows, x, ldx, p, g0, gc, y, ldy, tmp);
        return;
    }
#define DOT_QUANT(e) quantize_rows(1, x + (e) * ldx, ldx, K, xq + (e) * ldq, ldq, sx + (e))
#define DOT_RUN(r, n) dot_gemm_q((n), xq + (r) * ldq, ldq, sx + (r), p, g0, gc, y + (r) * ldy, ldy)
#define DOT_REST(e) gl_kernels_neon.gemm(1, x + (e) * ldx, ldx, p, g0, gc, y + (e) * ldy, ldy, tmp)
    GL_DOT_RUNS(rows, DOT_QUANT, DOT_RUN, DOT_REST);
#undef DOT_QUANT
#undef DOT_RUN
#undef DOT_REST
}

/* The gates are NEON's. */
static void dot_gates_after(size_t nb, const float *xp, const float *hp, float *h)
{
    gl_kernels_neon.gates_after(nb, xp, hp, h);
}

static void dot_gates_rz(size_t nb, const float *xp, const float *hp, const float *h,
                         float *rh, float *z)
{
    gl_kernels_neon.gates_rz(nb, xp, hp, h, rh, z);
}

static void dot_gates_n(size_t nb, const float *xp, const float *hp, const float *z, float *h)
{
    gl_kernels_neon.gates_n(nb, xp, hp, z, h);
}

static void dot_gates_after_fn(size_t nb, const float *xp, const float *hp, float *h,
                               const gl_gate_fns *fn)
{
    gl_kernels_neon.gates_after_fn(nb, xp, hp, h, fn);
}

static void dot_gates_rz_fn(size_t nb, const float *xp, const float *hp, const float *h,
                            float *rh, float *z, const gl_gate_fns *fn)
{
    gl_kernels_neon.gates_rz_fn(nb, xp, hp, h, rh, z, fn);
}

static void dot_gates_n_fn(size_t nb, const float *xp, const float *hp, const float *z,
                           float *h, const gl_gate_fns *fn)
{
    gl_kernels_neon.gates_n_fn(nb, xp, hp, z, h, fn);
}

/* int8 with this set's products, other types NEON's step. */
static void dot_step_after(const gl_step *s)
{
    if (s->hh->dtype == GRULITE_DTYPE_I8) gl_step_after_parts(&gl_kernels_neondot, s);
    else gl_kernels_neon.step_after(s);
}

const gl_kernels gl_kernels_neondot = {
    "neondot", dot_gemm, dot_gates_after, dot_gates_rz, dot_gates_n,
    dot_gates_after_fn, dot_gates_rz_fn, dot_gates_n_fn, dot_step_after
};

#pragma GCC pop_options

#endif /* GL_HAVE_NEONDOT_KERNELS */
