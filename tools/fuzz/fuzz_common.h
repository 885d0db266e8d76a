/* fuzz_common.h - helpers shared by the libFuzzer targets (fuzz_load.c,
 * fuzz_forward.c) and their plain replay driver (replay.c).
 *
 * The targets use the public header only.  Every input starts with one
 * "mode" byte that says how the rest (a .grl image) is presented:
 *
 *   bit 0  recompute the CRC-32 at bytes [12, 16) over [16, end), so that
 *          mutations get past the checksum and reach the structural checks
 *   bit 1  write the image's real size into the file-size field [16, 24)
 *          (applied before the CRC), so that truncations and insertions do
 *          too
 *   bits 2..7  target-specific
 *
 * A broken contract (a failed load that does not set *out to NULL, a
 * message that is not NUL-terminated, a validated model that cannot be
 * converted, streaming that differs from the whole sequence, ...) is
 * reported on stderr and abort()s: libFuzzer treats it as a crash. */
#ifndef GRULITE_FUZZ_COMMON_H
#define GRULITE_FUZZ_COMMON_H

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200112L
#  undef _POSIX_C_SOURCE
#  define _POSIX_C_SOURCE 200809L   /* posix_memalign under -std=c99 */
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grulite.h"

#if defined(__GNUC__)
#  define FZ_UNUSED __attribute__((unused))
#else
#  define FZ_UNUSED
#endif

#define FZ_MODE_RESEAL 1u
#define FZ_MODE_FIXSIZE 2u

#define FZ_REQUIRE(cond, ...)                                                  \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "fuzz contract broken at %s:%d: %s: ", __FILE__,   \
                    __LINE__, #cond);                                          \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* CRC-32 (zlib polynomial), table-driven. */
FZ_UNUSED static uint32_t fz_crc32(const unsigned char *p, size_t n)
{
    static uint32_t table[256];
    static int ready;
    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[i] = c;
        }
        ready = 1;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFFu] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

FZ_UNUSED static void fz_wr32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Applies the mode bits to an image of n bytes, in place. */
FZ_UNUSED static void fz_present(unsigned char *img, size_t n, unsigned mode)
{
    if ((mode & FZ_MODE_FIXSIZE) && n >= 24) {
        fz_wr32(img + 16, (uint32_t)n);
        fz_wr32(img + 20, (uint32_t)((uint64_t)n >> 32));
    }
    if ((mode & FZ_MODE_RESEAL) && n >= 16) fz_wr32(img + 12, fz_crc32(img + 16, n - 16));
}

/* An exact-size heap copy (an over-read is then visible to ASan / valgrind). */
FZ_UNUSED static unsigned char *fz_copy(const unsigned char *data, size_t n)
{
    unsigned char *p = malloc(n ? n : 1);
    if (!p) abort();
    if (n) memcpy(p, data, n);
    return p;
}

/* A 64-byte aligned exact-size copy, for borrowed loads. */
FZ_UNUSED static unsigned char *fz_copy_aligned(const unsigned char *data, size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? n : 1) != 0) abort();
    if (n) memcpy(p, data, n);
    return p;
}

/* A non-NULL pointer that is no model: what *out holds before a load, which
 * must overwrite it (NULL on failure). */
FZ_UNUSED static void *fz_not_null(void)
{
    static char anything;
    return &anything;
}

/* The load-failure contract: *out NULL, a NUL-terminated message within
 * msg_size bytes that is not empty (when msg_size > 1). */
FZ_UNUSED static void fz_check_failure(int rc, const grulite_model *m, const char *msg, size_t msg_size)
{
    FZ_REQUIRE(rc < 0, "rc %d", rc);
    FZ_REQUIRE(m == NULL, "failed load (rc %d) left *out set", rc);
    FZ_REQUIRE(grulite_strerror(rc) != NULL && grulite_strerror(rc)[0], "no text for rc %d", rc);
    if (msg && msg_size) {
        FZ_REQUIRE(memchr(msg, '\0', msg_size) != NULL, "message not NUL-terminated (rc %d)", rc);
        if (msg_size > 1) FZ_REQUIRE(msg[0] != '\0', "empty message (rc %d: %s)", rc, grulite_strerror(rc));
    }
}

/* A small deterministic generator for inputs derived from the fuzz data. */
typedef struct fz_rng {
    uint64_t s;
} fz_rng;

FZ_UNUSED static uint32_t fz_next(fz_rng *r)
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(r->s >> 33);
}

/* Uniform in [-scale, scale]. */
FZ_UNUSED static float fz_uniform(fz_rng *r, float scale)
{
    return scale * ((float)(fz_next(r) & 0xFFFFFF) / (float)0x800000 - 1.0f);
}

#endif /* GRULITE_FUZZ_COMMON_H */
