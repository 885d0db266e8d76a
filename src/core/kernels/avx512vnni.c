/* kernels/avx512vnni.c - int8 products with AVX-512 VNNI (vpdpbusd).
 *
 * For int8 models the rows of x are quantized on the fly, one symmetric
 * scale per row (s_x = max|x| / 127), and multiplied with the stored bytes
 * (q + 128, unsigned) four inputs at a time in exact int32 arithmetic:
 *
 *     sum_k (q_k + 128) * xq_k = sum_k q_k * xq_k + 128 * sum_k xq_k
 *     y = bias + s_w * s_x * (acc - 128 * sum_k xq_k)
 *
 * A row's result depends only on that row, so row groups and threads still
 * give the same bits.  Everything else (float32 / float16 / bfloat16
 * weights, the gates, rows holding NaN or inf, K above 16384 where the
 * offset sums could overflow int32) goes to the AVX-512 kernels, whose
 * int8 product is AVX2's integer one (the same formula and bits; K up to
 * 131072, float beyond).  Used only when the CPU reports
 * AVX512F, AVX512BW and AVX512_VNNI (dispatch.c). */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "../internal.h"

GL_KERNEL_OPTIMIZE

#if defined(GL_HAVE_X86_KERNELS)

GL_TARGET_BEGIN("avx512f,avx512bw,avx512vnni,avx2,fma")

#include <immintrin.h>

#define VNNI_MAX_K 16384
#define VNNI_MC 64
/* Micro-kernel sizes, for kernels/blocking.h: 4 rows x 4 vectors, and one
 * row x 8 vectors. */
#define GL_MR 4
#define GL_NV_MR 4
#define GL_NV1 8
#include "blocking.h"

/* Quantizes each row of x: xq (ldq bytes a row, zero past K), its scale
 * sx and sum of xq.  Returns -1 if a row holds NaN or inf. */
static int quantize_rows(size_t rows, const float *x, size_t ldx, size_t K,
                         int8_t *xq, size_t ldq, float *sx, int32_t *sumq)
{
    const __m512 big = _mm512_set1_ps(FLT_MAX);
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        __m512 mx = _mm512_setzero_ps();
        __mmask16 finite = 0xFFFF;
        for (size_t k = 0; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(m, xr + k));
            finite &= _mm512_cmp_ps_mask(a, big, _CMP_LE_OQ) | (__mmask16)~m;
            mx = _mm512_max_ps(mx, a);
        }
        if (finite != 0xFFFF) return -1;
        const float amax = _mm512_reduce_max_ps(mx);
        sx[r] = amax / 127.0f;
        const __m512 inv = _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
        int8_t *qr = xq + r * ldq;
        __m512i sum = _mm512_setzero_si512();
        size_t k = 0;
        for (; k < K; k += 16) {
            const __mmask16 m = K - k >= 16 ? 0xFFFF : (__mmask16)((1u << (K - k)) - 1);
            const __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xr + k), inv));
            sum = _mm512_add_epi32(sum, q);
            _mm512_mask_cvtepi32_storeu_epi8(qr + k, m, q);
        }
        for (k = K; k < ldq; k++) qr[k] = 0;
        sumq[r] = _mm512_reduce_add_epi32(sum);
    }
    return 0;
}

#define VNNI_MK(MR, NV) VNNI_MK_(MR, NV)          /* MR, NV may be macros */
#define VNNI_MK_(MR, NV) vnni_mk_##MR##x##NV
#define VNNI_DEFINE_MK(MR, NV)                                                        \
static void VNNI_MK(MR, NV)(size_t K4, const int8_t *xq, size_t ldq, const uint8_t *w, \
                            size_t qs, const size_t *woff, const size_t *yoff,         \
                            const float *bias, const float *scale, const float *sx,    \
                            const int32_t *sumq, float *y, size_t ldy)                 \
{                                                                                     \
    __m512i acc[MR][NV];                                                              \
    for (int i = 0; i < MR; i++)                                                      \
        for (int j = 0; j < NV; j++) acc[i][j] = _mm512_setzero_si512();              \
    for (size_t kq = 0; kq < K4; kq++) {                                              \
        __m512i wv[NV];                                                               \
        for (int j = 0; j < NV; j++)                                                  \
            wv[j] = _mm512_loadu_si512((const void *)(w + kq * qs + woff[j]));        \
        for (int i = 0; i < MR; i++) {                                                \
            int32_t quad;                                                             \
            memcpy(&quad, xq + (size_t)i * ldq + 4 * kq, 4);                          \
            const __m512i xb = _mm512_set1_epi32(quad);                               \
            for (int j = 0; j < NV; j++) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], xb); \
        }                                                                             \
    }                                                                                 \
    for (int j = 0; j < NV; j++) {                                                    \
        const __m512 s = _mm512_loadu_ps(scale + yoff[j]);                            \
        const __m512 b0 = bias ? _mm512_loadu_ps(bias + yoff[j]) : _mm512_setzero_ps(); \
        for (int i = 0; i < MR; i++) {                                                \
            const __m512i d = _mm512_sub_epi32(acc[i][j], _mm512_set1_epi32(128 * sumq[i])); \
            const __m512 f = _mm512_cvtepi32_ps(d);                                   \
            _mm512_storeu_ps(y + (size_t)i * ldy + yoff[j],                           \
                             _mm512_fmadd_ps(f, _mm512_mul_ps(s, _mm512_set1_ps(sx[i])), b0)); \
        }                                                                             \
    }                                                                                 \
}

