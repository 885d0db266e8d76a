/* engine.c - the GRU forward pass, workspaces and streams.
 *
 * One function, run_rows(), runs a range of batch rows through every layer
 * and direction over a block of steps.  grulite_forward() splits the batch
 * over the workspace's threads and calls it per range; streams call it on
 * their whole batch.  Rows never interact, and every kernel computes a row
 * the same way whatever rows surround it (kernels.h), so streams, threads
 * and whole sequences all give the same bits. */
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
    gl_pool_free(ws->pool);
    gl_free_aligned(ws->buf);
    free(ws);
}

size_t grulite_workspace_bytes(const grulite_workspace *ws)
{
    return ws ? ws->cap * sizeof(float) : 0;
}

/* Scratch beyond this is refused outright rather than attempted: no call
 * that fits a real machine needs a terabyte of scratch. */
#define GL_MAX_SCRATCH_BYTES ((size_t)1 << 40)

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
    return GRULITE_OK;
}

int grulite_workspace_threads(const grulite_workspace *ws)
{
    if (!ws) return 1;
    return ws->threads ? ws->threads : env_threads();
}

/* ---- Scratch layout of one task ----------------------------------------- */

/* A task runs batch rows [b0, b1) through every layer.  Its scratch: */
typedef struct gl_scratch {
    float *xp;       /* (n*T, 3*Hp): input projection of one direction */
    float *hp;       /* (n, 3*Hp): recurrent products of one step */
    float *h;        /* (n, Hp): the state of one direction, zero-padded */
    float *rh;       /* (n, Hp): r * h (reset-before variant) */
    float *z;        /* (n, Hp): update gate (reset-before variant) */
    float *out[2];   /* (n*T, Wmax) each: outputs of layers below the top */
    float *hd[2];    /* (head rows, hw) each: rows going through the head */
    size_t hw;       /* row stride of hd */
    void *tmp;       /* gemm scratch (int8 models: x quantized on the fly) */
} gl_scratch;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Floats of scratch for n rows; with base != NULL also lays it out. */
static int task_layout(const grulite_model *m, const gl_pass *p, size_t n, float *base,
                       gl_scratch *sc, size_t *total)
{
    const size_t T = (size_t)p->steps, hp = round16((size_t)m->max_hidden);
    const size_t hw = round16((size_t)(m->max_dense > m->info.output_size
                                       ? m->max_dense : m->info.output_size));
    size_t rows, xp, out = 0, hrows = 0, hd = 0, step, sum = 0;
    if (gl_mul(n, T, &rows) || gl_mul3(rows, 3, hp, &xp) || gl_mul3(n, 3, hp, &step))
        return GRULITE_E_TOO_LARGE;
    if ((m->info.num_layers >= 2 || !p->y) && gl_mul(rows, (size_t)m->max_width, &out))
        return GRULITE_E_TOO_LARGE;
    if (p->head) hrows = p->head_all_steps ? rows : n;
    if (gl_mul(hrows, hw, &hd)) return GRULITE_E_TOO_LARGE;
    size_t tmp = 0;                  /* floats; only int8 models quantize x */
    if (m->quantized) {
        size_t kmax = (size_t)m->info.input_size;
        if ((size_t)m->max_width > kmax) kmax = (size_t)m->max_width;
        if (gl_mul(rows, 4 * gl_panel_k4(kmax) + 8, &tmp)) return GRULITE_E_TOO_LARGE;
        tmp = tmp / sizeof(float) + 1;
    }
    const size_t sizes[10] = { xp, step, n * hp, n * hp, n * hp, out, out, hd, hd, tmp };
    float *tmpf = NULL;
    float **slots[10] = { &sc->xp, &sc->hp, &sc->h, &sc->rh, &sc->z, &sc->out[0], &sc->out[1],
                          &sc->hd[0], &sc->hd[1], &tmpf };
    for (int i = 0; i < 10; i++) {
        if (sizes[i] > SIZE_MAX / 8) return GRULITE_E_TOO_LARGE;
        if (base) *slots[i] = base + sum;
        if (gl_add(sum, round16(sizes[i]), &sum)) return GRULITE_E_TOO_LARGE;
    }
    sc->hw = hw;
    sc->tmp = tmpf;
    *total = sum;
    return GRULITE_OK;
}

/* ---- The pass ------------------------------------------------------------ */

