/* layers/gru.c - the GRU layer kind: its record, checks, tensors, and its
 * forward pass over a task's rows.
 *
 *     r = f(W_ir x + b_ir + W_hr h + b_hr)
 *     z = f(W_iz x + b_iz + W_hz h + b_hz)
 *     n = g(W_in x + b_in + r * (W_hn h + b_hn))      reset_after = 1 (PyTorch)
 *     n = g(W_in x + b_in + W_hn (r * h) + b_hn)      reset_after = 0
 *     h' = (1 - z) * n + z * h
 *
 * f = sigmoid and g = tanh unless the layer says otherwise (ONNX's
 * activations, per direction, and its clip of every pre-activation: the
 * kernels' *_fn gates, so the default ones stay as they were).
 *
 * Each direction first projects every step's input at once (one product
 * over all rows and steps), then walks the steps: one recurrent product
 * over the rows, then the gates row by row.  Rows never interact, and
 * every kernel computes a row the same way whatever rows surround it
 * (kernels/kernels.h), so streams, threads and whole sequences all give
 * the same bits. */
#include <string.h>

#include "layers.h"

/* ---- Record, checks, tensors ------------------------------------------- */

/* Record fields, in the order version 2 files stored them too (they end
 * at F_REVERSE); F_FLAGS holds the FLAG_* bits and, with FLAG_FNS, the
 * activation codes: 4 bits each from bit 4, f and g of direction 0, then
 * of direction 1 (the field stays below 2^20, the reader's bound). */
enum { F_HIDDEN, F_DIRECTIONS, F_RESET_AFTER, F_BIAS, F_DTYPE, F_REVERSE, F_FLAGS };
enum { FLAG_PROJECTED = 1, FLAG_H0 = 2, FLAG_FNS = 4, FNS_SHIFT = 4 };

static void gru_to_fields(const gl_layer *L, uint32_t f[GL_FIELDS])
{
    const grulite_layer_info *c = &L->u.gru.cfg;
    f[F_HIDDEN] = (uint32_t)c->hidden_size;
    f[F_DIRECTIONS] = (uint32_t)c->num_directions;
    f[F_RESET_AFTER] = (uint32_t)c->reset_after;
    f[F_BIAS] = (uint32_t)c->has_bias;
    f[F_DTYPE] = (uint32_t)c->dtype;
    f[F_REVERSE] = (uint32_t)c->reverse;
    uint32_t flags = (c->projected ? (uint32_t)FLAG_PROJECTED : 0u) |
                     (c->has_h0 ? (uint32_t)FLAG_H0 : 0u);
    if (L->u.gru.custom) {
        flags |= FLAG_FNS;
        for (int d = 0; d < c->num_directions; d++)
            flags |= ((uint32_t)c->activation_f[d] << (FNS_SHIFT + 8 * d)) |
                     ((uint32_t)c->activation_g[d] << (FNS_SHIFT + 8 * d + 4));
    }
    f[F_FLAGS] = flags;
}

static void gru_from_fields(gl_layer *L, const uint32_t f[GL_FIELDS])
{
    grulite_layer_info *c = &L->u.gru.cfg;
    gl_gru *g = &L->u.gru;
    /* Fields are at most GRULITE_MAX_FEATURES here (the reader checks). */
    c->hidden_size = (int32_t)f[F_HIDDEN];
    c->num_directions = (int32_t)f[F_DIRECTIONS];
    c->reset_after = (int32_t)f[F_RESET_AFTER];
    c->has_bias = (int32_t)f[F_BIAS];
    c->dtype = (int32_t)f[F_DTYPE];
    c->reverse = (int32_t)f[F_REVERSE];
    const uint32_t flags = f[F_FLAGS];
    c->projected = (flags & FLAG_PROJECTED) ? 1 : 0;
    c->has_h0 = (flags & FLAG_H0) ? 1 : 0;
    g->custom = (flags & FLAG_FNS) ? 1 : 0;
    /* Codes of the directions the layer has; -1 (refused by configure)
     * for a 0 code among them. */
    const int D = f[F_DIRECTIONS] == 2 ? 2 : 1;
    uint32_t known = FLAG_PROJECTED | FLAG_H0 | FLAG_FNS;
    for (int d = 0; d < 2; d++) {
        c->activation_f[d] = c->activation_g[d] = 0;   /* configure: the defaults */
        if (!g->custom || d >= D) continue;
        const uint32_t cf = (flags >> (FNS_SHIFT + 8 * d)) & 15u;
        const uint32_t cg = (flags >> (FNS_SHIFT + 8 * d + 4)) & 15u;
        c->activation_f[d] = cf ? (int32_t)cf : -1;
        c->activation_g[d] = cg ? (int32_t)cg : -1;
        known |= 0xFFu << (FNS_SHIFT + 8 * d);
    }
    g->bad_flags = flags & ~known;
}

