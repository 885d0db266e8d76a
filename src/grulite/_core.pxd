# cython: language_level=3
# Declarations of include/grulite.h, in the header's order.

from libc.stdint cimport int32_t, uint32_t, uint64_t

cdef extern from "grulite.h" nogil:
    int GRULITE_VERSION_MAJOR
    int GRULITE_VERSION_MINOR
    int GRULITE_VERSION_PATCH
    const char *GRULITE_VERSION_STRING
    int GRULITE_FORMAT_VERSION

    int GRULITE_OK
    int GRULITE_E_ARG
    int GRULITE_E_NOMEM
    int GRULITE_E_IO
    int GRULITE_E_MAGIC
    int GRULITE_E_VERSION
    int GRULITE_E_TRUNCATED
    int GRULITE_E_CHECKSUM
    int GRULITE_E_FORMAT
    int GRULITE_E_CONFIG
    int GRULITE_E_TENSOR
    int GRULITE_E_SHAPE
    int GRULITE_E_LENGTHS
    int GRULITE_E_UNSUPPORTED
    int GRULITE_E_ALIGN
    int GRULITE_E_TOO_LARGE
    int GRULITE_E_BUFFER
    int GRULITE_E_TOKEN

    const char *grulite_strerror(int code)
    const char *grulite_version()

    int GRULITE_ACT_NONE
    int GRULITE_ACT_RELU
    int GRULITE_ACT_TANH
    int GRULITE_ACT_SIGMOID
    int GRULITE_ACT_SOFTMAX

    int GRULITE_DTYPE_F32
    int GRULITE_DTYPE_F16
    int GRULITE_DTYPE_BF16
    int GRULITE_DTYPE_I8

    int GRULITE_LAYER_GRU
    int GRULITE_LAYER_DENSE
    int GRULITE_LAYER_EMBEDDING

    int GRULITE_NAMES_DTYPE
    int GRULITE_NAMES_ACTIVATION
    int GRULITE_NAMES_LAYER_KIND
    int GRULITE_NAMES_GRU_ACTIVATION
    int GRULITE_NAMES_MERGE
    const char *grulite_name(int table, int code)
    int grulite_code(int table, const char *name)
    int grulite_name_at(int table, int index, const char **name)

    int GRULITE_MAX_LAYERS
    int GRULITE_MAX_DENSE
    int GRULITE_MAX_FEATURES
    int GRULITE_MAX_THREADS

    ctypedef struct grulite_layer_info:
        int32_t input_size
        int32_t hidden_size
        int32_t num_directions
        int32_t reset_after
        int32_t has_bias
        int32_t dtype
        int32_t reverse
        int32_t projected
        int32_t has_h0
        int32_t activation_f[2]
        int32_t activation_g[2]
        float alpha_f[2]
        float beta_f[2]
        float alpha_g[2]
        float beta_g[2]
        float clip
        int32_t merge

    ctypedef struct grulite_embedding_info:
        int32_t vocab_size
        int32_t width
        int32_t dtype

    ctypedef struct grulite_dense_info:
        int32_t in_features
        int32_t out_features
        int32_t activation
        int32_t has_bias

    ctypedef struct grulite_info:
        int32_t input_size
        int32_t num_layers
        int32_t num_dense
        int32_t output_size
        int32_t head_size
        int32_t state_size
        int32_t batch_first
        int32_t head_from_state
        uint32_t checksum
        size_t image_size
        int32_t vocab_size

    ctypedef struct grulite_model:
        pass

    int grulite_model_load(const char *path, grulite_model **out,
                           char *msg, size_t msg_size)
    int GRULITE_LOAD_COPY
    int grulite_model_load_buffer(const void *data, size_t size, int flags,
                                  grulite_model **out, char *msg, size_t msg_size)
    void grulite_model_free(grulite_model *model)
    int grulite_model_info(const grulite_model *model, grulite_info *info)
    int grulite_model_layer(const grulite_model *model, int layer, grulite_layer_info *info)
    int grulite_model_dense(const grulite_model *model, int index, grulite_dense_info *info)
    int grulite_model_embedding(const grulite_model *model, grulite_embedding_info *info)
    int grulite_model_layer_kind(const grulite_model *model, int index)
    double grulite_model_macs(const grulite_model *model)
    const char *grulite_model_metadata(const grulite_model *model, size_t *len)
    const void *grulite_model_image(const grulite_model *model, size_t *size)
    int grulite_model_save(const grulite_model *model, const char *path)

    const char *grulite_model_isa(const grulite_model *model)
    int grulite_model_set_isa(grulite_model *model, const char *isa)
    int grulite_isa_supported(const char *isa)
    const char *grulite_isa_name(int index)
    const char *grulite_isa_default()

    ctypedef struct grulite_layer_spec:
        int32_t hidden_size
        int32_t num_directions
        int32_t reset_after
        int32_t reverse
        int32_t has_bias
        const float *weight_ih[2]
        const float *weight_hh[2]
        const float *bias_ih[2]
        const float *bias_hh[2]
        int32_t projected
        int32_t has_h0
        const float *h0[2]
        int32_t activation_f[2]
        int32_t activation_g[2]
        float alpha_f[2]
        float beta_f[2]
        float alpha_g[2]
        float beta_g[2]
        float clip
        int32_t merge

    int GRULITE_FOLD_AUTO
    int GRULITE_FOLD_NEVER
    int GRULITE_FOLD_ALWAYS

    ctypedef struct grulite_embedding_spec:
        int32_t vocab_size
        int32_t fold
        const float *weight

    ctypedef struct grulite_dense_spec:
        int32_t out_features
        int32_t activation
        int32_t has_bias
        const float *weight
        const float *bias

    ctypedef struct grulite_model_spec:
        int32_t input_size
        int32_t num_layers
        const grulite_layer_spec *layers
        int32_t num_dense
        const grulite_dense_spec *dense
        int32_t dtype
        int32_t batch_first
        int32_t head_from_state
        const char *metadata
        size_t metadata_len
        const grulite_embedding_spec *embedding

    int grulite_spec_check(const grulite_model_spec *spec, char *msg, size_t msg_size)
    int grulite_model_serialize(const grulite_model_spec *spec, void *buf, size_t cap,
                                size_t *size)
    int grulite_model_convert(const grulite_model *model, int dtype, void *buf, size_t cap,
                              size_t *size)

    ctypedef struct grulite_workspace:
        pass

    grulite_workspace *grulite_workspace_new()
    void grulite_workspace_free(grulite_workspace *ws)
    size_t grulite_workspace_bytes(const grulite_workspace *ws)
    int grulite_workspace_set_threads(grulite_workspace *ws, int threads)
    int grulite_workspace_threads(const grulite_workspace *ws)

    ctypedef struct grulite_run:
        int32_t batch
        int32_t steps
        int32_t batch_first
        int32_t head_all_steps
        const float *x
        const int32_t *lengths
        const float *h0
        float *y
        float *h_n
        float *head
        const int32_t *tokens

    int grulite_forward(const grulite_model *model, grulite_workspace *ws,
                        const grulite_run *run)

    ctypedef struct grulite_stream:
        pass

    int grulite_stream_new(const grulite_model *model, int32_t batch, grulite_stream **out)
    void grulite_stream_free(grulite_stream *s)
    int grulite_stream_step(grulite_stream *s, const float *x, int32_t steps,
                            float *y, float *head)
    int grulite_stream_reset(grulite_stream *s)
    int grulite_stream_get_state(const grulite_stream *s, float *h, size_t n)
    int grulite_stream_set_state(grulite_stream *s, const float *h, size_t n)
    int32_t grulite_stream_batch(const grulite_stream *s)
    size_t grulite_stream_bytes(const grulite_stream *s)

    ctypedef struct grulite_step:
        int32_t steps
        int32_t n
        const int32_t *rows
        const float *x
        const int32_t *tokens
        float *y
        float *head

    int grulite_stream_run(grulite_stream *s, const grulite_step *step)
    int grulite_stream_reset_rows(grulite_stream *s, const int32_t *rows, int32_t n)
    int grulite_stream_get_rows(const grulite_stream *s, const int32_t *rows, int32_t n, float *h)
    int grulite_stream_set_rows(grulite_stream *s, const int32_t *rows, int32_t n, const float *h)

    # Memory the caller provides (every build; the only way in with GRULITE_NO_OS)
    size_t grulite_model_mem_size(const void *data, size_t size)
    int grulite_model_load_mem(const void *data, size_t size, void *mem, size_t mem_size,
                               grulite_model **out, char *msg, size_t msg_size)
    size_t grulite_workspace_mem_size(const grulite_model *model, int32_t batch, int32_t steps)
    int grulite_workspace_init(void *mem, size_t mem_size, grulite_workspace **out)
    size_t grulite_stream_mem_size(const grulite_model *model, int32_t batch, int32_t steps)
    int grulite_stream_init(const grulite_model *model, int32_t batch, int32_t steps,
                            void *mem, size_t mem_size, grulite_stream **out)

    ctypedef struct grulite_generation:
        int32_t batch
        int32_t steps
        const int32_t *prompt
        const int32_t *lengths
        const float *h0
        int32_t stop
        int32_t max_steps
        int32_t sample
        float temperature
        int32_t top_k
        float top_p
        uint64_t seed
        const uint64_t *seeds
        int32_t *tokens
        int32_t *counts

    int grulite_generate(const grulite_model *model, grulite_workspace *ws,
                         const grulite_generation *gen)
    int grulite_forecast(const grulite_model *model, grulite_workspace *ws,
                         const grulite_run *run, int32_t horizon, float *out)
