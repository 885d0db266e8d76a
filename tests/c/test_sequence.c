/*
 * test_sequence.c - whole sequence models: the embedding (token ids in,
 * folded or not, every dtype), generation, forecasting and stream rows.
 *
 * The references are the library's own float paths, which the fixtures
 * check against torch: a token model must give what the same GRU gives on
 * the embedding's rows as float input; generation what a loop of one-step
 * streams and an argmax gives, bit for bit; forecasting what a stream fed
 * its own predictions gives; a stream stepped on some rows what a stream
 * of only those rows gives.
 */
#include "harness.h"

static uint64_t s_rng = 0x2545F4914F6CDD1Dull;

static float rnd(float k)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    const uint32_t r = (uint32_t)((s_rng * 0x2545F4914F6CDD1Dull) >> 40);
    return k * (2.0f * ((float)r / 16777216.0f) - 1.0f);
}

static float *rnd_array(size_t n, float k)
{
    float *a = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = rnd(k);
    return a;
}

/* A language model: embedding (V, E) -> GRU layers of H -> Linear(H, V)
 * with activation act.  Weights live in `w` (freed by seq_free). */
typedef struct seq_model {
    int32_t V, E, H, L;
    grulite_layer_spec layers[2];
    grulite_dense_spec dense;
    grulite_embedding_spec emb;
    float *w[20];
    int nw;
} seq_model;

static float *own(seq_model *s, size_t n, float k)
{
    return s->w[s->nw++] = rnd_array(n, k);
}

static void seq_make(seq_model *s, int32_t V, int32_t E, int32_t H, int32_t L, int32_t act)
{
    memset(s, 0, sizeof *s);
    s->V = V; s->E = E; s->H = H; s->L = L;
    for (int l = 0; l < L; l++) {
        grulite_layer_spec *ls = &s->layers[l];
        const size_t in = l ? (size_t)H : (size_t)E, G = 3 * (size_t)H;
        ls->hidden_size = H;
        ls->num_directions = 1;
        ls->reset_after = l == 0 ? 1 : 0;      /* both variants */
        ls->has_bias = 1;
        ls->weight_ih[0] = own(s, G * in, 0.5f);
        ls->weight_hh[0] = own(s, G * (size_t)H, 0.5f);
        ls->bias_ih[0] = own(s, G, 0.3f);
        ls->bias_hh[0] = own(s, G, 0.3f);
    }
    s->dense.out_features = V;
    s->dense.activation = act;
    s->dense.has_bias = 1;
    s->dense.weight = own(s, (size_t)V * (size_t)H, 2.0f);
    s->dense.bias = own(s, (size_t)V, 0.5f);
    s->emb.vocab_size = V;
    s->emb.weight = own(s, (size_t)V * (size_t)E, 1.0f);
}

static void seq_free(seq_model *s)
{
    for (int i = 0; i < s->nw; i++) free(s->w[i]);
}

/* The token model (embedding folded as asked), or the float model on
 * embedding rows (tokens 0). */
static grulite_model *seq_load(seq_model *s, int tokens, int fold, int dtype)
{
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = s->E;
    spec.num_layers = s->L;
    spec.layers = s->layers;
    spec.num_dense = 1;
    spec.dense = &s->dense;
    spec.dtype = dtype;
    spec.batch_first = 1;
    s->emb.fold = fold;
    spec.embedding = tokens ? &s->emb : NULL;
    return load_spec(&spec);
}

/* ---- The embedding ---------------------------------------------------------- */