/* Where rows live: the caller's arrays use the whole batch and the call's
 * layout; a task's scratch holds only its n rows, in the same order. */
typedef struct gl_rows {
    size_t B, T, n, b0;
    int bf;
} gl_rows;

/* Row of (b, t) in a caller array (global) or in task scratch (local). */
static inline size_t row_at(const gl_rows *r, int global, size_t b, size_t t)
{
    if (global) return r->bf ? b * r->T + t : t * r->B + b;
    const size_t lb = b - r->b0;
    return r->bf ? lb * r->T + t : t * r->n + lb;
}

static inline size_t length_of(const gl_pass *p, size_t b)
{
    return p->lengths ? (size_t)p->lengths[b] : (size_t)p->steps;
}

/* Input projection of every step at once, xp = x W_ih^T + b_ih, for the
 * task's rows: one product over all n*T rows when they lie evenly spaced
 * in `in` (batch-first or local input; time-major input with the whole
 * batch, or a single row, whose steps are B rows apart), else one product
 * per step.  xp rows follow row_at's local layout. */
static void input_projection(const gl_kernels *k, const gl_panel *ih, const gl_rows *rw,
                             const float *in, size_t in_w, int in_global, float *xp, size_t ld,
                             void *tmp)
{
    const size_t n = rw->n, T = rw->T, b0 = rw->b0;
    const int time_major = in_global && !rw->bf;
    if (time_major && n != rw->B && n != 1) {
        for (size_t t = 0; t < T; t++)            /* rows of one step are contiguous */
            k->gemm(n, in + row_at(rw, 1, b0, t) * in_w, in_w, ih, 0, 3,
                    xp + row_at(rw, 0, b0, t) * ld, ld, tmp);
        return;
    }
    const size_t ldx = time_major && n == 1 ? rw->B * in_w : in_w;
    k->gemm(n * T, in + row_at(rw, in_global, b0, 0) * in_w, ldx, ih, 0, 3, xp, ld, tmp);
}

/* Recurrent products of one step for every row (rows that have ended are
 * computed and ignored: simpler than compacting); the reset-before variant
 * takes r and z here and n after the gates. */
static void recurrent_product(const gl_kernels *k, const gl_layer *L, const gl_direction *w,
                              const gl_scratch *sc, size_t n, size_t Hp, size_t ld)
{
    if (L->cfg.reset_after) k->gemm(n, sc->h, Hp, &w->hh, 0, 3, sc->hp, ld, sc->tmp);
    else k->gemm(n, sc->h, Hp, &w->hh, 0, 2, sc->hp, ld, sc->tmp);
}

/* One direction of one layer over all steps for the task's rows.
 * in: rows of in_w floats (global or local); out: rows of out_w floats,
 * this direction's H columns start at col; state: (B, H) of this
 * direction, rows [b0, b0+n) read and written. */
