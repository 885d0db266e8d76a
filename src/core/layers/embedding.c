/* layers/embedding.c - the embedding layer kind (nn.Embedding): token ids
 * in, one (vocab_size, width) table row out per step.  It is the first
 * layer of a model whose input is token ids (grulite_run.tokens).
 *
 * The table is stored as a panel (kernels/kernels.h) with K = vocab_size
 * inputs and width outputs, so each dtype's storage, int8 scales (one per
 * output feature), conversion and validation are the panels' own; a
 * lookup of token v reads input k = v of every block.  When the embedding
 * is folded into GRU layer 0 (grulite_layer_info.projected), the table
 * holds W_ih e + b_ih and its width is that layer's D*3*H. */

#include "layers.h"

enum { F_VOCAB, F_WIDTH, F_DTYPE };

static void emb_to_fields(const gl_layer *L, uint32_t f[GL_FIELDS])
{
    const grulite_embedding_info *c = &L->u.emb.cfg;
    f[F_VOCAB] = (uint32_t)c->vocab_size;
    f[F_WIDTH] = (uint32_t)c->width;
    f[F_DTYPE] = (uint32_t)c->dtype;
}

static void emb_from_fields(gl_layer *L, const uint32_t f[GL_FIELDS])
{
    grulite_embedding_info *c = &L->u.emb.cfg;
    c->vocab_size = (int32_t)f[F_VOCAB];
    c->width = (int32_t)f[F_WIDTH];
    c->dtype = (int32_t)f[F_DTYPE];
}

static int emb_configure(gl_layer *L, int index, int32_t in, char *msg, size_t msg_size)
{
    (void)index;
    grulite_embedding_info *c = &L->u.emb.cfg;
    if (in != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "embedding: input_size %ld; a model with an embedding reads one token id "
                       "a step (input_size 1)", (long)in);
    if (c->vocab_size < 1 || c->vocab_size > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "embedding: vocab_size %ld is outside [1, %d]",
                       (long)c->vocab_size, GRULITE_MAX_FEATURES);
    if (c->width < 1 || c->width > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "embedding: width %ld is outside [1, %d]",
                       (long)c->width, GRULITE_MAX_FEATURES);
    if (!grulite_name(GRULITE_NAMES_DTYPE, c->dtype))
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "embedding: dtype %ld not supported",
                       (long)c->dtype);
    gl_panel *p = &L->u.emb.p;
    p->K = (size_t)c->vocab_size;
    p->G = 1;
    p->H = (size_t)c->width;
    p->nb = ((size_t)c->width + GL_LANES - 1) / GL_LANES;
    p->dtype = c->dtype;
    L->in = in;
    L->out = c->width;
    L->state = 0;
    return GRULITE_OK;
}

static int emb_tensors(gl_layer *L, const char *prefix, gl_tensor_fn fn, void *ctx)
{
    grulite_embedding_spec *s = L->spec;
    gl_tensor_ref t;
    int rc;
    gl_format(t.name, sizeof t.name, "%semb", prefix);
    t.panel = &L->u.emb.p;
    t.kind = GL_MATRIX;
    t.src = s ? &s->weight : NULL;
    t.kmajor = 1;                       /* the source is (V, width): nn.Embedding */
    if ((rc = fn(&t, ctx))) return rc;
    if (L->u.emb.cfg.dtype != GRULITE_DTYPE_I8) return 0;
    gl_format(t.name, sizeof t.name, "%semb.s", prefix);
    t.kind = GL_SCALE;
    return fn(&t, ctx);
}

static double emb_macs(const gl_layer *L)
{
    (void)L;
    return 0.0;                         /* a lookup */
}

/* Row v of the table (input k = v of the panel), dequantized into out. */
static void table_row(const gl_panel *p, size_t v, float *out)
{
    for (size_t b = 0; b < p->nb; b++) {
        const size_t n = p->H - b * GL_LANES < GL_LANES ? p->H - b * GL_LANES : GL_LANES;
        float *o = out + b * GL_LANES;
        const size_t i0 = gl_panel_index(p, b, v, 0, 0);
        if (p->dtype == GRULITE_DTYPE_F32) {
            const float *w = (const float *)p->w + i0;
            for (size_t l = 0; l < n; l++) o[l] = w[l];
        } else if (p->dtype != GRULITE_DTYPE_I8) {   /* float16, bfloat16 */
            for (size_t l = 0; l < n; l++) o[l] = gl_panel_weight(p, i0 + l);
        } else {                        /* int8: 4 inputs of a lane together, q + 128 */
            const uint8_t *w = (const uint8_t *)p->w + i0;
            const float *s = p->scale + b * GL_LANES;
            for (size_t l = 0; l < n; l++) o[l] = (float)((int)w[4 * l] - 128) * s[l];
        }
    }
}

static void emb_run(const gl_seq_job *j)
{
    const gl_panel *p = &j->L->u.emb.p;
    const gl_rows *rw = j->rw;
    const size_t W = (size_t)j->L->out;
    for (size_t b = rw->b0; b < rw->b0 + rw->n; b++) {
        const size_t len = gl_length_of(j->p, b);
        for (size_t t = 0; t < len; t++) {     /* ids checked by gl_check_pass */
            const int32_t v = j->p->tokens[gl_row_at(rw, 1, b, t)];
            table_row(p, (size_t)v, j->out + gl_row_at(rw, j->out_global, b, t) * W);
        }
    }
}

const gl_kind gl_kind_embedding = {
    GRULITE_LAYER_EMBEDDING, 1, 3, emb_to_fields, emb_from_fields, emb_configure, NULL, emb_tensors,
    emb_macs, NULL, emb_run, NULL,
};