/* Parameters each GRU activation takes: 1 alpha, 2 alpha and beta. */
static int act_params(int32_t act)
{
    switch (act) {
    case GRULITE_ACT_LEAKY_RELU: case GRULITE_ACT_THRESHOLDED_RELU: case GRULITE_ACT_ELU: return 1;
    case GRULITE_ACT_AFFINE: case GRULITE_ACT_SCALED_TANH: case GRULITE_ACT_HARD_SIGMOID: return 2;
    default: return 0;
    }
}

static int finite(float v)
{
    return v == v && v - v == 0.0f;
}

/* Checks one activation of layer l, direction d ("f" or "g"); 0 becomes
 * the default. */
static int check_act(int l, int d, const char *which, int32_t *act, float alpha, float beta,
                     char *msg, size_t msg_size)
{
    if (*act == 0) *act = which[0] == 'f' ? GRULITE_ACT_SIGMOID : GRULITE_ACT_TANH;
    const char *name = grulite_name(GRULITE_NAMES_GRU_ACTIVATION, *act);
    if (!name)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d direction %d: activation %s = %ld is not a GRU activation",
                       l, d, which, (long)*act);
    const int np = act_params(*act);
    if (!finite(alpha) || !finite(beta))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d direction %d: activation %s (%s): alpha %g / beta %g not finite",
                       l, d, which, name, (double)alpha, (double)beta);
    if ((np < 1 && alpha != 0.0f) || (np < 2 && beta != 0.0f))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d direction %d: activation %s (%s) takes %s; alpha %g beta %g given",
                       l, d, which, name, np == 0 ? "no alpha or beta" : "an alpha and no beta",
                       (double)alpha, (double)beta);
    return GRULITE_OK;
}

/* Checks the activations and clip of layer l and fills g->fns; custom
 * when any differs from sigmoid / tanh without clip. */
static int resolve_fns(gl_gru *g, int l, char *msg, size_t msg_size)
{
    grulite_layer_info *c = &g->cfg;
    int rc;
    if (!finite(c->clip) || c->clip < 0.0f)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: clip %g must be finite and >= 0 (0: none)", l, (double)c->clip);
    for (int d = 0; d < 2; d++) {
        if (d >= c->num_directions) {      /* unused: zeros */
            c->activation_f[d] = c->activation_g[d] = 0;
            c->alpha_f[d] = c->beta_f[d] = c->alpha_g[d] = c->beta_g[d] = 0.0f;
            continue;
        }
        if ((rc = check_act(l, d, "f", &c->activation_f[d], c->alpha_f[d], c->beta_f[d],
                            msg, msg_size)) ||
            (rc = check_act(l, d, "g", &c->activation_g[d], c->alpha_g[d], c->beta_g[d],
                            msg, msg_size)))
            return rc;
        if (c->activation_f[d] != GRULITE_ACT_SIGMOID || c->activation_g[d] != GRULITE_ACT_TANH)
            g->custom = 1;
        const gl_gate_fns fn = { c->activation_f[d], c->activation_g[d], c->alpha_f[d],
                                 c->beta_f[d], c->alpha_g[d], c->beta_g[d], c->clip };
        g->fns[d] = fn;
        float *v = g->act_vals + 4 * d;
        v[0] = c->alpha_f[d]; v[1] = c->beta_f[d]; v[2] = c->alpha_g[d]; v[3] = c->beta_g[d];
    }
    if (c->clip > 0.0f) g->custom = 1;
    g->act_vals[4 * c->num_directions] = c->clip;
    g->act_src = g->act_vals;
    return GRULITE_OK;
}

