/* kernels_simd.h - the SIMD kernels, written once over a 16-lane vector
 * type and included by each ISA's file (kernels_avx2.c, kernels_avx512.c)
 * after it defines:
 *
 *   GL_V                 the 16-float vector type
 *   GL_NAME              the kernel set's name, e.g. avx512 (table gl_kernels_avx512)
 *   GL_PREFIX            the function-name prefix, e.g. avx512_
 *   GL_V_LOAD(p)         load 16 floats (unaligned allowed)
 *   GL_V_STORE(p, v)     store 16 floats
 *   GL_V_ZERO()          all zeros
 *   GL_V_SET1(f)         broadcast a float
 *   GL_V_ADD, GL_V_SUB, GL_V_MUL, GL_V_DIV (a, b)
 *   GL_V_FMA(a, b, c)    a*b + c, one rounding
 *   GL_V_EXP(v)          e^v, NaN in -> NaN out
 *   GL_V_LOAD_F16(p)     load 16 IEEE halves as floats
 *   GL_V_LOAD_I8(p)      load 16 int8 as floats
 *   GL_MR, GL_NV_MR      rows and vectors of the many-row micro-kernel
 *   GL_NV1               vectors of the one-row micro-kernel
 *
 * Each output is bias + sum_k x[k] w[k] accumulated with one FMA chain, k
 * ascending, in every micro-kernel, so the row blocking never changes a
 * result (see kernels.h). */

#define GL_PASTE2(a, b) a##b
#define GL_XPASTE2(a, b) GL_PASTE2(a, b)
#define GL_PASTE4(a, b, c, d) a##b##c##d
#define GL_XPASTE4(a, b, c, d) GL_PASTE4(a, b, c, d)
#define GL_FN(name) GL_XPASTE2(GL_PREFIX, name)
#define GL_STR(a) #a
#define GL_XSTR(a) GL_STR(a)
#define GL_MAX_NV (GL_NV1 > GL_NV_MR ? GL_NV1 : GL_NV_MR)

/* ---- Activations ------------------------------------------------------ */

static inline GL_V GL_FN(sigmoid)(GL_V v)
{
    const GL_V one = GL_V_SET1(1.0f);
    return GL_V_DIV(one, GL_V_ADD(one, GL_V_EXP(GL_V_SUB(GL_V_ZERO(), v))));
}

/* tanh(v) = 2 / (1 + e^(-2v)) - 1: exact limits at +-inf, NaN kept. */
static inline GL_V GL_FN(tanh)(GL_V v)
{
    const GL_V one = GL_V_SET1(1.0f), two = GL_V_SET1(2.0f);
    const GL_V e = GL_V_EXP(GL_V_MUL(GL_V_SET1(-2.0f), v));
    return GL_V_SUB(GL_V_DIV(two, GL_V_ADD(one, e)), one);
}

/* ---- Products --------------------------------------------------------- */

/* Offsets of vector v (block b, gate g) in the panel and in a y row. */
static inline void GL_FN(offsets)(const gl_panel *p, size_t g0, size_t gc, size_t v,
                                  size_t *woff, size_t *yoff)
{
    const size_t b = v / gc, g = g0 + v % gc;
    *woff = b * p->K * p->G * GL_LANES + g * GL_LANES;
    *yoff = (b * p->G + g) * GL_LANES;
}

/* Cache blocking: a block of KC inputs of a group of weight vectors
 * (KC * NV * 64 bytes as float32) stays in L1 while it sweeps a block of
 * MC rows, whose KC inputs (MC * KC * 4 bytes) stay in L2. */
#define GL_MC (16 * GL_MR)
#define GL_KC 128

/* One product per weight type (kernels_gemm.h). */
#define GL_WT float
#define GL_WNAME f32
#define GL_LOADW(p) GL_V_LOAD(p)
#include "kernels_gemm.h"

#define GL_WT uint16_t
#define GL_WNAME f16
#define GL_LOADW(p) GL_V_LOAD_F16(p)
#include "kernels_gemm.h"

#define GL_WT int8_t
#define GL_WNAME i8
#define GL_LOADW(p) GL_V_LOAD_I8(p)
#include "kernels_gemm.h"

static void GL_FN(gemm)(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                        size_t g0, size_t gc, float *y, size_t ldy)
{
    switch (p->dtype) {
    case GRULITE_DTYPE_F16: GL_FN(gemm_f16)(rows, x, ldx, p, g0, gc, y, ldy); break;
    case GRULITE_DTYPE_I8: GL_FN(gemm_i8)(rows, x, ldx, p, g0, gc, y, ldy); break;
    default: GL_FN(gemm_f32)(rows, x, ldx, p, g0, gc, y, ldy); break;
    }
}

/* ---- Gates ------------------------------------------------------------ */

static void GL_FN(gates_after)(size_t nb, const float *xp, const float *hp, float *h)
{
    for (size_t b = 0; b < nb; b++) {
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        const GL_V r = GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb), GL_V_LOAD(hb)));
        const GL_V z = GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb + GL_LANES), GL_V_LOAD(hb + GL_LANES)));
        const GL_V n = GL_FN(tanh)(GL_V_FMA(r, GL_V_LOAD(hb + 2 * GL_LANES),
                                            GL_V_LOAD(xb + 2 * GL_LANES)));
        const GL_V hv = GL_V_LOAD(h + GL_LANES * b);
        GL_V_STORE(h + GL_LANES * b, GL_V_FMA(z, GL_V_SUB(hv, n), n));
    }
}

static void GL_FN(gates_rz)(size_t nb, const float *xp, const float *hp, const float *h,
                            float *rh, float *z)
{
    for (size_t b = 0; b < nb; b++) {
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        const GL_V r = GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb), GL_V_LOAD(hb)));
        GL_V_STORE(z + GL_LANES * b,
                   GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb + GL_LANES), GL_V_LOAD(hb + GL_LANES))));
        GL_V_STORE(rh + GL_LANES * b, GL_V_MUL(r, GL_V_LOAD(h + GL_LANES * b)));
    }
}

static void GL_FN(gates_n)(size_t nb, const float *xp, const float *hp, const float *z, float *h)
{
    for (size_t b = 0; b < nb; b++) {
        const size_t o = 3 * GL_LANES * b + 2 * GL_LANES;
        const GL_V n = GL_FN(tanh)(GL_V_ADD(GL_V_LOAD(xp + o), GL_V_LOAD(hp + o)));
        const GL_V hv = GL_V_LOAD(h + GL_LANES * b);
        GL_V_STORE(h + GL_LANES * b, GL_V_FMA(GL_V_LOAD(z + GL_LANES * b), GL_V_SUB(hv, n), n));
    }
}

const gl_kernels GL_XPASTE2(gl_kernels_, GL_NAME) = {
    GL_XSTR(GL_NAME), GL_FN(gemm), GL_FN(gates_after), GL_FN(gates_rz), GL_FN(gates_n)
};
