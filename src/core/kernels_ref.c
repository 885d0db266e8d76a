/* kernels_ref.c - the plain C reference kernels ("generic").
 *
 * Readable first: every SIMD kernel must give these numbers (within
 * rounding).  Inner loops run over the 16 contiguous lanes of a panel, so
 * compilers vectorize them for any target without -ffast-math. */
#include <math.h>
#include <string.h>

#include "internal.h"

static void ref_gemm(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                     size_t g0, size_t gc, float *y, size_t ldy)
{
    const size_t K = p->K, G = p->G, L = GL_LANES;
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *yr = y + r * ldy;
        for (size_t b = 0; b < p->nb; b++) {
            const float *wb = p->w + b * K * G * L;       /* block b: (K, G, 16) */
            for (size_t g = g0; g < g0 + gc; g++) {
                const size_t slot = (b * G + g) * L;
                float acc[GL_LANES];
                for (size_t l = 0; l < L; l++) acc[l] = p->b ? p->b[slot + l] : 0.0f;
                for (size_t k = 0; k < K; k++) {
                    const float xv = xr[k];
                    const float *GL_RESTRICT w = wb + (k * G + g) * L;
                    for (size_t l = 0; l < L; l++) acc[l] += xv * w[l];
                }
                memcpy(yr + slot, acc, sizeof acc);
            }
        }
    }
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

const gl_kernels gl_kernels_generic = {
    "generic", ref_gemm, ref_gates_after, ref_gates_rz, ref_gates_n
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