static void run_direction(const grulite_model *m, const gl_layer *L, const gl_direction *w,
                          const gl_pass *p, const gl_scratch *sc, const gl_rows *rw,
                          const float *in, size_t in_w, int in_global,
                          float *out, size_t out_w, int out_global, size_t col,
                          float *state, int reverse)
{
    const gl_kernels *k = m->k;
    const size_t H = (size_t)L->cfg.hidden_size, nb = w->hh.nb, Hp = nb * GL_LANES;
    const size_t ld = 3 * Hp, n = rw->n, T = rw->T, b0 = rw->b0;

    for (size_t i = 0; i < n; i++) {
        memcpy(sc->h + i * Hp, state + (b0 + i) * H, H * sizeof(float));
        memset(sc->h + i * Hp + H, 0, (Hp - H) * sizeof(float));
    }
    if (!L->cfg.reset_after) memset(sc->rh, 0, n * Hp * sizeof(float));

    /* A stream's single step reads W_ih and W_hh once each, in either
     * order: alternating the order between calls starts each step with the
     * matrix the last one ended with, still in L1 (hh_first). */
    const int hh_first = T == 1 && p->hh_first;
    if (hh_first) recurrent_product(k, L, w, sc, n, Hp, ld);

    input_projection(k, &w->ih, rw, in, in_w, in_global, sc->xp, ld, sc->tmp);

    for (size_t s = 0; s < T; s++) {
        if (!hh_first) recurrent_product(k, L, w, sc, n, Hp, ld);
        for (size_t i = 0; i < n; i++) {
            const size_t len = length_of(p, b0 + i);
            if (s >= len) continue;
            const size_t t = reverse ? len - 1 - s : s;
            const float *xp = sc->xp + row_at(rw, 0, b0 + i, t) * ld;
            if (L->cfg.reset_after)
                k->gates_after(nb, xp, sc->hp + i * ld, sc->h + i * Hp);
            else
                k->gates_rz(nb, xp, sc->hp + i * ld, sc->h + i * Hp, sc->rh + i * Hp,
                            sc->z + i * Hp);
        }
        if (!L->cfg.reset_after) {
            k->gemm(n, sc->rh, Hp, &w->hh, 2, 1, sc->hp, ld, sc->tmp);
            for (size_t i = 0; i < n; i++) {
                const size_t len = length_of(p, b0 + i);
                if (s >= len) continue;
                const size_t t = reverse ? len - 1 - s : s;
                k->gates_n(nb, sc->xp + row_at(rw, 0, b0 + i, t) * ld, sc->hp + i * ld,
                           sc->z + i * Hp, sc->h + i * Hp);
            }
        }
        for (size_t i = 0; i < n; i++) {
            const size_t len = length_of(p, b0 + i);
            if (s >= len) continue;
            const size_t t = reverse ? len - 1 - s : s;
            memcpy(out + row_at(rw, out_global, b0 + i, t) * out_w + col, sc->h + i * Hp,
                   H * sizeof(float));
        }
    }

    for (size_t i = 0; i < n; i++)
        memcpy(state + (b0 + i) * H, sc->h + i * Hp, H * sizeof(float));
}

/* ---- One sequence on two cores ------------------------------------------
 *
 * At batch 1 a step's recurrent product reads all of W_hh; once W_hh
 * outgrows L1 that read sets the pace (tools/bench_step.c's read floor).
 * Two threads then take half the hidden units each: each reads only its
 * half of W_ih and W_hh (blocks [c0, c1) of the panels, contiguous in the
 * panel layout), runs the gates of its units and writes them into the
 * next step's state, and the two meet at a barrier once a step (twice for
 * the reset-before variant, whose n gate needs all of r*h; threads.c:
 * spinning while both run, parking when they do not each have a core).
 * Every output is the same chain of operations as on one thread: same
 * bits. */

/* Below this many bytes of W_hh per step, the barrier (~0.2 us here: a
 * cache line between cores and back) costs about what the halved read
 * saves.  Measured, B=1 T=100 (one thread -> two, best of runs): float32
 * H=96 (108 KiB) 105 -> 109 us, H=128 (192 KiB) 166 -> 153 us; int8
 * H=192 (108 KiB) 115 -> 116 us, H=256 (192 KiB) 181 -> 151 us.  Means of
 * 100 calls from Python: float32 H=256 722 -> 475 us, H=512 10.4 -> 1.75
 * ms (3 MiB of W_hh leave L2; each half fits). */
#define GL_SPLIT_MIN_BYTES ((size_t)160 * 1024)

/* Blocks [c0, c1) of a panel as a panel of their own. */
static gl_panel sub_panel(const gl_panel *p, size_t c0, size_t c1)
{
    gl_panel s = *p;
    s.w = (const unsigned char *)p->w + c0 * (gl_panel_bytes(p) / p->nb);   /* blocks are equal */
    if (p->b) s.b = p->b + c0 * p->G * GL_LANES;
    if (p->scale) s.scale = p->scale + c0 * p->G * GL_LANES;
    s.nb = c1 - c0;
    s.H = (c1 * GL_LANES < p->H ? c1 * GL_LANES : p->H) - c0 * GL_LANES;
    return s;
}

typedef struct gl_split_job {
    const gl_kernels *k;
    const gl_layer *L;
    const gl_direction *w;
    const gl_scratch *sc[2];     /* [0]: shared buffers; [1]: task 1's gemm scratch, h buffer */
    const gl_rows *rw;
    const float *in;
    size_t in_w;
    int in_global;
    float *out;
    size_t out_w;
    int out_global;
    size_t col;
    size_t len;                  /* steps of the one row */
    int reverse;
    gl_barrier bar;
} gl_split_job;

