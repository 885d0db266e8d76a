/*
 * test_noos.c - the C tests of a build with no operating system
 * (GRULITE_NO_OS; docs/edge.md): only the caller-memory API, static
 * memory, no heap, no files, no stdio (board.h prints).  It runs on the
 * Cortex-M4 under qemu-system-arm (semihosting) and on the build host.
 *
 * The models are a torch.nn.GRU(5, 12) + nn.Linear(12, 3) emitted as C by
 * grulite in float32, float16 and int8 (tools/make_edge_fixtures.py).  For
 * each: a stream one step at a time and a whole-sequence forward, compared
 * with torch (the independent reference; float16 and int8 weights are
 * rounded, hence their looser tolerances) and with what grulite gives on
 * the host that wrote the fixtures (any kernel set: within 1e-5; int8
 * models on the sets whose int8 products also round the activations to
 * int8, every x86-64 one and neondot: within 5e-3).  Then
 * the errors: memory below the queries, a corrupted image, a misaligned
 * one, bad arguments.  Prints "N passed, M failed"; exit status 1 on a
 * failure.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "grulite.h"
#include "noos_fixtures.h"

static int passed, failed;

static void say(const char *a, const char *b, const char *c)
{
    board_write(a);
    if (b) board_write(b);
    if (c) board_write(c);
}

#define CHECK(cond) check((cond), #cond, __LINE__)

static void check(int ok, const char *what, int line)
{
    if (ok) {
        passed++;
        return;
    }
    failed++;
    char num[16];
    board_int(num, line);
    say("FAIL line ", num, ": ");
    say(what, "\n", NULL);
}

/* Max |a - b| over n floats, in billionths (integers: no printf here). */
static long max_diff_e9(const float *a, const float *b, size_t n)
{
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) {
        const float d = a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
        if (!(d <= m)) m = d;              /* NaN counts as the largest */
    }
    return m < 1.0f ? (long)(m * 1e9f) : 1000000000L;
}

static int near(const char *what, const float *got, const float *want, size_t n, float tol)
{
    const long e9 = max_diff_e9(got, want, n);
    char num[16];
    board_int(num, e9);
    const int ok = e9 <= (long)(tol * 1e9f);
    say("  ", what, ": max |diff| ");
    say(num, "e-9", ok ? "\n" : "  <- above the tolerance\n");
    check(ok, what, __LINE__);
    return ok;
}

/* Static memory: the model's descriptors, a stream, a workspace, and a
 * 64-byte aligned copy of an image for corrupting. */
static unsigned char model_mem[2048];
static unsigned char stream_mem[4096];
static unsigned char ws_mem[16384];
static unsigned char image_copy[8192] __attribute__((aligned(64)));

static float y[EDGE_B * EDGE_T * EDGE_H], head[EDGE_B * EDGE_T * EDGE_O];

