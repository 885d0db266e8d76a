/* format/read.c - reading .grl images: every count, offset and shape is
 * checked with overflow-safe arithmetic before use, and the checksum
 * covers everything but the first 16 bytes (magic, version, the checksum
 * itself); the model then points into the image: no copy, no repacking.
 * Versions 3 and 2 are read (format.h).  Also the model's queries. */
#define _POSIX_C_SOURCE 200809L  /* open, fstat, mmap under -std=c99 */

#include <string.h>

#include "format.h"

#if defined(GL_HOSTED)
#  include <stdio.h>
#  include <stdlib.h>
#endif

#if defined(GL_HOSTED) && (defined(__unix__) || defined(__APPLE__))
#  define GL_HAVE_MMAP 1
#  include <fcntl.h>
#  include <sys/mman.h>
#  include <sys/stat.h>
#  include <unistd.h>
#endif

typedef struct gl_reader {
    grulite_model *m;
    const unsigned char *img;
    size_t size;
    size_t table;            /* offset of the tensor table */
    size_t data_min;         /* first byte after the tables and the metadata */
    uint32_t n_tensors;
    size_t n_placed;         /* tensors accepted so far */
    size_t cap;              /* entries placed has room for */
    size_t (*placed)[2];     /* their byte ranges [begin, end) */
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
            return gl_fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                        "tensor table entry %lu: name is not NUL-terminated", (unsigned long)i);
        if (strcmp((const char *)e, ref->name) == 0) {
            if (found)
                return gl_fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                            "tensor %s appears twice in the table", ref->name);
            found = e;
        }
    }
    if (!found)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s is missing", ref->name);
    const uint32_t dtype = gl_rd32(found + GL_T_DTYPE), layout = gl_rd32(found + GL_T_LAYOUT);
    const uint32_t ndim = gl_rd32(found + GL_T_NDIM), gates = gl_rd32(found + GL_T_GATES);
    const uint32_t d0 = gl_rd32(found + GL_T_DIM0), d1 = gl_rd32(found + GL_T_DIM1);
    const uint64_t off = gl_rd64(found + GL_T_OFFSET);
    const uint32_t want0 = gl_ref_dim0(ref), want1 = gl_ref_dim1(ref);
    const int want_dtype = gl_ref_dtype(ref);
    if (dtype != (uint32_t)want_dtype)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s: dtype %lu, expected %d",
                    ref->name, (unsigned long)dtype, want_dtype);
    if (layout != GL_LAYOUT_PANEL16)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_TENSOR, "tensor %s: layout %lu, expected %d (panel16)",
                    ref->name, (unsigned long)layout, GL_LAYOUT_PANEL16);
    if (ndim != (want1 ? 2u : 1u) || d0 != want0 || d1 != want1 || gates != ref->panel->G)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_TENSOR,
                    "tensor %s: shape (%lu, %lu) ndim %lu gates %lu; the configuration needs "
                    "(%lu, %lu) with %lu gates",
                    ref->name, (unsigned long)d0, (unsigned long)d1, (unsigned long)ndim,
                    (unsigned long)gates, (unsigned long)want0, (unsigned long)want1,
                    (unsigned long)ref->panel->G);
    size_t bytes, end;
    if (gl_mul(gl_ref_elems(ref), gl_dtype_bytes(want_dtype), &bytes) ||
        off > (uint64_t)SIZE_MAX || gl_add((size_t)off, bytes, &end))
        return gl_fail(r->msg, r->msg_size, GRULITE_E_TOO_LARGE, "tensor %s: size overflows", ref->name);
    if (off % GL_ALIGN != 0)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_FORMAT, "tensor %s: offset %llu not 64-byte aligned",
                    ref->name, (unsigned long long)off);
    if ((size_t)off < r->data_min || end > r->size)
        return gl_fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                    "tensor %s: bytes [%llu, %llu) outside the data area [%llu, %llu) "
                    "after the tables and metadata",
                    ref->name, (unsigned long long)off, (unsigned long long)end,
                    (unsigned long long)r->data_min, (unsigned long long)r->size);
    for (size_t i = 0; i < r->n_placed; i++) {
        if ((size_t)off < r->placed[i][1] && r->placed[i][0] < end)
            return gl_fail(r->msg, r->msg_size, GRULITE_E_FORMAT,
                        "tensor %s: bytes [%llu, %llu) overlap another tensor's [%llu, %llu)",
                        ref->name, (unsigned long long)off, (unsigned long long)end,
                        (unsigned long long)r->placed[i][0], (unsigned long long)r->placed[i][1]);
    }
    if (r->n_placed < r->cap) {
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

/* The layer records: version 3's typed ones, or version 2's GRU records
 * then head records.  Fills m->n and each layer's kind and fields. */
static int read_records(grulite_model *m, const unsigned char *img, uint32_t version,
                        uint32_t n_layers, uint32_t n_dense, char *msg, size_t msg_size)
{
    const unsigned char *p = img + GL_HEADER_SIZE;
    int32_t n_seq = 0, n_head = 0;       /* GRU and head layers so far, for messages */
    if (n_layers + n_dense > (uint32_t)m->cap)        /* plan_load sized m from the header */
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "%lu layers; room was made for %ld",
                       (unsigned long)(n_layers + n_dense), (long)m->cap);
    m->n = (int32_t)(n_layers + n_dense);
    for (int32_t i = 0; i < m->n; i++) {
        gl_layer *L = &m->layer[i];
        uint32_t f[GL_FIELDS] = { 0 };
        if (version == GL_VERSION_2) {
            L->kind = i >= (int32_t)n_layers ? &gl_kind_dense : &gl_kind_gru;
        } else {
            const uint32_t code = gl_rd32(p);
            L->kind = code <= (uint32_t)INT32_MAX ? gl_kind_of((int32_t)code) : NULL;
            if (!L->kind)
                return gl_fail(msg, msg_size, GRULITE_E_CONFIG,
                               "layer %ld: unknown layer kind %lu", (long)i, (unsigned long)code);
            p += 4;
        }
        /* Version 2 GRU records end at the reverse flag (field 5). */
        const int nf = version == GL_VERSION_2 && L->kind->fields > 6 ? 6 : L->kind->fields;
        /* Messages count GRU and head layers apart, as the checks do. */
        const char *what = L->kind == &gl_kind_embedding ? "embedding"
                           : L->kind->sequence ? "layer" : "head layer";
        const long index = L->kind == &gl_kind_embedding ? 0
                           : L->kind->sequence ? (long)n_seq++ : (long)n_head++;
        for (int k = 0; k < nf; k++) {
            f[k] = gl_rd32(p + 4 * k);
            if (f[k] > GRULITE_MAX_FEATURES)
                return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "%s %ld: field %d = %lu out of range",
                               what, index, k, (unsigned long)f[k]);
        }
        if (version != GL_VERSION_2) {
            for (int k = nf; k < GL_FIELDS; k++) {
                if (gl_rd32(p + 4 * k) != 0)
                    return gl_fail(msg, msg_size, GRULITE_E_FORMAT,
                                   "%s %ld: unused record field %d is not 0", what, index, k);
            }
            p += GL_LAYER_REC - 4;
        } else {
            p += i >= (int32_t)n_layers ? GL_DENSE_REC_V2 : GL_LAYER_REC;
        }
        L->kind->from_fields(L, f);
    }
    return GRULITE_OK;
}

