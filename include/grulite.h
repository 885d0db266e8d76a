/*
 * grulite.h - a small, fast GRU inference engine.  The one public header.
 *
 * Usage (error handling shortened; every call returns 0 or a negative
 * GRULITE_E_* code, turned into text by grulite_strerror()):
 *
 *     #include "grulite.h"
 *
 *     grulite_model *model = NULL;
 *     int rc = grulite_model_load("model.grl", &model, NULL, 0);  // mmap + validate
 *     if (rc < 0) { fprintf(stderr, "%s\n", grulite_strerror(rc)); return 1; }
 *
 *     grulite_info info;
 *     grulite_model_info(model, &info);
 *
 *     // Whole sequences: x is (B, T, input_size) float32, batch-first.
 *     grulite_workspace *ws = grulite_workspace_new();  // scratch, one per thread
 *     grulite_run run = {0};
 *     run.batch = B; run.steps = T; run.batch_first = 1;
 *     run.x = x;                      // B*T*info.input_size floats
 *     run.y = y;                      // B*T*info.output_size floats, or NULL
 *     run.h_n = h_n;                  // info.state_size * B floats, or NULL
 *     rc = grulite_forward(model, ws, &run);
 *
 *     // Streaming, one step at a time: same numbers as the whole sequence.
 *     grulite_stream *s = NULL;
 *     rc = grulite_stream_new(model, 1, &s);
 *     rc = grulite_stream_step(s, x_t, 1, y_t, NULL);
 *
 *     grulite_stream_free(s);
 *     grulite_workspace_free(ws);
 *     grulite_model_free(model);      // after every stream made from it
 *
 * Semantics are those of torch.nn.GRU (gates r, z, n; h' = (1-z)*n + z*h),
 * with the reset_after=0 variant of the original GRU paper / ONNX
 * linear_before_reset=0 as a per-layer flag.
 *
 * Threads: a loaded model is read-only and may be shared by any number of
 * threads.  A workspace or a stream is used by one thread at a time.
 * The library keeps no global mutable state, never prints and never exits.
 */
#ifndef GRULITE_H
#define GRULITE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(GRULITE_SHARED)
#  if defined(GRULITE_BUILD)
#    define GRULITE_API __declspec(dllexport)
#  else
#    define GRULITE_API __declspec(dllimport)
#  endif
#elif defined(__GNUC__) && __GNUC__ >= 4
#  define GRULITE_API __attribute__((visibility("default")))
#else
#  define GRULITE_API
#endif

#define GRULITE_VERSION_MAJOR 0
#define GRULITE_VERSION_MINOR 1
#define GRULITE_VERSION_PATCH 0
#define GRULITE_VERSION_STRING "0.1.0"

/* Version of the .grl model file format this library reads and writes. */
#define GRULITE_FORMAT_VERSION 3   /* version 2 files are still read */

/* ---- Error codes (0 is success) ------------------------------------- */

#define GRULITE_OK              0
#define GRULITE_E_ARG         (-1)  /* NULL pointer or out-of-range argument */
#define GRULITE_E_NOMEM       (-2)  /* allocation failed */
#define GRULITE_E_IO          (-3)  /* cannot open, stat, map or read a file */
#define GRULITE_E_MAGIC       (-4)  /* not a .grl file (bad magic) */
#define GRULITE_E_VERSION     (-5)  /* .grl format version not supported */
#define GRULITE_E_TRUNCATED   (-6)  /* file shorter than its header says */
#define GRULITE_E_CHECKSUM    (-7)  /* checksum mismatch: file corrupted */
#define GRULITE_E_FORMAT      (-8)  /* inconsistent header, table or offset */
#define GRULITE_E_CONFIG      (-9)  /* invalid model configuration */
#define GRULITE_E_TENSOR     (-10)  /* missing tensor or wrong dtype / shape */
#define GRULITE_E_SHAPE      (-11)  /* run arguments do not fit the model */
#define GRULITE_E_LENGTHS    (-12)  /* a sequence length outside [1, steps] */
#define GRULITE_E_UNSUPPORTED (-13) /* valid request this build cannot do */
#define GRULITE_E_ALIGN      (-14)  /* borrowed buffer not 64-byte aligned */
#define GRULITE_E_TOO_LARGE  (-15)  /* a size overflows or exceeds limits */
#define GRULITE_E_BUFFER     (-16)  /* output buffer or caller memory too small */
#define GRULITE_E_TOKEN      (-17)  /* a token id outside [0, vocab_size) */

