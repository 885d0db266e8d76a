/* kernels_ref.c - the plain C reference kernels.
 *
 * Readable first: every faster kernel must give the numbers these give.
 * Loops run over contiguous memory with restrict pointers so that the
 * compiler can vectorize them without -ffast-math. */
#include <math.h>
#include <string.h>

#include "internal.h"

void gl_ref_matmul(size_t rows, size_t k, size_t n,
                   const float *x, size_t ldx,
                   const float *w, size_t ldw,
                   const float *bias,
                   float *y, size_t ldy)
{
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * ldx;
        float *GL_RESTRICT yr = y + r * ldy;
        if (bias) memcpy(yr, bias, n * sizeof(float));
        else memset(yr, 0, n * sizeof(float));
        for (size_t i = 0; i < k; i++) {
            const float xv = xr[i];
            const float *GL_RESTRICT wi = w + i * ldw;
            for (size_t j = 0; j < n; j++)
                yr[j] += xv * wi[j];
        }
    }
}

static inline float sigmoidf(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

void gl_ref_gates_after(size_t H, const float *xp, const float *hp, float *h)
{
    const float *xr = xp, *xz = xp + H, *xn = xp + 2 * H;
    const float *hr = hp, *hz = hp + H, *hn = hp + 2 * H;
    for (size_t j = 0; j < H; j++) {
        const float r = sigmoidf(xr[j] + hr[j]);
        const float z = sigmoidf(xz[j] + hz[j]);
        const float n = tanhf(xn[j] + r * hn[j]);
        h[j] = n + z * (h[j] - n);        /* (1 - z) * n + z * h */
    }
}

void gl_ref_gates_rz(size_t H, const float *xp, const float *hp,
                     const float *h, float *rh, float *z)
{
    for (size_t j = 0; j < H; j++) {
        const float r = sigmoidf(xp[j] + hp[j]);
        z[j] = sigmoidf(xp[H + j] + hp[H + j]);
        rh[j] = r * h[j];
    }
}

void gl_ref_gates_n(size_t H, const float *xp_n, const float *hn,
                    const float *z, float *h)
{
    for (size_t j = 0; j < H; j++) {
        const float n = tanhf(xp_n[j] + hn[j]);
        h[j] = n + z[j] * (h[j] - n);
    }
}

void gl_ref_activate(int act, size_t n, float *v)
{
    switch (act) {
    case GRULITE_ACT_RELU:
        for (size_t j = 0; j < n; j++) v[j] = v[j] > 0.0f ? v[j] : 0.0f;
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
