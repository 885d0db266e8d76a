/* engine/forward.c - one pass of a model over a batch: the scratch of a
 * task, the loop over the model's layers, and grulite_forward's split of
 * the batch over the workspace's threads.
 *
 * run_rows() runs a range of batch rows through every layer: the sequence
 * layers (GRU) one after the other over all steps, then the head's row
 * layers on the rows the head reads.  grulite_forward() splits the batch
 * over threads and calls it per range; streams call it on their whole
 * batch.  Rows never interact, so any split gives the same numbers. */
#include <string.h>

#include "../layers/layers.h"

/* ---- Scratch layout of one task ----------------------------------------- */

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
    /* Sequence layer l writes out[l & 1], the top one y when given. */
    if ((m->n_seq >= 2 || !p->y) && gl_mul(rows, (size_t)m->max_width, &out))
        return GRULITE_E_TOO_LARGE;
    const size_t out1 = m->n_seq >= 3 || (m->n_seq == 2 && !p->y) ? out : 0;
    const size_t rz = m->reset_before ? n * hp : 0;     /* r * h and z: reset_after = 0 only */
    if (p->head) hrows = p->head_all_steps ? rows : n;
    if (gl_mul(hrows, hw, &hd)) return GRULITE_E_TOO_LARGE;
    size_t tmp = 0;                  /* floats; only int8 models quantize x */
    if (m->quantized) {
        size_t kmax = (size_t)m->info.input_size;
        if ((size_t)m->max_width > kmax) kmax = (size_t)m->max_width;
        if (gl_mul(rows, 4 * gl_panel_k4(kmax) + 8, &tmp)) return GRULITE_E_TOO_LARGE;
        tmp = tmp / sizeof(float) + 1;
    }
    /* One row's next state (gru.c): over several steps; for a single step
     * only where the kernels' step pays (weights not int8, which take the
     * product and the gates apart: the edge's streams stay as small). */
    const size_t h2 = T > 1 || (n == 1 && !m->quantized) ? hp : 0;
    const size_t sizes[11] = { xp, step, n * hp, h2, rz, rz, out, out1, hd, hd, tmp };
    float *tmpf = NULL;
    float **slots[11] = { &sc->xp, &sc->hp, &sc->h, &sc->h2, &sc->rh, &sc->z, &sc->out[0],
                          &sc->out[1], &sc->hd[0], &sc->hd[1], &tmpf };
    for (int i = 0; i < 11; i++) {
        if (sizes[i] > SIZE_MAX / 8) return GRULITE_E_TOO_LARGE;
        if (base) *slots[i] = base + sum;
        if (gl_add(sum, round16(sizes[i]), &sum)) return GRULITE_E_TOO_LARGE;
    }
    sc->hw = hw;
    sc->tmp = tmpf;
    if (!h2) sc->h2 = NULL;
    *total = sum;
    return GRULITE_OK;
}

/* ---- The pass ------------------------------------------------------------ */

/* The head's row layers on the task's rows of the top sequence layer's
 * output (or, for models that ask, its final states: top_state is
 * (D, B, H)). */