/* Static English text for an error code; never NULL.  Thread-safe. */
GRULITE_API const char *grulite_strerror(int code);

/* Library version string, e.g. "0.1.0".  Thread-safe. */
GRULITE_API const char *grulite_version(void);

/* ---- Configuration -------------------------------------------------- */

/* Activations.  A dense head layer takes NONE ... SOFTMAX.  A GRU layer's
 * gate activation f (r and z) and candidate activation g (n) take
 * SIGMOID, TANH, RELU and the rest of ONNX's list below (x is the
 * pre-activation; alpha, beta the function's parameters):
 *   AFFINE            alpha*x + beta
 *   LEAKY_RELU        x if x >= 0 else alpha*x
 *   THRESHOLDED_RELU  x if x > alpha else 0
 *   SCALED_TANH       alpha*tanh(beta*x)
 *   HARD_SIGMOID      min(max(alpha*x + beta, 0), 1)
 *   ELU               x if x >= 0 else alpha*(e^x - 1)
 *   SOFTSIGN          x / (1 + |x|)
 *   SOFTPLUS          log(1 + e^x) */
#define GRULITE_ACT_NONE    0
#define GRULITE_ACT_RELU    1
#define GRULITE_ACT_TANH    2
#define GRULITE_ACT_SIGMOID 3
#define GRULITE_ACT_SOFTMAX 4
#define GRULITE_ACT_AFFINE           5
#define GRULITE_ACT_LEAKY_RELU       6
#define GRULITE_ACT_THRESHOLDED_RELU 7
#define GRULITE_ACT_SCALED_TANH      8
#define GRULITE_ACT_HARD_SIGMOID     9
#define GRULITE_ACT_ELU              10
#define GRULITE_ACT_SOFTSIGN         11
#define GRULITE_ACT_SOFTPLUS         12

/* Storage type of weight tensors.  Activations are always float32. */
#define GRULITE_DTYPE_F32 1
#define GRULITE_DTYPE_F16 2   /* IEEE half; about half the size */
#define GRULITE_DTYPE_I8  3   /* int8, one symmetric float32 scale per output row */
#define GRULITE_DTYPE_BF16 4  /* bfloat16: float32's top 16 bits (its range, 8-bit
                                 mantissa); half the size, widened exactly */

/* Kinds of layer.  A model is a sequence of typed layers: an optional
 * embedding (token ids in), one or more GRU layers, then an optional head
 * of dense layers. */
#define GRULITE_LAYER_GRU       1
#define GRULITE_LAYER_DENSE     2
#define GRULITE_LAYER_EMBEDDING 3
#define GRULITE_LAYER_MERGE     4   /* a bidirectional layer's directions merged */

/* How a bidirectional GRU layer's two directions make its output (Keras'
 * Bidirectional merge_mode): concatenated (D*H features), or H features
 * forward + backward, forward * backward, or their mean. */
#define GRULITE_MERGE_CONCAT 0
#define GRULITE_MERGE_SUM    1
#define GRULITE_MERGE_MUL    2
#define GRULITE_MERGE_AVE    3

/* ---- Names: the one list of them (Python and the CLI ask here) ------- */

#define GRULITE_NAMES_DTYPE      1   /* "float32", "float16", "int8" */
#define GRULITE_NAMES_ACTIVATION 2   /* "none", "relu", "tanh", "sigmoid", "softmax" */
#define GRULITE_NAMES_LAYER_KIND 3   /* "gru", "dense", "embedding", "merge" */
#define GRULITE_NAMES_GRU_ACTIVATION 4  /* a GRU's f and g: "sigmoid", "tanh", "relu",
                                           "affine", "leaky_relu", "thresholded_relu",
                                           "scaled_tanh", "hard_sigmoid", "elu",
                                           "softsign", "softplus" */
#define GRULITE_NAMES_MERGE 5           /* "concat", "sum", "mul", "ave" */

/* Name of `code` in a table (GRULITE_NAMES_*), or NULL if the table has no
 * such code.  Static strings; thread-safe. */
GRULITE_API const char *grulite_name(int table, int code);

/* Code of `name` in a table, or GRULITE_E_ARG for a name it does not hold. */
GRULITE_API int grulite_code(int table, const char *name);

/* Entry `index` (0, 1, ...) of a table: *name gets its name and the code is
 * returned; GRULITE_E_ARG past the last entry.  Lists a table in order. */