static int gru_configure(gl_layer *L, int l, int32_t in, char *msg, size_t msg_size)
{
    grulite_layer_info *c = &L->u.gru.cfg;
    gl_gru *gr = &L->u.gru;
    if (c->hidden_size < 1 || c->hidden_size > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: hidden_size %ld is outside [1, %d]",
                       l, (long)c->hidden_size, GRULITE_MAX_FEATURES);
    if (c->num_directions != 1 && c->num_directions != 2)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: num_directions %ld is not 1 or 2",
                       l, (long)c->num_directions);
    if (c->reset_after != 0 && c->reset_after != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: reset_after %ld is not 0 or 1",
                       l, (long)c->reset_after);
    if (c->reverse != 0 && (c->reverse != 1 || c->num_directions != 1))
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: reverse %ld needs 0, or 1 with one direction", l, (long)c->reverse);
    if (c->has_bias != 0 && c->has_bias != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: has_bias %ld is not 0 or 1",
                       l, (long)c->has_bias);
    if (!grulite_name(GRULITE_NAMES_DTYPE, c->dtype))
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "layer %d: weight dtype %ld not supported",
                       l, (long)c->dtype);
    const int32_t width = c->num_directions * c->hidden_size;   /* <= 2^21 */
    if (width > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: output width %ld above %d",
                       l, (long)width, GRULITE_MAX_FEATURES);
    if (gr->bad_flags)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: flags 0x%lx: unknown bits (known: "
                       "1 projected, 2 learned initial state, 4 activations with their codes in "
                       "bits 4-11 per direction)", l, (unsigned long)gr->bad_flags);
    if (c->projected != 0 && c->projected != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: projected %ld is not 0 or 1",
                       l, (long)c->projected);
    if (c->has_h0 != 0 && c->has_h0 != 1)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "layer %d: has_h0 %ld is not 0 or 1",
                       l, (long)c->has_h0);
    if (c->projected && (int64_t)in != 3 * (int64_t)width)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                       "layer %d: a projected input has D*3*H = %ld features; the layer below "
                       "gives %ld", l, (long)(3 * (int64_t)width), (long)in);
    int rc = resolve_fns(gr, l, msg, msg_size);
    if (rc) return rc;
    c->input_size = in;
    for (int d = 0; d < 2; d++) {
        gl_panel *ih = &L->u.gru.dir[d].ih, *hh = &L->u.gru.dir[d].hh;
        ih->K = c->projected ? 0 : (size_t)in;     /* projected: no W_ih */
        hh->K = (size_t)c->hidden_size;
        ih->G = hh->G = 3;
        ih->H = hh->H = (size_t)c->hidden_size;
        ih->nb = hh->nb = ((size_t)c->hidden_size + GL_LANES - 1) / GL_LANES;
        ih->dtype = hh->dtype = c->dtype;
        gl_panel *h0 = &L->u.gru.dir[d].h0;
        h0->K = 0;
        h0->G = 1;
        h0->H = (size_t)c->hidden_size;
        h0->nb = hh->nb;
        h0->dtype = GRULITE_DTYPE_F32;
    }
    gr->act.K = 0;
    gr->act.G = 1;
    gr->act.H = 4 * (size_t)c->num_directions + 1;
    gr->act.nb = 1;
    gr->act.dtype = GRULITE_DTYPE_F32;
    L->in = in;
    L->out = width;
    L->state = width;
    return GRULITE_OK;
}

/* A loaded layer's activation parameters, from its l{k}.act tensor:
 * checked as a spec's are. */
static int gru_bind(gl_layer *L, int l, char *msg, size_t msg_size)
{
    gl_gru *g = &L->u.gru;
    grulite_layer_info *c = &g->cfg;
    if (!g->custom || !g->act.b) return GRULITE_OK;
    const float *v = g->act.b;
    for (int d = 0; d < c->num_directions; d++) {
        c->alpha_f[d] = v[4 * d];
        c->beta_f[d] = v[4 * d + 1];
        c->alpha_g[d] = v[4 * d + 2];
        c->beta_g[d] = v[4 * d + 3];
    }
    c->clip = v[4 * c->num_directions];
    return resolve_fns(g, l, msg, msg_size);
}