static void run_head(const grulite_model *m, const gl_pass *p, const gl_scratch *sc,
                     const gl_rows *rw, const float *top, int top_global,
                     const float *top_state)
{
    const size_t ow = (size_t)m->info.output_size, hs = (size_t)m->info.head_size;
    const size_t n = rw->n, T = rw->T, hw = sc->hw;
    const size_t rows = p->head_all_steps ? n * T : n;

    /* Gather the input rows: local order. */
    for (size_t i = 0; i < n; i++) {
        const size_t b = rw->b0 + i, len = gl_length_of(p, b);
        if (p->head_all_steps) {
            for (size_t t = 0; t < T; t++)
                memcpy(sc->hd[0] + gl_row_at(rw, 0, b, t) * hw,
                       top + gl_row_at(rw, top_global, b, t) * ow, ow * sizeof(float));
        } else if (m->info.head_from_state) {
            const grulite_layer_info *c = &m->layer[m->top_gru].u.gru.cfg;
            const size_t H = (size_t)c->hidden_size;
            for (size_t d = 0; d < (size_t)c->num_directions; d++)
                memcpy(sc->hd[0] + i * hw + d * H, top_state + (d * rw->B + b) * H,
                       H * sizeof(float));
            if (c->merge != GRULITE_MERGE_CONCAT)       /* merged as its output is */
                gl_merge_row(c->merge, H, sc->hd[0] + i * hw, sc->hd[0] + i * hw);
        } else {
            memcpy(sc->hd[0] + i * hw, top + gl_row_at(rw, top_global, b, len - 1) * ow,
                   ow * sizeof(float));
        }
    }
    int cur = 0;
    for (int l = m->n_seq; l < m->n; l++) {
        const gl_layer *L = &m->layer[l];
        L->kind->rows(L, m->k, rows, sc->hd[cur], hw, sc->hd[cur ^ 1], hw, sc->tmp,
                      p->head_raw && l == m->n - 1);
        cur ^= 1;
    }
    /* Scatter to the caller's rows; steps past a length give 0. */
    for (size_t i = 0; i < n; i++) {
        const size_t b = rw->b0 + i, len = gl_length_of(p, b);
        if (p->head_all_steps) {
            for (size_t t = 0; t < T; t++) {
                float *dst = p->head + gl_row_at(rw, 1, b, t) * hs;
                if (t < len) memcpy(dst, sc->hd[cur] + gl_row_at(rw, 0, b, t) * hw, hs * sizeof(float));
                else memset(dst, 0, hs * sizeof(float));
            }
        } else {
            memcpy(p->head + b * hs, sc->hd[cur] + i * hw, hs * sizeof(float));
        }
    }
}

/* Batch rows [b0, b1) through the whole model.  With a pool and a second
 * scratch, a layer may use a second thread (layers/layers.h: pair). */
static void run_rows(const grulite_model *m, const gl_pass *p, const gl_scratch *sc,
                     const gl_scratch *sc2, gl_pool *pool, size_t b0, size_t b1, float *state)
{
    const gl_rows rw = { (size_t)p->batch, (size_t)p->steps, b1 - b0, b0, p->batch_first };
    gl_seq_job j = { m, NULL, p, &rw, sc, sc2, pool, p->x, (size_t)m->info.input_size, 1,
                     NULL, 0, state };
    const float *top_state = state;

    for (int l = 0; l < m->n_seq; l++) {
        const gl_layer *L = &m->layer[l];
        const size_t W = (size_t)L->out;
        j.L = L;
        j.out_global = l == m->n_seq - 1 && p->y;
        j.out = j.out_global ? p->y : sc->out[l & 1];
        if (p->lengths) {                         /* positions past a length stay 0 */
            for (size_t b = b0; b < b1; b++)
                for (size_t t = gl_length_of(p, b); t < rw.T; t++)
                    memset(j.out + gl_row_at(&rw, j.out_global, b, t) * W, 0, W * sizeof(float));
        }
        if (L->state) top_state = j.state;
        L->kind->run(&j);
        j.state += (size_t)L->state * rw.B;
        j.in = j.out;
        j.in_w = W;
        j.in_global = j.out_global;
    }
    if (p->head && m->n > m->n_seq) run_head(m, p, sc, &rw, j.in, j.in_global, top_state);
}

/* Work split: task i runs rows [B*i/tasks, B*(i+1)/tasks), `chunk` rows at
 * a time, each chunk on its task's scratch (laid out for `chunk` rows, so
 * every smaller layout fits it). */
typedef struct gl_job {
    const grulite_model *m;
    const gl_pass *p;
    float *state;
    float *scratch;
    size_t task_floats;
    int tasks;
    size_t chunk;            /* rows run together: keeps xp and outputs in cache */
    int rc[GRULITE_MAX_THREADS];
} gl_job;

