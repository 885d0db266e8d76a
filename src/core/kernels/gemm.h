/* kernels/gemm.h - the blocked product for one weight type, included by
 * kernels/simd.h once per type after it defines:
 *   GL_WT         the stored weight type (float, uint16_t half, int8_t)
 *   GL_WNAME      its short name (f32, f16, i8)
 *   GL_LOADW(p)   load 16 weights at p as a GL_V of floats
 * and optionally, when GL_LOADW gives the 16 lanes in another order (see
 * AVX2's bfloat16 in kernels/avx2.c):
 *   GL_ACC_LOAD(p), GL_ACC_STORE(p, v)  load / store 16 floats of y, a bias
 *                 or a scale in that order (default GL_V_LOAD / GL_V_STORE)
 * all undefined again at the end.  Each lane's chain is the same either way. */
#ifndef GL_ACC_LOAD
#  define GL_ACC_LOAD(p) GL_V_LOAD(p)
#  define GL_ACC_STORE(p, v) GL_V_STORE((p), (v))
#endif

#define GL_MK(MR, NV) GL_FN(GL_XPASTE4(GL_XPASTE2(mk_, GL_WNAME), _, MR, GL_XPASTE2(x, NV)))
#define GL_MK_PF(MR, NV) GL_FN(GL_XPASTE4(GL_XPASTE2(mkpf_, GL_WNAME), _, MR, GL_XPASTE2(x, NV)))
#define GL_MKR(MR, NV) GL_FN(GL_XPASTE4(GL_XPASTE2(mkr_, GL_WNAME), _, MR, GL_XPASTE2(x, NV)))

/* One input k of an MR x NV block: NV weight vectors, MR broadcasts. */
#define GL_MK_STEP(MR, NV, k)                                                       \
    do {                                                                            \
        const GL_WT *wk = w + (k) * kstride;                                        \
        GL_V wv[NV];                                                                \
        for (int j = 0; j < NV; j++) wv[j] = GL_LOADW(wk + woff[j]);                \
        for (int i = 0; i < MR; i++) {                                              \
            const GL_V xb = GL_V_SET1(x[(size_t)i * ldx + (k)]);                    \
            for (int j = 0; j < NV; j++) acc[i][j] = GL_V_FMA(xb, wv[j], acc[i][j]); \
        }                                                                           \
    } while (0)

/* MR rows x NV vectors over K inputs; acc stays in registers (constant
 * trip counts).  The chain starts from the bias (or 0; 0 for int8, which
 * has a scale) when `start`, else from the partial sums already in y:
 * splitting K into blocks keeps each output's one chain, in order.  With
 * `finish` and a scale: y = acc * scale + bias.  The PF variant also
 * prefetches one cache line from pf onwards into L2 every two inputs. */
#define GL_DEFINE_MK(MR, NV) GL_DEFINE_MK_(GL_MK(MR, NV), MR, NV, 0)
#define GL_DEFINE_MK_PF(MR, NV) GL_DEFINE_MK_(GL_MK_PF(MR, NV), MR, NV, 1)
#define GL_DEFINE_MKR(MR, NV) GL_DEFINE_MK_(GL_MKR(MR, NV), MR, NV, 0)
#define GL_DEFINE_MK_(NAME, MR, NV, PF)                                             \
static void NAME(size_t K, const float *x, size_t ldx,                             \
                 const GL_WT *w, size_t kstride,                                    \
                 const size_t *woff, const size_t *yoff,                            \
                 const float *bias, const float *scale, int start,                  \
                 int finish, float *y, size_t ldy, const char *pf)                  \
{                                                                                   \
    GL_V acc[MR][NV];                                                               \
    for (int i = 0; i < MR; i++)                                                    \
        for (int j = 0; j < NV; j++)                                                \
            acc[i][j] = !start ? GL_ACC_LOAD(y + (size_t)i * ldy + yoff[j])           \
                        : bias && !scale ? GL_ACC_LOAD(bias + yoff[j]) : GL_V_ZERO(); \
    size_t k = 0;                                                                   \
    if (PF) {                                                                       \
        for (; k + 2 <= K; k += 2, pf += 64) {                                      \
            GL_MK_STEP(MR, NV, k);                                                  \
            GL_MK_STEP(MR, NV, k + 1);                                              \
            GL_PREFETCH_L2(pf);                                                     \
        }                                                                           \
    }                                                                               \
    (void)pf;                                                                       \
    for (; k < K; k++) GL_MK_STEP(MR, NV, k);                                       \
    if (finish && scale) {                                                          \
        for (int j = 0; j < NV; j++) {                                              \
            const GL_V s = GL_ACC_LOAD(scale + yoff[j]);                              \
            const GL_V b0 = bias ? GL_ACC_LOAD(bias + yoff[j]) : GL_V_ZERO();         \
            for (int i = 0; i < MR; i++) acc[i][j] = GL_V_FMA(acc[i][j], s, b0);    \
        }                                                                           \
    }                                                                               \
    for (int i = 0; i < MR; i++)                                                    \
        for (int j = 0; j < NV; j++) GL_ACC_STORE(y + (size_t)i * ldy + yoff[j], acc[i][j]); \
}

