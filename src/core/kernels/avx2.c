/* kernels/avx2.c - AVX2 + FMA kernels: a 16-lane panel vector is a pair of
 * ymm registers.  Compiled for any x86-64 target (function-level target
 * attributes); used only when the CPU reports AVX2, FMA and F16C
 * (dispatch.c).
 *
 * int8 products run in integers, as kernels/avx512vnni.c's do: each row of
 * x is quantized on the fly (s_x = max|x| / 127, xq = round(x / s_x)) and
 * multiplied with the stored weights q four inputs at a time.  AVX2 has no
 * signed-by-signed byte product, so |xq| goes in as vpmaddubsw's unsigned
 * operand and xq's sign moves onto q (vpsignb); a pair of products is at
 * most 2 * 127 * 127 < 2^15, so nothing saturates, and vpmaddwd adds the
 * pairs into int32.  The sums are exact and the scaling is vnni's:
 * y = bias + s_w * s_x * sum_k q_k * xq_k, the same bits as avx512vnni.
 * The avx512 set (AVX-512 without VNNI) uses this int8 product too. */
#include <float.h>
#include <stdint.h>
#include <string.h>

#include "../internal.h"

GL_KERNEL_OPTIMIZE

#if defined(GL_HAVE_X86_KERNELS)

GL_TARGET_BEGIN("avx2,fma,f16c")

#include <immintrin.h>

typedef struct { __m256 lo, hi; } gl_v16;

static inline gl_v16 v16_load(const float *p)
{
    gl_v16 v = { _mm256_loadu_ps(p), _mm256_loadu_ps(p + 8) };
    return v;
}

static inline void v16_store(float *p, gl_v16 v)
{
    _mm256_storeu_ps(p, v.lo);
    _mm256_storeu_ps(p + 8, v.hi);
}

static inline gl_v16 v16_set1(float f)
{
    gl_v16 v = { _mm256_set1_ps(f), _mm256_set1_ps(f) };
    return v;
}

#define GL_V16_BINOP(name, op)                                  \
static inline gl_v16 v16_##name(gl_v16 a, gl_v16 b)             \
{                                                               \
    gl_v16 v = { op(a.lo, b.lo), op(a.hi, b.hi) };              \
    return v;                                                   \
}
GL_V16_BINOP(add, _mm256_add_ps)
GL_V16_BINOP(sub, _mm256_sub_ps)
GL_V16_BINOP(mul, _mm256_mul_ps)

static inline gl_v16 v16_fma(gl_v16 a, gl_v16 b, gl_v16 c)
{
    gl_v16 v = { _mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi) };
    return v;
}

static inline gl_v16 v16_fnma(gl_v16 a, gl_v16 b, gl_v16 c)
{
    gl_v16 v = { _mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi) };
    return v;
}

static inline gl_v16 v16_rcp(gl_v16 a)
{
    gl_v16 v = { _mm256_rcp_ps(a.lo), _mm256_rcp_ps(a.hi) };
    return v;
}

static inline gl_v16 v16_load_f16(const uint16_t *p)
{
    gl_v16 v = { _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)p)),
                 _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)(p + 8))) };
    return v;
}

/* 16 bfloat16s widened in place: each 32-bit pair (lanes 2i, 2i+1) gives
 * lane 2i by a shift and lane 2i+1 by a mask, one operation for 8 floats,
 * so a vector holds lanes 0, 2, .., 14 then 1, 3, .., 15 (simd.h: the
 * product keeps its sums in that order and reorders them at the ends). */
static inline gl_v16 v16_load_bf16_pairs(const uint16_t *p)
{
    const __m256i v = _mm256_loadu_si256((const __m256i *)(const void *)p);
    gl_v16 r = { _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)),
                 _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xFFFF0000u))) };
    return r;
}

/* 16 floats into that order (even lanes, then odd) and back. */
static inline gl_v16 v16_load_pairs(const float *p)
{
    const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    const __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));   /* 0 2 8 10 | 4 6 12 14 */
    const __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    gl_v16 r = { _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), _MM_SHUFFLE(3, 1, 2, 0))),
                 _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), _MM_SHUFFLE(3, 1, 2, 0))) };
    return r;
}

