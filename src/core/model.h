/* model.h - the loaded model: a sequence of typed layers, read-only after
 * load (llama2.c's Config / Weights split: each layer's configuration and
 * its weight panels sit side by side, scratch lives in engine/engine.h).
 *
 * A layer has a kind (layers/layers.h): the kind knows its record in the
 * file, its checks, its tensors and how to run.  Today's models are an
 * optional embedding (token ids in), one or more GRU layers (sequence
 * layers: rows are (batch, step)), then an optional head of dense layers
 * (row layers: one row per sequence, or per step when asked). */
#ifndef GRULITE_MODEL_H
#define GRULITE_MODEL_H

#include "internal.h"

/* Weights of one direction of a GRU layer, packed for the kernels
 * (kernels/kernels.h): panels with G = 3 gates r, z, n. */
typedef struct gl_direction {
    gl_panel ih;        /* (K = layer input, 3*H): W_ih, b_ih */
    gl_panel hh;        /* (K = H, 3*H): W_hh, b_hh */
    gl_panel h0;        /* G = 1, no matrix: its bias vector b is the learned initial
                           state (H floats, in order), when the layer has one */
} gl_direction;

typedef struct gl_gru {
    grulite_layer_info cfg;
    gl_direction dir[2];     /* [0] forward, [1] reverse (when D == 2) */
    /* Activations other than sigmoid / tanh, or a clip (layers/gru.c):
     * fns[d] is what the kernels' *_fn gates read; the parameters are
     * stored in the tensor l{k}.act, act's bias vector: per direction
     * alpha_f, beta_f, alpha_g, beta_g, then clip (4*D + 1 floats). */
    int custom;
    gl_gate_fns fns[2];
    gl_panel act;
    float act_vals[GL_LANES];     /* those values, for the writer (act_src points here) */
    const float *act_src;
    uint32_t bad_flags;      /* record flag bits that are unknown or inconsistent */
} gl_gru;

typedef struct gl_dense {
    grulite_dense_info cfg;
    gl_panel p;              /* (K = in_features, out_features), G = 1: nn.Linear */
} gl_dense;

typedef struct gl_merge {
    int32_t mode;            /* GRULITE_MERGE_SUM / _MUL / _AVE */
} gl_merge;

typedef struct gl_embedding {
    grulite_embedding_info cfg;
    gl_panel p;              /* (K = vocab_size, width), G = 1: row v of the table is
                                input k = v of the panel */
} gl_embedding;

struct gl_kind;

typedef struct gl_layer {
    const struct gl_kind *kind;
    int32_t in;              /* features in: the model's input or the layer below's out */
    int32_t out;             /* features out */
    int32_t state;           /* floats of recurrent state per batch row (GRU: D*H), else 0 */
    void *spec;              /* while serializing or converting only: the layer's
                                grulite_*_spec (a local copy), else NULL */
    union {
        gl_gru gru;
        gl_dense dense;
        gl_embedding emb;
        gl_merge merge;
    } u;
} gl_layer;

/* Layers a model may have: an embedding, GRU layers each with a merge, head layers. */
#define GL_MAX_MODEL_LAYERS (1 + 2 * GRULITE_MAX_LAYERS + GRULITE_MAX_DENSE)

struct grulite_model {
    grulite_info info;       /* num_layers counts GRU layers, num_dense head layers */
    int32_t n;               /* layers in layer[] */
    int32_t n_seq;           /* the first n_seq layers are sequence layers */
    int32_t first_gru;       /* index of the first GRU layer (1 after an embedding) */
    int32_t top_gru;         /* index of the last GRU layer (a merge may follow it) */
    gl_layer *layer;         /* n layers; a loaded model's follow the struct in one
                                block sized from the image's header (gl_model_bytes) */
    int32_t cap;             /* entries layer[] has room for */
    const gl_kernels *k;     /* chosen at load */
    int32_t max_hidden;      /* max H over GRU layers */
    int32_t max_width;       /* max out over sequence layers */
    int32_t max_dense;       /* max out over row layers (0 if none) */
    int32_t bidirectional;   /* 1 if any layer runs backwards in time (two
                                directions, or reverse): no streaming */
    int32_t quantized;       /* 1 if any layer stores int8 weights */
    int32_t reset_before;    /* 1 if any GRU layer is the reset_after = 0 variant */
    const char *metadata;    /* UTF-8, not NUL-terminated */
    size_t metadata_len;
    const unsigned char *image; /* the validated .grl image */
    size_t image_size;
    int allocated;           /* 1: the library allocated this block (hosted loads);
                                0: it is the caller's (grulite_model_load_mem) */
    void *owned;             /* aligned copy we free, or NULL */
    void *mapping;           /* mmap'd region we unmap, or NULL */
    size_t mapping_size;
};

#endif /* GRULITE_MODEL_H */