static void test_embedding_forward(void)
{
    seq_model s;
    seq_make(&s, 29, 12, 20, 2, GRULITE_ACT_NONE);
    enum { B = 3, T = 6 };
    int32_t tok[B * T], lengths[B] = { 6, 2, 4 };
    for (int i = 0; i < B * T; i++) tok[i] = (int32_t)((i * 7 + 3) % s.V);
    tok[1 * T + 3] = -5;                  /* past a length: never read */
    tok[1 * T + 5] = 1000;
    float x[B * T * 12];
    memset(x, 0, sizeof x);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < lengths[b]; t++)
            memcpy(x + (b * T + t) * 12, s.emb.weight + (size_t)tok[b * T + t] * 12, 12 * sizeof(float));
    grulite_model *ref = seq_load(&s, 0, 0, GRULITE_DTYPE_F32);
    grulite_workspace *ws = grulite_workspace_new();
    float y0[B * T * 20], h0[B * 40], hd0[B * 29], y1[B * T * 20], h1[B * 40], hd1[B * 29];
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B; run.steps = T; run.batch_first = 1; run.lengths = lengths;
    run.x = x; run.y = y0; run.h_n = h0; run.head = hd0;
    set_ctx("embedding", "float reference");
    CHECK_RC(grulite_forward(ref, ws, &run), GRULITE_OK);
    static const int dtypes[4] = { GRULITE_DTYPE_F32, GRULITE_DTYPE_F16, GRULITE_DTYPE_I8,
                                   GRULITE_DTYPE_BF16 };
    static const float tols[4] = { 2e-6f, 2e-3f, 3e-2f, 1e-2f };
    for (int fold = GRULITE_FOLD_NEVER; fold <= GRULITE_FOLD_ALWAYS; fold++)
        for (int d = 0; d < 4; d++) {
            set_ctx(fold == GRULITE_FOLD_ALWAYS ? "embedding folded" : "embedding",
                    grulite_name(GRULITE_NAMES_DTYPE, dtypes[d]));
            grulite_model *m = seq_load(&s, 1, fold, dtypes[d]);
            CHECK(m != NULL);
            if (!m) continue;
            grulite_info info;
            grulite_model_info(m, &info);
            CHECK(info.vocab_size == 29 && info.input_size == 1 && info.num_layers == 2);
            CHECK(grulite_model_layer_kind(m, 0) == GRULITE_LAYER_EMBEDDING);
            CHECK(grulite_model_layer_kind(m, 1) == GRULITE_LAYER_GRU);
            grulite_embedding_info ei;
            grulite_layer_info li;
            CHECK_RC(grulite_model_embedding(m, &ei), GRULITE_OK);
            CHECK_RC(grulite_model_layer(m, 0, &li), GRULITE_OK);
            CHECK(li.projected == (fold == GRULITE_FOLD_ALWAYS));
            CHECK(ei.width == (li.projected ? 60 : 12) && ei.dtype == dtypes[d]);
            /* A folded layer 0 costs a copy, not a product. */
            CHECK(grulite_model_macs(m) == 60.0 * (li.projected ? 20 : 32) + 60.0 * 40);
            run.x = NULL; run.tokens = tok; run.y = y1; run.h_n = h1; run.head = hd1;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
            CHECK(near(y1, y0, sizeof y0 / sizeof(float), tols[d], "y"));
            CHECK(near(h1, h0, sizeof h0 / sizeof(float), tols[d], "h_n"));
            /* Converted to another dtype and back: the same configuration. */
            size_t size = 0;
            CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F32, NULL, 0, &size), GRULITE_OK);
            unsigned char *buf = xalloc_aligned(size);
            grulite_model *c = NULL;
            CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F32, buf, size, &size), GRULITE_OK);
            CHECK_RC(grulite_model_load_buffer(buf, size, 0, &c, NULL, 0), GRULITE_OK);
            if (c) {
                grulite_layer_info lc;
                grulite_model_layer(c, 0, &lc);
                CHECK(lc.projected == li.projected);
                float yc[B * T * 20];
                run.y = yc;
                CHECK_RC(grulite_forward(c, ws, &run), GRULITE_OK);
                /* int8 kernels that round x to int8 too (all x86 sets, neondot)
                 * differ from the float32 copy by that rounding. */
                CHECK(near(yc, y1, sizeof yc / sizeof(float),
                           dtypes[d] == GRULITE_DTYPE_I8 ? tols[d] : 1e-6f, "converted"));
                grulite_model_free(c);
            }
            free(buf);
            /* Hostile ids: out of range, negative; x with tokens; neither. */
            tok[0] = 29;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_TOKEN);
            tok[0] = -1;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_TOKEN);
            tok[0] = 3;
            run.x = x;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_ARG);
            run.x = NULL; run.tokens = NULL;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_ARG);
            run.tokens = tok; run.y = y0; run.h_n = h0; run.head = hd0;
            grulite_model_free(m);
        }
    /* The float model refuses tokens. */
    run.x = NULL; run.tokens = tok;
    set_ctx("embedding", "float model given tokens");
    CHECK_RC(grulite_forward(ref, ws, &run), GRULITE_E_ARG);
    /* A fold that is not one of the three; projected without an embedding. */
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = s.E; spec.num_layers = s.L; spec.layers = s.layers;
    spec.dtype = GRULITE_DTYPE_F32; spec.embedding = &s.emb;
    s.emb.fold = 7;
    char msg[200];
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    s.emb.fold = GRULITE_FOLD_AUTO;
    s.emb.vocab_size = 0;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    s.emb.vocab_size = s.V;
    spec.embedding = NULL;
    s.layers[0].projected = 1;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    s.layers[0].projected = 0;
    grulite_model_free(ref);
    grulite_workspace_free(ws);
    seq_free(&s);
}

