/* test_names.c - the names and checks the C core is the one source of:
 * name tables, kernel-set names, grulite_spec_check, layer kinds. */
#include "harness.h"

void test_names(const fixture *f)
{
    set_ctx("names", NULL);
    const char *name = NULL;
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_DTYPE, GRULITE_DTYPE_F32), "float32"));
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_DTYPE, GRULITE_DTYPE_F16), "float16"));
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_DTYPE, GRULITE_DTYPE_I8), "int8"));
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_DTYPE, GRULITE_DTYPE_BF16), "bfloat16"));
    CHECK(grulite_code(GRULITE_NAMES_DTYPE, "bfloat16") == GRULITE_DTYPE_BF16);
    CHECK(grulite_name(GRULITE_NAMES_DTYPE, 0) == NULL);
    CHECK(grulite_name(GRULITE_NAMES_DTYPE, 99) == NULL);
    CHECK(grulite_name(99, GRULITE_DTYPE_F32) == NULL);
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_ACTIVATION, GRULITE_ACT_SOFTMAX), "softmax"));
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_LAYER_KIND, GRULITE_LAYER_GRU), "gru"));
    CHECK(!strcmp(grulite_name(GRULITE_NAMES_LAYER_KIND, GRULITE_LAYER_DENSE), "dense"));
    CHECK(grulite_code(GRULITE_NAMES_ACTIVATION, "relu") == GRULITE_ACT_RELU);
    CHECK(grulite_code(GRULITE_NAMES_ACTIVATION, "none") == GRULITE_ACT_NONE);
    CHECK(grulite_code(GRULITE_NAMES_DTYPE, "int8") == GRULITE_DTYPE_I8);
    CHECK_RC(grulite_code(GRULITE_NAMES_DTYPE, "float64"), GRULITE_E_ARG);
    CHECK_RC(grulite_code(GRULITE_NAMES_DTYPE, NULL), GRULITE_E_ARG);
    CHECK_RC(grulite_code(0, "int8"), GRULITE_E_ARG);
    /* Walking a table gives every entry once, in order, then stops. */
    static const char *const acts[] = { "none", "relu", "tanh", "sigmoid", "softmax" };
    int i = 0;
    for (int code; (code = grulite_name_at(GRULITE_NAMES_ACTIVATION, i, &name)) >= 0; i++) {
        CHECK(i < 5 && !strcmp(name, acts[i]));
        CHECK(grulite_code(GRULITE_NAMES_ACTIVATION, name) == code);
    }
    CHECK(i == 5);
    CHECK_RC(grulite_name_at(GRULITE_NAMES_DTYPE, -1, &name), GRULITE_E_ARG);
    CHECK_RC(grulite_name_at(GRULITE_NAMES_DTYPE, 0, NULL), GRULITE_E_ARG);

    /* Kernel sets: the library's list is the one the tests know. */
    for (i = 0; i < N_ISAS; i++) CHECK(grulite_isa_name(i) && !strcmp(grulite_isa_name(i), k_isas[i]));
    CHECK(grulite_isa_name(N_ISAS) == NULL && grulite_isa_name(-1) == NULL);
    const char *def = grulite_isa_default();
    CHECK(getenv("GRULITE_ISA") || (def && grulite_isa_supported(def)));

    /* grulite_spec_check: the configuration alone, with a message. */
    set_ctx("spec check", f->name);
    grulite_model_spec spec = fixture_spec(f);
    char msg[160];
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_OK);
    CHECK(msg[0] == '\0');
    grulite_layer_spec layers[GRULITE_MAX_LAYERS];
    memcpy(layers, spec.layers, (size_t)spec.num_layers * sizeof layers[0]);
    for (int l = 0; l < spec.num_layers; l++) {      /* weights are not read */
        layers[l].weight_ih[0] = layers[l].weight_hh[0] = NULL;
        layers[l].weight_ih[1] = layers[l].weight_hh[1] = NULL;
    }
    spec.layers = layers;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_OK);
    layers[0].hidden_size = 0;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_CONFIG);
    CHECK(strstr(msg, "layer 0: hidden_size 0 is outside [1, 1048576]") != NULL);
    CHECK_RC(grulite_spec_check(&spec, msg, 8), GRULITE_E_CONFIG);
    CHECK(strlen(msg) == 7);                          /* cut, still terminated */
    CHECK_RC(grulite_spec_check(&spec, NULL, 0), GRULITE_E_CONFIG);
    layers[0].hidden_size = f->layers[0].hidden_size;
    spec.dtype = 7;
    CHECK_RC(grulite_spec_check(&spec, msg, sizeof msg), GRULITE_E_UNSUPPORTED);
    CHECK(strstr(msg, "dtype 7") != NULL);
    CHECK_RC(grulite_spec_check(NULL, msg, sizeof msg), GRULITE_E_ARG);

    /* Layer kinds in the model's order: GRU layers, then the head. */
    set_ctx("layer kinds", f->name);
    spec = fixture_spec(f);
    grulite_model *m = load_spec(&spec);
    CHECK(m != NULL);
    if (!m) return;
    for (i = 0; i < f->L + f->N; i++)
        CHECK(grulite_model_layer_kind(m, i) == (i < f->L ? GRULITE_LAYER_GRU : GRULITE_LAYER_DENSE));
    CHECK_RC(grulite_model_layer_kind(m, f->L + f->N), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer_kind(m, -1), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer_kind(NULL, 0), GRULITE_E_ARG);
    double macs = 0.0;
    int32_t in = f->I;
    for (int l = 0; l < f->L; l++) {
        const grulite_layer_spec *ls = &f->layers[l];
        macs += ls->num_directions * 3.0 * ls->hidden_size * (in + ls->hidden_size);
        in = ls->num_directions * ls->hidden_size;
    }
    CHECK(grulite_model_macs(m) == macs);
    CHECK(grulite_model_macs(NULL) == 0.0);
    grulite_dense_info di;
    CHECK_RC(grulite_model_dense(m, f->N, &di), GRULITE_E_ARG);
    grulite_layer_info li;
    CHECK_RC(grulite_model_layer(m, f->L, &li), GRULITE_E_ARG);
    CHECK_RC(grulite_model_layer(m, f->L - 1, &li), GRULITE_OK);
    CHECK(li.hidden_size == f->layers[f->L - 1].hidden_size);
    grulite_model_free(m);
}