GRULITE_API int grulite_name_at(int table, int index, const char **name);

/* Limits.  A configuration beyond them is refused with GRULITE_E_CONFIG;
 * sizes that overflow size_t, or scratch beyond what a machine could
 * hold, with GRULITE_E_TOO_LARGE. */
#define GRULITE_MAX_LAYERS  64
#define GRULITE_MAX_DENSE   64
#define GRULITE_MAX_FEATURES (1 << 20)  /* any input / hidden / dense width */
#define GRULITE_MAX_THREADS 256

/* One GRU layer (both directions share the configuration). */
typedef struct grulite_layer_info {
    int32_t input_size;      /* features in: model input or previous layer's D*H */
    int32_t hidden_size;     /* H */
    int32_t num_directions;  /* 1, or 2 when bidirectional */
    int32_t reset_after;     /* 1: PyTorch (r applied after W_hn h); 0: before */
    int32_t has_bias;        /* 0 when the layer has no bias tensors */
    int32_t dtype;           /* GRULITE_DTYPE_* of its weights */
    int32_t reverse;         /* 1: a one-direction layer that runs backwards in time
                                (ONNX direction="reverse", Keras go_backwards) */
    int32_t projected;       /* 1: the layer's input already is its input projection
                                W_ih x + b_ih (D*3*H features, directions then gates
                                r, z, n): an embedding folded into layer 0; the layer
                                stores no W_ih, b_ih.  Only the first GRU layer. */
    int32_t has_h0;          /* 1: the layer stores a learned initial state (one per
                                direction, an nn.Parameter h0), used for every batch
                                row when a call gives no h0 (else zeros) */
    /* Per direction: the gate activation f (r, z) and the candidate
     * activation g (n), GRULITE_ACT_* (default SIGMOID and TANH), each with
     * its alpha and beta (0 where the function takes none); clip > 0 bounds
     * every pre-activation to [-clip, clip] first (ONNX's clip), 0 none. */
    int32_t activation_f[2];
    int32_t activation_g[2];
    float alpha_f[2], beta_f[2];
    float alpha_g[2], beta_g[2];
    float clip;
    int32_t merge;           /* GRULITE_MERGE_*: a two-direction layer's output is its
                                directions concatenated (D*H) or merged (H); a merge
                                layer (GRULITE_LAYER_MERGE) follows it in the model */
} grulite_layer_info;

/* The embedding of a model whose input is token ids (nn.Embedding): step
 * t of row b reads row tokens[b, t] of a (vocab_size, width) table. */
typedef struct grulite_embedding_info {
    int32_t vocab_size;      /* V: ids are in [0, V) */
    int32_t width;           /* features out: the embedding size, or D*3*H of
                                GRU layer 0 when folded into it (projected) */
    int32_t dtype;           /* GRULITE_DTYPE_* of the table */
} grulite_embedding_info;

/* One dense (Linear) layer of the head. */
typedef struct grulite_dense_info {
    int32_t in_features;
    int32_t out_features;
    int32_t activation;      /* GRULITE_ACT_* */
    int32_t has_bias;
} grulite_dense_info;

/* Model summary. */
typedef struct grulite_info {
    int32_t input_size;      /* I */
    int32_t num_layers;      /* L */
    int32_t num_dense;       /* head layers; 0 when the model has no head */
    int32_t output_size;     /* D*H of the top layer: width of y */
    int32_t head_size;       /* out_features of the last head layer, or 0 */
    int32_t state_size;      /* sum over layers of D_l * H_l: h0 / h_n floats per batch row */
    int32_t batch_first;     /* the model's default row order: 1 (B, T), 0 (T, B) */
    int32_t head_from_state; /* 1: the head reads the top layer's final states
                                (directions concatenated) instead of its output
                                at the last valid step; they differ only for
                                backward directions */
    uint32_t checksum;       /* CRC-32 of the model image */
    size_t image_size;       /* bytes of the model image (file size) */
    int32_t vocab_size;      /* > 0: the input is token ids in [0, vocab_size), one
                                per step (input_size is 1; grulite_run.tokens);
                                0: float features */
} grulite_info;

/* ---- Models --------------------------------------------------------- */

typedef struct grulite_model grulite_model;

/* Maps the .grl file at `path` read-only and validates it (header, tables,
 * shapes, checksum).  No copy: the pages are shared with other processes
 * mapping the same file.  On success *out owns the mapping; free it with
 * grulite_model_free().  On failure *out is NULL and, when msg is not NULL,
 * msg (msg_size bytes) gets a NUL-terminated line naming the failed check. */
