/* engine/generate.c - loops of passes that feed a model its own outputs:
 * generation (grulite_generate: token ids in, a head's scores out, one
 * token picked and read back a step) and forecasting (grulite_forecast: a
 * head's prediction read back as the next input).
 *
 * Each loop keeps the state of the rows still running in a batch of their
 * own and runs one-step passes over it (gl_forward: the workspace's
 * threads split the batch, every split gives the same numbers).  A
 * generated row that stops leaves the batch: its state is compacted away,
 * so it costs nothing more. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../layers/layers.h"

/* Generation and forecasting allocate their per-call state: hosted builds
 * only (docs/edge.md). */
#if defined(GL_HOSTED)

/* ---- A counter-based generator --------------------------------------------
 *
 * Draw number `step` of row `row` under `seed` is a pure function of the
 * three (splitmix64's finalizer over their combination), so a row draws
 * the same numbers whatever thread runs it and whichever other rows share
 * its batch. */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1), 53 bits. */
static double draw(uint64_t seed, uint64_t row, uint64_t step)
{
    uint64_t z = mix64(seed + 0x9E3779B97F4A7C15u);
    z = mix64(z ^ (row * 0xD1B54A32D192ED03u + 0x8CB92BA72F3D8DD7u));
    z = mix64(z ^ (step * 0xAEF17502108EF2D9u + 0x9E3779B97F4A7C15u));
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

/* ---- Picking a token -------------------------------------------------------- */

typedef struct gl_cand {
    double p;                /* unnormalized probability */
    int32_t id;
} gl_cand;

/* Most likely first; the lower id first on ties (a total order: the same
 * result from any sort). */
static int cand_cmp(const void *a, const void *b)
{
    const gl_cand *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The highest score, the lowest id on ties; NaN scores lose to any other. */
static int32_t argmax(const float *v, size_t n)
{
    size_t best = 0;
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] != v[i]) continue;
        if (!found || v[i] > v[best]) { best = i; found = 1; }
    }
    return (int32_t)best;
}

/* A draw from softmax(logits / temperature), restricted to the top_k most
 * likely tokens, then to the fewest whose probabilities reach top_p. */
static int32_t sample(const grulite_generation *g, const float *logits, size_t V, gl_cand *c,
                      double u)
{
    float mx = -INFINITY;
    for (size_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    if (mx == -INFINITY || mx != mx) return argmax(logits, V);   /* nothing to weigh */
    const double inv_t = 1.0 / (double)g->temperature;
    double total = 0.0;
    for (size_t i = 0; i < V; i++) {
        const float l = logits[i];
        /* The largest scores weigh 1 (also when they are +inf: every finite
         * score then weighs 0); NaN scores weigh 0. */
        c[i].p = l == mx ? 1.0 : l == l ? exp(((double)l - (double)mx) * inv_t) : 0.0;
        c[i].id = (int32_t)i;
        total += c[i].p;
    }
    size_t keep = V;
    const int filtered = (g->top_k > 0 && (size_t)g->top_k < V) || g->top_p < 1.0f;
    if (filtered) {
        qsort(c, V, sizeof *c, cand_cmp);
        if (g->top_k > 0 && (size_t)g->top_k < V) keep = (size_t)g->top_k;
        total = 0.0;
        for (size_t i = 0; i < keep; i++) total += c[i].p;
        if (g->top_p < 1.0f) {
            const double need = (double)g->top_p * total;
            double cum = 0.0;
            size_t i = 0;
            while (i < keep) {
                cum += c[i++].p;
                if (cum >= need) break;
            }
            keep = i;
            total = cum;
        }
    }
    const double target = u * total;
    double cum = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < keep; i++) {
        if (c[i].p <= 0.0) continue;
        cum += c[i].p;
        last = i;
        if (target < cum) return c[i].id;
    }
    return c[last].id;                 /* rounding at the very top */
}

/* ---- The state of the rows still running ------------------------------------ */

/* Keeps rows keep[0..k) (ascending positions) of a state of n rows, in h0's
 * layout (blocks of (rows, H) per layer and direction), as a state of k
 * rows.  In place: every row moves down, never onto one still to move. */
