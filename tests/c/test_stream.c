/*
 * test_stream.c - streaming gives the whole-sequence result, chunk by chunk.
 */
#include "harness.h"

/* ---- 5. Streaming ------------------------------------------------------------- */

/* Feeds f's batch (no lengths) through a stream in chunks of chunk[i % n]
 * steps, collecting y and per-step heads into (B, T, .) arrays. */
static int stream_run(grulite_stream *s, const fixture *f, const int *chunk, int n_chunk,
                      float *y, float *head_all)
{
    const int B = f->B, T = f->T;
    const size_t I = (size_t)f->I, W = (size_t)f->out_w, HS = (size_t)f->head_size;
    float *xs = xmalloc((size_t)B * T * I * 4), *ys = xmalloc((size_t)B * T * W * 4);
    float *hs = xmalloc(((size_t)B * T * HS + 1) * 4);
    int t0 = 0, i = 0, rc = GRULITE_OK;
    while (t0 < T && rc == GRULITE_OK) {
        int k = chunk[i++ % n_chunk];
        if (k > T - t0) k = T - t0;
        for (int b = 0; b < B; b++)
            memcpy(xs + (size_t)b * k * I, f->x + ((size_t)b * T + t0) * I, (size_t)k * I * 4);
        rc = grulite_stream_step(s, xs, k, y ? ys : NULL, head_all ? hs : NULL);
        for (int b = 0; b < B && rc == GRULITE_OK; b++) {
            if (y)
                memcpy(y + ((size_t)b * T + t0) * W, ys + (size_t)b * k * W, (size_t)k * W * 4);
            if (head_all)
                memcpy(head_all + ((size_t)b * T + t0) * HS, hs + (size_t)b * k * HS,
                       (size_t)k * HS * 4);
        }
        t0 += k;
    }
    free(xs);
    free(ys);
    free(hs);
    return rc;
}