static int gru_tensors(gl_layer *L, const char *prefix, gl_tensor_fn fn, void *ctx)
{
    const grulite_layer_info *c = &L->u.gru.cfg;
    grulite_layer_spec *s = L->spec;
    gl_tensor_ref t;
    int rc;
    if (L->u.gru.custom) {           /* activation parameters and clip */
        gl_format(t.name, sizeof t.name, "%sact", prefix);
        t.panel = &L->u.gru.act;
        t.kind = GL_BIAS;
        t.src = s ? &L->u.gru.act_src : NULL;
        t.kmajor = 0;
        if ((rc = fn(&t, ctx))) return rc;
    }
    for (int d = 0; d < c->num_directions; d++) {
        gl_direction *w = &L->u.gru.dir[d];
        const struct { const char *suffix; gl_panel *panel; int kind; const float **src; } items[7] = {
            { "w_ih", &w->ih, GL_MATRIX, s ? &s->weight_ih[d] : NULL },
            { "w_ih.s", &w->ih, GL_SCALE, s ? &s->weight_ih[d] : NULL },
            { "w_hh", &w->hh, GL_MATRIX, s ? &s->weight_hh[d] : NULL },
            { "w_hh.s", &w->hh, GL_SCALE, s ? &s->weight_hh[d] : NULL },
            { "b_ih", &w->ih, GL_BIAS, s ? &s->bias_ih[d] : NULL },
            { "b_hh", &w->hh, GL_BIAS, s ? &s->bias_hh[d] : NULL },
            { "h0", &w->h0, GL_BIAS, s ? &s->h0[d] : NULL },
        };
        for (int i = 0; i < 7; i++) {
            const int is_h0 = items[i].panel == &w->h0;
            if (is_h0 ? !c->has_h0 : items[i].kind == GL_BIAS && !c->has_bias) continue;
            if (items[i].kind == GL_SCALE && c->dtype != GRULITE_DTYPE_I8) continue;
            if (c->projected && items[i].panel == &w->ih) continue;   /* folded away */
            gl_format(t.name, sizeof t.name, "%sd%d.%s", prefix, d, items[i].suffix);
            t.panel = items[i].panel;
            t.kind = items[i].kind;
            t.src = items[i].src;
            t.kmajor = 0;
            if ((rc = fn(&t, ctx))) return rc;
        }
    }
    return 0;
}

static double gru_macs(const gl_layer *L)
{
    const grulite_layer_info *c = &L->u.gru.cfg;
    const double in = c->projected ? 0.0 : (double)c->input_size;   /* projected: a copy */
    return (double)c->num_directions * 3.0 * c->hidden_size * (in + c->hidden_size);
}

/* ---- One direction on one thread ---------------------------------------- */

/* One direction of the layer for the job's rows: its weights, scratch,
 * first column in the output rows, (B, H) state, and time order. */
typedef struct gl_dir {
    const gl_seq_job *j;
    const gl_direction *w;
    const gl_scratch *sc;
    size_t col;
    float *state;
    int reverse;
    size_t d;                /* 0 forward, 1 reverse */
} gl_dir;

/* Input projection of every step at once, xp = x W_ih^T + b_ih, for the
 * task's rows: one product over all n*T rows when they lie evenly spaced
 * in `in` (batch-first or local input; time-major input with the whole
 * batch, or a single row, whose steps are B rows apart), else one product
 * per step.  xp rows follow gl_row_at's local layout. */
static void input_projection(const gl_kernels *k, const gl_panel *ih, const gl_seq_job *j,
                             float *xp, size_t ld, void *tmp)
{
    const gl_rows *rw = j->rw;
    const size_t n = rw->n, T = rw->T, b0 = rw->b0, in_w = j->in_w;
    const int time_major = j->in_global && !rw->bf;
    if (time_major && n != rw->B && n != 1) {
        for (size_t t = 0; t < T; t++)            /* rows of one step are contiguous */
            k->gemm(n, j->in + gl_row_at(rw, 1, b0, t) * in_w, in_w, ih, 0, 3,
                    xp + gl_row_at(rw, 0, b0, t) * ld, ld, tmp);
        return;
    }
    const size_t ldx = time_major && n == 1 ? rw->B * in_w : in_w;
    k->gemm(n * T, j->in + gl_row_at(rw, j->in_global, b0, 0) * in_w, ldx, ih, 0, 3, xp, ld, tmp);
}

