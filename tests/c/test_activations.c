/*
 * test_activations.c - GRU layers with other activations than sigmoid /
 * tanh, and ONNX's clip: every pair of the eleven, both reset variants,
 * both directions, with and without clip, on every kernel set, against a
 * double-precision GRU written here from the formulas (independent of the
 * library's own reference kernel); save / load / convert keep them; a
 * stream and two threads give the whole sequence's bits; hostile specs and
 * images are refused.  Merge layers (a bidirectional layer's directions
 * summed, multiplied or averaged) against the layers run apart.
 */
#include "harness.h"

static const int k_acts[] = {
    GRULITE_ACT_SIGMOID, GRULITE_ACT_TANH, GRULITE_ACT_RELU, GRULITE_ACT_AFFINE,
    GRULITE_ACT_LEAKY_RELU, GRULITE_ACT_THRESHOLDED_RELU, GRULITE_ACT_SCALED_TANH,
    GRULITE_ACT_HARD_SIGMOID, GRULITE_ACT_ELU, GRULITE_ACT_SOFTSIGN, GRULITE_ACT_SOFTPLUS,
};
#define N_ACTS ((int)(sizeof k_acts / sizeof k_acts[0]))

/* Parameters each function gets in these tests (0 where it takes none). */
static void act_params(int act, int which, float *alpha, float *beta)
{
    *alpha = *beta = 0.0f;
    switch (act) {
    case GRULITE_ACT_AFFINE: *alpha = which ? 0.7f : 0.4f; *beta = which ? 0.1f : 0.3f; break;
    case GRULITE_ACT_LEAKY_RELU: *alpha = 0.1f; break;
    case GRULITE_ACT_THRESHOLDED_RELU: *alpha = 0.2f; break;
    case GRULITE_ACT_SCALED_TANH: *alpha = 1.3f; *beta = 0.6f; break;
    case GRULITE_ACT_HARD_SIGMOID: *alpha = 0.2f; *beta = 0.5f; break;
    case GRULITE_ACT_ELU: *alpha = 0.9f; break;
    default: break;
    }
}

/* The functions, from ONNX's definitions, in double. */
static double ref_act(int act, double a, double b, double x)
{
    switch (act) {
    case GRULITE_ACT_SIGMOID: return 1.0 / (1.0 + exp(-x));
    case GRULITE_ACT_TANH: return tanh(x);
    case GRULITE_ACT_RELU: return x > 0 ? x : 0;
    case GRULITE_ACT_AFFINE: return a * x + b;
    case GRULITE_ACT_LEAKY_RELU: return x >= 0 ? x : a * x;
    case GRULITE_ACT_THRESHOLDED_RELU: return x > a ? x : 0;
    case GRULITE_ACT_SCALED_TANH: return a * tanh(b * x);
    case GRULITE_ACT_HARD_SIGMOID: { double v = a * x + b; return v < 0 ? 0 : v > 1 ? 1 : v; }
    case GRULITE_ACT_ELU: return x >= 0 ? x : a * (exp(x) - 1);
    case GRULITE_ACT_SOFTSIGN: return x / (1 + fabs(x));
    case GRULITE_ACT_SOFTPLUS: return log(1 + exp(x));
    default: return NAN;
    }
}

static double ref_clip(double x, double c)
{
    return c > 0 ? (x > c ? c : x < -c ? -c : x) : x;
}

static uint64_t a_rng = 0x2545F4914F6CDD1Dull;

static float arand(float k)
{
    a_rng ^= a_rng >> 12;
    a_rng ^= a_rng << 25;
    a_rng ^= a_rng >> 27;
    const uint32_t r = (uint32_t)((a_rng * 0x2545F4914F6CDD1Dull) >> 40);
    return -k + 2.0f * k * ((float)r / 16777216.0f);
}

/* One layer of I inputs, H units, D directions; weights per direction. */
typedef struct act_model {
    int I, H, D, reset_after;
    float *w_ih[2], *w_hh[2], *b_ih[2], *b_hh[2];
    grulite_layer_spec L;
} act_model;

