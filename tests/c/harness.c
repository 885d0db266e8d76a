/*
 * harness.c - the C tests' tiny harness (checks, context, allocation, byte
 * helpers, the fixture reader); see harness.h.
 */
#include "harness.h"

/* ---- The tiny test harness ----------------------------------------------- */

int g_passed, g_failed;
char g_ctx[256];
const char *g_isa;

const char *const k_isas[N_ISAS] = { "generic", "avx2", "avx512", "avx512vnni", "neon", "neondot" };

int isa_tested(const char *isa)
{
    if (!grulite_isa_supported(isa)) return 0;
    const char *list = getenv("GRULITE_TEST_ISAS");
    if (!list || !*list) return 1;
    const size_t n = strlen(isa);
    for (const char *p = list; *p;) {
        const size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, isa, n)) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

void check_impl(int ok, const char *expr, const char *file, int line)
{
    if (ok) {
        g_passed++;
        return;
    }
    g_failed++;
    printf("FAIL %s:%d: %s%s%s%s\n", file, line, expr, g_ctx[0] ? "  [" : "", g_ctx,
           g_ctx[0] ? "]" : "");
}

void check_rc_impl(int got, int want, const char *expr, const char *file, int line)
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


void set_ctx(const char *a, const char *b)
{
    snprintf(g_ctx, sizeof g_ctx, "%s%s%s%s%s", a, b ? " " : "", b ? b : "",
             g_isa ? ", kernel set " : "", g_isa ? g_isa : "");
}

/* Switches m to the forced kernel set, if any (a failure is recorded). */
void apply_isa(grulite_model *m)
{
    if (m && g_isa) CHECK_RC(grulite_model_set_isa(m, g_isa), GRULITE_OK);
}

/* ---- Small helpers --------------------------------------------------------- */

void *not_null(void)
{
    static char anything;
    return &anything;
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

void *xalloc_aligned(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) {
        fprintf(stderr, "test_core: out of memory\n");
        exit(2);
    }
    return p;
}

uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

void wr64(unsigned char *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* CRC-32, zlib polynomial, bit by bit: independent of src/core/crc32.c. */
uint32_t crc32_bitwise(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

/* Rewrites the checksum of a .grl image: CRC-32 of [16, size) at offset 12. */
void reseal(unsigned char *img, size_t size)
{
    wr32(img + 12, crc32_bitwise(img + 16, size - 16));
}

/* 1 if |a - b| <= tol everywhere; prints the first mismatch. */
int near(const float *a, const float *b, size_t n, float tol, const char *what)
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

double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d;   /* NaN propagates */
    }
    return m;
}

/* (B, T, w) <-> (T, B, w) */
void bt_to_tb(const float *src, float *dst, int B, int T, size_t w)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)t * B + b) * w, src + ((size_t)b * T + t) * w, w * sizeof(float));
}

void tb_to_bt(const float *src, float *dst, int B, int T, size_t w)
{
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            memcpy(dst + ((size_t)b * T + t) * w, src + ((size_t)t * B + b) * w, w * sizeof(float));
}

/* ---- Fixtures (format: tools/make_c_fixtures.py) --------------------------- */


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

void fixture_free(fixture *f)
{
    for (int i = 0; i < f->n_allocs; i++) free(f->allocs[i]);
    f->n_allocs = 0;
}

/* Reads dir/name.bin; returns 0 or -1 (message printed). */
int fixture_read(const char *dir, const char *name, fixture *f)
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

grulite_model_spec fixture_spec(const fixture *f)
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
unsigned char *serialize(const grulite_model_spec *spec, size_t *size)
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
grulite_model *load_spec(const grulite_model_spec *spec)
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

void check_info(const grulite_model *m, const fixture *f, int batch_first)
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
int run_fixture(const grulite_model *m, grulite_workspace *ws, const fixture *f,
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