/* A projected layer's input rows already hold W_ih x + b_ih (an embedding
 * folded into the layer): (D, 3, H) floats a row, copied into the xp
 * layout of direction d for blocks [c0, c1) (xp points at block c0's
 * slots; lanes past H get 0, as a product's would). */
static void copy_projection(const gl_seq_job *j, size_t d, size_t c0, size_t c1, float *xp,
                            size_t ld)
{
    const gl_rows *rw = j->rw;
    const size_t H = (size_t)j->L->u.gru.cfg.hidden_size, in_w = j->in_w;
    for (size_t b = rw->b0; b < rw->b0 + rw->n; b++)
        for (size_t t = 0; t < rw->T; t++) {
            const float *src = j->in + gl_row_at(rw, j->in_global, b, t) * in_w + d * 3 * H;
            float *dst = xp + gl_row_at(rw, 0, b, t) * ld;
            for (size_t blk = c0; blk < c1; blk++)
                for (size_t g = 0; g < 3; g++) {
                    float *o = dst + ((blk - c0) * 3 + g) * GL_LANES;
                    for (size_t l = 0; l < GL_LANES; l++) {
                        const size_t u = blk * GL_LANES + l;
                        o[l] = u < H ? src[g * H + u] : 0.0f;
                    }
                }
        }
}

/* The gates of a row: the default kernels, or with fn (a layer with
 * other activations or a clip) the *_fn ones. */
static inline void gates_after(const gl_kernels *k, const gl_gate_fns *fn, size_t nb,
                               const float *xp, const float *hp, float *h)
{
    if (fn) k->gates_after_fn(nb, xp, hp, h, fn);
    else k->gates_after(nb, xp, hp, h);
}

static inline void gates_rz(const gl_kernels *k, const gl_gate_fns *fn, size_t nb,
                            const float *xp, const float *hp, const float *h, float *rh, float *z)
{
    if (fn) k->gates_rz_fn(nb, xp, hp, h, rh, z, fn);
    else k->gates_rz(nb, xp, hp, h, rh, z);
}

static inline void gates_n(const gl_kernels *k, const gl_gate_fns *fn, size_t nb,
                           const float *xp, const float *hp, const float *z, float *h)
{
    if (fn) k->gates_n_fn(nb, xp, hp, z, h, fn);
    else k->gates_n(nb, xp, hp, z, h);
}

/* Recurrent products of one step for every row (rows that have ended are
 * computed and ignored: simpler than compacting); the reset-before variant
 * takes r and z here and n after the gates. */
static void recurrent_product(const gl_kernels *k, const gl_gru *g, const gl_direction *w,
                              const gl_scratch *sc, size_t n, size_t Hp, size_t ld)
{
    k->gemm(n, sc->h, Hp, &w->hh, 0, g->cfg.reset_after ? 3 : 2, sc->hp, ld, sc->tmp);
}

