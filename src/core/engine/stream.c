/* engine/stream.c - per-stream state: a batch of sequences advanced a step
 * (or a chunk of steps) at a time, with exactly the numbers of the whole
 * sequence (the same pass, engine/forward.c's gl_run). */
#include <stdlib.h>
#include <string.h>

#include "engine.h"

struct grulite_stream {
    const grulite_model *model;
    int32_t batch;
    size_t state_n;          /* batch * state_size */
    float *state;            /* (batch * state_size) */
    grulite_workspace ws;    /* scratch, grown to the largest chunk */
    int flip;                /* alternates the order of a step's products */
    int32_t sized_steps;     /* the last call's steps, y and head given: ws fits a */
    int sized_outputs;       /* call like it (0: none yet) */
};

int grulite_stream_new(const grulite_model *m, int32_t batch, grulite_stream **out)
{
    if (!out) return GRULITE_E_ARG;
    *out = NULL;
    if (!m || batch < 1) return GRULITE_E_ARG;
    if (m->bidirectional) return GRULITE_E_UNSUPPORTED;
    size_t n, bytes;
    if (gl_mul((size_t)batch, (size_t)m->info.state_size, &n) ||
        gl_mul(n, sizeof(float), &bytes))
        return GRULITE_E_TOO_LARGE;
    grulite_stream *s = calloc(1, sizeof(*s));
    if (!s) return GRULITE_E_NOMEM;
    s->state = gl_alloc_aligned(bytes ? bytes : 1);
    if (!s->state) { free(s); return GRULITE_E_NOMEM; }
    memset(s->state, 0, bytes);
    s->model = m;
    s->batch = batch;
    s->state_n = n;
    *out = s;
    return GRULITE_OK;
}

void grulite_stream_free(grulite_stream *s)
{
    if (!s) return;
    gl_free_aligned(s->state);
    gl_free_aligned(s->ws.buf);
    free(s);
}

int32_t grulite_stream_batch(const grulite_stream *s)
{
    return s ? s->batch : 0;
}

size_t grulite_stream_bytes(const grulite_stream *s)
{
    if (!s) return 0;
    return sizeof(*s) + s->state_n * sizeof(float) + s->ws.cap * sizeof(float);
}

int grulite_stream_step(grulite_stream *s, const float *x, int32_t steps,
                        float *y, float *head)
{
    if (!s || !x) return GRULITE_E_ARG;
    const grulite_model *m = s->model;
    gl_pass p = { s->batch, steps, 1, 1, x, NULL, y, head, s->flip };
    int rc = gl_check_pass(m, &p);
    if (rc) return rc;
    /* A stream is mostly stepped alike call after call: size the scratch
     * only when the call differs from the last one. */
    const int outputs = 1 | (y ? 2 : 0) | (head ? 4 : 0);
    if (steps != s->sized_steps || outputs != s->sized_outputs) {
        size_t need;
        if ((rc = gl_scratch_floats(m, &p, &need))) return rc;
        if ((rc = gl_workspace_reserve(&s->ws, need))) return rc;
        s->sized_steps = steps;
        s->sized_outputs = outputs;
    }
    s->flip ^= 1;
    return gl_run(m, s->ws.buf, &p, s->state);
}

int grulite_stream_reset(grulite_stream *s)
{
    if (!s) return GRULITE_E_ARG;
    memset(s->state, 0, s->state_n * sizeof(float));
    return GRULITE_OK;
}

int grulite_stream_get_state(const grulite_stream *s, float *h, size_t n)
{
    if (!s || !h) return GRULITE_E_ARG;
    if (n != s->state_n) return GRULITE_E_SHAPE;
    memcpy(h, s->state, n * sizeof(float));
    return GRULITE_OK;
}

int grulite_stream_set_state(grulite_stream *s, const float *h, size_t n)
{
    if (!s || !h) return GRULITE_E_ARG;
    if (n != s->state_n) return GRULITE_E_SHAPE;
    memcpy(s->state, h, n * sizeof(float));
    return GRULITE_OK;
}
