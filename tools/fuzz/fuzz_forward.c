/* fuzz_forward.c - libFuzzer target: load a .grl image, then a tiny
 * grulite_forward() and streaming run whose arguments come from the fuzz
 * data: batch 1-3, steps 1-4, lengths (sometimes out of range), h0,
 * batch- or time-major rows, outputs y / h_n / head (last or every step),
 * the kernel set, and inputs with NaN / Inf / huge values.  A model with an
 * embedding gets token ids instead (the special values: an id out of
 * range, where a length may hide it), then greedy generation and a stream
 * stepped on one row.
 *
 * Input layout:
 *
 *   byte 0      mode (fuzz_common.h)
 *   byte 1      bits 0-1 batch-1 (3 -> 1), bits 2-3 steps-1, bit 4 batch_first,
 *               bit 5 lengths, bit 6 h0, bit 7 head_all_steps
 *   byte 2      lengths: 2 bits per row (length = value + 1; may exceed steps)
 *   byte 3      bits 0-2 kernel set (auto, generic, avx2, avx512, avx512vnni,
 *               neon), bit 3 y, bit 4 h_n, bit 5 head, bits 6-7 special values
 *               in x (none, NaN, +-Inf, +-1e30)
 *   bytes 4-7   seed of the input values
 *   byte 8      bits 0-1 threads (1, 2, 3, 0 = default), bits 2-3 first stream
 *               chunk, bit 4 a length of 0
 *   bytes 9-    the image
 *
 * Checked: forward succeeds exactly when the arguments are valid (else the
 * documented code), outputs past a length are +0, streaming (one chunk or
 * two) gives bit for bit the whole-sequence y / h_n / per-step head, and
 * is refused for models with a backward (bidirectional or reverse) layer,
 * state get / set / reset honour their sizes.  Buffers are exact-size heap
 * blocks, so any out-of-bounds write is an ASan report. */
#include "fuzz_common.h"   /* first: it sets _POSIX_C_SOURCE */

#include <math.h>

#define FZ_HDR 9

static const char *const k_isas[8] = { "auto", "generic", "avx2", "avx512", "avx512vnni",
                                       "neon", "auto", "generic" };

/* Same bits, except that any NaN matches any NaN: when two operands of an
 * FMA are NaN, which one comes out (its sign and payload) depends on the
 * instruction form the compiler picked, and the kernel that computes a row
 * depends on how many rows are computed together. */
static int same_floats(const float *a, const float *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (memcmp(a + i, b + i, sizeof(float)) != 0 && !(isnan(a[i]) && isnan(b[i]))) return 0;
    return 1;
}

static float *fz_floats(size_t n)
{
    float *p = malloc(n ? n * sizeof(float) : 1);
    if (!p) abort();
    return p;
}