static void run_direction(const gl_dir *dj)
{
    const gl_seq_job *j = dj->j;
    const gl_gru *g = &j->L->u.gru;
    const gl_direction *w = dj->w;
    const gl_scratch *sc = dj->sc;
    const gl_kernels *k = j->m->k;
    const gl_rows *rw = j->rw;
    const gl_pass *p = j->p;
    const size_t H = (size_t)g->cfg.hidden_size, nb = w->hh.nb, Hp = nb * GL_LANES;
    const size_t ld = 3 * Hp, n = rw->n, T = rw->T, b0 = rw->b0, out_w = (size_t)j->L->out;
    const gl_gate_fns *fn = g->custom ? &g->fns[dj->d] : NULL;

    for (size_t i = 0; i < n; i++) {
        memcpy(sc->h + i * Hp, dj->state + (b0 + i) * H, H * sizeof(float));
        memset(sc->h + i * Hp + H, 0, (Hp - H) * sizeof(float));
    }
    if (!g->cfg.reset_after) memset(sc->rh, 0, n * Hp * sizeof(float));

    /* One row, PyTorch variant: the kernels' step (a block's gates
     * computed while the next block's weights arrive), the state
     * alternating between h and h2, the blocks in alternate order from
     * step to step (from call to call for a stream's single step, whose
     * input product the step computes too, block by block). */
    const int one_row = n == 1 && g->cfg.reset_after && sc->h2;
    const int step_ih = one_row && T == 1 && !g->cfg.projected;

    /* A stream's single step reads W_ih and W_hh once each, in either
     * order: alternating the order between calls starts each step with the
     * matrix the last one ended with, still in L1 (hh_first). */
    const int hh_first = T == 1 && p->hh_first && !one_row;
    if (hh_first) recurrent_product(k, g, w, sc, n, Hp, ld);

    if (g->cfg.projected) copy_projection(j, dj->d, 0, nb, sc->xp, ld);
    else if (!step_ih) input_projection(k, &w->ih, j, sc->xp, ld, sc->tmp);

    if (one_row) {
        const size_t len = gl_length_of(p, b0);
        float *hc = sc->h, *hn = sc->h2;
        gl_step st = { &w->hh, step_ih ? &w->ih : NULL, NULL, NULL, NULL, NULL, sc->hp, NULL,
                       fn, 0, sc->tmp };
        for (size_t s = 0; s < len; s++) {
            const size_t t = dj->reverse ? len - 1 - s : s;
            st.x = st.h = hc;
            st.hn = hn;
            st.xp = sc->xp + gl_row_at(rw, 0, b0, t) * ld;
            if (step_ih) st.xin = j->in + gl_row_at(rw, j->in_global, b0, t) * j->in_w;
            st.down = T == 1 ? p->hh_first : (int)(s & 1);
            k->step_after(&st);
            memcpy(j->out + gl_row_at(rw, j->out_global, b0, t) * out_w + dj->col, hn,
                   H * sizeof(float));
            float *swap = hc;       /* the new state is the next step's old one */
            hc = hn;
            hn = swap;
        }
        memcpy(dj->state + b0 * H, hc, H * sizeof(float));
        return;
    }

    for (size_t s = 0; s < T; s++) {
        if (!hh_first) recurrent_product(k, g, w, sc, n, Hp, ld);
        for (size_t i = 0; i < n; i++) {
            const size_t len = gl_length_of(p, b0 + i);
            if (s >= len) continue;
            const size_t t = dj->reverse ? len - 1 - s : s;
            const float *xp = sc->xp + gl_row_at(rw, 0, b0 + i, t) * ld;
            if (g->cfg.reset_after)
                gates_after(k, fn, nb, xp, sc->hp + i * ld, sc->h + i * Hp);
            else
                gates_rz(k, fn, nb, xp, sc->hp + i * ld, sc->h + i * Hp, sc->rh + i * Hp,
                         sc->z + i * Hp);
        }
        if (!g->cfg.reset_after) {
            k->gemm(n, sc->rh, Hp, &w->hh, 2, 1, sc->hp, ld, sc->tmp);
            for (size_t i = 0; i < n; i++) {
                const size_t len = gl_length_of(p, b0 + i);
                if (s >= len) continue;
                const size_t t = dj->reverse ? len - 1 - s : s;
                gates_n(k, fn, nb, sc->xp + gl_row_at(rw, 0, b0 + i, t) * ld, sc->hp + i * ld,
                        sc->z + i * Hp, sc->h + i * Hp);
            }
        }
        for (size_t i = 0; i < n; i++) {
            const size_t len = gl_length_of(p, b0 + i);
            if (s >= len) continue;
            const size_t t = dj->reverse ? len - 1 - s : s;
            memcpy(j->out + gl_row_at(rw, j->out_global, b0 + i, t) * out_w + dj->col,
                   sc->h + i * Hp, H * sizeof(float));
        }
    }

    for (size_t i = 0; i < n; i++)
        memcpy(dj->state + (b0 + i) * H, sc->h + i * Hp, H * sizeof(float));
}

/* ---- One sequence on two cores ------------------------------------------
 *
 * At batch 1 a step's recurrent product reads all of W_hh; once W_hh
 * outgrows L1 that read sets the pace (tools/bench_step.c's read floor).
 * Two threads then take half the hidden units each: each reads only its
 * half of W_ih and W_hh (blocks [c0, c1) of the panels, contiguous in the
 * panel layout), runs the gates of its units and writes them into the
 * next step's state, and the two meet at a barrier once a step (twice for
 * the reset-before variant, whose n gate needs all of r*h; engine/threads.c:
 * spinning while both run, parking when they do not each have a core).
 * Every output is the same chain of operations as on one thread: same
 * bits. */

