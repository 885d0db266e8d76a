/*
 * test_core.c - tests of the grulite C core through its public header only.
 *
 * Plain C99 + pthreads, no Python at run time.  Usage:
 *
 *     test_core FIXTURE_DIR        (normally tests/c/fixtures)
 *
 * The numeric reference is the set of fixtures written by
 * tools/make_c_fixtures.py (torch.nn.GRU 2.13.0 outputs, and a float64
 * numpy implementation for the reset_after=0 variant); their format is
 * described in that script.  Outputs must match them within TOL (absolute;
 * every compared value lies in [-1, 1] or is a softmax / sigmoid output).
 * Whole-sequence vs streaming vs threaded runs must match bit for bit.
 *
 * The numerics and streaming tests run once with the kernel set the CPU
 * gets by default (printed first: "kernel set: NAME") and again with every
 * other kernel set this CPU and build can run; random models with float32,
 * float16 and int8 weights compare every kernel set with the generic C one.
 *
 * The last line printed is "N passed, M failed"; the exit status is
 * non-zero when M > 0.
 */
#define _POSIX_C_SOURCE 200809L   /* posix_memalign, mkstemp, pthreads */

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "grulite.h"

#define TOL 2e-5f

/* ---- The tiny test harness ----------------------------------------------- */

static int g_passed, g_failed;
static char g_ctx[256];   /* what is being tested, printed with a failure */
static const char *g_isa; /* kernel set forced on every model, or NULL: the default */

/* Every kernel set a build may have; grulite_isa_supported() says which run here. */
static const char *const k_isas[] = { "generic", "avx2", "avx512", "avx512vnni", "neon" };
#define N_ISAS ((int)(sizeof k_isas / sizeof k_isas[0]))

static void check_impl(int ok, const char *expr, const char *file, int line)
{
    if (ok) {
        g_passed++;
        return;
    }
    g_failed++;
    printf("FAIL %s:%d: %s%s%s%s\n", file, line, expr, g_ctx[0] ? "  [" : "", g_ctx,
           g_ctx[0] ? "]" : "");
}

static void check_rc_impl(int got, int want, const char *expr, const char *file, int line)
{
    if (got == want) {
        g_passed++;
        return;
    }
    g_failed++;
    printf("FAIL %s:%d: %s returned %d (%s), expected %d (%s)%s%s%s\n", file, line, expr,
           got, grulite_strerror(got), want, grulite_strerror(want),
           g_ctx[0] ? "  [" : "", g_ctx, g_ctx[0] ? "]" : "");
}

#define CHECK(cond) check_impl(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_RC(expr, want) check_rc_impl((expr), (want), #expr, __FILE__, __LINE__)

static void set_ctx(const char *a, const char *b)
{
    snprintf(g_ctx, sizeof g_ctx, "%s%s%s%s%s", a, b ? " " : "", b ? b : "",
             g_isa ? ", kernel set " : "", g_isa ? g_isa : "");
}

/* Switches m to the forced kernel set, if any (a failure is recorded). */
static void apply_isa(grulite_model *m)
{
    if (m && g_isa) CHECK_RC(grulite_model_set_isa(m, g_isa), GRULITE_OK);
}

/* ---- Small helpers --------------------------------------------------------- */

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

static void *xalloc_aligned(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* CRC-32, zlib polynomial, bit by bit: independent of src/core/crc32.c. */
static uint32_t crc32_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Rewrites the checksum of a .grl image: CRC-32 of [16, size) at offset 12. */
static void reseal(unsigned char *img, size_t size)
{
    wr32(img + 12, crc32_bitwise(img + 16, size - 16));
}

/* 1 if |a - b| <= tol everywhere; prints the first mismatch. */
static int near(const float *a, const float *b, size_t n, float tol, const char *what)
{
    for (size_t i = 0; i < n; i++) {
        const float d = fabsf(a[i] - b[i]);
        if (!(d <= tol)) {
            printf("     %s[%lu]: got %.9g, expected %.9g (|diff| %.3g > %.3g)\n",
                   what, (unsigned long)i, (double)a[i], (double)b[i], (double)d, (double)tol);
            return 0;
        }
    }
    return 1;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates */
    }
    return m;
}

/* (B, T, w) <-> (T, B, w) */
static void bt_to_tb(const float *src, float *dst, int B, int T, size_t w)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)t * B + b) * w, src + ((size_t)b * T + t) * w, w * sizeof(float));
}

static void tb_to_bt(const float *src, float *dst, int B, int T, size_t w)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)b * T + t) * w, src + ((size_t)t * B + b) * w, w * sizeof(float));
}

/* ---- Fixtures (format: tools/make_c_fixtures.py) --------------------------- */

#define MAX_L 8
#define MAX_N 8
#define MAX_ALLOCS 128

typedef struct fixture {
    char name[64];
    int32_t I, L, N, B, T, has_lengths, has_h0;
    grulite_layer_spec layers[MAX_L];
    grulite_dense_spec dense[MAX_N];
    int32_t out_w, state, head_size, bidirectional;
    const float *x;          /* (B, T, I) */
    const int32_t *lengths;  /* (B) or NULL */
    const float *h0;         /* (B*state) or NULL */
    const float *y;          /* (B, T, out_w) */
    const float *h_n;        /* (B*state) */
    const float *head;       /* (B, head_size) or NULL */
    const float *head_all;   /* (B, T, head_size) or NULL */
    void *allocs[MAX_ALLOCS];
    int n_allocs;
} fixture;

typedef struct cursor {
    const unsigned char *p;
    size_t left;
    int bad;
} cursor;

static int32_t cur_i32(cursor *c)
{
    if (c->left < 4) { c->bad = 1; return 0; }
    const int32_t v = (int32_t)rd32(c->p);
    c->p += 4;
    c->left -= 4;
    return v;
}

static void *cur_take(cursor *c, fixture *f, size_t count, size_t elem)
{
    if (c->bad || count > c->left / elem || f->n_allocs >= MAX_ALLOCS) { c->bad = 1; return NULL; }
    void *dst = xmalloc(count * elem);
    memcpy(dst, c->p, count * elem);   /* little-endian host assumed, as the core does */
    c->p += count * elem;
    c->left -= count * elem;
    f->allocs[f->n_allocs++] = dst;
    return dst;
}

static const float *cur_f32(cursor *c, fixture *f, size_t count)
{
    return cur_take(c, f, count, sizeof(float));
}

static void fixture_free(fixture *f)
{
    for (int i = 0; i < f->n_allocs; i++) free(f->allocs[i]);
    f->n_allocs = 0;
}

