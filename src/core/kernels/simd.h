/* kernels/simd.h - the SIMD kernels, written once over a 16-lane vector
 * type and included by each ISA's file (kernels/avx2.c, kernels/avx512.c,
 * kernels/neon.c; the first and last through kernels/v16.h)
 * after it defines:
 *
 *   GL_V                 the 16-float vector type
 *   GL_NAME              the kernel set's name, e.g. avx512 (table gl_kernels_avx512)
 *   GL_PREFIX            the function-name prefix, e.g. avx512_
 *   GL_V_LOAD(p)         load 16 floats (unaligned allowed)
 *   GL_V_STORE(p, v)     store 16 floats
 *   GL_V_ZERO()          all zeros
 *   GL_V_SET1(f)         broadcast a float
 *   GL_V_ADD, GL_V_SUB, GL_V_MUL (a, b)
 *   GL_V_FMA(a, b, c)    a*b + c, one rounding
 *   GL_V_FNMA(a, b, c)   c - a*b, one rounding
 *   GL_V_RCP(a)          an estimate of 1/a (>= 12 bits)
 *   GL_V_MIN, GL_V_MAX (a, b)  lane-wise min / max; a NaN in b comes out
 *   GL_V_ROUND(a)        to the nearest integer, ties to even
 *   GL_V_LDEXP(a, n)     a * 2^n for integral n from GL_EXP_MIN / ln2 up to 128
 *   GL_EXP_MIN           the lowest exponent argument kept (GL_V_LDEXP's range)
 *   GL_V_LOAD_F16(p)     load 16 IEEE halves as floats
 *   GL_V_LOAD_BF16(p)    load 16 bfloat16s as floats (each shifted into a float's top half)
 *   GL_VQ, GL_VQ_LOAD(p) 64 raw bytes of an int8 panel (16 lanes x 4 inputs)
 *   GL_VQ_GET(raw, kk)   input kk (0..3) of each lane, as floats (q = byte ^ 0x80)
 *   GL_MR, GL_NV_MR      rows and vectors of the many-row micro-kernel
 *   GL_NV1               vectors of the one-row micro-kernel
 *
 * and optionally GL_GEMM_I8_DOT, a function (kernels.h: gl_avx2_gemm_i8_dot)
 * that takes over int8 products with integer dot products, handing the rows
 * it cannot take to this set's float one.
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

/* e^v for every kernel set: the Cephes expf.  v = n ln2 + r with
 * |r| <= ln2/2 (ln2 in two parts, so r is exact), a degree-5 polynomial in
 * r, times 2^n.  v is clamped to [GL_EXP_MIN, 88.38] (so 1 + e^v stays
 * finite below FLT_MAX and 2^n stays in GL_V_LDEXP's range); NaN is kept:
 * the clamps take v as the operand whose NaN comes out. */
static inline GL_V GL_FN(exp)(GL_V v)
{
    v = GL_V_MIN(GL_V_SET1(88.3762626647949f), v);
    v = GL_V_MAX(GL_V_SET1(GL_EXP_MIN), v);
    const GL_V n = GL_V_ROUND(GL_V_MUL(v, GL_V_SET1(1.44269504088896341f)));
    GL_V r = GL_V_FNMA(n, GL_V_SET1(0.693359375f), v);
    r = GL_V_FNMA(n, GL_V_SET1(-2.12194440e-4f), r);
    GL_V p = GL_V_SET1(1.9875691500e-4f);
    p = GL_V_FMA(p, r, GL_V_SET1(1.3981999507e-3f));
    p = GL_V_FMA(p, r, GL_V_SET1(8.3334519073e-3f));
    p = GL_V_FMA(p, r, GL_V_SET1(4.1665795894e-2f));
    p = GL_V_FMA(p, r, GL_V_SET1(1.6666665459e-1f));
    p = GL_V_FMA(p, r, GL_V_SET1(5.0000001201e-1f));
    p = GL_V_FMA(p, GL_V_MUL(r, r), r);
    p = GL_V_ADD(p, GL_V_SET1(1.0f));
    return GL_V_LDEXP(p, n);
}

/* 1 / a for a >= 1 (finite, or NaN): the hardware estimate refined by one
 * Newton step, r + r*(1 - a*r), about 1 ulp; cheaper than a division. */
