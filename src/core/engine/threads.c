/* threads.c - a small persistent thread pool, owned by a workspace, and
 * the barrier its tasks may meet at.
 *
 * gl_pool_run() hands tasks 0..n-1 to the pool; the calling thread runs
 * task 0 and waits for the rest.  Threads spin briefly before sleeping on
 * a condition variable, so that back-to-back calls find them awake.  The
 * barrier (gl_barrier_*) lets the concurrent tasks of one run meet once a
 * step: spinning while each has a core, parking when they do not, and then
 * telling the pool to stop asking for it for a while (gl_pool_may_spin).
 * No global state: each workspace that asks for threads owns its pool.
 * Without pthreads the pool runs everything on the calling thread. */
#if !defined(_WIN32)
#  define _POSIX_C_SOURCE 200809L
#endif

#include <string.h>

#include "../internal.h"

#if defined(GL_HOSTED)
#  include <stdlib.h>
#endif

#if !defined(_WIN32) && defined(GL_HOSTED)
#  define GL_HAVE_PTHREADS 1
#  include <pthread.h>
#  include <time.h>
#  include <unistd.h>
#endif

/* Spinning needs the GCC / clang __atomic builtins (any C99 compiler
 * builds the rest; without them nothing waits on a barrier). */
#if defined(GL_HAVE_PTHREADS) && (defined(__GNUC__) || defined(__clang__))
#  define GL_HAVE_SPIN 1
#endif

/* The pool's counters are written under its mutex and, with spinning,
 * also read without it. */
#if defined(GL_HAVE_SPIN)
#  define GL_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#  define GL_DEC(x) __atomic_sub_fetch(&(x), 1, __ATOMIC_ACQ_REL)
#else
#  define GL_STORE(x, v) ((x) = (v))
#  define GL_DEC(x) (--(x))
#endif

#if defined(GL_HAVE_SPIN)
static inline void cpu_relax(void)
{
#  if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#  elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#  endif
}

/* Spinning is timed (a pause takes 10 to 140 cycles, by CPU): microseconds
 * on the monotonic clock, read every 64 pauses. */
static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

/* Spins until *flag != old (pool generation) or the time is up; returns
 * whether it changed.  `stop`, if given, also ends the spin. */
static int spin_while_equal(const unsigned long *flag, unsigned long old, const int *stop,
                            double limit_us)
{
    const double t0 = now_us();
    for (unsigned n = 1;; n++) {
        if (__atomic_load_n(flag, __ATOMIC_ACQUIRE) != old) return 1;
        if (stop && __atomic_load_n(stop, __ATOMIC_ACQUIRE)) return 1;
        cpu_relax();
        if (n % 64 == 0 && now_us() - t0 > limit_us) return 0;
    }
}
#endif

/* How long a pool thread spins, after its task, for the next run (and the
 * caller for the last task to finish) before sleeping on a condition
 * variable: waking a sleeping thread costs tens of microseconds on a VM,
 * more than a whole small call. */
#define GL_POOL_SPIN_US 100.0

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
    pthread_mutex_t park_mu;     /* where barrier waiters park (gl_barrier_wait) */
    pthread_cond_t park_cv;
    int sleepers;                /* parked waiters; atomic */
#endif
    int spin_backoff;            /* asks of gl_pool_may_spin still refused */
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
#if defined(GL_HAVE_SPIN)
        if (p->gen == seen && !p->stop) {         /* spin a while before sleeping */
            pthread_mutex_unlock(&p->mu);
            spin_while_equal(&p->gen, seen, &p->stop, GL_POOL_SPIN_US);
            pthread_mutex_lock(&p->mu);
        }
#endif
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
        if (GL_DEC(p->pending) == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}
#endif

gl_pool *gl_pool_new(int size)
{
#if !defined(GL_HOSTED)
    (void)size;
    return NULL;                /* no threads, no heap: callers run on one thread */
#else
    gl_pool *p = calloc(1, sizeof(*p));
    if (!p) return NULL;
    p->size = 1;
#if defined(GL_HAVE_PTHREADS)
    if (size <= 1) return p;
    p->workers = calloc((size_t)size - 1, sizeof(pthread_t));
    if (!p->workers) { free(p); return NULL; }
    if (pthread_mutex_init(&p->mu, NULL) != 0) { free(p->workers); free(p); return NULL; }
    if (pthread_mutex_init(&p->park_mu, NULL) != 0) {
        pthread_mutex_destroy(&p->mu);
        free(p->workers);
        free(p);
        return NULL;
    }
    pthread_cond_init(&p->go, NULL);
    pthread_cond_init(&p->done, NULL);
    pthread_cond_init(&p->park_cv, NULL);
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
#endif /* GL_HOSTED */
}

