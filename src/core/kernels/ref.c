/* kernels/ref.c - the plain C reference kernels ("generic").
 *
 * Readable first: every SIMD kernel must give these numbers (within
 * rounding).  Inner loops run over the 16 contiguous lanes of a panel, so
 * compilers vectorize them for any target without -ffast-math. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../internal.h"

static void ref_gemm(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                     size_t g0, size_t gc, float *y, size_t ldy, void *tmp)
{
    (void)tmp;
    const size_t K = p->K, G = p->G, L = GL_LANES;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        for (size_t b = 0; b < p->nb; b++) {
            for (size_t g = g0; g < g0 + gc; g++) {
                const size_t slot = (b * G + g) * L;
                float acc[GL_LANES];
                /* int8 sums x * q and scales at the end; others start at the bias. */
                for (size_t l = 0; l < L; l++)
                    acc[l] = p->b && !p->scale ? p->b[slot + l] : 0.0f;
                for (size_t k = 0; k < K; k++) {
                    const float xv = xr[k];
                    for (size_t l = 0; l < L; l++)
                        acc[l] += xv * gl_panel_weight(p, gl_panel_index(p, b, k, g, l));
                }
                if (p->scale)
                    for (size_t l = 0; l < L; l++)
                        acc[l] = acc[l] * p->scale[slot + l] + (p->b ? p->b[slot + l] : 0.0f);
                memcpy(yr + slot, acc, sizeof acc);
            }
        }
    }
}

float gl_half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
    if (exp == 0x1F) {                         /* inf / NaN */
        bits = sign | 0x7F800000u | (man << 13);
    } else if (exp != 0) {                     /* normal */
        bits = sign | ((exp + 112) << 23) | (man << 13);
    } else if (man == 0) {                     /* zero */
        bits = sign;
    } else {                                   /* subnormal: normalize */
        exp = 113;
        while (!(man & 0x400u)) { man <<= 1; exp--; }
        bits = sign | (exp << 23) | ((man & 0x3FFu) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t gl_float_to_half(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    const uint32_t ax = x & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u)                     /* inf / NaN (quiet) */
        return (uint16_t)(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0));
    if (ax >= 0x477FF000u)                     /* rounds to >= 65520: inf */
        return (uint16_t)(sign | 0x7C00u);
    if (ax < 0x33000001u)                      /* below half the smallest subnormal */
        return sign;
    const int e = (int)(ax >> 23) - 127;
    uint32_t man = (ax & 0x7FFFFFu) | 0x800000u;
    int shift;                                 /* bits dropped from the 24-bit mantissa */
    uint32_t base;
    if (e < -14) { shift = 13 + (-14 - e); base = 0; }          /* subnormal */
    else { shift = 13; base = (uint32_t)(e + 15) << 10; man &= 0x7FFFFFu; }
    uint32_t q = man >> shift;
    const uint32_t rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1u))) q++;           /* nearest, ties to even */
    return (uint16_t)(sign | (base + q));      /* a carry rolls into the exponent */
}

static inline float sigmoidf(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

static void ref_gates_after(size_t nb, const float *xp, const float *hp, float *h)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xr = xp + 3 * L * b, *xz = xr + L, *xn = xr + 2 * L;
        const float *hr = hp + 3 * L * b, *hz = hr + L, *hn = hr + 2 * L;
        float *hb = h + L * b;
        for (size_t l = 0; l < L; l++) {
            const float r = sigmoidf(xr[l] + hr[l]);
            const float z = sigmoidf(xz[l] + hz[l]);
            const float n = tanhf(xn[l] + r * hn[l]);
            hb[l] = n + z * (hb[l] - n);          /* (1 - z) * n + z * h */
        }
    }
}

static void ref_gates_rz(size_t nb, const float *xp, const float *hp, const float *h,
                         float *rh, float *z)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xr = xp + 3 * L * b, *xz = xr + L;
        const float *hr = hp + 3 * L * b, *hz = hr + L;
        for (size_t l = 0; l < L; l++) {
            const float r = sigmoidf(xr[l] + hr[l]);
            z[L * b + l] = sigmoidf(xz[l] + hz[l]);
            rh[L * b + l] = r * h[L * b + l];
        }
    }
}

static void ref_gates_n(size_t nb, const float *xp, const float *hp, const float *z, float *h)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xn = xp + 3 * L * b + 2 * L, *hn = hp + 3 * L * b + 2 * L;
        for (size_t l = 0; l < L; l++) {
            const float n = tanhf(xn[l] + hn[l]);
            const size_t j = L * b + l;
            h[j] = n + z[j] * (h[j] - n);
        }
    }
}

