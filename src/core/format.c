/* format.c - the .grl model file: writing (serialize), reading (validate
 * and map), and the model queries.  The format is described in
 * docs/format.md; the constants below are its single definition.
 *
 * Reading trusts nothing: every count, offset and shape is checked with
 * overflow-safe arithmetic before use, and the checksum covers everything
 * but the first 16 bytes (magic, version, the checksum itself). */
#define _POSIX_C_SOURCE 200809L  /* open, fstat, mmap under -std=c99 */

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#if defined(__unix__) || defined(__APPLE__)
#  define GL_HAVE_MMAP 1
#  include <fcntl.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  include <unistd.h>
#endif

/* ---- Format constants -------------------------------------------------- */

static const char GL_MAGIC[8] = { 'G', 'R', 'U', 'L', 'I', 'T', 'E', '\0' };

enum {
    GL_HEADER_SIZE = 64,
    GL_LAYER_REC = 32,       /* bytes per layer record */
    GL_DENSE_REC = 16,       /* bytes per dense record */
    GL_TENSOR_REC = 64,      /* bytes per tensor-table entry */
    GL_NAME_LEN = 32,        /* name bytes in a tensor entry, NUL-padded */
    GL_CRC_START = 16,       /* the checksum covers [16, file_size) */
    GL_LAYOUT_PANEL16 = 2,   /* panels of 16 lanes, gate-interleaved (kernels/kernels.h) */
    GL_FLAG_TIME_MAJOR = 1,  /* header flag: the model's default rows are (T, B) */
    GL_FLAG_HEAD_STATE = 2   /* header flag: the head reads the final states */
};

