/* fuzz_load.c - libFuzzer target: grulite_model_load_buffer() on arbitrary
 * bytes, copied (GRULITE_LOAD_COPY, from an exact-size heap buffer) and
 * borrowed (from an exact-size 64-byte aligned buffer), and
 * grulite_model_load_mem() into exactly the memory its query asks for
 * (the same answer and message), then every query
 * of a model that validated, and a round trip through
 * grulite_model_convert() to each weight dtype.
 *
 * Input: one mode byte (fuzz_common.h; bits 2..3 pick the message buffer:
 * 256 bytes, 1 byte, 7 bytes or none), then the image.
 *
 *     clang -g -O1 -fsanitize=fuzzer,address,undefined -Iinclude \
 *           $(find src/core -name '*.c') tools/fuzz/fuzz_load.c -lm -lpthread -o fuzz_load
 *
 * tools/fuzz/run.sh builds and runs it; tools/fuzz/README.md. */
#include "fuzz_common.h"

static const int k_dtypes[4] = { GRULITE_DTYPE_F32, GRULITE_DTYPE_F16, GRULITE_DTYPE_I8,
                                  GRULITE_DTYPE_BF16 };

/* Reads every byte of p (so ASan / valgrind see an out-of-bounds pointer). */
static unsigned touch(const void *p, size_t n)
{
    const unsigned char *b = p;
    unsigned acc = 0;
    for (size_t i = 0; i < n; i++) acc += b[i];
    return acc;
}