void gl_pool_free(gl_pool *p)
{
    if (!p) return;
#if defined(GL_HAVE_PTHREADS)
    if (p->size > 1) {
        pthread_mutex_lock(&p->mu);
        GL_STORE(p->stop, 1);
        pthread_cond_broadcast(&p->go);
        pthread_mutex_unlock(&p->mu);
        for (int i = 1; i < p->size; i++) pthread_join(p->workers[i - 1], NULL);
        pthread_cond_destroy(&p->go);
        pthread_cond_destroy(&p->done);
        pthread_cond_destroy(&p->park_cv);
        pthread_mutex_destroy(&p->mu);
        pthread_mutex_destroy(&p->park_mu);
    }
    free(p->workers);
#endif
#if defined(GL_HOSTED)
    free(p);
#endif
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
    GL_STORE(p->gen, p->gen + 1);
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0);
    for (int i = 0; i < extra; i++) fn(ctx, tasks + i);
#if defined(GL_HAVE_SPIN)
    {
        const double t0 = now_us();
        for (unsigned n = 1; __atomic_load_n(&p->pending, __ATOMIC_ACQUIRE) > 0; n++) {
            cpu_relax();
            if (n % 64 == 0 && now_us() - t0 > GL_POOL_SPIN_US) break;
        }
    }
#endif
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
#endif
}

/* Asks refused after a run that had to park: long enough that a process
 * running more threads than cores pays the parking only now and then. */
#define GL_SPIN_BACKOFF 1024
/* Time a barrier waiter spins before parking: far beyond a crossing
 * between two running threads (~0.2 us) and beyond the wake-up of a
 * parked or sleeping one (tens of microseconds on a VM); longer at a
 * run's first crossing, which may wait for a pool thread to start. */
#define GL_SPIN_US 100.0
#define GL_SPIN_FIRST_US 1000.0
/* Parks in one run that never count as "no core each" (a pool thread
 * starting, a preemption, a first call faulting its scratch pages in),
 * and the count after which the run's waiters park at once. */
#define GL_PARK_TOLERATED 4
#define GL_PARK_MODE 16

int gl_pool_may_spin(gl_pool *p, int tasks)
{
#if defined(GL_HAVE_SPIN)
    /* gl_pool_run gives task i < size to thread i (0: the caller). */
    if (!p || tasks < 2 || tasks > p->size || tasks > GL_BARRIER_MAX) return 0;
    if (p->spin_backoff > 0) {
        p->spin_backoff--;
        return 0;
    }
    return 1;
#else
    (void)p; (void)tasks;
    return 0;
#endif
}

void gl_barrier_init(gl_barrier *b, gl_pool *pool, int parties)
{
    memset(b, 0, sizeof(*b));
    b->pool = pool;
    b->parties = parties;
}

void gl_barrier_wait(gl_barrier *b, int party)
{
#if defined(GL_HAVE_SPIN)
    gl_pool *p = b->pool;
    /* Only `party` writes its flag.  The flag store and the sleepers load
     * here, and the sleepers increment and flag load of a parking waiter,
     * are sequentially consistent: one of the two sees the other's write,
     * so no wake-up is lost. */
    const unsigned long mine = b->flag[party].crossings + 1;
    __atomic_store_n(&b->flag[party].crossings, mine, __ATOMIC_SEQ_CST);
    int woke = 0;
    if (__atomic_load_n(&p->sleepers, __ATOMIC_SEQ_CST) > 0) {
        pthread_mutex_lock(&p->park_mu);
        pthread_cond_broadcast(&p->park_cv);
        pthread_mutex_unlock(&p->park_mu);
        woke = 1;
    }
    /* How long to spin: long at the first crossing (a pool thread may be
     * starting) and right after waking a parked party (it takes a while to
     * run again: without the wait, both would take turns parking); not at
     * all once parking has become the rule in this run (no core each). */
    double limit = mine == 1 || b->flag[party].woke ? GL_SPIN_FIRST_US : GL_SPIN_US;
    if (__atomic_load_n(&b->parks, __ATOMIC_RELAXED) > GL_PARK_MODE) limit = 0.0;
    b->flag[party].woke = woke;
    for (int q = 0; q < b->parties; q++) {
        if (q == party) continue;
        const double t0 = now_us();
        int ready = 0;
        for (unsigned n = 1;; n++) {
            if (__atomic_load_n(&b->flag[q].crossings, __ATOMIC_ACQUIRE) >= mine) { ready = 1; break; }
            if (limit <= 0.0) break;
            cpu_relax();
            if (n % 64 == 0 && now_us() - t0 > limit) break;
        }
        if (ready) continue;
        pthread_mutex_lock(&p->park_mu);      /* that party has no core right now */
        __atomic_add_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&b->flag[q].crossings, __ATOMIC_SEQ_CST) < mine)
            pthread_cond_wait(&p->park_cv, &p->park_mu);
        __atomic_sub_fetch(&p->sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&p->park_mu);
        __atomic_add_fetch(&b->parks, 1, __ATOMIC_RELAXED);
    }
#else
    (void)b; (void)party;
#endif
}

void gl_barrier_done(gl_barrier *b)
{
    /* After gl_pool_run returned: the parties' flags are visible here.  A
     * few parks happen when a pool thread starts, the OS preempts one or a
     * first call faults its scratch pages in; parking at a good share of
     * the crossings means the threads do not have a core each. */
    const unsigned long parked = (unsigned long)b->parks;
    if (parked > GL_PARK_TOLERATED && parked * 8 > b->flag[0].crossings)
        b->pool->spin_backoff = GL_SPIN_BACKOFF;
}
