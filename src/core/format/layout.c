/* format/layout.c - which tensors a model has, in file order, and their
 * names: each layer's kind lists its own (layers/), under a prefix that
 * says which layer. */

#include "format.h"

int gl_each_tensor(grulite_model *m, uint32_t version, gl_tensor_fn fn, void *ctx)
{
    for (int i = 0; i < m->n; i++) {
        gl_layer *L = &m->layer[i];
        char prefix[24];   /* "head" and an int, with room */
        if (version == GL_VERSION_2 && !L->kind->sequence)
            gl_format(prefix, sizeof prefix, "head%d.", (int)(i - m->n_seq));
        else
            gl_format(prefix, sizeof prefix, "l%d.", i);
        const int rc = L->kind->tensors(L, prefix, fn, ctx);
        if (rc) return rc;
    }
    return 0;
}

static int count_fn(const gl_tensor_ref *ref, void *ctx)
{
    (void)ref;
    (*(uint32_t *)ctx)++;
    return 0;
}

uint32_t gl_count_tensors(grulite_model *m)
{
    uint32_t n = 0;
    gl_each_tensor(m, GRULITE_FORMAT_VERSION, count_fn, &n);
    return n;
}

size_t gl_records_end(const grulite_model *m)
{
    return GL_HEADER_SIZE + (size_t)m->n * GL_LAYER_REC;
}