/* Reads dir/name.bin; returns 0 or -1 (message printed). */
static int fixture_read(const char *dir, const char *name, fixture *f)
{
    char path[1024];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(path, sizeof path, "%s/%s.bin", dir, name);
    FILE *fp = fopen(path, "rb");
    if (!fp) { printf("cannot open fixture %s\n", path); return -1; }
    unsigned char *data = NULL;
    size_t size = 0, cap = 0, got;
    do {
        if (size == cap) {
            cap = cap ? 2 * cap : 65536;
            unsigned char *nd = realloc(data, cap);
            if (!nd) { free(data); fclose(fp); return -1; }
            data = nd;
        }
        got = fread(data + size, 1, cap - size, fp);
        size += got;
    } while (got > 0);
    fclose(fp);

    cursor c = { data, size, 0 };
    if (size < 8 || memcmp(data, "GLFIX01", 8) != 0) c.bad = 1;
    else { c.p += 8; c.left -= 8; }
    f->I = cur_i32(&c); f->L = cur_i32(&c); f->N = cur_i32(&c);
    f->B = cur_i32(&c); f->T = cur_i32(&c);
    f->has_lengths = cur_i32(&c); f->has_h0 = cur_i32(&c);
    (void)cur_i32(&c);
    if (f->L < 1 || f->L > MAX_L || f->N < 0 || f->N > MAX_N || f->B < 1 || f->T < 1) c.bad = 1;
    for (int l = 0; !c.bad && l < f->L; l++) {
        grulite_layer_spec *s = &f->layers[l];
        s->hidden_size = cur_i32(&c);
        s->num_directions = cur_i32(&c);
        s->reset_after = cur_i32(&c);
        s->has_bias = cur_i32(&c);
        if (s->num_directions != 1 && s->num_directions != 2) c.bad = 1;
    }
    for (int j = 0; !c.bad && j < f->N; j++) {
        f->dense[j].out_features = cur_i32(&c);
        f->dense[j].activation = cur_i32(&c);
        f->dense[j].has_bias = cur_i32(&c);
    }
    int32_t in = f->I;
    for (int l = 0; !c.bad && l < f->L; l++) {
        grulite_layer_spec *s = &f->layers[l];
        const size_t H = (size_t)s->hidden_size;
        for (int d = 0; d < s->num_directions; d++) {
            s->weight_ih[d] = cur_f32(&c, f, 3 * H * (size_t)in);
            s->weight_hh[d] = cur_f32(&c, f, 3 * H * H);
            if (s->has_bias) {
                s->bias_ih[d] = cur_f32(&c, f, 3 * H);
                s->bias_hh[d] = cur_f32(&c, f, 3 * H);
            }
        }
        if (s->num_directions == 2) f->bidirectional = 1;
        in = s->num_directions * s->hidden_size;
        f->state += in;
    }
    f->out_w = in;
    for (int j = 0; !c.bad && j < f->N; j++) {
        grulite_dense_spec *s = &f->dense[j];
        s->weight = cur_f32(&c, f, (size_t)s->out_features * (size_t)in);
        if (s->has_bias) s->bias = cur_f32(&c, f, (size_t)s->out_features);
        in = s->out_features;
    }
    f->head_size = f->N ? in : 0;
    const size_t B = (size_t)f->B, T = (size_t)f->T;
    f->x = cur_f32(&c, f, B * T * (size_t)f->I);
    if (f->has_lengths) f->lengths = cur_take(&c, f, B, sizeof(int32_t));
    if (f->has_h0) f->h0 = cur_f32(&c, f, B * (size_t)f->state);
    f->y = cur_f32(&c, f, B * T * (size_t)f->out_w);
    f->h_n = cur_f32(&c, f, B * (size_t)f->state);
    if (f->N) {
        f->head = cur_f32(&c, f, B * (size_t)f->head_size);
        f->head_all = cur_f32(&c, f, B * T * (size_t)f->head_size);
    }
    if (c.left != 8 || memcmp(c.p, "GLFIXEND", 8) != 0) c.bad = 1;
    free(data);
    if (c.bad) {
        printf("fixture %s is malformed\n", path);
        fixture_free(f);
        return -1;
    }
    return 0;
}

static grulite_model_spec fixture_spec(const fixture *f)
{
    grulite_model_spec s;
    memset(&s, 0, sizeof s);
    s.input_size = f->I;
    s.num_layers = f->L;
    s.layers = f->layers;
    s.num_dense = f->N;
    s.dense = f->N ? f->dense : NULL;
    s.dtype = GRULITE_DTYPE_F32;
    s.batch_first = 1;
    return s;
}

/* Serializes spec into a fresh 64-byte aligned buffer (size query, then
 * write); NULL on failure (recorded as a failed check). */
static unsigned char *serialize(const grulite_model_spec *spec, size_t *size)
{
    size_t n = 0;
    int rc = grulite_model_serialize(spec, NULL, 0, &n);
    CHECK_RC(rc, GRULITE_OK);
    if (rc != GRULITE_OK) return NULL;
    CHECK(n > 64 && n % 64 == 0);
    unsigned char *buf = xalloc_aligned(n);
    size_t n2 = 0;
    rc = grulite_model_serialize(spec, buf, n, &n2);
    CHECK_RC(rc, GRULITE_OK);
    CHECK(n2 == n);
    if (rc != GRULITE_OK) { free(buf); return NULL; }
    *size = n;
    return buf;
}

/* Loads a copy of spec's image; NULL on failure (recorded). */
static grulite_model *load_spec(const grulite_model_spec *spec)
{
    size_t size = 0;
    unsigned char *img = serialize(spec, &size);
    if (!img) return NULL;
    grulite_model *m = NULL;
    char msg[256];
    int rc = grulite_model_load_buffer(img, size, GRULITE_LOAD_COPY, &m, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_OK);
    if (rc) printf("     load: %s\n", msg);
    free(img);
    apply_isa(m);
    return m;
}

/* ---- 1. Error text, version, free(NULL) ------------------------------------ */

static void test_basics(void)
{
    set_ctx("basics", NULL);
    const char *text[17];
    for (int i = 0; i <= 16; i++) {
        text[i] = grulite_strerror(-i);
        CHECK(text[i] != NULL && text[i][0] != '\0');
    }
    int distinct = 1;
    for (int i = 0; i <= 16; i++)
        for (int j = i + 1; j <= 16; j++)
            if (text[i] && text[j] && strcmp(text[i], text[j]) == 0) distinct = 0;
    CHECK(distinct);
    /* Unknown codes still get text, different from every known one. */
    const int unknown[3] = { 1, -17, -1000 };
    for (int k = 0; k < 3; k++) {
        const char *u = grulite_strerror(unknown[k]);
        CHECK(u != NULL);
        for (int i = 0; u && i <= 16; i++) CHECK(text[i] == NULL || strcmp(u, text[i]) != 0);
    }
    CHECK(strcmp(grulite_strerror(GRULITE_E_ALIGN), text[14]) == 0);

    const char *v = grulite_version();
    CHECK(v != NULL && strcmp(v, GRULITE_VERSION_STRING) == 0);
    char expect[32];
    snprintf(expect, sizeof expect, "%d.%d.%d", GRULITE_VERSION_MAJOR, GRULITE_VERSION_MINOR,
             GRULITE_VERSION_PATCH);
    CHECK(v != NULL && strcmp(v, expect) == 0);

    grulite_model_free(NULL);
    grulite_workspace_free(NULL);
    grulite_stream_free(NULL);
    CHECK(1);   /* reached: every *_free accepted NULL */
    CHECK(grulite_workspace_bytes(NULL) == 0);
    CHECK(grulite_stream_batch(NULL) == 0);
}

/* ---- 2. Serialize, load (buffer / copy / mmap), queries, save --------------- */

static void check_info(const grulite_model *m, const fixture *f, int batch_first)
{
    grulite_info info;
    CHECK_RC(grulite_model_info(m, &info), GRULITE_OK);
    CHECK(info.input_size == f->I);
    CHECK(info.num_layers == f->L);
    CHECK(info.num_dense == f->N);
    CHECK(info.output_size == f->out_w);
    CHECK(info.head_size == f->head_size);
    CHECK(info.state_size == f->state);
    CHECK(info.batch_first == batch_first);
    size_t isize = 0;
    const unsigned char *img = grulite_model_image(m, &isize);
    CHECK(img != NULL && isize == info.image_size);
    if (img && isize > 16) {
        CHECK(info.checksum == rd32(img + 12));
        CHECK(info.checksum == crc32_bitwise(img + 16, isize - 16));
    }
    int32_t in = f->I;
    for (int l = 0; l < f->L; l++) {
        grulite_layer_info li;
        CHECK_RC(grulite_model_layer(m, l, &li), GRULITE_OK);
        CHECK(li.input_size == in);
        CHECK(li.hidden_size == f->layers[l].hidden_size);
        CHECK(li.num_directions == f->layers[l].num_directions);
        CHECK(li.reset_after == f->layers[l].reset_after);
        CHECK(li.has_bias == f->layers[l].has_bias);
        CHECK(li.dtype == GRULITE_DTYPE_F32);
        in = li.num_directions * li.hidden_size;
    }
    grulite_layer_info li;
    grulite_dense_info di;
    CHECK_RC(grulite_model_layer(m, f->L, &li), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer(m, -1, &li), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer(m, 0, NULL), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer(NULL, 0, &li), GRULITE_E_ARG);
    for (int j = 0; j < f->N; j++) {
        CHECK_RC(grulite_model_dense(m, j, &di), GRULITE_OK);
        CHECK(di.in_features == in);
        CHECK(di.out_features == f->dense[j].out_features);
        CHECK(di.activation == f->dense[j].activation);
        CHECK(di.has_bias == f->dense[j].has_bias);
        in = di.out_features;
    }
    CHECK_RC(grulite_model_dense(m, f->N, &di), GRULITE_E_ARG);
    CHECK_RC(grulite_model_dense(m, -1, &di), GRULITE_E_ARG);
    CHECK_RC(grulite_model_dense(NULL, 0, &di), GRULITE_E_ARG);
}

/* Runs f's batch through m (batch-first, lengths and h0 of the fixture);
 * y, h_n, head each B*... floats (head may be NULL). */