static inline void v16_store_pairs(float *p, gl_v16 v)
{
    const __m256 lo = _mm256_unpacklo_ps(v.lo, v.hi);    /* 0 1 2 3 | 8 9 10 11 */
    const __m256 hi = _mm256_unpackhi_ps(v.lo, v.hi);    /* 4 5 6 7 | 12 13 14 15 */
    _mm256_storeu_ps(p, _mm256_permute2f128_ps(lo, hi, 0x20));
    _mm256_storeu_ps(p + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
}

#define GL_V_LOAD_BF16_PAIRS(p) v16_load_bf16_pairs(p)
#define GL_V_LOAD_PAIRS(p) v16_load_pairs(p)
#define GL_V_STORE_PAIRS(p, v) v16_store_pairs((p), (v))

/* 64 bytes of an int8 panel: lanes 0-7 and 8-15, 4 inputs each, made
 * signed (byte ^ 0x80). */
typedef struct { __m256i lo, hi; } gl_vq;

static inline gl_vq vq_load(const uint8_t *p)
{
    const __m256i flip = _mm256_set1_epi32((int)0x80808080u);
    gl_vq v = { _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)p), flip),
                _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *)(p + 32)), flip) };
    return v;
}

static inline gl_v16 vq_get(gl_vq raw, int kk)
{
    const __m256i sh = _mm256_set1_epi32(24 - 8 * kk);
    gl_v16 v = { _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(raw.lo, sh), 24)),
                 _mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_sllv_epi32(raw.hi, sh), 24)) };
    return v;
}

GL_V16_BINOP(min, _mm256_min_ps)     /* NaN in b out (vminps) */
GL_V16_BINOP(max, _mm256_max_ps)

static inline gl_v16 v16_round(gl_v16 a)
{
    gl_v16 v = { _mm256_round_ps(a.lo, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC),
                 _mm256_round_ps(a.hi, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC) };
    return v;
}

/* a * 2^n, 2^n built in the exponent field: n in [-126, 128] (128 gives
 * +inf). */
static inline __m256 avx2_ldexp8(__m256 a, __m256 n)
{
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n),
                                                         _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(a, _mm256_castsi256_ps(e));
}

static inline gl_v16 v16_ldexp(gl_v16 a, gl_v16 n)
{
    gl_v16 v = { avx2_ldexp8(a.lo, n.lo), avx2_ldexp8(a.hi, n.hi) };
    return v;
}

#define GL_NAME avx2
#define GL_PREFIX avx2_
#define GL_EXP_MIN (-87.3365447505531f)          /* n >= -126: 2^n stays normal */
#define GL_MR 4
#define GL_NV_MR 1
#define GL_NV1 3        /* a block's three gates: one row reads the panel in order */

#define GL_GEMM_I8_DOT gl_avx2_gemm_i8_dot     /* below; kernels.h */

#include "v16.h"
#include "simd.h"

/* ---- int8 products in integers (see the top of the file) --------------- */

#define Q8_MAX_K 131072         /* K * 127 * 127 stays below 2^31 (as neondot's) */
#define Q8_MC 64                /* rows a block (kernels/blocking.h) */

/* Quantizes one row of K floats into xq (ldq bytes, zero past K) with its
 * scale *sx; returns -1 if the row holds NaN or inf. */