/* Every query of a validated model; returns its summary. */
static grulite_info query(const grulite_model *m, size_t image_size)
{
    grulite_info info;
    FZ_REQUIRE(grulite_model_info(m, &info) == GRULITE_OK, "info");
    FZ_REQUIRE(info.num_layers >= 1 && info.num_layers <= GRULITE_MAX_LAYERS, "num_layers %d",
               (int)info.num_layers);
    FZ_REQUIRE(info.num_dense >= 0 && info.num_dense <= GRULITE_MAX_DENSE, "num_dense %d",
               (int)info.num_dense);
    FZ_REQUIRE(info.image_size == image_size, "image_size %lu != %lu",
               (unsigned long)info.image_size, (unsigned long)image_size);
    FZ_REQUIRE(info.input_size >= 1 && info.input_size <= GRULITE_MAX_FEATURES, "input_size");
    FZ_REQUIRE(info.state_size >= 1, "state_size %d", (int)info.state_size);
    FZ_REQUIRE((info.num_dense == 0) == (info.head_size == 0), "head_size %d with %d dense",
               (int)info.head_size, (int)info.num_dense);

    int32_t in = info.input_size, state = 0;
    grulite_embedding_info ei;
    if (info.vocab_size) {
        FZ_REQUIRE(info.input_size == 1, "a token model's input_size %d", (int)info.input_size);
        FZ_REQUIRE(grulite_model_embedding(m, &ei) == GRULITE_OK && ei.vocab_size == info.vocab_size,
                   "embedding");
        in = ei.width;
    } else {
        FZ_REQUIRE(grulite_model_embedding(m, &ei) == GRULITE_E_ARG, "embedding without one");
    }
    for (int l = 0; l < info.num_layers; l++) {
        grulite_layer_info li;
        FZ_REQUIRE(grulite_model_layer(m, l, &li) == GRULITE_OK, "layer %d", l);
        FZ_REQUIRE(li.input_size == in, "layer %d input_size %d, expected %d", l,
                   (int)li.input_size, (int)in);
        FZ_REQUIRE(!li.projected || (l == 0 && info.vocab_size &&
                                     in == 3 * li.num_directions * li.hidden_size), "projected");
        FZ_REQUIRE(li.hidden_size >= 1 && li.hidden_size <= GRULITE_MAX_FEATURES, "hidden");
        FZ_REQUIRE(li.num_directions == 1 || li.num_directions == 2, "directions");
        FZ_REQUIRE(li.reverse == 0 || (li.reverse == 1 && li.num_directions == 1), "reverse");
        FZ_REQUIRE(li.merge == GRULITE_MERGE_CONCAT ||
                   (li.num_directions == 2 && li.merge >= GRULITE_MERGE_SUM &&
                    li.merge <= GRULITE_MERGE_AVE), "merge %d", (int)li.merge);
        FZ_REQUIRE(li.clip >= 0.0f && li.clip - li.clip == 0.0f, "clip");
        for (int d = 0; d < 2; d++) {
            const int used = d < li.num_directions;
            FZ_REQUIRE(!used || (grulite_name(GRULITE_NAMES_GRU_ACTIVATION, li.activation_f[d]) &&
                                 grulite_name(GRULITE_NAMES_GRU_ACTIVATION, li.activation_g[d])),
                       "layer %d direction %d activations %d %d", l, d, (int)li.activation_f[d],
                       (int)li.activation_g[d]);
            FZ_REQUIRE(used || (li.activation_f[d] == 0 && li.activation_g[d] == 0), "unused");
        }
        state += li.num_directions * li.hidden_size;
        in = li.merge ? li.hidden_size : li.num_directions * li.hidden_size;
    }
    FZ_REQUIRE(info.output_size == in, "output_size %d, expected %d", (int)info.output_size, (int)in);
    FZ_REQUIRE(info.state_size == state, "state_size %d, expected %d", (int)info.state_size,
               (int)state);
    for (int j = 0; j < info.num_dense; j++) {
        grulite_dense_info di;
        FZ_REQUIRE(grulite_model_dense(m, j, &di) == GRULITE_OK, "dense %d", j);
        FZ_REQUIRE(di.in_features == in, "dense %d in_features", j);
        FZ_REQUIRE(di.activation >= GRULITE_ACT_NONE && di.activation <= GRULITE_ACT_SOFTMAX, "act");
        in = di.out_features;
    }
    if (info.num_dense) FZ_REQUIRE(info.head_size == in, "head_size");
    grulite_layer_info li;
    grulite_dense_info di;
    FZ_REQUIRE(grulite_model_layer(m, -1, &li) == GRULITE_E_ARG, "layer -1");
    FZ_REQUIRE(grulite_model_layer(m, info.num_layers, &li) == GRULITE_E_ARG, "layer L");
    FZ_REQUIRE(grulite_model_dense(m, -1, &di) == GRULITE_E_ARG, "dense -1");
    FZ_REQUIRE(grulite_model_dense(m, info.num_dense, &di) == GRULITE_E_ARG, "dense N");

    size_t len = 0, isz = 0;
    const char *meta = grulite_model_metadata(m, &len);
    FZ_REQUIRE(len <= image_size && (meta != NULL || len == 0), "metadata");
    if (len) (void)touch(meta, len);
    const void *img = grulite_model_image(m, &isz);
    FZ_REQUIRE(img != NULL && isz == image_size, "image");
    (void)touch(img, isz);
    const char *isa = grulite_model_isa(m);
    FZ_REQUIRE(isa != NULL && isa[0], "isa");
    return info;
}

