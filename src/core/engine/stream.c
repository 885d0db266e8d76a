/* engine/stream.c - per-stream state: a batch of sequences advanced a step
 * (or a chunk of steps) at a time, with exactly the numbers of the whole
 * sequence (the same pass, engine/forward.c's gl_run).  Some rows may be
 * stepped while the others wait (grulite_stream_run with rows): their
 * states are gathered into a batch of their own, stepped, and put back. */
#include <string.h>

#include "engine.h"

#if defined(GL_HOSTED)
#  include <stdlib.h>
#endif

struct grulite_stream {
    const grulite_model *model;
    int32_t batch;
    size_t state_n;          /* batch * state_size */
    float *state;            /* (batch * state_size) */
    float *sub;              /* the listed rows' states (batch * state_size), or NULL
                                until rows are first listed */
    unsigned char *seen;     /* batch flags: checking rows are distinct */
    grulite_workspace ws;    /* scratch, grown to the largest chunk */
    int flip;                /* alternates the order of a step's products */
    int32_t sized_steps;     /* the last call's steps, rows, y and head given: ws */
    int32_t sized_rows;      /* fits a call like it (0: none yet) */
    int sized_outputs;
    int fixed;               /* 1: in the caller's memory (grulite_stream_init), with
                                sub, seen and ws.buf laid out there */
};

/* The checks of a new stream; *n gets batch * state_size. */
static int check_new(const grulite_model *m, int32_t batch, size_t *n)
{
    if (!m || batch < 1) return GRULITE_E_ARG;
    if (m->bidirectional) return GRULITE_E_UNSUPPORTED;
    size_t bytes;
    if (gl_mul((size_t)batch, (size_t)m->info.state_size, n) || gl_mul(*n, sizeof(float), &bytes))
        return GRULITE_E_TOO_LARGE;
    return GRULITE_OK;
}

/* ---- Streams in the caller's memory -------------------------------------- */

/* The layout of a stream in caller memory, from GL_ALIGN: the struct, the
 * state, the listed rows' states, the rows' flags, then scratch for calls
 * of up to `steps` steps with any outputs.  0 on overflow. */
typedef struct gl_stream_plan {
    size_t state_at, sub_at, seen_at, scratch_at, scratch_floats, bytes;
} gl_stream_plan;

static size_t up64(size_t n) { return (n + GL_ALIGN - 1) & ~(size_t)(GL_ALIGN - 1); }

static int plan_stream(const grulite_model *m, int32_t batch, int32_t steps, gl_stream_plan *pl)
{
    size_t n, most = 0;
    int rc = check_new(m, batch, &n);
    if (rc) return rc;
    if (steps < 1) return GRULITE_E_ARG;
    float given = 0.0f;      /* an output's address: the layout asks only whether it is set */
    for (int y = 0; y < 2; y++) {
        for (int head = 0; head < (m->info.num_dense ? 2 : 1); head++) {
            gl_pass p = { batch, steps, 1, 1, NULL, NULL, y ? &given : NULL, head ? &given : NULL,
                          0, NULL, 0 };
            size_t floats;
            if ((rc = gl_scratch_floats(m, &p, &floats))) return rc;
            if (floats > most) most = floats;
        }
    }
    size_t state_b, seen_b, scratch_b;
    if (most > GL_MAX_SCRATCH_BYTES / sizeof(float) || gl_mul(n, sizeof(float), &state_b) ||
        gl_align_up(state_b, &state_b) || gl_align_up((size_t)batch, &seen_b) ||
        gl_mul(most, sizeof(float), &scratch_b))
        return GRULITE_E_TOO_LARGE;
    pl->state_at = up64(sizeof(grulite_stream));
    pl->scratch_floats = most;
    if (gl_add(pl->state_at, state_b, &pl->sub_at) || gl_add(pl->sub_at, state_b, &pl->seen_at) ||
        gl_add(pl->seen_at, seen_b, &pl->scratch_at) ||
        gl_add(pl->scratch_at, scratch_b, &pl->bytes) ||
        gl_add(pl->bytes, GL_ALIGN - 1, &pl->bytes))
        return GRULITE_E_TOO_LARGE;
    return GRULITE_OK;
}

size_t grulite_stream_mem_size(const grulite_model *m, int32_t batch, int32_t steps)
{
    gl_stream_plan pl;
    return plan_stream(m, batch, steps, &pl) ? 0 : pl.bytes;
}