/* Validates an image at 64-byte aligned `img` and fills m (whose ownership
 * fields the caller sets); placed (cap entries) is the reader's scratch. */
static int parse_image(grulite_model *m, const unsigned char *img, size_t size,
                       size_t (*placed)[2], size_t cap, char *msg, size_t msg_size)
{
    if (!gl_host_is_little_endian())
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED, "big-endian hosts are not supported");
    if (size < GL_HEADER_SIZE)
        return gl_fail(msg, msg_size, size >= 8 && memcmp(img, GL_MAGIC, 8) ? GRULITE_E_MAGIC
                       : GRULITE_E_TRUNCATED,
                       "file has %lu bytes; a model file has at least a %d-byte header",
                       (unsigned long)size, GL_HEADER_SIZE);
    if (memcmp(img, GL_MAGIC, 8) != 0)
        return gl_fail(msg, msg_size, GRULITE_E_MAGIC, "bad magic: the file does not start with GRULITE");
    const uint32_t version = gl_rd32(img + GL_OFF_VERSION);
    if (version != GRULITE_FORMAT_VERSION && version != GL_VERSION_2)
        return gl_fail(msg, msg_size, GRULITE_E_VERSION,
                       "format version %lu; this library reads versions %d and %d",
                       (unsigned long)version, GL_VERSION_2, GRULITE_FORMAT_VERSION);
    const uint64_t fsize = gl_rd64(img + GL_OFF_FILE_SIZE);
    if (fsize > (uint64_t)size)
        return gl_fail(msg, msg_size, GRULITE_E_TRUNCATED, "header says %llu bytes, the file has %llu",
                       (unsigned long long)fsize, (unsigned long long)size);
    if (fsize < (uint64_t)size)
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "header says %llu bytes, the file has %llu (trailing data)",
                       (unsigned long long)fsize, (unsigned long long)size);
    const uint32_t crc = gl_crc32(0, img + GL_CRC_START, size - GL_CRC_START);
    if (crc != gl_rd32(img + GL_OFF_CRC))
        return gl_fail(msg, msg_size, GRULITE_E_CHECKSUM, "checksum mismatch: stored %08lx, computed %08lx",
                       (unsigned long)gl_rd32(img + GL_OFF_CRC), (unsigned long)crc);
    const uint32_t flags = gl_rd32(img + GL_OFF_FLAGS);
    if (gl_rd32(img + GL_OFF_HEADER_SIZE) != GL_HEADER_SIZE ||
        (flags & ~(uint32_t)(GL_FLAG_TIME_MAJOR | GL_FLAG_HEAD_STATE)) != 0)
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "header size %lu / flags %lu not supported",
                       (unsigned long)gl_rd32(img + GL_OFF_HEADER_SIZE), (unsigned long)flags);

    const uint32_t input_size = gl_rd32(img + GL_OFF_INPUT_SIZE), n_layers = gl_rd32(img + GL_OFF_LAYERS);
    const uint32_t word40 = gl_rd32(img + GL_OFF_LAYER_REC), n_tensors = gl_rd32(img + GL_OFF_TENSORS);
    const uint64_t meta_off = gl_rd64(img + GL_OFF_META_OFF), meta_len = gl_rd64(img + GL_OFF_META_LEN);
    size_t table;
    uint32_t n_dense = 0;
    if (version == GL_VERSION_2) {
        n_dense = word40;
        if (n_layers < 1 || n_layers > GRULITE_MAX_LAYERS)
            return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "num_layers %lu outside [1, %d]",
                           (unsigned long)n_layers, GRULITE_MAX_LAYERS);
        if (n_dense > GRULITE_MAX_DENSE)
            return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "num_dense %lu above %d",
                           (unsigned long)n_dense, GRULITE_MAX_DENSE);
        table = GL_HEADER_SIZE + (size_t)n_layers * GL_LAYER_REC + (size_t)n_dense * GL_DENSE_REC_V2;
    } else {
        if (word40 != GL_LAYER_REC)
            return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "layer records of %lu bytes; expected %d",
                           (unsigned long)word40, GL_LAYER_REC);
        if (n_layers < 1 || n_layers > GL_MAX_MODEL_LAYERS)
            return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "%lu layers; a model has 1 to %d",
                           (unsigned long)n_layers, GL_MAX_MODEL_LAYERS);
        table = GL_HEADER_SIZE + (size_t)n_layers * GL_LAYER_REC;
    }
    if (input_size > GRULITE_MAX_FEATURES)
        return gl_fail(msg, msg_size, GRULITE_E_CONFIG, "input_size %lu above %d",
                       (unsigned long)input_size, GRULITE_MAX_FEATURES);
    size_t tables_end;
    if (gl_mul(n_tensors, GL_TENSOR_REC, &tables_end) || gl_add(tables_end, table, &tables_end) ||
        tables_end > size)
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "tensor table (%lu entries) runs past the end of the file",
                       (unsigned long)n_tensors);
    if (meta_off < tables_end || meta_off > size || meta_len > size - meta_off)
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "metadata [%llu, +%llu) outside the file or overlapping the tables",
                       (unsigned long long)meta_off, (unsigned long long)meta_len);

    m->info.input_size = (int32_t)input_size;
    m->info.batch_first = (flags & GL_FLAG_TIME_MAJOR) ? 0 : 1;
    m->info.head_from_state = (flags & GL_FLAG_HEAD_STATE) ? 1 : 0;
    int rc = read_records(m, img, version, n_layers, n_dense, msg, msg_size);
    if (rc || (rc = gl_model_configure(m, msg, msg_size))) return rc;
    if (m->info.head_from_state && m->info.num_dense == 0)
        return gl_fail(msg, msg_size, GRULITE_E_FORMAT, "flags: head-from-state set on a model without a head");

    const uint32_t expected = gl_count_tensors(m);
    if (n_tensors != expected)
        return gl_fail(msg, msg_size, GRULITE_E_TENSOR, "%lu tensors in the table; the configuration needs %lu",
                       (unsigned long)n_tensors, (unsigned long)expected);
    gl_reader r = { m, img, size, table, (size_t)(meta_off + meta_len), n_tensors, 0, cap, placed,
                    msg, msg_size };                 /* metadata ends after the tables */
    if ((rc = gl_each_tensor(m, version, read_fn, &r))) return rc;
    for (int i = 0, n_gru = 0, n_head = 0; i < m->n; i++) {     /* counted as messages count */
        gl_layer *L = &m->layer[i];
        const int index = L->kind == &gl_kind_gru ? n_gru++ : L->kind == &gl_kind_dense ? n_head++ : 0;
        if (L->kind->bind && (rc = L->kind->bind(L, index, msg, msg_size))) return rc;
    }

    m->metadata = (const char *)img + meta_off;
    m->metadata_len = (size_t)meta_len;
    m->image = img;
    m->image_size = size;
    m->info.image_size = size;
    m->info.checksum = crc;
    return GRULITE_OK;
}

