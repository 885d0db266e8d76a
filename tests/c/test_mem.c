/*
 * test_mem.c - models, workspaces and streams in memory the caller gives
 * (grulite_*_mem_size, grulite_model_load_mem, grulite_workspace_init,
 * grulite_stream_init): the numbers of the allocating API bit for bit,
 * exactly the memory the queries say, and GRULITE_E_BUFFER below it.
 * (Hostile images go through grulite_model_load_mem too: test_load.c.)
 */
#include "harness.h"

/* A block of n bytes whose start is `offset` past a 64-byte boundary (the
 * API asks no alignment of it); free with free(*base). */
static unsigned char *block_at(size_t n, size_t offset, void **base)
{
    unsigned char *p = xalloc_aligned(n + offset + 1);
    *base = p;
    return p + offset;
}

/* f's model loaded into caller memory (mem_size bytes at offset). */
static grulite_model *load_in(const unsigned char *img, size_t size, size_t mem_size, size_t offset,
                              void **base, int *rc, char *msg, size_t msg_size)
{
    unsigned char *mem = block_at(mem_size, offset, base);
    grulite_model *m = not_null();
    *rc = grulite_model_load_mem(img, size, mem, mem_size, &m, msg, msg_size);
    return m;
}

static void test_model_mem(const fixture *f, const unsigned char *img, size_t size)
{
    const size_t need = grulite_model_mem_size(img, size);
    CHECK(need > 0);
    CHECK(grulite_model_mem_size(img, 10) == 0);               /* no header */
    CHECK(grulite_model_mem_size(NULL, 0) == 0);
    grulite_model *ref = NULL;
    CHECK_RC(grulite_model_load_buffer(img, size, 0, &ref, NULL, 0), GRULITE_OK);
    grulite_info want, got;
    if (ref) grulite_model_info(ref, &want);

    for (size_t offset = 0; offset < 64; offset += 13) {       /* any alignment of mem */
        void *base;
        int rc;
        char msg[200];
        grulite_model *m = load_in(img, size, need, offset, &base, &rc, msg, sizeof msg);
        CHECK_RC(rc, GRULITE_OK);
        if (m && ref) {
            grulite_model_info(m, &got);
            CHECK(memcmp(&got, &want, sizeof got) == 0);
        }
        grulite_model_free(m);         /* frees nothing: ASan would see a bad free */
        free(base);
    }
    {   /* 16-byte aligned memory needs none of the padding the query adds */
        void *base;
        int rc;
        grulite_model *m = load_in(img, size, need - 15, 0, &base, &rc, NULL, 0);
        CHECK_RC(rc, GRULITE_OK);
        CHECK(m != NULL);
        free(base);
    }
    /* Below the query, misaligned images, NULL memory: clear errors. */
    void *base;
    int rc;
    char msg[200];
    grulite_model *m = load_in(img, size, need - 16, 0, &base, &rc, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_E_BUFFER);
    CHECK(m == NULL && strstr(msg, "grulite_model_mem_size") != NULL);
    free(base);
    unsigned char *moved = xalloc_aligned(size + 64);
    memcpy(moved + 8, img, size);
    m = load_in(moved + 8, size, need, 0, &base, &rc, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_E_ALIGN);
    CHECK(m == NULL);
    free(base);
    free(moved);
    m = not_null();
    CHECK_RC(grulite_model_load_mem(img, size, NULL, need, &m, NULL, 0), GRULITE_E_ARG);
    CHECK(m == NULL);
    CHECK_RC(grulite_model_load_mem(img, size, msg, sizeof msg, NULL, NULL, 0), GRULITE_E_ARG);
    grulite_model_free(ref);
    (void)f;
}

/* The forward pass with a workspace in caller memory: the allocating
 * workspace's numbers, for every combination of outputs. */