GL_DEFINE_MK_PF(GL_MR, GL_NV_MR)
GL_DEFINE_MK(GL_MR, GL_NV_MR)
#if GL_NV_MR != 1
GL_DEFINE_MK(GL_MR, 1)
#endif
/* The rows after the last whole MR group, 4, 2 and 1 at a time. */
#if GL_MR > 4
GL_DEFINE_MKR(4, GL_NV_MR)
#  if GL_NV_MR != 1
GL_DEFINE_MKR(4, 1)
#  endif
#endif
#if GL_MR > 2
GL_DEFINE_MKR(2, GL_NV_MR)
#  if GL_NV_MR != 1
GL_DEFINE_MKR(2, 1)
#  endif
#endif
GL_DEFINE_MKR(1, GL_NV_MR)
#if GL_NV_MR != 1
GL_DEFINE_MKR(1, 1)
#endif
/* One row (a sequence's step): groups of up to GL_NV1 vectors. */
GL_DEFINE_MK(1, GL_NV1)
#if GL_NV1 > 4
GL_DEFINE_MK(1, 4)
#endif
#if GL_NV1 > 3
GL_DEFINE_MK(1, 3)      /* one block's three gates (simd.h's step) */
#endif
#if GL_NV1 > 2
GL_DEFINE_MK(1, 2)
#endif
#if GL_NV1 != 1
GL_DEFINE_MK(1, 1)
#endif

/* One row (a sequence's step): whole K, groups of up to GL_NV1 vectors.
 * Kept out of line: inlined into the blocked product below, the offsets of
 * a group spill to the stack (~15 % slower at B=1, H=128). */
__attribute__((noinline)) static void GL_FN(GL_XPASTE2(gemv_, GL_WNAME))(const float *x, const gl_panel *p, size_t g0,
                                               size_t gc, float *y)
{
    const size_t nv = p->nb * gc, K = p->K, ks = p->G * GL_LANES;
    size_t woff[GL_MAX_NV], yoff[GL_MAX_NV];
    size_t v = 0;
#define GL_ROW_GROUP(N)                                                                   \
    do {                                                                                  \
        GL_FN(offsets)(p, g0, gc, v, N, woff, yoff);                                      \
        GL_MK(1, N)(K, x, 0, (const GL_WT *)p->w, ks, woff, yoff, p->b, p->scale, 1, 1,   \
                    y, 0, NULL);                                                          \
        v += N;                                                                           \
    } while (0)
    GL_ROW_GROUPS(GL_ROW_GROUP);   /* kernels/simd.h */
#undef GL_ROW_GROUP
}

