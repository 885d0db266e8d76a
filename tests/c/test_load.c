/*
 * test_load.c - error text and version; serialize, load (buffer / copy / mmap),
 * queries and save; invalid specs; hostile images.
 */
#include "harness.h"

/* ---- 1. Error text, version, free(NULL) ------------------------------------ */

void test_basics(void)
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

void test_model_io(const fixture *f)
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
    grulite_model *m2 = not_null();   /* must be reset to NULL */
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
void test_serialize_errors(const fixture *f)
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
    grulite_model *m = not_null();   /* must be reset */
    char msg[200];
    memset(msg, 'X', sizeof msg);
    const int rc = grulite_model_load_buffer(buf, size, copy ? GRULITE_LOAD_COPY : 0, &m,
                                             msg, sizeof msg);
    if (!copy) {
        /* The same checks and words from a load into the caller's memory. */
        const size_t need = grulite_model_mem_size(buf, size);
        unsigned char *mem = xmalloc(need ? need : 64);
        grulite_model *m2 = not_null();
        char msg2[200];
        const int rc2 = grulite_model_load_mem(buf, size, mem, need ? need : 64, &m2, msg2,
                                               sizeof msg2);
        CHECK_RC(rc2, rc);
        if (rc2 == GRULITE_OK && rc == GRULITE_OK) CHECK(m2 != NULL);
        if (rc2 != GRULITE_OK && rc != GRULITE_OK) CHECK(m2 == NULL && !strcmp(msg, msg2));
        free(mem);
    }
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

void test_hostile(const fixture *f)
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
        { "num_layers 194", 36, 4, 194, GRULITE_E_CONFIG },     /* 1 + 64 * 2 + 64 at most */
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
        { "layer 0 projected with no embedding", 64 + 4 + 4 * 6, 4, 1, GRULITE_E_CONFIG },
        { "layer 0 flags 2: a learned h0 whose tensors are missing", 64 + 4 + 4 * 6, 4, 2,
          GRULITE_E_TENSOR },
        { "layer 0 flags 4: an unknown bit", 64 + 4 + 4 * 6, 4, 4, GRULITE_E_CONFIG },
        { "layer 0 kind embedding (its unused fields hold the GRU dtype)", 64, 4,
          GRULITE_LAYER_EMBEDDING, GRULITE_E_FORMAT },
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
