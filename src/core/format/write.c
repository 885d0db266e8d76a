/* format/write.c - writing .grl images: a spec (weights in PyTorch's
 * layout) packed into the panels the kernels read (grulite_model_serialize),
 * a loaded model re-stored in another weight dtype (grulite_model_convert),
 * and the one atomic file writer (grulite_model_save).  Always the newest
 * format version (format.h). */
#define _POSIX_C_SOURCE 200809L  /* mkstemp, fchmod, fdopen under -std=c99 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "format.h"

/* Writing allocates and uses files: hosted builds only (docs/edge.md). */
#if defined(GL_HOSTED)

#if defined(__unix__) || defined(__APPLE__)
#  define GL_HAVE_MKSTEMP 1
#  include <sys/stat.h>
#  include <unistd.h>
#endif

typedef struct gl_writer {
    unsigned char *buf;      /* NULL: measuring only */
    size_t table_pos;        /* next tensor-table entry */
    size_t data_pos;         /* next tensor payload, 64-aligned */
    int verbatim;            /* 1: copy each panel's stored bytes (a loaded model);
                                0: pack its spec source (ref->src) */
} gl_writer;

/* Element (output g*H + j, input k) of a matrix source: PyTorch's
 * (G*H, K), or (K, G*H) for a kmajor one (an embedding table). */
static float src_at(const gl_tensor_ref *ref, const float *src, size_t g, size_t j, size_t k)
{
    const gl_panel *p = ref->panel;
    return ref->kmajor ? src[k * p->G * p->H + g * p->H + j] : src[(g * p->H + j) * p->K + k];
}

/* int8 scale of output j (within gate g) of a matrix: max |w| / 127 over
 * its inputs; 0 for all zeros. */
static float row_scale(const gl_tensor_ref *ref, const float *src, size_t g, size_t j)
{
    float mx = 0.0f;
    for (size_t k = 0; k < ref->panel->K; k++) {
        const float a = fabsf(src_at(ref, src, g, j, k));
        mx = a > mx ? a : mx;
    }
    return mx / 127.0f;
}

/* Element `pos` of a tensor, converted to its stored dtype, written at dst. */
static void put_value(unsigned char *dst, size_t pos, int dtype, float v, float scale)
{
    if (dtype == GRULITE_DTYPE_F16) {
        const uint16_t h = gl_float_to_half(v);
        memcpy(dst + pos * 2, &h, 2);
    } else if (dtype == GRULITE_DTYPE_BF16) {
        const uint16_t h = gl_float_to_bf16(v);
        memcpy(dst + pos * 2, &h, 2);
    } else if (dtype == GRULITE_DTYPE_I8) {
        float q = scale > 0.0f ? roundf(v / scale) : 0.0f;
        if (q != q) q = 0.0f;          /* NaN (a NaN or infinite weight): (int)NaN is UB */
        q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q;
        dst[pos] = (unsigned char)((int)q + 128);            /* zero-point 128 */
    } else {
        memcpy(dst + pos * 4, &v, 4);
    }
}