static int run_fixture(const grulite_model *m, grulite_workspace *ws, const fixture *f,
                       float *y, float *h_n, float *head, int head_all)
{
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = f->B;
    run.steps = f->T;
    run.batch_first = 1;
    run.head_all_steps = head_all;
    run.x = f->x;
    run.lengths = f->lengths;
    run.h0 = f->h0;
    run.y = y;
    run.h_n = h_n;
    run.head = head;
    return grulite_forward(m, ws, &run);
}

static void test_model_io(const fixture *f)
{
    set_ctx("model io", f->name);
    static const char meta[] = "{\"name\": \"caf\xc3\xa9\", \"nul\": \"a\0b\"}";
    const size_t meta_len = sizeof meta - 1;   /* includes the embedded NUL */
    grulite_model_spec spec = fixture_spec(f);
    spec.metadata = meta;
    spec.metadata_len = meta_len;

    /* Size query, then a write; too small a buffer is refused; the image
     * does not depend on what the buffer held (every byte is written). */
    size_t size = 0, size2 = 0;
    CHECK_RC(grulite_model_serialize(&spec, NULL, 0, &size), GRULITE_OK);
    CHECK(size > 0 && size % 64 == 0);
    unsigned char *a = xalloc_aligned(size), *b = xalloc_aligned(size + 64);
    memset(a, 0xAA, size);
    memset(b, 0x55, size + 64);
    CHECK_RC(grulite_model_serialize(&spec, a, size - 1, &size2), GRULITE_E_BUFFER);
    CHECK_RC(grulite_model_serialize(&spec, a, size, &size2), GRULITE_OK);
    CHECK(size2 == size);
    CHECK_RC(grulite_model_serialize(&spec, b, size + 64, &size2), GRULITE_OK);
    CHECK(size2 == size);
    CHECK(memcmp(a, b, size) == 0);
    CHECK(b[size] == 0x55);   /* nothing written past *size */
    /* Any caller buffer, even one not aligned for floats (the header asks
     * for no alignment). */
    memset(b, 0x55, size + 64);
    CHECK_RC(grulite_model_serialize(&spec, b + 1, size, &size2), GRULITE_OK);
    CHECK(memcmp(a, b + 1, size) == 0);
    CHECK(memcmp(a, "GRULITE", 8) == 0);
    CHECK(rd32(a + 12) == crc32_bitwise(a + 16, size - 16));

    /* Borrowed, aligned: no copy. */
    grulite_model *m = NULL;
    char msg[256] = "";
    int rc = grulite_model_load_buffer(a, size, 0, &m, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_OK);
    if (rc) printf("     %s\n", msg);
    if (!m) { free(a); free(b); return; }
    CHECK(msg[0] == '\0');
    size_t isize = 0;
    CHECK(grulite_model_image(m, &isize) == (const void *)a && isize == size);
    check_info(m, f, 1);
    size_t mlen = 0;
    const char *md = grulite_model_metadata(m, &mlen);
    CHECK(md != NULL && mlen == meta_len && memcmp(md, meta, meta_len) == 0);

    /* Misaligned borrowed buffer: E_ALIGN; with LOAD_COPY it loads. */
    unsigned char *mis = b + 1;
    memcpy(mis, a, size);
    grulite_model *m2 = (grulite_model *)&m2;   /* must be reset to NULL */
    msg[0] = '\0';
    CHECK_RC(grulite_model_load_buffer(mis, size, 0, &m2, msg, sizeof msg), GRULITE_E_ALIGN);
    CHECK(m2 == NULL);
    CHECK(msg[0] != '\0');
    rc = grulite_model_load_buffer(mis, size, GRULITE_LOAD_COPY, &m2, msg, sizeof msg);
    CHECK_RC(rc, GRULITE_OK);
    if (m2) {
        const void *img2 = grulite_model_image(m2, &isize);
        CHECK(img2 != (const void *)mis && ((uintptr_t)img2 % 64) == 0 && isize == size);
        memset(mis, 0, size);      /* the caller's buffer may go */
        CHECK(img2 != NULL && memcmp(img2, a, size) == 0);
        check_info(m2, f, 1);
        CHECK(grulite_model_metadata(m2, &mlen) != NULL && mlen == meta_len);
    }
    grulite_model_free(m2);

    /* Unknown flags, NULL arguments. */
    grulite_model *m3 = NULL;
    CHECK_RC(grulite_model_load_buffer(a, size, 2, &m3, NULL, 0), GRULITE_E_ARG);
    CHECK_RC(grulite_model_load_buffer(a, size, GRULITE_LOAD_COPY | 4, &m3, NULL, 0), GRULITE_E_ARG);
    CHECK(m3 == NULL);
    CHECK_RC(grulite_model_load_buffer(a, size, 0, NULL, NULL, 0), GRULITE_E_ARG);
    CHECK_RC(grulite_model_load_buffer(NULL, size, 0, &m3, NULL, 0), GRULITE_E_ARG);
    CHECK_RC(grulite_model_load(NULL, &m3, NULL, 0), GRULITE_E_ARG);
    CHECK_RC(grulite_model_load("x.grl", NULL, NULL, 0), GRULITE_E_ARG);
    CHECK_RC(grulite_model_save(NULL, "x.grl"), GRULITE_E_ARG);
    CHECK_RC(grulite_model_save(m, NULL), GRULITE_E_ARG);
    CHECK_RC(grulite_model_info(NULL, NULL), GRULITE_E_ARG);
    CHECK_RC(grulite_model_info(m, NULL), GRULITE_E_ARG);
    CHECK(grulite_model_metadata(NULL, &mlen) == NULL && mlen == 0);
    CHECK(grulite_model_image(NULL, &isize) == NULL && isize == 0);

    /* batch_first = 0 is recorded in the file. */
    grulite_model_spec tm = spec;
    tm.batch_first = 0;
    tm.metadata = NULL;
    tm.metadata_len = 0;
    grulite_model *mt = load_spec(&tm);
    if (mt) {
        grulite_info info;
        grulite_model_info(mt, &info);
        CHECK(info.batch_first == 0);
        CHECK(grulite_model_metadata(mt, &mlen) != NULL && mlen == 0);
        grulite_model_free(mt);
    }

    /* Save, then mmap it back: the same image and the same numbers. */
    const char *tmpdir = getenv("TMPDIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/grulite_test_XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    if (fd >= 0) {
        close(fd);
        CHECK_RC(grulite_model_save(m, path), GRULITE_OK);
        grulite_model *mm = NULL;
        rc = grulite_model_load(path, &mm, msg, sizeof msg);
        CHECK_RC(rc, GRULITE_OK);
        if (rc) printf("     %s\n", msg);
        if (mm) {
            size_t s1 = 0, s2 = 0;
            const void *i1 = grulite_model_image(m, &s1), *i2 = grulite_model_image(mm, &s2);
            CHECK(s1 == s2 && i1 && i2 && memcmp(i1, i2, s1) == 0);
            CHECK(i2 != i1);
            grulite_info ia, ib;
            grulite_model_info(m, &ia);
            grulite_model_info(mm, &ib);
            CHECK(ia.checksum == ib.checksum && ia.image_size == ib.image_size);
            CHECK(grulite_model_metadata(mm, &mlen) != NULL && mlen == meta_len &&
                  memcmp(grulite_model_metadata(mm, NULL), meta, meta_len) == 0);
            check_info(mm, f, 1);

            const size_t ny = (size_t)f->B * f->T * f->out_w, nh = (size_t)f->B * f->state;
            const size_t nd = (size_t)f->B * f->head_size;
            float *y1 = xcalloc(ny, 4), *y2 = xcalloc(ny, 4), *h1 = xcalloc(nh, 4),
                  *h2 = xcalloc(nh, 4), *d1 = xcalloc(nd, 4), *d2 = xcalloc(nd, 4);
            grulite_workspace *ws = grulite_workspace_new();
            CHECK(ws != NULL);
            CHECK_RC(run_fixture(m, ws, f, y1, h1, f->N ? d1 : NULL, 0), GRULITE_OK);
            CHECK_RC(run_fixture(mm, ws, f, y2, h2, f->N ? d2 : NULL, 0), GRULITE_OK);
            CHECK(memcmp(y1, y2, ny * 4) == 0);
            CHECK(memcmp(h1, h2, nh * 4) == 0);
            CHECK(memcmp(d1, d2, nd * 4) == 0);
            grulite_workspace_free(ws);
            free(y1); free(y2); free(h1); free(h2); free(d1); free(d2);
            grulite_model_free(mm);
        }
        /* Saving over an existing file replaces it (atomic rename). */
        CHECK_RC(grulite_model_save(m, path), GRULITE_OK);
        unlink(path);
    }
    CHECK_RC(grulite_model_save(m, "/nonexistent-grulite-dir/model.grl"), GRULITE_E_IO);
    msg[0] = '\0';
    CHECK_RC(grulite_model_load("/nonexistent-grulite-dir/model.grl", &m3, msg, sizeof msg),
             GRULITE_E_IO);
    CHECK(m3 == NULL && msg[0] != '\0');
    CHECK_RC(grulite_model_load("/", &m3, msg, sizeof msg), GRULITE_E_IO);   /* a directory */

    /* An empty file. */
    snprintf(path, sizeof path, "%s/grulite_test_XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    fd = mkstemp(path);
    if (fd >= 0) {
        close(fd);
        msg[0] = '\0';
        rc = grulite_model_load(path, &m3, msg, sizeof msg);
        CHECK(rc < 0 && m3 == NULL && msg[0] != '\0');
        unlink(path);
    }

    grulite_model_free(m);   /* before its borrowed buffer */
    free(a);
    free(b);
}

/* Invalid specs are refused by the serializer. */
static void test_serialize_errors(const fixture *f)
{
    set_ctx("serialize errors", f->name);
    size_t size = 0;
    grulite_model_spec s = fixture_spec(f);
    grulite_layer_spec layers[MAX_L];
    grulite_dense_spec dense[MAX_N];

    CHECK_RC(grulite_model_serialize(NULL, NULL, 0, &size), GRULITE_E_ARG);
    CHECK_RC(grulite_model_serialize(&s, NULL, 0, NULL), GRULITE_E_ARG);

#define WITH_SPEC(stmt, want) do {                                         \
        grulite_model_spec t = fixture_spec(f);                            \
        memcpy(layers, f->layers, sizeof layers);                          \
        memcpy(dense, f->dense, sizeof dense);                             \
        t.layers = layers;                                                 \
        t.dense = f->N ? dense : NULL;                                     \
        stmt;                                                              \
        CHECK_RC(grulite_model_serialize(&t, NULL, 0, &size), want);       \
    } while (0)

    WITH_SPEC((void)0, GRULITE_OK);
    WITH_SPEC(t.num_layers = 0, GRULITE_E_CONFIG);
    WITH_SPEC(t.num_layers = GRULITE_MAX_LAYERS + 1, GRULITE_E_CONFIG);
    WITH_SPEC(t.layers = NULL, GRULITE_E_CONFIG);
    WITH_SPEC(t.input_size = 0, GRULITE_E_CONFIG);
    WITH_SPEC(t.input_size = GRULITE_MAX_FEATURES + 1, GRULITE_E_CONFIG);
    WITH_SPEC(layers[0].hidden_size = 0, GRULITE_E_CONFIG);
    WITH_SPEC(layers[0].hidden_size = -5, GRULITE_E_CONFIG);
    WITH_SPEC(layers[0].num_directions = 3, GRULITE_E_CONFIG);
    WITH_SPEC(layers[0].reset_after = 2, GRULITE_E_CONFIG);
    WITH_SPEC(layers[0].has_bias = 7, GRULITE_E_CONFIG);
    WITH_SPEC(t.dtype = 0, GRULITE_E_UNSUPPORTED);
    WITH_SPEC(layers[0].weight_ih[0] = NULL, GRULITE_E_ARG);
    WITH_SPEC(layers[f->L - 1].weight_hh[layers[f->L - 1].num_directions - 1] = NULL, GRULITE_E_ARG);
    WITH_SPEC((t.metadata = NULL, t.metadata_len = 3), GRULITE_E_ARG);
    WITH_SPEC((t.num_dense = 1, t.dense = NULL), GRULITE_E_CONFIG);
    WITH_SPEC(t.num_dense = -1, GRULITE_E_CONFIG);
    if (f->N) {
        WITH_SPEC(dense[0].activation = 5, GRULITE_E_CONFIG);
        WITH_SPEC(dense[0].out_features = 0, GRULITE_E_CONFIG);
        WITH_SPEC(dense[0].weight = NULL, GRULITE_E_ARG);
    }
#undef WITH_SPEC
}

