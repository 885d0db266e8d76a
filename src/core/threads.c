/* threads.c - a small persistent thread pool, owned by a workspace.
 *
 * gl_pool_run() hands tasks 0..n-1 to the pool; the calling thread runs
 * task 0 and waits for the rest.  No global state: each workspace that asks
 * for threads owns its pool.  Without pthreads the pool runs everything on
 * the calling thread. */
#if !defined(_WIN32)
#  define _POSIX_C_SOURCE 200809L
#endif

#include <stdlib.h>

#include "internal.h"

#if !defined(_WIN32)
#  define GL_HAVE_PTHREADS 1
#  include <pthread.h>
#  include <sched.h>
#  include <unistd.h>
#endif

/* Spinning needs the GCC / clang __atomic builtins (any C99 compiler
 * builds the rest; without them nothing waits on a barrier). */
#if defined(GL_HAVE_PTHREADS) && (defined(__GNUC__) || defined(__clang__))
#  define GL_HAVE_SPIN 1
#endif

struct gl_pool {
    int size;                    /* threads, the caller included */
#if defined(GL_HAVE_PTHREADS)
    pthread_t *workers;          /* size - 1 */
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    unsigned long gen;           /* incremented per run */
    int pending;                 /* workers still busy in this run */
    int stop;
    int tasks;
    gl_task_fn fn;
    void *ctx;
#endif
};

int gl_cpu_count(void)
{
#if defined(GL_HAVE_PTHREADS) && defined(_SC_NPROCESSORS_ONLN)
    const long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > GRULITE_MAX_THREADS ? GRULITE_MAX_THREADS : (int)n);
#else
    return 1;
#endif
}

#if defined(GL_HAVE_PTHREADS)
typedef struct { gl_pool *pool; int index; } gl_worker_arg;

static void *worker_main(void *arg_)
{
    gl_worker_arg *arg = arg_;
    gl_pool *p = arg->pool;
    const int index = arg->index;
    free(arg);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->gen == seen && !p->stop) pthread_cond_wait(&p->go, &p->mu);
        if (p->stop) break;
        seen = p->gen;
        if (index < p->tasks) {
            gl_task_fn fn = p->fn;
            void *ctx = p->ctx;
            pthread_mutex_unlock(&p->mu);
            fn(ctx, index);
            pthread_mutex_lock(&p->mu);
        }
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}
#endif

gl_pool *gl_pool_new(int size)
{
    gl_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->size = 1;
#if defined(GL_HAVE_PTHREADS)
    if (size <= 1) return p;
    p->workers = calloc((size_t)size - 1, sizeof(pthread_t));
    if (!p->workers) { free(p); return NULL; }
    if (pthread_mutex_init(&p->mu, NULL) != 0) { free(p->workers); free(p); return NULL; }
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < size; i++) {
        gl_worker_arg *arg = malloc(sizeof(*arg));
        if (!arg) break;
        arg->pool = p;
        arg->index = i;
        if (pthread_create(&p->workers[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        p->size = i + 1;          /* fewer threads if creation fails */
    }
#else
    (void)size;
#endif
    return p;
}

void gl_pool_free(gl_pool *p)
{
    if (!p) return;
#if defined(GL_HAVE_PTHREADS)
    if (p->size > 1) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->size; i++) pthread_join(p->workers[i - 1], NULL);
        pthread_cond_destroy(&p->go);
        pthread_cond_destroy(&p->done);
        pthread_mutex_destroy(&p->mu);
    }
    free(p->workers);
#endif
    free(p);
}

int gl_pool_size(const gl_pool *p)
{
    return p ? p->size : 1;
}

void gl_pool_run(gl_pool *p, int tasks, gl_task_fn fn, void *ctx)
{
    if (!p || p->size <= 1 || tasks <= 1) {
        for (int i = 0; i < tasks; i++) fn(ctx, i);
        return;
    }
#if defined(GL_HAVE_PTHREADS)
    int extra = 0;                         /* tasks beyond the pool's size */
    if (tasks > p->size) { extra = tasks - p->size; tasks = p->size; }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->tasks = tasks;
    p->pending = p->size - 1;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0);
    for (int i = 0; i < extra; i++) fn(ctx, tasks + i);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
#endif
}

int gl_pool_concurrent(const gl_pool *p, int tasks)
{
#if defined(GL_HAVE_SPIN)
    /* gl_pool_run gives task i < size to thread i (0: the caller). */
    return p && tasks >= 2 && tasks <= p->size;
#else
    (void)p; (void)tasks;
    return 0;
#endif
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

void gl_barrier_wait(gl_barrier *b, int party)
{
#if defined(GL_HAVE_SPIN)
    /* Only `party` writes its flag; the others read it. */
    const unsigned long mine = b->flag[party].crossings + 1;
    __atomic_store_n(&b->flag[party].crossings, mine, __ATOMIC_RELEASE);
    for (int q = 0; q < b->parties; q++) {
        if (q == party) continue;
        for (unsigned long spins = 0;
             __atomic_load_n(&b->flag[q].crossings, __ATOMIC_ACQUIRE) < mine; spins++) {
            if (spins < 20000) cpu_relax();
            else sched_yield();      /* that party has no core right now */
        }
    }
#else
    (void)b; (void)party;
#endif
}