GRULITE_API int grulite_model_load(const char *path, grulite_model **out,
                                   char *msg, size_t msg_size);

/* Flags for grulite_model_load_buffer(). */
#define GRULITE_LOAD_COPY 1   /* copy the image; the caller's buffer may go */

/* Validates a .grl image held in memory.  Without GRULITE_LOAD_COPY the
 * buffer is borrowed: it must be 64-byte aligned (else GRULITE_E_ALIGN),
 * stay unchanged and outlive the model.  With GRULITE_LOAD_COPY the model
 * owns an aligned private copy.  Free with grulite_model_free(). */
GRULITE_API int grulite_model_load_buffer(const void *data, size_t size,
                                          int flags, grulite_model **out,
                                          char *msg, size_t msg_size);

/* Frees a model and its mapping or copy.  Accepts NULL.  Every workspace
 * may outlive the model; every stream made from it must be freed first. */
GRULITE_API void grulite_model_free(grulite_model *model);

/* Fills *info.  Thread-safe. */
GRULITE_API int grulite_model_info(const grulite_model *model, grulite_info *info);

/* Fills *info for layer 0 <= layer < num_layers.  Thread-safe. */
GRULITE_API int grulite_model_layer(const grulite_model *model, int layer,
                                    grulite_layer_info *info);

/* Fills *info for head layer 0 <= index < num_dense.  Thread-safe. */
GRULITE_API int grulite_model_dense(const grulite_model *model, int index,
                                    grulite_dense_info *info);

/* Fills *info for a model with an embedding; GRULITE_E_ARG without one. */
GRULITE_API int grulite_model_embedding(const grulite_model *model,
                                        grulite_embedding_info *info);

/* Kind (GRULITE_LAYER_*) of the model's layer 0 <= index < num_layers +
 * num_dense (+ 1 with an embedding), in the model's order (embedding, GRU
 * layers, head); GRULITE_E_ARG outside.  grulite_model_layer / _dense
 * count layers of one kind. */
GRULITE_API int grulite_model_layer_kind(const grulite_model *model, int index);

/* Multiply-adds one batch row costs per time step in the model's GRU
 * layers (every direction; the head aside): 3*H*(input + H) per layer
 * direction.  Twice this is the FLOP count benchmarks report.  0 for NULL. */
GRULITE_API double grulite_model_macs(const grulite_model *model);

/* The free-form UTF-8 metadata stored with the model (not NUL-terminated;
 * *len gets its length).  Valid while the model lives. */
GRULITE_API const char *grulite_model_metadata(const grulite_model *model, size_t *len);

/* The whole validated .grl image, as loaded (what grulite_model_save writes,
 * except for a version-2 image: that is written as version 3).  Valid
 * while the model lives. */
GRULITE_API const void *grulite_model_image(const grulite_model *model, size_t *size);

/* Writes the model image to `path` (atomically: a temporary file renamed
 * over `path`).  A model loaded from an older format version is written in
 * the current one, with the same weights. */
GRULITE_API int grulite_model_save(const grulite_model *model, const char *path);

/* ---- Kernels ---------------------------------------------------------- */

/* Every model picks its kernel set at load: the best the CPU supports
 * ("avx512vnni", "avx512", "avx2", "neondot" (aarch64 with the Armv8.2 dot
 * products: int8 with SDOT), "neon", "generic"), or the one the GRULITE_ISA environment
 * variable names (load fails with GRULITE_E_UNSUPPORTED if this CPU cannot
 * run it).  All sets read the same .grl file. */

/* Name of the model's kernel set.  Thread-safe. */
GRULITE_API const char *grulite_model_isa(const grulite_model *model);

/* Switches the model's kernel set: "generic", "avx2", "avx512", "avx512vnni",
 * "neon", "neondot", or "auto"
 * / NULL for the best.  GRULITE_E_UNSUPPORTED if the CPU cannot run it.
 * Not thread-safe: call before the model is shared or used by streams. */
GRULITE_API int grulite_model_set_isa(grulite_model *model, const char *isa);

/* 1 if this CPU and build can run the named kernel set, else 0. */
GRULITE_API int grulite_isa_supported(const char *isa);

/* Name of kernel set `index` (0, 1, ...) among every set the library knows,
 * from the plainest ("generic") to the most specific; NULL past the last.
 * Whether this CPU can run one: grulite_isa_supported(). */