static inline GL_V GL_FN(recip)(GL_V a)
{
    const GL_V r = GL_V_RCP(a);
    return GL_V_FMA(r, GL_V_FNMA(a, r, GL_V_SET1(1.0f)), r);
}

/* e^v is clamped below FLT_MAX (exp above), so 1 + e stays finite. */
static inline GL_V GL_FN(sigmoid)(GL_V v)
{
    const GL_V one = GL_V_SET1(1.0f);
    return GL_FN(recip)(GL_V_ADD(one, GL_FN(exp)(GL_V_SUB(GL_V_ZERO(), v))));
}

/* tanh(v) = 2 / (1 + e^(-2v)) - 1: exact limits at +-inf, NaN kept. */
static inline GL_V GL_FN(tanh)(GL_V v)
{
    const GL_V one = GL_V_SET1(1.0f), two = GL_V_SET1(2.0f);
    const GL_V e = GL_FN(exp)(GL_V_MUL(GL_V_SET1(-2.0f), v));
    return GL_V_FMA(two, GL_FN(recip)(GL_V_ADD(one, e)), GL_V_SET1(-1.0f));
}

/* ---- Products --------------------------------------------------------- */

/* Offsets of vectors v .. v+n-1 (vector v is block v / gc, gate
 * g0 + v % gc) in the panel and in a y row; one division, then steps. */
static inline void GL_FN(offsets)(const gl_panel *p, size_t g0, size_t gc, size_t v, size_t n,
                                  size_t *woff, size_t *yoff)
{
    size_t b = v / gc, g = g0 + v % gc;
    for (size_t j = 0; j < n; j++) {
        woff[j] = b * p->K * p->G * GL_LANES + g * GL_LANES;
        yoff[j] = (b * p->G + g) * GL_LANES;
        if (++g == g0 + gc) { g = g0; b++; }
    }
}

/* Cache blocking (kernels/gemm.h).  Many rows (an input projection over
 * all steps): blocks of rows whose outputs fill about GL_MC_BYTES (fewer
 * rows let the weights stay in L2 beside the outputs written), but at
 * least GL_MC_MIN (each block reads all the weights: fewer rows would wait
 * on L3 for them), and of GL_KC inputs; the KC inputs of a group of weight
 * vectors (KC * NV * 64 bytes as float32) stay in L1 while they sweep the
 * block's rows, and the block's inputs stay in L2.  Few rows
 * (a step's recurrent product, whose weights may only fit L3): one block
 * with every input, up to GL_ONE_ROWS rows and GL_ONE_FLOATS inputs in
 * all, so each weight group is fetched once, in order, and read from L2
 * for the other rows; no partial sums. */
#define GL_MC_BYTES (256u << 10)
#define GL_MC_MIN 64
#define GL_KC 128
#define GL_ONE_ROWS 128
#define GL_ONE_FLOATS 65536
/* Weights above this size are prefetched group by group: they do not
 * stay in L2 from one step, or one row block, to the next. */
#define GL_PREFETCH_BYTES (1u << 20)
#define GL_PREFETCH_L2(p) __builtin_prefetch((p), 0, 2)

#include "blocking.h"

/* One product per weight type (kernels/gemm.h). */
#define GL_WT float
#define GL_WNAME f32
#define GL_LOADW(p) GL_V_LOAD(p)
#include "gemm.h"

#define GL_WT uint16_t
#define GL_WNAME f16
#define GL_LOADW(p) GL_V_LOAD_F16(p)
#include "gemm.h"

/* bfloat16 widens exactly, so this product is the float32 one over the
 * rounded weights, with half the bytes read.  A set may widen pairs in
 * place instead (GL_V_LOAD_BF16_PAIRS: lanes 0, 2, .., 14 then 1, 3, .., 15,
 * with GL_V_LOAD_PAIRS / GL_V_STORE_PAIRS for floats in that order). */
#define GL_WT uint16_t
#define GL_WNAME bf16
#if defined(GL_V_LOAD_BF16_PAIRS)
#  define GL_LOADW(p) GL_V_LOAD_BF16_PAIRS(p)
#  define GL_ACC_LOAD(p) GL_V_LOAD_PAIRS(p)
#  define GL_ACC_STORE(p, v) GL_V_STORE_PAIRS((p), (v))
#else
#  define GL_LOADW(p) GL_V_LOAD_BF16(p)
#endif
#include "gemm.h"