void test_stream(const fixture *f)
{
    set_ctx("stream", f->name);
    grulite_model_spec spec = fixture_spec(f);
    grulite_model *m = load_spec(&spec);
    if (!m) return;
    grulite_stream *s = not_null();
    if (f->bidirectional) {
        CHECK_RC(grulite_stream_new(m, 1, &s), GRULITE_E_UNSUPPORTED);
        CHECK(s == NULL);
        grulite_model_free(m);
        return;
    }
    const int B = f->B, T = f->T;
    const size_t ny = (size_t)B * T * f->out_w, nh = (size_t)B * f->state;
    const size_t nda = (size_t)B * T * f->head_size;

    /* The whole-sequence reference (no lengths: a stream has none). */
    grulite_workspace *ws = grulite_workspace_new();
    float *y = xcalloc(ny, 4), *h_n = xcalloc(nh, 4), *ha = xcalloc(nda, 4);
    float *y0 = xcalloc(ny, 4), *h_n0 = xcalloc(nh, 4), *ha0 = xcalloc(nda, 4);
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B; run.steps = T; run.batch_first = 1; run.head_all_steps = 1;
    run.x = f->x; run.h0 = f->h0; run.y = y; run.h_n = h_n; run.head = f->N ? ha : NULL;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    if (!f->has_lengths) CHECK(near(y, f->y, ny, TOL, "y (forward, stream reference)"));
    run.h0 = NULL; run.y = y0; run.h_n = h_n0; run.head = f->N ? ha0 : NULL;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);

    CHECK_RC(grulite_stream_new(m, B, &s), GRULITE_OK);
    if (!s) goto out;
    CHECK(grulite_stream_batch(s) == B);
    float *st = xcalloc(nh, 4), *ys = xcalloc(ny, 4), *has = xcalloc(nda, 4);
    float *zero = xcalloc(nh, 4);
    CHECK_RC(grulite_stream_get_state(s, st, nh), GRULITE_OK);
    CHECK(memcmp(st, zero, nh * 4) == 0);   /* initially zero */

    static const int one[1] = { 1 }, mixed[4] = { 2, 1, 3, 4 }, all[1] = { 1 << 20 };
    const int *plans[3] = { one, mixed, all };
    const int plan_n[3] = { 1, 4, 1 };
    const char *plan_name[3] = { "one step at a time", "chunks 2,1,3,4", "one call" };
    for (int p = 0; p < 3; p++) {
        char ctx[128];
        snprintf(ctx, sizeof ctx, "%s, %s", f->name, plan_name[p]);
        set_ctx("stream", ctx);
        /* From h0 (set_state). */
        if (f->h0) CHECK_RC(grulite_stream_set_state(s, f->h0, nh), GRULITE_OK);
        else CHECK_RC(grulite_stream_reset(s), GRULITE_OK);
        memset(ys, 0xFF, ny * 4);
        CHECK_RC(stream_run(s, f, plans[p], plan_n[p], ys, f->N ? has : NULL), GRULITE_OK);
        CHECK(memcmp(ys, y, ny * 4) == 0);
        if (f->N) CHECK(memcmp(has, ha, nda * 4) == 0);
        CHECK_RC(grulite_stream_get_state(s, st, nh), GRULITE_OK);
        CHECK(memcmp(st, h_n, nh * 4) == 0);
        /* After reset: the zero-state run. */
        CHECK_RC(grulite_stream_reset(s), GRULITE_OK);
        CHECK_RC(grulite_stream_get_state(s, st, nh), GRULITE_OK);
        CHECK(memcmp(st, zero, nh * 4) == 0);
        CHECK_RC(stream_run(s, f, plans[p], plan_n[p], ys, NULL), GRULITE_OK);
        CHECK(memcmp(ys, y0, ny * 4) == 0);
        CHECK_RC(grulite_stream_get_state(s, st, nh), GRULITE_OK);
        CHECK(memcmp(st, h_n0, nh * 4) == 0);
        /* Only the head, or nothing (the state still advances). */
        CHECK_RC(grulite_stream_reset(s), GRULITE_OK);
        if (f->N) {
            CHECK_RC(stream_run(s, f, plans[p], plan_n[p], NULL, has), GRULITE_OK);
            CHECK(memcmp(has, ha0, nda * 4) == 0);
        } else {
            CHECK_RC(stream_run(s, f, plans[p], plan_n[p], NULL, NULL), GRULITE_OK);
        }
        CHECK_RC(grulite_stream_get_state(s, st, nh), GRULITE_OK);
        CHECK(memcmp(st, h_n0, nh * 4) == 0);
    }
    set_ctx("stream", f->name);

    /* Arguments. */
    float xdummy[64] = { 0 }, ydummy[64];
    CHECK_RC(grulite_stream_step(NULL, xdummy, 1, NULL, NULL), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_step(s, NULL, 1, NULL, NULL), GRULITE_E_ARG);
    CHECK(grulite_stream_step(s, xdummy, 0, NULL, NULL) < 0);
    CHECK(grulite_stream_step(s, xdummy, -3, NULL, NULL) < 0);
    if (!f->N && B * f->I <= 64) CHECK_RC(grulite_stream_step(s, xdummy, 1, NULL, ydummy), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_get_state(s, st, nh - 1), GRULITE_E_SHAPE);
    CHECK_RC(grulite_stream_get_state(s, st, nh + 1), GRULITE_E_SHAPE);
    CHECK_RC(grulite_stream_set_state(s, st, nh + 1), GRULITE_E_SHAPE);
    CHECK_RC(grulite_stream_get_state(s, NULL, nh), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_set_state(s, NULL, nh), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_get_state(NULL, st, nh), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_set_state(NULL, st, nh), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_reset(NULL), GRULITE_E_ARG);
    grulite_stream *s2 = not_null();
    CHECK_RC(grulite_stream_new(m, 0, &s2), GRULITE_E_ARG);
    CHECK(s2 == NULL);
    CHECK_RC(grulite_stream_new(NULL, 1, &s2), GRULITE_E_ARG);
    CHECK_RC(grulite_stream_new(m, 1, NULL), GRULITE_E_ARG);

    grulite_stream_free(s);   /* streams before their model */
    free(st); free(ys); free(has); free(zero);
out:
    grulite_workspace_free(ws);
    free(y); free(h_n); free(ha); free(y0); free(h_n0); free(ha0);
    grulite_model_free(m);
}