/* Little-endian field access, alignment-free. */
static uint32_t rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const unsigned char *p)
{
    return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void wr64(unsigned char *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

static int host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* Formats a detail line into msg (if any) and returns code. */
#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int fail(char *msg, size_t msg_size, int code, const char *fmt, ...)
{
    if (msg && msg_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msg_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- The tensors a configuration needs --------------------------------- */

/* One tensor of the canonical list for a configuration.  Matrices are
 * stored as panels (kernels/kernels.h) and listed with shape (K, G*H); bias
 * vectors with shape (G*H).  The table's reserved word holds G. */
enum { GL_MATRIX = 0, GL_BIAS = 1, GL_SCALE = 2 };

typedef struct gl_tensor_ref {
    char name[GL_NAME_LEN];
    gl_panel *panel;         /* in the model: K, G, H, nb, dtype already set */
    int kind;                /* GL_MATRIX, GL_BIAS, or GL_SCALE (int8 row scales) */
} gl_tensor_ref;

static uint32_t ref_dim0(const gl_tensor_ref *t)
{
    return (uint32_t)(t->kind != GL_MATRIX ? t->panel->G * t->panel->H : t->panel->K);
}

static uint32_t ref_dim1(const gl_tensor_ref *t)
{
    return (uint32_t)(t->kind != GL_MATRIX ? 0 : t->panel->G * t->panel->H);
}

/* Stored dtype: a matrix's own; biases and scales are float32. */
static int ref_dtype(const gl_tensor_ref *t)
{
    return t->kind == GL_MATRIX ? t->panel->dtype : GRULITE_DTYPE_F32;
}

/* Elements the tensor occupies in the file. */
static size_t ref_elems(const gl_tensor_ref *t)
{
    const gl_panel *p = t->panel;
    return t->kind != GL_MATRIX ? p->nb * p->G * GL_LANES : gl_panel_elems(p);
}

/* Calls fn(ref, ctx) for each tensor of the model `m` (whose configs and
 * panel shapes are filled), in file order.  Stops on non-zero. */
typedef int (*gl_tensor_fn)(const gl_tensor_ref *ref, void *ctx);

static int each_tensor(grulite_model *m, gl_tensor_fn fn, void *ctx)
{
    gl_tensor_ref t;
    int rc;
    for (int l = 0; l < m->info.num_layers; l++) {
        gl_layer *L = &m->layer[l];
        for (int d = 0; d < L->cfg.num_directions; d++) {
            gl_direction *w = &L->dir[d];
            struct { const char *suffix; gl_panel *panel; int kind; } items[6] = {
                { "w_ih", &w->ih, GL_MATRIX }, { "w_ih.s", &w->ih, GL_SCALE },
                { "w_hh", &w->hh, GL_MATRIX }, { "w_hh.s", &w->hh, GL_SCALE },
                { "b_ih", &w->ih, GL_BIAS }, { "b_hh", &w->hh, GL_BIAS },
            };
            for (int i = 0; i < 6; i++) {
                if (items[i].kind == GL_BIAS && !L->cfg.has_bias) continue;
                if (items[i].kind == GL_SCALE && L->cfg.dtype != GRULITE_DTYPE_I8) continue;
                snprintf(t.name, sizeof t.name, "l%d.d%d.%s", l, d, items[i].suffix);
                t.panel = items[i].panel;
                t.kind = items[i].kind;
                if ((rc = fn(&t, ctx))) return rc;
            }
        }
    }
    for (int j = 0; j < m->info.num_dense; j++) {
        gl_dense *D = &m->dense[j];
        snprintf(t.name, sizeof t.name, "head%d.w", j);
        t.panel = &D->p;
        t.kind = GL_MATRIX;
        if ((rc = fn(&t, ctx))) return rc;
        if (D->cfg.has_bias) {
            snprintf(t.name, sizeof t.name, "head%d.b", j);
            t.kind = GL_BIAS;
            if ((rc = fn(&t, ctx))) return rc;
        }
    }
    return 0;
}

static int count_fn(const gl_tensor_ref *ref, void *ctx)
{
    (void)ref;
    (*(uint32_t *)ctx)++;
    return 0;
}

/* Validates the layer / dense configuration held in m->layer / m->dense
 * (cfg.hidden_size etc. filled, input sizes derived here) and fills
 * m->info and the derived maxima. */
static int finish_config(grulite_model *m, char *msg, size_t msg_size)
{
    int32_t in = m->info.input_size;
    int32_t state = 0;
    if (in < 1 || in > GRULITE_MAX_FEATURES)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "input_size %ld is outside [1, %d]",
                    (long)in, GRULITE_MAX_FEATURES);
    m->max_hidden = m->max_width = m->max_dense = 0;
    m->bidirectional = m->quantized = 0;
    for (int l = 0; l < m->info.num_layers; l++) {
        grulite_layer_info *c = &m->layer[l].cfg;
        if (c->hidden_size < 1 || c->hidden_size > GRULITE_MAX_FEATURES)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: hidden_size %ld is outside [1, %d]",
                        l, (long)c->hidden_size, GRULITE_MAX_FEATURES);
        if (c->num_directions != 1 && c->num_directions != 2)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: num_directions %ld is not 1 or 2",
                        l, (long)c->num_directions);
        if (c->reset_after != 0 && c->reset_after != 1)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: reset_after %ld is not 0 or 1",
                        l, (long)c->reset_after);
        if (c->reverse != 0 && (c->reverse != 1 || c->num_directions != 1))
            return fail(msg, msg_size, GRULITE_E_CONFIG,
                        "layer %d: reverse %ld needs 0, or 1 with one direction", l, (long)c->reverse);
        if (c->has_bias != 0 && c->has_bias != 1)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: has_bias %ld is not 0 or 1",
                        l, (long)c->has_bias);
        if (!grulite_name(GRULITE_NAMES_DTYPE, c->dtype))
            return fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "layer %d: weight dtype %ld not supported",
                        l, (long)c->dtype);
        c->input_size = in;
        const int32_t width = c->num_directions * c->hidden_size;   /* <= 2^21 */
        if (width > GRULITE_MAX_FEATURES)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: output width %ld above %d",
                        l, (long)width, GRULITE_MAX_FEATURES);
        if (state > INT32_MAX - width)
            return fail(msg, msg_size, GRULITE_E_TOO_LARGE, "state size overflows");
        state += width;
        for (int d = 0; d < 2; d++) {
            gl_panel *ih = &m->layer[l].dir[d].ih, *hh = &m->layer[l].dir[d].hh;
            ih->K = (size_t)in;
            hh->K = (size_t)c->hidden_size;
            ih->G = hh->G = 3;
            ih->H = hh->H = (size_t)c->hidden_size;
            ih->nb = hh->nb = ((size_t)c->hidden_size + GL_LANES - 1) / GL_LANES;
            ih->dtype = hh->dtype = c->dtype;
        }
        if (c->hidden_size > m->max_hidden) m->max_hidden = c->hidden_size;
        if (width > m->max_width) m->max_width = width;
        if (c->num_directions == 2 || c->reverse) m->bidirectional = 1;
        if (c->dtype == GRULITE_DTYPE_I8) m->quantized = 1;
        in = width;
    }
    m->info.output_size = in;
    m->info.state_size = state;
    for (int j = 0; j < m->info.num_dense; j++) {
        grulite_dense_info *c = &m->dense[j].cfg;
        if (c->out_features < 1 || c->out_features > GRULITE_MAX_FEATURES)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: out_features %ld outside [1, %d]",
                        j, (long)c->out_features, GRULITE_MAX_FEATURES);
        if (!grulite_name(GRULITE_NAMES_ACTIVATION, c->activation))
            return fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: unknown activation %ld",
                        j, (long)c->activation);
        if (c->has_bias != 0 && c->has_bias != 1)
            return fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %d: has_bias %ld is not 0 or 1",
                        j, (long)c->has_bias);
        c->in_features = in;
        gl_panel *p = &m->dense[j].p;
        p->K = (size_t)in;
        p->G = 1;
        p->H = (size_t)c->out_features;
        p->nb = ((size_t)c->out_features + GL_LANES - 1) / GL_LANES;
        p->dtype = GRULITE_DTYPE_F32;           /* the head stays float32 */
        in = c->out_features;
        if (c->out_features > m->max_dense) m->max_dense = c->out_features;
    }
    m->info.head_size = m->info.num_dense ? in : 0;
    return GRULITE_OK;
}

/* ---- Writing ------------------------------------------------------------ */

typedef struct gl_writer {
    const grulite_model_spec *spec;
    unsigned char *buf;      /* NULL: measuring only */
    size_t table_pos;        /* next tensor-table entry */
    size_t data_pos;         /* next tensor payload, 64-aligned */
    int failed;
} gl_writer;

/* Source matrix for a tensor of the spec, in PyTorch layout, and whether
 * it is transposed into the file (matrices) or copied (vectors). */