static void test_workspace_mem(const fixture *f, const grulite_model *m)
{
    const size_t need = grulite_workspace_mem_size(m, f->B, f->T);
    CHECK(need > 0);
    CHECK(grulite_workspace_mem_size(NULL, f->B, f->T) == 0);
    CHECK(grulite_workspace_mem_size(m, 0, f->T) == 0 && grulite_workspace_mem_size(m, f->B, 0) == 0);
    CHECK(grulite_workspace_mem_size(m, INT32_MAX, INT32_MAX) == 0);        /* overflows */

    const size_t ny = (size_t)f->B * f->T * f->out_w, nh = (size_t)f->B * f->state;
    const size_t nhd = (size_t)f->B * f->T * (f->head_size ? f->head_size : 1);
    float *y0 = xcalloc(ny, 4), *h0 = xcalloc(nh, 4), *d0 = xcalloc(nhd, 4);
    float *y1 = xcalloc(ny, 4), *h1 = xcalloc(nh, 4), *d1 = xcalloc(nhd, 4);
    grulite_workspace *heap = grulite_workspace_new();
    grulite_workspace_set_threads(heap, 1);

    void *base;
    unsigned char *mem = block_at(need, 5, &base);
    grulite_workspace *ws = not_null();
    CHECK_RC(grulite_workspace_init(mem, need, &ws), GRULITE_OK);
    CHECK(grulite_workspace_threads(ws) == 1);
    CHECK_RC(grulite_workspace_set_threads(ws, 1), GRULITE_OK);
    CHECK_RC(grulite_workspace_set_threads(ws, 2), GRULITE_E_UNSUPPORTED);
    CHECK(grulite_workspace_bytes(ws) > 0 && grulite_workspace_bytes(ws) < need);

    /* Less than the query: calls run in smaller chunks of rows (the same
     * numbers) while one row fits; a workspace too small for that refuses
     * before writing anything. */
    void *tight_base;
    unsigned char *tight = block_at(need, 0, &tight_base);
    grulite_workspace *tws = NULL, *tiny = NULL;
    CHECK_RC(grulite_workspace_init(tight, need - 63 - 64, &tws), GRULITE_OK);
    CHECK_RC(grulite_workspace_init(tight, 64 + 256, &tiny), GRULITE_OK);

    for (int y = 0; y < 2; y++) {
        for (int head = 0; head < (f->N ? 3 : 1); head++) {
            float *hd0 = head ? d0 : NULL, *hd1 = head ? d1 : NULL;
            memset(y1, 0, ny * 4);
            CHECK_RC(run_fixture(m, heap, f, y ? y0 : NULL, h0, hd0, head == 2), GRULITE_OK);
            CHECK_RC(run_fixture(m, ws, f, y ? y1 : NULL, h1, hd1, head == 2), GRULITE_OK);
            if (y) CHECK(memcmp(y0, y1, ny * 4) == 0);
            CHECK(memcmp(h0, h1, nh * 4) == 0);
            if (head) CHECK(memcmp(d0, d1, nhd * 4) == 0);
            if (tws) {
                const int rc = run_fixture(m, tws, f, y ? y1 : NULL, h1, hd1, head == 2);
                CHECK(rc == GRULITE_OK || rc == GRULITE_E_BUFFER);
                if (rc == GRULITE_OK) CHECK(memcmp(h0, h1, nh * 4) == 0);
            }
            if (tiny) {
                memset(h1, 0x7f, nh * 4);
                CHECK_RC(run_fixture(m, tiny, f, y ? y1 : NULL, h1, hd1, head == 2),
                         GRULITE_E_BUFFER);
                CHECK(((unsigned char *)h1)[0] == 0x7f);         /* untouched */
            }
        }
    }
    grulite_run run;
    memset(&run, 0, sizeof run);

    /* Sized for many rows of many steps: fewer rows or fewer steps fit too
     * (a shorter sequence runs in smaller chunks of rows: same numbers).
     * Not in the quick run (valgrind's): the plain, ASan and emulated ones
     * have it. */
    if (!getenv("GRULITE_TEST_QUICK")) {
        const int32_t BB = 11000, TT = 400;
        const size_t big = grulite_workspace_mem_size(m, BB, TT);
        void *bbase;
        unsigned char *bmem = block_at(big, 0, &bbase);
        grulite_workspace *bws = NULL;
        CHECK_RC(grulite_workspace_init(bmem, big, &bws), GRULITE_OK);
        /* (11000, 1): the T = 1 chunk holds every row, more than the
         * T = 400 one needs for its 32; a few row-steps, cheap even under
         * an emulator. */
        static const int32_t shapes[3][2] = { { 11000, 1 }, { 5000, 2 }, { 1, 1 } };
        for (int i = 0; i < 3 && bws; i++) {
            const size_t nx = (size_t)shapes[i][0] * shapes[i][1] * f->I;
            const size_t no = (size_t)shapes[i][0] * f->state;
            float *xs2 = xcalloc(nx, 4), *o1 = xcalloc(no, 4), *o2 = xcalloc(no, 4);
            for (size_t k = 0; k < nx; k++) xs2[k] = (float)((k * 7919) % 201) / 100.0f - 1.0f;
            memset(&run, 0, sizeof run);
            run.batch = shapes[i][0]; run.steps = shapes[i][1]; run.batch_first = 1;
            run.x = xs2;
            run.h_n = o1;
            CHECK_RC(grulite_forward(m, bws, &run), GRULITE_OK);
            run.h_n = o2;
            CHECK_RC(grulite_forward(m, heap, &run), GRULITE_OK);
            CHECK(memcmp(o1, o2, no * 4) == 0);
            free(xs2); free(o1); free(o2);
        }
        free(bbase);
    }

    grulite_workspace_free(ws);                    /* frees nothing */
    grulite_workspace_free(tws);
    grulite_workspace_free(tiny);
    CHECK_RC(grulite_workspace_init(mem, 8, &ws), GRULITE_E_BUFFER);
    CHECK(ws == NULL);
    CHECK_RC(grulite_workspace_init(NULL, need, &ws), GRULITE_E_ARG);
    CHECK_RC(grulite_workspace_init(mem, need, NULL), GRULITE_E_ARG);
    free(base);
    free(tight_base);
    grulite_workspace_free(heap);
    free(y0); free(h0); free(d0); free(y1); free(h1); free(d1);
}