static int write_fn(const gl_tensor_ref *ref, void *ctx)
{
    gl_writer *w = ctx;
    const int dtype = gl_ref_dtype(ref);
    size_t bytes, next;
    if (gl_mul(gl_ref_elems(ref), gl_dtype_bytes(dtype), &bytes) || gl_add(w->data_pos, bytes, &next) ||
        gl_align_up(next, &next))
        return GRULITE_E_TOO_LARGE;
    if (w->buf) {
        const float *src = ref->src ? *ref->src : NULL;
        if (!src && !w->verbatim) return GRULITE_E_ARG;
        const gl_panel *p = ref->panel;
        unsigned char *e = w->buf + w->table_pos;
        memset(e, 0, GL_TENSOR_REC);
        memcpy(e, ref->name, strlen(ref->name));
        gl_wr32(e + GL_T_DTYPE, (uint32_t)dtype);
        gl_wr32(e + GL_T_LAYOUT, GL_LAYOUT_PANEL16);
        gl_wr32(e + GL_T_NDIM, ref->kind == GL_MATRIX ? 2 : 1);
        gl_wr32(e + GL_T_GATES, (uint32_t)p->G);
        gl_wr32(e + GL_T_DIM0, gl_ref_dim0(ref));
        gl_wr32(e + GL_T_DIM1, gl_ref_dim1(ref));
        gl_wr64(e + GL_T_OFFSET, (uint64_t)w->data_pos);
        unsigned char *dst = w->buf + w->data_pos;
        memset(w->buf + w->data_pos + bytes, 0, next - w->data_pos - bytes);
        if (w->verbatim) {                    /* the panel as stored, bit for bit */
            memcpy(dst, ref->kind == GL_BIAS ? (const void *)p->b
                        : ref->kind == GL_SCALE ? (const void *)p->scale : p->w, bytes);
        } else {
            /* Packed from PyTorch's (G*H outputs, K inputs) (or kmajor) into (nb, K, G, 16);
             * biases and int8 scales into (nb, G, 16); zeros past H.  One
             * value at a time through memcpy: the buffer need not be aligned. */
            const size_t L = GL_LANES;
            float *scales = NULL;                 /* int8: per output g*H + j */
            if (dtype == GRULITE_DTYPE_I8 || ref->kind == GL_SCALE) {
                scales = malloc(p->G * p->H * sizeof(float));
                if (!scales) return GRULITE_E_NOMEM;
                for (size_t g = 0; g < p->G; g++)
                    for (size_t j = 0; j < p->H; j++) scales[g * p->H + j] = row_scale(ref, src, g, j);
            }
            if (ref->kind == GL_MATRIX) {
                memset(dst, dtype == GRULITE_DTYPE_I8 ? 128 : 0, bytes);   /* padding: 0 */
                for (size_t g = 0; g < p->G; g++)
                    for (size_t j = 0; j < p->H; j++)
                        for (size_t k = 0; k < p->K; k++)
                            put_value(dst, gl_panel_index(p, j / L, k, g, j % L), dtype,
                                      src_at(ref, src, g, j, k),
                                      scales ? scales[g * p->H + j] : 0.0f);
            } else {
                memset(dst, 0, bytes);
                for (size_t g = 0; g < p->G; g++)
                    for (size_t j = 0; j < p->H; j++)
                        put_value(dst, ((j / L) * p->G + g) * L + j % L, GRULITE_DTYPE_F32,
                                  ref->kind == GL_BIAS ? src[g * p->H + j] : scales[g * p->H + j], 0.0f);
            }
            free(scales);
        }
    }
    w->table_pos += GL_TENSOR_REC;
    w->data_pos = next;
    return 0;
}

/* A model built from a spec, and the spec copies its layers point at
 * (gl_layer.spec), freed together. */
typedef struct gl_spec_model {
    grulite_model m;
    gl_layer layers[GL_MAX_MODEL_LAYERS];    /* m.layer */
    grulite_embedding_spec es;
    grulite_layer_spec ls[GRULITE_MAX_LAYERS];
    grulite_dense_spec ds[GRULITE_MAX_DENSE];
    int fold;                /* 1: the embedding is to be folded into layer 0 */
    float *folded;           /* its folded table, once computed */
} gl_spec_model;

/* A zeroed gl_spec_model (free() it), or NULL. */
static gl_spec_model *spec_model_new(void)
{
    gl_spec_model *sm = calloc(1, sizeof(*sm));
    if (sm) {
        sm->m.layer = sm->layers;
        sm->m.cap = GL_MAX_MODEL_LAYERS;
    }
    return sm;
}

/* Whether to fold the embedding into GRU layer 0: asked, or (auto) when
 * the (V, D*3*H) table is no larger than the embedding and W_ih. */
static int fold_pays(const grulite_embedding_spec *es, const grulite_layer_spec *l0, int32_t E)
{
    if (es->fold == GRULITE_FOLD_ALWAYS) return 1;
    if (es->fold != GRULITE_FOLD_AUTO) return 0;
    const double V = es->vocab_size, G = 3.0 * l0->num_directions * l0->hidden_size;
    return V * G <= V * E + G * E;
}