static const float *spec_source(const grulite_model_spec *spec, const char *name)
{
    int l, d, j;
    char what[8];
    if (sscanf(name, "l%d.d%d.%4s", &l, &d, what) == 3) {   /* "w_ih.s" reads the matrix */
        const grulite_layer_spec *L = &spec->layers[l];
        if (!strcmp(what, "w_ih")) return L->weight_ih[d];
        if (!strcmp(what, "w_hh")) return L->weight_hh[d];
        if (!strcmp(what, "b_ih")) return L->bias_ih[d];
        if (!strcmp(what, "b_hh")) return L->bias_hh[d];
    } else if (sscanf(name, "head%d.%1s", &j, what) == 2) {
        const grulite_dense_spec *D = &spec->dense[j];
        return what[0] == 'w' ? D->weight : D->bias;
    }
    return NULL;
}

/* int8 scale of output j (within gate g) of a PyTorch (G*H, K) matrix:
 * max |w| / 127 over its row; 0 for an all-zero row. */
static float row_scale(const float *src, const gl_panel *p, size_t g, size_t j)
{
    float mx = 0.0f;
    const float *row = src + (g * p->H + j) * p->K;
    for (size_t k = 0; k < p->K; k++) {
        const float a = fabsf(row[k]);
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
    const int dtype = ref_dtype(ref);
    size_t bytes, next;
    if (gl_mul(ref_elems(ref), gl_dtype_bytes(dtype), &bytes) || gl_add(w->data_pos, bytes, &next) ||
        gl_align_up(next, &next))
        return GRULITE_E_TOO_LARGE;
    if (w->buf) {
        const float *src = spec_source(w->spec, ref->name);
        if (!src) return GRULITE_E_ARG;
        const gl_panel *p = ref->panel;
        unsigned char *e = w->buf + w->table_pos;
        memset(e, 0, GL_TENSOR_REC);
        memcpy(e, ref->name, strlen(ref->name));
        wr32(e + 32, (uint32_t)dtype);
        wr32(e + 36, GL_LAYOUT_PANEL16);
        wr32(e + 40, ref->kind == GL_MATRIX ? 2 : 1);
        wr32(e + 44, (uint32_t)p->G);
        wr32(e + 48, ref_dim0(ref));
        wr32(e + 52, ref_dim1(ref));
        wr64(e + 56, (uint64_t)w->data_pos);
        /* Pack from PyTorch's (G*H outputs, K inputs) into (nb, K, G, 16);
         * biases and int8 scales into (nb, G, 16); zeros past H.  One value
         * at a time through memcpy: the buffer need not be aligned. */
        unsigned char *dst = w->buf + w->data_pos;
        const size_t L = GL_LANES;
        float *scales = NULL;                 /* int8: per output g*H + j */
        if (dtype == GRULITE_DTYPE_I8 || ref->kind == GL_SCALE) {
            scales = malloc(p->G * p->H * sizeof(float));
            if (!scales) return GRULITE_E_NOMEM;
            for (size_t g = 0; g < p->G; g++)
                for (size_t j = 0; j < p->H; j++) scales[g * p->H + j] = row_scale(src, p, g, j);
        }
        if (ref->kind == GL_MATRIX) {
            memset(dst, dtype == GRULITE_DTYPE_I8 ? 128 : 0, bytes);   /* padding: 0 */
            for (size_t g = 0; g < p->G; g++)
                for (size_t j = 0; j < p->H; j++)
                    for (size_t k = 0; k < p->K; k++)
                        put_value(dst, gl_panel_index(p, j / L, k, g, j % L), dtype,
                                  src[(g * p->H + j) * p->K + k],
                                  scales ? scales[g * p->H + j] : 0.0f);
        } else {
            memset(dst, 0, bytes);
            for (size_t g = 0; g < p->G; g++)
                for (size_t j = 0; j < p->H; j++)
                    put_value(dst, ((j / L) * p->G + g) * L + j % L, GRULITE_DTYPE_F32,
                              ref->kind == GL_BIAS ? src[g * p->H + j] : scales[g * p->H + j], 0.0f);
        }
        free(scales);
        memset(w->buf + w->data_pos + bytes, 0, next - w->data_pos - bytes);
    }
    w->table_pos += GL_TENSOR_REC;
    w->data_pos = next;
    return 0;
}

/* Fills m's configuration from spec and validates it (finish_config). */
static int spec_config(const grulite_model_spec *spec, grulite_model *m, char *msg, size_t msg_size)
{
    if (!host_is_little_endian())
        return fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "big-endian hosts are not supported");
    if (spec->num_layers < 1 || spec->num_layers > GRULITE_MAX_LAYERS)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "a model needs 1 to %d GRU layers; got %ld",
                    GRULITE_MAX_LAYERS, (long)spec->num_layers);
    if (!spec->layers) return fail(msg, msg_size, GRULITE_E_CONFIG, "layers is NULL");
    if (spec->num_dense < 0 || spec->num_dense > GRULITE_MAX_DENSE)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "at most %d head layers; got %ld",
                    GRULITE_MAX_DENSE, (long)spec->num_dense);
    if (spec->num_dense > 0 && !spec->dense)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "num_dense %ld with dense NULL", (long)spec->num_dense);
    if (!grulite_name(GRULITE_NAMES_DTYPE, spec->dtype))
        return fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "weight dtype %ld not supported",
                    (long)spec->dtype);
    if (spec->metadata_len > UINT32_MAX || (spec->metadata_len && !spec->metadata))
        return fail(msg, msg_size, GRULITE_E_ARG, "metadata: NULL, or above 4 GiB");
    m->info.input_size = spec->input_size;
    m->info.num_layers = spec->num_layers;
    m->info.num_dense = spec->num_dense;
    for (int l = 0; l < spec->num_layers; l++) {
        const grulite_layer_spec *L = &spec->layers[l];
        m->layer[l].cfg.hidden_size = L->hidden_size;
        m->layer[l].cfg.num_directions = L->num_directions;
        m->layer[l].cfg.reset_after = L->reset_after;
        m->layer[l].cfg.reverse = L->reverse;
        m->layer[l].cfg.has_bias = L->has_bias;
        m->layer[l].cfg.dtype = spec->dtype;
    }
    for (int j = 0; j < spec->num_dense; j++) {
        m->dense[j].cfg.out_features = spec->dense[j].out_features;
        m->dense[j].cfg.activation = spec->dense[j].activation;
        m->dense[j].cfg.has_bias = spec->dense[j].has_bias;
    }
    return finish_config(m, msg, msg_size);
}