static void GL_FN(GL_XPASTE2(gemm_, GL_WNAME))(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                        size_t g0, size_t gc, float *y, size_t ldy)
{
    const size_t nv = p->nb * gc, K = p->K, ks = p->G * GL_LANES;
    size_t woff[GL_MAX_NV], yoff[GL_MAX_NV];
    if (rows == 1) {
        GL_FN(GL_XPASTE2(gemv_, GL_WNAME))(x, p, g0, gc, y);
        return;
    }
    const int one = rows <= GL_ONE_ROWS && rows * K <= GL_ONE_FLOATS;
    size_t mc = rows, kcmax = K;
    if (!one) {   /* rows whose outputs fill about GL_MC_BYTES, in whole MR groups */
        const size_t fit = GL_MC_BYTES / (nv * GL_LANES * sizeof(float));
        mc = fit < GL_MC_MIN ? GL_MC_MIN : fit > GL_ONE_ROWS ? GL_ONE_ROWS : fit - fit % GL_MR;
        kcmax = GL_KC;
    }
    const int pf_all = p->nb * K * ks * sizeof(GL_WT) > GL_PREFETCH_BYTES;   /* whole panel */
    for (size_t r0 = 0; r0 < rows; r0 += mc) {
        const size_t rc = rows - r0 < mc ? rows - r0 : mc;
        const size_t rfull = rc - rc % GL_MR;          /* rows in whole MR groups */
        /* Vectors in groups of GL_NV_MR, then one at a time; for each group
         * its K inputs in blocks, each block over the rows: MR at a time,
         * then the rest 4, 2 and 1 at a time while the group is in cache. */
        for (size_t v = 0; v < nv;) {
            const size_t nvg = v + GL_NV_MR <= nv ? GL_NV_MR : 1;
            GL_FN(offsets)(p, g0, gc, v, nvg, woff, yoff);
            /* Over weights too large to stay in L2 (between calls, or
             * beside a row block's partial sums), the rows of this group
             * prefetch the panel block after the group's last one (all of
             * it, in order; the next group with three gates), half a line
             * per input each, so the next group's weights come from L2. */
            const size_t blk = K * ks, bn = pf_all ? woff[nvg - 1] / blk + 1 : p->nb;
            const GL_WT *next = (const GL_WT *)p->w + bn * blk;
            const size_t lines = blk * sizeof(GL_WT) / 64;
            size_t pl = bn < p->nb ? 0 : lines;
            for (size_t k0 = 0; k0 < K; k0 += kcmax) {
                const size_t kc = K - k0 < kcmax ? K - k0 : kcmax;
                const int start = (k0 == 0), finish = (k0 + kc == K);
                const GL_WT *w = (const GL_WT *)p->w + k0 * ks;
                for (size_t r = r0; r < r0 + rfull; r += GL_MR, pl += kc / 2) {
                    if (nvg != GL_NV_MR)
                        GL_MK(GL_MR, 1)(kc, x + r * ldx + k0, ldx, w, ks, woff, yoff, p->b,
                                        p->scale, start, finish, y + r * ldy, ldy, NULL);
                    else if (pl < lines)
                        GL_MK_PF(GL_MR, GL_NV_MR)(kc, x + r * ldx + k0, ldx, w, ks, woff, yoff,
                                                  p->b, p->scale, start, finish, y + r * ldy, ldy,
                                                  (const char *)next + 64 * pl);
                    else
                        GL_MK(GL_MR, GL_NV_MR)(kc, x + r * ldx + k0, ldx, w, ks, woff, yoff, p->b,
                                               p->scale, start, finish, y + r * ldy, ldy, NULL);
                }
                size_t r = r0 + rfull;
#define GL_REST_GROUP(R)                                                                  \
                do {                                                                      \
                    if (nvg != GL_NV_MR)                                                  \
                        GL_MKR(R, 1)(kc, x + r * ldx + k0, ldx, w, ks, woff, yoff, p->b,  \
                                     p->scale, start, finish, y + r * ldy, ldy, NULL);    \
                    else                                                                  \
                        GL_MKR(R, GL_NV_MR)(kc, x + r * ldx + k0, ldx, w, ks, woff, yoff, \
                                            p->b, p->scale, start, finish, y + r * ldy,   \
                                            ldy, NULL);                                   \
                } while (0)
                GL_REST_ROWS(rc - rfull, r, GL_REST_GROUP);   /* kernels/simd.h */
#undef GL_REST_GROUP
            }
            v += nvg;
        }
    }
}


#undef GL_MK
#undef GL_MK_PF
#undef GL_MKR
#undef GL_WT
#undef GL_WNAME
#undef GL_LOADW
#undef GL_ACC_LOAD
#undef GL_ACC_STORE