static int avx2_quantize_row(const float *x, size_t K, int8_t *xq, size_t ldq, float *sx)
{
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    const __m256 big = _mm256_set1_ps(FLT_MAX);
    __m256 mx = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    size_t k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 a = _mm256_and_ps(_mm256_loadu_ps(x + k), absmask);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));   /* > FLT_MAX or NaN */
        mx = _mm256_max_ps(mx, a);
    }
    if (_mm256_movemask_ps(bad)) return -1;
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float amax = _mm_cvtss_f32(m4);
    for (; k < K; k++) {
        const float a = __builtin_fabsf(x[k]);
        if (!(a <= FLT_MAX)) return -1;
        amax = a > amax ? a : amax;
    }
    *sx = amax / 127.0f;
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    if (!(inv <= FLT_MAX)) inv = 0.0f;     /* amax below 127 / FLT_MAX: the row rounds to 0 */
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (k = 0; k + 32 <= K; k += 32) {
        const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k), vinv));
        const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 8), vinv));
        const __m256i q2 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 16), vinv));
        const __m256i q3 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + k + 24), vinv));
        /* The packs interleave 128-bit halves; the permute puts k back in order. */
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
        _mm256_storeu_si256((__m256i *)(void *)(xq + k), _mm256_permutevar8x32_epi32(b, order));
    }
    for (; k < K; k++) xq[k] = (int8_t)_mm_cvtss_si32(_mm_set_ss(x[k] * inv));
    for (; k < ldq; k++) xq[k] = 0;
    return 0;
}

/* MR quantized rows times NV weight vectors (two ymm each: lanes 0-7 and
 * 8-15, four inputs a lane). */
#define Q8_MK(MR, NV) Q8_MK_(MR, NV)            /* MR, NV may be macros */
#define Q8_MK_(MR, NV) avx2_q8_##MR##x##NV
#define Q8_DEFINE_MK(MR, NV)                                                          \
static void Q8_MK(MR, NV)(size_t K4, const int8_t *xq, size_t ldq, const uint8_t *w,   \
                          size_t qs, const size_t *woff, const size_t *yoff,           \
                          const float *bias, const float *scale, const float *sx,      \
                          float *y, size_t ldy)                                        \
{                                                                                     \
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);   \
    __m256i acc[MR][2 * NV];                                                          \
    for (int i = 0; i < MR; i++)                                                      \
        for (int j = 0; j < 2 * NV; j++) acc[i][j] = _mm256_setzero_si256();          \
    for (size_t kq = 0; kq < K4; kq++) {                                              \
        __m256i wv[2 * NV];                                                           \
        for (int j = 0; j < 2 * NV; j++)                                              \
            wv[j] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(const void *) \
                        (w + kq * qs + woff[j / 2] + 32 * (size_t)(j % 2))), flip);    \
        for (int i = 0; i < MR; i++) {                                                \
            int32_t quad;                                                             \
            memcpy(&quad, xq + (size_t)i * ldq + 4 * kq, 4);                          \
            const __m256i xs = _mm256_set1_epi32(quad), xa = _mm256_abs_epi8(xs);     \
            for (int j = 0; j < 2 * NV; j++) {                                        \
                const __m256i pr = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(wv[j], xs)); \
                acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pr, ones)); \
            }                                                                         \
        }                                                                             \
    }                                                                                 \
    for (int j = 0; j < 2 * NV; j++) {                                                \
        const size_t o = yoff[j / 2] + 8 * (size_t)(j % 2);                            \
        const __m256 s = _mm256_loadu_ps(scale + o);                                  \
        const __m256 b0 = bias ? _mm256_loadu_ps(bias + o) : _mm256_setzero_ps();     \
        for (int i = 0; i < MR; i++)                                                  \
            _mm256_storeu_ps(y + (size_t)i * ldy + o,                                 \
                             _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][j]),           \
                                             _mm256_mul_ps(s, _mm256_set1_ps(sx[i])), b0)); \
    }                                                                                 \
}

/* One row (a step): each weight vector is used once, so it is loaded
 * where it is used, leaving registers for the 2 * NV sums (kept out of
 * line: inlined, GCC spilled the sums to the stack). */
