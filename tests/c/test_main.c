/*
 * test_main.c - tests of the grulite C core through its public header only.
 *
 * The executable test_core is harness.c, this file and one file per area:
 * test_load.c, test_names.c, test_forward.c, test_stream.c, test_threads.c,
 * test_kernels.c, test_sequence.c, test_activations.c, test_mem.c.
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
 * GRULITE_TEST_ISAS=avx512,avx512vnni (say) limits those repetitions to the
 * named sets, and GRULITE_TEST_THREADS=0 leaves out the thread tests: for a
 * CPU emulator without threads (tools/emu/run.sh).
 *
 * The last line printed is "N passed, M failed"; the exit status is
 * non-zero when M > 0.
 */
#include "harness.h"

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
    const char *only = getenv("GRULITE_TEST_ISAS");
    if (only && *only) {
        /* Every name the list gives is a kernel set's (a misspelt one
         * would quietly test nothing). */
        printf("kernel sets the per-set tests repeat on (GRULITE_TEST_ISAS=%s):", only);
        for (int i = 0; i < N_ISAS; i++)
            if (isa_tested(k_isas[i])) printf(" %s", k_isas[i]);
        printf("\n");
        set_ctx("GRULITE_TEST_ISAS", only);
        for (const char *p = only; *p;) {
            const size_t len = strcspn(p, ",");
            int known = 0;
            for (int i = 0; i < N_ISAS; i++)
                known |= strlen(k_isas[i]) == len && !strncmp(p, k_isas[i], len);
            CHECK(known);
            p += len + (p[len] == ',');
        }
        set_ctx("", NULL);
    }
    CHECK(grulite_isa_supported("generic"));
    CHECK(!grulite_isa_supported("sse9") && !grulite_isa_supported(NULL));
    for (int i = 0; i < n_fixtures; i++) {
        if (!loaded[i]) continue;
        test_numerics(&fx[i]);
        test_stream(&fx[i]);
        test_forward_args(&fx[i]);
        test_serialize_errors(&fx[i]);
        test_caller_memory(&fx[i]);
    }
    /* Numerics and streaming again with every other kernel set. */
    for (int k = 0; k < N_ISAS; k++) {
        if (!isa_tested(k_isas[k])) continue;
        g_isa = k_isas[k];
        for (int i = 0; i < n_fixtures; i++) {
            if (!loaded[i]) continue;
            test_numerics(&fx[i]);
            test_stream(&fx[i]);
        }
        g_isa = NULL;
    }
    test_kernel_sets_all();
    if (loaded[2]) test_names(&fx[2]);     /* two layers and a two-layer head */
    if (loaded[0]) test_model_io(&fx[0]);
    if (loaded[2]) test_model_io(&fx[2]);
    if (loaded[5]) test_hostile(&fx[5]);   /* small: two layers, a head, with and without bias */
    if (loaded[1]) test_hostile(&fx[1]);   /* smallest: one layer, no bias, no head */
    test_int8_nonfinite_weights();
    test_nonfinite_row_isolated();
    test_int8_wide_inputs();
    test_activations();
    test_sequence_models();
    for (int k = 0; k < N_ISAS; k++) {       /* and on every other kernel set */
        if (!isa_tested(k_isas[k])) continue;
        g_isa = k_isas[k];
        test_sequence_models();
        g_isa = NULL;
    }
    const char *threads = getenv("GRULITE_TEST_THREADS");
    if (threads && !strcmp(threads, "0")) {
        printf("threads: not tested (GRULITE_TEST_THREADS=0)\n");   /* an emulator without them */
    } else {
        if (loaded[3]) test_threads(&fx[3]);
        if (loaded[0]) test_threads(&fx[0]);
    }

    for (int i = 0; i < n_fixtures; i++) fixture_free(&fx[i]);
    free(fx);
    printf("%d passed, %d failed\n", g_passed, g_failed);
    return g_failed ? 1 : 0;
}