/* Rows (B, T) or (T, B) of w floats: the row index of (b, t). */
static size_t row_of(int bf, size_t B, size_t T, size_t b, size_t t)
{
    return bf ? b * T + t : t * B + b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < FZ_HDR) return 0;
    const unsigned mode = data[0], a = data[1], lens = data[2], c = data[3], e = data[8];
    const size_t n = size - FZ_HDR;

    unsigned char *img = fz_copy(data + FZ_HDR, n);
    fz_present(img, n, mode);
    grulite_model *m = NULL;
    char msg[256];
    int rc = grulite_model_load_buffer(img, n, GRULITE_LOAD_COPY, &m, msg, sizeof msg);
    free(img);
    if (rc != GRULITE_OK) {
        fz_check_failure(rc, m, msg, sizeof msg);
        return 0;
    }
    grulite_info info;
    grulite_model_info(m, &info);
    const char *isa = k_isas[c & 7u];
    if (grulite_isa_supported(isa) || !strcmp(isa, "auto"))
        FZ_REQUIRE(grulite_model_set_isa(m, isa) == GRULITE_OK, "set_isa %s", isa);
    else
        FZ_REQUIRE(grulite_model_set_isa(m, isa) == GRULITE_E_UNSUPPORTED, "set_isa %s", isa);

    int backward = 0;                /* a layer that runs backwards: no streaming */
    for (int l = 0; l < info.num_layers; l++) {
        grulite_layer_info li;
        grulite_model_layer(m, l, &li);
        backward |= li.num_directions == 2 || li.reverse;
    }

    const size_t B = (a & 3u) == 3 ? 1 : (a & 3u) + 1, T = ((a >> 2) & 3u) + 1;
    const int bf = (a >> 4) & 1, use_len = (a >> 5) & 1, use_h0 = (a >> 6) & 1;
    const int all_steps = (a >> 7) & 1;
    const int want_y = (c >> 3) & 1, want_hn = (c >> 4) & 1;
    const int want_head = ((c >> 5) & 1) && info.num_dense > 0;
    const unsigned special = (c >> 6) & 3u;
    const size_t I = (size_t)info.input_size, O = (size_t)info.output_size;
    const size_t S = (size_t)info.state_size, HS = (size_t)info.head_size;

    fz_rng rng = { (uint64_t)data[4] | (uint64_t)data[5] << 8 | (uint64_t)data[6] << 16 |
                   (uint64_t)data[7] << 24 };
    float *x = fz_floats(B * T * I), *h0 = fz_floats(B * S);
    for (size_t i = 0; i < B * T * I; i++) x[i] = fz_uniform(&rng, 2.0f);
    for (size_t i = 0; i < B * S; i++) h0[i] = fz_uniform(&rng, 1.0f);
    /* Token models: ids (row order of x), one out of range with special. */
    const int32_t V = info.vocab_size;
    int32_t *tok = malloc(B * T * sizeof(int32_t) + 1);
    if (!tok) abort();
    size_t bad_at = (size_t)-1;
    for (size_t i = 0; V && i < B * T; i++) tok[i] = (int32_t)(fz_next(&rng) % (uint64_t)V);
    if (V && special) {
        static const int32_t k_bad[3] = { 0, -1, INT32_MIN };   /* by special: 1, 2 */
        bad_at = fz_next(&rng) % (B * T);
        tok[bad_at] = special == 3 ? V : k_bad[special];
    } else if (special) {
        static const float k_vals[4] = { 0.0f, NAN, INFINITY, 1e30f };
        const size_t at = fz_next(&rng) % (B * T * I);
        x[at] = (fz_next(&rng) & 1) ? k_vals[special] : -k_vals[special];
    }
    int32_t len[3];
    int len_ok = 1;
    for (size_t b = 0; b < B; b++) {
        len[b] = (int32_t)((lens >> (2 * b)) & 3u) + 1;
        if ((e >> 4) & 1 && b == B - 1) len[b] = 0;
        if (len[b] < 1 || (size_t)len[b] > T) len_ok = 0;
    }
    if (!use_len) len_ok = 1;
    /* A bad id is read unless it lies past its row's length. */
    int tok_ok = 1;
    if (bad_at != (size_t)-1) {
        const size_t bb = bf ? bad_at / T : bad_at % B, tt = bf ? bad_at % T : bad_at / B;
        tok_ok = use_len && tt >= (size_t)len[bb];
    }

    grulite_workspace *ws = grulite_workspace_new();
    if (!ws) abort();
    FZ_REQUIRE(grulite_workspace_set_threads(ws, (int)((e + 1) & 3u)) == GRULITE_OK, "threads");

    /* 1. The call the input asks for. */
    float *y = fz_floats(B * T * O), *hn = fz_floats(B * S);
    const size_t head_n = all_steps ? B * T * HS : B * HS;
    float *head = fz_floats(head_n);
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = (int32_t)B;
    run.steps = (int32_t)T;
    run.batch_first = bf;
    run.head_all_steps = all_steps;
    run.x = V ? NULL : x;
    run.tokens = V ? tok : NULL;
    run.lengths = use_len ? len : NULL;
    run.h0 = use_h0 ? h0 : NULL;
    run.y = want_y ? y : NULL;
    run.h_n = want_hn ? hn : NULL;
    run.head = want_head ? head : NULL;
    rc = grulite_forward(m, ws, &run);
    if (!len_ok) {
        FZ_REQUIRE(rc == GRULITE_E_LENGTHS, "bad lengths gave %d", rc);
    } else if (!tok_ok) {
        FZ_REQUIRE(rc == GRULITE_E_TOKEN, "a bad token id gave %d", rc);
    } else {
        FZ_REQUIRE(rc == GRULITE_OK, "forward: %d %s", rc, grulite_strerror(rc));
        if (want_y && use_len) {
            for (size_t b = 0; b < B; b++)
                for (size_t t = (size_t)len[b]; t < T; t++)
                    for (size_t k = 0; k < O; k++) {
                        const float v = y[row_of(bf, B, T, b, t) * O + k];
                        uint32_t bits;
                        memcpy(&bits, &v, 4);
                        FZ_REQUIRE(bits == 0, "y[b=%lu, t=%lu] past length %d is not +0",
                                   (unsigned long)b, (unsigned long)t, (int)len[b]);
                    }
        }
    }
    /* A head on a model without one, and empty shapes, are refused. */
    if (info.num_dense == 0) {
        grulite_run r2 = run;
        r2.lengths = NULL;
        r2.head = head;
        FZ_REQUIRE(grulite_forward(m, ws, &r2) == GRULITE_E_ARG, "head without a head");
    }
    {
        grulite_run r2 = run;
        r2.lengths = NULL;
        r2.steps = 0;
        FZ_REQUIRE(grulite_forward(m, ws, &r2) == GRULITE_E_SHAPE, "0 steps");
        r2.steps = run.steps;                /* floats for ids, or ids for floats */
        r2.x = V ? x : NULL;
        r2.tokens = V ? NULL : tok;
        FZ_REQUIRE(grulite_forward(m, ws, &r2) == GRULITE_E_ARG, "the wrong kind of input");
    }
    if (V && tok_ok) {
        for (size_t i = 0; i < B * T; i++)     /* from here on, every id valid */
            if (tok[i] < 0 || tok[i] >= V) tok[i] = 0;
    }

    /* 2. Streaming: the same numbers as the whole batch-first sequence. */
    grulite_stream *s = NULL;
    rc = grulite_stream_new(m, (int32_t)B, &s);
    if (backward) {
        FZ_REQUIRE(rc == GRULITE_E_UNSUPPORTED && s == NULL,
                   "stream of a model with a backward layer: %d", rc);
    } else {
        FZ_REQUIRE(rc == GRULITE_OK && s != NULL, "stream_new: %d", rc);
        float *xb = fz_floats(B * T * I), *yw = fz_floats(B * T * O), *hw = fz_floats(B * S);
        float *ys = fz_floats(B * T * O), *hs = fz_floats(B * S);
        float *dw = fz_floats(B * T * HS), *ds = fz_floats(B * T * HS);
        int32_t *tb = malloc(B * T * sizeof(int32_t) + 1);
        if (!tb) abort();
        for (size_t b = 0; b < B; b++)          /* x (ids) as batch-first rows */
            for (size_t t = 0; t < T; t++) {
                memcpy(xb + (b * T + t) * I, x + row_of(bf, B, T, b, t) * I, I * sizeof(float));
                if (V) tb[b * T + t] = tok[row_of(bf, B, T, b, t)] < 0 ||
                                       tok[row_of(bf, B, T, b, t)] >= V ? 0 : tok[row_of(bf, B, T, b, t)];
            }
        grulite_run w;
        memset(&w, 0, sizeof w);
        w.batch = (int32_t)B;
        w.steps = (int32_t)T;
        w.batch_first = 1;
        w.head_all_steps = 1;
        w.x = V ? NULL : xb;
        w.tokens = V ? tb : NULL;
        w.h0 = use_h0 ? h0 : NULL;
        w.y = yw;
        w.h_n = hw;
        w.head = info.num_dense ? dw : NULL;
        FZ_REQUIRE(grulite_forward(m, ws, &w) == GRULITE_OK, "whole sequence");

        FZ_REQUIRE(grulite_stream_batch(s) == (int32_t)B, "stream batch");
        FZ_REQUIRE(grulite_stream_set_state(s, h0, B * S + 1) == GRULITE_E_SHAPE, "set_state size");
        FZ_REQUIRE(grulite_stream_get_state(s, hs, B * S - 1) == GRULITE_E_SHAPE, "get_state size");
        if (use_h0) FZ_REQUIRE(grulite_stream_set_state(s, h0, B * S) == GRULITE_OK, "set_state");
        FZ_REQUIRE(grulite_stream_step(s, xb, 0, NULL, NULL) == (V ? GRULITE_E_ARG : GRULITE_E_SHAPE),
                   "0 steps");
        const size_t first = ((e >> 2) & 3u) % T + 1;    /* one chunk, or two */
        if (V) {
            /* Token streams: one chunk through grulite_stream_run. */
            grulite_step st;
            memset(&st, 0, sizeof st);
            st.steps = (int32_t)T;
            st.tokens = tb;
            st.y = ys;
            st.head = info.num_dense ? ds : NULL;
            FZ_REQUIRE(grulite_stream_run(s, &st) == GRULITE_OK, "token stream step");
        } else if (first == T) {
            FZ_REQUIRE(grulite_stream_step(s, xb, (int32_t)T, ys, info.num_dense ? ds : NULL) ==
                       GRULITE_OK, "stream step");
        } else {
            /* Two chunks: rows of (B, chunk, I) each. */
            const size_t rest = T - first;
            float *x1 = fz_floats(B * first * I), *x2 = fz_floats(B * rest * I);
            float *y1 = fz_floats(B * first * O), *y2 = fz_floats(B * rest * O);
            float *d1 = fz_floats(B * first * HS), *d2 = fz_floats(B * rest * HS);
            for (size_t b = 0; b < B; b++) {
                memcpy(x1 + b * first * I, xb + b * T * I, first * I * sizeof(float));
                memcpy(x2 + b * rest * I, xb + (b * T + first) * I, rest * I * sizeof(float));
            }
            FZ_REQUIRE(grulite_stream_step(s, x1, (int32_t)first, y1, info.num_dense ? d1 : NULL) ==
                       GRULITE_OK, "chunk 1");
            FZ_REQUIRE(grulite_stream_step(s, x2, (int32_t)rest, y2, info.num_dense ? d2 : NULL) ==
                       GRULITE_OK, "chunk 2");
            for (size_t b = 0; b < B; b++) {
                memcpy(ys + b * T * O, y1 + b * first * O, first * O * sizeof(float));
                memcpy(ys + (b * T + first) * O, y2 + b * rest * O, rest * O * sizeof(float));
                memcpy(ds + b * T * HS, d1 + b * first * HS, first * HS * sizeof(float));
                memcpy(ds + (b * T + first) * HS, d2 + b * rest * HS, rest * HS * sizeof(float));
            }
            free(x1); free(x2); free(y1); free(y2); free(d1); free(d2);
        }
        FZ_REQUIRE(grulite_stream_get_state(s, hs, B * S) == GRULITE_OK, "get_state");
        FZ_REQUIRE(same_floats(ys, yw, B * T * O),
                   "streamed y differs from the whole sequence (first chunk %lu of %lu)",
                   (unsigned long)first, (unsigned long)T);
        FZ_REQUIRE(same_floats(hs, hw, B * S), "streamed state differs");
        if (info.num_dense)
            FZ_REQUIRE(same_floats(ds, dw, B * T * HS), "streamed head differs");
        /* One row stepped alone: the others keep their state. */
        if (B >= 2) {
            float *before = fz_floats(B * S), *after = fz_floats(B * S);
            float *y1 = fz_floats(O);
            const int32_t row = (int32_t)(B - 1), twice[2] = { 0, 0 };
            grulite_step st;
            memset(&st, 0, sizeof st);
            st.steps = 1;
            st.n = 1;
            st.rows = &row;
            st.x = V ? NULL : xb;
            st.tokens = V ? tb : NULL;
            st.y = y1;
            FZ_REQUIRE(grulite_stream_get_state(s, before, B * S) == GRULITE_OK, "get_state");
            FZ_REQUIRE(grulite_stream_run(s, &st) == GRULITE_OK, "stream row step");
            FZ_REQUIRE(grulite_stream_get_state(s, after, B * S) == GRULITE_OK, "get_state");
            /* Blocks of (B, H_l): every row but the last is unchanged. */
            size_t off = 0;
            for (int l = 0; l < info.num_layers; l++) {
                grulite_layer_info li;
                grulite_model_layer(m, l, &li);
                const size_t H = (size_t)li.hidden_size;
                for (int d = 0; d < li.num_directions; d++, off += B * H)
                    FZ_REQUIRE(!memcmp(before + off, after + off, (B - 1) * H * sizeof(float)),
                               "a row not listed changed");
            }
            st.rows = twice;
            st.n = 2;
            FZ_REQUIRE(grulite_stream_run(s, &st) == GRULITE_E_ARG, "a row listed twice");
            FZ_REQUIRE(grulite_stream_reset_rows(s, &row, 1) == GRULITE_OK, "reset_rows");
            free(before); free(after); free(y1);
        }
        /* A reset stream is a new one: the initial state (learned, or zeros). */
        FZ_REQUIRE(grulite_stream_reset(s) == GRULITE_OK, "reset");
        FZ_REQUIRE(grulite_stream_get_state(s, hs, B * S) == GRULITE_OK, "get_state");
        {
            grulite_stream *fresh = NULL;
            float *h_new = fz_floats(B * S);
            FZ_REQUIRE(grulite_stream_new(m, (int32_t)B, &fresh) == GRULITE_OK, "stream_new");
            FZ_REQUIRE(grulite_stream_get_state(fresh, h_new, B * S) == GRULITE_OK, "get_state");
            FZ_REQUIRE(!memcmp(hs, h_new, B * S * sizeof(float)), "reset state is not the initial state");
            int learned = 0;
            for (int l = 0; l < info.num_layers; l++) {
                grulite_layer_info li;
                grulite_model_layer(m, l, &li);
                learned |= li.has_h0;
            }
            for (size_t i = 0; !learned && i < B * S; i++)
                FZ_REQUIRE(h_new[i] == 0.0f, "initial state of a model with no learned h0 not zero");
            grulite_stream_free(fresh);
            free(h_new);
        }
        free(xb); free(yw); free(hw); free(ys); free(hs); free(dw); free(ds);

        /* 3. Greedy generation from the same ids: counts and ids in range. */
        if (V && info.head_size == V) {
            int32_t out[3 * 3], counts[3];
            for (int i = 0; i < 9; i++) out[i] = -1;      /* slots past a count stay as they were */
            grulite_generation g;
            memset(&g, 0, sizeof g);
            g.batch = (int32_t)B;
            g.steps = (int32_t)T;
            g.prompt = tb;
            g.lengths = use_len && len_ok ? len : NULL;
            g.h0 = use_h0 ? h0 : NULL;
            g.stop = (int32_t)(e >> 5) % V;
            g.max_steps = 3;
            g.sample = (e >> 7) & 1;
            g.temperature = 0.7f;
            g.top_p = 0.9f;
            g.seed = rng.s;
            g.tokens = out;
            g.counts = counts;
            rc = grulite_generate(m, ws, &g);
            grulite_dense_info last;
            grulite_model_dense(m, info.num_dense - 1, &last);
            if (g.sample && last.activation != GRULITE_ACT_NONE && last.activation != GRULITE_ACT_SOFTMAX) {
                FZ_REQUIRE(rc == GRULITE_E_UNSUPPORTED, "sampling a non-softmax head gave %d", rc);
            } else {
                FZ_REQUIRE(rc == GRULITE_OK, "generate: %d", rc);
                for (size_t b = 0; b < B; b++) {
                    FZ_REQUIRE(counts[b] >= 0 && counts[b] <= 3, "count %d", (int)counts[b]);
                    for (int i = 0; i < 3; i++)
                        FZ_REQUIRE(i < counts[b] ? out[b * 3 + (size_t)i] >= 0 &&
                                   out[b * 3 + (size_t)i] < V && out[b * 3 + (size_t)i] != g.stop
                                   : out[b * 3 + (size_t)i] == -1, "generated id");
                }
            }
        }
        free(tb);
    }
    grulite_stream_free(s);

    grulite_workspace_free(ws);
    free(x); free(h0); free(y); free(hn); free(head); free(tok);
    grulite_model_free(m);
    return 0;
}
