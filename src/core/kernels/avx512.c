/* kernels/avx512.c - AVX-512F kernels: one zmm register per 16-lane panel
 * vector.  Compiled for any x86-64 target (function-level target
 * attributes); used only when the CPU reports AVX-512F (dispatch.c).
 * int8 products run in integers through AVX2's (kernels/avx2.c), as fast
 * as the float path is not and with avx512vnni's numbers. */
#include <stdint.h>

#include "../internal.h"

GL_KERNEL_OPTIMIZE

#if defined(GL_HAVE_X86_KERNELS)

GL_TARGET_BEGIN("avx512f,avx2,fma")

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
#define GL_V_MIN(a, b) _mm512_min_ps((a), (b))     /* NaN in b out (vminps) */
#define GL_V_MAX(a, b) _mm512_max_ps((a), (b))
#define GL_V_ROUND(a) _mm512_roundscale_ps((a), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
#define GL_V_LDEXP(a, n) _mm512_scalef_ps((a), (n))  /* any n; results below 2^-126 too */
#define GL_EXP_MIN (-88.3762626647949f)
#define GL_V_LOAD_F16(p) _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(p)))
#define GL_V_LOAD_BF16(p) _mm512_castsi512_ps(_mm512_slli_epi32(                         \
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(const void *)(p))), 16))
#define GL_VQ __m512i
#define GL_VQ_LOAD(p) _mm512_xor_si512(_mm512_loadu_si512((const void *)(p)), \
                                       _mm512_set1_epi32((int)0x80808080u))
#define GL_VQ_GET(raw, kk) \
    _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_sllv_epi32((raw), \
                                         _mm512_set1_epi32(24 - 8 * (kk))), 24))
#define GL_MR 8
#define GL_NV_MR 3
#define GL_NV1 8

#define GL_GEMM_I8_DOT gl_avx2_gemm_i8_dot
#include "simd.h"

GL_TARGET_END

#endif /* GL_HAVE_X86_KERNELS */
