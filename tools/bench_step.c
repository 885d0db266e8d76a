// bench_step.c - the C-level cost of one grulite streaming step, no Python.
//
//     cc -O3 -std=c99 -Iinclude src/core/*.c src/core/*/*.c tools/bench_step.c -o bench_step -lm -lpthread
//     ./bench_step            # H = 64 and 128
//     ./bench_step 32 256     # any hidden sizes
//
// (tools/bench.py compiles it with the flags setup.py uses and runs it.)
/*
 * For each hidden size H it builds a random unidirectional 1-layer GRU
 * (input_size 64, PyTorch's reset_after variant, with biases) through
 * grulite_model_serialize + grulite_model_load_buffer, then times
 *
 *   - grulite_stream_step(s, x_t, 1, y_t, NULL) for batch 1: best of
 *     several runs of STEPS consecutive steps (inputs cycled from a small
 *     pool), reported per step;
 *   - grulite_forward for one sequence, batch 1, T = 100 steps.
 *
 * Output, one line per measurement, key=value (tools/bench.py parses it):
 *
 *     version=0.1.0 input_size=64
 *     H=128 step_ns=1234.5 gflops=1.23 runs=7 steps_per_run=10000 isa=avx512
 *     H=128 forward_T=100 forward_us=123.4 gflops=1.23 runs=50
 *     H=128 read_bytes=196608 read_ns=1400.0 runs=9
 *
 * The last kind of line is the read floor (bench_read_floor below): the
 * best time to read W_hh's bytes once, the least a batch-1 step can cost.
 *
 * FLOPs counted: 2*3H*(I+H) per step (the two matrix-vector products;
 * gates and biases not counted).  Timing: clock_gettime(CLOCK_MONOTONIC),
 * best of N after warm-up, N adaptive (>= 5 runs and >= 0.3 s, stopping
 * after ~2 s).
 */
#define _POSIX_C_SOURCE 199309L

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "grulite.h"

#define INPUT_SIZE 64
#define STEPS_PER_RUN 10000   /* steps in one timed run of the stream */
#define X_POOL 64             /* distinct input vectors cycled through */
#define FWD_T 100             /* steps of the grulite_forward sequence */
#define MIN_RUNS 5
#define MIN_TIME 0.3          /* seconds */
#define MAX_TIME 2.0          /* seconds, per measurement */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* xorshift32 -> uniform in [-a, a) */
static uint32_t rng_state = 0x12345678u;
static float urand(float a)
{
    uint32_t x = rng_state;
    x ^= x << 13; x ^= x >> 17; x ^= x << 5;
    rng_state = x;
    return a * (2.0f * (float)(x >> 8) / 16777216.0f - 1.0f);
}