static void act_model_init(act_model *am, int I, int H, int D, int reset_after)
{
    memset(am, 0, sizeof *am);
    am->I = I; am->H = H; am->D = D; am->reset_after = reset_after;
    for (int d = 0; d < D; d++) {
        am->w_ih[d] = xmalloc((size_t)3 * H * I * sizeof(float));
        am->w_hh[d] = xmalloc((size_t)3 * H * H * sizeof(float));
        am->b_ih[d] = xmalloc((size_t)3 * H * sizeof(float));
        am->b_hh[d] = xmalloc((size_t)3 * H * sizeof(float));
        for (int i = 0; i < 3 * H * I; i++) am->w_ih[d][i] = arand(0.4f);
        for (int i = 0; i < 3 * H * H; i++) am->w_hh[d][i] = arand(0.25f);
        for (int i = 0; i < 3 * H; i++) { am->b_ih[d][i] = arand(0.2f); am->b_hh[d][i] = arand(0.2f); }
        am->L.weight_ih[d] = am->w_ih[d];
        am->L.weight_hh[d] = am->w_hh[d];
        am->L.bias_ih[d] = am->b_ih[d];
        am->L.bias_hh[d] = am->b_hh[d];
    }
    am->L.hidden_size = H;
    am->L.num_directions = D;
    am->L.reset_after = reset_after;
    am->L.has_bias = 1;
}

static void act_model_free(act_model *am)
{
    for (int d = 0; d < am->D; d++) {
        free(am->w_ih[d]); free(am->w_hh[d]); free(am->b_ih[d]); free(am->b_hh[d]);
    }
}

static grulite_model_spec act_spec(act_model *am, int dtype)
{
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = am->I;
    spec.num_layers = 1;
    spec.layers = &am->L;
    spec.batch_first = 1;
    spec.dtype = dtype;
    return spec;
}

/* y (B, T, D*H) of the layer in double, from the formulas (ONNX's GRU with
 * clip; PyTorch's gate order r, z, n). */
static void ref_forward(const act_model *am, const float *x, int B, int T, float *y)
{
    const grulite_layer_spec *L = &am->L;
    const int I = am->I, H = am->H, D = am->D;
    double *h = xmalloc((size_t)H * sizeof(double)), *hn = xmalloc((size_t)H * sizeof(double));
    double *r = xmalloc((size_t)H * sizeof(double)), *z = xmalloc((size_t)H * sizeof(double));
    for (int d = 0; d < D; d++) {
        const int f = L->activation_f[d] ? L->activation_f[d] : GRULITE_ACT_SIGMOID;
        const int g = L->activation_g[d] ? L->activation_g[d] : GRULITE_ACT_TANH;
        const double fa = L->alpha_f[d], fb = L->beta_f[d], ga = L->alpha_g[d], gb = L->beta_g[d];
        const double c = L->clip;
        for (int b = 0; b < B; b++) {
            for (int u = 0; u < H; u++) h[u] = 0.0;
            for (int s = 0; s < T; s++) {
                const int t = d ? T - 1 - s : s;
                const float *xt = x + ((size_t)b * T + t) * I;
                for (int u = 0; u < H; u++) {
                    double ar = am->b_ih[d][u] + am->b_hh[d][u];
                    double az = am->b_ih[d][H + u] + am->b_hh[d][H + u];
                    for (int k = 0; k < I; k++) {
                        ar += (double)am->w_ih[d][(size_t)u * I + k] * xt[k];
                        az += (double)am->w_ih[d][(size_t)(H + u) * I + k] * xt[k];
                    }
                    for (int k = 0; k < H; k++) {
                        ar += (double)am->w_hh[d][(size_t)u * H + k] * h[k];
                        az += (double)am->w_hh[d][(size_t)(H + u) * H + k] * h[k];
                    }
                    r[u] = ref_act(f, fa, fb, ref_clip(ar, c));
                    z[u] = ref_act(f, fa, fb, ref_clip(az, c));
                }
                for (int u = 0; u < H; u++) {
                    double xn = am->b_ih[d][2 * H + u], hh = am->b_hh[d][2 * H + u];
                    for (int k = 0; k < I; k++) xn += (double)am->w_ih[d][(size_t)(2 * H + u) * I + k] * xt[k];
                    for (int k = 0; k < H; k++)
                        hh += (double)am->w_hh[d][(size_t)(2 * H + u) * H + k] *
                              (am->reset_after ? h[k] : r[k] * h[k]);
                    const double pre = am->reset_after ? xn + r[u] * hh : xn + hh;
                    const double n = ref_act(g, ga, gb, ref_clip(pre, c));
                    hn[u] = (1 - z[u]) * n + z[u] * h[u];
                }
                for (int u = 0; u < H; u++) {
                    h[u] = hn[u];
                    y[((size_t)b * T + t) * D * H + (size_t)d * H + u] = (float)h[u];
                }
            }
        }
    }
    free(h); free(hn); free(r); free(z);
}