/* A stream in caller memory: the allocating stream's numbers step by step,
 * with listed rows too. */
static void test_stream_mem(const fixture *f, const grulite_model *m)
{
    const int32_t chunk = 3;
    const size_t need = grulite_stream_mem_size(m, f->B, chunk);
    grulite_stream *s = not_null();
    if (f->bidirectional) {
        CHECK(need == 0);
        unsigned char mem[256];
        CHECK_RC(grulite_stream_init(m, 1, 1, mem, sizeof mem, &s), GRULITE_E_UNSUPPORTED);
        CHECK(s == NULL);
        return;
    }
    CHECK(need > 0);
    CHECK(grulite_stream_mem_size(m, f->B, 0) == 0 && grulite_stream_mem_size(m, 0, 1) == 0);
    void *base;
    unsigned char *mem = block_at(need, 1, &base);      /* all the padding used */
    CHECK_RC(grulite_stream_init(m, f->B, chunk, mem, need - 1, &s), GRULITE_E_BUFFER);
    CHECK(s == NULL);
    CHECK_RC(grulite_stream_init(m, f->B, chunk, mem, need, &s), GRULITE_OK);
    grulite_stream *ref = NULL;
    CHECK_RC(grulite_stream_new(m, f->B, &ref), GRULITE_OK);
    if (!s || !ref) { grulite_stream_free(ref); free(base); return; }
    CHECK(grulite_stream_batch(s) == f->B);

    const size_t I = (size_t)f->I, W = (size_t)f->out_w, HS = (size_t)f->head_size;
    const size_t nh = (size_t)f->B * f->state;
    float *x = xcalloc((size_t)f->B * chunk * I, 4);
    float *y0 = xcalloc((size_t)f->B * chunk * W, 4), *y1 = xcalloc((size_t)f->B * chunk * W, 4);
    float *d0 = xcalloc((size_t)f->B * chunk * (HS ? HS : 1), 4);
    float *d1 = xcalloc((size_t)f->B * chunk * (HS ? HS : 1), 4);
    float *s0 = xcalloc(nh, 4), *s1 = xcalloc(nh, 4);
    for (int t0 = 0, k = 1; t0 < f->T; t0 += k, k = k % chunk + 1) {
        if (k > f->T - t0) k = f->T - t0;
        for (int b = 0; b < f->B; b++)
            memcpy(x + (size_t)b * k * I, f->x + ((size_t)b * f->T + t0) * I, (size_t)k * I * 4);
        CHECK_RC(grulite_stream_step(ref, x, k, y0, f->N ? d0 : NULL), GRULITE_OK);
        CHECK_RC(grulite_stream_step(s, x, k, y1, f->N ? d1 : NULL), GRULITE_OK);
        CHECK(memcmp(y0, y1, (size_t)f->B * k * W * 4) == 0);
        if (f->N) CHECK(memcmp(d0, d1, (size_t)f->B * k * HS * 4) == 0);
    }
    CHECK_RC(grulite_stream_get_state(ref, s0, nh), GRULITE_OK);
    CHECK_RC(grulite_stream_get_state(s, s1, nh), GRULITE_OK);
    CHECK(memcmp(s0, s1, nh * 4) == 0);

    /* Listed rows: the last row alone, one step. */
    const int32_t last = f->B - 1;
    grulite_step st = { 1, 1, &last, x, NULL, y0, NULL };
    CHECK_RC(grulite_stream_run(ref, &st), GRULITE_OK);
    st.y = y1;
    CHECK_RC(grulite_stream_run(s, &st), GRULITE_OK);
    CHECK(memcmp(y0, y1, W * 4) == 0);
    CHECK_RC(grulite_stream_get_state(ref, s0, nh), GRULITE_OK);
    CHECK_RC(grulite_stream_get_state(s, s1, nh), GRULITE_OK);
    CHECK(memcmp(s0, s1, nh * 4) == 0);

    /* Many more steps than it was made for: refused, the state kept. */
    const int32_t many = 8 * chunk;
    float *xl = xcalloc((size_t)f->B * many * I, 4), *yl = xcalloc((size_t)f->B * many * W, 4);
    CHECK_RC(grulite_stream_step(s, xl, many, yl, NULL), GRULITE_E_BUFFER);
    CHECK_RC(grulite_stream_get_state(s, s1, nh), GRULITE_OK);
    CHECK(memcmp(s0, s1, nh * 4) == 0);
    free(yl);
    CHECK_RC(grulite_stream_reset(s), GRULITE_OK);

    grulite_stream_free(s);                        /* frees nothing */
    grulite_stream_free(ref);
    free(base);
    free(x); free(xl); free(y0); free(y1); free(d0); free(d1); free(s0); free(s1);
}

void test_caller_memory(const fixture *f)
{
    set_ctx("caller memory", f->name);
    grulite_model_spec spec = fixture_spec(f);
    size_t size = 0;
    unsigned char *img = serialize(&spec, &size);
    if (!img) return;
    test_model_mem(f, img, size);
    const size_t need = grulite_model_mem_size(img, size);
    void *base;
    unsigned char *mem = block_at(need, 1, &base);
    grulite_model *m = NULL;
    CHECK_RC(grulite_model_load_mem(img, size, mem, need, &m, NULL, 0), GRULITE_OK);
    if (m) {
        apply_isa(m);
        test_workspace_mem(f, m);
        test_stream_mem(f, m);
    }
    free(base);
    free(img);
}