/* ---- 3. Hostile images ------------------------------------------------------ */

typedef struct hostile_case {
    const char *what;
    size_t at;          /* byte offset to patch */
    int width;          /* 4 or 8 */
    uint64_t value;
    int want;           /* expected code, or 0 for "any error" */
} hostile_case;

/* Loads img (size bytes) and returns the code: with LOAD_COPY from an
 * exact-size private copy (so that an over-read is visible to valgrind /
 * ASan), else borrowed from a 64-byte aligned copy.  On failure checks the
 * contract: *out NULL, a non-empty NUL-terminated message. */
static int load_exact(const unsigned char *img, size_t size, int copy)
{
    unsigned char *buf = copy ? xmalloc(size) : xalloc_aligned(size);
    if (size) memcpy(buf, img, size);
    grulite_model *m = (grulite_model *)&m;   /* must be reset */
    char msg[200];
    memset(msg, 'X', sizeof msg);
    const int rc = grulite_model_load_buffer(buf, size, copy ? GRULITE_LOAD_COPY : 0, &m,
                                             msg, sizeof msg);
    if (rc == GRULITE_OK) {
        grulite_model_free(m);
    } else if (m != NULL || memchr(msg, '\0', sizeof msg) == NULL || msg[0] == '\0' ||
               msg[0] == 'X') {
        g_failed++;
        printf("FAIL load failure contract (rc %d): out %s, message %s  [%s]\n", rc,
               m ? "not NULL" : "NULL",
               memchr(msg, '\0', sizeof msg) ? (msg[0] ? "unchanged" : "empty") : "not terminated",
               g_ctx);
    }
    free(buf);
    return rc;
}