static void run_split_task(void *ctx, int task)
{
    gl_split_job *j = ctx;
    const gl_kernels *k = j->k;
    const gl_rows *rw = j->rw;
    const gl_scratch *sc = j->sc[0];
    void *tmp = j->sc[task]->tmp;
    const size_t nb = j->w->hh.nb, Hp = nb * GL_LANES, ld = 3 * Hp, b0 = rw->b0;
    const size_t H = (size_t)j->L->cfg.hidden_size;
    const size_t c0 = task ? nb / 2 : 0, c1 = task ? nb : nb / 2;
    const size_t u0 = c0 * GL_LANES, u1 = c1 * GL_LANES < H ? c1 * GL_LANES : H;
    const size_t x0 = c0 * 3 * GL_LANES;               /* this half's slots in a product row */
    const gl_panel ih = sub_panel(&j->w->ih, c0, c1), hh = sub_panel(&j->w->hh, c0, c1);
    float *hbuf[2] = { sc->h, j->sc[1]->h };

    /* This half's columns of the input projection, every step. */
    input_projection(k, &ih, rw, j->in, j->in_w, j->in_global, sc->xp + x0, ld, tmp);
    /* No wait here: each task reads only its own columns of xp, and the
     * caller filled hbuf[0] before the run. */

    for (size_t s = 0; s < j->len; s++) {
        const size_t t = j->reverse ? j->len - 1 - s : s;
        const float *xp = sc->xp + row_at(rw, 0, b0, t) * ld + x0;
        const float *hcur = hbuf[s & 1];
        float *hnext = hbuf[(s + 1) & 1] + u0;
        memcpy(hnext, hcur + u0, (c1 - c0) * GL_LANES * sizeof(float));
        if (j->L->cfg.reset_after) {
            k->gemm(1, hcur, Hp, &hh, 0, 3, sc->hp + x0, ld, tmp);
            k->gates_after(c1 - c0, xp, sc->hp + x0, hnext);
        } else {
            k->gemm(1, hcur, Hp, &hh, 0, 2, sc->hp + x0, ld, tmp);
            k->gates_rz(c1 - c0, xp, sc->hp + x0, hnext, sc->rh + u0, sc->z + u0);
            gl_barrier_wait(&j->bar, task);  /* all of r*h, for the n gate */
            k->gemm(1, sc->rh, Hp, &hh, 2, 1, sc->hp + x0, ld, tmp);
            k->gates_n(c1 - c0, xp, sc->hp + x0, sc->z + u0, hnext);
        }
        if (u1 > u0)
            memcpy(j->out + row_at(rw, j->out_global, b0, t) * j->out_w + j->col + u0, hnext,
                   (u1 - u0) * sizeof(float));
        gl_barrier_wait(&j->bar, task);      /* the whole next state is written */
    }
}

/* run_direction for one row on two threads (the section above); returns 0
 * when the layer is better run on one thread. */
/* Whether a direction's hidden units are worth two threads for one row. */
static int split_pays(const gl_direction *w)
{
    return w->hh.nb >= 2 && gl_panel_bytes(&w->hh) >= GL_SPLIT_MIN_BYTES;
}

/* Whether any one-direction layer of m is (grulite_forward's pool for B=1). */
static int model_split_pays(const grulite_model *m)
{
    for (int l = 0; l < m->info.num_layers; l++)
        if (m->layer[l].cfg.num_directions == 1 && split_pays(&m->layer[l].dir[0])) return 1;
    return 0;
}

static int run_direction_split(const grulite_model *m, const gl_layer *L, const gl_direction *w,
                               const gl_pass *p, const gl_scratch *sc, const gl_scratch *sc2,
                               gl_pool *pool, const gl_rows *rw, const float *in, size_t in_w,
                               int in_global, float *out, size_t out_w, int out_global, size_t col,
                               float *state, int reverse)
{
    const size_t H = (size_t)L->cfg.hidden_size, nb = w->hh.nb, Hp = nb * GL_LANES;
    if (rw->n != 1 || !split_pays(w) || !gl_pool_may_spin(pool, 2))
        return 0;
    const size_t len = length_of(p, rw->b0);
    gl_split_job j;
    memset(&j, 0, sizeof j);
    j.k = m->k; j.L = L; j.w = w; j.sc[0] = sc; j.sc[1] = sc2; j.rw = rw;
    j.in = in; j.in_w = in_w; j.in_global = in_global;
    j.out = out; j.out_w = out_w; j.out_global = out_global; j.col = col;
    j.len = len; j.reverse = reverse;
    gl_barrier_init(&j.bar, pool, 2);
    memcpy(sc->h, state + rw->b0 * H, H * sizeof(float));
    memset(sc->h + H, 0, (Hp - H) * sizeof(float));
    memset(sc2->h, 0, Hp * sizeof(float));     /* padding lanes stay 0 in both buffers */
    if (!L->cfg.reset_after) memset(sc->rh, 0, Hp * sizeof(float));
    gl_pool_run(pool, 2, run_split_task, &j);
    gl_barrier_done(&j.bar);
    memcpy(state + rw->b0 * H, (len & 1 ? sc2->h : sc->h), H * sizeof(float));
    return 1;
}