GRULITE_API const char *grulite_isa_name(int index);

/* The kernel set a model loaded now gets: the one GRULITE_ISA names, or the
 * best this CPU supports.  NULL when GRULITE_ISA names a set this CPU and
 * build cannot run (loading then fails with GRULITE_E_UNSUPPORTED). */
GRULITE_API const char *grulite_isa_default(void);

/* ---- Building a model image (the converter) -------------------------- */

/* Weights in PyTorch's layout; gates in the order r, z, n.  Index 0 of each
 * pair is the forward direction, 1 the reverse (used when bidirectional). */
typedef struct grulite_layer_spec {
    int32_t hidden_size;
    int32_t num_directions;            /* 1 or 2 */
    int32_t reset_after;               /* 1 PyTorch, 0 original GRU */
    int32_t reverse;                   /* 1: one direction, backwards in time */
    int32_t has_bias;
    const float *weight_ih[2];         /* (3*H, input_size) */
    const float *weight_hh[2];         /* (3*H, H) */
    const float *bias_ih[2];           /* (3*H), ignored when !has_bias */
    const float *bias_hh[2];           /* (3*H), ignored when !has_bias */
    int32_t projected;                 /* layer 0 only: the embedding's table already is
                                          the input projection (grulite_layer_info);
                                          weight_ih / bias_ih are then ignored */
    int32_t has_h0;                    /* 1: a learned initial state, h0[d] (H floats) */
    const float *h0[2];                /* per direction; ignored when !has_h0 */
    /* Activations and clip as in grulite_layer_info; an activation of 0
     * takes the default (SIGMOID for f, TANH for g).  Parameters of a
     * function that takes none must be 0; all must be finite, clip >= 0. */
    int32_t activation_f[2];
    int32_t activation_g[2];
    float alpha_f[2], beta_f[2];
    float alpha_g[2], beta_g[2];
    float clip;
    int32_t merge;                     /* GRULITE_MERGE_* (two directions only) */
} grulite_layer_spec;

/* Folding an embedding into GRU layer 0's input projection: the table
 * becomes (V, D*3*H) rows of W_ih e + b_ih, and a step's input product a
 * row lookup.  AUTO folds when that table is no larger than the embedding
 * and W_ih it replaces. */
#define GRULITE_FOLD_AUTO   0
#define GRULITE_FOLD_NEVER  1
#define GRULITE_FOLD_ALWAYS 2

typedef struct grulite_embedding_spec {
    int32_t vocab_size;                /* V */
    int32_t fold;                      /* GRULITE_FOLD_* */
    const float *weight;               /* (V, width) row-major, nn.Embedding.weight;
                                          width is the spec's input_size */
} grulite_embedding_spec;

typedef struct grulite_dense_spec {
    int32_t out_features;              /* in_features follows from the layer below */
    int32_t activation;                /* GRULITE_ACT_* */
    int32_t has_bias;
    const float *weight;               /* (out_features, in_features), nn.Linear */
    const float *bias;                 /* (out_features), ignored when !has_bias */
} grulite_dense_spec;

typedef struct grulite_model_spec {
    int32_t input_size;
    int32_t num_layers;
    const grulite_layer_spec *layers;  /* num_layers entries */
    int32_t num_dense;
    const grulite_dense_spec *dense;   /* num_dense entries, or NULL */
    int32_t dtype;                     /* GRU weight storage: GRULITE_DTYPE_*; the
                                          head stays float32 */
    int32_t batch_first;               /* default row order recorded in the file */
    int32_t head_from_state;           /* see grulite_info */
    const char *metadata;              /* UTF-8, or NULL */
    size_t metadata_len;
    const grulite_embedding_spec *embedding;  /* token ids in, or NULL: float features.
                                          input_size is then the embedding's width */
} grulite_model_spec;

/* Checks a spec's configuration (counts, sizes, flags, dtype, activations)
 * against the format and the limits, without reading any weight: the one
 * validator of a configuration, which grulite_model_serialize() and every
 * load also run.  On failure, msg (when not NULL) gets a line naming the
 * field.  Thread-safe. */
GRULITE_API int grulite_spec_check(const grulite_model_spec *spec, char *msg, size_t msg_size);

/* Serializes `spec` into a .grl image, repacking the weights into the
 * layout the kernels read.  With buf == NULL only *size is set (the bytes
 * needed).  Otherwise writes *size bytes into buf (cap bytes available;
 * GRULITE_E_BUFFER if too small).  Thread-safe; reads spec only. */
