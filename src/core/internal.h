/* internal.h - structures and helpers shared by the grulite core.
 * Not installed; nothing here is part of the public API. */
#ifndef GRULITE_INTERNAL_H
#define GRULITE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "grulite.h"

#if defined(__GNUC__) || defined(__clang__)
#  define GL_RESTRICT __restrict__
#  define GL_HIDDEN __attribute__((visibility("hidden")))
#elif defined(_MSC_VER)
#  define GL_RESTRICT __restrict
#  define GL_HIDDEN
#else
#  define GL_RESTRICT
#  define GL_HIDDEN
#endif

#define GL_ALIGN 64  /* alignment of every tensor in an image and of scratch */

/* ---- Checked size arithmetic --------------------------------------- */

/* *out = a * b; returns 0, or -1 on overflow. */
static inline int gl_mul(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* *out = a + b; returns 0, or -1 on overflow. */
static inline int gl_add(size_t a, size_t b, size_t *out)
{
    if (b > SIZE_MAX - a) return -1;
    *out = a + b;
    return 0;
}

/* *out = a * b * c; returns 0, or -1 on overflow. */
static inline int gl_mul3(size_t a, size_t b, size_t c, size_t *out)
{
    size_t ab;
    if (gl_mul(a, b, &ab)) return -1;
    return gl_mul(ab, c, out);
}

/* x rounded up to a multiple of GL_ALIGN; returns 0, or -1 on overflow. */
static inline int gl_align_up(size_t x, size_t *out)
{
    if (x > SIZE_MAX - (GL_ALIGN - 1)) return -1;
    *out = (x + (GL_ALIGN - 1)) & ~(size_t)(GL_ALIGN - 1);
    return 0;
}

/* ---- The loaded model (read-only after load) ------------------------ */

/* Weights of one direction of one layer, in the layout the kernels read.
 * Weight matrices are stored transposed (input-major), so the product with
 * a vector is a sequence of contiguous, vectorizable row updates. */
typedef struct gl_direction {
    const float *w_ih;  /* (I, 3*H), gates r,z,n along columns: W_ih^T */
    const float *w_hh;  /* (H, 3*H), gates r,z,n along columns: W_hh^T */
    const float *b_ih;  /* (3*H), or NULL when the layer has no bias */
    const float *b_hh;  /* (3*H), or NULL when the layer has no bias */
} gl_direction;

typedef struct gl_layer {
    grulite_layer_info cfg;
    gl_direction dir[2];     /* [0] forward, [1] reverse (when D == 2) */
} gl_layer;

typedef struct gl_dense {
    grulite_dense_info cfg;
    const float *w;          /* (in_features, out_features): nn.Linear weight^T */
    const float *b;          /* (out_features), or NULL */
} gl_dense;

struct grulite_model {
    grulite_info info;
    gl_layer layer[GRULITE_MAX_LAYERS];
    gl_dense dense[GRULITE_MAX_DENSE];
    int32_t max_hidden;      /* max H over layers */
    int32_t max_width;       /* max D*H over layers */
    int32_t max_dense;       /* max out_features over head layers (0 if none) */
    int32_t bidirectional;   /* 1 if any layer has two directions */
    const char *metadata;    /* UTF-8, not NUL-terminated */
    size_t metadata_len;
    const unsigned char *image; /* the validated .grl image */
    size_t image_size;
    void *owned;             /* aligned copy we free, or NULL */
    void *mapping;           /* mmap'd region we unmap, or NULL */
    size_t mapping_size;
};

/* ---- Scratch -------------------------------------------------------- */

struct grulite_workspace {
    float *buf;              /* GL_ALIGN-aligned */
    size_t cap;              /* floats */
};

/* Makes ws hold at least `floats` floats; returns 0 or GRULITE_E_NOMEM. */
GL_HIDDEN int gl_workspace_reserve(grulite_workspace *ws, size_t floats);

/* Aligned allocation helpers (free with gl_free_aligned). */
GL_HIDDEN void *gl_alloc_aligned(size_t bytes);
GL_HIDDEN void gl_free_aligned(void *p);

/* ---- The engine ----------------------------------------------------- */

/* One pass over T steps for B rows, shared by grulite_forward and the
 * streams so that both give the same numbers.  `state` (B*state_size, h0's
 * layout) is read as the initial state and overwritten with the final one.
 * y / head may be NULL.  Returns 0 or a negative code. */
typedef struct gl_pass {
    int32_t batch, steps, batch_first, head_all_steps;
    const float *x;
    const int32_t *lengths;   /* NULL: every row runs T steps */
    float *y;                 /* required when the model has one layer */
    float *head;
} gl_pass;

/* Floats of scratch gl_run needs for this pass. */
GL_HIDDEN int gl_scratch_floats(const grulite_model *m, const gl_pass *p, size_t *out);

GL_HIDDEN int gl_run(const grulite_model *m, float *scratch, const gl_pass *p,
                     float *state);

/* ---- Reference kernels (kernels_ref.c) ------------------------------ */

/* y[r, j] = bias[j] + sum_k x[r, k] * w[k, j] for r < rows, j < n.
 * x is (rows, k) with row stride ldx; w is (k, *) with row stride ldw;
 * y is (rows, n) with row stride ldy; bias may be NULL. */
GL_HIDDEN void gl_ref_matmul(size_t rows, size_t k, size_t n,
                             const float *x, size_t ldx,
                             const float *w, size_t ldw,
                             const float *bias,
                             float *y, size_t ldy);

/* GRU update of one row, PyTorch variant (reset after the recurrent
 * product): xp = W_ih x + b_ih (3H), hp = W_hh h + b_hh (3H); h updated. */
GL_HIDDEN void gl_ref_gates_after(size_t H, const float *xp, const float *hp,
                                  float *h);

/* First half of the reset-before update: r, z from xp and hp (2H used),
 * writes rh = r * h (H) and z (H). */
GL_HIDDEN void gl_ref_gates_rz(size_t H, const float *xp, const float *hp,
                               const float *h, float *rh, float *z);

/* Second half: hn = W_hn (r*h) + b_hn (H); n = tanh(xp_n + hn); h updated. */
GL_HIDDEN void gl_ref_gates_n(size_t H, const float *xp_n, const float *hn,
                              const float *z, float *h);

/* In-place activation of one row of n floats. */
GL_HIDDEN void gl_ref_activate(int act, size_t n, float *v);

/* ---- Checksum -------------------------------------------------------- */

/* CRC-32 (IEEE 802.3, the zlib polynomial), continuing from `crc`. */
GL_HIDDEN uint32_t gl_crc32(uint32_t crc, const void *data, size_t len);

#endif /* GRULITE_INTERNAL_H */