/* The dense head on the task's rows of the top layer's output (or, for
 * models that ask, its final states: top_state is (D, B, H)). */
static void run_head(const grulite_model *m, const gl_pass *p, const gl_scratch *sc,
                     const gl_rows *rw, const float *top, int top_global,
                     const float *top_state)
{
    const size_t ow = (size_t)m->info.output_size, hs = (size_t)m->info.head_size;
    const size_t n = rw->n, T = rw->T, hw = sc->hw;
    const size_t rows = p->head_all_steps ? n * T : n;

    /* Gather the input rows: local order. */
    for (size_t i = 0; i < n; i++) {
        const size_t b = rw->b0 + i, len = length_of(p, b);
        if (p->head_all_steps) {
            for (size_t t = 0; t < T; t++)
                memcpy(sc->hd[0] + row_at(rw, 0, b, t) * hw,
                       top + row_at(rw, top_global, b, t) * ow, ow * sizeof(float));
        } else if (m->info.head_from_state) {
            const gl_layer *L = &m->layer[m->info.num_layers - 1];
            const size_t H = (size_t)L->cfg.hidden_size;
            for (size_t d = 0; d < (size_t)L->cfg.num_directions; d++)
                memcpy(sc->hd[0] + i * hw + d * H, top_state + (d * rw->B + b) * H,
                       H * sizeof(float));
        } else {
            memcpy(sc->hd[0] + i * hw, top + row_at(rw, top_global, b, len - 1) * ow,
                   ow * sizeof(float));
        }
    }
    int cur = 0;
    for (int j = 0; j < m->info.num_dense; j++) {
        const gl_dense *d = &m->dense[j];
        m->k->gemm(rows, sc->hd[cur], hw, &d->p, 0, 1, sc->hd[cur ^ 1], hw, sc->tmp);
        cur ^= 1;
        for (size_t r = 0; r < rows; r++)
            gl_ref_activate(d->cfg.activation, (size_t)d->cfg.out_features, sc->hd[cur] + r * hw);
    }
    /* Scatter to the caller's rows; steps past a length give 0. */
    for (size_t i = 0; i < n; i++) {
        const size_t b = rw->b0 + i, len = length_of(p, b);
        if (p->head_all_steps) {
            for (size_t t = 0; t < T; t++) {
                float *dst = p->head + row_at(rw, 1, b, t) * hs;
                if (t < len) memcpy(dst, sc->hd[cur] + row_at(rw, 0, b, t) * hw, hs * sizeof(float));
                else memset(dst, 0, hs * sizeof(float));
            }
        } else {
            memcpy(p->head + b * hs, sc->hd[cur] + i * hw, hs * sizeof(float));
        }
    }
}

/* The two directions of a layer on two threads: each has its own scratch
 * (xp, hp, h, ...) and writes its own columns of `out` and its own state. */
typedef struct gl_dir_job {
    const grulite_model *m;
    const gl_layer *L;
    const gl_pass *p;
    const gl_scratch *sc[2];
    const gl_rows *rw;
    const float *in;
    size_t in_w;
    int in_global;
    float *out;
    int out_global;
    float *state;            /* this layer's (D, B, H) state */
} gl_dir_job;

static void run_dir_task(void *ctx, int d)
{
    const gl_dir_job *j = ctx;
    const size_t H = (size_t)j->L->cfg.hidden_size;
    run_direction(j->m, j->L, &j->L->dir[d], j->p, j->sc[d], j->rw, j->in, j->in_w, j->in_global,
                  j->out, 2 * H, j->out_global, (size_t)d * H, j->state + (size_t)d * j->rw->B * H,
                  d);
}