int grulite_stream_init(const grulite_model *m, int32_t batch, int32_t steps, void *mem,
                        size_t mem_size, grulite_stream **out)
{
    if (!out) return GRULITE_E_ARG;
    *out = NULL;
    gl_stream_plan pl;
    int rc = plan_stream(m, batch, steps, &pl);
    if (rc) return rc;
    if (!mem) return GRULITE_E_ARG;
    unsigned char *at = gl_align_ptr(mem);
    const size_t skip = (size_t)(at - (unsigned char *)mem);
    if (mem_size < skip || mem_size - skip < pl.bytes - (GL_ALIGN - 1)) return GRULITE_E_BUFFER;
    grulite_stream *s = (grulite_stream *)(void *)at;
    memset(s, 0, sizeof(*s));
    s->model = m;
    s->batch = batch;
    s->state_n = (size_t)batch * (size_t)m->info.state_size;
    s->state = (float *)(void *)(at + pl.state_at);
    s->sub = (float *)(void *)(at + pl.sub_at);
    s->seen = at + pl.seen_at;
    memset(s->seen, 0, (size_t)batch);
    s->ws.buf = (float *)(void *)(at + pl.scratch_at);
    s->ws.cap = (mem_size - skip - pl.scratch_at) / sizeof(float);
    s->ws.threads = 1;
    s->ws.fixed = 1;
    s->fixed = 1;
    gl_initial_state(m, s->state, (size_t)batch, 0, (size_t)batch);
    *out = s;
    return GRULITE_OK;
}

/* ---- Streams the library allocates ----------------------------------------- */

#if defined(GL_HOSTED)

int grulite_stream_new(const grulite_model *m, int32_t batch, grulite_stream **out)
{
    if (!out) return GRULITE_E_ARG;
    *out = NULL;
    size_t n;
    const int rc = check_new(m, batch, &n);
    if (rc) return rc;
    grulite_stream *s = calloc(1, sizeof(*s));
    if (!s) return GRULITE_E_NOMEM;
    s->state = gl_alloc_aligned(n * sizeof(float) + (n ? 0 : 1));
    if (!s->state) { free(s); return GRULITE_E_NOMEM; }
    gl_initial_state(m, s->state, (size_t)batch, 0, (size_t)batch);
    s->model = m;
    s->batch = batch;
    s->state_n = n;
    *out = s;
    return GRULITE_OK;
}

#endif /* GL_HOSTED */

void grulite_stream_free(grulite_stream *s)
{
    if (!s || s->fixed) return;           /* in the caller's memory: nothing to free */
#if defined(GL_HOSTED)
    gl_free_aligned(s->state);
    gl_free_aligned(s->sub);
    free(s->seen);
    gl_free_aligned(s->ws.buf);
    free(s);
#endif
}

int32_t grulite_stream_batch(const grulite_stream *s)
{
    return s ? s->batch : 0;
}

size_t grulite_stream_bytes(const grulite_stream *s)
{
    if (!s) return 0;
    return sizeof(*s) + s->state_n * sizeof(float) * (s->sub ? 2 : 1) +
           (s->seen ? (size_t)s->batch : 0) + s->ws.cap * sizeof(float);
}

/* ---- Rows of the state ---------------------------------------------------- */

/* Checks n listed rows: in [0, batch), and (distinct) none twice.  rows
 * NULL: all. */
static int check_rows(grulite_stream *s, const int32_t *rows, int32_t n, int distinct)
{
    if (!rows) return GRULITE_OK;
    if (n < 1 || n > s->batch) return GRULITE_E_ARG;
    for (int32_t i = 0; i < n; i++)
        if (rows[i] < 0 || rows[i] >= s->batch) return GRULITE_E_ARG;
    if (!distinct) return GRULITE_OK;
#if defined(GL_HOSTED)
    if (!s->seen && !(s->seen = calloc((size_t)s->batch, 1))) return GRULITE_E_NOMEM;
#endif
    int rc = GRULITE_OK;
    int32_t i = 0;
    for (; i < n; i++) {
        if (s->seen[rows[i]]) { rc = GRULITE_E_ARG; break; }
        s->seen[rows[i]] = 1;
    }
    while (i-- > 0) s->seen[rows[i]] = 0;
    return rc;
}

/* Copies the listed rows' states between a stream's state (B rows) and a
 * state of n rows in h0's layout: blocks of (rows, H) per layer and
 * direction.  With out: state -> out; else in -> state (in NULL: the
 * initial state, learned or zeros). */
