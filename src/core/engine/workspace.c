/* engine/workspace.c - caller-owned scratch: aligned memory, workspaces
 * (grown by the library, or fixed in memory the caller gives) and the
 * threads a workspace may use. */
#include <string.h>

#include "engine.h"

#if defined(GL_HOSTED)
#  include <stdlib.h>

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

#endif /* GL_HOSTED */

void grulite_workspace_free(grulite_workspace *ws)
{
    if (!ws || ws->fixed) return;         /* in the caller's memory: nothing to free */
#if defined(GL_HOSTED)
    gl_pool_free(ws->pool);
    gl_free_aligned(ws->buf);
    free(ws);
#endif
}

/* ---- Workspaces in the caller's memory ----------------------------------- */

/* Bytes before the scratch: the struct, rounded to GL_ALIGN. */
#define GL_WS_HEAD ((sizeof(grulite_workspace) + GL_ALIGN - 1) & ~(size_t)(GL_ALIGN - 1))

int grulite_workspace_init(void *mem, size_t mem_size, grulite_workspace **out)
{
    if (!out) return GRULITE_E_ARG;
    *out = NULL;
    if (!mem) return GRULITE_E_ARG;
    unsigned char *at = gl_align_ptr(mem);
    const size_t skip = (size_t)(at - (unsigned char *)mem);
    if (mem_size < skip || mem_size - skip < GL_WS_HEAD) return GRULITE_E_BUFFER;
    grulite_workspace *ws = (grulite_workspace *)(void *)at;
    memset(ws, 0, sizeof(*ws));
    ws->buf = (float *)(void *)(at + GL_WS_HEAD);
    ws->cap = (mem_size - skip - GL_WS_HEAD) / sizeof(float);
    ws->threads = 1;
    ws->fixed = 1;
    *out = ws;
    return GRULITE_OK;
}

size_t gl_workspace_mem_bytes(size_t floats)
{
    size_t bytes;
    if (gl_mul(floats, sizeof(float), &bytes) || bytes > GL_MAX_SCRATCH_BYTES ||
        gl_add(bytes, GL_WS_HEAD + GL_ALIGN - 1, &bytes))
        return 0;
    return bytes;
}

size_t grulite_workspace_bytes(const grulite_workspace *ws)
{
    return ws ? ws->cap * sizeof(float) : 0;
}


int gl_workspace_reserve(grulite_workspace *ws, size_t floats)
{
    if (floats <= ws->cap) return GRULITE_OK;
    if (ws->fixed) return GRULITE_E_BUFFER;
#if defined(GL_HOSTED)
    size_t bytes;
    if (gl_mul(floats, sizeof(float), &bytes) || bytes > GL_MAX_SCRATCH_BYTES)
        return GRULITE_E_TOO_LARGE;
    float *buf = gl_alloc_aligned(bytes);
    if (!buf) return GRULITE_E_NOMEM;
    gl_free_aligned(ws->buf);
    ws->buf = buf;
    ws->cap = floats;
    return GRULITE_OK;
#else
    return GRULITE_E_BUFFER;          /* unreachable: every workspace is fixed */
#endif
}

/* ---- Threads of a workspace ------------------------------------------- */

static int env_threads(void)
{
#if !defined(GL_HOSTED)
    return 1;
#else
    const char *e = getenv("GRULITE_NUM_THREADS");
    if (e && *e) {
        char *end = NULL;
        const long v = strtol(e, &end, 10);
        if (end && *end == '\0' && v >= 1)
            return v > GRULITE_MAX_THREADS ? GRULITE_MAX_THREADS : (int)v;
    }
    return gl_cpu_count();
#endif
}

int grulite_workspace_set_threads(grulite_workspace *ws, int threads)
{
    if (!ws || threads < 0 || threads > GRULITE_MAX_THREADS) return GRULITE_E_ARG;
    if (ws->fixed) return threads <= 1 ? GRULITE_OK : GRULITE_E_UNSUPPORTED;
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