GRULITE_API int grulite_model_serialize(const grulite_model_spec *spec,
                                        void *buf, size_t cap, size_t *size);

/* Re-serializes a loaded model with its GRU weights stored as `dtype`
 * (GRULITE_DTYPE_*), same configuration and metadata; buf / cap / size as
 * for grulite_model_serialize().  Converting from float32 is lossless up
 * to the target's rounding; from float16 / int8 the stored (already
 * rounded) values are the source. */
GRULITE_API int grulite_model_convert(const grulite_model *model, int dtype,
                                      void *buf, size_t cap, size_t *size);

/* ---- Whole-sequence inference --------------------------------------- */

/* Caller-owned scratch memory; grows on demand and is reused between
 * calls.  One per thread (not thread-safe itself).  Not tied to a model:
 * may be used with several models and outlive them. */
typedef struct grulite_workspace grulite_workspace;

GRULITE_API grulite_workspace *grulite_workspace_new(void);   /* NULL: no memory */
GRULITE_API void grulite_workspace_free(grulite_workspace *ws);  /* accepts NULL */
/* Bytes currently held by the workspace. */
GRULITE_API size_t grulite_workspace_bytes(const grulite_workspace *ws);

/* Threads grulite_forward may use with this workspace (it owns a small
 * pool, started on first use).  0 (the default) means the GRULITE_NUM_THREADS
 * environment variable if set, else every online CPU, read when the
 * workspace is first used after this call (not on every call).  Work is split by
 * batch rows, so results are identical for every thread count. */
GRULITE_API int grulite_workspace_set_threads(grulite_workspace *ws, int threads);

/* The thread count the next grulite_forward with this workspace may use. */
GRULITE_API int grulite_workspace_threads(const grulite_workspace *ws);

/* Arguments of grulite_forward().  All arrays are float32, C-contiguous.
 * Rows of x, y and a per-step head are ordered (B, T) when batch_first
 * and (T, B) otherwise.  State arrays (h0, h_n) hold, layer after layer,
 * direction after direction, B rows of H_l floats: torch's (L*D, B, H)
 * when all layers share one size. */
typedef struct grulite_run {
    int32_t batch;             /* B >= 1 */
    int32_t steps;             /* T >= 1 */
    int32_t batch_first;       /* row order of x / y / per-step head */
    int32_t head_all_steps;    /* head on every valid step instead of the last */
    const float *x;            /* B*T*input_size */
    const int32_t *lengths;    /* B lengths in [1, T], or NULL (all T) */
    const float *h0;           /* B*state_size, or NULL: the model's initial state
                                  (layers' learned ones, else zeros) for every row */
    float *y;                  /* B*T*output_size, or NULL; 0 past a length */
    float *h_n;                /* B*state_size, or NULL */
    float *head;               /* B*head_size (or B*T*head_size), or NULL */
    const int32_t *tokens;     /* models with an embedding: B*T token ids (same row
                                  order as x), and x NULL.  Ids past a row's length
                                  are not read.  An id outside [0, vocab_size):
                                  GRULITE_E_TOKEN, before anything runs */
} grulite_run;

/* Runs the model.  x (or tokens), h0 and lengths are read; y, h_n and head written.
 * The model is only read: many threads may call this at once on one model,
 * each with its own workspace.  Allocates only to grow `ws`. */
GRULITE_API int grulite_forward(const grulite_model *model, grulite_workspace *ws,
                                const grulite_run *run);

/* ---- Streaming (unidirectional models) ------------------------------ */

typedef struct grulite_stream grulite_stream;

/* A per-stream state for `batch` parallel sequences, initially the model's
 * initial state (its layers' learned ones, else zeros).
 * The model must outlive the stream.  GRULITE_E_UNSUPPORTED for models
 * with a layer that runs backwards (bidirectional or reverse).  Free with grulite_stream_free(). */
GRULITE_API int grulite_stream_new(const grulite_model *model, int32_t batch,
                                   grulite_stream **out);
GRULITE_API void grulite_stream_free(grulite_stream *s);   /* accepts NULL */

/* Advances by `steps` >= 1 steps.  x is (B, steps, input_size) batch-first.
 * y (or NULL) gets (B, steps, output_size); head (or NULL) gets the head on
 * every step, (B, steps, head_size).  Allocates only when `steps` exceeds
 * every earlier call's.  Gives exactly the numbers of grulite_forward on
 * the whole sequence. */