static void test_hostile(const fixture *f)
{
    set_ctx("hostile images", f->name);
    grulite_model_spec spec = fixture_spec(f);
    spec.metadata = "hostile";
    spec.metadata_len = 7;
    size_t size = 0;
    unsigned char *img = serialize(&spec, &size);
    if (!img) return;
    printf("hostile images: %s, %lu-byte image\n", f->name, (unsigned long)size);
    CHECK_RC(load_exact(img, size, 1), GRULITE_OK);
    CHECK_RC(load_exact(img, size, 0), GRULITE_OK);

    /* Every truncation, copied and borrowed. */
    int n_ok = 0, n_not_trunc = 0;
    for (size_t len = 0; len < size; len++) {
        for (int copy = 0; copy < 2; copy++) {
            const int rc = load_exact(img, len, copy);
            if (rc == GRULITE_OK) {
                n_ok++;
                printf("     truncation to %lu bytes loaded\n", (unsigned long)len);
            } else if (rc != GRULITE_E_TRUNCATED) {
                n_not_trunc++;
            }
        }
    }
    CHECK(n_ok == 0);
    CHECK(n_not_trunc == 0);   /* all are "shorter than the header says" */

    /* Every single-byte flip. */
    unsigned char *work = xmalloc(size + 64);
    int n_flip_ok = 0, n_bad_code = 0;
    for (size_t i = 0; i < size; i++) {
        memcpy(work, img, size);
        work[i] ^= 0xFF;
        const int rc = load_exact(work, size, 1);
        int want = GRULITE_E_CHECKSUM;
        if (i < 8) want = GRULITE_E_MAGIC;
        else if (i < 12) want = GRULITE_E_VERSION;
        else if (i >= 16 && i < 24) want = 0;   /* file size: truncated or trailing */
        if (rc == GRULITE_OK) {
            n_flip_ok++;
            printf("     flip of byte %lu loaded\n", (unsigned long)i);
        } else if (want != 0 && rc != want) {
            n_bad_code++;
            printf("     flip of byte %lu: %d (%s), expected %d\n", (unsigned long)i, rc,
                   grulite_strerror(rc), want);
        }
    }
    CHECK(n_flip_ok == 0);
    CHECK(n_bad_code == 0);

    /* Magic, version, trailing bytes. */
    memcpy(work, img, size);
    work[6] = 'F';
    CHECK_RC(load_exact(work, size, 1), GRULITE_E_MAGIC);
    memset(work, 0, 64);
    CHECK_RC(load_exact(work, 64, 1), GRULITE_E_MAGIC);
    CHECK_RC(load_exact((const unsigned char *)"hello", 5, 1), GRULITE_E_TRUNCATED);
    memcpy(work, img, size);
    wr32(work + 8, GRULITE_FORMAT_VERSION + 1);
    CHECK_RC(load_exact(work, size, 1), GRULITE_E_VERSION);
    wr32(work + 8, 0);
    CHECK_RC(load_exact(work, size, 1), GRULITE_E_VERSION);
    memcpy(work, img, size);
    memset(work + size, 0, 64);
    CHECK_RC(load_exact(work, size + 1, 1), GRULITE_E_FORMAT);
    CHECK_RC(load_exact(work, size + 64, 1), GRULITE_E_FORMAT);

    /* Header and table fields patched with a recomputed, valid checksum:
     * the structural checks alone must refuse them. */
    const size_t L = (size_t)f->L, N = (size_t)f->N;
    const size_t table = 64 + 32 * (L + N);          /* format 3: 32-byte typed records */
    const uint32_t n_tensors = rd32(img + 44);
    const hostile_case cases[] = {
        { "file size + 64", 16, 8, size + 64, GRULITE_E_TRUNCATED },
        { "file size huge", 16, 8, UINT64_MAX, GRULITE_E_TRUNCATED },
        { "file size 0", 16, 8, 0, GRULITE_E_FORMAT },
        { "header size", 24, 4, 65, GRULITE_E_FORMAT },
        { "flags", 28, 4, 4, GRULITE_E_FORMAT },
        { "input_size 0", 32, 4, 0, GRULITE_E_CONFIG },
        { "input_size huge", 32, 4, 0xFFFFFFFFu, GRULITE_E_CONFIG },
        { "input_size + 1", 32, 4, (uint64_t)f->I + 1, GRULITE_E_TENSOR },
        { "num_layers 0", 36, 4, 0, GRULITE_E_CONFIG },
        { "num_layers huge", 36, 4, 0xFFFFFFFFu, GRULITE_E_CONFIG },
        { "num_layers 129", 36, 4, 129, GRULITE_E_CONFIG },
        { "num_layers 64", 36, 4, 64, 0 },
        { "num_layers + 1", 36, 4, L + N + 1, 0 },
        { "num_layers - 1", 36, 4, L + N - 1, 0 },
        { "layer record size 16", 40, 4, 16, GRULITE_E_FORMAT },
        { "layer record size huge", 40, 4, 0xFFFFFFFFu, GRULITE_E_FORMAT },
        { "num_tensors huge", 44, 4, 0xFFFFFFFFu, GRULITE_E_FORMAT },
        { "num_tensors 2^26", 44, 4, 1u << 26, GRULITE_E_FORMAT },
        { "num_tensors + 1", 44, 4, (uint64_t)n_tensors + 1, GRULITE_E_FORMAT },
        { "num_tensors - 1", 44, 4, (uint64_t)n_tensors - 1, GRULITE_E_TENSOR },
        { "num_tensors 0", 44, 4, 0, 0 },
        { "metadata offset huge", 48, 8, UINT64_MAX, GRULITE_E_FORMAT },
        { "metadata offset 0", 48, 8, 0, GRULITE_E_FORMAT },
        { "metadata offset = size", 48, 8, size, GRULITE_E_FORMAT },
        { "metadata length huge", 56, 8, UINT64_MAX, GRULITE_E_FORMAT },
        { "metadata length 2^63", 56, 8, (uint64_t)1 << 63, GRULITE_E_FORMAT },
        { "metadata length = size", 56, 8, size, GRULITE_E_FORMAT },
        { "layer 0 kind 0", 64, 4, 0, GRULITE_E_CONFIG },
        { "layer 0 kind dense (its unused fields hold the GRU dtype)", 64, 4, GRULITE_LAYER_DENSE,
          GRULITE_E_FORMAT },
        { "layer 0 kind huge", 64, 4, 0xFFFFFFFFu, GRULITE_E_CONFIG },
        { "layer 0 unused field", 64 + 4 + 4 * 6, 4, 1, GRULITE_E_FORMAT },
        { "last layer kind (GRU after the head, or 0)", 64 + 32 * (L + N - 1), 4,
          N ? GRULITE_LAYER_GRU : 0, GRULITE_E_CONFIG },
        { "layer 0 hidden 0", 68, 4, 0, GRULITE_E_CONFIG },
        { "layer 0 hidden huge", 68, 4, 0xFFFFFFFFu, GRULITE_E_CONFIG },
        { "layer 0 hidden 2^20", 68, 4, 1u << 20, GRULITE_E_TENSOR },
        { "layer 0 hidden 2^31", 68, 4, 1u << 31, GRULITE_E_CONFIG },
        { "layer 0 directions 3", 72, 4, 3, GRULITE_E_CONFIG },
        { "layer 0 directions flipped", 72, 4, 3u - (uint32_t)f->layers[0].num_directions,
          GRULITE_E_TENSOR },
        { "layer 0 reset_after 2", 76, 4, 2, GRULITE_E_CONFIG },
        { "layer 0 has_bias flipped", 80, 4, 1u - (uint32_t)f->layers[0].has_bias, GRULITE_E_TENSOR },
        { "layer 0 has_bias huge", 80, 4, 0xFFFFFFFFu, GRULITE_E_CONFIG },
        { "layer 0 dtype 2 (tensors still float32)", 84, 4, 2, GRULITE_E_TENSOR },
        { "layer 0 dtype 9", 84, 4, 9, GRULITE_E_UNSUPPORTED },
        { "tensor 0 dtype", table + 32, 4, 2, GRULITE_E_TENSOR },
        { "tensor 0 layout", table + 36, 4, 0, GRULITE_E_TENSOR },
        { "tensor 0 ndim", table + 40, 4, 3, GRULITE_E_TENSOR },
        { "tensor 0 d0 huge", table + 48, 4, 0xFFFFFFFFu, GRULITE_E_TENSOR },
        { "tensor 0 d1 huge", table + 52, 4, 0xFFFFFFFFu, GRULITE_E_TENSOR },
        { "tensor 0 offset huge", table + 56, 8, UINT64_MAX & ~(uint64_t)63, GRULITE_E_TOO_LARGE },
        { "tensor 0 offset 2^63", table + 56, 8, (uint64_t)1 << 63, 0 },
        { "tensor 0 offset 0", table + 56, 8, 0, GRULITE_E_FORMAT },
        { "tensor 0 offset 65", table + 56, 8, 65, GRULITE_E_FORMAT },
        { "tensor 0 offset = size", table + 56, 8, size, GRULITE_E_FORMAT },
        { "tensor 0 offset = size - 64", table + 56, 8, size - 64, 0 },
        { "last tensor offset = size", table + 64 * ((size_t)n_tensors - 1) + 56, 8, size,
          GRULITE_E_FORMAT },
    };
    const size_t n_cases = sizeof cases / sizeof cases[0];
    for (size_t k = 0; k < n_cases; k++) {
        const hostile_case *c = &cases[k];
        memcpy(work, img, size);
        if (c->width == 8) wr64(work + c->at, c->value);
        else wr32(work + c->at, (uint32_t)c->value);
        if (c->at != 16) reseal(work, size);
        const int rc = load_exact(work, size, 1);
        char ctx[128];
        snprintf(ctx, sizeof ctx, "%s: %s", f->name, c->what);
        set_ctx("hostile", ctx);
        if (c->want) CHECK_RC(rc, c->want);
        else CHECK(rc < 0);
        CHECK(load_exact(work, size, 0) == rc);   /* borrowed gives the same answer */
    }
    set_ctx("hostile images", f->name);

    /* Tensor names: not NUL-terminated; a duplicate; an unknown one. */
    memcpy(work, img, size);
    memset(work + table, 'A', 32);
    reseal(work, size);
    CHECK_RC(load_exact(work, size, 1), GRULITE_E_FORMAT);
    if (n_tensors >= 2) {
        memcpy(work, img, size);
        memcpy(work + table + 64, work + table, 32);
        reseal(work, size);
        CHECK(load_exact(work, size, 1) < 0);
    }
    memcpy(work, img, size);
    work[table] = 'q';
    reseal(work, size);
    CHECK_RC(load_exact(work, size, 1), GRULITE_E_TENSOR);
    /* The sealed, unmodified image still loads (the helper is sane). */
    memcpy(work, img, size);
    reseal(work, size);
    CHECK(memcmp(work, img, size) == 0);
    CHECK_RC(load_exact(work, size, 1), GRULITE_OK);

    /* A short message buffer is still NUL-terminated; NULL msg is fine. */
    memcpy(work, img, size);
    work[40] ^= 1;
    grulite_model *m = NULL;
    char small[8];
    memset(small, 'X', sizeof small);
    CHECK_RC(grulite_model_load_buffer(work, size, GRULITE_LOAD_COPY, &m, small, sizeof small),
             GRULITE_E_CHECKSUM);
    CHECK(memchr(small, '\0', sizeof small) != NULL && small[0] != '\0');
    CHECK_RC(grulite_model_load_buffer(work, size, GRULITE_LOAD_COPY, &m, NULL, 0),
             GRULITE_E_CHECKSUM);
    CHECK_RC(grulite_model_load_buffer(work, size, GRULITE_LOAD_COPY, &m, small, 0),
             GRULITE_E_CHECKSUM);
    CHECK(m == NULL);

    free(work);
    free(img);
}