int grulite_spec_check(const grulite_model_spec *spec, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!spec) return fail(msg, msg_size, GRULITE_E_ARG, "spec is NULL");
    grulite_model *m = calloc(1, sizeof(*m));
    if (!m) return fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory");
    const int rc = spec_config(spec, m, msg, msg_size);
    free(m);
    return rc;
}

int grulite_model_serialize(const grulite_model_spec *spec, void *buf, size_t cap,
                            size_t *size)
{
    if (!spec || !size) return GRULITE_E_ARG;
    grulite_model *m = calloc(1, sizeof(*m));
    if (!m) return GRULITE_E_NOMEM;
    int rc = spec_config(spec, m, NULL, 0);
    if (rc) goto done;
    /* Every pointer the spec must provide. */
    for (int l = 0; l < spec->num_layers && !rc; l++) {
        const grulite_layer_spec *L = &spec->layers[l];
        for (int d = 0; d < L->num_directions; d++) {
            if (!L->weight_ih[d] || !L->weight_hh[d] ||
                (L->has_bias && (!L->bias_ih[d] || !L->bias_hh[d])))
                rc = GRULITE_E_ARG;
        }
    }
    for (int j = 0; j < spec->num_dense && !rc; j++)
        if (!spec->dense[j].weight || (spec->dense[j].has_bias && !spec->dense[j].bias))
            rc = GRULITE_E_ARG;
    if (rc) goto done;

    uint32_t n_tensors = 0;
    each_tensor(m, count_fn, &n_tensors);
    const size_t table = GL_HEADER_SIZE + (size_t)spec->num_layers * GL_LAYER_REC +
                         (size_t)spec->num_dense * GL_DENSE_REC;
    const size_t meta_off = table + (size_t)n_tensors * GL_TENSOR_REC;
    size_t data0;
    if (gl_add(meta_off, spec->metadata_len, &data0) || gl_align_up(data0, &data0)) {
        rc = GRULITE_E_TOO_LARGE;
        goto done;
    }

    /* Pass 1 measures; pass 2 (if a buffer was given) writes. */
    gl_writer w = { spec, NULL, table, data0, 0 };
    if ((rc = each_tensor(m, write_fn, &w))) goto done;
    const size_t total = w.data_pos;
    *size = total;
    if (!buf) goto done;
    if (cap < total) { rc = GRULITE_E_BUFFER; goto done; }

    unsigned char *out = buf;
    memset(out, 0, data0);
    memcpy(out, GL_MAGIC, 8);
    wr32(out + 8, GRULITE_FORMAT_VERSION);
    wr64(out + 16, (uint64_t)total);
    wr32(out + 24, GL_HEADER_SIZE);
    wr32(out + 28, (spec->batch_first ? 0u : (uint32_t)GL_FLAG_TIME_MAJOR) |
                   (spec->head_from_state && spec->num_dense ? (uint32_t)GL_FLAG_HEAD_STATE : 0u));
    wr32(out + 32, (uint32_t)spec->input_size);
    wr32(out + 36, (uint32_t)spec->num_layers);
    wr32(out + 40, (uint32_t)spec->num_dense);
    wr32(out + 44, n_tensors);
    wr64(out + 48, (uint64_t)meta_off);
    wr64(out + 56, (uint64_t)spec->metadata_len);
    unsigned char *p = out + GL_HEADER_SIZE;
    for (int l = 0; l < spec->num_layers; l++, p += GL_LAYER_REC) {
        const grulite_layer_info *c = &m->layer[l].cfg;
        wr32(p + 0, (uint32_t)c->hidden_size);
        wr32(p + 4, (uint32_t)c->num_directions);
        wr32(p + 8, (uint32_t)c->reset_after);
        wr32(p + 20, (uint32_t)c->reverse);
        wr32(p + 12, (uint32_t)c->has_bias);
        wr32(p + 16, (uint32_t)c->dtype);
    }
    for (int j = 0; j < spec->num_dense; j++, p += GL_DENSE_REC) {
        const grulite_dense_info *c = &m->dense[j].cfg;
        wr32(p + 0, (uint32_t)c->out_features);
        wr32(p + 4, (uint32_t)c->activation);
        wr32(p + 8, (uint32_t)c->has_bias);
    }
    if (spec->metadata_len) memcpy(out + meta_off, spec->metadata, spec->metadata_len);
    gl_writer w2 = { spec, out, table, data0, 0 };
    if ((rc = each_tensor(m, write_fn, &w2))) goto done;
    wr32(out + 12, gl_crc32(0, out + GL_CRC_START, total - GL_CRC_START));

done:
    free(m);
    return rc;
}