/* One model: a stream step by step, then a whole-sequence forward. */
static void test_model(const char *name, const unsigned char *img, size_t size,
                       const float *host_y, const float *host_head, float torch_tol)
{
    say("model ", name, "\n");
    char msg[160];
    const size_t need = grulite_model_mem_size(img, size);
    CHECK(need > 0 && need <= sizeof model_mem);
    grulite_model *m = NULL;
    int rc = grulite_model_load_mem(img, size, model_mem, sizeof model_mem, &m, msg, sizeof msg);
    CHECK(rc == GRULITE_OK && m != NULL);
    if (rc) {
        say("  load: ", msg, "\n");
        return;
    }
    grulite_info info;
    CHECK(grulite_model_info(m, &info) == GRULITE_OK);
    CHECK(info.input_size == EDGE_I && info.output_size == EDGE_H && info.head_size == EDGE_O);
    const char *isa = grulite_model_isa(m);
    say("  kernel set: ", isa, "\n");
    grulite_layer_info li;
    CHECK(grulite_model_layer(m, 0, &li) == GRULITE_OK);
    const int rounds_x = li.dtype == GRULITE_DTYPE_I8 && strcmp(isa, "generic") != 0 &&
                         strcmp(isa, "neon") != 0;
    const float host_tol = rounds_x ? 5e-3f : 1e-5f;

    /* A stream, one step at a time. */
    const size_t sneed = grulite_stream_mem_size(m, EDGE_B, 1);
    CHECK(sneed > 0 && sneed <= sizeof stream_mem);
    grulite_stream *s = NULL;
    CHECK(grulite_stream_init(m, EDGE_B, 1, stream_mem, sneed - 64, &s) == GRULITE_E_BUFFER);
    CHECK(grulite_stream_init(m, EDGE_B, 1, stream_mem, sneed, &s) == GRULITE_OK);
    if (!s) return;
    for (int t = 0; t < EDGE_T; t++) {
        float xt[EDGE_B * EDGE_I], yt[EDGE_B * EDGE_H], ht[EDGE_B * EDGE_O];
        for (int b = 0; b < EDGE_B; b++)
            memcpy(xt + b * EDGE_I, edge_x + (b * EDGE_T + t) * EDGE_I, sizeof(float) * EDGE_I);
        rc = grulite_stream_step(s, xt, 1, yt, ht);
        CHECK(rc == GRULITE_OK);
        for (int b = 0; b < EDGE_B; b++) {
            memcpy(y + (b * EDGE_T + t) * EDGE_H, yt + b * EDGE_H, sizeof(float) * EDGE_H);
            memcpy(head + (b * EDGE_T + t) * EDGE_O, ht + b * EDGE_O, sizeof(float) * EDGE_O);
        }
    }
    near("stream y vs the host's", y, host_y, sizeof y / sizeof y[0], host_tol);
    near("stream head vs the host's", head, host_head, sizeof head / sizeof head[0], host_tol);
    near("stream y vs torch", y, edge_torch_y, sizeof y / sizeof y[0], torch_tol);
    near("stream head vs torch", head, edge_torch_head, sizeof head / sizeof head[0], torch_tol);
    /* Sized for one step: eight at once do not fit, and are refused. */
    float x8[EDGE_B * 8 * EDGE_I] = { 0 };
    CHECK(grulite_stream_step(s, x8, 8, y, head) == GRULITE_E_BUFFER);
    grulite_stream_free(s);                  /* frees nothing; accepted */

    /* The whole sequence with a workspace in ws_mem. */
    const size_t wneed = grulite_workspace_mem_size(m, EDGE_B, EDGE_T);
    CHECK(wneed > 0 && wneed <= sizeof ws_mem);
    grulite_workspace *ws = NULL;
    CHECK(grulite_workspace_init(ws_mem, sizeof ws_mem, &ws) == GRULITE_OK);
    if (!ws) return;
    CHECK(grulite_workspace_threads(ws) == 1);
    CHECK(grulite_workspace_set_threads(ws, 2) == GRULITE_E_UNSUPPORTED);
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = EDGE_B;
    run.steps = EDGE_T;
    run.batch_first = 1;
    run.head_all_steps = 1;
    run.x = edge_x;
    run.y = y;
    run.head = head;
    memset(y, 0, sizeof y);
    CHECK(grulite_forward(m, ws, &run) == GRULITE_OK);
    near("forward y vs the host's", y, host_y, sizeof y / sizeof y[0], host_tol);
    near("forward head vs the host's", head, host_head, sizeof head / sizeof head[0], host_tol);
    /* Half the query: smaller chunks of rows, the same numbers; room for
     * not even one row: refused, nothing written. */
    grulite_workspace *small = NULL;
    CHECK(grulite_workspace_init(ws_mem, wneed / 2, &small) == GRULITE_OK);
    memset(y, 0, sizeof y);
    CHECK(small != NULL && grulite_forward(m, small, &run) == GRULITE_OK);
    near("forward y, half the memory", y, host_y, sizeof y / sizeof y[0], host_tol);
    CHECK(grulite_workspace_init(ws_mem, 320, &small) == GRULITE_OK);
    memset(y, 0x7f, sizeof y);
    CHECK(small != NULL && grulite_forward(m, small, &run) == GRULITE_E_BUFFER);
    CHECK(((unsigned char *)y)[0] == 0x7f);
    grulite_workspace_free(ws);
    grulite_model_free(m);
}

/* Hostile and wrong input: clear codes and messages, nothing else. */
static void test_errors(void)
{
    say("errors\n", NULL, NULL);
    char msg[160];
    grulite_model *m = NULL;
    const size_t need = grulite_model_mem_size(edge_f32, edge_f32_size);
    CHECK(grulite_model_load_mem(edge_f32, edge_f32_size, model_mem, need - 16, &m, msg,
                                 sizeof msg) == GRULITE_E_BUFFER);
    CHECK(m == NULL && msg[0] != '\0');
    CHECK(edge_i8_size <= sizeof image_copy);
    memcpy(image_copy, edge_i8, edge_i8_size);
    image_copy[edge_i8_size / 2] ^= 0x40;      /* a flipped bit in the weights */
    CHECK(grulite_model_load_mem(image_copy, edge_i8_size, model_mem, sizeof model_mem, &m, msg,
                                 sizeof msg) == GRULITE_E_CHECKSUM);
    say("  corrupted image: ", msg, "\n");
    memcpy(image_copy, "NOTAGRU!", 8);
    CHECK(grulite_model_mem_size(image_copy, edge_i8_size) == 0);
    CHECK(grulite_model_load_mem(image_copy, edge_i8_size, model_mem, sizeof model_mem, &m, msg,
                                 sizeof msg) == GRULITE_E_MAGIC);
    CHECK(grulite_model_load_mem(edge_i8 + 4, edge_i8_size - 4, model_mem, sizeof model_mem, &m,
                                 msg, sizeof msg) == GRULITE_E_ALIGN);
    CHECK(grulite_model_load_mem(edge_i8, edge_i8_size, model_mem, sizeof model_mem, NULL, NULL, 0)
          == GRULITE_E_ARG);
    CHECK(grulite_workspace_init(ws_mem, 4, &(grulite_workspace *){ NULL }) == GRULITE_E_BUFFER);
    CHECK(grulite_stream_mem_size(NULL, 1, 1) == 0);
    CHECK(grulite_strerror(GRULITE_E_BUFFER)[0] != '\0');
}

int main(void)
{
    say("grulite ", grulite_version(), " with no operating system\n");
    test_model("float32", edge_f32, edge_f32_size, edge_f32_y, edge_f32_head, 2e-5f);
    test_model("float16", edge_f16, edge_f16_size, edge_f16_y, edge_f16_head, 5e-4f);
    test_model("int8", edge_i8, edge_i8_size, edge_i8_y, edge_i8_head, 5e-3f);
    test_errors();
    char a[16], b[16];
    board_int(a, passed);
    board_int(b, failed);
    say(a, " passed, ", b);
    say(" failed\n", NULL, NULL);
    return failed ? 1 : 0;
}
