/* internal.h - structures and helpers shared by the grulite core.
 * Not installed; nothing here is part of the public API. */
#ifndef GRULITE_INTERNAL_H
#define GRULITE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "grulite.h"

#if (defined(__GNUC__) || defined(__clang__)) && !defined(_WIN32) && !defined(__CYGWIN__)
#  define GL_RESTRICT __restrict__
#  define GL_HIDDEN __attribute__((visibility("hidden")))
#elif defined(__GNUC__) || defined(__clang__)
#  define GL_RESTRICT __restrict__
#  define GL_HIDDEN
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

#include "kernels/kernels.h"

/* Weights of one direction of one layer, packed for the kernels
 * (kernels.h): panels with G = 3 gates r, z, n. */
typedef struct gl_direction {
    gl_panel ih;        /* K = layer input, H = hidden: W_ih, b_ih */
    gl_panel hh;        /* K = H: W_hh, b_hh */
} gl_direction;

typedef struct gl_layer {
    grulite_layer_info cfg;
    gl_direction dir[2];     /* [0] forward, [1] reverse (when D == 2) */
} gl_layer;

typedef struct gl_dense {
    grulite_dense_info cfg;
    gl_panel p;              /* G = 1: nn.Linear weight and bias */
} gl_dense;

struct grulite_model {
    grulite_info info;
    gl_layer layer[GRULITE_MAX_LAYERS];
    gl_dense dense[GRULITE_MAX_DENSE];
    const gl_kernels *k;     /* chosen at load */
    int32_t max_hidden;      /* max H over layers */
    int32_t max_width;       /* max D*H over layers */
    int32_t max_dense;       /* max out_features over head layers (0 if none) */
    int32_t bidirectional;   /* 1 if any layer runs backwards in time (two
                                directions, or reverse): no streaming */
    int32_t quantized;       /* 1 if any layer stores int8 weights */
    const char *metadata;    /* UTF-8, not NUL-terminated */
    size_t metadata_len;
    const unsigned char *image; /* the validated .grl image */
    size_t image_size;
    void *owned;             /* aligned copy we free, or NULL */
    void *mapping;           /* mmap'd region we unmap, or NULL */
    size_t mapping_size;
};

/* ---- Threads (threads.c) -------------------------------------------- */

typedef void (*gl_task_fn)(void *ctx, int task);
typedef struct gl_pool gl_pool;

GL_HIDDEN gl_pool *gl_pool_new(int size);          /* size threads, caller included */
GL_HIDDEN void gl_pool_free(gl_pool *p);
GL_HIDDEN int gl_pool_size(const gl_pool *p);
/* Runs fn(ctx, i) for i < tasks, task 0 on the calling thread; returns
 * when all are done. */
GL_HIDDEN void gl_pool_run(gl_pool *p, int tasks, gl_task_fn fn, void *ctx);
GL_HIDDEN int gl_cpu_count(void);

/* Whether tasks 0 .. tasks-1 of one gl_pool_run on p run at the same time,
 * each on its own thread, so that they may wait for each other
 * (gl_barrier_wait), and whether that is worth trying now: after a run
 * whose barrier had to park a thread (more threads than cores, e.g.
 * several callers each with a pool), the next GL_SPIN_BACKOFF asks say no.
 * Needs pthreads and the compiler's atomics. */
GL_HIDDEN int gl_pool_may_spin(gl_pool *p, int tasks);

/* A barrier for the concurrent tasks 0 .. parties-1 of one run on `pool`:
 * each party counts its crossings in a flag of its own cache line and
 * waits for the others' flags to catch up, spinning briefly (a crossing
 * costs about one cache-line transfer between cores), then parking on the
 * pool's condition variable.  gl_barrier_init before the run,
 * gl_barrier_done after it (it reports parking to the pool). */
#define GL_BARRIER_MAX 2
typedef struct gl_barrier {
    char pad0[64];
    struct { unsigned long crossings; int woke; char pad[116]; } flag[GL_BARRIER_MAX];
    int parties;
    int parks;               /* parks so far in this run (atomic) */
    gl_pool *pool;
} gl_barrier;
GL_HIDDEN void gl_barrier_init(gl_barrier *b, gl_pool *pool, int parties);
GL_HIDDEN void gl_barrier_wait(gl_barrier *b, int party);
GL_HIDDEN void gl_barrier_done(gl_barrier *b);

/* ---- Scratch -------------------------------------------------------- */

struct grulite_workspace {
    float *buf;              /* GL_ALIGN-aligned */
    size_t cap;              /* floats */
    int threads;             /* requested; 0 = default */
    gl_pool *pool;           /* created on first threaded call */
};

/* Makes ws hold at least `floats` floats; returns 0 or GRULITE_E_NOMEM. */
GL_HIDDEN int gl_workspace_reserve(grulite_workspace *ws, size_t floats);

/* Aligned allocation helpers (free with gl_free_aligned). */
GL_HIDDEN void *gl_alloc_aligned(size_t bytes);
GL_HIDDEN void gl_free_aligned(void *p);

/* ---- The engine (engine.c) ------------------------------------------ */

/* One pass over T steps for B rows, shared by grulite_forward and the
 * streams so that both give the same numbers.  `state` (B*state_size, h0's
 * layout) is read as the initial state and overwritten with the final one.
 * y / head may be NULL. */
typedef struct gl_pass {
    int32_t batch, steps, batch_first, head_all_steps;
    const float *x;
    const int32_t *lengths;   /* NULL: every row runs T steps */
    float *y;
    float *head;
    int hh_first;             /* T = 1: recurrent product before the input one */
} gl_pass;

/* Floats of scratch gl_run needs for this pass. */
GL_HIDDEN int gl_scratch_floats(const grulite_model *m, const gl_pass *p, size_t *out);

/* Runs the pass on the calling thread; returns 0 or a negative code. */
GL_HIDDEN int gl_run(const grulite_model *m, float *scratch, const gl_pass *p,
                     float *state);

/* In-place activation of one row of n floats (kernels/ref.c). */
GL_HIDDEN void gl_ref_activate(int act, size_t n, float *v);

/* ---- Checksum -------------------------------------------------------- */

/* CRC-32 (IEEE 802.3, the zlib polynomial), continuing from `crc`. */
GL_HIDDEN uint32_t gl_crc32(uint32_t crc, const void *data, size_t len);

#endif /* GRULITE_INTERNAL_H */