#define Q8_DEFINE_MK1(NV)                                                              \
__attribute__((noinline))                                                             \
static void Q8_MK(1, NV)(size_t K4, const int8_t *xq, size_t ldq, const uint8_t *w,    \
                         size_t qs, const size_t *woff, const size_t *yoff,            \
                         const float *bias, const float *scale, const float *sx,       \
                         float *y, size_t ldy)                                         \
{                                                                                     \
    (void)ldq; (void)ldy;                                                             \
    const __m256i flip = _mm256_set1_epi8((char)0x80), ones = _mm256_set1_epi16(1);   \
    __m256i acc[2 * NV];                                                              \
    for (int j = 0; j < 2 * NV; j++) acc[j] = _mm256_setzero_si256();                 \
    for (size_t kq = 0; kq < K4; kq++) {                                              \
        int32_t quad;                                                                 \
        memcpy(&quad, xq + 4 * kq, 4);                                                \
        const __m256i xs = _mm256_set1_epi32(quad), xa = _mm256_abs_epi8(xs);         \
        for (int j = 0; j < 2 * NV; j++) {                                            \
            const __m256i wv = _mm256_xor_si256(_mm256_loadu_si256(                     \
                (const __m256i *)(const void *)(w + kq * qs + woff[j / 2] + 32 * (size_t)(j % 2))), \
                flip);                                                                \
            const __m256i pr = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(wv, xs));    \
            acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(pr, ones));           \
        }                                                                             \
    }                                                                                 \
    const __m256 s0 = _mm256_set1_ps(sx[0]);                                          \
    for (int j = 0; j < 2 * NV; j++) {                                                \
        const size_t o = yoff[j / 2] + 8 * (size_t)(j % 2);                            \
        const __m256 b0 = bias ? _mm256_loadu_ps(bias + o) : _mm256_setzero_ps();     \
        const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(scale + o), s0);               \
        _mm256_storeu_ps(y + o, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[j]), s, b0));   \
    }                                                                                 \
}

Q8_DEFINE_MK(4, 1)
Q8_DEFINE_MK(2, 1)      /* rows after the last group of 4 */
Q8_DEFINE_MK1(3)
Q8_DEFINE_MK1(2)
Q8_DEFINE_MK1(1)

/* Q8_MK(R, NV) on quantized rows r .. r+R-1 (kernels/blocking.h). */
#define GL_DOT_CALL(R, NV, r) Q8_MK(R, NV)(K4, xq + (r) * ldq, ldq, w, qs, woff, yoff, p->b, \
                                           p->scale, sx + (r), y + (r) * ldy, ldy)

/* The products of `rows` quantized rows: one row (a step) in groups of 3,
 * 2, 1 vectors; more in blocks of rows, as kernels/gemm.h. */
static void avx2_gemm_q8(size_t rows, const int8_t *xq, size_t ldq, const float *sx,
                         const gl_panel *p, size_t g0, size_t gc, float *y, size_t ldy)
{
    const size_t K4 = gl_panel_k4(p->K);
    const size_t nv = p->nb * gc, qs = p->G * GL_LANES * 4;
    const uint8_t *w = p->w;
    size_t woff[GL_NV1], yoff[GL_NV1];
    if (rows == 1) GL_DOT_ONE_ROW();
    else GL_DOT_ROWS(rows, Q8_MC)
}

void gl_avx2_gemm_i8_dot(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                         size_t g0, size_t gc, float *y, size_t ldy, void *tmp,
                         gl_gemm_i8_fn rest)
{
    const size_t K = p->K, ldq = 4 * gl_panel_k4(K);
    if (!tmp || K > Q8_MAX_K) {
        rest(rows, x, ldx, p, g0, gc, y, ldy);
        return;
    }
    /* tmp (gl_gemm_tmp_bytes): xq, rows * ldq bytes (a multiple of 4), then sx. */
    int8_t *xq = tmp;
    float *sx = (float *)(void *)((unsigned char *)tmp + rows * ldq);
#define Q8_QUANT(e) avx2_quantize_row(x + (e) * ldx, K, xq + (e) * ldq, ldq, sx + (e))
#define Q8_RUN(r, n) avx2_gemm_q8((n), xq + (r) * ldq, ldq, sx + (r), p, g0, gc, y + (r) * ldy, ldy)
#define Q8_REST(e) rest(1, x + (e) * ldx, ldx, p, g0, gc, y + (e) * ldy, ldy)
    GL_DOT_RUNS(rows, Q8_QUANT, Q8_RUN, Q8_REST);
#undef Q8_QUANT
#undef Q8_RUN
#undef Q8_REST
}

GL_TARGET_END

#endif /* GL_HAVE_X86_KERNELS */