/* int8 panels hold quads of inputs per lane (kernels.h): each 64-byte
 * load gives 4 inputs x 16 lanes; GL_VQ_GET(raw, kk) sign-extends input kk
 * of each lane (the byte ^ 0x80) and converts it.  x * q is summed in one
 * chain over the whole K, then y = acc * scale + bias. */
#define GL_MKQ(MR, NV) GL_FN(GL_XPASTE4(mkq_, MR, x, NV))
#define GL_MKQR(MR, NV) GL_FN(GL_XPASTE4(mkqr_, MR, x, NV))

#define GL_DEFINE_MKQ(MR, NV) GL_DEFINE_MKQ_(GL_MKQ(MR, NV), MR, NV)
#define GL_DEFINE_MKQR(MR, NV) GL_DEFINE_MKQ_(GL_MKQR(MR, NV), MR, NV)
#define GL_DEFINE_MKQ_(NAME, MR, NV)                                                \
static void NAME(size_t K, const float *x, size_t ldx, const uint8_t *w,            \
                           size_t qstride, const size_t *woff, const size_t *yoff,   \
                           const float *bias, const float *scale, float *y,          \
                           size_t ldy)                                               \
{                                                                                   \
    GL_V acc[MR][NV];                                                               \
    for (int i = 0; i < MR; i++)                                                    \
        for (int j = 0; j < NV; j++) acc[i][j] = GL_V_ZERO();                       \
    for (size_t k0 = 0; k0 < K; k0 += 4) {                                          \
        const uint8_t *wq = w + (k0 / 4) * qstride;                                 \
        GL_VQ raw[NV];                                                              \
        for (int j = 0; j < NV; j++) raw[j] = GL_VQ_LOAD(wq + woff[j]);             \
        const int nk = K - k0 < 4 ? (int)(K - k0) : 4;                              \
        for (int kk = 0; kk < nk; kk++) {                                           \
            GL_V wv[NV];                                                            \
            for (int j = 0; j < NV; j++) wv[j] = GL_VQ_GET(raw[j], kk);             \
            for (int i = 0; i < MR; i++) {                                          \
                const GL_V xb = GL_V_SET1(x[(size_t)i * ldx + k0 + (size_t)kk]);    \
                for (int j = 0; j < NV; j++) acc[i][j] = GL_V_FMA(xb, wv[j], acc[i][j]); \
            }                                                                       \
        }                                                                           \
    }                                                                               \
    for (int j = 0; j < NV; j++) {                                                  \
        const GL_V s = GL_V_LOAD(scale + yoff[j]);                                  \
        const GL_V b0 = bias ? GL_V_LOAD(bias + yoff[j]) : GL_V_ZERO();             \
        for (int i = 0; i < MR; i++)                                                \
            GL_V_STORE(y + (size_t)i * ldy + yoff[j], GL_V_FMA(acc[i][j], s, b0));  \
    }                                                                               \
}

GL_DEFINE_MKQ(GL_MR, GL_NV_MR)
#if GL_NV_MR != 1
GL_DEFINE_MKQ(GL_MR, 1)
#endif
#if GL_MR > 4                     /* rows after the last whole MR group */
GL_DEFINE_MKQR(4, GL_NV_MR)
#  if GL_NV_MR != 1
GL_DEFINE_MKQR(4, 1)
#  endif
#endif
#if GL_MR > 2
GL_DEFINE_MKQR(2, GL_NV_MR)
#  if GL_NV_MR != 1
GL_DEFINE_MKQR(2, 1)
#  endif
#endif
GL_DEFINE_MKQR(1, GL_NV_MR)
#if GL_NV_MR != 1
GL_DEFINE_MKQR(1, 1)
#endif
GL_DEFINE_MKQ(1, GL_NV1)
#if GL_NV1 > 4
GL_DEFINE_MKQ(1, 4)
#endif
#if GL_NV1 > 2
GL_DEFINE_MKQ(1, 2)
#endif
#if GL_NV1 != 1
GL_DEFINE_MKQ(1, 1)
#endif