/* Batch rows [b0, b1) through the whole model.  With a pool and a second
 * scratch, bidirectional layers run their directions in parallel. */
static void run_rows(const grulite_model *m, const gl_pass *p, const gl_scratch *sc,
                     const gl_scratch *sc2, gl_pool *pool, size_t b0, size_t b1, float *state)
{
    const gl_rows rw = { (size_t)p->batch, (size_t)p->steps, b1 - b0, b0, p->batch_first };
    const float *in = p->x;
    size_t in_w = (size_t)m->info.input_size;
    int in_global = 1;
    float *state_l = state, *top_state = state;

    for (int l = 0; l < m->info.num_layers; l++) {
        const gl_layer *L = &m->layer[l];
        const size_t H = (size_t)L->cfg.hidden_size, D = (size_t)L->cfg.num_directions;
        const size_t W = D * H;
        const int is_top = (l == m->info.num_layers - 1);
        const int out_global = is_top && p->y;
        float *out = out_global ? p->y : sc->out[l & 1];

        if (p->lengths) {                         /* positions past a length stay 0 */
            for (size_t b = b0; b < b1; b++)
                for (size_t t = length_of(p, b); t < rw.T; t++)
                    memset(out + row_at(&rw, out_global, b, t) * W, 0, W * sizeof(float));
        }
        top_state = state_l;
        if (D == 2 && sc2 && pool) {
            gl_dir_job j = { m, L, p, { sc, sc2 }, &rw, in, in_w, in_global, out, out_global,
                             state_l };
            gl_pool_run(pool, 2, run_dir_task, &j);
        } else {
            for (size_t d = 0; d < D; d++) {
                const int rev = (int)d || L->cfg.reverse;
                if (D == 1 && sc2 && pool &&
                    run_direction_split(m, L, &L->dir[d], p, sc, sc2, pool, &rw, in, in_w,
                                        in_global, out, W, out_global, d * H,
                                        state_l + d * rw.B * H, rev))
                    continue;
                run_direction(m, L, &L->dir[d], p, sc, &rw, in, in_w, in_global, out, W,
                              out_global, d * H, state_l + d * rw.B * H, rev);
            }
        }
        state_l += D * rw.B * H;
        in = out;
        in_w = W;
        in_global = out_global;
    }
    if (p->head && m->info.num_dense > 0) run_head(m, p, sc, &rw, in, in_global, top_state);
}

/* Work split: task i runs rows [B*i/tasks, B*(i+1)/tasks). */
typedef struct gl_job {
    const grulite_model *m;
    const gl_pass *p;
    float *state;
    float *scratch;
    size_t task_floats;
    int tasks;
    size_t chunk;            /* rows run together: keeps xp and outputs in cache */
} gl_job;

static void run_task(void *ctx, int i)
{
    const gl_job *job = ctx;
    const size_t B = (size_t)job->p->batch;
    const size_t b0 = B * (size_t)i / (size_t)job->tasks;
    const size_t b1 = B * (size_t)(i + 1) / (size_t)job->tasks;
    for (size_t c0 = b0; c0 < b1; c0 += job->chunk) {
        const size_t c1 = b1 - c0 < job->chunk ? b1 : c0 + job->chunk;
        gl_scratch sc;
        size_t total;
        if (task_layout(job->m, job->p, c1 - c0, job->scratch + (size_t)i * job->task_floats,
                        &sc, &total) == GRULITE_OK)
            run_rows(job->m, job->p, &sc, NULL, NULL, c0, c1, job->state);
    }
}

/* Rows a task runs together: enough for the blocked kernels, few enough
 * that one direction's input projection (rows * T * 3 * Hp floats) stays
 * around 2 MiB, in cache.  Rows are independent: any chunking gives the
 * same numbers. */
static size_t chunk_rows(const grulite_model *m, const gl_pass *p, size_t rows)
{
    const size_t per_row = (size_t)p->steps * 3 * (((size_t)m->max_hidden + 15) & ~(size_t)15);
    size_t c = ((size_t)1 << 19) / (per_row ? per_row : 1);
    if (c < 32) c = 32;
    return c < rows ? c : rows;
}