GRULITE_API int grulite_stream_step(grulite_stream *s, const float *x, int32_t steps,
                                    float *y, float *head);

/* Sets the state back to the initial state (learned, else zeros). */
GRULITE_API int grulite_stream_reset(grulite_stream *s);

/* One call of grulite_stream_run(): `steps` steps for some or all rows. */
typedef struct grulite_step {
    int32_t steps;             /* >= 1 */
    int32_t n;                 /* rows stepped: with rows, how many; else ignored (all) */
    const int32_t *rows;       /* n distinct stream rows in [0, batch), or NULL for
                                  every row; rows not listed keep their state */
    const float *x;            /* (n, steps, input_size), or NULL with tokens */
    const int32_t *tokens;     /* models with an embedding: (n, steps) ids */
    float *y;                  /* (n, steps, output_size), or NULL */
    float *head;               /* (n, steps, head_size), or NULL */
} grulite_step;

/* Advances the listed rows (in the order listed: row i of x is stream row
 * rows[i]) and leaves the others untouched: a server stepping streams that
 * start and stop at different times.  Same numbers as grulite_stream_step
 * for those rows.  GRULITE_E_ARG for a row out of range or listed twice. */
GRULITE_API int grulite_stream_run(grulite_stream *s, const grulite_step *step);

/* Sets the state of the n listed rows back to the initial state (rows
 * NULL: all rows). */
GRULITE_API int grulite_stream_reset_rows(grulite_stream *s, const int32_t *rows, int32_t n);

/* Copies the state of the n listed rows out / in: h holds n*state_size
 * floats in h0's layout for a batch of n (blocks of (n, H_l) per layer
 * and direction).  rows NULL: every row, n = batch. */
GRULITE_API int grulite_stream_get_rows(const grulite_stream *s, const int32_t *rows, int32_t n,
                                        float *h);
GRULITE_API int grulite_stream_set_rows(grulite_stream *s, const int32_t *rows, int32_t n,
                                        const float *h);

/* Copies the state (B*state_size floats, h0's layout) out / in; n is the
 * number of floats available / given and must equal B*state_size. */
GRULITE_API int grulite_stream_get_state(const grulite_stream *s, float *h, size_t n);
GRULITE_API int grulite_stream_set_state(grulite_stream *s, const float *h, size_t n);

/* Batch size of the stream. */
GRULITE_API int32_t grulite_stream_batch(const grulite_stream *s);

/* Bytes the stream holds: its state plus scratch for the largest chunk
 * stepped so far.  The model's own memory is its mapping (image_size). */
GRULITE_API size_t grulite_stream_bytes(const grulite_stream *s);

/* ---- Memory the caller provides ------------------------------------------
 *
 * A model, a workspace and a stream placed in memory the caller gives
 * (static arrays on a microcontroller, an arena in a server): the library
 * allocates nothing for them.  Every build has these functions; a build
 * with no operating system (GRULITE_NO_OS: no threads, mmap, stdio,
 * environment or malloc; docs/edge.md) has only these ways to make a
 * model, a workspace or a stream, and no generation, forecasting or
 * writing.  `mem` needs no particular alignment; the *_mem_size queries
 * include the padding.  The memory must outlive what is placed in it; the
 * *_free functions accept these objects and free nothing (the caller's
 * memory is simply reused or dropped).  Memory below what the query says:
 * GRULITE_E_BUFFER. */

/* Bytes grulite_model_load_mem needs for the image at data: the model's
 * descriptors (a few hundred bytes a layer), never its weights, which stay
 * in the image.  Read from the header alone; 0 when it is not a .grl
 * header (grulite_model_load_mem then says what is wrong). */
GRULITE_API size_t grulite_model_mem_size(const void *data, size_t size);

/* grulite_model_load_buffer with the model in mem: the image (64-byte
 * aligned, else GRULITE_E_ALIGN; a const array from grulite convert
 * --emit-c is) and mem are borrowed, unchanged, for the model's life.
 * The same validation and messages as grulite_model_load. */
GRULITE_API int grulite_model_load_mem(const void *data, size_t size, void *mem, size_t mem_size,
                                       grulite_model **out, char *msg, size_t msg_size);

/* Bytes a workspace in caller memory needs for grulite_forward with this
 * model on up to `batch` rows of up to `steps` steps, any outputs asked
 * for; 0 for a NULL model, batch or steps < 1, or a size that overflows.
 * (Less memory may do: calls then run in smaller chunks of rows, with the
 * same numbers.) */