/* ---- 4. Numerics against the fixtures -------------------------------------- */

static void test_numerics(const fixture *f)
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

static void test_stream(const fixture *f)
{
    set_ctx("stream", f->name);
    grulite_model_spec spec = fixture_spec(f);
    grulite_model *m = load_spec(&spec);
    if (!m) return;
    grulite_stream *s = (grulite_stream *)&s;
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
    grulite_stream *s2 = (grulite_stream *)&s2;
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

/* ---- 6. Argument errors of grulite_forward ----------------------------------- */

static void test_forward_args(const fixture *f)
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

/* ---- 7. Threads ------------------------------------------------------------------ */

#define N_THREADS 8
#define N_ITERS 16

typedef struct thread_job {
    const grulite_model *model;
    const fixture *f;
    const float *y_ref, *h_ref, *head_ref;
    int errors, mismatches;
} thread_job;

static void *thread_main(void *arg)
{
    thread_job *job = arg;
    const fixture *f = job->f;
    const size_t ny = (size_t)f->B * f->T * f->out_w, nh = (size_t)f->B * f->state;
    const size_t nd = (size_t)f->B * f->head_size;
    grulite_workspace *ws = grulite_workspace_new();
    float *y = xcalloc(ny, 4), *h = xcalloc(nh, 4), *d = xcalloc(nd, 4);
    if (!ws) job->errors++;
    for (int it = 0; ws && it < N_ITERS; it++) {
        memset(y, 0, ny * 4);
        if (run_fixture(job->model, ws, f, y, h, f->N ? d : NULL, 0) != GRULITE_OK) job->errors++;
        if (memcmp(y, job->y_ref, ny * 4) || memcmp(h, job->h_ref, nh * 4) ||
            memcmp(d, job->head_ref, nd * 4))
            job->mismatches++;
    }
    grulite_workspace_free(ws);
    free(y);
    free(h);
    free(d);
    return NULL;
}

static void test_threads(const fixture *f)
{
    set_ctx("threads", f->name);
    grulite_model_spec spec = fixture_spec(f);
    grulite_model *m = load_spec(&spec);
    if (!m) return;
    const size_t ny = (size_t)f->B * f->T * f->out_w, nh = (size_t)f->B * f->state;
    const size_t nd = (size_t)f->B * f->head_size;
    float *y = xcalloc(ny, 4), *h = xcalloc(nh, 4), *d = xcalloc(nd, 4);
    grulite_workspace *ws = grulite_workspace_new();
    CHECK_RC(run_fixture(m, ws, f, y, h, f->N ? d : NULL, 0), GRULITE_OK);
    grulite_workspace_free(ws);
    CHECK(near(y, f->y, ny, TOL, "y (serial)"));

    thread_job jobs[N_THREADS];
    pthread_t tid[N_THREADS];
    int started[N_THREADS];
    for (int i = 0; i < N_THREADS; i++) {
        thread_job j = { m, f, y, h, d, 0, 0 };
        jobs[i] = j;
        started[i] = pthread_create(&tid[i], NULL, thread_main, &jobs[i]) == 0;
        CHECK(started[i]);
    }
    int errors = 0, mismatches = 0;
    for (int i = 0; i < N_THREADS; i++) {
        if (!started[i]) continue;
        pthread_join(tid[i], NULL);
        errors += jobs[i].errors;
        mismatches += jobs[i].mismatches;
    }
    CHECK(errors == 0);
    CHECK(mismatches == 0);
    free(y);
    free(h);
    free(d);
    grulite_model_free(m);
}

/* ---- 8. Every kernel set on random models ---------------------------------------- */

/* Sizes that reach every path of the blocked kernels: widths around the
 * 16-lane panel, inputs longer than a K block (128), batches below, at and
 * above the row blocks (2 to 8 rows), both variants, with and without bias. */
typedef struct synth_case {
    int32_t I, H, L, D, bias, reset_after, B, T;
} synth_case;

static const synth_case k_synth[] = {
    { 1, 1, 1, 1, 1, 1, 1, 5 },
    { 3, 17, 2, 2, 1, 1, 5, 9 },
    { 130, 33, 1, 1, 0, 1, 9, 7 },
    { 200, 64, 2, 1, 1, 0, 17, 6 },
    { 16, 48, 1, 2, 1, 0, 8, 11 },
    { 5, 129, 1, 1, 1, 1, 3, 4 },
    /* B*T above 128 rows with K above a K block: the all-steps input
     * projection in 64-row blocks and K blocks, a stream step in one block. */
    { 130, 40, 1, 1, 1, 0, 20, 8 },
    /* W_hh above 1 MiB: one-block products prefetch the next weights. */
    { 8, 300, 1, 1, 1, 0, 9, 3 },
};

#define SYNTH_TOL_F32 2e-5f   /* every kernel set vs generic, same stored weights */
#define SYNTH_TOL_F16 2e-3f   /* float16 weights vs float32 weights */
#define SYNTH_TOL_I8 2e-2f    /* int8 weights vs float32 weights (and activations
                                 rounded to int8 by avx512vnni) */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

/* Uniform in [lo, hi): xorshift64*, 24 bits. */
static float urand(float lo, float hi)
{
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    const uint32_t r = (uint32_t)((g_rng * 0x2545F4914F6CDD1Dull) >> 40);
    return lo + (hi - lo) * ((float)r / 16777216.0f);
}

static float *urand_array(size_t n, float k)
{
    float *a = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) a[i] = urand(-k, k);
    return a;
}

/* Runs (B, T) batch-first x through m with `lengths` (or NULL). */
static int synth_run(const grulite_model *m, grulite_workspace *ws, const synth_case *c,
                     const float *x, const int32_t *lengths, float *y, float *h_n)
{
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = c->B;
    run.steps = c->T;
    run.batch_first = 1;
    run.x = x;
    run.lengths = lengths;
    run.y = y;
    run.h_n = h_n;
    return grulite_forward(m, ws, &run);
}

