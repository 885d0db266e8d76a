/* names.c - the one list of every name the library gives a code: error
 * texts, weight dtypes, activations, layer kinds.  Python and the command
 * line ask these functions; they keep no copies. */
#include <string.h>

#include "internal.h"

const char *grulite_strerror(int code)
{
    switch (code) {
    case GRULITE_OK: return "success";
    case GRULITE_E_ARG: return "invalid argument";
    case GRULITE_E_NOMEM: return "out of memory";
    case GRULITE_E_IO: return "cannot read or write the file";
    case GRULITE_E_MAGIC: return "not a grulite model file (bad magic)";
    case GRULITE_E_VERSION: return "unsupported grulite model file version";
    case GRULITE_E_TRUNCATED: return "model file is truncated";
    case GRULITE_E_CHECKSUM: return "model file checksum mismatch (corrupted file)";
    case GRULITE_E_FORMAT: return "malformed model file";
    case GRULITE_E_CONFIG: return "invalid model configuration";
    case GRULITE_E_TENSOR: return "missing tensor or tensor of the wrong dtype or shape";
    case GRULITE_E_SHAPE: return "input shape does not fit the model";
    case GRULITE_E_LENGTHS: return "sequence length outside [1, steps]";
    case GRULITE_E_UNSUPPORTED: return "not supported";
    case GRULITE_E_ALIGN: return "borrowed model buffer is not 64-byte aligned";
    case GRULITE_E_TOO_LARGE: return "size too large";
    case GRULITE_E_BUFFER: return "buffer too small (an output, or the memory given)";
    case GRULITE_E_TOKEN: return "token id outside [0, vocab_size)";
    default: return "unknown error";
    }
}

const char *grulite_version(void)
{
    return GRULITE_VERSION_STRING;
}

/* A code and its name; each table ends with a NULL name. */
typedef struct gl_name {
    int code;
    const char *name;
} gl_name;

static const gl_name gl_dtypes[] = {
    { GRULITE_DTYPE_F32, "float32" },
    { GRULITE_DTYPE_F16, "float16" },
    { GRULITE_DTYPE_I8, "int8" },
    { GRULITE_DTYPE_BF16, "bfloat16" },
    { 0, NULL },
};

static const gl_name gl_activations[] = {
    { GRULITE_ACT_NONE, "none" },
    { GRULITE_ACT_RELU, "relu" },
    { GRULITE_ACT_TANH, "tanh" },
    { GRULITE_ACT_SIGMOID, "sigmoid" },
    { GRULITE_ACT_SOFTMAX, "softmax" },
    { 0, NULL },
};

/* A GRU's f and g: ONNX's eleven, in snake_case. */
static const gl_name gl_gru_activations[] = {
    { GRULITE_ACT_SIGMOID, "sigmoid" },
    { GRULITE_ACT_TANH, "tanh" },
    { GRULITE_ACT_RELU, "relu" },
    { GRULITE_ACT_AFFINE, "affine" },
    { GRULITE_ACT_LEAKY_RELU, "leaky_relu" },
    { GRULITE_ACT_THRESHOLDED_RELU, "thresholded_relu" },
    { GRULITE_ACT_SCALED_TANH, "scaled_tanh" },
    { GRULITE_ACT_HARD_SIGMOID, "hard_sigmoid" },
    { GRULITE_ACT_ELU, "elu" },
    { GRULITE_ACT_SOFTSIGN, "softsign" },
    { GRULITE_ACT_SOFTPLUS, "softplus" },
    { 0, NULL },
};

static const gl_name gl_kinds[] = {
    { GRULITE_LAYER_GRU, "gru" },
    { GRULITE_LAYER_DENSE, "dense" },
    { GRULITE_LAYER_EMBEDDING, "embedding" },
    { GRULITE_LAYER_MERGE, "merge" },
    { 0, NULL },
};

static const gl_name gl_merges[] = {
    { GRULITE_MERGE_CONCAT, "concat" },
    { GRULITE_MERGE_SUM, "sum" },
    { GRULITE_MERGE_MUL, "mul" },
    { GRULITE_MERGE_AVE, "ave" },
    { 0, NULL },
};

static const gl_name *table_of(int table)
{
    switch (table) {
    case GRULITE_NAMES_DTYPE: return gl_dtypes;
    case GRULITE_NAMES_ACTIVATION: return gl_activations;
    case GRULITE_NAMES_LAYER_KIND: return gl_kinds;
    case GRULITE_NAMES_GRU_ACTIVATION: return gl_gru_activations;
    case GRULITE_NAMES_MERGE: return gl_merges;
    default: return NULL;
    }
}

int grulite_name_at(int table, int index, const char **name)
{
    const gl_name *t = table_of(table);
    if (!t || !name || index < 0) return GRULITE_E_ARG;
    for (int i = 0; t[i].name; i++) {
        if (i == index) {
            *name = t[i].name;
            return t[i].code;
        }
    }
    return GRULITE_E_ARG;
}

const char *grulite_name(int table, int code)
{
    const gl_name *t = table_of(table);
    for (int i = 0; t && t[i].name; i++)
        if (t[i].code == code) return t[i].name;
    return NULL;
}

int grulite_code(int table, const char *name)
{
    const gl_name *t = table_of(table);
    for (int i = 0; t && name && t[i].name; i++)
        if (!strcmp(t[i].name, name)) return t[i].code;
    return GRULITE_E_ARG;
}