static int run_model(const grulite_model *m, grulite_workspace *ws, const float *x, int B, int T,
                     float *y)
{
    grulite_run run;
    memset(&run, 0, sizeof run);
    run.batch = B;
    run.steps = T;
    run.batch_first = 1;
    run.x = x;
    run.y = y;
    return grulite_forward(m, ws, &run);
}

/* Largest |a - b| / max(1, |b|). */
static double rel_diff(const float *a, const float *b, size_t n)
{
    double mx = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double s = fabs((double)b[i]) > 1.0 ? fabs((double)b[i]) : 1.0;
        const double e = fabs((double)a[i] - (double)b[i]) / s;
        if (!(e <= mx)) mx = e;          /* NaN counts as the largest */
    }
    return mx;
}

static void set_fns(grulite_layer_spec *L, int d, int f, int g)
{
    L->activation_f[d] = f;
    L->activation_g[d] = g;
    act_params(f, 0, &L->alpha_f[d], &L->beta_f[d]);
    act_params(g, 1, &L->alpha_g[d], &L->beta_g[d]);
}

/* Every (f, g) pair x reset variant x clip; direction 1 gets the pair
 * shifted by one, so the two directions differ.  GRULITE_TEST_QUICK (set
 * for the runs under valgrind and the shared-library copy of the tests)
 * takes every seventh pair: each f and each g still meets several. */
static void test_pairs(void)
{
    const char *quick = getenv("GRULITE_TEST_QUICK");
    const int stride = quick && *quick && strcmp(quick, "0") ? 7 : 1;
    const int I = 5, H = 20, B = 3, T = 6;
    float *x = xmalloc((size_t)B * T * I * sizeof(float));
    for (int i = 0; i < B * T * I; i++) x[i] = arand(1.5f);
    float *y = xmalloc((size_t)B * T * 2 * H * sizeof(float));
    float *want = xmalloc((size_t)B * T * 2 * H * sizeof(float));
    grulite_workspace *ws = grulite_workspace_new();
    double worst[N_ISAS] = { 0 };
    int runs = 0;
    for (int ra = 0; ra < 2; ra++) {
        act_model am;
        act_model_init(&am, I, H, 2, ra);
        grulite_model_spec spec = act_spec(&am, GRULITE_DTYPE_F32);
        for (int fi = 0; fi < N_ACTS; fi++)
            for (int gi = 0; gi < N_ACTS; gi++)
                for (int ci = 0; ci < 2; ci++) {
                    if ((fi * N_ACTS + gi) % stride) continue;
                    char name[96];
                    snprintf(name, sizeof name, "f %s g %s reset_after %d clip %d",
                             grulite_name(GRULITE_NAMES_GRU_ACTIVATION, k_acts[fi]),
                             grulite_name(GRULITE_NAMES_GRU_ACTIVATION, k_acts[gi]), ra, ci);
                    set_ctx("activations", name);
                    set_fns(&am.L, 0, k_acts[fi], k_acts[gi]);
                    set_fns(&am.L, 1, k_acts[(fi + 1) % N_ACTS], k_acts[(gi + 1) % N_ACTS]);
                    am.L.clip = ci ? 0.9f : 0.0f;
                    ref_forward(&am, x, B, T, want);
                    grulite_model *m = load_spec(&spec);
                    if (!m) continue;
                    for (int k = 0; k < N_ISAS; k++) {
                        if (!isa_tested(k_isas[k])) continue;
                        CHECK_RC(grulite_model_set_isa(m, k_isas[k]), GRULITE_OK);
                        CHECK_RC(run_model(m, ws, x, B, T, y), GRULITE_OK);
                        const double e = rel_diff(y, want, (size_t)B * T * 2 * H);
                        CHECK(e <= 2e-5);
                        if (!(e <= worst[k])) worst[k] = e;
                    }
                    runs++;
                    grulite_model_free(m);
                }
        act_model_free(&am);
    }
    printf("activations: %d models (%s, 2 variants, clip or not, 2 directions);"
           " max error / max(1, |y|):", runs, stride > 1 ? "every 7th pair" : "11 x 11 pairs");
    for (int k = 0; k < N_ISAS; k++)
        if (isa_tested(k_isas[k])) printf(" %s %.2g", k_isas[k], worst[k]);
    printf("\n");
    grulite_workspace_free(ws);
    free(x); free(y); free(want);
}