static void move_rows(const grulite_model *m, float *state, size_t B, const int32_t *rows,
                      int32_t n, const float *in, float *out)
{
    size_t off = 0;                      /* floats of earlier blocks, n rows each */
    for (int l = m->first_gru; l < m->n_seq; l++) {
        if (!m->layer[l].state) continue;                    /* a merge: no state */
        const grulite_layer_info *c = &m->layer[l].u.gru.cfg;
        const size_t H = (size_t)c->hidden_size;
        for (int d = 0; d < c->num_directions; d++) {
            const float *h0 = c->has_h0 ? m->layer[l].u.gru.dir[d].h0.b : NULL;
            for (int32_t i = 0; i < n; i++) {
                float *row = state + (size_t)(rows ? rows[i] : i) * H;
                const size_t at = off + (size_t)i * H;
                if (out) memcpy(out + at, row, H * sizeof(float));
                else if (in) memcpy(row, in + at, H * sizeof(float));
                else if (h0) memcpy(row, h0, H * sizeof(float));
                else memset(row, 0, H * sizeof(float));
            }
            state += B * H;
            off += (size_t)n * H;
        }
    }
}

/* ---- Stepping -------------------------------------------------------------- */

int grulite_stream_run(grulite_stream *s, const grulite_step *st)
{
    if (!s || !st) return GRULITE_E_ARG;
    const grulite_model *m = s->model;
    const int32_t n = st->rows ? st->n : s->batch;
    int rc = check_rows(s, st->rows, st->n, 1);
    if (rc) return rc;
    gl_pass p = { n, st->steps, 1, 1, st->x, NULL, st->y, st->head, s->flip, st->tokens, 0 };
    if ((rc = gl_check_pass(m, &p))) return rc;
    /* A stream is mostly stepped alike call after call: size the scratch
     * only when the call differs from the last one. */
    const int outputs = 1 | (st->y ? 2 : 0) | (st->head ? 4 : 0);
    if (st->steps != s->sized_steps || n != s->sized_rows || outputs != s->sized_outputs) {
        size_t need;
        if ((rc = gl_scratch_floats(m, &p, &need))) return rc;
        if ((rc = gl_workspace_reserve(&s->ws, need))) return rc;
        s->sized_steps = st->steps;
        s->sized_rows = n;
        s->sized_outputs = outputs;
    }
    s->flip ^= 1;
    if (!st->rows) return gl_run(m, s->ws.buf, &p, s->state);
#if defined(GL_HOSTED)
    if (!s->sub && !(s->sub = gl_alloc_aligned(s->state_n * sizeof(float) + 1)))
        return GRULITE_E_NOMEM;
#endif
    const size_t B = (size_t)s->batch;
    move_rows(m, s->state, B, st->rows, n, NULL, s->sub);
    if ((rc = gl_run(m, s->ws.buf, &p, s->sub))) return rc;
    move_rows(m, s->state, B, st->rows, n, s->sub, NULL);
    return GRULITE_OK;
}

int grulite_stream_step(grulite_stream *s, const float *x, int32_t steps,
                        float *y, float *head)
{
    if (!s || !x) return GRULITE_E_ARG;
    const grulite_step st = { steps, 0, NULL, x, NULL, y, head };
    return grulite_stream_run(s, &st);
}

int grulite_stream_reset(grulite_stream *s)
{
    if (!s) return GRULITE_E_ARG;
    gl_initial_state(s->model, s->state, (size_t)s->batch, 0, (size_t)s->batch);
    return GRULITE_OK;
}

int grulite_stream_reset_rows(grulite_stream *s, const int32_t *rows, int32_t n)
{
    if (!s) return GRULITE_E_ARG;
    if (!rows) return grulite_stream_reset(s);
    const int rc = check_rows(s, rows, n, 0);
    if (!rc) move_rows(s->model, s->state, (size_t)s->batch, rows, n, NULL, NULL);
    return rc;
}

int grulite_stream_get_rows(const grulite_stream *s, const int32_t *rows, int32_t n, float *h)
{
    if (!s || !h) return GRULITE_E_ARG;
    if (rows && (n < 1 || n > s->batch)) return GRULITE_E_ARG;
    for (int32_t i = 0; rows && i < n; i++)
        if (rows[i] < 0 || rows[i] >= s->batch) return GRULITE_E_ARG;
    move_rows(s->model, s->state, (size_t)s->batch, rows, rows ? n : s->batch, NULL, h);
    return GRULITE_OK;
}

int grulite_stream_set_rows(grulite_stream *s, const int32_t *rows, int32_t n, const float *h)
{
    if (!s || !h) return GRULITE_E_ARG;
    const int rc = check_rows(s, rows, n, 1);       /* a row set twice: which value? */
    if (!rc) move_rows(s->model, s->state, (size_t)s->batch, rows, rows ? n : s->batch, h, NULL);
    return rc;
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
