/* kernels/neon.c - NEON kernels: a 16-lane panel vector is four
 * float32x4_t registers.  NEON (with FMA, float16 conversion and
 * round-to-nearest) is part of every aarch64 CPU, so this set is chosen
 * without a runtime check (dispatch.c).  32-bit ARM builds it when the
 * compiler targets NEON with VFPv4 and IEEE halves (kernels.h) and runs it
 * where the CPU reports them; there it rounds without the Armv8 VRINTN and
 * has half the registers.  Other targets compile nothing here. */
#include <stdint.h>

#include "../internal.h"

GL_KERNEL_OPTIMIZE

#if defined(GL_HAVE_NEON_KERNELS)

#include <arm_neon.h>

typedef struct { float32x4_t a, b, c, d; } gl_v16;

static inline gl_v16 v16_load(const float *p)
{
    gl_v16 v = { vld1q_f32(p), vld1q_f32(p + 4), vld1q_f32(p + 8), vld1q_f32(p + 12) };
    return v;
}

static inline void v16_store(float *p, gl_v16 v)
{
    vst1q_f32(p, v.a);
    vst1q_f32(p + 4, v.b);
    vst1q_f32(p + 8, v.c);
    vst1q_f32(p + 12, v.d);
}

static inline gl_v16 v16_set1(float f)
{
    const float32x4_t q = vdupq_n_f32(f);
    gl_v16 v = { q, q, q, q };
    return v;
}

#define GL_V16_BINOP(name, op)                                              \
static inline gl_v16 v16_##name(gl_v16 x, gl_v16 y) \
{                                                                           \
    gl_v16 v = { op(x.a, y.a), op(x.b, y.b), op(x.c, y.c), op(x.d, y.d) };  \
    return v;                                                               \
}
GL_V16_BINOP(add, vaddq_f32)
GL_V16_BINOP(sub, vsubq_f32)
GL_V16_BINOP(mul, vmulq_f32)

/* x*y + z (vfmaq_f32(acc, p, q) is acc + p*q, one rounding). */
static inline gl_v16 v16_fma(gl_v16 x, gl_v16 y, gl_v16 z)
{
    gl_v16 v = { vfmaq_f32(z.a, x.a, y.a), vfmaq_f32(z.b, x.b, y.b),
                 vfmaq_f32(z.c, x.c, y.c), vfmaq_f32(z.d, x.d, y.d) };
    return v;
}

/* z - x*y (vfmsq_f32(acc, p, q) is acc - p*q, one rounding). */
static inline gl_v16 v16_fnma(gl_v16 x, gl_v16 y, gl_v16 z)
{
    gl_v16 v = { vfmsq_f32(z.a, x.a, y.a), vfmsq_f32(z.b, x.b, y.b),
                 vfmsq_f32(z.c, x.c, y.c), vfmsq_f32(z.d, x.d, y.d) };
    return v;
}

/* 1/x: the 8-bit estimate and one Newton step, r * (2 - x*r) (vrecpsq_f32),
 * about 16 bits; the template refines it once more (recip in
 * kernels/simd.h).  Only called with x >= 1, finite or NaN. */
static inline float32x4_t neon_rcp4(float32x4_t x)
{
    const float32x4_t r = vrecpeq_f32(x);
    return vmulq_f32(r, vrecpsq_f32(x, r));
}

static inline gl_v16 v16_rcp(gl_v16 x)
{
    gl_v16 v = { neon_rcp4(x.a), neon_rcp4(x.b), neon_rcp4(x.c), neon_rcp4(x.d) };
    return v;
}

GL_V16_BINOP(min, vminq_f32)      /* NaN if either is NaN */
GL_V16_BINOP(max, vmaxq_f32)

/* To the nearest integer, ties to even (FRINTN).  32-bit NEON has no
 * round-to-integral (VRINTN is Armv8): adding and then subtracting
 * 1.5 * 2^23 rounds |x| <= 2^22, in NEON's fixed round-to-nearest-even
 * mode there; GL_V_ROUND only sees |x| < 2^8, or a NaN, which stays NaN. */
static inline float32x4_t neon_round4(float32x4_t x)
{
#if defined(__aarch64__)
    return vrndnq_f32(x);
#else
    const float32x4_t magic = vdupq_n_f32(12582912.0f);     /* 1.5 * 2^23 */
    return vsubq_f32(vaddq_f32(x, magic), magic);
#endif
}

