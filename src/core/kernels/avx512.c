/* kernels/avx512.c - AVX-512F kernels: one zmm register per 16-lane panel
 * vector.  Compiled for any x86-64 target (function-level target
 * attributes); used only when the CPU reports AVX-512F (dispatch.c). */
#include <stdint.h>

#include "../internal.h"

#if defined(GL_HAVE_X86_KERNELS)

#if defined(__clang__)
#  pragma clang attribute push(__attribute__((target("avx512f,avx2,fma"))), apply_to = function)
#else
#  pragma GCC push_options
#  pragma GCC target("avx512f,avx2,fma")
#endif

#include <immintrin.h>

#define GL_NAME avx512
#define GL_PREFIX avx512_
#define GL_V __m512
#define GL_V_LOAD(p) _mm512_loadu_ps(p)
#define GL_V_STORE(p, v) _mm512_storeu_ps((p), (v))
#define GL_V_ZERO() _mm512_setzero_ps()
#define GL_V_SET1(f) _mm512_set1_ps(f)
#define GL_V_ADD(a, b) _mm512_add_ps((a), (b))
#define GL_V_SUB(a, b) _mm512_sub_ps((a), (b))
#define GL_V_MUL(a, b) _mm512_mul_ps((a), (b))
#define GL_V_FMA(a, b, c) _mm512_fmadd_ps((a), (b), (c))
#define GL_V_FNMA(a, b, c) _mm512_fnmadd_ps((a), (b), (c))
#define GL_V_RCP(a) _mm512_rcp14_ps(a)
#define GL_V_EXP(v) avx512_exp(v)
#define GL_V_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define GL_VQ __m512i
#define GL_VQ_LOAD(p) _mm512_xor_si512(_mm512_loadu_si512((const void *)(p)), \
                                       _mm512_set1_epi32((int)0x80808080u))
#define GL_VQ_GET(raw, kk) \
    _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32((raw), \
                                         _mm512_set1_epi32(24 - 8 * (kk))), 24))
#define GL_MR 8
#define GL_NV_MR 3
#define GL_NV1 8

/* e^x: x = n ln2 + r, |r| <= ln2/2, degree-5 polynomial (Cephes expf),
 * then scalef by 2^n.  The clamps keep NaN (vminps/vmaxps return their
 * second operand when one is NaN). */
static inline __m512 avx512_exp(__m512 x)
{
    x = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), x);
    x = _mm512_max_ps(_mm512_set1_ps(-88.3762626647949f), x);
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

#include "simd.h"

#if defined(__clang__)
#  pragma clang attribute pop
#else
#  pragma GCC pop_options
#endif

#endif /* GL_HAVE_X86_KERNELS */
