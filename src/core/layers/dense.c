/* layers/dense.c - the dense (nn.Linear) layer kind of a model's head:
 * out = act(W x + b) on each row, with act one of GRULITE_ACT_*.  The head
 * keeps float32 weights whatever the GRU layers store. */

#include "layers.h"

enum { F_OUT, F_ACTIVATION, F_BIAS };

static void dense_to_fields(const gl_layer *L, uint32_t f[GL_FIELDS])
{
    const grulite_dense_info *c = &L->u.dense.cfg;
    f[F_OUT] = (uint32_t)c->out_features;
    f[F_ACTIVATION] = (uint32_t)c->activation;
    f[F_BIAS] = (uint32_t)c->has_bias;
}

static void dense_from_fields(gl_layer *L, const uint32_t f[GL_FIELDS])
{
    grulite_dense_info *c = &L->u.dense.cfg;
    c->out_features = (int32_t)f[F_OUT];
    c->activation = (int32_t)f[F_ACTIVATION];
    c->has_bias = (int32_t)f[F_BIAS];
}

/* `index` counts head layers (messages say "head layer j"). */
static int dense_configure(gl_layer *L, int j, int32_t in, char *msg, size_t msg_size)
{
    grulite_dense_info *c = &L->u.dense.cfg;
    if (c->out_features < 1 || c->out_features > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: out_features %ld outside [1, %d]",
                       j, (long)c->out_features, GRULITE_MAX_FEATURES);
    if (!grulite_name(GRULITE_NAMES_ACTIVATION, c->activation))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: unknown activation %ld",
                       j, (long)c->activation);
    if (c->has_bias != 0 && c->has_bias != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: has_bias %ld is not 0 or 1",
                       j, (long)c->has_bias);
    c->in_features = in;
    gl_panel *p = &L->u.dense.p;
    p->K = (size_t)in;
    p->G = 1;
    p->H = (size_t)c->out_features;
    p->nb = ((size_t)c->out_features + GL_LANES - 1) / GL_LANES;
    p->dtype = GRULITE_DTYPE_F32;
    L->in = in;
    L->out = c->out_features;
    L->state = 0;
    return GRULITE_OK;
}

static int dense_tensors(gl_layer *L, const char *prefix, gl_tensor_fn fn, void *ctx)
{
    grulite_dense_spec *s = L->spec;
    gl_tensor_ref t;
    int rc;
    gl_format(t.name, sizeof t.name, "%sw", prefix);
    t.panel = &L->u.dense.p;
    t.kind = GL_MATRIX;
    t.src = s ? &s->weight : NULL;
    t.kmajor = 0;
    if ((rc = fn(&t, ctx))) return rc;
    if (!L->u.dense.cfg.has_bias) return 0;
    gl_format(t.name, sizeof t.name, "%sb", prefix);
    t.kind = GL_BIAS;
    t.src = s ? &s->bias : NULL;
    return fn(&t, ctx);
}

static double dense_macs(const gl_layer *L)
{
    return (double)L->in * (double)L->out;
}

static void dense_rows(const gl_layer *L, const gl_kernels *k, size_t rows, const float *in,
                       size_t ldi, float *out, size_t ldo, void *tmp, int raw)
{
    const grulite_dense_info *c = &L->u.dense.cfg;
    k->gemm(rows, in, ldi, &L->u.dense.p, 0, 1, out, ldo, tmp);
    if (raw) return;
    for (size_t r = 0; r < rows; r++)
        gl_ref_activate(c->activation, (size_t)c->out_features, out + r * ldo);
}

const gl_kind gl_kind_dense = {
    GRULITE_LAYER_DENSE, 0, 3, dense_to_fields, dense_from_fields, dense_configure, NULL, dense_tensors,
    dense_macs, NULL, NULL, dense_rows,
};
