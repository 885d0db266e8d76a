/* format.h - the .grl model file's field layout: the one definition of
 * its constants, shared by the reader (read.c), the writer (write.c) and
 * the list of tensors (layout.c).  Described for people in docs/format.md.
 *
 * Version 3 (written):
 *
 *     header (64 bytes)   magic "GRULITE\0", version, CRC-32 of [16, end),
 *                         file size (u64), header size, flags, input_size,
 *                         layers, layer record size, tensors,
 *                         metadata offset and length (u64 each)
 *     layer records       32 bytes each: kind (GRULITE_LAYER_*), then the
 *                         kind's fields (layers/<kind>.c), zero-padded
 *     tensor table        64 bytes an entry: name, dtype, layout, ndim,
 *                         gates, dims, offset (u64)
 *     metadata            free-form UTF-8
 *     tensors             each at a 64-byte aligned offset, in the layout
 *                         the kernels read
 *
 * Version 2 (still read): GRU records (32 bytes, no kind word), then head
 * records (16 bytes); header word 40 counts head layers; head tensors are
 * named "head<j>." instead of "l<i>.".  All integers little-endian. */
#ifndef GRULITE_FORMAT_H
#define GRULITE_FORMAT_H

#include <string.h>

#include "../layers/layers.h"

static const char GL_MAGIC[8] = { 'G', 'R', 'U', 'L', 'I', 'T', 'E', '\0' };

enum {
    GL_VERSION_2 = 2,        /* GRU and head records apart, no kinds */
    GL_HEADER_SIZE = 64,
    GL_LAYER_REC = 32,       /* bytes per layer record (v2: per GRU layer) */
    GL_DENSE_REC_V2 = 16,    /* v2: bytes per head record */
    GL_TENSOR_REC = 64,      /* bytes per tensor-table entry */
    GL_CRC_START = 16,       /* the checksum covers [16, file_size) */
    GL_LAYOUT_PANEL16 = 2,   /* panels of 16 lanes, gate-interleaved (kernels/kernels.h) */
    GL_FLAG_TIME_MAJOR = 1,  /* header flag: the model's default rows are (T, B) */
    GL_FLAG_HEAD_STATE = 2   /* header flag: the head reads the final states */
};

/* Header word offsets. */
enum {
    GL_OFF_VERSION = 8, GL_OFF_CRC = 12, GL_OFF_FILE_SIZE = 16, GL_OFF_HEADER_SIZE = 24,
    GL_OFF_FLAGS = 28, GL_OFF_INPUT_SIZE = 32, GL_OFF_LAYERS = 36,
    GL_OFF_LAYER_REC = 40,   /* v2: number of head layers */
    GL_OFF_TENSORS = 44, GL_OFF_META_OFF = 48, GL_OFF_META_LEN = 56
};

/* Tensor-table entry offsets (the name is its first GL_NAME_LEN bytes). */
enum { GL_T_DTYPE = 32, GL_T_LAYOUT = 36, GL_T_NDIM = 40, GL_T_GATES = 44, GL_T_DIM0 = 48,
       GL_T_DIM1 = 52, GL_T_OFFSET = 56 };

/* Most tensors a valid configuration can need: 7 per GRU layer direction
 * (two matrices, their int8 scales, two biases, a learned initial state)
 * and 1 per GRU layer (activation parameters), 2 per head layer, 2 for an
 * embedding (its table and int8 scales). */
#define GL_MAX_TENSORS (GRULITE_MAX_LAYERS * (2 * 7 + 1) + GRULITE_MAX_DENSE * 2 + 2)

/* Little-endian field access, alignment-free. */
static inline uint32_t gl_rd32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t gl_rd64(const unsigned char *p)
{
    return (uint64_t)gl_rd32(p) | (uint64_t)gl_rd32(p + 4) << 32;
}

static inline void gl_wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static inline void gl_wr64(unsigned char *p, uint64_t v)
{
    gl_wr32(p, (uint32_t)v);
    gl_wr32(p + 4, (uint32_t)(v >> 32));
}

static inline int gl_host_is_little_endian(void)
{
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* A tensor's table entry: dims (K, G*H) for a matrix, (G*H) for vectors. */
static inline uint32_t gl_ref_dim0(const gl_tensor_ref *t)
{
    return (uint32_t)(t->kind != GL_MATRIX ? t->panel->G * t->panel->H : t->panel->K);
}

static inline uint32_t gl_ref_dim1(const gl_tensor_ref *t)
{
    return (uint32_t)(t->kind != GL_MATRIX ? 0 : t->panel->G * t->panel->H);
}

/* Stored dtype: a matrix's own; biases and scales are float32. */
static inline int gl_ref_dtype(const gl_tensor_ref *t)
{
    return t->kind == GL_MATRIX ? t->panel->dtype : GRULITE_DTYPE_F32;
}

/* Elements the tensor occupies in the file. */
static inline size_t gl_ref_elems(const gl_tensor_ref *t)
{
    const gl_panel *p = t->panel;
    return t->kind != GL_MATRIX ? p->nb * p->G * GL_LANES : gl_panel_elems(p);
}

/* Calls fn for each tensor of the configured model m in file order, named
 * as format `version` names them (layout.c).  Stops at a non-zero. */
GL_HIDDEN int gl_each_tensor(grulite_model *m, uint32_t version, gl_tensor_fn fn, void *ctx);

/* Tensors the configured model m has. */
GL_HIDDEN uint32_t gl_count_tensors(grulite_model *m);

/* Bytes before the tensor table: header and layer records (version 3). */
GL_HIDDEN size_t gl_records_end(const grulite_model *m);

#endif /* GRULITE_FORMAT_H */