GRULITE_API size_t grulite_workspace_mem_size(const grulite_model *model, int32_t batch,
                                              int32_t steps);

/* A workspace in mem (mem_size bytes).  It never grows: a call that does
 * not fit even one row at a time returns GRULITE_E_BUFFER before computing
 * anything.
 * It runs on the calling thread (grulite_workspace_set_threads above 1:
 * GRULITE_E_UNSUPPORTED).  Not tied to a model. */
GRULITE_API int grulite_workspace_init(void *mem, size_t mem_size, grulite_workspace **out);

/* Bytes a stream of `batch` rows in caller memory needs, for calls of up
 * to `steps` steps with any outputs and any rows listed
 * (grulite_stream_run); 0 as grulite_workspace_mem_size, and for a model
 * a stream cannot run (a layer runs backwards). */
GRULITE_API size_t grulite_stream_mem_size(const grulite_model *model, int32_t batch,
                                           int32_t steps);

/* grulite_stream_new in mem: state, scratch for calls of up to `steps`
 * steps and what listed rows need, all in mem (a longer call that does
 * not fit the memory given: GRULITE_E_BUFFER, the state unchanged).  The
 * model must outlive the stream. */
GRULITE_API int grulite_stream_init(const grulite_model *model, int32_t batch, int32_t steps,
                                    void *mem, size_t mem_size, grulite_stream **out);

/* ---- Generation and forecasting (forward-only models) ---------------- */

/* Arguments of grulite_generate().  The model has an embedding and a head
 * of vocab_size outputs (the next token's scores).  Each row reads its
 * prompt (the whole prompt, from h0 or zeros), then repeatedly picks a
 * token from the head's output at its last step and reads it, until it
 * picks `stop` (not written) or has written max_steps tokens.  Finished
 * rows leave the batch: they cost nothing more. */
typedef struct grulite_generation {
    int32_t batch;             /* B >= 1 */
    int32_t steps;             /* prompt columns, >= 1 */
    const int32_t *prompt;     /* (B, steps) token ids, batch-first */
    const int32_t *lengths;    /* B prompt lengths in [1, steps], or NULL (all steps) */
    const float *h0;           /* B*state_size (grulite_run's layout), or NULL */
    int32_t stop;              /* the token that ends a row, or -1 for none */
    int32_t max_steps;         /* tokens to write at most per row, >= 0 */
    int32_t sample;            /* 0: greedy (the highest score, the lowest id on
                                  ties; a softmax head's logits are the scores);
                                  1: draw from softmax(logits / temperature) */
    float temperature;         /* > 0, sampling only */
    int32_t top_k;             /* sampling: keep the k most likely tokens; 0: all */
    float top_p;               /* sampling: keep the fewest most likely tokens whose
                                  probabilities reach top_p, in (0, 1]; 1: all */
    uint64_t seed;             /* sampling: row b's draws are a function of
                                  (seed, b, step) only (a counter-based generator):
                                  the same whatever the thread count, or which
                                  other rows run */
    const uint64_t *seeds;     /* or NULL; else B seeds: row b draws as row 0 of a
                                  call with seed seeds[b] (one row reproduced in any
                                  batch) */
    int32_t *tokens;           /* out: (B, max_steps); slots past a row's count are
                                  left as they were (never touched) */
    int32_t *counts;           /* out: B, tokens written per row */
} grulite_generation;

/* Generates.  Sampling needs a head whose last layer has no activation
 * (logits) or softmax (its logits are used); others: GRULITE_E_UNSUPPORTED.
 * Greedy works with any head.  Uses ws's threads for each step's batch. */
GRULITE_API int grulite_generate(const grulite_model *model, grulite_workspace *ws,
                                 const grulite_generation *gen);

/* Forecasting: runs the model over run->x (lengths, h0 as grulite_forward;
 * y and head ignored), takes the head's output at each row's last valid
 * step as the first prediction, then feeds each prediction back as the
 * next input, `horizon` predictions in all.  The head's size must equal
 * input_size.  out: (B, horizon, head_size).  run->h_n (or NULL) gets the
 * state after the last input read. */
GRULITE_API int grulite_forecast(const grulite_model *model, grulite_workspace *ws,
                                 const grulite_run *run, int32_t horizon, float *out);

#ifdef __cplusplus
}
#endif

#endif /* GRULITE_H */
