/* engine.h - what the engine's parts share: one pass over a batch
 * (gl_pass), a task's scratch, where rows live, and the job a sequence
 * layer runs (gl_seq_job).  forward.c runs passes and splits them over
 * threads, stream.c keeps state between passes, workspace.c owns scratch,
 * threads.c the pool; layers/ run the layers. */
#ifndef GRULITE_ENGINE_H
#define GRULITE_ENGINE_H

#include "../model.h"

/* One pass over T steps for B rows, shared by grulite_forward and the
 * streams so that both give the same numbers.  `state` (B*state_size, h0's
 * layout) is read as the initial state and overwritten with the final one.
 * y / head may be NULL. */
typedef struct gl_pass {
    int32_t batch, steps, batch_first, head_all_steps;
    const float *x;           /* float input, or NULL for a model with an embedding */
    const int32_t *lengths;   /* NULL: every row runs T steps */
    float *y;
    float *head;
    int hh_first;             /* T = 1: recurrent product before the input one */
    const int32_t *tokens;    /* token ids (B*T, x's row order) for an embedding */
    int head_raw;             /* the head's last layer without its activation */
} gl_pass;

/* A task runs batch rows [b0, b0 + n) through every layer.  Its scratch: */
typedef struct gl_scratch {
    float *xp;       /* (n*T, 3*Hp): input projection of one direction */
    float *hp;       /* (n, 3*Hp): recurrent products of one step */
    float *h;        /* (n, Hp): the state of one direction, zero-padded */
    float *h2;       /* (Hp): one row's next state (kernels' step_after),
                      * for a pass of several steps, or a single step of a
                      * model whose weights are not int8; else NULL */
    float *rh;       /* (n, Hp): r * h (reset-before variant) */
    float *z;        /* (n, Hp): update gate (reset-before variant) */
    float *out[2];   /* (n*T, Wmax) each: outputs of layers below the top */
    float *hd[2];    /* (head rows, hw) each: rows going through the head */
    size_t hw;       /* row stride of hd */
    void *tmp;       /* gemm scratch (int8 models: x quantized on the fly) */
} gl_scratch;

/* Where rows live: the caller's arrays use the whole batch and the call's
 * layout; a task's scratch holds only its n rows, in the same order. */
typedef struct gl_rows {
    size_t B, T, n, b0;
    int bf;
} gl_rows;

/* Row of (b, t) in a caller array (global) or in task scratch (local). */
static inline size_t gl_row_at(const gl_rows *r, int global, size_t b, size_t t)
{
    if (global) return r->bf ? b * r->T + t : t * r->B + b;
    const size_t lb = b - r->b0;
    return r->bf ? lb * r->T + t : t * r->n + lb;
}

static inline size_t gl_length_of(const gl_pass *p, size_t b)
{
    return p->lengths ? (size_t)p->lengths[b] : (size_t)p->steps;
}

/* One sequence layer over all steps for a task's rows. */
typedef struct gl_seq_job {
    const grulite_model *m;
    const gl_layer *L;
    const gl_pass *p;
    const gl_rows *rw;
    const gl_scratch *sc;    /* the task's scratch */
    const gl_scratch *sc2;   /* a second scratch for a second thread, or NULL */
    gl_pool *pool;           /* with sc2: the pool that runs the second thread */
    const float *in;         /* rows of in_w floats, global (the caller's x) or local */
    size_t in_w;
    int in_global;
    float *out;              /* rows of L->out floats, global (the caller's y) or local */
    int out_global;
    float *state;            /* this layer's state: (L->state / H) blocks of (B, H) */
} gl_seq_job;

/* Floats of scratch gl_run needs for this pass. */
GL_HIDDEN int gl_scratch_floats(const grulite_model *m, const gl_pass *p, size_t *out);

/* Runs the pass on the calling thread; returns 0 or a negative code. */
GL_HIDDEN int gl_run(const grulite_model *m, float *scratch, const gl_pass *p, float *state);

/* Checks a pass's arguments against the model. */
GL_HIDDEN int gl_check_pass(const grulite_model *m, const gl_pass *p);

/* Rows [b0, b1) of a state of B rows (h0's layout) set to the model's
 * initial state: each layer's learned one, or zeros. */
GL_HIDDEN void gl_initial_state(const grulite_model *m, float *state, size_t B, size_t b0,
                                size_t b1);

/* grulite_forward, with the head's logits when raw (see gl_pass). */
GL_HIDDEN int gl_forward(const grulite_model *m, grulite_workspace *ws, const grulite_run *run,
                         int raw);

#endif /* GRULITE_ENGINE_H */