/* ---- Converting a loaded model to another weight dtype ------------------- */

/* Unpacks panel p into PyTorch's (G*H, K) layout (dequantized).  Returns a
 * malloc'd array or NULL. */
static float *unpack_matrix(const gl_panel *p)
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
                    float v;
                    if (p->dtype == GRULITE_DTYPE_F16) v = gl_half_to_float(((const uint16_t *)p->w)[i]);
                    else if (p->dtype == GRULITE_DTYPE_I8)
                        v = (float)((int)((const uint8_t *)p->w)[i] - 128) *
                            p->scale[(b * p->G + g) * L + l];
                    else v = ((const float *)p->w)[i];
                    out[(g * p->H + j) * p->K + k] = v;
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

int grulite_model_convert(const grulite_model *m, int dtype, void *buf, size_t cap, size_t *size)
{
    if (!m || !size) return GRULITE_E_ARG;
    grulite_layer_spec ls[GRULITE_MAX_LAYERS];
    grulite_dense_spec ds[GRULITE_MAX_DENSE];
    float *owned[GRULITE_MAX_LAYERS * 8 + GRULITE_MAX_DENSE * 2];
    size_t n_owned = 0;
    int rc = GRULITE_OK;
    memset(ls, 0, sizeof ls);
    memset(ds, 0, sizeof ds);
#define GL_KEEP(ptr, expr) do { float *t_ = (expr); if (!t_) { rc = GRULITE_E_NOMEM; goto done; } \
                                owned[n_owned++] = t_; (ptr) = t_; } while (0)
    for (int l = 0; l < m->info.num_layers; l++) {
        const gl_layer *L = &m->layer[l];
        ls[l].hidden_size = L->cfg.hidden_size;
        ls[l].num_directions = L->cfg.num_directions;
        ls[l].reset_after = L->cfg.reset_after;
        ls[l].reverse = L->cfg.reverse;
        ls[l].has_bias = L->cfg.has_bias;
        for (int d = 0; d < L->cfg.num_directions; d++) {
            GL_KEEP(ls[l].weight_ih[d], unpack_matrix(&L->dir[d].ih));
            GL_KEEP(ls[l].weight_hh[d], unpack_matrix(&L->dir[d].hh));
            if (L->cfg.has_bias) {
                GL_KEEP(ls[l].bias_ih[d], unpack_bias(&L->dir[d].ih));
                GL_KEEP(ls[l].bias_hh[d], unpack_bias(&L->dir[d].hh));
            }
        }
    }
    for (int j = 0; j < m->info.num_dense; j++) {
        const gl_dense *D = &m->dense[j];
        ds[j].out_features = D->cfg.out_features;
        ds[j].activation = D->cfg.activation;
        ds[j].has_bias = D->cfg.has_bias;
        GL_KEEP(ds[j].weight, unpack_matrix(&D->p));
        if (D->cfg.has_bias) GL_KEEP(ds[j].bias, unpack_bias(&D->p));
    }
#undef GL_KEEP
    {
        grulite_model_spec spec;
        memset(&spec, 0, sizeof spec);
        spec.input_size = m->info.input_size;
        spec.num_layers = m->info.num_layers;
        spec.layers = ls;
        spec.num_dense = m->info.num_dense;
        spec.dense = m->info.num_dense ? ds : NULL;
        spec.dtype = dtype;
        spec.batch_first = m->info.batch_first;
        spec.head_from_state = m->info.head_from_state;
        spec.metadata = m->metadata;
        spec.metadata_len = m->metadata_len;
        rc = grulite_model_serialize(&spec, buf, cap, size);
    }
done:
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    return rc;
}

/* ---- Reading ------------------------------------------------------------ */

/* Most tensors a valid configuration can need: 6 per layer direction (two
 * matrices, their int8 scales, two biases), 2 per head layer. */
#define GL_MAX_TENSORS (GRULITE_MAX_LAYERS * 2 * 6 + GRULITE_MAX_DENSE * 2)

typedef struct gl_reader {
    grulite_model *m;
    const unsigned char *img;
    size_t size;
    size_t table;            /* offset of the tensor table */
    size_t data_min;         /* first byte after the tables and the metadata */
    uint32_t n_tensors;
    size_t n_placed;         /* tensors accepted so far */
    size_t placed[GL_MAX_TENSORS][2];   /* their byte ranges [begin, end) */
    char *msg;
    size_t msg_size;
} gl_reader;