static void compact_state(const grulite_model *m, float *state, size_t n, const size_t *keep,
                          size_t k)
{
    size_t src = 0, dst = 0;
    for (int l = m->first_gru; l < m->n_seq; l++) {
        if (!m->layer[l].state) continue;                    /* a merge: no state */
        const grulite_layer_info *c = &m->layer[l].u.gru.cfg;
        const size_t H = (size_t)c->hidden_size;
        for (int d = 0; d < c->num_directions; d++) {
            for (size_t i = 0; i < k; i++)
                memmove(state + dst + i * H, state + src + keep[i] * H, H * sizeof(float));
            src += n * H;
            dst += k * H;
        }
    }
}

/* The last head layer's activation. */
static int32_t head_activation(const grulite_model *m)
{
    return m->layer[m->n - 1].u.dense.cfg.activation;
}

static int check_generation(const grulite_model *m, const grulite_generation *g)
{
    if (!g->prompt || !g->tokens || !g->counts) return GRULITE_E_ARG;
    if (!m->info.vocab_size || !m->info.num_dense || m->info.head_size != m->info.vocab_size ||
        m->bidirectional)
        return GRULITE_E_UNSUPPORTED;
    if (g->batch < 1 || g->steps < 1 || g->max_steps < 0) return GRULITE_E_SHAPE;
    if (g->stop < -1 || g->stop >= m->info.vocab_size) return GRULITE_E_TOKEN;
    if (g->sample) {
        if (!(g->temperature > 0.0f) || g->temperature == INFINITY || g->top_k < 0 ||
            !(g->top_p > 0.0f && g->top_p <= 1.0f))
            return GRULITE_E_ARG;
        const int32_t act = head_activation(m);
        if (act != GRULITE_ACT_NONE && act != GRULITE_ACT_SOFTMAX) return GRULITE_E_UNSUPPORTED;
    }
    return GRULITE_OK;
}

int grulite_generate(const grulite_model *m, grulite_workspace *ws, const grulite_generation *g)
{
    if (!m || !ws || !g) return GRULITE_E_ARG;
    int rc = check_generation(m, g);
    if (rc) return rc;
    const size_t B = (size_t)g->batch, V = (size_t)m->info.vocab_size;
    const size_t S = (size_t)m->info.state_size, T = (size_t)g->max_steps;
    size_t state_n, logits_n, out_n, floats;
    if (gl_mul(B, S, &state_n) || gl_mul(B, V, &logits_n) || gl_mul(B, T, &out_n) ||
        gl_add(state_n, logits_n, &floats) || floats > SIZE_MAX / sizeof(float) - 1 ||
        V > SIZE_MAX / sizeof(gl_cand) || B > SIZE_MAX / (2 * sizeof(size_t)))
        return GRULITE_E_TOO_LARGE;
    for (size_t b = 0; b < B; b++) g->counts[b] = 0;   /* tokens: only what is written */
    if (T == 0) return gl_check_pass(m, &(gl_pass){ g->batch, g->steps, 1, 0, NULL, g->lengths,
                                                     NULL, NULL, 0, g->prompt, 0 });
    float *state = malloc(floats * sizeof(float) + sizeof(float));
    size_t *keep = malloc(B * sizeof(size_t));              /* positions of rows kept */
    int32_t *orig = malloc(2 * B * sizeof(int32_t));        /* running rows' rows in the call */
    gl_cand *cand = g->sample ? malloc(V * sizeof(gl_cand)) : NULL;
    if (!state || !keep || !orig || (g->sample && !cand)) {
        free(state); free(keep); free(orig); free(cand);
        return GRULITE_E_NOMEM;
    }
    float *logits = state + state_n;
    int32_t *next = orig + B;                                /* and the tokens they read next */

    /* The prompts, from h0: the head's scores at each row's last token. */
    grulite_run r;
    memset(&r, 0, sizeof r);
    r.batch = g->batch;
    r.steps = g->steps;
    r.batch_first = 1;
    r.lengths = g->lengths;
    r.h0 = g->h0;
    r.h_n = state;
    r.head = logits;
    r.tokens = g->prompt;
    /* Scores: the logits of a softmax head (its argmax is the same, and
     * sampling needs them); other heads' outputs as they are. */
    const int raw = g->sample || head_activation(m) == GRULITE_ACT_SOFTMAX;
    rc = gl_forward(m, ws, &r, raw);
    size_t n = B;
    for (size_t b = 0; b < B; b++) orig[b] = (int32_t)b;
    while (!rc) {
        /* Each running row picks its next token; rows that stop leave. */
        size_t k = 0;
        for (size_t i = 0; i < n; i++) {
            const size_t b = (size_t)orig[i];
            const float *l = logits + i * V;
            const int32_t c = g->counts[b];
            const double u = !g->sample ? 0.0
                             : g->seeds ? draw(g->seeds[b], 0, (uint64_t)c)
                                        : draw(g->seed, b, (uint64_t)c);
            const int32_t tok = g->sample ? sample(g, l, V, cand, u) : argmax(l, V);
            if (tok == g->stop) continue;
            g->tokens[b * T + (size_t)c] = tok;
            g->counts[b] = c + 1;
            if ((size_t)c + 1 == T) continue;
            keep[k] = i;
            orig[k] = (int32_t)b;      /* k <= i: position k is read already */
            next[k] = tok;
            k++;
        }
        if (k == 0) break;
        if (k < n) compact_state(m, state, n, keep, k);
        n = k;
        /* They read their tokens: one step, from their states. */
        memset(&r, 0, sizeof r);
        r.batch = (int32_t)n;
        r.steps = 1;
        r.batch_first = 1;
        r.h0 = state;
        r.h_n = state;
        r.head = logits;
        r.tokens = next;
        rc = gl_forward(m, ws, &r, raw);
    }
    free(state); free(keep); free(orig); free(cand);
    return rc;
}

