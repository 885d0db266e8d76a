/*
 * harness.h - what the C test files share: the check macros and counters,
 * the kernel-set list, byte and allocation helpers, and the fixture reader
 * (format: tools/make_c_fixtures.py).  test_main.c says what runs in which
 * order; each test_*.c holds one area.
 */
#ifndef GRULITE_TEST_HARNESS_H
#define GRULITE_TEST_HARNESS_H

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

extern int g_passed, g_failed;
extern char g_ctx[256];   /* what is being tested, printed with a failure */
extern const char *g_isa; /* kernel set forced on every model, or NULL: the default */

/* Every kernel set a build may have; grulite_isa_supported() says which run here. */
#define N_ISAS 6
extern const char *const k_isas[N_ISAS];
/* Whether the tests that repeat per kernel set run set `isa`: it runs here,
 * and GRULITE_TEST_ISAS (a comma-separated list, for an emulated CPU:
 * tools/emu/run.sh) is unset or names it.  generic stays the reference. */
int isa_tested(const char *isa);

#define CHECK(cond) check_impl(!!(cond), #cond, __FILE__, __LINE__)
#define CHECK_RC(expr, want) check_rc_impl((expr), (want), #expr, __FILE__, __LINE__)

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

void check_impl(int ok, const char *expr, const char *file, int line);
void check_rc_impl(int got, int want, const char *expr, const char *file, int line);
void set_ctx(const char *a, const char *b);
void apply_isa(grulite_model *m);
/* A non-NULL pointer to no object of the caller's type: what an out
 * parameter holds before a call that must reset it (never dereferenced). */
void *not_null(void);
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xalloc_aligned(size_t n);
uint32_t rd32(const unsigned char *p);
void wr32(unsigned char *p, uint32_t v);
void wr64(unsigned char *p, uint64_t v);
uint32_t crc32_bitwise(const unsigned char *p, size_t n);
void reseal(unsigned char *img, size_t size);
int near(const float *a, const float *b, size_t n, float tol, const char *what);
double max_diff(const float *a, const float *b, size_t n);
void bt_to_tb(const float *src, float *dst, int B, int T, size_t w);
void tb_to_bt(const float *src, float *dst, int B, int T, size_t w);
void fixture_free(fixture *f);
int fixture_read(const char *dir, const char *name, fixture *f);
grulite_model_spec fixture_spec(const fixture *f);
unsigned char *serialize(const grulite_model_spec *spec, size_t *size);
grulite_model *load_spec(const grulite_model_spec *spec);
void check_info(const grulite_model *m, const fixture *f, int batch_first);
int run_fixture(const grulite_model *m, grulite_workspace *ws, const fixture *f, float *y, float *h_n, float *head, int head_all);

/* ---- The test areas (each in its own file) --------------------------------- */

/* test_load.c: error text, version, serialize / load / save, hostile images */
void test_basics(void);
void test_names(const fixture *f);
void test_model_io(const fixture *f);
void test_serialize_errors(const fixture *f);
void test_hostile(const fixture *f);
/* test_forward.c: numerics against the fixtures, argument errors */
void test_numerics(const fixture *f);
void test_forward_args(const fixture *f);
/* test_stream.c */
void test_stream(const fixture *f);
/* test_threads.c */
void test_threads(const fixture *f);
/* test_kernels.c: every kernel set on random models, fuzzing regressions */
void test_kernel_sets_all(void);
void test_int8_nonfinite_weights(void);
void test_nonfinite_row_isolated(void);
void test_int8_wide_inputs(void);
/* test_sequence.c: embeddings, generation, forecasting, stream rows */
void test_sequence_models(void);
/* test_activations.c: other activations and clip, every pair, every kernel set */
void test_activations(void);
/* test_mem.c: models, workspaces and streams in the caller's memory */
void test_caller_memory(const fixture *f);

#endif