static int read_fn(const gl_tensor_ref *ref, void *ctx)
{
    gl_reader *r = ctx;
    const unsigned char *found = NULL;
    for (uint32_t i = 0; i < r->n_tensors; i++) {
        const unsigned char *e = r->img + r->table + (size_t)i * GL_TENSOR_REC;
        if (memchr(e, '\0', GL_NAME_LEN) == NULL)
            return fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                        "tensor table entry %lu: name is not NUL-terminated", (unsigned long)i);
        if (strcmp((const char *)e, ref->name) == 0) {
            if (found)
                return fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                            "tensor %s appears twice in the table", ref->name);
            found = e;
        }
    }
    if (!found)
        return fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s is missing", ref->name);
    const uint32_t dtype = rd32(found + 32), layout = rd32(found + 36), ndim = rd32(found + 40);
    const uint32_t gates = rd32(found + 44), d0 = rd32(found + 48), d1 = rd32(found + 52);
    const uint64_t off = rd64(found + 56);
    const uint32_t want0 = ref_dim0(ref), want1 = ref_dim1(ref);
    const int want_dtype = ref_dtype(ref);
    if (dtype != (uint32_t)want_dtype)
        return fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s: dtype %lu, expected %d",
                    ref->name, (unsigned long)dtype, want_dtype);
    if (layout != GL_LAYOUT_PANEL16)
        return fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s: layout %lu, expected %d (panel16)",
                    ref->name, (unsigned long)layout, GL_LAYOUT_PANEL16);
    if (ndim != (want1 ? 2u : 1u) || d0 != want0 || d1 != want1 || gates != ref->panel->G)
        return fail(r->msg, r->msg_size, GRULITE_E_TENSOR,
                    "tensor %s: shape (%lu, %lu) ndim %lu gates %lu; the configuration needs "
                    "(%lu, %lu) with %lu gates",
                    ref->name, (unsigned long)d0, (unsigned long)d1, (unsigned long)ndim,
                    (unsigned long)gates, (unsigned long)want0, (unsigned long)want1,
                    (unsigned long)ref->panel->G);
    size_t bytes, end;
    if (gl_mul(ref_elems(ref), gl_dtype_bytes(want_dtype), &bytes) ||
        off > (uint64_t)SIZE_MAX || gl_add((size_t)off, bytes, &end))
        return fail(r->msg, r->msg_size, GRULITE_E_TOO_LARGE, "tensor %s: size overflows", ref->name);
    if (off % GL_ALIGN != 0)
        return fail(r->msg, r->msg_size, GRULITE_E_FORMAT, "tensor %s: offset %llu not 64-byte aligned",
                    ref->name, (unsigned long long)off);
    if ((size_t)off < r->data_min || end > r->size)
        return fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                    "tensor %s: bytes [%llu, %llu) outside the data area [%llu, %llu) "
                    "after the tables and metadata",
                    ref->name, (unsigned long long)off, (unsigned long long)end,
                    (unsigned long long)r->data_min, (unsigned long long)r->size);
    for (size_t i = 0; i < r->n_placed; i++) {
        if ((size_t)off < r->placed[i][1] && r->placed[i][0] < end)
            return fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                        "tensor %s: bytes [%llu, %llu) overlap another tensor's [%llu, %llu)",
                        ref->name, (unsigned long long)off, (unsigned long long)end,
                        (unsigned long long)r->placed[i][0], (unsigned long long)r->placed[i][1]);
    }
    if (r->n_placed < GL_MAX_TENSORS) {
        r->placed[r->n_placed][0] = (size_t)off;
        r->placed[r->n_placed][1] = end;
        r->n_placed++;
    }
    const void *data = r->img + off;
    if (ref->kind == GL_BIAS) ref->panel->b = data;
    else if (ref->kind == GL_SCALE) ref->panel->scale = data;
    else ref->panel->w = data;
    return 0;
}

/* Validates an image at 64-byte aligned `img` and fills m (whose ownership
 * fields the caller sets). */