/* The typed layers of a spec, in sm->m (configured): its embedding, GRU
 * layers, then its head; each layer points at its entry in sm's copies. */
static int spec_model(const grulite_model_spec *spec, gl_spec_model *sm, char *msg, size_t msg_size)
{
    grulite_model *m = &sm->m;
    grulite_layer_spec *ls = sm->ls;
    grulite_dense_spec *ds = sm->ds;
    const grulite_embedding_spec *es = spec->embedding;
    if (!gl_host_is_little_endian())
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "big-endian hosts are not supported");
    if (spec->num_layers < 1 || spec->num_layers > GRULITE_MAX_LAYERS)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "a model needs 1 to %d GRU layers; got %ld",
                       GRULITE_MAX_LAYERS, (long)spec->num_layers);
    if (!spec->layers) return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layers is NULL");
    if (spec->num_dense < 0 || spec->num_dense > GRULITE_MAX_DENSE)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "at most %d head layers; got %ld",
                       GRULITE_MAX_DENSE, (long)spec->num_dense);
    if (spec->num_dense > 0 && !spec->dense)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "num_dense %ld with dense NULL",
                       (long)spec->num_dense);
    if (!grulite_name(GRULITE_NAMES_DTYPE, spec->dtype))
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "weight dtype %ld not supported",
                       (long)spec->dtype);
    if (spec->metadata_len > UINT32_MAX || (spec->metadata_len && !spec->metadata))
        return gl_fail(msg, msg_size, GRULITE_E_ARG, "metadata: NULL, or above 4 GiB");
    const int e = es ? 1 : 0;
    m->info.input_size = es ? 1 : spec->input_size;
    int pos = e;                         /* the next layer's index: merges come in between */
    for (int l = 0; l < spec->num_layers; l++) {
        gl_layer *L = &m->layer[pos++];
        ls[l] = spec->layers[l];
        L->kind = &gl_kind_gru;
        L->spec = &ls[l];
        L->u.gru.cfg.hidden_size = ls[l].hidden_size;
        L->u.gru.cfg.num_directions = ls[l].num_directions;
        L->u.gru.cfg.reset_after = ls[l].reset_after;
        L->u.gru.cfg.reverse = ls[l].reverse;
        L->u.gru.cfg.has_bias = ls[l].has_bias;
        L->u.gru.cfg.dtype = spec->dtype;
        L->u.gru.cfg.projected = ls[l].projected;
        L->u.gru.cfg.has_h0 = ls[l].has_h0;
        for (int d = 0; d < 2; d++) {
            L->u.gru.cfg.activation_f[d] = ls[l].activation_f[d];
            L->u.gru.cfg.activation_g[d] = ls[l].activation_g[d];
            L->u.gru.cfg.alpha_f[d] = ls[l].alpha_f[d];
            L->u.gru.cfg.beta_f[d] = ls[l].beta_f[d];
            L->u.gru.cfg.alpha_g[d] = ls[l].alpha_g[d];
            L->u.gru.cfg.beta_g[d] = ls[l].beta_g[d];
        }
        L->u.gru.cfg.clip = ls[l].clip;
        if (ls[l].merge != GRULITE_MERGE_CONCAT) {     /* checked by merge's configure */
            gl_layer *M = &m->layer[pos++];
            M->kind = &gl_kind_merge;
            M->u.merge.mode = ls[l].merge;
        }
    }
    m->n = pos + spec->num_dense;
    if (es) {
        if (es->fold != GRULITE_FOLD_AUTO && es->fold != GRULITE_FOLD_NEVER &&
            es->fold != GRULITE_FOLD_ALWAYS)
            return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "embedding: fold %ld is not one of "
                           "GRULITE_FOLD_AUTO, _NEVER, _ALWAYS", (long)es->fold);
        gl_layer *L = &m->layer[0];
        sm->es = *es;
        L->kind = &gl_kind_embedding;
        L->spec = &sm->es;
        L->u.emb.cfg.vocab_size = es->vocab_size;
        L->u.emb.cfg.width = spec->input_size;
        L->u.emb.cfg.dtype = spec->dtype;
        /* Folding: the table becomes layer 0's input projection (D*3*H wide). */
        if (!ls[0].projected && fold_pays(es, &ls[0], spec->input_size) &&
            ls[0].hidden_size >= 1 && ls[0].hidden_size <= GRULITE_MAX_FEATURES &&
            (ls[0].num_directions == 1 || ls[0].num_directions == 2)) {
            sm->fold = 1;
            L->u.emb.cfg.width = 3 * ls[0].num_directions * ls[0].hidden_size;
            m->layer[1].u.gru.cfg.projected = 1;
        }
    } else if (spec->num_layers >= 1 && ls[0].projected) {
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer 0: projected needs an embedding (the table holds the projection)");
    }
    for (int j = 0; j < spec->num_dense; j++) {
        gl_layer *L = &m->layer[pos + j];
        ds[j] = spec->dense[j];
        L->kind = &gl_kind_dense;
        L->spec = &ds[j];
        L->u.dense.cfg.out_features = ds[j].out_features;
        L->u.dense.cfg.activation = ds[j].activation;
        L->u.dense.cfg.has_bias = ds[j].has_bias;
    }
    m->info.batch_first = spec->batch_first ? 1 : 0;
    m->info.head_from_state = spec->head_from_state && spec->num_dense ? 1 : 0;
    return gl_model_configure(m, msg, msg_size);
}