static void run_task(void *ctx, int i)
{
    gl_job *job = ctx;
    const size_t B = (size_t)job->p->batch;
    const size_t b0 = B * (size_t)i / (size_t)job->tasks;
    const size_t b1 = B * (size_t)(i + 1) / (size_t)job->tasks;
    for (size_t c0 = b0; c0 < b1; c0 += job->chunk) {
        const size_t c1 = b1 - c0 < job->chunk ? b1 : c0 + job->chunk;
        gl_scratch sc;
        size_t total;
        job->rc[i] = task_layout(job->m, job->p, c1 - c0,
                                 job->scratch + (size_t)i * job->task_floats, &sc, &total);
        if (job->rc[i]) return;
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

void gl_initial_state(const grulite_model *m, float *state, size_t B, size_t b0, size_t b1)
{
    for (int l = m->first_gru; l < m->n_seq; l++) {
        if (!m->layer[l].state) continue;                    /* a merge: no state */
        const grulite_layer_info *c = &m->layer[l].u.gru.cfg;
        const size_t H = (size_t)c->hidden_size;
        for (int d = 0; d < c->num_directions; d++, state += B * H) {
            const float *h0 = c->has_h0 ? m->layer[l].u.gru.dir[d].h0.b : NULL;
            for (size_t b = b0; b < b1; b++) {
                if (h0) memcpy(state + b * H, h0, H * sizeof(float));
                else memset(state + b * H, 0, H * sizeof(float));
            }
        }
    }
}

int gl_check_pass(const grulite_model *m, const gl_pass *p)
{
    /* Float features or token ids, as the model reads. */
    if (m->info.vocab_size ? (!p->tokens || p->x) : (!p->x || p->tokens)) return GRULITE_E_ARG;
    if (p->batch < 1 || p->steps < 1) return GRULITE_E_SHAPE;
    if (p->head && m->info.num_dense == 0) return GRULITE_E_ARG;
    if (p->lengths) {
        for (int32_t b = 0; b < p->batch; b++)
            if (p->lengths[b] < 1 || p->lengths[b] > p->steps) return GRULITE_E_LENGTHS;
    }
    if (p->tokens) {              /* every id the pass reads: those within a length */
        const gl_rows rw = { (size_t)p->batch, (size_t)p->steps, (size_t)p->batch, 0, p->batch_first };
        const uint32_t V = (uint32_t)m->info.vocab_size;
        for (size_t b = 0; b < rw.B; b++) {
            const size_t len = gl_length_of(p, b);
            for (size_t t = 0; t < len; t++)
                if ((uint32_t)p->tokens[gl_row_at(&rw, 1, b, t)] >= V) return GRULITE_E_TOKEN;
        }
    }
    return GRULITE_OK;
}


/* Floats of workspace a forward pass on one thread needs: the scratch of
 * its chunk of rows (as gl_forward lays it out), then the state. */
static int one_thread_floats(const grulite_model *m, const gl_pass *p, size_t *out)
{
    gl_scratch sc;
    size_t per_task, state_n;
    int rc = task_layout(m, p, chunk_rows(m, p, (size_t)p->batch), NULL, &sc, &per_task);
    if (rc) return rc;
    if (gl_mul((size_t)p->batch, (size_t)m->info.state_size, &state_n) ||
        state_n > SIZE_MAX / 8 || gl_add(per_task, round16(state_n), out))
        return GRULITE_E_TOO_LARGE;
    return GRULITE_OK;
}

size_t grulite_workspace_mem_size(const grulite_model *m, int32_t batch, int32_t steps)
{
    if (!m || batch < 1 || steps < 1) return 0;
    /* The most any call of this shape lays out: y given or not, the head
     * on no step, the last one or every one. */
    float given = 0.0f;      /* an output's address: the layout asks only whether it is set */
    size_t most = 0;
    for (int y = 0; y < 2; y++) {
        for (int head = 0; head < (m->info.num_dense ? 3 : 1); head++) {
            gl_pass p = { batch, steps, 1, head == 2, NULL, NULL, y ? &given : NULL,
                          head ? &given : NULL, 0, NULL, 0 };
            size_t floats;
            if (one_thread_floats(m, &p, &floats)) return 0;
            if (floats > most) most = floats;
        }
    }
    return gl_workspace_mem_bytes(most);
}

/* Whether some sequence layer gains from a second thread for this batch. */
static int model_pairs(const grulite_model *m, int32_t batch)
{
    for (int l = 0; l < m->n_seq; l++) {
        const gl_layer *L = &m->layer[l];
        if (L->kind->pair && L->kind->pair(L, batch)) return 1;
    }
    return 0;
}

int grulite_forward(const grulite_model *m, grulite_workspace *ws, const grulite_run *run)
{
    return gl_forward(m, ws, run, 0);
}

int gl_forward(const grulite_model *m, grulite_workspace *ws, const grulite_run *run, int raw)
{
    if (!m || !ws || !run) return GRULITE_E_ARG;
    gl_pass p = { run->batch, run->steps, run->batch_first ? 1 : 0,
                  run->head_all_steps ? 1 : 0, run->x, run->lengths, run->y, run->head, 0,
                  run->tokens, raw };
    int rc = gl_check_pass(m, &p);
    if (rc) return rc;

    /* Threads split the batch; a batch too small for them (one sequence)
     * lets a layer use two threads itself: the two directions of a
     * bidirectional layer, or the hidden units of a large one.  Below ~1M
     * multiply-adds threads cost more than they save.  Any split gives the
     * same numbers. */
    const int threads = gl_workspace_threads(ws);
    int tasks = threads < p.batch ? threads : p.batch;
    const int small = grulite_model_macs(m) * (double)p.batch * (double)p.steps < 1e6;
    if (small) tasks = 1;
    const int pair = !small && tasks == 1 && threads >= 2 && model_pairs(m, p.batch);
    const int pool_size = pair ? 2 : tasks;
    if (pool_size > 1) {
        if (!ws->pool || gl_pool_size(ws->pool) < pool_size) {
            gl_pool_free(ws->pool);
            ws->pool = gl_pool_new(pool_size);
            if (!ws->pool) return GRULITE_E_NOMEM;
        }
        if (gl_pool_size(ws->pool) < tasks) tasks = gl_pool_size(ws->pool);
    }
    gl_scratch sc, sc2;
    size_t per_task, state_n, total;
    size_t rows_max = chunk_rows(m, &p, ((size_t)p.batch + (size_t)tasks - 1) / (size_t)tasks);
    const size_t scratches = pair && gl_pool_size(ws->pool) >= 2 ? 2 : (size_t)tasks;
    for (;;) {
        if ((rc = task_layout(m, &p, rows_max, NULL, &sc, &per_task))) return rc;
        if (gl_mul((size_t)p.batch, (size_t)m->info.state_size, &state_n) ||
            state_n > SIZE_MAX / 8 || gl_mul(per_task, scratches, &total) ||
            gl_add(total, round16(state_n), &total))
            return GRULITE_E_TOO_LARGE;
        /* A workspace in the caller's memory, sized for longer sequences
         * (grulite_workspace_mem_size: up to B rows of up to T steps):
         * shorter ones run in smaller chunks of rows, which any chunking
         * allows (the numbers do not change). */
        if (!ws->fixed || total <= ws->cap || rows_max == 1) break;
        rows_max = (rows_max + 1) / 2;
    }
    if ((rc = gl_workspace_reserve(ws, total))) return rc;

    float *state = ws->buf + per_task * scratches;
    if (run->h0) memcpy(state, run->h0, state_n * sizeof(float));
    else gl_initial_state(m, state, (size_t)p.batch, 0, (size_t)p.batch);

    if (scratches == 2 && tasks == 1) {          /* one task, a layer on two threads */
        size_t t0;
        if ((rc = task_layout(m, &p, (size_t)p.batch, ws->buf, &sc, &t0)) ||
            (rc = task_layout(m, &p, (size_t)p.batch, ws->buf + per_task, &sc2, &t0)))
            return rc;
        run_rows(m, &p, &sc, &sc2, ws->pool, 0, (size_t)p.batch, state);
    } else {
        gl_job job = { m, &p, state, ws->buf, per_task, tasks, rows_max, { 0 } };
        gl_pool_run(ws->pool, tasks, run_task, &job);
        for (int i = 0; i < tasks; i++)
            if (job.rc[i]) return job.rc[i];
    }
    if (run->h_n) memcpy(run->h_n, state, state_n * sizeof(float));
    return GRULITE_OK;
}