float gl_gate_act(int act, float alpha, float beta, float x)
{
    switch (act) {
    case GRULITE_ACT_SIGMOID: return sigmoidf(x);
    case GRULITE_ACT_TANH: return tanhf(x);
    case GRULITE_ACT_RELU: return x > 0.0f ? x : (x != x ? x : 0.0f);
    case GRULITE_ACT_AFFINE: return alpha * x + beta;
    case GRULITE_ACT_LEAKY_RELU: return x >= 0.0f ? x : alpha * x;
    case GRULITE_ACT_THRESHOLDED_RELU: return x > alpha ? x : (x != x ? x : 0.0f);
    case GRULITE_ACT_SCALED_TANH: return alpha * tanhf(beta * x);
    case GRULITE_ACT_HARD_SIGMOID: {
        const float v = alpha * x + beta;
        return v != v ? v : v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    case GRULITE_ACT_ELU: return x >= 0.0f ? x : alpha * expm1f(x);
    case GRULITE_ACT_SOFTSIGN: return x / (1.0f + fabsf(x));
    case GRULITE_ACT_SOFTPLUS:      /* log(1 + e^x), without overflow for large x */
        return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
    default: return x;
    }
}

static inline float act_f(const gl_gate_fns *fn, float x)
{
    return gl_gate_act(fn->f, fn->f_alpha, fn->f_beta, gl_clip(x, fn->clip));
}

static inline float act_g(const gl_gate_fns *fn, float x)
{
    return gl_gate_act(fn->g, fn->g_alpha, fn->g_beta, gl_clip(x, fn->clip));
}

static void ref_gates_after_fn(size_t nb, const float *xp, const float *hp, float *h,
                               const gl_gate_fns *fn)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xr = xp + 3 * L * b, *xz = xr + L, *xn = xr + 2 * L;
        const float *hr = hp + 3 * L * b, *hz = hr + L, *hn = hr + 2 * L;
        float *hb = h + L * b;
        for (size_t l = 0; l < L; l++) {
            const float r = act_f(fn, xr[l] + hr[l]);
            const float z = act_f(fn, xz[l] + hz[l]);
            const float n = act_g(fn, xn[l] + r * hn[l]);
            hb[l] = n + z * (hb[l] - n);
        }
    }
}

static void ref_gates_rz_fn(size_t nb, const float *xp, const float *hp, const float *h,
                            float *rh, float *z, const gl_gate_fns *fn)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xr = xp + 3 * L * b, *xz = xr + L;
        const float *hr = hp + 3 * L * b, *hz = hr + L;
        for (size_t l = 0; l < L; l++) {
            const float r = act_f(fn, xr[l] + hr[l]);
            z[L * b + l] = act_f(fn, xz[l] + hz[l]);
            rh[L * b + l] = r * h[L * b + l];
        }
    }
}

static void ref_gates_n_fn(size_t nb, const float *xp, const float *hp, const float *z, float *h,
                           const gl_gate_fns *fn)
{
    const size_t L = GL_LANES;
    for (size_t b = 0; b < nb; b++) {
        const float *xn = xp + 3 * L * b + 2 * L, *hn = hp + 3 * L * b + 2 * L;
        for (size_t l = 0; l < L; l++) {
            const float n = act_g(fn, xn[l] + hn[l]);
            const size_t j = L * b + l;
            h[j] = n + z[j] * (h[j] - n);
        }
    }
}

/* One step of one row: the product, then the gates on a copy of h. */
static void ref_step_after(const gl_step *s)
{
    gl_step_after_parts(&gl_kernels_generic, s);
}

const gl_kernels gl_kernels_generic = {
    "generic", ref_gemm, ref_gates_after, ref_gates_rz, ref_gates_n,
    ref_gates_after_fn, ref_gates_rz_fn, ref_gates_n_fn, ref_step_after
};

void gl_ref_activate(int act, size_t n, float *v)
{
    switch (act) {
    case GRULITE_ACT_RELU:
        for (size_t j = 0; j < n; j++) v[j] = v[j] > 0.0f ? v[j] : (v[j] != v[j] ? v[j] : 0.0f);
        break;
    case GRULITE_ACT_TANH:
        for (size_t j = 0; j < n; j++) v[j] = tanhf(v[j]);
        break;
    case GRULITE_ACT_SIGMOID:
        for (size_t j = 0; j < n; j++) v[j] = sigmoidf(v[j]);
        break;
    case GRULITE_ACT_SOFTMAX: {
        float mx = -INFINITY, sum = 0.0f;
        for (size_t j = 0; j < n; j++) mx = v[j] > mx ? v[j] : mx;
        for (size_t j = 0; j < n; j++) { v[j] = expf(v[j] - mx); sum += v[j]; }
        for (size_t j = 0; j < n; j++) v[j] /= sum;
        break;
    }
    default: /* GRULITE_ACT_NONE */
        break;
    }
}