static int parse_image(grulite_model *m, const unsigned char *img, size_t size,
                       char *msg, size_t msg_size)
{
    if (!host_is_little_endian())
        return fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "big-endian hosts are not supported");
    if (size < GL_HEADER_SIZE)
        return fail(msg, msg_size, size >= 8 && memcmp(img, GL_MAGIC, 8) ? GRULITE_E_MAGIC
                    : GRULITE_E_TRUNCATED,
                    "file has %lu bytes; a model file has at least a %d-byte header",
                    (unsigned long)size, GL_HEADER_SIZE);
    if (memcmp(img, GL_MAGIC, 8) != 0)
        return fail(msg, msg_size, GRULITE_E_MAGIC, "bad magic: the file does not start with GRULITE");
    const uint32_t version = rd32(img + 8);
    if (version != GRULITE_FORMAT_VERSION)
        return fail(msg, msg_size, GRULITE_E_VERSION, "format version %lu; this library reads version %d",
                    (unsigned long)version, GRULITE_FORMAT_VERSION);
    const uint64_t fsize = rd64(img + 16);
    if (fsize > (uint64_t)size)
        return fail(msg, msg_size, GRULITE_E_TRUNCATED, "header says %llu bytes, the file has %llu",
                    (unsigned long long)fsize, (unsigned long long)size);
    if (fsize < (uint64_t)size)
        return fail(msg, msg_size, GRULITE_E_FORMAT, "header says %llu bytes, the file has %llu (trailing data)",
                    (unsigned long long)fsize, (unsigned long long)size);
    const uint32_t crc = gl_crc32(0, img + GL_CRC_START, size - GL_CRC_START);
    if (crc != rd32(img + 12))
        return fail(msg, msg_size, GRULITE_E_CHECKSUM, "checksum mismatch: stored %08lx, computed %08lx",
                    (unsigned long)rd32(img + 12), (unsigned long)crc);
    if (rd32(img + 24) != GL_HEADER_SIZE || (rd32(img + 28) & ~(uint32_t)(GL_FLAG_TIME_MAJOR | GL_FLAG_HEAD_STATE)) != 0)
        return fail(msg, msg_size, GRULITE_E_FORMAT, "header size %lu / flags %lu not supported",
                    (unsigned long)rd32(img + 24), (unsigned long)rd32(img + 28));

    const uint32_t input_size = rd32(img + 32), n_layers = rd32(img + 36);
    const uint32_t n_dense = rd32(img + 40), n_tensors = rd32(img + 44);
    const uint64_t meta_off = rd64(img + 48), meta_len = rd64(img + 56);
    if (n_layers < 1 || n_layers > GRULITE_MAX_LAYERS)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "num_layers %lu outside [1, %d]",
                    (unsigned long)n_layers, GRULITE_MAX_LAYERS);
    if (n_dense > GRULITE_MAX_DENSE)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "num_dense %lu above %d",
                    (unsigned long)n_dense, GRULITE_MAX_DENSE);
    if (input_size > GRULITE_MAX_FEATURES)
        return fail(msg, msg_size, GRULITE_E_CONFIG, "input_size %lu above %d",
                    (unsigned long)input_size, GRULITE_MAX_FEATURES);
    const size_t table = GL_HEADER_SIZE + (size_t)n_layers * GL_LAYER_REC +
                         (size_t)n_dense * GL_DENSE_REC;
    size_t tables_end;
    if (gl_mul(n_tensors, GL_TENSOR_REC, &tables_end) || gl_add(tables_end, table, &tables_end) ||
        tables_end > size)
        return fail(msg, msg_size, GRULITE_E_FORMAT, "tensor table (%lu entries) runs past the end of the file",
                    (unsigned long)n_tensors);
    if (meta_off < tables_end || meta_off > size || meta_len > size - meta_off)
        return fail(msg, msg_size, GRULITE_E_FORMAT, "metadata [%llu, +%llu) outside the file or overlapping the tables",
                    (unsigned long long)meta_off, (unsigned long long)meta_len);

    m->info.input_size = (int32_t)input_size;
    m->info.batch_first = (rd32(img + 28) & GL_FLAG_TIME_MAJOR) ? 0 : 1;
    m->info.head_from_state = (rd32(img + 28) & GL_FLAG_HEAD_STATE) ? 1 : 0;
    m->info.num_layers = (int32_t)n_layers;
    m->info.num_dense = (int32_t)n_dense;
    const unsigned char *p = img + GL_HEADER_SIZE;
    for (uint32_t l = 0; l < n_layers; l++, p += GL_LAYER_REC) {
        grulite_layer_info *c = &m->layer[l].cfg;
        const uint32_t v[6] = { rd32(p), rd32(p + 4), rd32(p + 8), rd32(p + 12), rd32(p + 16),
                                rd32(p + 20) };
        for (int i = 0; i < 6; i++)
            if (v[i] > GRULITE_MAX_FEATURES)
                return fail(msg, msg_size, GRULITE_E_CONFIG, "layer %lu: field %d = %lu out of range",
                            (unsigned long)l, i, (unsigned long)v[i]);
        c->hidden_size = (int32_t)v[0];
        c->num_directions = (int32_t)v[1];
        c->reset_after = (int32_t)v[2];
        c->has_bias = (int32_t)v[3];
        c->dtype = (int32_t)v[4];
        c->reverse = (int32_t)v[5];
    }
    for (uint32_t j = 0; j < n_dense; j++, p += GL_DENSE_REC) {
        grulite_dense_info *c = &m->dense[j].cfg;
        const uint32_t v[3] = { rd32(p), rd32(p + 4), rd32(p + 8) };
        for (int i = 0; i < 3; i++)
            if (v[i] > GRULITE_MAX_FEATURES)
                return fail(msg, msg_size, GRULITE_E_CONFIG, "head layer %lu: field %d = %lu out of range",
                            (unsigned long)j, i, (unsigned long)v[i]);
        c->out_features = (int32_t)v[0];
        c->activation = (int32_t)v[1];
        c->has_bias = (int32_t)v[2];
    }
    int rc = finish_config(m, msg, msg_size);
    if (rc) return rc;
    if (m->info.head_from_state && m->info.num_dense == 0)
        return fail(msg, msg_size, GRULITE_E_FORMAT, "flags: head-from-state set on a model without a head");

    uint32_t expected = 0;
    each_tensor(m, count_fn, &expected);
    if (n_tensors != expected)
        return fail(msg, msg_size, GRULITE_E_TENSOR, "%lu tensors in the table; the configuration needs %lu",
                    (unsigned long)n_tensors, (unsigned long)expected);
    gl_reader *r = calloc(1, sizeof(*r));
    if (!r) return fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory");
    r->m = m;
    r->img = img;
    r->size = size;
    r->table = table;
    r->data_min = (size_t)(meta_off + meta_len);    /* metadata ends after the tables */
    r->n_tensors = n_tensors;
    r->msg = msg;
    r->msg_size = msg_size;
    rc = each_tensor(m, read_fn, r);
    free(r);
    if (rc) return rc;

    m->metadata = (const char *)img + meta_off;
    m->metadata_len = (size_t)meta_len;
    m->image = img;
    m->image_size = size;
    m->info.image_size = size;
    m->info.checksum = crc;
    return GRULITE_OK;
}

static int load_image(const void *data, size_t size, grulite_model **out,
                      void *owned, void *mapping, size_t mapping_size,
                      char *msg, size_t msg_size)
{
    grulite_model *m = calloc(1, sizeof(*m));
    if (!m) return fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory");
    m->owned = owned;
    m->mapping = mapping;
    m->mapping_size = mapping_size;
    int rc = parse_image(m, data, size, msg, msg_size);
    if (!rc) {
        m->k = gl_kernels_from_env();
        if (!m->k) {
            char names[96];
            gl_isa_list(names, sizeof names);
            rc = fail(msg, msg_size, GRULITE_E_UNSUPPORTED,
                      "GRULITE_ISA=%.32s: not a kernel set this CPU and build can run (%s)",
                      getenv("GRULITE_ISA"), names);
        }
    }
    if (rc) {
        grulite_model_free(m);
        return rc;
    }
    *out = m;
    return GRULITE_OK;
}