/* int8: blocks of 16 MR-row groups with every input at once (a byte a
 * weight, a quarter of float32, so a group's weights stay in L1 for
 * longer K). */
#define GL_MC_Q (16 * GL_MR)

/* One row: groups of up to GL_NV1 vectors; out of line, as gemv_f32. */
__attribute__((noinline)) static void GL_FN(gemv_i8)(const float *x, const gl_panel *p,
                                                     size_t g0, size_t gc, float *y)
{
    const size_t nv = p->nb * gc, K = p->K, qs = p->G * GL_LANES * 4;
    const uint8_t *w = (const uint8_t *)p->w;
    size_t woff[GL_MAX_NV], yoff[GL_MAX_NV];
    size_t v = 0;
#define GL_ROW_GROUP(N)                                                                   \
    do {                                                                                  \
        gl_panel_offsets_q(p, g0, gc, v, N, woff, yoff);                                  \
        GL_MKQ(1, N)(K, x, 0, w, qs, woff, yoff, p->b, p->scale, y, 0);                   \
        v += N;                                                                           \
    } while (0)
    GL_ROW_GROUPS(GL_ROW_GROUP);
#undef GL_ROW_GROUP
}

static void GL_FN(gemm_i8)(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                           size_t g0, size_t gc, float *y, size_t ldy)
{
    const size_t nv = p->nb * gc, K = p->K, qs = p->G * GL_LANES * 4;
    const uint8_t *w = (const uint8_t *)p->w;
    size_t woff[GL_MAX_NV], yoff[GL_MAX_NV];
    if (rows == 1) {
        GL_FN(gemv_i8)(x, p, g0, gc, y);
        return;
    }
    /* As the float product (kernels/gemm.h): groups of GL_NV_MR vectors,
     * then one at a time, each over the rows GL_MR at a time and then 4, 2
     * and 1 at a time (the "r" kernels). */
#define GL_Q_OFFSETS(v, n) gl_panel_offsets_q(p, g0, gc, (v), (n), woff, yoff)
#define GL_Q_FULL(NV, r) GL_MKQ(GL_MR, NV)(K, x + (r) * ldx, ldx, w, qs, woff, yoff, p->b, \
                                           p->scale, y + (r) * ldy, ldy)
#define GL_Q_REST(R, NV, r) GL_MKQR(R, NV)(K, x + (r) * ldx, ldx, w, qs, woff, yoff, p->b, \
                                           p->scale, y + (r) * ldy, ldy)
    GL_ROW_BLOCKS(rows, GL_MC_Q, GL_Q_OFFSETS, GL_Q_FULL, GL_Q_REST)
#undef GL_Q_OFFSETS
#undef GL_Q_FULL
#undef GL_Q_REST
}

static void GL_FN(gemm)(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                        size_t g0, size_t gc, float *y, size_t ldy, void *tmp)
{
    (void)tmp;
    switch (p->dtype) {
    case GRULITE_DTYPE_F16: GL_FN(gemm_f16)(rows, x, ldx, p, g0, gc, y, ldy); break;
    case GRULITE_DTYPE_BF16: GL_FN(gemm_bf16)(rows, x, ldx, p, g0, gc, y, ldy); break;
#if defined(GL_GEMM_I8_DOT)
    case GRULITE_DTYPE_I8:
        GL_GEMM_I8_DOT(rows, x, ldx, p, g0, gc, y, ldy, tmp, GL_FN(gemm_i8));
        break;
#else
    case GRULITE_DTYPE_I8: GL_FN(gemm_i8)(rows, x, ldx, p, g0, gc, y, ldy); break;
#endif
    default: GL_FN(gemm_f32)(rows, x, ldx, p, g0, gc, y, ldy); break;
    }
}

/* ---- Gates ------------------------------------------------------------ */

/* Blocks of gates computed side by side: each block is a long chain of
 * dependent operations (exp, reciprocal, then tanh on r), so interleaving
 * four gives the core independent work while one waits.  Every value is
 * computed by the same operations as one block alone: same bits. */
#define GL_GATE_UNROLL 4