static void test_kernel_sets(const synth_case *c)
{
    char name[96];
    snprintf(name, sizeof name, "I%d H%d L%d D%d%s%s B%d T%d", c->I, c->H, c->L, c->D,
             c->bias ? "" : " nobias", c->reset_after ? "" : " reset_before", c->B, c->T);
    set_ctx("kernel sets", name);

    /* PyTorch's initialization: U(-1/sqrt(H), 1/sqrt(H)). */
    grulite_layer_spec layers[MAX_L];
    float *owned[4 * MAX_L * 2];
    int n_owned = 0;
    memset(layers, 0, sizeof layers);
    const float k = 1.0f / sqrtf((float)c->H);
    const size_t H = (size_t)c->H;
    int32_t in = c->I;
    for (int l = 0; l < c->L; l++) {
        grulite_layer_spec *ls = &layers[l];
        ls->hidden_size = c->H;
        ls->num_directions = c->D;
        ls->reset_after = c->reset_after;
        ls->has_bias = c->bias;
        for (int d = 0; d < c->D; d++) {
            ls->weight_ih[d] = owned[n_owned++] = urand_array(3 * H * (size_t)in, k);
            ls->weight_hh[d] = owned[n_owned++] = urand_array(3 * H * H, k);
            if (c->bias) {
                ls->bias_ih[d] = owned[n_owned++] = urand_array(3 * H, k);
                ls->bias_hh[d] = owned[n_owned++] = urand_array(3 * H, k);
            }
        }
        in = c->D * c->H;
    }
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = c->I;
    spec.num_layers = c->L;
    spec.layers = layers;
    spec.batch_first = 1;

    const size_t B = (size_t)c->B, T = (size_t)c->T;
    const size_t ny = B * T * (size_t)in, nh = B * (size_t)(c->L * c->D * c->H);
    float *x = urand_array(B * T * (size_t)c->I, 2.0f);
    int32_t *lengths = xmalloc(B * sizeof(int32_t));
    for (size_t b = 0; b < B; b++)
        lengths[b] = b == 0 ? c->T : 1 + (int32_t)(urand(0.0f, 1.0f) * (float)c->T) % c->T;
    float *y32 = xcalloc(ny, 4), *h32 = xcalloc(nh, 4), *yg = xcalloc(ny, 4), *hg = xcalloc(nh, 4);
    float *y = xcalloc(ny, 4), *h = xcalloc(nh, 4), *ys = xcalloc(ny, 4), *yf = xcalloc(ny, 4);
    grulite_workspace *ws = grulite_workspace_new();
    CHECK(ws != NULL);

    static const int dtypes[3] = { GRULITE_DTYPE_F32, GRULITE_DTYPE_F16, GRULITE_DTYPE_I8 };
    static const char *const dtype_names[3] = { "float32", "float16", "int8" };
    static const float dtype_tol[3] = { 0.0f, SYNTH_TOL_F16, SYNTH_TOL_I8 };
    for (int di = 0; ws && di < 3; di++) {
        char ctx[160];
        snprintf(ctx, sizeof ctx, "%s, %s", name, dtype_names[di]);
        set_ctx("kernel sets", ctx);
        spec.dtype = dtypes[di];
        grulite_model *m = load_spec(&spec);
        if (!m) continue;
        grulite_layer_info li;
        CHECK_RC(grulite_model_layer(m, 0, &li), GRULITE_OK);
        CHECK(li.dtype == dtypes[di]);

        /* The generic C kernels on these stored weights are the reference. */
        CHECK_RC(grulite_model_set_isa(m, "generic"), GRULITE_OK);
        CHECK_RC(synth_run(m, ws, c, x, lengths, yg, hg), GRULITE_OK);
        if (di == 0) {
            memcpy(y32, yg, ny * 4);
            memcpy(h32, hg, nh * 4);
        } else {
            CHECK(near(yg, y32, ny, dtype_tol[di], "y (generic vs float32 weights)"));
            CHECK(near(hg, h32, nh, dtype_tol[di], "h_n (generic vs float32 weights)"));
        }
        char line[512];
        int at = snprintf(line, sizeof line, "kernel sets: %-36s %-7s max |diff| vs generic:",
                          name, dtype_names[di]);
        for (int i = 0; i < N_ISAS; i++) {
            const char *isa = k_isas[i];
            if (!grulite_isa_supported(isa) || !strcmp(isa, "generic")) continue;
            snprintf(ctx, sizeof ctx, "%s, %s, kernel set %s", name, dtype_names[di], isa);
            set_ctx("kernel sets", ctx);
            CHECK_RC(grulite_model_set_isa(m, isa), GRULITE_OK);
            CHECK(strcmp(grulite_model_isa(m), isa) == 0);
            memset(y, 0xFF, ny * 4);
            CHECK_RC(synth_run(m, ws, c, x, lengths, y, h), GRULITE_OK);
            /* avx512vnni rounds the activations of int8 products to int8 too. */
            const int approx = dtypes[di] == GRULITE_DTYPE_I8 && !strcmp(isa, "avx512vnni");
            CHECK(near(y, approx ? y32 : yg, ny, approx ? SYNTH_TOL_I8 : SYNTH_TOL_F32, "y"));
            CHECK(near(h, approx ? h32 : hg, nh, approx ? SYNTH_TOL_I8 : SYNTH_TOL_F32, "h_n"));
            if (at > 0 && (size_t)at < sizeof line)
                at += snprintf(line + at, sizeof line - (size_t)at, " %s %.2g", isa,
                               max_diff(y, yg, ny));

            /* Saturating, infinite and NaN inputs: the activations' limits
             * (exp clamped, NaN kept) match the generic kernels. */
            if (di == 0) {
                float *xe = xmalloc(B * T * (size_t)c->I * 4);
                memcpy(xe, x, B * T * (size_t)c->I * 4);
                static const float extreme[4] = { 1e30f, -1e30f, 88.5f, -88.5f };
                for (size_t j = 0; j < B * T * (size_t)c->I; j += 3) xe[j] = extreme[j % 4] * x[j];
                xe[0] = INFINITY;
                if (B > 1) xe[T * (size_t)c->I] = NAN;   /* row 1 */
                CHECK_RC(grulite_model_set_isa(m, "generic"), GRULITE_OK);
                CHECK_RC(synth_run(m, ws, c, xe, lengths, yf, NULL), GRULITE_OK);
                CHECK_RC(grulite_model_set_isa(m, isa), GRULITE_OK);
                CHECK_RC(synth_run(m, ws, c, xe, lengths, ys, NULL), GRULITE_OK);
                size_t bad = 0, nans = 0;
                for (size_t j = 0; j < ny; j++) {
                    if (isnan(yf[j])) { nans++; bad += !isnan(ys[j]); }
                    else bad += !(fabsf(ys[j] - yf[j]) <= SYNTH_TOL_F32);
                }
                CHECK(bad == 0);
                CHECK(B == 1 || nans > 0);
                free(xe);
            }

            /* Streaming one step at a time gives the whole sequence's bits. */
            if (c->D == 1) {
                grulite_stream *st = NULL;
                CHECK_RC(synth_run(m, ws, c, x, NULL, yf, NULL), GRULITE_OK);
                CHECK_RC(grulite_stream_new(m, c->B, &st), GRULITE_OK);
                const size_t I = (size_t)c->I, W = (size_t)in;
                float *xs = xmalloc(B * I * 4), *yt = xmalloc(B * W * 4);
                for (size_t t = 0; st && t < T; t++) {
                    for (size_t b = 0; b < B; b++)
                        memcpy(xs + b * I, x + (b * T + t) * I, I * 4);
                    CHECK_RC(grulite_stream_step(st, xs, 1, yt, NULL), GRULITE_OK);
                    for (size_t b = 0; b < B; b++)
                        memcpy(ys + (b * T + t) * W, yt + b * W, W * 4);
                }
                if (st) CHECK(memcmp(ys, yf, ny * 4) == 0);
                grulite_stream_free(st);
                free(xs);
                free(yt);
            }
        }
        printf("%s\n", line);
        grulite_model_free(m);
    }
    grulite_workspace_free(ws);
    for (int i = 0; i < n_owned; i++) free(owned[i]);
    free(x); free(lengths); free(y32); free(h32); free(yg); free(hg);
    free(y); free(h); free(ys); free(yf);
}

/* ---- Fuzzing regressions (tools/fuzz) ------------------------------------------ */

/* int8 storage of non-finite weights.  An infinite weight makes its row's
 * scale infinite and inf / inf a NaN, and a NaN weight divides to a NaN:
 * converting that NaN to int was undefined behaviour (UBSan: "-nan is
 * outside the range of representable values of type 'int'"), found by
 * fuzz_load converting a fuzzed float32 model to int8.  Such a weight is
 * now stored as 0.  The input it found is tests/c/fuzz_regress/load/. */
static void test_int8_nonfinite_weights(void)
{
    set_ctx("int8 non-finite weights", NULL);
    const float inf = INFINITY, nan = NAN;
    /* I = 2, H = 1: rows r, z, n of W_ih each hold a non-finite value. */
    const float w_ih[6] = { inf, 1.0f, nan, 1.0f, 0.5f, -inf };
    const float w_hh[3] = { 0.25f, nan, -0.5f };
    grulite_layer_spec L;
    memset(&L, 0, sizeof L);
    L.hidden_size = 1;
    L.num_directions = 1;
    L.reset_after = 1;
    L.weight_ih[0] = w_ih;
    L.weight_hh[0] = w_hh;
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = 2;
    spec.num_layers = 1;
    spec.layers = &L;
    spec.batch_first = 1;
    for (int dt = GRULITE_DTYPE_F32; dt <= GRULITE_DTYPE_I8; dt++) {
        spec.dtype = dt;
        grulite_model *m = load_spec(&spec);
        CHECK(m != NULL);
        if (!m) continue;
        /* Re-store as int8 from whatever the model holds. */
        size_t need = 0, got = 0;
        CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_I8, NULL, 0, &need), GRULITE_OK);
        unsigned char *buf = xalloc_aligned(need ? need : 64);
        CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_I8, buf, need, &got), GRULITE_OK);
        grulite_model *q = NULL;
        CHECK_RC(grulite_model_load_buffer(buf, got, 0, &q, NULL, 0), GRULITE_OK);
        /* It runs (the outputs may be NaN: the weights are). */
        grulite_workspace *ws = grulite_workspace_new();
        const float x[4] = { 0.5f, -1.0f, 0.25f, 2.0f };
        float y[2], hn[1];
        grulite_run run;
        memset(&run, 0, sizeof run);
        run.batch = 1;
        run.steps = 2;
        run.batch_first = 1;
        run.x = x;
        run.y = y;
        run.h_n = hn;
        if (q) CHECK_RC(grulite_forward(q, ws, &run), GRULITE_OK);
        CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
        grulite_workspace_free(ws);
        grulite_model_free(q);
        free(buf);
        grulite_model_free(m);
    }
}

