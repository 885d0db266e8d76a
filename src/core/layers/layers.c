/* layers/layers.c - the table of layer kinds, and the checks of a model's
 * layers as a whole: which kinds may follow which, widths, limits, and
 * the summary (grulite_info) they add up to. */
#include "layers.h"

static const gl_kind *const gl_kinds[] = { &gl_kind_gru, &gl_kind_dense, &gl_kind_embedding,
                                            &gl_kind_merge };

const gl_kind *gl_kind_of(int32_t code)
{
    for (size_t i = 0; i < sizeof gl_kinds / sizeof gl_kinds[0]; i++)
        if (gl_kinds[i]->code == code) return gl_kinds[i];
    return NULL;
}

/* The order of kinds: an optional embedding first, then GRU layers, then
 * the head's dense layers. */
static int check_order(const grulite_model *m, int i, int32_t n_gru, int32_t n_dense,
                       char *msg, size_t msg_size)
{
    const gl_kind *kind = m->layer[i].kind;
    const char *name = grulite_name(GRULITE_NAMES_LAYER_KIND, kind->code);
    if (kind == &gl_kind_embedding && i != 0)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: an embedding must be the model's first layer", i);
    if (kind == &gl_kind_gru && n_dense)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: a %s layer after a head layer is not supported", i, name);
    if (kind == &gl_kind_dense && !n_gru)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: a %s layer before any GRU layer", i, name);
    if (kind == &gl_kind_gru && m->layer[i].u.gru.cfg.projected &&
        (n_gru || i == 0 || m->layer[i - 1].kind != &gl_kind_embedding))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: only a GRU layer right after an embedding may be projected", i);
    if (kind == &gl_kind_merge &&
        (i == 0 || m->layer[i - 1].kind != &gl_kind_gru ||
         m->layer[i - 1].u.gru.cfg.num_directions != 2))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: a merge must follow a two-direction GRU layer", i);
    return GRULITE_OK;
}

int gl_model_configure(grulite_model *m, char *msg, size_t msg_size)
{
    int32_t in = m->info.input_size;
    int32_t state = 0;
    if (in < 1 || in > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "input_size %ld is outside [1, %d]",
                       (long)in, GRULITE_MAX_FEATURES);
    m->max_hidden = m->max_width = m->max_dense = 0;
    m->bidirectional = m->quantized = m->reset_before = 0;
    m->n_seq = 0;
    m->first_gru = 0;
    m->info.vocab_size = 0;
    int32_t n_gru = 0, n_dense = 0;
    for (int i = 0; i < m->n; i++) {
        gl_layer *L = &m->layer[i];
        const int seq = L->kind->sequence;
        int rc = check_order(m, i, n_gru, n_dense, msg, msg_size);
        if (rc) return rc;
        /* Messages count GRU and head layers apart. */
        const int index = L->kind == &gl_kind_gru || L->kind == &gl_kind_merge ? n_gru : n_dense;
        if ((rc = L->kind->configure(L, index, in, msg, msg_size))) return rc;
        if (state > INT32_MAX - L->state)
            return gl_fail(msg, msg_size, GRULITE_E_TOO_LARGE, "state size overflows");
        state += L->state;
        if (L->kind == &gl_kind_gru) {
            const grulite_layer_info *c = &L->u.gru.cfg;
            if (c->hidden_size > m->max_hidden) m->max_hidden = c->hidden_size;
            if (c->num_directions == 2 || c->reverse) m->bidirectional = 1;
            if (c->dtype == GRULITE_DTYPE_I8) m->quantized = 1;
            if (!c->reset_after) m->reset_before = 1;
            if (!n_gru) m->first_gru = i;
            m->top_gru = i;
            L->u.gru.cfg.merge = GRULITE_MERGE_CONCAT;
            n_gru++;
        } else if (L->kind == &gl_kind_merge) {
            m->layer[i - 1].u.gru.cfg.merge = L->u.merge.mode;   /* check_order: a GRU */
        } else if (L->kind == &gl_kind_dense) {
            n_dense++;
        } else if (L->kind == &gl_kind_embedding) {
            m->info.vocab_size = L->u.emb.cfg.vocab_size;
        }
        if (seq) {
            m->n_seq = i + 1;
            if (L->out > m->max_width) m->max_width = L->out;
            m->info.output_size = L->out;
        } else if (L->out > m->max_dense) {
            m->max_dense = L->out;
        }
        in = L->out;
    }
    if (n_gru == 0)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "a model needs at least one GRU layer");
    if (n_gru > GRULITE_MAX_LAYERS || n_dense > GRULITE_MAX_DENSE)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "%ld GRU and %ld head layers; at most %d and %d",
                       (long)n_gru, (long)n_dense, GRULITE_MAX_LAYERS, GRULITE_MAX_DENSE);
    m->info.num_layers = n_gru;
    m->info.num_dense = n_dense;
    m->info.state_size = state;
    m->info.head_size = m->n > m->n_seq ? in : 0;
    return GRULITE_OK;
}