/* The configuration survives save / load and dtype conversion; a stream,
 * a single row on two threads and the whole batch give the same bits. */
static void test_roundtrip_and_bits(void)
{
    const int I = 7, H = 128, B = 2, T = 9;
    act_model am;
    act_model_init(&am, I, H, 1, 1);
    set_fns(&am.L, 0, GRULITE_ACT_HARD_SIGMOID, GRULITE_ACT_RELU);
    am.L.clip = 3.0f;
    grulite_model_spec spec = act_spec(&am, GRULITE_DTYPE_F32);
    set_ctx("activations", "info, save / load, convert");
    grulite_model *m = load_spec(&spec);
    float *x = xmalloc((size_t)B * T * I * sizeof(float));
    for (int i = 0; i < B * T * I; i++) x[i] = arand(1.0f);
    float *y = xmalloc((size_t)B * T * H * sizeof(float)), *y2 = xmalloc((size_t)B * T * H * sizeof(float));
    float *want = xmalloc((size_t)B * T * H * sizeof(float));
    ref_forward(&am, x, B, T, want);
    grulite_workspace *ws = grulite_workspace_new();
    if (m) {
        grulite_layer_info li;
        CHECK_RC(grulite_model_layer(m, 0, &li), GRULITE_OK);
        CHECK(li.activation_f[0] == GRULITE_ACT_HARD_SIGMOID && li.activation_g[0] == GRULITE_ACT_RELU);
        CHECK(li.alpha_f[0] == 0.2f && li.beta_f[0] == 0.5f && li.clip == 3.0f);
        CHECK(li.activation_f[1] == 0 && li.alpha_g[0] == 0.0f);
        CHECK_RC(run_model(m, ws, x, B, T, y), GRULITE_OK);
        CHECK(rel_diff(y, want, (size_t)B * T * H) <= 2e-5);
        /* Every dtype keeps the functions (the weights round). */
        for (int dt = GRULITE_DTYPE_F32; dt <= GRULITE_DTYPE_I8; dt++) {
            size_t need = 0, got = 0;
            CHECK_RC(grulite_model_convert(m, dt, NULL, 0, &need), GRULITE_OK);
            unsigned char *buf = xalloc_aligned(need ? need : 64);
            CHECK_RC(grulite_model_convert(m, dt, buf, need, &got), GRULITE_OK);
            grulite_model *q = NULL;
            CHECK_RC(grulite_model_load_buffer(buf, got, 0, &q, NULL, 0), GRULITE_OK);
            if (q) {
                CHECK_RC(grulite_model_layer(q, 0, &li), GRULITE_OK);
                CHECK(li.activation_f[0] == GRULITE_ACT_HARD_SIGMOID && li.clip == 3.0f);
                CHECK_RC(run_model(q, ws, x, B, T, y2), GRULITE_OK);
                CHECK(rel_diff(y2, want, (size_t)B * T * H) <= (dt == GRULITE_DTYPE_F32 ? 2e-5 : 3e-2));
                if (dt == GRULITE_DTYPE_F32) CHECK(memcmp(y, y2, (size_t)B * T * H * sizeof(float)) == 0);
            }
            grulite_model_free(q);
            free(buf);
        }
        /* A stream, step by step, and each row alone on two threads. */
        set_ctx("activations", "stream and threads, same bits");
        grulite_stream *st = NULL;
        CHECK_RC(grulite_stream_new(m, B, &st), GRULITE_OK);
        float *xt = xmalloc((size_t)B * I * sizeof(float)), *yt = xmalloc((size_t)B * H * sizeof(float));
        int same = 1;
        for (int t = 0; st && t < T; t++) {
            for (int b = 0; b < B; b++)
                memcpy(xt + (size_t)b * I, x + ((size_t)b * T + t) * I, (size_t)I * sizeof(float));
            CHECK_RC(grulite_stream_step(st, xt, 1, yt, NULL), GRULITE_OK);
            for (int b = 0; b < B; b++)
                same &= memcmp(yt + (size_t)b * H, y + ((size_t)b * T + t) * H, (size_t)H * sizeof(float)) == 0;
        }
        CHECK(same);
        grulite_stream_free(st);
        free(xt); free(yt);
        grulite_workspace_set_threads(ws, 2);
        for (int b = 0; b < B; b++) {
            CHECK_RC(run_model(m, ws, x + (size_t)b * T * I, 1, T, y2), GRULITE_OK);
            CHECK(memcmp(y2, y + (size_t)b * T * H, (size_t)T * H * sizeof(float)) == 0);
        }
    }
    grulite_workspace_free(ws);
    grulite_model_free(m);
    free(x); free(y); free(y2); free(want);
    act_model_free(&am);
}