int gl_scratch_floats(const grulite_model *m, const gl_pass *p, size_t *out)
{
    gl_scratch sc;
    return task_layout(m, p, (size_t)p->batch, NULL, &sc, out);
}

int gl_run(const grulite_model *m, float *scratch, const gl_pass *p, float *state)
{
    gl_scratch sc;
    size_t total;
    int rc = task_layout(m, p, (size_t)p->batch, scratch, &sc, &total);
    if (rc) return rc;
    run_rows(m, p, &sc, NULL, NULL, 0, (size_t)p->batch, state);
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

/* Multiply-adds of one call, to decide whether threads pay off. */
static double call_work(const grulite_model *m, const gl_pass *p)
{
    double w = 0.0;
    for (int l = 0; l < m->info.num_layers; l++) {
        const grulite_layer_info *c = &m->layer[l].cfg;
        w += (double)c->num_directions * 3.0 * c->hidden_size * (c->input_size + c->hidden_size);
    }
    return w * (double)p->batch * (double)p->steps;
}

int grulite_forward(const grulite_model *m, grulite_workspace *ws, const grulite_run *run)
{
    if (!m || !ws || !run) return GRULITE_E_ARG;
    gl_pass p = { run->batch, run->steps, run->batch_first ? 1 : 0,
                  run->head_all_steps ? 1 : 0, run->x, run->lengths, run->y, run->head, 0 };
    int rc = check_pass(m, &p);
    if (rc) return rc;

    /* Threads split the batch; a batch too small for them splits the two
     * directions of bidirectional layers instead, and one sequence splits
     * the hidden units of its large layers (run_direction_split).  Below
     * ~1M multiply-adds threads cost more than they save.  Any split gives
     * the same numbers. */
    const int threads = grulite_workspace_threads(ws);
    int tasks = threads < p.batch ? threads : p.batch;
    const int small = call_work(m, &p) < 1e6;
    if (small) tasks = 1;
    const int dir_split = !small && tasks == 1 && threads >= 2 &&
                          (m->bidirectional || (p.batch == 1 && model_split_pays(m)));
    const int pool_size = dir_split ? 2 : tasks;
    if (pool_size > 1) {
        if (!ws->pool || gl_pool_size(ws->pool) < pool_size) {
            gl_pool_free(ws->pool);
            ws->pool = gl_pool_new(pool_size);
            if (!ws->pool) return GRULITE_E_NOMEM;
        }
        if (gl_pool_size(ws->pool) < tasks) tasks = gl_pool_size(ws->pool);
    }
    gl_scratch sc;
    size_t per_task, state_n, total;
    const size_t rows_max = chunk_rows(m, &p, ((size_t)p.batch + (size_t)tasks - 1) / (size_t)tasks);
    if ((rc = task_layout(m, &p, rows_max, NULL, &sc, &per_task))) return rc;
    const size_t scratches = dir_split && gl_pool_size(ws->pool) >= 2 ? 2 : (size_t)tasks;
    if (gl_mul((size_t)p.batch, (size_t)m->info.state_size, &state_n) ||
        gl_mul(per_task, scratches, &total) || gl_add(total, round16(state_n), &total))
        return GRULITE_E_TOO_LARGE;
    if ((rc = gl_workspace_reserve(ws, total))) return rc;

    float *state = ws->buf + per_task * scratches;
    if (run->h0) memcpy(state, run->h0, state_n * sizeof(float));
    else memset(state, 0, state_n * sizeof(float));

    if (scratches == 2 && tasks == 1) {          /* directions or hidden units in parallel */
        gl_scratch s0, s1;
        size_t t0;
        task_layout(m, &p, (size_t)p.batch, ws->buf, &s0, &t0);
        task_layout(m, &p, (size_t)p.batch, ws->buf + per_task, &s1, &t0);
        run_rows(m, &p, &s0, &s1, ws->pool, 0, (size_t)p.batch, state);
    } else {
        gl_job job = { m, &p, state, ws->buf, per_task, tasks, rows_max };
        gl_pool_run(ws->pool, tasks, run_task, &job);
    }
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
    int flip;                /* alternates the order of a step's products */
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
    int rc = check_pass(m, &p);
    if (rc) return rc;
    size_t need;
    if ((rc = gl_scratch_floats(m, &p, &need))) return rc;
    if ((rc = gl_workspace_reserve(&s->ws, need))) return rc;
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