static float *rand_floats(size_t n, float a)
{
    float *p = malloc(n * sizeof(float));
    if (!p) { fprintf(stderr, "bench_step: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) p[i] = urand(a);
    return p;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_step: %s: %s (%d)\n", what, grulite_strerror(rc), rc);
    exit(1);
}

/* A random 1-layer unidirectional GRU, input_size I, hidden H. */
static grulite_model *make_model(int I, int H)
{
    const float a = 1.0f / (float)H;   /* small weights: keep the state bounded */
    float *w_ih = rand_floats((size_t)3 * H * I, a * 8.0f);
    float *w_hh = rand_floats((size_t)3 * H * H, a * 8.0f);
    float *b_ih = rand_floats((size_t)3 * H, 0.1f);
    float *b_hh = rand_floats((size_t)3 * H, 0.1f);

    grulite_layer_spec layer;
    memset(&layer, 0, sizeof layer);
    layer.hidden_size = H;
    layer.num_directions = 1;
    layer.reset_after = 1;
    layer.has_bias = 1;
    layer.weight_ih[0] = w_ih;
    layer.weight_hh[0] = w_hh;
    layer.bias_ih[0] = b_ih;
    layer.bias_hh[0] = b_hh;

    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = I;
    spec.num_layers = 1;
    spec.layers = &layer;
    spec.dtype = GRULITE_DTYPE_F32;
    spec.batch_first = 1;

    size_t size = 0;
    int rc = grulite_model_serialize(&spec, NULL, 0, &size);
    if (rc < 0) die("grulite_model_serialize (size)", rc);
    void *buf = malloc(size);
    if (!buf) { fprintf(stderr, "bench_step: out of memory\n"); exit(1); }
    rc = grulite_model_serialize(&spec, buf, size, &size);
    if (rc < 0) die("grulite_model_serialize", rc);

    grulite_model *model = NULL;
    char msg[256] = "";
    rc = grulite_model_load_buffer(buf, size, GRULITE_LOAD_COPY, &model, msg, sizeof msg);
    if (rc < 0) {
        fprintf(stderr, "bench_step: grulite_model_load_buffer: %s (%d) %s\n",
                grulite_strerror(rc), rc, msg);
        exit(1);
    }
    free(buf);
    free(w_ih); free(w_hh); free(b_ih); free(b_hh);
    return model;
}

static volatile float sink;   /* keeps the results observable */

/* ---- The read floor ------------------------------------------------------
 * At batch 1 every step reads all of W_hh (3H x H floats, packed) and does
 * only two flops per weight, so once W_hh outgrows L1 a step cannot beat
 * the time this core needs to stream those bytes from L2.  read_sum() is
 * that time with nothing else in the loop: eight independent accumulators,
 * the widest loads the CPU has. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f"))) static float read_sum_avx512(const float *p, size_t n)
{
    __m512 s[8];
    for (int j = 0; j < 8; j++) s[j] = _mm512_setzero_ps();
    for (size_t i = 0; i + 128 <= n; i += 128)
        for (int j = 0; j < 8; j++) s[j] = _mm512_add_ps(s[j], _mm512_loadu_ps(p + i + 16 * j));
    for (int j = 1; j < 8; j++) s[0] = _mm512_add_ps(s[0], s[j]);
    float out[16];
    _mm512_storeu_ps(out, s[0]);
    return out[0] + out[15];
}
__attribute__((target("avx2"))) static float read_sum_avx2(const float *p, size_t n)
{
    __m256 s[8];
    for (int j = 0; j < 8; j++) s[j] = _mm256_setzero_ps();
    for (size_t i = 0; i + 64 <= n; i += 64)
        for (int j = 0; j < 8; j++) s[j] = _mm256_add_ps(s[j], _mm256_loadu_ps(p + i + 8 * j));
    for (int j = 1; j < 8; j++) s[0] = _mm256_add_ps(s[0], s[j]);
    float out[8];
    _mm256_storeu_ps(out, s[0]);
    return out[0] + out[7];
}
#endif

static float read_sum_c(const float *p, size_t n)
{
    float s[8] = { 0 };
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += p[i + j];
    return s[0] + s[7];
}

static float read_sum(const float *p, size_t n)
{
#if defined(__GNUC__) && defined(__x86_64__)
    if (__builtin_cpu_supports("avx512f")) return read_sum_avx512(p, n);
    if (__builtin_cpu_supports("avx2")) return read_sum_avx2(p, n);
#endif
    return read_sum_c(p, n);
}

/* Best time of one pass over the bytes W_hh takes in the model file. */
static void bench_read_floor(int H)
{
    const size_t nb = ((size_t)H + 15) / 16, n = nb * 16 * 3 * (size_t)H;
    float *raw = rand_floats(n + 16, 1.0f);     /* 64-byte aligned, as in a model */
    float *w = (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63);
    long reps = 1;
    for (;;) {                                   /* runs of >= 1 ms */
        double t0 = now_s();
        for (long r = 0; r < reps; r++) sink += read_sum(w, n);
        if (now_s() - t0 > 1e-3) break;
        reps *= 2;
    }
    double best = 1e30, spent = 0.0;
    int runs = 0;
    while (runs < MIN_RUNS || spent < MIN_TIME) {
        double t0 = now_s();
        for (long r = 0; r < reps; r++) sink += read_sum(w, n);
        double dt = now_s() - t0;
        spent += dt;
        runs++;
        if (dt < best) best = dt;
        if (spent > MAX_TIME) break;
    }
    printf("H=%d read_bytes=%zu read_ns=%.1f runs=%d\n", H, n * sizeof(float),
           best / (double)reps * 1e9, runs);
    fflush(stdout);
    free(raw);
}

static void bench_hidden(int H)
{
    const int I = INPUT_SIZE;
    grulite_model *model = make_model(I, H);
    const double flops_step = 2.0 * grulite_model_macs(model);     /* the core's one count */
    const char *isa = grulite_model_isa(model);

    /* ---- streaming, one step per call, batch 1 ---- */
    grulite_stream *s = NULL;
    int rc = grulite_stream_new(model, 1, &s);
    if (rc < 0) die("grulite_stream_new", rc);
    float *xs = rand_floats((size_t)X_POOL * I, 1.0f);
    float *y = malloc((size_t)H * sizeof(float));
    if (!y) { fprintf(stderr, "bench_step: out of memory\n"); exit(1); }

    /* Warm-up, and size a run so that it takes at most ~0.1 s. */
    long steps = STEPS_PER_RUN;
    {
        const int warm = 200;
        double t0 = now_s();
        for (int k = 0; k < warm; k++) {
            rc = grulite_stream_step(s, xs + (size_t)(k % X_POOL) * I, 1, y, NULL);
            if (rc < 0) die("grulite_stream_step", rc);
        }
        double per = (now_s() - t0) / warm;
        if (per * steps > 0.1) steps = (long)(0.1 / per) + 1;
        if (steps < 100) steps = 100;
    }
    double best = 1e30, spent = 0.0;
    int runs = 0;
    while (runs < MIN_RUNS || spent < MIN_TIME) {
        grulite_stream_reset(s);
        double t0 = now_s();
        for (long k = 0; k < steps; k++)
            grulite_stream_step(s, xs + (size_t)(k % X_POOL) * I, 1, y, NULL);
        double dt = now_s() - t0;
        sink += y[0];
        spent += dt;
        runs++;
        if (dt < best) best = dt;
        if (spent > MAX_TIME && runs >= 2) break;
    }
    double step_s = best / (double)steps;
    printf("H=%d step_ns=%.1f gflops=%.3f runs=%d steps_per_run=%ld isa=%s\n",
           H, step_s * 1e9, flops_step / step_s * 1e-9, runs, steps, isa);
    fflush(stdout);
    grulite_stream_free(s);

    /* ---- grulite_forward, batch 1, T = FWD_T ---- */
    grulite_workspace *ws = grulite_workspace_new();
    if (!ws) { fprintf(stderr, "bench_step: out of memory\n"); exit(1); }
    grulite_workspace_set_threads(ws, 1);   /* this timing is single-threaded */
    float *x = rand_floats((size_t)FWD_T * I, 1.0f);
    float *yf = malloc((size_t)FWD_T * H * sizeof(float));
    if (!yf) { fprintf(stderr, "bench_step: out of memory\n"); exit(1); }
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = 1;
    run.steps = FWD_T;
    run.batch_first = 1;
    run.x = x;
    run.y = yf;
    for (int k = 0; k < 3; k++) {
        rc = grulite_forward(model, ws, &run);
        if (rc < 0) die("grulite_forward", rc);
    }
    best = 1e30; spent = 0.0; runs = 0;
    while (runs < 20 || spent < MIN_TIME) {
        double t0 = now_s();
        grulite_forward(model, ws, &run);
        double dt = now_s() - t0;
        sink += yf[0];
        spent += dt;
        runs++;
        if (dt < best) best = dt;
        if (spent > MAX_TIME && runs >= MIN_RUNS) break;
    }
    printf("H=%d forward_T=%d forward_us=%.2f gflops=%.3f runs=%d\n",
           H, FWD_T, best * 1e6, flops_step * FWD_T / best * 1e-9, runs);
    fflush(stdout);

    grulite_workspace_free(ws);
    free(x); free(yf); free(xs); free(y);
    grulite_model_free(model);
}

int main(int argc, char **argv)
{
    int hs[64];
    int n = 0;
    for (int i = 1; i < argc && n < 64; i++) {
        char *end = NULL;
        long h = strtol(argv[i], &end, 10);
        if (!end || *end || h < 1 || h > 65536) {
            fprintf(stderr, "usage: %s [H ...]   (hidden sizes, default 64 128)\n", argv[0]);
            return 2;
        }
        hs[n++] = (int)h;
    }
    if (n == 0) { hs[0] = 64; hs[1] = 128; n = 2; }

    printf("version=%s input_size=%d\n", grulite_version(), INPUT_SIZE);
    fflush(stdout);
    for (int i = 0; i < n; i++) bench_hidden(hs[i]);
    for (int i = 0; i < n; i++) bench_read_floor(hs[i]);
    return 0;
}