/* ---- Generation --------------------------------------------------------------- */

static int32_t argmax_ref(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

/* Greedy generation of one row by streams: the reference. */
static int greedy_ref(const grulite_model *m, const int32_t *prompt, int len, int32_t stop,
                      int max_steps, int32_t *out)
{
    grulite_stream *st = NULL;
    grulite_info info;
    grulite_model_info(m, &info);
    float *logits = xmalloc((size_t)len * (size_t)info.head_size * sizeof(float));
    grulite_stream_new(m, 1, &st);
    grulite_step step;
    memset(&step, 0, sizeof step);
    step.steps = len; step.tokens = prompt; step.head = logits;
    grulite_stream_run(st, &step);
    const float *last = logits + (size_t)(len - 1) * (size_t)info.head_size;
    int n = 0;
    while (n < max_steps) {
        int32_t tok = argmax_ref(last, info.head_size);
        if (tok == stop) break;
        out[n++] = tok;
        if (n == max_steps) break;
        step.steps = 1; step.tokens = &tok;
        grulite_stream_run(st, &step);
        last = logits;
    }
    grulite_stream_free(st);
    free(logits);
    return n;
}

static void test_generate(void)
{
    seq_model s;
    seq_make(&s, 23, 10, 24, 2, GRULITE_ACT_SOFTMAX);
    grulite_model *m = seq_load(&s, 1, GRULITE_FOLD_AUTO, GRULITE_DTYPE_F32);
    grulite_workspace *ws = grulite_workspace_new();
    enum { B = 5, T = 4, MAX = 9 };
    int32_t prompt[B * T], lengths[B] = { 4, 1, 3, 2, 4 };
    for (int i = 0; i < B * T; i++) prompt[i] = (int32_t)((i * 5 + 1) % 23);
    int32_t toks[B * MAX], counts[B], ref[MAX];
    grulite_generation g;
    memset(&g, 0, sizeof g);
    g.batch = B; g.steps = T; g.prompt = prompt; g.lengths = lengths;
    g.max_steps = MAX; g.tokens = toks; g.counts = counts;
    for (int stop_i = 0; stop_i < 2; stop_i++) {
        g.stop = stop_i ? -1 : 0;
        for (int threads = 1; threads <= 2; threads++) {
            grulite_workspace_set_threads(ws, threads);
            set_ctx("generate greedy", threads == 1 ? "1 thread" : "2 threads");
            for (int i = 0; i < B * MAX; i++) toks[i] = -7;
            CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
            /* With a stop token, pick one a row actually produces. */
            if (!stop_i && threads == 1) {
                g.stop = counts[2] >= 2 ? toks[2 * MAX + 1] : 0;
                for (int i = 0; i < B * MAX; i++) toks[i] = -7;
                CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
            }
            for (int b = 0; b < B; b++) {
                const int n = greedy_ref(m, prompt + b * T, lengths[b], g.stop, MAX, ref);
                CHECK(counts[b] == n);
                CHECK(!memcmp(toks + b * MAX, ref, (size_t)n * sizeof(int32_t)));
                for (int i = n; i < MAX; i++) CHECK(toks[b * MAX + i] == -7);   /* untouched */
            }
        }
    }
    /* Sampling: per-row keys, whatever the threads or the other rows. */
    int32_t t1[B * MAX], c1[B], t2[B * MAX], c2[B];
    g.sample = 1; g.temperature = 0.8f; g.top_k = 6; g.top_p = 0.9f; g.seed = 42; g.stop = -1;
    set_ctx("generate sample", NULL);
    grulite_workspace_set_threads(ws, 1);
    g.tokens = t1; g.counts = c1;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    grulite_workspace_set_threads(ws, 2);
    g.tokens = t2; g.counts = c2;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    CHECK(!memcmp(t1, t2, sizeof t1) && !memcmp(c1, c2, sizeof c1));
    uint64_t seeds[B] = { 5, 6, 7, 8, 9 };
    g.seeds = seeds;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    g.batch = 1; g.prompt = prompt + 3 * T; g.lengths = lengths + 3; g.seeds = seeds + 3;
    g.tokens = t1; g.counts = c1;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    CHECK(c1[0] == c2[3] && !memcmp(t1, t2 + 3 * MAX, (size_t)c1[0] * sizeof(int32_t)));
    /* top_k = 1 is greedy. */
    g.seeds = NULL; g.top_k = 1; g.top_p = 1.0f;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    const int n = greedy_ref(m, prompt + 3 * T, lengths[3], -1, MAX, ref);
    CHECK(c1[0] == n && !memcmp(t1, ref, (size_t)n * sizeof(int32_t)));
    /* Bad arguments. */
    set_ctx("generate", "bad arguments");
    g.top_k = 0;
    g.temperature = 0.0f;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_ARG);
    g.temperature = 1.0f; g.top_p = 0.0f;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_ARG);
    g.top_p = 1.0f; g.stop = 23;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_TOKEN);
    g.stop = -1; prompt[3 * T] = 99;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_TOKEN);
    prompt[3 * T] = 1; g.max_steps = 0;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    CHECK(c1[0] == 0);
    g.max_steps = -1;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_SHAPE);
    grulite_model_free(m);
    /* A head ending in tanh: greedy only. */
    s.dense.activation = GRULITE_ACT_TANH;
    m = seq_load(&s, 1, GRULITE_FOLD_NEVER, GRULITE_DTYPE_F32);
    g.max_steps = MAX;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_UNSUPPORTED);
    g.sample = 0;
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_OK);
    grulite_model_free(m);
    /* A float model cannot generate. */
    m = seq_load(&s, 0, 0, GRULITE_DTYPE_F32);
    CHECK_RC(grulite_generate(m, ws, &g), GRULITE_E_UNSUPPORTED);
    grulite_model_free(m);
    grulite_workspace_free(ws);
    seq_free(&s);
}

