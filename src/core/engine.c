/* engine.c - the GRU forward pass, workspaces and streams.
 *
 * One function, gl_run(), runs every layer and direction over a block of
 * steps; grulite_forward() and grulite_stream_step() are thin wrappers
 * around it, so whole sequences and streams give the same numbers. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

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
    gl_free_aligned(ws->buf);
    free(ws);
}

size_t grulite_workspace_bytes(const grulite_workspace *ws)
{
    return ws ? ws->cap * sizeof(float) : 0;
}

int gl_workspace_reserve(grulite_workspace *ws, size_t floats)
{
    if (floats <= ws->cap) return GRULITE_OK;
    size_t bytes;
    if (gl_mul(floats, sizeof(float), &bytes)) return GRULITE_E_TOO_LARGE;
    float *buf = gl_alloc_aligned(bytes);
    if (!buf) return GRULITE_E_NOMEM;
    gl_free_aligned(ws->buf);
    ws->buf = buf;
    ws->cap = floats;
    return GRULITE_OK;
}

/* ---- Scratch layout ---------------------------------------------------- */

/* Regions of the scratch block, each a multiple of 16 floats (64 bytes). */
typedef struct gl_scratch {
    float *xp;       /* (B*T, 3*Hmax): input projection of one direction */
    float *hp;       /* (3*Hmax): recurrent product of one row */
    float *rh;       /* (Hmax): r * h (reset-before variant) */
    float *z;        /* (Hmax): update gate (reset-before variant) */
    float *out[2];   /* (B*T, Wmax) each: outputs of the layers below the top */
    float *head[2];  /* (max(Wtop, max_dense)) each: one row through the head */
} gl_scratch;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Computes region sizes; with base != NULL also lays them out. */
static int gl_layout(const grulite_model *m, const gl_pass *p, float *base,
                     gl_scratch *sc, size_t *total)
{
    size_t rows, xp, out, sum = 0;
    const size_t hmax = (size_t)m->max_hidden;
    const size_t hw = (size_t)(m->max_dense > m->info.output_size
                               ? m->max_dense : m->info.output_size);
    if (gl_mul((size_t)p->batch, (size_t)p->steps, &rows)) return GRULITE_E_TOO_LARGE;
    if (gl_mul3(rows, 3, hmax, &xp)) return GRULITE_E_TOO_LARGE;
    if (gl_mul(rows, (size_t)m->max_width, &out)) return GRULITE_E_TOO_LARGE;
    if (m->info.num_layers < 2) out = 0;   /* no layer below the top */
    if (xp > SIZE_MAX / 8 || out > SIZE_MAX / 8) return GRULITE_E_TOO_LARGE;
    const size_t sizes[7] = { round16(xp), round16(3 * hmax), round16(hmax),
                              round16(hmax), round16(out), round16(out),
                              round16(hw) * 2 };
    float **slots[6] = { &sc->xp, &sc->hp, &sc->rh, &sc->z, &sc->out[0], &sc->out[1] };
    for (int i = 0; i < 7; i++) {
        if (base) {
            if (i < 6) *slots[i] = base + sum;
            else { sc->head[0] = base + sum; sc->head[1] = base + sum + round16(hw); }
        }
        if (gl_add(sum, sizes[i], &sum)) return GRULITE_E_TOO_LARGE;
    }
    *total = sum;
    return GRULITE_OK;
}

int gl_scratch_floats(const grulite_model *m, const gl_pass *p, size_t *out)
{
    gl_scratch sc;
    return gl_layout(m, p, NULL, &sc, out);
}

/* ---- The pass ---------------------------------------------------------- */

/* Row of (b, t) in x / y / per-step head arrays. */
static inline size_t row_of(const gl_pass *p, size_t b, size_t t)
{
    return p->batch_first ? b * (size_t)p->steps + t : t * (size_t)p->batch + b;
}

static inline size_t length_of(const gl_pass *p, size_t b)
{
    return p->lengths ? (size_t)p->lengths[b] : (size_t)p->steps;
}

/* Runs one direction of one layer over all steps.
 * in: (B*T, in_w) rows; out: (B*T, out_w) rows, this direction's columns
 * start at col; h: (B, H) state, updated in place. */