/* Below this many bytes of W_hh per step, the barrier (~0.2 us here: a
 * cache line between cores and back) costs about what the halved read
 * saves.  Measured, B=1 T=100 (one thread -> two, best of runs): float32
 * H=96 (108 KiB) 105 -> 109 us, H=128 (192 KiB) 166 -> 153 us; int8
 * H=192 (108 KiB) 115 -> 116 us, H=256 (192 KiB) 181 -> 151 us.  Means of
 * 100 calls from Python: float32 H=256 722 -> 475 us, H=512 10.4 -> 1.75
 * ms (3 MiB of W_hh leave L2; each half fits). */
#define GL_SPLIT_MIN_BYTES ((size_t)160 * 1024)

/* Blocks [c0, c1) of a panel as a panel of their own. */
static gl_panel sub_panel(const gl_panel *p, size_t c0, size_t c1)
{
    gl_panel s = *p;
    if (p->w) s.w = (const unsigned char *)p->w + c0 * (gl_panel_bytes(p) / p->nb);   /* blocks are equal */
    if (p->b) s.b = p->b + c0 * p->G * GL_LANES;
    if (p->scale) s.scale = p->scale + c0 * p->G * GL_LANES;
    s.nb = c1 - c0;
    s.H = (c1 * GL_LANES < p->H ? c1 * GL_LANES : p->H) - c0 * GL_LANES;
    return s;
}

typedef struct gl_split_job {
    const gl_dir *dj;            /* the direction, on task 0's scratch */
    size_t len;                  /* steps of the one row */
    gl_barrier bar;
} gl_split_job;

static void run_split_task(void *ctx, int task)
{
    gl_split_job *sj = ctx;
    const gl_dir *dj = sj->dj;
    const gl_seq_job *j = dj->j;
    const gl_kernels *k = j->m->k;
    const gl_rows *rw = j->rw;
    const gl_scratch *sc = j->sc;
    const int reset_after = j->L->u.gru.cfg.reset_after;
    void *tmp = (task ? j->sc2 : j->sc)->tmp;
    const size_t nb = dj->w->hh.nb, Hp = nb * GL_LANES, ld = 3 * Hp, b0 = rw->b0;
    const size_t H = (size_t)j->L->u.gru.cfg.hidden_size, out_w = (size_t)j->L->out;
    const size_t c0 = task ? nb / 2 : 0, c1 = task ? nb : nb / 2;
    const size_t u0 = c0 * GL_LANES, u1 = c1 * GL_LANES < H ? c1 * GL_LANES : H;
    const size_t x0 = c0 * 3 * GL_LANES;               /* this half's slots in a product row */
    const gl_panel ih = sub_panel(&dj->w->ih, c0, c1), hh = sub_panel(&dj->w->hh, c0, c1);
    float *hbuf[2] = { sc->h, j->sc2->h };
    const gl_gru *g = &j->L->u.gru;
    const gl_gate_fns *fn = g->custom ? &g->fns[dj->d] : NULL;

    /* This half's columns of the input projection, every step. */
    if (j->L->u.gru.cfg.projected) copy_projection(j, dj->d, c0, c1, sc->xp + x0, ld);
    else input_projection(k, &ih, j, sc->xp + x0, ld, tmp);
    /* No wait here: each task reads only its own columns of xp, and the
     * caller filled hbuf[0] before the run. */

    for (size_t s = 0; s < sj->len; s++) {
        const size_t t = dj->reverse ? sj->len - 1 - s : s;
        float *xp = sc->xp + gl_row_at(rw, 0, b0, t) * ld + x0;
        const float *hcur = hbuf[s & 1];
        float *hnext = hbuf[(s + 1) & 1] + u0;
        if (reset_after) {
            const gl_step st = { &hh, NULL, hcur, hcur + u0, NULL, xp, sc->hp + x0, hnext, fn,
                                 (int)(s & 1), tmp };
            k->step_after(&st);
        } else {
            memcpy(hnext, hcur + u0, (c1 - c0) * GL_LANES * sizeof(float));
            k->gemm(1, hcur, Hp, &hh, 0, 2, sc->hp + x0, ld, tmp);
            gates_rz(k, fn, c1 - c0, xp, sc->hp + x0, hnext, sc->rh + u0, sc->z + u0);
            gl_barrier_wait(&sj->bar, task);  /* all of r*h, for the n gate */
            k->gemm(1, sc->rh, Hp, &hh, 2, 1, sc->hp + x0, ld, tmp);
            gates_n(k, fn, c1 - c0, xp, sc->hp + x0, sc->z + u0, hnext);
        }
        if (u1 > u0)
            memcpy(j->out + gl_row_at(rw, j->out_global, b0, t) * out_w + dj->col + u0, hnext,
                   (u1 - u0) * sizeof(float));
        gl_barrier_wait(&sj->bar, task);      /* the whole next state is written */
    }
}

