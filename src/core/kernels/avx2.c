/* kernels/avx2.c - AVX2 + FMA kernels: a 16-lane panel vector is a pair of
 * ymm registers.  Compiled for any x86-64 target (function-level target
 * attributes); used only when the CPU reports AVX2, FMA and F16C
 * (dispatch.c). */
#include <stdint.h>

#include "../internal.h"

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
#define GL_NV1 4

#include "v16.h"
#include "simd.h"

GL_TARGET_END

#endif /* GL_HAVE_X86_KERNELS */
