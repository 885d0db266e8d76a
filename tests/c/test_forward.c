/*
 * test_forward.c - numerics against the fixtures; argument errors of grulite_forward.
 */
#include "harness.h"

/* ---- 4. Numerics against the fixtures -------------------------------------- */

void test_numerics(const fixture *f)
{
    set_ctx("numerics", f->name);
    grulite_model_spec spec = fixture_spec(f);
    size_t size = 0;
    unsigned char *img = serialize(&spec, &size);
    if (!img) return;
    grulite_model *m = NULL;
    char msg[256];
    int rc = grulite_model_load_buffer(img, size, 0, &m, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_OK);
    if (!m) { printf("     %s\n", msg); free(img); return; }
    apply_isa(m);
    check_info(m, f, 1);

    const int B = f->B, T = f->T;
    const size_t ny = (size_t)B * T * f->out_w, nh = (size_t)B * f->state;
    const size_t nd = (size_t)B * f->head_size, nda = (size_t)B * T * f->head_size;
    const size_t nx = (size_t)B * T * f->I;
    float *y = xcalloc(ny, 4), *h_n = xcalloc(nh, 4), *head = xcalloc(nd, 4),
          *head_all = xcalloc(nda, 4);
    grulite_workspace *ws = grulite_workspace_new();
    CHECK(ws != NULL);

    /* Batch-first, head on the last valid step. */
    memset(y, 0xFF, ny * 4);   /* NaN: positions past a length must be written */
    CHECK_RC(run_fixture(m, ws, f, y, h_n, f->N ? head : NULL, 0), GRULITE_OK);
    CHECK(near(y, f->y, ny, TOL, "y"));
    CHECK(near(h_n, f->h_n, nh, TOL, "h_n"));
    if (f->N) CHECK(near(head, f->head, nd, TOL, "head"));
    printf("numerics: %-24s %-10s max |diff| y %.2g, h_n %.2g, head %.2g (tolerance %.0e)\n",
           f->name, grulite_model_isa(m), max_diff(y, f->y, ny), max_diff(h_n, f->h_n, nh),
           max_diff(head, f->head, f->N ? nd : 0), (double)TOL);
    CHECK(grulite_workspace_bytes(ws) > 0);

    /* Head on every step. */
    if (f->N) {
        float *y2 = xcalloc(ny, 4);
        memset(head_all, 0xFF, nda * 4);
        CHECK_RC(run_fixture(m, ws, f, y2, NULL, head_all, 1), GRULITE_OK);
        CHECK(near(head_all, f->head_all, nda, TOL, "head_all"));
        CHECK(memcmp(y2, y, ny * 4) == 0);
        /* Only the head (no y, no h_n): the same bits. */
        float *hd = xcalloc(nd, 4), *hda = xcalloc(nda, 4);
        CHECK_RC(run_fixture(m, ws, f, NULL, NULL, hd, 0), GRULITE_OK);
        CHECK(memcmp(hd, head, nd * 4) == 0);
        CHECK_RC(run_fixture(m, ws, f, NULL, NULL, hda, 1), GRULITE_OK);
        CHECK(memcmp(hda, head_all, nda * 4) == 0);
        free(hd);
        free(hda);
        free(y2);
    }
    /* Only h_n: the same bits. */
    float *h2 = xcalloc(nh, 4);
    CHECK_RC(run_fixture(m, ws, f, NULL, h2, NULL, 0), GRULITE_OK);
    CHECK(memcmp(h2, h_n, nh * 4) == 0);
    /* Nothing requested at all is still a valid call. */
    CHECK_RC(run_fixture(m, ws, f, NULL, NULL, NULL, 0), GRULITE_OK);

    /* lengths == NULL and lengths all T agree bit for bit. */
    if (!f->has_lengths) {
        int32_t *full = xmalloc((size_t)B * sizeof(int32_t));
        for (int b = 0; b < B; b++) full[b] = T;
        grulite_run run;
        memset(&run, 0, sizeof run);
        run.batch = B; run.steps = T; run.batch_first = 1;
        run.x = f->x; run.h0 = f->h0; run.lengths = full;
        float *y3 = xcalloc(ny, 4);
        run.y = y3; run.h_n = h2;
        CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
        CHECK(memcmp(y3, y, ny * 4) == 0);
        CHECK(memcmp(h2, h_n, nh * 4) == 0);
        free(y3);
        free(full);
    }

    /* Time-major: x transposed to (T, B, I); y and per-step heads come back
     * (T, B, .); the last-step head and h_n keep their layouts. */
    {
        float *xt = xmalloc(nx * 4), *yt = xcalloc(ny, 4), *yb = xcalloc(ny, 4);
        float *hdt = xcalloc(nd, 4), *hat = xcalloc(nda, 4), *hab = xcalloc(nda, 4);
        bt_to_tb(f->x, xt, B, T, (size_t)f->I);
        grulite_run run;
        memset(&run, 0, sizeof run);
        run.batch = B; run.steps = T; run.batch_first = 0;
        run.x = xt; run.lengths = f->lengths; run.h0 = f->h0;
        run.y = yt; run.h_n = h2; run.head = f->N ? hdt : NULL;
        memset(yt, 0xFF, ny * 4);
        CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
        tb_to_bt(yt, yb, B, T, (size_t)f->out_w);
        CHECK(near(yb, f->y, ny, TOL, "y (time-major)"));
        CHECK(memcmp(yb, y, ny * 4) == 0);
        CHECK(near(h2, f->h_n, nh, TOL, "h_n (time-major)"));
        CHECK(memcmp(h2, h_n, nh * 4) == 0);
        if (f->N) {
            CHECK(near(hdt, f->head, nd, TOL, "head (time-major)"));
            run.head = hat;
            run.head_all_steps = 1;
            CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
            tb_to_bt(hat, hab, B, T, (size_t)f->head_size);
            CHECK(near(hab, f->head_all, nda, TOL, "head_all (time-major)"));
        }
        free(xt); free(yt); free(yb); free(hdt); free(hat); free(hab);
    }

    /* A loaded mmap / copy / borrowed model all give the same bits:
     * covered in test_model_io.  Here: the workspace outlives the model. */
    grulite_model_free(m);
    free(img);
    grulite_model *m2 = load_spec(&spec);
    if (m2) {
        float *y4 = xcalloc(ny, 4);
        CHECK_RC(run_fixture(m2, ws, f, y4, h2, NULL, 0), GRULITE_OK);
        CHECK(memcmp(y4, y, ny * 4) == 0);
        CHECK(memcmp(h2, h_n, nh * 4) == 0);
        free(y4);
        grulite_model_free(m2);
    }
    grulite_workspace_free(ws);
    free(y); free(h_n); free(head); free(head_all); free(h2);
}