/* ---- Loading ----------------------------------------------------------- */

/* What a load needs besides the image, from its header: one block with
 * the model, its layers, then (during the load only) the reader's list of
 * tensor byte ranges.  A header whose counts are out of range gives a plan
 * with no layers: parse_image says what is wrong before reading any. */
typedef struct gl_plan {
    size_t layers, tensors;  /* room for */
    size_t layers_at, placed_at, bytes;
} gl_plan;

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

static void plan_load(const unsigned char *img, size_t size, gl_plan *pl)
{
    size_t layers = 0, tensors = 0;
    if (img && size >= GL_HEADER_SIZE && !memcmp(img, GL_MAGIC, 8)) {
        const uint32_t version = gl_rd32(img + GL_OFF_VERSION), n = gl_rd32(img + GL_OFF_LAYERS);
        const uint32_t word40 = gl_rd32(img + GL_OFF_LAYER_REC), t = gl_rd32(img + GL_OFF_TENSORS);
        if (version == GL_VERSION_2 && n >= 1 && n <= GRULITE_MAX_LAYERS && word40 <= GRULITE_MAX_DENSE)
            layers = (size_t)n + word40;
        else if (version == GRULITE_FORMAT_VERSION && n >= 1 && n <= GL_MAX_MODEL_LAYERS)
            layers = n;
        tensors = t < GL_MAX_TENSORS ? t : GL_MAX_TENSORS;
    }
    pl->layers = layers;
    pl->tensors = tensors;
    pl->layers_at = round16(sizeof(grulite_model));
    pl->placed_at = pl->layers_at + round16(layers * sizeof(gl_layer));
    pl->bytes = pl->placed_at + tensors * 2 * sizeof(size_t);
}