/* Converts m to every dtype; each result must load and keep the shape. */
static void round_trip(const grulite_model *m, const grulite_info *info)
{
    for (int i = 0; i < 4; i++) {
        size_t need = 0;
        int rc = grulite_model_convert(m, k_dtypes[i], NULL, 0, &need);
        FZ_REQUIRE(rc == GRULITE_OK, "convert (measure) to dtype %d: %d %s", k_dtypes[i], rc,
                   grulite_strerror(rc));
        FZ_REQUIRE(need >= 64, "converted size %lu", (unsigned long)need);
        unsigned char *buf = malloc(need);
        if (!buf) abort();
        size_t got = 0;
        if (need > 64)
            FZ_REQUIRE(grulite_model_convert(m, k_dtypes[i], buf, need - 1, &got) == GRULITE_E_BUFFER,
                       "short buffer accepted");
        rc = grulite_model_convert(m, k_dtypes[i], buf, need, &got);
        FZ_REQUIRE(rc == GRULITE_OK && got == need, "convert to dtype %d: %d", k_dtypes[i], rc);
        grulite_model *m2 = NULL;
        char msg[256];
        rc = grulite_model_load_buffer(buf, need, GRULITE_LOAD_COPY, &m2, msg, sizeof msg);
        FZ_REQUIRE(rc == GRULITE_OK, "converted image (dtype %d) does not load: %s", k_dtypes[i], msg);
        grulite_info i2 = query(m2, need);
        FZ_REQUIRE(i2.input_size == info->input_size && i2.num_layers == info->num_layers &&
                   i2.num_dense == info->num_dense && i2.output_size == info->output_size &&
                   i2.head_size == info->head_size && i2.state_size == info->state_size &&
                   i2.batch_first == info->batch_first, "converted model differs");
        grulite_model_free(m2);
        free(buf);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    const unsigned mode = data[0];
    const size_t n = size - 1;
    static const size_t k_msg_sizes[4] = { 256, 1, 7, 0 };
    const size_t msg_size = k_msg_sizes[(mode >> 2) & 3u];
    char msg[256];

    unsigned char *img = fz_copy(data + 1, n);
    fz_present(img, n, mode);

    /* Copied. */
    grulite_model *m = fz_not_null();      /* must be overwritten */
    memset(msg, 'X', sizeof msg);
    const int rc = grulite_model_load_buffer(img, n, GRULITE_LOAD_COPY, &m,
                                             msg_size ? msg : NULL, msg_size);
    if (rc != GRULITE_OK) fz_check_failure(rc, m, msg_size ? msg : NULL, msg_size);

    /* Borrowed from an aligned buffer: the same answer. */
    unsigned char *al = fz_copy_aligned(img, n);
    grulite_model *mb = fz_not_null();
    const int rcb = grulite_model_load_buffer(al, n, 0, &mb, msg, sizeof msg);
    FZ_REQUIRE(rcb == rc, "borrowed load gives %d, copied %d", rcb, rc);
    if (rcb != GRULITE_OK) fz_check_failure(rcb, mb, msg, sizeof msg);
    /* Into the caller's memory, exactly what the query asks for (from an
     * exact-size heap block: ASan sees a byte past it): the same answer,
     * and the same message; with one byte less, refused or the image's
     * own error. */
    const size_t need = grulite_model_mem_size(al, n);
    unsigned char *mem = malloc(need ? need : 1);
    FZ_REQUIRE(mem != NULL, "out of memory");
    grulite_model *mc = fz_not_null();
    char msg2[256];
    const int rcm = grulite_model_load_mem(al, n, mem, need, &mc, msg2, sizeof msg2);
    FZ_REQUIRE(rcm == rc, "load into caller memory gives %d, copied %d", rcm, rc);
    if (rcm != GRULITE_OK) {
        fz_check_failure(rcm, mc, msg2, sizeof msg2);
        FZ_REQUIRE(strcmp(msg, msg2) == 0, "messages differ: \"%s\" and \"%s\"", msg, msg2);
    } else {
        const grulite_info ic = query(mc, n);
        FZ_REQUIRE(ic.checksum == query(mb, n).checksum, "caller-memory model differs");
        grulite_model *ms = fz_not_null();
        const int rcs = grulite_model_load_mem(al, n, mem, need - 16, &ms, NULL, 0);
        FZ_REQUIRE(rcs == GRULITE_E_BUFFER && ms == NULL, "below the query: %d", rcs);
    }
    free(mem);
    /* Borrowed from a misaligned buffer: refused before anything is read. */
    if (n) {
        grulite_model *mm = NULL;
        FZ_REQUIRE(grulite_model_load_buffer(al + 1, n - 1, 0, &mm, NULL, 0) == GRULITE_E_ALIGN &&
                   mm == NULL, "misaligned buffer");
    }

    if (rc == GRULITE_OK) {
        free(img);                     /* the copied model must not need it */
        img = NULL;
        const grulite_info info = query(m, n);
        const grulite_info ib = query(mb, n);
        FZ_REQUIRE(ib.checksum == info.checksum && ib.state_size == info.state_size,
                   "copied and borrowed models differ");
        round_trip(m, &info);
        grulite_model_free(mb);
        grulite_model_free(m);
    }
    free(al);
    free(img);
    return 0;
}