/* Whether a direction's hidden units are worth two threads for one row. */
static int split_pays(const gl_direction *w)
{
    return w->hh.nb >= 2 && gl_panel_bytes(&w->hh) >= GL_SPLIT_MIN_BYTES;
}

/* run_direction for one row on two threads; returns 0 when the direction
 * is better run on one thread (then nothing was done). */
static int run_direction_split(const gl_dir *dj)
{
    const gl_seq_job *j = dj->j;
    const gl_scratch *sc = j->sc, *sc2 = j->sc2;
    const gl_rows *rw = j->rw;
    const size_t H = (size_t)j->L->u.gru.cfg.hidden_size, Hp = dj->w->hh.nb * GL_LANES;
    if (rw->n != 1 || !split_pays(dj->w) || !gl_pool_may_spin(j->pool, 2))
        return 0;
    gl_split_job sj;
    memset(&sj, 0, sizeof sj);
    sj.dj = dj;
    sj.len = gl_length_of(j->p, rw->b0);
    gl_barrier_init(&sj.bar, j->pool, 2);
    memcpy(sc->h, dj->state + rw->b0 * H, H * sizeof(float));
    memset(sc->h + H, 0, (Hp - H) * sizeof(float));
    memset(sc2->h, 0, Hp * sizeof(float));     /* padding lanes stay 0 in both buffers */
    if (!j->L->u.gru.cfg.reset_after) memset(sc->rh, 0, Hp * sizeof(float));
    gl_pool_run(j->pool, 2, run_split_task, &sj);
    gl_barrier_done(&sj.bar);
    memcpy(dj->state + rw->b0 * H, (sj.len & 1 ? sc2->h : sc->h), H * sizeof(float));
    return 1;
}

/* ---- The layer ------------------------------------------------------------ */

/* Direction d of the job, on scratch sc. */
static gl_dir direction(const gl_seq_job *j, int d, const gl_scratch *sc)
{
    const grulite_layer_info *c = &j->L->u.gru.cfg;
    const size_t H = (size_t)c->hidden_size;
    gl_dir dj = { j, &j->L->u.gru.dir[d], sc, (size_t)d * H, j->state + (size_t)d * j->rw->B * H,
                  d || c->reverse, (size_t)d };
    return dj;
}

/* The two directions on two threads: each has its own scratch and writes
 * its own columns of out and its own state. */
static void run_dir_task(void *ctx, int d)
{
    const gl_seq_job *j = ctx;
    const gl_dir dj = direction(j, d, d ? j->sc2 : j->sc);
    run_direction(&dj);
}

static void gru_run(const gl_seq_job *j)
{
    const int D = j->L->u.gru.cfg.num_directions;
    if (D == 2 && j->sc2 && j->pool) {
        gl_seq_job both = *j;                  /* the pool's tasks read it */
        gl_pool_run(j->pool, 2, run_dir_task, &both);
        return;
    }
    for (int d = 0; d < D; d++) {
        const gl_dir dj = direction(j, d, j->sc);
        if (D == 1 && j->sc2 && j->pool && run_direction_split(&dj)) continue;
        run_direction(&dj);
    }
}

static int gru_pair(const gl_layer *L, int32_t batch)
{
    const grulite_layer_info *c = &L->u.gru.cfg;
    if (c->num_directions == 2) return 1;
    return batch == 1 && split_pays(&L->u.gru.dir[0]);
}

const gl_kind gl_kind_gru = {
    GRULITE_LAYER_GRU, 1, 7, gru_to_fields, gru_from_fields, gru_configure, gru_bind,
    gru_tensors, gru_macs, gru_pair, gru_run, NULL,
};