/* A row holding NaN or inf must not change the other rows' results.  The
 * avx512vnni int8 gemm used to fall back to the float kernel for every row
 * of a call as soon as one row was not finite, so the finite rows of that
 * call got other numbers than alone: streaming (or another batch split)
 * then differed from the whole sequence.  Found by fuzz_forward; its input
 * is tests/c/fuzz_regress/forward/int8-vnni-nan-row. */
static void test_nonfinite_row_isolated(void)
{
    const int I = 6, H = 5, B = 3, T = 4;
    float *w_ih = urand_array((size_t)3 * H * I, 0.5f), *w_hh = urand_array((size_t)3 * H * H, 0.5f);
    float *b_ih = urand_array((size_t)3 * H, 0.5f), *b_hh = urand_array((size_t)3 * H, 0.5f);
    float *x = urand_array((size_t)B * T * I, 1.0f);
    grulite_layer_spec L;
    memset(&L, 0, sizeof L);
    L.hidden_size = H;
    L.num_directions = 1;
    L.reset_after = 1;
    L.has_bias = 1;
    L.weight_ih[0] = w_ih;
    L.weight_hh[0] = w_hh;
    L.bias_ih[0] = b_ih;
    L.bias_hh[0] = b_hh;
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = I;
    spec.num_layers = 1;
    spec.layers = &L;
    spec.batch_first = 1;
    const float bad[3] = { NAN, INFINITY, -INFINITY };
    for (int k = 0; k < N_ISAS; k++) {
        if (!grulite_isa_supported(k_isas[k])) continue;
        for (int dt = GRULITE_DTYPE_F32; dt <= GRULITE_DTYPE_I8; dt++) {
            for (int v = 0; v < 3; v++) {
                char name[64];
                snprintf(name, sizeof name, "%s dtype %d x %g", k_isas[k], dt, (double)bad[v]);
                set_ctx("non-finite row", name);
                spec.dtype = dt;
                grulite_model *m = load_spec(&spec);
                if (!m) continue;
                CHECK_RC(grulite_model_set_isa(m, k_isas[k]), GRULITE_OK);
                grulite_workspace *ws = grulite_workspace_new();
                grulite_workspace_set_threads(ws, 1);
                /* Row 1 gets a non-finite value at step 2. */
                float *xb = xmalloc((size_t)B * T * I * sizeof(float));
                memcpy(xb, x, (size_t)B * T * I * sizeof(float));
                xb[((size_t)1 * T + 2) * I + 3] = bad[v];
                float *y = xmalloc((size_t)B * T * H * sizeof(float));
                float *y1 = xmalloc((size_t)T * H * sizeof(float));
                grulite_run run;
                memset(&run, 0, sizeof run);
                run.batch = B;
                run.steps = T;
                run.batch_first = 1;
                run.x = xb;
                run.y = y;
                CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
                /* Each finite row alone, and streamed one step at a time. */
                for (int b = 0; b < B; b += 2) {
                    run.batch = 1;
                    run.x = xb + (size_t)b * T * I;
                    run.y = y1;
                    CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
                    CHECK(memcmp(y1, y + (size_t)b * T * H, (size_t)T * H * sizeof(float)) == 0);
                }
                grulite_stream *st = NULL;
                CHECK_RC(grulite_stream_new(m, B, &st), GRULITE_OK);
                float *xt = xmalloc((size_t)B * I * sizeof(float)), *yt = xmalloc((size_t)B * H * sizeof(float));
                int same = 1;
                for (int t = 0; st && t < T; t++) {
                    for (int b = 0; b < B; b++)
                        memcpy(xt + (size_t)b * I, xb + ((size_t)b * T + t) * I, (size_t)I * sizeof(float));
                    CHECK_RC(grulite_stream_step(st, xt, 1, yt, NULL), GRULITE_OK);
                    for (int b = 0; b < B; b++)
                        same &= memcmp(yt + (size_t)b * H, y + ((size_t)b * T + t) * H,
                                       (size_t)H * sizeof(float)) == 0;
                }
                CHECK(same);
                grulite_stream_free(st);
                free(xt); free(yt); free(xb); free(y); free(y1);
                grulite_workspace_free(ws);
                grulite_model_free(m);
            }
        }
    }
    free(w_ih); free(w_hh); free(b_ih); free(b_hh); free(x);
}

/* ---- main ------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s FIXTURE_DIR\n", argv[0]);
        return 2;
    }
    static const char *names[] = {
        "bidir2_lengths_h0", "nobias1", "head2_relu_softmax", "mixed_sizes_head",
        "reset_before_bidir", "reset_before_uni_head", "uni1_head_none_softmax",
    };
    const int n_fixtures = (int)(sizeof names / sizeof names[0]);
    fixture *fx = xcalloc((size_t)n_fixtures, sizeof *fx);
    int loaded[16] = { 0 };

    test_basics();
    {
        /* The test's own CRC-32 is the zlib one (check value of "123456789"). */
        set_ctx("crc32", NULL);
        CHECK(crc32_bitwise((const unsigned char *)"123456789", 9) == 0xCBF43926u);
    }
    for (int i = 0; i < n_fixtures; i++) {
        set_ctx("fixture", names[i]);
        loaded[i] = fixture_read(argv[1], names[i], &fx[i]) == 0;
        CHECK(loaded[i]);
    }
    /* The kernel set this CPU gets by default (GRULITE_ISA may force one). */
    if (loaded[0]) {
        grulite_model_spec spec = fixture_spec(&fx[0]);
        grulite_model *m = load_spec(&spec);
        const char *env = getenv("GRULITE_ISA");
        printf("kernel set: %s%s%s%s\n", m ? grulite_model_isa(m) : "(model did not load)",
               env ? " (GRULITE_ISA=" : "", env ? env : "", env ? ")" : "");
        grulite_model_free(m);
    }
    printf("kernel sets this CPU and build run:");
    for (int i = 0; i < N_ISAS; i++)
        if (grulite_isa_supported(k_isas[i])) printf(" %s", k_isas[i]);
    printf("\n");
    CHECK(grulite_isa_supported("generic"));
    CHECK(!grulite_isa_supported("sse9") && !grulite_isa_supported(NULL));
    for (int i = 0; i < n_fixtures; i++) {
        if (!loaded[i]) continue;
        test_numerics(&fx[i]);
        test_stream(&fx[i]);
        test_forward_args(&fx[i]);
        test_serialize_errors(&fx[i]);
    }
    /* Numerics and streaming again with every other kernel set. */
    for (int k = 0; k < N_ISAS; k++) {
        if (!grulite_isa_supported(k_isas[k])) continue;
        g_isa = k_isas[k];
        for (int i = 0; i < n_fixtures; i++) {
            if (!loaded[i]) continue;
            test_numerics(&fx[i]);
            test_stream(&fx[i]);
        }
        g_isa = NULL;
    }
    for (size_t i = 0; i < sizeof k_synth / sizeof k_synth[0]; i++) test_kernel_sets(&k_synth[i]);
    if (loaded[0]) test_model_io(&fx[0]);
    if (loaded[2]) test_model_io(&fx[2]);
    if (loaded[5]) test_hostile(&fx[5]);   /* small: two layers, a head, with and without bias */
    if (loaded[1]) test_hostile(&fx[1]);   /* smallest: one layer, no bias, no head */
    test_int8_nonfinite_weights();
    test_nonfinite_row_isolated();
    if (loaded[3]) test_threads(&fx[3]);
    if (loaded[0]) test_threads(&fx[0]);

    for (int i = 0; i < n_fixtures; i++) fixture_free(&fx[i]);
    free(fx);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