/* ---- Forecasting and stream rows ----------------------------------------------- */

static void test_forecast_and_rows(void)
{
    seq_model s;
    seq_make(&s, 6, 6, 16, 1, GRULITE_ACT_NONE);     /* head size 6 = input size 6 */
    grulite_model *m = seq_load(&s, 0, 0, GRULITE_DTYPE_F32);
    grulite_workspace *ws = grulite_workspace_new();
    enum { B = 3, T = 5, HZ = 4, I = 6 };
    float x[B * T * I], out[B * HZ * I], ref[HZ * I], hn[B * 16], y[T * I];
    for (int i = 0; i < B * T * I; i++) x[i] = rnd(1.0f);
    int32_t lengths[B] = { 5, 2, 4 };
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B; run.steps = T; run.batch_first = 1; run.x = x; run.lengths = lengths; run.h_n = hn;
    set_ctx("forecast", NULL);
    CHECK_RC(grulite_forecast(m, ws, &run, HZ, out), GRULITE_OK);
    for (int b = 0; b < B; b++) {
        grulite_stream *st = NULL;
        grulite_stream_new(m, 1, &st);
        grulite_stream_step(st, x + b * T * I, lengths[b], NULL, y);
        memcpy(ref, y + (lengths[b] - 1) * I, I * sizeof(float));
        for (int k = 1; k < HZ; k++)
            grulite_stream_step(st, ref + (k - 1) * I, 1, NULL, ref + k * I);
        CHECK(!memcmp(ref, out + b * HZ * I, sizeof ref));
        float h[16];
        grulite_stream_get_state(st, h, 16);
        CHECK(!memcmp(h, hn + b * 16, sizeof h));
        grulite_stream_free(st);
    }
    CHECK_RC(grulite_forecast(m, ws, &run, 0, out), GRULITE_E_ARG);

    /* Stream rows: stepping rows {2, 0} of a 3-row stream = a 2-row stream. */
    set_ctx("stream rows", NULL);
    grulite_stream *all = NULL, *two = NULL;
    grulite_stream_new(m, 3, &all);
    grulite_stream_new(m, 2, &two);
    float y3[3 * 2 * I], y2[2 * 2 * I], yr[2 * 2 * I], st3[3 * 16], st2[2 * 16];
    CHECK_RC(grulite_stream_step(all, x, 2, NULL, y3), GRULITE_OK);
    float keep1[16];
    const int32_t one = 1;
    CHECK_RC(grulite_stream_get_rows(all, &one, 1, keep1), GRULITE_OK);
    /* two: rows 2 and 0 of all's state, then the same chunk. */
    const int32_t rows[2] = { 2, 0 };
    CHECK_RC(grulite_stream_get_rows(all, rows, 2, st2), GRULITE_OK);
    CHECK_RC(grulite_stream_set_rows(two, NULL, 0, st2), GRULITE_OK);
    CHECK_RC(grulite_stream_step(two, x + 3 * T * 0, 2, NULL, y2), GRULITE_OK);
    grulite_step step;
    memset(&step, 0, sizeof step);
    step.steps = 2; step.n = 2; step.rows = rows; step.x = x; step.head = yr;
    CHECK_RC(grulite_stream_run(all, &step), GRULITE_OK);
    CHECK(!memcmp(yr, y2, sizeof yr));
    CHECK_RC(grulite_stream_get_rows(two, NULL, 0, st2), GRULITE_OK);
    CHECK_RC(grulite_stream_get_rows(all, rows, 2, st3), GRULITE_OK);
    CHECK(!memcmp(st2, st3, sizeof st2));
    CHECK_RC(grulite_stream_get_rows(all, &one, 1, st3), GRULITE_OK);
    CHECK(!memcmp(keep1, st3, sizeof keep1));            /* row 1 waited */
    CHECK_RC(grulite_stream_reset_rows(all, rows, 2), GRULITE_OK);
    CHECK_RC(grulite_stream_get_state(all, st3, 3 * 16), GRULITE_OK);
    for (int i = 0; i < 16; i++) CHECK(st3[i] == 0.0f && st3[32 + i] == 0.0f);
    CHECK(!memcmp(st3 + 16, keep1, sizeof keep1));
    /* Bad rows: out of range, twice, none. */
    const int32_t dup[2] = { 1, 1 }, out_of[1] = { 3 };
    step.rows = dup;
    CHECK_RC(grulite_stream_run(all, &step), GRULITE_E_ARG);
    step.rows = out_of; step.n = 1;
    CHECK_RC(grulite_stream_run(all, &step), GRULITE_E_ARG);
    step.n = 0; step.rows = rows;
    CHECK_RC(grulite_stream_run(all, &step), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_set_rows(all, dup, 2, st2), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_reset_rows(all, out_of, 1), GRULITE_E_ARG);
    grulite_stream_free(all);
    grulite_stream_free(two);
    grulite_model_free(m);
    grulite_workspace_free(ws);
    seq_free(&s);
}