int grulite_spec_check(const grulite_model_spec *spec, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!spec) return gl_fail(msg, msg_size, GRULITE_E_ARG, "spec is NULL");
    gl_spec_model *sm = spec_model_new();
    if (!sm) return gl_fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory");
    const int rc = spec_model(spec, sm, msg, msg_size);
    free(sm);
    return rc;
}

/* The folded table of sm's embedding: row v is W_ih e_v + b_ih of layer 0,
 * directions then gates r, z, n (what copy_projection in layers/gru.c
 * reads), summed in double.  The embedding's spec then points at it. */
static int fold_table(gl_spec_model *sm, int32_t E)
{
    const grulite_layer_spec *l0 = &sm->ls[0];
    const size_t V = (size_t)sm->es.vocab_size, R = 3 * (size_t)l0->hidden_size;
    const size_t D = (size_t)l0->num_directions, W = D * R;
    size_t n;
    if (!sm->es.weight) return GRULITE_E_ARG;
    for (size_t d = 0; d < D; d++)
        if (!l0->weight_ih[d] || (l0->has_bias && !l0->bias_ih[d])) return GRULITE_E_ARG;
    if (gl_mul(V, W, &n) || n > SIZE_MAX / sizeof(float)) return GRULITE_E_TOO_LARGE;
    float *t = malloc(n ? n * sizeof(float) : 1);
    if (!t) return GRULITE_E_NOMEM;
    for (size_t v = 0; v < V; v++) {
        const float *e = sm->es.weight + v * (size_t)E;
        for (size_t d = 0; d < D; d++)
            for (size_t r = 0; r < R; r++) {
                const float *w = l0->weight_ih[d] + r * (size_t)E;
                double acc = l0->has_bias ? (double)l0->bias_ih[d][r] : 0.0;
                for (size_t k = 0; k < (size_t)E; k++) acc += (double)w[k] * (double)e[k];
                t[v * W + d * R + r] = (float)acc;
            }
    }
    sm->folded = t;
    sm->es.weight = t;
    return GRULITE_OK;
}

/* Every weight pointer a tensor needs (scales read their matrix). */
static int has_source(const gl_tensor_ref *ref, void *ctx)
{
    (void)ctx;
    return ref->src && *ref->src ? 0 : GRULITE_E_ARG;
}

/* The image of the configured model m in the current format: header,
 * typed records, tensor table, metadata, then each tensor 64-byte aligned,
 * packed from the layers' specs or (verbatim) copied from m's panels.
 * With buf == NULL only *size is set. */