/* h = n + z*(h - n) read from h and written to hn (h itself when in place). */
static void GL_FN(gates_after_to)(size_t nb, const float *xp, const float *hp, const float *h,
                                  float *hn)
{
    size_t b = 0;
    for (; b + GL_GATE_UNROLL <= nb; b += GL_GATE_UNROLL) {
        GL_V r[GL_GATE_UNROLL], z[GL_GATE_UNROLL], n[GL_GATE_UNROLL];
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        for (int u = 0; u < GL_GATE_UNROLL; u++) {
            r[u] = GL_V_ADD(GL_V_LOAD(xb + 3 * GL_LANES * u), GL_V_LOAD(hb + 3 * GL_LANES * u));
            z[u] = GL_V_ADD(GL_V_LOAD(xb + 3 * GL_LANES * u + GL_LANES),
                            GL_V_LOAD(hb + 3 * GL_LANES * u + GL_LANES));
        }
        for (int u = 0; u < GL_GATE_UNROLL; u++) r[u] = GL_FN(sigmoid)(r[u]);
        for (int u = 0; u < GL_GATE_UNROLL; u++) z[u] = GL_FN(sigmoid)(z[u]);
        for (int u = 0; u < GL_GATE_UNROLL; u++)
            n[u] = GL_FN(tanh)(GL_V_FMA(r[u], GL_V_LOAD(hb + 3 * GL_LANES * u + 2 * GL_LANES),
                                        GL_V_LOAD(xb + 3 * GL_LANES * u + 2 * GL_LANES)));
        for (int u = 0; u < GL_GATE_UNROLL; u++) {
            const size_t o = GL_LANES * (b + (size_t)u);
            GL_V_STORE(hn + o, GL_V_FMA(z[u], GL_V_SUB(GL_V_LOAD(h + o), n[u]), n[u]));
        }
    }
    for (; b < nb; b++) {
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        const GL_V r = GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb), GL_V_LOAD(hb)));
        const GL_V z = GL_FN(sigmoid)(GL_V_ADD(GL_V_LOAD(xb + GL_LANES), GL_V_LOAD(hb + GL_LANES)));
        const GL_V n = GL_FN(tanh)(GL_V_FMA(r, GL_V_LOAD(hb + 2 * GL_LANES),
                                            GL_V_LOAD(xb + 2 * GL_LANES)));
        const GL_V hv = GL_V_LOAD(h + GL_LANES * b);
        GL_V_STORE(hn + GL_LANES * b, GL_V_FMA(z, GL_V_SUB(hv, n), n));
    }
}

