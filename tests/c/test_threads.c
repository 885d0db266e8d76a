/*
 * test_threads.c - one model shared by threads, each with its own workspace.
 */
#include "harness.h"

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

void test_threads(const fixture *f)
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