static int emit_image(grulite_model *m, const char *metadata, size_t metadata_len, int verbatim,
                      void *buf, size_t cap, size_t *size)
{
    const uint32_t n_tensors = gl_count_tensors(m);
    const size_t table = gl_records_end(m);
    const size_t meta_off = table + (size_t)n_tensors * GL_TENSOR_REC;
    size_t data0;
    if (gl_add(meta_off, metadata_len, &data0) || gl_align_up(data0, &data0))
        return GRULITE_E_TOO_LARGE;

    /* Pass 1 measures; pass 2 (if a buffer was given) writes. */
    gl_writer w = { NULL, table, data0, verbatim };
    int rc = gl_each_tensor(m, GRULITE_FORMAT_VERSION, write_fn, &w);
    if (rc) return rc;
    const size_t total = w.data_pos;
    *size = total;
    if (!buf) return GRULITE_OK;
    if (cap < total) return GRULITE_E_BUFFER;

    unsigned char *out = buf;
    memset(out, 0, data0);
    memcpy(out, GL_MAGIC, 8);
    gl_wr32(out + GL_OFF_VERSION, GRULITE_FORMAT_VERSION);
    gl_wr64(out + GL_OFF_FILE_SIZE, (uint64_t)total);
    gl_wr32(out + GL_OFF_HEADER_SIZE, GL_HEADER_SIZE);
    gl_wr32(out + GL_OFF_FLAGS, (m->info.batch_first ? 0u : (uint32_t)GL_FLAG_TIME_MAJOR) |
                                (m->info.head_from_state ? (uint32_t)GL_FLAG_HEAD_STATE : 0u));
    gl_wr32(out + GL_OFF_INPUT_SIZE, (uint32_t)m->info.input_size);
    gl_wr32(out + GL_OFF_LAYERS, (uint32_t)m->n);
    gl_wr32(out + GL_OFF_LAYER_REC, GL_LAYER_REC);
    gl_wr32(out + GL_OFF_TENSORS, n_tensors);
    gl_wr64(out + GL_OFF_META_OFF, (uint64_t)meta_off);
    gl_wr64(out + GL_OFF_META_LEN, (uint64_t)metadata_len);
    unsigned char *p = out + GL_HEADER_SIZE;
    for (int i = 0; i < m->n; i++, p += GL_LAYER_REC) {
        uint32_t f[GL_FIELDS] = { 0 };
        m->layer[i].kind->to_fields(&m->layer[i], f);
        gl_wr32(p, (uint32_t)m->layer[i].kind->code);
        for (int k = 0; k < GL_FIELDS; k++) gl_wr32(p + 4 + 4 * k, f[k]);
    }
    if (metadata_len) memcpy(out + meta_off, metadata, metadata_len);
    gl_writer w2 = { out, table, data0, verbatim };
    if ((rc = gl_each_tensor(m, GRULITE_FORMAT_VERSION, write_fn, &w2))) return rc;
    gl_wr32(out + GL_OFF_CRC, gl_crc32(0, out + GL_CRC_START, total - GL_CRC_START));
    return GRULITE_OK;
}

int grulite_model_serialize(const grulite_model_spec *spec, void *buf, size_t cap,
                            size_t *size)
{
    if (!spec || !size) return GRULITE_E_ARG;
    gl_spec_model *sm = spec_model_new();
    if (!sm) return GRULITE_E_NOMEM;
    int rc = spec_model(spec, sm, NULL, 0);
    if (!rc && sm->fold) rc = fold_table(sm, spec->input_size);
    if (!rc) rc = gl_each_tensor(&sm->m, GRULITE_FORMAT_VERSION, has_source, NULL);
    if (!rc) rc = emit_image(&sm->m, spec->metadata, spec->metadata_len, 0, buf, cap, size);
    free(sm->folded);
    free(sm);
    return rc;
}

/* ---- Converting a loaded model to another weight dtype ------------------- */

/* Unpacks panel p into PyTorch's (G*H, K) layout, or (K, G*H) when kmajor
 * (dequantized).  Returns a malloc'd array or NULL. */