/* ---- A learned initial state ------------------------------------------------ */

static void test_learned_h0(void)
{
    seq_model s;
    seq_make(&s, 5, 5, 12, 2, GRULITE_ACT_NONE);
    float *h0a = own(&s, 12, 0.8f);
    s.layers[0].has_h0 = 1; s.layers[0].h0[0] = h0a;        /* layer 1 keeps zeros */
    grulite_model *m = seq_load(&s, 0, 0, GRULITE_DTYPE_F32);
    set_ctx("learned h0", NULL);
    CHECK(m != NULL);
    if (!m) { seq_free(&s); return; }
    grulite_layer_info li;
    grulite_model_layer(m, 0, &li);
    CHECK(li.has_h0 == 1);
    grulite_model_layer(m, 1, &li);
    CHECK(li.has_h0 == 0);
    enum { B = 3, T = 4 };
    float x[B * T * 5], y0[B * T * 12], y1[B * T * 12], h[B * 24], hn0[B * 24], hn1[B * 24];
    for (int i = 0; i < B * T * 5; i++) x[i] = rnd(1.0f);
    /* The explicit state: layer 0's learned one on every row, layer 1 zeros. */
    memset(h, 0, sizeof h);
    for (int b = 0; b < B; b++) memcpy(h + b * 12, h0a, 12 * sizeof(float));
    grulite_workspace *ws = grulite_workspace_new();
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B; run.steps = T; run.batch_first = 1; run.x = x; run.y = y0; run.h_n = hn0;
    run.h0 = h;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    run.h0 = NULL; run.y = y1; run.h_n = hn1;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    CHECK(!memcmp(y0, y1, sizeof y0) && !memcmp(hn0, hn1, sizeof hn0));
    /* A stream starts there, and resets there. */
    grulite_stream *st = NULL;
    float got[B * 24];
    grulite_stream_new(m, B, &st);
    CHECK_RC(grulite_stream_get_state(st, got, B * 24), GRULITE_OK);
    CHECK(!memcmp(got, h, sizeof h));
    grulite_stream_step(st, x, T, y1, NULL);
    CHECK(!memcmp(y0, y1, sizeof y0));
    const int32_t row = 1;
    CHECK_RC(grulite_stream_reset_rows(st, &row, 1), GRULITE_OK);
    CHECK_RC(grulite_stream_get_state(st, got, B * 24), GRULITE_OK);
    CHECK(!memcmp(got + 12, h0a, 12 * sizeof(float)) && !memcmp(got, hn0, 12 * sizeof(float)));
    CHECK_RC(grulite_stream_reset(st), GRULITE_OK);
    CHECK_RC(grulite_stream_get_state(st, got, B * 24), GRULITE_OK);
    CHECK(!memcmp(got, h, sizeof h));
    grulite_stream_free(st);
    /* Kept by a conversion. */
    size_t size = 0;
    CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F16, NULL, 0, &size), GRULITE_OK);
    unsigned char *buf = xalloc_aligned(size);
    grulite_model *c = NULL;
    CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F16, buf, size, &size), GRULITE_OK);
    CHECK_RC(grulite_model_load_buffer(buf, size, 0, &c, NULL, 0), GRULITE_OK);
    if (c) {
        grulite_model_layer(c, 0, &li);
        CHECK(li.has_h0 == 1);
        grulite_stream_new(c, B, &st);
        grulite_stream_get_state(st, got, B * 24);
        CHECK(!memcmp(got, h, sizeof h));
        grulite_stream_free(st);
        grulite_model_free(c);
    }
    free(buf);
    grulite_model_free(m);
    grulite_workspace_free(ws);
    seq_free(&s);
}

void test_sequence_models(void)
{
    test_embedding_forward();
    test_generate();
    test_forecast_and_rows();
    test_learned_h0();
}