/* Loads the image into block (pl->bytes, zeroed, 16-byte aligned); on
 * success *out is the model at its start. */
static int load_image(const void *data, size_t size, const gl_plan *pl, unsigned char *block,
                      grulite_model **out, char *msg, size_t msg_size)
{
    grulite_model *m = (grulite_model *)(void *)block;
    m->layer = (gl_layer *)(void *)(block + pl->layers_at);
    m->cap = (int32_t)pl->layers;
    int rc = parse_image(m, data, size, (size_t(*)[2])(void *)(block + pl->placed_at),
                         pl->tensors, msg, msg_size);
    if (rc) return rc;
    m->k = gl_kernels_from_env();
    if (!m->k) {
        char names[96];
        gl_isa_list(names, sizeof names);
        return gl_fail(msg, msg_size, GRULITE_E_UNSUPPORTED,
                       "GRULITE_ISA=%.32s: not a kernel set this CPU and build can run (%s)",
                       gl_isa_env(), names);
    }
    *out = m;
    return GRULITE_OK;
}

size_t grulite_model_mem_size(const void *data, size_t size)
{
    gl_plan pl;
    plan_load(data, size, &pl);
    return pl.layers ? pl.bytes + 15 : 0;
}

int grulite_model_load_mem(const void *data, size_t size, void *mem, size_t mem_size,
                           grulite_model **out, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!out) return gl_fail(msg, msg_size, GRULITE_E_ARG, "out is NULL");
    *out = NULL;
    if (!data && size) return gl_fail(msg, msg_size, GRULITE_E_ARG, "data is NULL");
    if (!mem) return gl_fail(msg, msg_size, GRULITE_E_ARG, "mem is NULL");
    if (((uintptr_t)data) % GL_ALIGN != 0)
        return gl_fail(msg, msg_size, GRULITE_E_ALIGN, "image at %p is not 64-byte aligned", data);
    gl_plan pl;
    plan_load(data, size, &pl);
    const size_t skip = (16 - (uintptr_t)mem % 16) % 16;
    if (!pl.layers) {
        /* Not a header a model can be sized from: the checks say why (they
         * stop before any layer is read). */
        grulite_model probe;
        memset(&probe, 0, sizeof probe);
        const int rc = parse_image(&probe, data, size, NULL, 0, msg, msg_size);
        if (rc) return rc;
    }
    if (mem_size < skip || mem_size - skip < pl.bytes)
        return gl_fail(msg, msg_size, GRULITE_E_BUFFER, "%lu bytes of memory given; the model needs %lu "
                       "(grulite_model_mem_size)", (unsigned long)mem_size, (unsigned long)(pl.bytes + 15));
    unsigned char *block = (unsigned char *)mem + skip;
    memset(block, 0, pl.bytes);
    return load_image(data, size, &pl, block, out, msg, msg_size);
}