/* Bad specs: unknown codes, non-finite or stray parameters, bad clips. */
static void test_bad_specs(void)
{
    act_model am;
    act_model_init(&am, 3, 4, 2, 1);
    grulite_model_spec spec = act_spec(&am, GRULITE_DTYPE_F32);
    char msg[256];
    const struct { int f, g; float fa, fb, ga, clip; const char *what; } bad[] = {
        { 13, 0, 0, 0, 0, 0, "unknown f" },
        { 0, -1, 0, 0, 0, 0, "unknown g" },
        { GRULITE_ACT_SOFTMAX, 0, 0, 0, 0, 0, "softmax (a head's)" },
        { GRULITE_ACT_AFFINE, 0, NAN, 0, 0, 0, "NaN alpha" },
        { GRULITE_ACT_AFFINE, 0, 1, INFINITY, 0, 0, "infinite beta" },
        { GRULITE_ACT_RELU, 0, 0.5f, 0, 0, 0, "alpha for relu" },
        { GRULITE_ACT_LEAKY_RELU, 0, 0.1f, 0.2f, 0, 0, "beta for leaky relu" },
        { 0, GRULITE_ACT_TANH, 0, 0, 0.3f, 0, "alpha for tanh" },
        { 0, 0, 0, 0, 0, -1.0f, "negative clip" },
        { 0, 0, 0, 0, 0, NAN, "NaN clip" },
        { 0, 0, 0, 0, 0, INFINITY, "infinite clip" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        set_ctx("activations: bad spec", bad[i].what);
        memset(am.L.activation_f, 0, sizeof am.L.activation_f);
        memset(am.L.activation_g, 0, sizeof am.L.activation_g);
        am.L.activation_f[1] = bad[i].f;
        am.L.activation_g[1] = bad[i].g;
        am.L.alpha_f[1] = bad[i].fa;
        am.L.beta_f[1] = bad[i].fb;
        am.L.alpha_g[1] = bad[i].ga;
        am.L.clip = bad[i].clip;
        msg[0] = 0;
        CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
        CHECK(strstr(msg, "layer 0") != NULL);
        size_t n = 0;
        CHECK(grulite_model_serialize(&spec, NULL, 0, &n) == GRULITE_E_CONFIG);
    }
    act_model_free(&am);
}

/* Offset of a tensor's data in an image, by name; 0 when absent. */
static size_t tensor_offset(const unsigned char *img, const char *name)
{
    const uint32_t n_layers = rd32(img + 36), n_tensors = rd32(img + 44);
    const unsigned char *t = img + 64 + (size_t)n_layers * 32;
    for (uint32_t i = 0; i < n_tensors; i++, t += 64)
        if (!strcmp((const char *)t, name)) return (size_t)rd32(t + 56);
    return 0;
}

/* Bad images: the flags and the parameter tensor are checked at load. */
static void test_bad_images(void)
{
    act_model am;
    act_model_init(&am, 3, 4, 1, 1);
    set_fns(&am.L, 0, GRULITE_ACT_ELU, GRULITE_ACT_SCALED_TANH);
    am.L.clip = 2.0f;
    grulite_model_spec spec = act_spec(&am, GRULITE_DTYPE_F32);
    size_t size = 0;
    unsigned char *img = serialize(&spec, &size);
    if (!img) { act_model_free(&am); return; }
    unsigned char *bad = xalloc_aligned(size);
    const size_t flags_at = 64 + 4 + 4 * 6;            /* record 0, field 6 */
    const size_t act_at = tensor_offset(img, "l0.act");
    CHECK(act_at != 0);
    CHECK(rd32(img + flags_at) == (4u | (uint32_t)GRULITE_ACT_ELU << 4 |
                                   (uint32_t)GRULITE_ACT_SCALED_TANH << 8));
    char msg[256];
    grulite_model *m = NULL;
    set_ctx("activations: image", "as written");
    CHECK_RC(grulite_model_load_buffer(img, size, 0, &m, msg, sizeof msg), GRULITE_OK);
    grulite_model_free(m);
    const struct { uint32_t flags; int act_slot; float act_val; int want; const char *what; } cases[] = {
        { 4u | 10u << 4, -1, 0, GRULITE_E_CONFIG, "a zero g code with flag 4" },
        { 4u | 14u << 4 | 8u << 8, -1, 0, GRULITE_E_CONFIG, "code 14" },
        { 4u | 10u << 4 | 8u << 8 | 3u << 12, -1, 0, GRULITE_E_CONFIG, "codes for a direction it lacks" },
        { 10u << 4 | 8u << 8, -1, 0, GRULITE_E_CONFIG, "codes without flag 4" },
        { 8u | 4u | 10u << 4 | 8u << 8, -1, 0, GRULITE_E_CONFIG, "unknown flag bit 3" },
        { 0, -1, 0, GRULITE_E_TENSOR, "flag 4 cleared: l0.act is one tensor too many" },
        { 4u | 10u << 4 | 8u << 8, 0, NAN, GRULITE_E_CONFIG, "NaN alpha in l0.act" },
        { 4u | 10u << 4 | 8u << 8, 4, -1.0f, GRULITE_E_CONFIG, "negative clip in l0.act" },
        { 4u | 10u << 4 | 8u << 8, 4, INFINITY, GRULITE_E_CONFIG, "infinite clip in l0.act" },
        { 4u | 10u << 4 | 8u << 8, 1, 0.5f, GRULITE_E_CONFIG, "a beta for elu in l0.act" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        set_ctx("activations: bad image", cases[i].what);
        memcpy(bad, img, size);
        wr32(bad + flags_at, cases[i].flags);
        if (cases[i].act_slot >= 0) memcpy(bad + act_at + 4 * (size_t)cases[i].act_slot, &cases[i].act_val, 4);
        reseal(bad, size);
        m = NULL;
        msg[0] = 0;
        CHECK_RC(grulite_model_load_buffer(bad, size, 0, &m, msg, sizeof msg), cases[i].want);
        CHECK(m == NULL && msg[0] != 0);
        grulite_model_free(m);
    }
    free(bad);
    free(img);
    act_model_free(&am);
}

static void test_merges(void);

void test_activations(void)
{
    test_pairs();
    test_roundtrip_and_bits();
    test_bad_specs();
    test_bad_images();
    test_merges();
}

/* ---- Merge layers: a bidirectional layer's directions summed, multiplied
 * or averaged (Keras' merge_mode) ------------------------------------------ */

/* Model A (bidirectional layer 0 merged by `mode`, a two-direction layer 1
 * merged by `mode2`, a head on the merged final states) against the plain
 * layers run apart and merged here: the same operations, so the same bits
 * for y; the head within rounding. */
static void test_merge_mode(int mode, int mode2)
{
    const int I = 4, H = 6, B = 3, T = 5, O = 3;
    act_model a0, a1;
    act_model_init(&a0, I, H, 2, 1);
    act_model_init(&a1, H, H, 2, 0);
    float *wd = xmalloc((size_t)O * H * sizeof(float)), *bd = xmalloc((size_t)O * sizeof(float));
    for (int i = 0; i < O * H; i++) wd[i] = arand(0.5f);
    for (int i = 0; i < O; i++) bd[i] = arand(0.5f);
    grulite_layer_spec ls[2] = { a0.L, a1.L };
    ls[0].merge = mode;
    ls[1].merge = mode2;
    grulite_dense_spec ds;
    memset(&ds, 0, sizeof ds);
    ds.out_features = O;
    ds.activation = GRULITE_ACT_NONE;
    ds.has_bias = 1;
    ds.weight = wd;
    ds.bias = bd;
    grulite_model_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.input_size = I;
    spec.num_layers = 2;
    spec.layers = ls;
    spec.num_dense = 1;
    spec.dense = &ds;
    spec.batch_first = 1;
    spec.head_from_state = 1;
    spec.dtype = GRULITE_DTYPE_F32;
    char name[64];
    snprintf(name, sizeof name, "merge %s then %s", grulite_name(GRULITE_NAMES_MERGE, mode),
             grulite_name(GRULITE_NAMES_MERGE, mode2));
    set_ctx("merge", name);
    grulite_model *m = load_spec(&spec);
    /* The layers apart: layer 0 alone, merged here, into layer 1 alone. */
    grulite_model_spec s0 = act_spec(&a0, GRULITE_DTYPE_F32), s1 = act_spec(&a1, GRULITE_DTYPE_F32);
    s1.input_size = H;
    grulite_model *m0 = load_spec(&s0), *m1 = load_spec(&s1);
    const int32_t lengths[3] = { 5, 3, 1 };
    float *x = xmalloc((size_t)B * T * I * sizeof(float));
    for (int i = 0; i < B * T * I; i++) x[i] = arand(1.0f);
    float *y0 = xcalloc((size_t)B * T * 2 * H, sizeof(float)), *x1 = xcalloc((size_t)B * T * H, sizeof(float));
    float *y1 = xcalloc((size_t)B * T * 2 * H, sizeof(float)), *want = xcalloc((size_t)B * T * H, sizeof(float));
    float *hn1 = xmalloc((size_t)2 * B * H * sizeof(float));
    float *y = xmalloc((size_t)B * T * H * sizeof(float)), *head = xmalloc((size_t)B * O * sizeof(float));
    grulite_workspace *ws = grulite_workspace_new();
    if (m && m0 && m1) {
        grulite_info info;
        CHECK_RC(grulite_model_info(m, &info), GRULITE_OK);
        CHECK(info.output_size == H && info.num_layers == 2 && info.state_size == 4 * H);
        CHECK(grulite_model_layer_kind(m, 1) == GRULITE_LAYER_MERGE);
        grulite_layer_info li;
        CHECK_RC(grulite_model_layer(m, 0, &li), GRULITE_OK);
        CHECK(li.merge == mode);
        grulite_run run;
        memset(&run, 0, sizeof run);
        run.batch = B; run.steps = T; run.batch_first = 1; run.lengths = lengths;
        run.x = x; run.y = y0;
        CHECK_RC(grulite_forward(m0, ws, &run), GRULITE_OK);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < lengths[b]; t++) {
                const float *r = y0 + ((size_t)b * T + t) * 2 * H;
                for (int u = 0; u < H; u++)
                    x1[((size_t)b * T + t) * H + u] = mode == GRULITE_MERGE_SUM ? r[u] + r[H + u]
                        : mode == GRULITE_MERGE_MUL ? r[u] * r[H + u] : (r[u] + r[H + u]) * 0.5f;
            }
        run.x = x1; run.y = y1; run.h_n = hn1;
        CHECK_RC(grulite_forward(m1, ws, &run), GRULITE_OK);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < lengths[b]; t++) {
                const float *r = y1 + ((size_t)b * T + t) * 2 * H;
                for (int u = 0; u < H; u++)
                    want[((size_t)b * T + t) * H + u] = mode2 == GRULITE_MERGE_SUM ? r[u] + r[H + u]
                        : mode2 == GRULITE_MERGE_MUL ? r[u] * r[H + u] : (r[u] + r[H + u]) * 0.5f;
            }
        run.x = x; run.y = y; run.h_n = NULL; run.head = head;
        CHECK_RC(grulite_forward(m, ws, &run), GRULITE_OK);
        CHECK(memcmp(y, want, (size_t)B * T * H * sizeof(float)) == 0);
        /* The head reads the merged final states of layer 1. */
        double err = 0.0;
        for (int b = 0; b < B; b++) {
            for (int o = 0; o < O; o++) {
                double acc = bd[o];
                for (int u = 0; u < H; u++) {
                    const double f = hn1[(size_t)b * H + u], r = hn1[((size_t)B + b) * H + u];
                    const double v = mode2 == GRULITE_MERGE_SUM ? f + r
                                   : mode2 == GRULITE_MERGE_MUL ? f * r : (f + r) * 0.5;
                    acc += wd[(size_t)o * H + u] * v;
                }
                const double e = fabs(acc - head[(size_t)b * O + o]);
                if (e > err) err = e;
            }
        }
        CHECK(err < 1e-5);
        /* Every dtype keeps the merges. */
        size_t need = 0, got = 0;
        CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F16, NULL, 0, &need), GRULITE_OK);
        unsigned char *buf = xalloc_aligned(need ? need : 64);
        CHECK_RC(grulite_model_convert(m, GRULITE_DTYPE_F16, buf, need, &got), GRULITE_OK);
        grulite_model *q = NULL;
        CHECK_RC(grulite_model_load_buffer(buf, got, 0, &q, NULL, 0), GRULITE_OK);
        if (q) {
            CHECK_RC(grulite_model_layer(q, 1, &li), GRULITE_OK);
            CHECK(li.merge == mode2);
        }
        grulite_model_free(q);
        free(buf);
    }
    grulite_workspace_free(ws);
    grulite_model_free(m); grulite_model_free(m0); grulite_model_free(m1);
    free(x); free(y0); free(x1); free(y1); free(want); free(hn1); free(y); free(head);
    free(wd); free(bd);
    act_model_free(&a0);
    act_model_free(&a1);
}