static void run_direction(const gl_layer *L, const gl_direction *w, const gl_pass *p,
                          const gl_scratch *sc, const float *in, size_t in_w,
                          float *out, size_t out_w, size_t col, float *h, int reverse)
{
    const size_t H = (size_t)L->cfg.hidden_size, G = 3 * H;
    const size_t B = (size_t)p->batch, T = (size_t)p->steps;

    /* Input projection of every step at once: xp = x W_ih^T + b_ih. */
    gl_ref_matmul(B * T, in_w, G, in, in_w, w->w_ih, G, w->b_ih, sc->xp, G);

    for (size_t s = 0; s < T; s++) {
        for (size_t b = 0; b < B; b++) {
            const size_t len = length_of(p, b);
            if (s >= len) continue;                  /* this row has ended */
            const size_t t = reverse ? len - 1 - s : s;
            const size_t r = row_of(p, b, t);
            const float *xp = sc->xp + r * G;
            float *hb = h + b * H;
            if (L->cfg.reset_after) {
                gl_ref_matmul(1, H, G, hb, H, w->w_hh, G, w->b_hh, sc->hp, G);
                gl_ref_gates_after(H, xp, sc->hp, hb);
            } else {
                gl_ref_matmul(1, H, 2 * H, hb, H, w->w_hh, G, w->b_hh, sc->hp, G);
                gl_ref_gates_rz(H, xp, sc->hp, hb, sc->rh, sc->z);
                gl_ref_matmul(1, H, H, sc->rh, H, w->w_hh + 2 * H, G,
                              w->b_hh ? w->b_hh + 2 * H : NULL, sc->hp + 2 * H, G);
                gl_ref_gates_n(H, xp + 2 * H, sc->hp + 2 * H, sc->z, hb);
            }
            memcpy(out + r * out_w + col, hb, H * sizeof(float));
        }
    }
}

/* Passes one row of the top layer's output through the dense head. */
static void run_head(const grulite_model *m, const gl_scratch *sc,
                     const float *in, float *dst)
{
    const float *cur = in;
    size_t cur_w = (size_t)m->info.output_size;
    for (int j = 0; j < m->info.num_dense; j++) {
        const gl_dense *d = &m->dense[j];
        const size_t n = (size_t)d->cfg.out_features;
        float *nxt = (j == m->info.num_dense - 1) ? dst : sc->head[j & 1];
        gl_ref_matmul(1, cur_w, n, cur, cur_w, d->w, n, d->b, nxt, n);
        gl_ref_activate(d->cfg.activation, n, nxt);
        cur = nxt;
        cur_w = n;
    }
}

int gl_run(const grulite_model *m, float *scratch, const gl_pass *p, float *state)
{
    gl_scratch sc;
    size_t total;
    int rc = gl_layout(m, p, scratch, &sc, &total);
    if (rc) return rc;

    const size_t B = (size_t)p->batch, T = (size_t)p->steps;
    const float *in = p->x;
    size_t in_w = (size_t)m->info.input_size;
    float *state_l = state;
    float *top = NULL;

    for (int l = 0; l < m->info.num_layers; l++) {
        const gl_layer *L = &m->layer[l];
        const size_t H = (size_t)L->cfg.hidden_size;
        const size_t D = (size_t)L->cfg.num_directions;
        const size_t W = D * H;
        const int is_top = (l == m->info.num_layers - 1);
        /* Layers below the top alternate between the two out[] regions;
         * the top writes y (the wrappers supply one for 1-layer models). */
        float *out = (is_top && p->y) ? p->y : sc.out[l & 1];
        if (!out || (is_top && !p->y && m->info.num_layers < 2)) return GRULITE_E_ARG;

        /* Positions past a sequence's length stay 0. */
        if (p->lengths) {
            for (size_t b = 0; b < B; b++)
                for (size_t t = length_of(p, b); t < T; t++)
                    memset(out + row_of(p, b, t) * W, 0, W * sizeof(float));
        }
        for (size_t d = 0; d < D; d++)
            run_direction(L, &L->dir[d], p, &sc, in, in_w, out, W, d * H,
                          state_l + d * B * H, (int)d);

        state_l += D * B * H;
        in = out;
        in_w = W;
        top = out;
    }

    if (p->head && m->info.num_dense > 0) {
        const size_t hs = (size_t)m->info.head_size;
        const size_t ow = (size_t)m->info.output_size;
        for (size_t b = 0; b < B; b++) {
            const size_t len = length_of(p, b);
            if (p->head_all_steps) {
                for (size_t t = 0; t < T; t++) {
                    const size_t r = row_of(p, b, t);
                    if (t < len) run_head(m, &sc, top + r * ow, p->head + r * hs);
                    else memset(p->head + r * hs, 0, hs * sizeof(float));
                }
            } else {
                run_head(m, &sc, top + row_of(p, b, len - 1) * ow, p->head + b * hs);
            }
        }
    }
    return GRULITE_OK;
}

