/* layers.h - layer kinds.  A kind is one file in this folder (gru.c,
 * dense.c, embedding.c) plus a line in layers.c's table: its record in the file, its
 * checks, its tensors and how it runs.  The format reads and writes
 * records and tensors through these functions; the engine runs the model
 * as a loop over its layers calling them.  Adding a kind: docs/architecture.md. */
#ifndef GRULITE_LAYERS_H
#define GRULITE_LAYERS_H

#include "../model.h"
#include "../engine/engine.h"

/* u32 fields of a layer record after its kind word (format/format.h). */
#define GL_FIELDS 7

/* Bytes of a tensor name in the file's table, NUL included. */
#define GL_NAME_LEN 32

/* One tensor of a layer: a panel's matrix, its biases, or its int8 scales.
 * Matrices are listed with shape (K, G*H), vectors with shape (G*H). */
enum { GL_MATRIX = 0, GL_BIAS = 1, GL_SCALE = 2 };

typedef struct gl_tensor_ref {
    char name[GL_NAME_LEN];
    gl_panel *panel;         /* K, G, H, nb, dtype already set by configure */
    int kind;                /* GL_MATRIX, GL_BIAS or GL_SCALE */
    const float **src;       /* serialize / convert: the layer spec's field holding
                                it in PyTorch's layout (a scale: its matrix), else NULL */
    int kmajor;              /* a matrix source laid out (K, G*H) (an embedding table:
                                one row per input) instead of PyTorch's (G*H, K) */
} gl_tensor_ref;

typedef int (*gl_tensor_fn)(const gl_tensor_ref *ref, void *ctx);

typedef struct gl_kind {
    int32_t code;            /* GRULITE_LAYER_* */
    int sequence;            /* 1: runs over the steps of each sequence (rows (B, T));
                                0: a row layer (the head) */
    int fields;              /* record fields it uses (<= GL_FIELDS); the rest are 0 */

    /* The record's fields <-> the configuration: to_fields fills f (zeros
     * where unused), from_fields reads it (any values: configure checks). */
    void (*to_fields)(const gl_layer *L, uint32_t f[GL_FIELDS]);
    void (*from_fields)(gl_layer *L, const uint32_t f[GL_FIELDS]);

    /* Checks the configuration for an input of `in` features (layer number
     * `index` in messages) and derives the rest: L->in, L->out, L->state
     * and the panels' shapes. */
    int (*configure)(gl_layer *L, int index, int32_t in, char *msg, size_t msg_size);

    /* A loaded model: checks what the layer's tensors configure (values,
     * not weights: a GRU's activation parameters) once they are bound.
     * NULL: nothing to check. */
    int (*bind)(gl_layer *L, int index, char *msg, size_t msg_size);

    /* Calls fn for each tensor in file order, names starting with prefix;
     * stops at and returns the first non-zero. */
    int (*tensors)(gl_layer *L, const char *prefix, gl_tensor_fn fn, void *ctx);

    /* Multiply-adds per row (per step for sequence layers). */
    double (*macs)(const gl_layer *L);

    /* Sequence layers: whether a call over `batch` rows that runs on one
     * task gains from a second thread inside this layer (two directions
     * at once; one sequence's hidden units split).  NULL: never. */
    int (*pair)(const gl_layer *L, int32_t batch);

    /* Sequence layers: runs the job (engine/engine.h). */
    void (*run)(const gl_seq_job *j);

    /* Row layers: out rows = f(in rows); ld* are row strides in floats.
     * raw: leave out the activation (a head's logits, for sampling). */
    void (*rows)(const gl_layer *L, const gl_kernels *k, size_t rows, const float *in,
                 size_t ldi, float *out, size_t ldo, void *tmp, int raw);
} gl_kind;

GL_HIDDEN extern const gl_kind gl_kind_gru;
GL_HIDDEN extern const gl_kind gl_kind_dense;
GL_HIDDEN extern const gl_kind gl_kind_embedding;
GL_HIDDEN extern const gl_kind gl_kind_merge;

/* A merge layer's combination of one row: out[u] = in[u] (op) in[H + u]. */
GL_HIDDEN void gl_merge_row(int32_t mode, size_t H, const float *in, float *out);

/* The kind of a GRULITE_LAYER_* code, or NULL. */
GL_HIDDEN const gl_kind *gl_kind_of(int32_t code);

/* Checks the model's layers (kinds and codes set, fields read) as a whole:
 * the order of kinds, each layer for the width below it, the limits; and
 * fills m->info and the maxima.  info.input_size must be set. */
GL_HIDDEN int gl_model_configure(grulite_model *m, char *msg, size_t msg_size);

#endif /* GRULITE_LAYERS_H */