static void test_merge_errors(void)
{
    act_model am;
    act_model_init(&am, 3, 4, 1, 1);
    grulite_model_spec spec = act_spec(&am, GRULITE_DTYPE_F32);
    char msg[256];
    set_ctx("merge", "one direction");
    am.L.merge = GRULITE_MERGE_SUM;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    CHECK(strstr(msg, "two-direction") != NULL);
    act_model_free(&am);
    act_model_init(&am, 3, 4, 2, 1);
    spec = act_spec(&am, GRULITE_DTYPE_F32);
    set_ctx("merge", "unknown mode");
    am.L.merge = 4;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    am.L.merge = -1;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    /* An image whose merge record follows nothing it can merge. */
    set_ctx("merge", "image: a merge first, or after a merge");
    am.L.merge = GRULITE_MERGE_AVE;
    size_t size = 0;
    unsigned char *img = serialize(&spec, &size);
    if (img) {
        CHECK(rd32(img + 64 + 32) == GRULITE_LAYER_MERGE && rd32(img + 64 + 36) == GRULITE_MERGE_AVE);
        unsigned char *bad = xalloc_aligned(size);
        grulite_model *m = NULL;
        memcpy(bad, img, size);
        wr32(bad + 64 + 36, 0);                           /* mode concat: no merge */
        reseal(bad, size);
        CHECK_RC(grulite_model_load_buffer(bad, size, 0, &m, msg, sizeof msg), GRULITE_E_CONFIG);
        memcpy(bad, img, size);
        wr32(bad + 64 + 36 + 4, 1);                       /* an unused field */
        reseal(bad, size);
        CHECK_RC(grulite_model_load_buffer(bad, size, 0, &m, msg, sizeof msg), GRULITE_E_FORMAT);
        free(bad);
        free(img);
    }
    act_model_free(&am);
}

static void test_merges(void)
{
    const int modes[3] = { GRULITE_MERGE_SUM, GRULITE_MERGE_MUL, GRULITE_MERGE_AVE };
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 3; k++) test_merge_mode(modes[i], modes[k]);
    test_merge_errors();
}