/* ---- Whole sequences --------------------------------------------------- */

static int check_pass(const grulite_model *m, const gl_pass *p)
{
    if (!p->x) return GRULITE_E_ARG;
    if (p->batch < 1 || p->steps < 1) return GRULITE_E_SHAPE;
    if (p->head && m->info.num_dense == 0) return GRULITE_E_ARG;
    if (p->lengths) {
        for (int32_t b = 0; b < p->batch; b++)
            if (p->lengths[b] < 1 || p->lengths[b] > p->steps) return GRULITE_E_LENGTHS;
    }
    return GRULITE_OK;
}

int grulite_forward(const grulite_model *m, grulite_workspace *ws, const grulite_run *run)
{
    if (!m || !ws || !run) return GRULITE_E_ARG;
    gl_pass p = { run->batch, run->steps, run->batch_first ? 1 : 0,
                  run->head_all_steps ? 1 : 0, run->x, run->lengths, run->y, run->head };
    int rc = check_pass(m, &p);
    if (rc) return rc;

    /* Scratch: the pass, the working state, and y when the caller wants
     * only the head of a one-layer model. */
    size_t need, state_n, y_n = 0, total;
    if ((rc = gl_scratch_floats(m, &p, &need))) return rc;
    if (gl_mul((size_t)p.batch, (size_t)m->info.state_size, &state_n))
        return GRULITE_E_TOO_LARGE;
    if (!p.y && m->info.num_layers == 1 &&
        gl_mul3((size_t)p.batch, (size_t)p.steps, (size_t)m->info.output_size, &y_n))
        return GRULITE_E_TOO_LARGE;
    if (gl_add(need, round16(state_n), &total) || gl_add(total, round16(y_n), &total))
        return GRULITE_E_TOO_LARGE;
    if ((rc = gl_workspace_reserve(ws, total))) return rc;

    float *state = ws->buf + need;
    if (!p.y && m->info.num_layers == 1) p.y = state + round16(state_n);
    if (run->h0) memcpy(state, run->h0, state_n * sizeof(float));
    else memset(state, 0, state_n * sizeof(float));

    if ((rc = gl_run(m, ws->buf, &p, state))) return rc;
    if (run->h_n) memcpy(run->h_n, state, state_n * sizeof(float));
    return GRULITE_OK;
}

/* ---- Streams ----------------------------------------------------------- */

struct grulite_stream {
    const grulite_model *model;
    int32_t batch;
    size_t state_n;          /* batch * state_size */
    float *state;            /* (batch * state_size) */
    grulite_workspace ws;    /* scratch, grown to the largest chunk */
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

int grulite_stream_step(grulite_stream *s, const float *x, int32_t steps,
                        float *y, float *head)
{
    if (!s || !x) return GRULITE_E_ARG;
    const grulite_model *m = s->model;
    gl_pass p = { s->batch, steps, 1, 1, x, NULL, y, head };
    int rc = check_pass(m, &p);
    if (rc) return rc;
    size_t need, y_n = 0, total;
    if ((rc = gl_scratch_floats(m, &p, &need))) return rc;
    if (!y && m->info.num_layers == 1 &&
        gl_mul3((size_t)s->batch, (size_t)steps, (size_t)m->info.output_size, &y_n))
        return GRULITE_E_TOO_LARGE;
    if (gl_add(need, round16(y_n), &total)) return GRULITE_E_TOO_LARGE;
    if ((rc = gl_workspace_reserve(&s->ws, total))) return rc;
    if (!p.y && m->info.num_layers == 1) p.y = s->ws.buf + need;
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