static void GL_FN(gates_after)(size_t nb, const float *xp, const float *hp, float *h)
{
    GL_FN(gates_after_to)(nb, xp, hp, h, h);
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

/* ---- Gates with any activations ---------------------------------------- */

/* A GRU activation of 16 lanes: kernels/ref.c's gl_gate_act within
 * rounding.  The piecewise ones are built from min / max, which keep a
 * NaN (see GL_V_MIN): leaky relu = max(x, 0) + alpha*min(x, 0), elu =
 * max(x, 0) + alpha*(e^min(x, 0) - 1).  Thresholded relu and softplus
 * (a logarithm) go lane by lane through the reference. */
static inline GL_V GL_FN(act)(GL_V v, int act, float alpha, float beta)
{
    const GL_V zero = GL_V_ZERO(), one = GL_V_SET1(1.0f);
    switch (act) {
    case GRULITE_ACT_SIGMOID: return GL_FN(sigmoid)(v);
    case GRULITE_ACT_TANH: return GL_FN(tanh)(v);
    case GRULITE_ACT_RELU: return GL_V_MAX(zero, v);
    case GRULITE_ACT_AFFINE: return GL_V_FMA(GL_V_SET1(alpha), v, GL_V_SET1(beta));
    case GRULITE_ACT_LEAKY_RELU:
        return GL_V_FMA(GL_V_SET1(alpha), GL_V_MIN(zero, v), GL_V_MAX(zero, v));
    case GRULITE_ACT_SCALED_TANH:
        return GL_V_MUL(GL_V_SET1(alpha), GL_FN(tanh)(GL_V_MUL(GL_V_SET1(beta), v)));
    case GRULITE_ACT_HARD_SIGMOID:
        return GL_V_MIN(one, GL_V_MAX(zero, GL_V_FMA(GL_V_SET1(alpha), v, GL_V_SET1(beta))));
    case GRULITE_ACT_ELU:
        return GL_V_FMA(GL_V_SET1(alpha), GL_V_SUB(GL_FN(exp)(GL_V_MIN(zero, v)), one),
                        GL_V_MAX(zero, v));
    case GRULITE_ACT_SOFTSIGN:     /* 1 + |x| >= 1: recip's range */
        return GL_V_MUL(v, GL_FN(recip)(GL_V_ADD(one, GL_V_MAX(GL_V_SUB(zero, v), v))));
    default: {
        float t[GL_LANES];
        GL_V_STORE(t, v);
        for (int l = 0; l < GL_LANES; l++) t[l] = gl_gate_act(act, alpha, beta, t[l]);
        return GL_V_LOAD(t);
    }
    }
}

/* v bounded to [-clip, clip] when clip > 0 (a NaN stays NaN). */
static inline GL_V GL_FN(clip)(GL_V v, float clip)
{
    if (!(clip > 0.0f)) return v;
    return GL_V_MIN(GL_V_SET1(clip), GL_V_MAX(GL_V_SET1(-clip), v));
}

static inline GL_V GL_FN(act_f)(GL_V v, const gl_gate_fns *fn)
{
    return GL_FN(act)(GL_FN(clip)(v, fn->clip), fn->f, fn->f_alpha, fn->f_beta);
}

static inline GL_V GL_FN(act_g)(GL_V v, const gl_gate_fns *fn)
{
    return GL_FN(act)(GL_FN(clip)(v, fn->clip), fn->g, fn->g_alpha, fn->g_beta);
}

static void GL_FN(gates_after_fn_to)(size_t nb, const float *xp, const float *hp,
                                     const float *h, float *hn, const gl_gate_fns *fn)
{
    for (size_t b = 0; b < nb; b++) {
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        const GL_V r = GL_FN(act_f)(GL_V_ADD(GL_V_LOAD(xb), GL_V_LOAD(hb)), fn);
        const GL_V z = GL_FN(act_f)(GL_V_ADD(GL_V_LOAD(xb + GL_LANES), GL_V_LOAD(hb + GL_LANES)), fn);
        const GL_V n = GL_FN(act_g)(GL_V_FMA(r, GL_V_LOAD(hb + 2 * GL_LANES),
                                             GL_V_LOAD(xb + 2 * GL_LANES)), fn);
        const GL_V hv = GL_V_LOAD(h + GL_LANES * b);
        GL_V_STORE(hn + GL_LANES * b, GL_V_FMA(z, GL_V_SUB(hv, n), n));
    }
}

static void GL_FN(gates_after_fn)(size_t nb, const float *xp, const float *hp, float *h,
                                  const gl_gate_fns *fn)
{
    GL_FN(gates_after_fn_to)(nb, xp, hp, h, h, fn);
}

static void GL_FN(gates_rz_fn)(size_t nb, const float *xp, const float *hp, const float *h,
                               float *rh, float *z, const gl_gate_fns *fn)
{
    for (size_t b = 0; b < nb; b++) {
        const float *xb = xp + 3 * GL_LANES * b, *hb = hp + 3 * GL_LANES * b;
        const GL_V r = GL_FN(act_f)(GL_V_ADD(GL_V_LOAD(xb), GL_V_LOAD(hb)), fn);
        GL_V_STORE(z + GL_LANES * b,
                   GL_FN(act_f)(GL_V_ADD(GL_V_LOAD(xb + GL_LANES), GL_V_LOAD(hb + GL_LANES)), fn));
        GL_V_STORE(rh + GL_LANES * b, GL_V_MUL(r, GL_V_LOAD(h + GL_LANES * b)));
    }
}

static void GL_FN(gates_n_fn)(size_t nb, const float *xp, const float *hp, const float *z,
                              float *h, const gl_gate_fns *fn)
{
    for (size_t b = 0; b < nb; b++) {
        const size_t o = 3 * GL_LANES * b + 2 * GL_LANES;
        const GL_V n = GL_FN(act_g)(GL_V_ADD(GL_V_LOAD(xp + o), GL_V_LOAD(hp + o)), fn);
        const GL_V hv = GL_V_LOAD(h + GL_LANES * b);
        GL_V_STORE(h + GL_LANES * b, GL_V_FMA(GL_V_LOAD(z + GL_LANES * b), GL_V_SUB(hv, n), n));
    }
}

/* ---- One step of one row (kernels.h, step_after) ------------------------ */

/* Block by block: with W_ih, a block's three input products, then its
 * three recurrent ones (one micro-kernel call each, so a block is read
 * as one stream, in order), then its gates, whose arithmetic runs beside
 * the loads of the next block's weights; the blocks last to first with
 * `down`.  The products and gates are those of gemm and gates_after:
 * same bits. */
#if GL_NV1 >= 3
#  define GL_STEP_PRODUCT(WNAME, WT, P, X, Y)                                             \
    do {                                                                                  \
        GL_FN(offsets)((P), 0, 3, 3 * b, 3, woff, yoff);                                  \
        GL_FN(mk_##WNAME##_1x3)((P)->K, (X), 0, (const WT *)(P)->w, (P)->G * GL_LANES,     \
                                woff, yoff, (P)->b, (P)->scale, 1, 1, (Y), 0, NULL);       \
    } while (0)
#else
#  define GL_STEP_PRODUCT(WNAME, WT, P, X, Y)                                             \
    do {                                                                                  \
        GL_FN(offsets)((P), 0, 3, 3 * b, 3, woff, yoff);                                  \
        GL_FN(mk_##WNAME##_1x2)((P)->K, (X), 0, (const WT *)(P)->w, (P)->G * GL_LANES,     \
                                woff, yoff, (P)->b, (P)->scale, 1, 1, (Y), 0, NULL);       \
        GL_FN(mk_##WNAME##_1x1)((P)->K, (X), 0, (const WT *)(P)->w, (P)->G * GL_LANES,     \
                                woff + 2, yoff + 2, (P)->b, (P)->scale, 1, 1, (Y), 0, NULL); \
    } while (0)
#endif
#define GL_DEFINE_STEP(WNAME, WT)                                                         \
static void GL_FN(step_##WNAME)(const gl_step *s)                                        \
{                                                                                         \
    const size_t nb = s->hh->nb;                                                          \
    size_t woff[3], yoff[3];                                                              \
    for (size_t i = 0; i < nb; i++) {                                                     \
        const size_t b = s->down ? nb - 1 - i : i;                                        \
        const size_t o = 3 * GL_LANES * b, u = GL_LANES * b;                              \
        if (s->ih) GL_STEP_PRODUCT(WNAME, WT, s->ih, s->xin, s->xp);                      \
        GL_STEP_PRODUCT(WNAME, WT, s->hh, s->x, s->hp);                                   \
        if (s->fn)                                                                        \
            GL_FN(gates_after_fn_to)(1, s->xp + o, s->hp + o, s->h + u, s->hn + u, s->fn); \
        else                                                                              \
            GL_FN(gates_after_to)(1, s->xp + o, s->hp + o, s->h + u, s->hn + u);          \
    }                                                                                     \
}
GL_DEFINE_STEP(f32, float)
GL_DEFINE_STEP(f16, uint16_t)
GL_DEFINE_STEP(bf16, uint16_t)
#undef GL_DEFINE_STEP
#undef GL_STEP_PRODUCT

static void GL_FN(step_after)(const gl_step *s)
{
    if (!s->ih || s->ih->dtype == s->hh->dtype) {
        switch (s->hh->dtype) {
        case GRULITE_DTYPE_F32: GL_FN(step_f32)(s); return;
        case GRULITE_DTYPE_F16: GL_FN(step_f16)(s); return;
        case GRULITE_DTYPE_BF16: GL_FN(step_bf16)(s); return;
        default: break;
        }
    }
    /* int8 (its row is quantized once for the whole product) */
    gl_step_after_parts(&GL_XPASTE2(gl_kernels_, GL_NAME), s);
}

const gl_kernels GL_XPASTE2(gl_kernels_, GL_NAME) = {
    GL_XSTR(GL_NAME), GL_FN(gemm), GL_FN(gates_after), GL_FN(gates_rz), GL_FN(gates_n),
    GL_FN(gates_after_fn), GL_FN(gates_rz_fn), GL_FN(gates_n_fn), GL_FN(step_after)
};