int grulite_model_load_buffer(const void *data, size_t size, int flags,
                              grulite_model **out, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!out) return fail(msg, msg_size, GRULITE_E_ARG, "out is NULL");
    *out = NULL;
    if (!data && size) return fail(msg, msg_size, GRULITE_E_ARG, "data is NULL");
    if (flags & ~GRULITE_LOAD_COPY) return fail(msg, msg_size, GRULITE_E_ARG, "unknown flags");
    if (flags & GRULITE_LOAD_COPY) {
        void *copy = gl_alloc_aligned(size ? size : 1);
        if (!copy) return fail(msg, msg_size, GRULITE_E_NOMEM, "cannot allocate %lu bytes", (unsigned long)size);
        if (size) memcpy(copy, data, size);
        return load_image(copy, size, out, copy, NULL, 0, msg, msg_size);
    }
    if (((uintptr_t)data) % GL_ALIGN != 0)
        return fail(msg, msg_size, GRULITE_E_ALIGN, "buffer at %p is not 64-byte aligned", data);
    return load_image(data, size, out, NULL, NULL, 0, msg, msg_size);
}

int grulite_model_load(const char *path, grulite_model **out, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!out) return fail(msg, msg_size, GRULITE_E_ARG, "out is NULL");
    *out = NULL;
    if (!path) return fail(msg, msg_size, GRULITE_E_ARG, "path is NULL");
#ifdef GL_HAVE_MMAP
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * refused as not a regular file). */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return fail(msg, msg_size, GRULITE_E_IO, "cannot open the file");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail(msg, msg_size, GRULITE_E_IO, "not a regular file");
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return fail(msg, msg_size, GRULITE_E_TOO_LARGE, "file too large to map");
    }
    const size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return fail(msg, msg_size, GRULITE_E_TRUNCATED, "file is empty");
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return fail(msg, msg_size, GRULITE_E_IO, "cannot map the file");
    return load_image(map, size, out, NULL, map, size, msg, msg_size);
#else
    FILE *f = fopen(path, "rb");
    if (!f) return fail(msg, msg_size, GRULITE_E_IO, "cannot open the file");
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return fail(msg, msg_size, GRULITE_E_IO, "cannot seek"); }
    long end = ftell(f);
    if (end < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return fail(msg, msg_size, GRULITE_E_IO, "cannot seek"); }
    const size_t size = (size_t)end;
    void *copy = gl_alloc_aligned(size ? size : 1);
    if (!copy) { fclose(f); return fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory"); }
    if (fread(copy, 1, size, f) != size) {
        fclose(f);
        gl_free_aligned(copy);
        return fail(msg, msg_size, GRULITE_E_IO, "cannot read the file");
    }
    fclose(f);
    return load_image(copy, size, out, copy, NULL, 0, msg, msg_size);
#endif
}

void grulite_model_free(grulite_model *m)
{
    if (!m) return;
#ifdef GL_HAVE_MMAP
    if (m->mapping) munmap(m->mapping, m->mapping_size);
#endif
    gl_free_aligned(m->owned);
    free(m);
}

int grulite_model_save(const grulite_model *m, const char *path)
{
    if (!m || !path) return GRULITE_E_ARG;
    const size_t n = strlen(path);
    char *tmp = malloc(n + 16);
    if (!tmp) return GRULITE_E_NOMEM;
    memcpy(tmp, path, n);
#ifdef GL_HAVE_MMAP
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
    int ok = fwrite(m->image, 1, m->image_size, f) == m->image_size;
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

/* ---- Queries ----------------------------------------------------------- */

const char *grulite_model_isa(const grulite_model *m)
{
    return m && m->k ? m->k->name : "none";
}

int grulite_model_set_isa(grulite_model *m, const char *isa)
{
    if (!m) return GRULITE_E_ARG;
    const gl_kernels *k = gl_kernels_select(isa);
    if (!k) return GRULITE_E_UNSUPPORTED;
    m->k = k;
    return GRULITE_OK;
}

int grulite_model_info(const grulite_model *m, grulite_info *info)
{
    if (!m || !info) return GRULITE_E_ARG;
    *info = m->info;
    return GRULITE_OK;
}

int grulite_model_layer(const grulite_model *m, int layer, grulite_layer_info *info)
{
    if (!m || !info || layer < 0 || layer >= m->info.num_layers) return GRULITE_E_ARG;
    *info = m->layer[layer].cfg;
    return GRULITE_OK;
}

int grulite_model_dense(const grulite_model *m, int index, grulite_dense_info *info)
{
    if (!m || !info || index < 0 || index >= m->info.num_dense) return GRULITE_E_ARG;
    *info = m->dense[index].cfg;
    return GRULITE_OK;
}

const char *grulite_model_metadata(const grulite_model *m, size_t *len)
{
    if (!m) { if (len) *len = 0; return NULL; }
    if (len) *len = m->metadata_len;
    return m->metadata;
}

const void *grulite_model_image(const grulite_model *m, size_t *size)
{
    if (!m) { if (size) *size = 0; return NULL; }
    if (size) *size = m->image_size;
    return m->image;
}