static float *unpack_matrix(const gl_panel *p, int kmajor)
{
    size_t n;
    if (gl_mul3(p->G, p->H, p->K, &n) || n > SIZE_MAX / sizeof(float)) return NULL;
    float *out = malloc(n ? n * sizeof(float) : 1);
    if (!out) return NULL;
    const size_t L = GL_LANES;
    for (size_t b = 0; b < p->nb; b++)
        for (size_t k = 0; k < p->K; k++)
            for (size_t g = 0; g < p->G; g++)
                for (size_t l = 0; l < L; l++) {
                    const size_t j = b * L + l;
                    if (j >= p->H) continue;
                    const size_t i = gl_panel_index(p, b, k, g, l);
                    float v = gl_panel_weight(p, i);
                    if (p->dtype == GRULITE_DTYPE_I8) v *= p->scale[(b * p->G + g) * L + l];
                    out[kmajor ? k * p->G * p->H + g * p->H + j : (g * p->H + j) * p->K + k] = v;
                }
    return out;
}

static float *unpack_bias(const gl_panel *p)
{
    float *out = malloc(p->G * p->H * sizeof(float));
    if (!out) return NULL;
    for (size_t g = 0; g < p->G; g++)
        for (size_t j = 0; j < p->H; j++)
            out[g * p->H + j] = p->b[((j / GL_LANES) * p->G + g) * GL_LANES + j % GL_LANES];
    return out;
}

/* Each tensor of a model unpacked into its layer's spec entry. */
typedef struct gl_unpacker {
    float *owned[GL_MAX_TENSORS];
    size_t n;
} gl_unpacker;

static int unpack_fn(const gl_tensor_ref *ref, void *ctx)
{
    gl_unpacker *u = ctx;
    if (ref->kind == GL_SCALE) return 0;          /* the writer derives new ones */
    float *t = ref->kind == GL_MATRIX ? unpack_matrix(ref->panel, ref->kmajor)
                                      : unpack_bias(ref->panel);
    if (!t) return GRULITE_E_NOMEM;
    u->owned[u->n++] = t;
    *ref->src = t;
    return 0;
}

int grulite_model_convert(const grulite_model *m, int dtype, void *buf, size_t cap, size_t *size)
{
    if (!m || !size) return GRULITE_E_ARG;
    gl_spec_model *sm = spec_model_new();
    gl_unpacker *u = calloc(1, sizeof(*u));
    int rc = GRULITE_E_NOMEM;
    if (!sm || !u) goto done;
    /* The spec of m: its configuration, and (below) its weights unpacked. */
    sm->m = *m;
    sm->m.layer = sm->layers;
    sm->m.cap = GL_MAX_MODEL_LAYERS;
    memcpy(sm->layers, m->layer, (size_t)m->n * sizeof(gl_layer));
    int nl = 0, nd = 0;
    for (int i = 0; i < m->n; i++) {
        gl_layer *L = &sm->m.layer[i];
        if (L->kind == &gl_kind_gru) {
            grulite_layer_spec *g = &sm->ls[nl++];
            g->hidden_size = L->u.gru.cfg.hidden_size;
            g->num_directions = L->u.gru.cfg.num_directions;
            g->reset_after = L->u.gru.cfg.reset_after;
            g->reverse = L->u.gru.cfg.reverse;
            g->has_bias = L->u.gru.cfg.has_bias;
            g->projected = L->u.gru.cfg.projected;
            g->has_h0 = L->u.gru.cfg.has_h0;
            for (int d = 0; d < 2; d++) {
                g->activation_f[d] = L->u.gru.cfg.activation_f[d];
                g->activation_g[d] = L->u.gru.cfg.activation_g[d];
                g->alpha_f[d] = L->u.gru.cfg.alpha_f[d];
                g->beta_f[d] = L->u.gru.cfg.beta_f[d];
                g->alpha_g[d] = L->u.gru.cfg.alpha_g[d];
                g->beta_g[d] = L->u.gru.cfg.beta_g[d];
            }
            g->clip = L->u.gru.cfg.clip;
            g->merge = L->u.gru.cfg.merge;
            L->spec = g;
        } else if (L->kind == &gl_kind_merge) {
            continue;                                 /* the GRU spec's merge says it */
        } else if (L->kind == &gl_kind_embedding) {
            sm->es.vocab_size = L->u.emb.cfg.vocab_size;
            sm->es.fold = GRULITE_FOLD_NEVER;        /* as it is: folded or not */
            L->spec = &sm->es;
        } else {
            grulite_dense_spec *d = &sm->ds[nd++];
            d->out_features = L->u.dense.cfg.out_features;
            d->activation = L->u.dense.cfg.activation;
            d->has_bias = L->u.dense.cfg.has_bias;
            L->spec = d;
        }
    }
    if ((rc = gl_each_tensor(&sm->m, GRULITE_FORMAT_VERSION, unpack_fn, u))) goto done;
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = m->info.vocab_size ? m->layer[0].u.emb.cfg.width : m->info.input_size;
    spec.embedding = m->info.vocab_size ? &sm->es : NULL;
    spec.num_layers = nl;
    spec.layers = sm->ls;
    spec.num_dense = nd;
    spec.dense = nd ? sm->ds : NULL;
    spec.dtype = dtype;
    spec.batch_first = m->info.batch_first;
    spec.head_from_state = m->info.head_from_state;
    spec.metadata = m->metadata;
    spec.metadata_len = m->metadata_len;
    rc = grulite_model_serialize(&spec, buf, cap, size);
done:
    if (u)
        for (size_t i = 0; i < u->n; i++) free(u->owned[i]);
    free(u);
    free(sm);
    return rc;
}