#if defined(GL_HOSTED)
/* Unmaps / frees an image the library holds. */
static void release(void *owned, void *mapping, size_t mapping_size)
{
#ifdef GL_HAVE_MMAP
    if (mapping) munmap(mapping, mapping_size);
#else
    (void)mapping;
    (void)mapping_size;
#endif
    gl_free_aligned(owned);
}

/* A load into memory of its own: owned (a copy) or mapping are the
 * image's, released with the model. */
static int load_owned(const void *data, size_t size, grulite_model **out, void *owned,
                      void *mapping, size_t mapping_size, char *msg, size_t msg_size)
{
    gl_plan pl;
    plan_load(data, size, &pl);
    unsigned char *block = calloc(1, pl.bytes);
    int rc = block ? load_image(data, size, &pl, block, out, msg, msg_size)
                   : gl_fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory");
    grulite_model *m = (grulite_model *)(void *)block;
    if (m) {
        m->allocated = 1;
        m->owned = owned;
        m->mapping = mapping;
        m->mapping_size = mapping_size;
    }
    if (rc) {
        if (m) grulite_model_free(m);
        else release(owned, mapping, mapping_size);
        *out = NULL;
    }
    return rc;
}

int grulite_model_load_buffer(const void *data, size_t size, int flags,
                              grulite_model **out, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!out) return gl_fail(msg, msg_size, GRULITE_E_ARG, "out is NULL");
    *out = NULL;
    if (!data && size) return gl_fail(msg, msg_size, GRULITE_E_ARG, "data is NULL");
    if (flags & ~GRULITE_LOAD_COPY) return gl_fail(msg, msg_size, GRULITE_E_ARG, "unknown flags");
    if (flags & GRULITE_LOAD_COPY) {
        void *copy = gl_alloc_aligned(size ? size : 1);
        if (!copy) return gl_fail(msg, msg_size, GRULITE_E_NOMEM, "cannot allocate %lu bytes", (unsigned long)size);
        if (size) memcpy(copy, data, size);
        return load_owned(copy, size, out, copy, NULL, 0, msg, msg_size);
    }
    if (((uintptr_t)data) % GL_ALIGN != 0)
        return gl_fail(msg, msg_size, GRULITE_E_ALIGN, "buffer at %p is not 64-byte aligned", data);
    return load_owned(data, size, out, NULL, NULL, 0, msg, msg_size);
}

