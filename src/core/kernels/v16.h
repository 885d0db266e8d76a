/* kernels/v16.h - kernels/simd.h's vector operations for kernel sets whose
 * 16-lane vector is a struct of narrower registers (gl_v16: two ymm for
 * AVX2, four q registers for NEON).  The including file defines gl_v16,
 * gl_vq and the functions v16_load ... vq_get, and GL_NAME, GL_PREFIX,
 * GL_EXP_MIN and the micro-kernel sizes; this maps simd.h's names onto
 * them. */
#define GL_V gl_v16
#define GL_V_LOAD(p) v16_load(p)
#define GL_V_STORE(p, v) v16_store((p), (v))
#define GL_V_ZERO() v16_set1(0.0f)
#define GL_V_SET1(f) v16_set1(f)
#define GL_V_ADD(a, b) v16_add((a), (b))
#define GL_V_SUB(a, b) v16_sub((a), (b))
#define GL_V_MUL(a, b) v16_mul((a), (b))
#define GL_V_FMA(a, b, c) v16_fma((a), (b), (c))
#define GL_V_FNMA(a, b, c) v16_fnma((a), (b), (c))
#define GL_V_RCP(a) v16_rcp(a)
#define GL_V_MIN(a, b) v16_min((a), (b))
#define GL_V_MAX(a, b) v16_max((a), (b))
#define GL_V_ROUND(a) v16_round(a)
#define GL_V_LDEXP(a, n) v16_ldexp((a), (n))
#define GL_V_LOAD_F16(p) v16_load_f16(p)
#define GL_V_LOAD_BF16(p) v16_load_bf16(p)
#define GL_VQ gl_vq
#define GL_VQ_LOAD(p) vq_load(p)
#define GL_VQ_GET(raw, kk) vq_get((raw), (kk))