/* Writes size bytes to `path` atomically: a new temporary file beside it,
 * renamed over it once complete.  The library's one file writer. */
static int write_file(const void *data, size_t size, const char *path)
{
    const size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return GRULITE_E_NOMEM;
    memcpy(tmp, path, n);
#ifdef GL_HAVE_MKSTEMP
    /* A new file with a unique name (mkstemp: O_CREAT | O_EXCL), never a
     * name someone could have planted a symlink at. */
    memcpy(tmp + n, ".tmpXXXXXX", 11);
    const int fd = mkstemp(tmp);
    if (fd >= 0) (void)fchmod(fd, 0644);          /* mkstemp makes 0600 */
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f && fd >= 0) { close(fd); remove(tmp); }
#else
    memcpy(tmp + n, ".tmp~", 6);
    FILE *f = fopen(tmp, "wb");
#endif
    if (!f) { free(tmp); return GRULITE_E_IO; }
    int ok = fwrite(data, 1, size, f) == size;
    ok = (fclose(f) == 0) && ok;
    if (ok) {
#ifdef _WIN32
        remove(path);   /* rename() does not replace on Windows */
#endif
        ok = rename(tmp, path) == 0;
    }
    if (!ok) remove(tmp);
    free(tmp);
    return ok ? GRULITE_OK : GRULITE_E_IO;
}


int grulite_model_save(const grulite_model *m, const char *path)
{
    if (!m || !path) return GRULITE_E_ARG;
    if (gl_rd32(m->image + GL_OFF_VERSION) == GRULITE_FORMAT_VERSION)
        return write_file(m->image, m->image_size, path);
    /* An older version: written anew in the current one, every tensor
     * copied as stored (same bits, whatever dtype or scales each layer has). */
    grulite_model *copy = malloc(sizeof(*copy));
    if (!copy) return GRULITE_E_NOMEM;
    *copy = *m;
    size_t size = 0;
    void *buf = NULL;
    int rc = emit_image(copy, m->metadata, m->metadata_len, 1, NULL, 0, &size);
    if (!rc && !(buf = malloc(size))) rc = GRULITE_E_NOMEM;
    if (!rc) rc = emit_image(copy, m->metadata, m->metadata_len, 1, buf, size, &size);
    free(copy);
    if (!rc) rc = write_file(buf, size, path);
    free(buf);
    return rc;
}

#endif /* GL_HOSTED */