/* ---- Forecasting -------------------------------------------------------------- */

int grulite_forecast(const grulite_model *m, grulite_workspace *ws, const grulite_run *run,
                     int32_t horizon, float *out)
{
    if (!m || !ws || !run || !out || horizon < 1) return GRULITE_E_ARG;
    if (m->info.vocab_size || !m->info.num_dense || m->bidirectional) return GRULITE_E_UNSUPPORTED;
    if (m->info.head_size != m->info.input_size) return GRULITE_E_SHAPE;
    if (run->batch < 1) return GRULITE_E_SHAPE;
    const size_t B = (size_t)run->batch, S = (size_t)m->info.state_size;
    const size_t P = (size_t)m->info.head_size, H = (size_t)horizon;
    size_t state_n, pred_n, bytes, out_n;
    if (gl_mul(B, S, &state_n) || gl_mul(B, P, &pred_n) || gl_mul3(B, H, P, &out_n) ||
        gl_add(state_n, 2 * pred_n, &bytes) || bytes > SIZE_MAX / sizeof(float) - 1)
        return GRULITE_E_TOO_LARGE;
    float *mem = malloc(bytes * sizeof(float) + sizeof(float));
    if (!mem) return GRULITE_E_NOMEM;
    float *state = mem, *pred[2] = { mem + state_n, mem + state_n + pred_n };

    /* The window: its last valid step predicts the first value. */
    grulite_run r = *run;
    r.y = NULL;
    r.head_all_steps = 0;
    r.h_n = state;
    r.head = pred[0];
    int rc = gl_forward(m, ws, &r, 0);
    for (size_t k = 0; !rc; k++) {
        const float *p = pred[k & 1];
        for (size_t b = 0; b < B; b++)
            memcpy(out + (b * H + k) * P, p + b * P, P * sizeof(float));
        if (k + 1 == H) break;
        /* Each prediction read back as the next input (B, 1, I). */
        memset(&r, 0, sizeof r);
        r.batch = run->batch;
        r.steps = 1;
        r.batch_first = 1;
        r.x = p;
        r.h0 = state;
        r.h_n = state;
        r.head = pred[(k + 1) & 1];
        rc = gl_forward(m, ws, &r, 0);
    }
    if (!rc && run->h_n) memcpy(run->h_n, state, state_n * sizeof(float));
    free(mem);
    return rc;
}

#endif /* GL_HOSTED */