VNNI_DEFINE_MK(4, 4)
VNNI_DEFINE_MK(4, 1)
VNNI_DEFINE_MK(2, 4)     /* rows after the last group of 4 */
VNNI_DEFINE_MK(2, 1)
VNNI_DEFINE_MK(1, 8)
VNNI_DEFINE_MK(1, 4)
VNNI_DEFINE_MK(1, 2)
VNNI_DEFINE_MK(1, 1)

/* VNNI_MK(R, NV) on quantized rows r .. r+R-1 (kernels/blocking.h). */
#define GL_DOT_CALL(R, NV, r) VNNI_MK(R, NV)(K4, xq + (r) * ldq, ldq, w, qs, woff, yoff, p->b,  \
                                             p->scale, sx + (r), sumq + (r), y + (r) * ldy, ldy)

/* One quantized row (a sequence's step): groups of 8 vectors, then 4, 2, 1;
 * out of line, as gemv_f32 in kernels/gemm.h. */
__attribute__((noinline)) static void vnni_gemv_q(const int8_t *xq, const float *sx,
                                                  const int32_t *sumq, const gl_panel *p,
                                                  size_t g0, size_t gc, float *y)
{
    const size_t K4 = gl_panel_k4(p->K), ldq = 4 * K4, ldy = 0;
    const size_t nv = p->nb * gc, qs = p->G * GL_LANES * 4;
    const uint8_t *w = p->w;
    size_t woff[GL_NV1], yoff[GL_NV1];
    GL_DOT_ONE_ROW();
}

/* The products of `rows` quantized rows (xq, sx, sumq from quantize_rows). */
static void vnni_gemm_q(size_t rows, const int8_t *xq, size_t ldq, const float *sx,
                        const int32_t *sumq, const gl_panel *p, size_t g0, size_t gc,
                        float *y, size_t ldy)
{
    const size_t K4 = gl_panel_k4(p->K);
    const size_t nv = p->nb * gc, qs = p->G * GL_LANES * 4;
    const uint8_t *w = p->w;
    size_t woff[GL_NV1], yoff[GL_NV1];
    if (rows == 1) {
        vnni_gemv_q(xq, sx, sumq, p, g0, gc, y);
        return;
    }
    GL_DOT_ROWS(rows, VNNI_MC)
}

static void vnni_gemm(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                      size_t g0, size_t gc, float *y, size_t ldy, void *tmp)
{
    const size_t K = p->K, ldq = 4 * gl_panel_k4(K);
    /* tmp: xq (rows * ldq bytes, a multiple of 4), then sx, then sumq. */
    unsigned char *base = tmp;
    int8_t *xq = tmp;
    float *sx = (float *)(void *)(base + rows * ldq);
    int32_t *sumq = (int32_t *)(void *)(base + rows * ldq + rows * sizeof(float));
    if (p->dtype != GRULITE_DTYPE_I8 || !tmp || K > VNNI_MAX_K) {
        gl_kernels_avx512.gemm(rows, x, ldx, p, g0, gc, y, ldy, tmp);
        return;
    }
#define VNNI_QUANT(e) quantize_rows(1, x + (e) * ldx, ldx, K, xq + (e) * ldq, ldq, sx + (e), sumq + (e))
#define VNNI_RUN(r, n) vnni_gemm_q((n), xq + (r) * ldq, ldq, sx + (r), sumq + (r), p, g0, gc,  \
                                   y + (r) * ldy, ldy)
#define VNNI_REST(e) gl_kernels_avx512.gemm(1, x + (e) * ldx, ldx, p, g0, gc, y + (e) * ldy, ldy, tmp)
    GL_DOT_RUNS(rows, VNNI_QUANT, VNNI_RUN, VNNI_REST);
#undef VNNI_QUANT
#undef VNNI_RUN
#undef VNNI_REST
}

/* The gates are AVX-512's. */
static void vnni_gates_after(size_t nb, const float *xp, const float *hp, float *h)
{
    gl_kernels_avx512.gates_after(nb, xp, hp, h);
}

static void vnni_gates_rz(size_t nb, const float *xp, const float *hp, const float *h,
                          float *rh, float *z)
{
    gl_kernels_avx512.gates_rz(nb, xp, hp, h, rh, z);
}

static void vnni_gates_n(size_t nb, const float *xp, const float *hp, const float *z, float *h)
{
    gl_kernels_avx512.gates_n(nb, xp, hp, z, h);
}

static void vnni_gates_after_fn(size_t nb, const float *xp, const float *hp, float *h,
                                const gl_gate_fns *fn)
{
    gl_kernels_avx512.gates_after_fn(nb, xp, hp, h, fn);
}

static void vnni_gates_rz_fn(size_t nb, const float *xp, const float *hp, const float *h,
                             float *rh, float *z, const gl_gate_fns *fn)
{
    gl_kernels_avx512.gates_rz_fn(nb, xp, hp, h, rh, z, fn);
}

static void vnni_gates_n_fn(size_t nb, const float *xp, const float *hp, const float *z,
                            float *h, const gl_gate_fns *fn)
{
    gl_kernels_avx512.gates_n_fn(nb, xp, hp, z, h, fn);
}

/* int8 with this set's products, other types AVX-512's step. */
static void vnni_step_after(const gl_step *s)
{
    if (s->hh->dtype == GRULITE_DTYPE_I8) gl_step_after_parts(&gl_kernels_avx512vnni, s);
    else gl_kernels_avx512.step_after(s);
}

const gl_kernels gl_kernels_avx512vnni = {
    "avx512vnni", vnni_gemm, vnni_gates_after, vnni_gates_rz, vnni_gates_n,
    vnni_gates_after_fn, vnni_gates_rz_fn, vnni_gates_n_fn, vnni_step_after
};

GL_TARGET_END

#endif /* GL_HAVE_X86_KERNELS */