/* ---- 6. Argument errors of grulite_forward ----------------------------------- */

void test_forward_args(const fixture *f)
{
    set_ctx("forward arguments", f->name);
    grulite_model_spec spec = fixture_spec(f);
    grulite_model *m = load_spec(&spec);
    if (!m) return;
    const int B = f->B, T = f->T;
    float *y = xcalloc((size_t)B * T * f->out_w, 4), *head = xcalloc((size_t)B * T * 64 + 64, 4);
    int32_t *len = xmalloc((size_t)B * sizeof(int32_t));
    grulite_workspace *ws = grulite_workspace_new();
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B; run.steps = T; run.batch_first = 1; run.x = f->x; run.y = y;

    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    for (int b = 0; b < B; b++) len[b] = T;
    run.lengths = len;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    len[B - 1] = 0;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_LENGTHS);
    len[B - 1] = T + 1;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_LENGTHS);
    len[B - 1] = -1;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_LENGTHS);
    len[0] = INT32_MIN;
    len[B - 1] = 1;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_LENGTHS);
    run.lengths = NULL;

    run.batch = 0;
    CHECK(grulite_forward(m, ws, &run) < 0);
    run.batch = -1;
    CHECK(grulite_forward(m, ws, &run) < 0);
    run.batch = B;
    run.steps = 0;
    CHECK(grulite_forward(m, ws, &run) < 0);
    /* Sizes whose scratch overflows size_t: refused before any access. */
    run.y = NULL;
    run.batch = INT32_MAX;
    run.steps = INT32_MAX;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_TOO_LARGE);
    run.batch = B;
    run.y = y;
    run.steps = T;

    run.head = head;
    if (f->N == 0) {
        CHECK(grulite_forward(m, ws, &run) < 0);           /* no head to run */
        run.head_all_steps = 1;
        CHECK(grulite_forward(m, ws, &run) < 0);
        run.head_all_steps = 0;
    } else {
        CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
    }
    run.head = NULL;

    CHECK_RC(grulite_forward(NULL, ws, &run), GRULITE_E_ARG);
    CHECK_RC(grulite_forward(m, NULL, &run), GRULITE_E_ARG);
    CHECK_RC(grulite_forward(m, ws, NULL), GRULITE_E_ARG);
    run.x = NULL;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_E_ARG);
    run.x = f->x;
    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);   /* nothing left broken */

    grulite_workspace_free(ws);
    free(y);
    free(head);
    free(len);
    grulite_model_free(m);
}
