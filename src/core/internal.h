/* internal.h - helpers every part of the grulite core shares: compiler
 * macros, checked size arithmetic, aligned memory, threads, the checksum.
 * The model's structures are in model.h, the kernel interface in
 * kernels/kernels.h, the engine's in engine/engine.h.  Not installed;
 * nothing here is part of the public API. */
#ifndef GRULITE_INTERNAL_H
#define GRULITE_INTERNAL_H

#include <stdarg.h>
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

/* GRULITE_NO_OS: the build for no operating system (docs/edge.md): no
 * threads, mmap, stdio, environment or malloc.  Models, workspaces and
 * streams then live in memory the caller provides (grulite_*_mem_size).
 * GL_HOSTED marks what only the hosted build has. */
#if !defined(GRULITE_NO_OS)
#  define GL_HOSTED 1
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

#include "kernels/kernels.h"

/* ---- Messages (message.c: the library's own small printf, no stdio) ---- */

#if defined(__GNUC__)
#  define GL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#  define GL_PRINTF(f, a)
#endif

/* snprintf for the conversions the library writes (%d %i %u %x %s %c %p %g
 * %%, with l / ll / z, a width with 0 or -, a precision): always
 * NUL-terminated when cap > 0; returns the length the whole text has.
 * Nothing else (%f, %e, h, +, #): tests/c/run.sh checks every format in
 * src/core.  %g is snprintf's for the float values messages print; for a
 * double within an ulp of a rounding tie its last digit may differ. */
GL_HIDDEN int gl_vformat(char *buf, size_t cap, const char *fmt, va_list ap);
GL_HIDDEN int gl_format(char *buf, size_t cap, const char *fmt, ...) GL_PRINTF(3, 4);

/* Formats a detail line into msg (when not NULL) and returns code: how
 * every check that can explain itself fails. */
GL_HIDDEN int gl_fail(char *msg, size_t msg_size, int code, const char *fmt, ...) GL_PRINTF(4, 5);

/* ---- Threads (engine/threads.c) -------------------------------------------- */

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
    int default_threads;     /* the default, read on first use (0: not yet): reading
                                it costs a file read (online CPUs) per call */
    gl_pool *pool;           /* created on first threaded call */
    int fixed;               /* 1: buf is the caller's memory (grulite_workspace_init):
                                it never grows, and one thread runs */
};

/* The threads a call with ws may use (grulite_workspace_threads, with the
 * default read once). */
GL_HIDDEN int gl_workspace_threads(grulite_workspace *ws);

/* Scratch beyond this is refused outright rather than attempted: no call
 * that fits a real machine needs a terabyte of scratch.  A 32-bit size_t
 * cannot hold that much: there gl_mul's overflow check is the bound. */
#if SIZE_MAX > 0xffffffffu
#  define GL_MAX_SCRATCH_BYTES ((size_t)1 << 40)
#else
#  define GL_MAX_SCRATCH_BYTES SIZE_MAX
#endif

/* Bytes grulite_workspace_init needs for `floats` floats of scratch (0: too large). */
GL_HIDDEN size_t gl_workspace_mem_bytes(size_t floats);

/* Makes ws hold at least `floats` floats; returns 0, GRULITE_E_NOMEM, or
 * (fixed) GRULITE_E_BUFFER when its memory is too small. */
GL_HIDDEN int gl_workspace_reserve(grulite_workspace *ws, size_t floats);

/* Aligned allocation helpers (free with gl_free_aligned); hosted builds. */
GL_HIDDEN void *gl_alloc_aligned(size_t bytes);
GL_HIDDEN void gl_free_aligned(void *p);

/* p rounded up to GL_ALIGN: where caller memory's blocks start. */
static inline unsigned char *gl_align_ptr(void *p)
{
    return (unsigned char *)p + (GL_ALIGN - (uintptr_t)p % GL_ALIGN) % GL_ALIGN;
}

/* ---- Checksum (format/crc32.c) ------------------------------------------------- */

/* CRC-32 (IEEE 802.3, the zlib polynomial), continuing from `crc`. */
GL_HIDDEN uint32_t gl_crc32(uint32_t crc, const void *data, size_t len);

#endif /* GRULITE_INTERNAL_H */
