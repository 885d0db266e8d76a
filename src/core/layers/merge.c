/* layers/merge.c - the merge layer kind: a bidirectional GRU layer's two
 * directions combined feature by feature instead of concatenated (Keras'
 * Bidirectional merge_mode "sum", "mul", "ave"; "concat" is no merge
 * layer).  Its input is the (forward, backward) halves of the layer below,
 * H features each; its output is H features.  It follows a two-direction
 * GRU layer, and may be followed by a GRU layer or the head; a head that
 * reads the final states reads them merged (engine/forward.c). */
#include <string.h>

#include "layers.h"

enum { F_MODE };

static void merge_to_fields(const gl_layer *L, uint32_t f[GL_FIELDS])
{
    f[F_MODE] = (uint32_t)L->u.merge.mode;
}

static void merge_from_fields(gl_layer *L, const uint32_t f[GL_FIELDS])
{
    L->u.merge.mode = (int32_t)f[F_MODE];
}

/* `index` counts GRU layers: a merge is named after the layer it follows. */
static int merge_configure(gl_layer *L, int index, int32_t in, char *msg, size_t msg_size)
{
    const int32_t mode = L->u.merge.mode;
    if (mode == GRULITE_MERGE_CONCAT || !grulite_name(GRULITE_NAMES_MERGE, mode))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "merge after layer %d: mode %ld is not sum (1), mul (2) or ave (3)",
                       index - 1, (long)mode);
    if (in < 2 || in % 2)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "merge after layer %d: input width %ld is not two directions' halves",
                       index - 1, (long)in);
    L->in = in;
    L->out = in / 2;
    L->state = 0;
    return GRULITE_OK;
}

static int merge_tensors(gl_layer *L, const char *prefix, gl_tensor_fn fn, void *ctx)
{
    (void)L; (void)prefix; (void)fn; (void)ctx;
    return 0;
}

static double merge_macs(const gl_layer *L)
{
    (void)L;
    return 0.0;
}

void gl_merge_row(int32_t mode, size_t H, const float *in, float *out)
{
    const float *a = in, *b = in + H;
    switch (mode) {
    case GRULITE_MERGE_SUM: for (size_t u = 0; u < H; u++) out[u] = a[u] + b[u]; break;
    case GRULITE_MERGE_MUL: for (size_t u = 0; u < H; u++) out[u] = a[u] * b[u]; break;
    default: for (size_t u = 0; u < H; u++) out[u] = (a[u] + b[u]) * 0.5f; break;  /* ave */
    }
}

/* The job's rows, each valid step (positions past a length stay 0). */
static void merge_run(const gl_seq_job *j)
{
    const gl_rows *rw = j->rw;
    const size_t H = (size_t)j->L->out;
    for (size_t b = rw->b0; b < rw->b0 + rw->n; b++) {
        const size_t len = gl_length_of(j->p, b);
        for (size_t t = 0; t < len; t++)
            gl_merge_row(j->L->u.merge.mode, H, j->in + gl_row_at(rw, j->in_global, b, t) * j->in_w,
                         j->out + gl_row_at(rw, j->out_global, b, t) * H);
    }
}

const gl_kind gl_kind_merge = {
    GRULITE_LAYER_MERGE, 1, 1, merge_to_fields, merge_from_fields, merge_configure, NULL,
    merge_tensors, merge_macs, NULL, merge_run, NULL,
};