static inline gl_v16 v16_round(gl_v16 x)
{
    gl_v16 v = { neon_round4(x.a), neon_round4(x.b), neon_round4(x.c), neon_round4(x.d) };
    return v;
}

/* x * 2^n, 2^n built in the exponent field: n in [-126, 128] (128 gives
 * +inf).  n is integral (GL_V_LDEXP's contract), so the conversion's
 * truncation is exact; a NaN converts to 0 and only scales a NaN. */
static inline float32x4_t neon_ldexp4(float32x4_t x, float32x4_t n)
{
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    return vmulq_f32(x, vreinterpretq_f32_s32(e));
}

static inline gl_v16 v16_ldexp(gl_v16 x, gl_v16 n)
{
    gl_v16 v = { neon_ldexp4(x.a, n.a), neon_ldexp4(x.b, n.b), neon_ldexp4(x.c, n.c),
                 neon_ldexp4(x.d, n.d) };
    return v;
}

/* 4 IEEE halves to floats (FCVTL; VCVT.F32.F16 on 32-bit ARM). */
static inline float32x4_t neon_load_f16x4(const uint16_t *p)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

static inline gl_v16 v16_load_f16(const uint16_t *p)
{
    gl_v16 v = { neon_load_f16x4(p), neon_load_f16x4(p + 4), neon_load_f16x4(p + 8),
                 neon_load_f16x4(p + 12) };
    return v;
}

/* 4 bfloat16s to floats: widened, shifted into the top half (SHLL). */
static inline float32x4_t neon_load_bf16x4(const uint16_t *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

static inline gl_v16 v16_load_bf16(const uint16_t *p)
{
    gl_v16 v = { neon_load_bf16x4(p), neon_load_bf16x4(p + 4), neon_load_bf16x4(p + 8),
                 neon_load_bf16x4(p + 12) };
    return v;
}

/* 64 bytes of an int8 panel: lanes 0-3, 4-7, 8-11, 12-15, 4 inputs each
 * (input kk in bits 8kk..8kk+7 of the lane's int32), made signed
 * (byte ^ 0x80). */
typedef struct { int32x4_t a, b, c, d; } gl_vq;

static inline int32x4_t neon_vq_load4(const uint8_t *p)
{
    return vreinterpretq_s32_u8(veorq_u8(vld1q_u8(p), vdupq_n_u8(0x80)));
}

static inline gl_vq vq_load(const uint8_t *p)
{
    gl_vq v = { neon_vq_load4(p), neon_vq_load4(p + 16), neon_vq_load4(p + 32),
                neon_vq_load4(p + 48) };
    return v;
}

/* Input kk of each lane: shift its byte to the top, then arithmetic shift
 * right by 24 (sign extension), then convert.  kk is a run-time value, so
 * the left shift takes a vector count (vshlq_s32). */
static inline float32x4_t neon_vq_get4(int32x4_t raw, int32x4_t sh)
{
    return vcvtq_f32_s32(vshrq_n_s32(vshlq_s32(raw, sh), 24));
}

static inline gl_v16 vq_get(gl_vq raw, int kk)
{
    const int32x4_t sh = vdupq_n_s32(24 - 8 * kk);
    gl_v16 v = { neon_vq_get4(raw.a, sh), neon_vq_get4(raw.b, sh), neon_vq_get4(raw.c, sh),
                 neon_vq_get4(raw.d, sh) };
    return v;
}

#define GL_NAME neon
#define GL_PREFIX neon_
#define GL_EXP_MIN (-87.3365447505531f)          /* n >= -126: 2^n stays normal */
#if defined(__aarch64__)
/* 32 registers: 2 rows x 2 vectors = 16 accumulators + 8 weights + the
 * broadcast x; one row x 4 vectors = 16 accumulators, weights streamed.
 * (With GCC 12, 2x2 keeps the accumulators in registers better than 4x1.) */
#  define GL_MR 2
#  define GL_NV_MR 2
#  define GL_NV1 4
#else
/* 16 registers (32-bit ARM): half of each, as AVX2's 16 ymm registers:
 * 2 rows x 1 vector = 8 accumulators + 4 weights + the broadcast x; one
 * row x 2 vectors = 8 accumulators, weights streamed. */
#  define GL_MR 2
#  define GL_NV_MR 1
#  define GL_NV1 2
#endif

#include "v16.h"
#include "simd.h"

#endif /* GL_HAVE_NEON_KERNELS */