int grulite_model_load(const char *path, grulite_model **out, char *msg, size_t msg_size)
{
    if (msg && msg_size) msg[0] = '\0';
    if (!out) return gl_fail(msg, msg_size, GRULITE_E_ARG, "out is NULL");
    *out = NULL;
    if (!path) return gl_fail(msg, msg_size, GRULITE_E_ARG, "path is NULL");
#ifdef GL_HAVE_MMAP
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * refused as not a regular file). */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot open the file");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return gl_fail(msg, msg_size, GRULITE_E_IO, "not a regular file");
    }
    if ((uint64_t)st.st_size > (uint64_t)SIZE_MAX) {
        close(fd);
        return gl_fail(msg, msg_size, GRULITE_E_TOO_LARGE, "file too large to map");
    }
    const size_t size = (size_t)st.st_size;
    if (size == 0) {
        close(fd);
        return gl_fail(msg, msg_size, GRULITE_E_TRUNCATED, "file is empty");
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot map the file");
    return load_owned(map, size, out, NULL, map, size, msg, msg_size);
#else
    FILE *f = fopen(path, "rb");
    if (!f) return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot open the file");
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot seek"); }
    long end = ftell(f);
    if (end < 0 || fseek(f, 0, SEEK_SET) != 0) { fclose(f); return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot seek"); }
    const size_t size = (size_t)end;
    void *copy = gl_alloc_aligned(size ? size : 1);
    if (!copy) { fclose(f); return gl_fail(msg, msg_size, GRULITE_E_NOMEM, "out of memory"); }
    if (fread(copy, 1, size, f) != size) {
        fclose(f);
        gl_free_aligned(copy);
        return gl_fail(msg, msg_size, GRULITE_E_IO, "cannot read the file");
    }
    fclose(f);
    return load_owned(copy, size, out, copy, NULL, 0, msg, msg_size);
#endif
}
#endif /* GL_HOSTED */

void grulite_model_free(grulite_model *m)
{
#if defined(GL_HOSTED)
    if (!m || !m->allocated) return;          /* in the caller's memory: nothing to do */
    release(m->owned, m->mapping, m->mapping_size);
    free(m);
#else
    (void)m;
#endif
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

/* The index-th layer of a kind, or NULL. */
static const gl_layer *nth_of_kind(const grulite_model *m, const gl_kind *kind, int index)
{
    for (int i = 0; i < m->n && index >= 0; i++)
        if (m->layer[i].kind == kind && index-- == 0) return &m->layer[i];
    return NULL;
}

int grulite_model_layer(const grulite_model *m, int layer, grulite_layer_info *info)
{
    const gl_layer *L = m && info ? nth_of_kind(m, &gl_kind_gru, layer) : NULL;
    if (!L) return GRULITE_E_ARG;
    *info = L->u.gru.cfg;
    return GRULITE_OK;
}

int grulite_model_dense(const grulite_model *m, int index, grulite_dense_info *info)
{
    const gl_layer *L = m && info ? nth_of_kind(m, &gl_kind_dense, index) : NULL;
    if (!L) return GRULITE_E_ARG;
    *info = L->u.dense.cfg;
    return GRULITE_OK;
}

int grulite_model_embedding(const grulite_model *m, grulite_embedding_info *info)
{
    const gl_layer *L = m && info ? nth_of_kind(m, &gl_kind_embedding, 0) : NULL;
    if (!L) return GRULITE_E_ARG;
    *info = L->u.emb.cfg;
    return GRULITE_OK;
}

double grulite_model_macs(const grulite_model *m)
{
    double w = 0.0;
    for (int l = 0; m && l < m->n_seq; l++) w += m->layer[l].kind->macs(&m->layer[l]);
    return w;
}

int grulite_model_layer_kind(const grulite_model *m, int index)
{
    if (!m || index < 0 || index >= m->n) return GRULITE_E_ARG;
    return m->layer[index].kind->code;
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
