/* engine/workspace.c - caller-owned scratch: aligned memory, workspaces
 * and the threads a workspace may use. */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

/* ---- Aligned memory ---------------------------------------------------- */

void *gl_alloc_aligned(size_t bytes)
{
    /* Over-allocate and keep the original pointer just below the block:
     * portable C99, no posix_memalign / _aligned_malloc split. */
    size_t total;
    if (gl_add(bytes, GL_ALIGN + sizeof(void *), &total)) return NULL;
    unsigned char *raw = malloc(total);
    if (!raw) return NULL;
    uintptr_t start = (uintptr_t)(raw + sizeof(void *));
    uintptr_t aligned = (start + (GL_ALIGN - 1)) & ~(uintptr_t)(GL_ALIGN - 1);
    ((void **)aligned)[-1] = raw;
    return (void *)aligned;
}

void gl_free_aligned(void *p)
{
    if (p) free(((void **)p)[-1]);
}

/* ---- Workspaces -------------------------------------------------------- */

grulite_workspace *grulite_workspace_new(void)
{
    return calloc(1, sizeof(grulite_workspace));
}

void grulite_workspace_free(grulite_workspace *ws)
{
    if (!ws) return;
    gl_pool_free(ws->pool);
    gl_free_aligned(ws->buf);
    free(ws);
}

size_t grulite_workspace_bytes(const grulite_workspace *ws)
{
    return ws ? ws->cap * sizeof(float) : 0;
}

/* Scratch beyond this is refused outright rather than attempted: no call
 * that fits a real machine needs a terabyte of scratch.  A 32-bit size_t
 * cannot hold that much: there gl_mul's overflow check is the bound. */
#if SIZE_MAX > 0xffffffffu
#  define GL_MAX_SCRATCH_BYTES ((size_t)1 << 40)
#else
#  define GL_MAX_SCRATCH_BYTES SIZE_MAX
#endif

int gl_workspace_reserve(grulite_workspace *ws, size_t floats)
{
    if (floats <= ws->cap) return GRULITE_OK;
    size_t bytes;
    if (gl_mul(floats, sizeof(float), &bytes) || bytes > GL_MAX_SCRATCH_BYTES)
        return GRULITE_E_TOO_LARGE;
    float *buf = gl_alloc_aligned(bytes);
    if (!buf) return GRULITE_E_NOMEM;
    gl_free_aligned(ws->buf);
    ws->buf = buf;
    ws->cap = floats;
    return GRULITE_OK;
}

/* ---- Threads of a workspace ------------------------------------------- */

static int env_threads(void)
{
    const char *e = getenv("GRULITE_NUM_THREADS");
    if (e && *e) {
        char *end = NULL;
        const long v = strtol(e, &end, 10);
        if (end && *end == '\0' && v >= 1)
            return v > GRULITE_MAX_THREADS ? GRULITE_MAX_THREADS : (int)v;
    }
    return gl_cpu_count();
}

int grulite_workspace_set_threads(grulite_workspace *ws, int threads)
{
    if (!ws || threads < 0 || threads > GRULITE_MAX_THREADS) return GRULITE_E_ARG;
    ws->threads = threads;
    ws->default_threads = 0;         /* read the default again on next use */
    return GRULITE_OK;
}

int grulite_workspace_threads(const grulite_workspace *ws)
{
    if (!ws) return 1;
    if (ws->threads) return ws->threads;
    return ws->default_threads ? ws->default_threads : env_threads();
}

int gl_workspace_threads(grulite_workspace *ws)
{
    if (ws->threads) return ws->threads;
    if (!ws->default_threads) ws->default_threads = env_threads();
    return ws->default_threads;
}

