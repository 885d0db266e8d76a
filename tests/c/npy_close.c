/*
 * npy_close.c - compares an output of examples/grulite_run with the
 * expected .npy (written by `grulite run`, tools/make_c_example_fixture.py).
 *
 *     npy_close GOT EXPECTED.npy TOL
 *
 * GOT is a .npy (float32, recognised by its magic; its shape must equal
 * EXPECTED's), a text file of whitespace-separated numbers (name ending in
 * .txt), or raw little-endian float32.  Passes when every |got - expected|
 * <= TOL.  Prints "N passed, M failed" (one check per value) and exits
 * non-zero on a mismatch.  Plain C99, no Python.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "npy_close: cannot open %s\n", path); exit(2); }
    size_t n = 0, cap = 1 << 16;
    unsigned char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    fclose(f);
    if (!buf) { fprintf(stderr, "npy_close: out of memory\n"); exit(2); }
    *size = n;
    return buf;
}

/* The data of a float32 .npy image, its count, and its header's shape text. */
static const float *npy_data(const unsigned char *buf, size_t size, size_t *count, char *shape,
                             size_t shape_cap)
{
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0 || buf[6] != 1) return NULL;
    const size_t hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
    if (10 + hlen > size) return NULL;
    char header[1024];
    if (hlen >= sizeof header) return NULL;
    memcpy(header, buf + 10, hlen);
    header[hlen] = '\0';
    if (!strstr(header, "'descr': '<f4'") || !strstr(header, "'fortran_order': False")) return NULL;
    const char *s = strstr(header, "'shape': (");
    const char *e = s ? strchr(s, ')') : NULL;
    if (!e || (size_t)(e - s) >= shape_cap) return NULL;
    memcpy(shape, s, (size_t)(e - s));
    shape[e - s] = '\0';
    *count = (size - 10 - hlen) / sizeof(float);
    return (const float *)(const void *)(buf + 10 + hlen);   /* 64-byte aligned offset */
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: npy_close GOT EXPECTED.npy TOL\n");
        return 2;
    }
    const double tol = atof(argv[3]);
    size_t esize, gsize, n_exp = 0, n_got = 0;
    unsigned char *ebuf = read_file(argv[2], &esize), *gbuf = read_file(argv[1], &gsize);
    char eshape[256], gshape[256];
    const float *expected = npy_data(ebuf, esize, &n_exp, eshape, sizeof eshape);
    if (!expected) { fprintf(stderr, "npy_close: %s is not a float32 .npy\n", argv[2]); return 2; }

    float *got = NULL;
    const size_t glen = strlen(argv[1]);
    if (gsize >= 6 && memcmp(gbuf, "\x93NUMPY", 6) == 0) {
        const float *g = npy_data(gbuf, gsize, &n_got, gshape, sizeof gshape);
        if (!g) { fprintf(stderr, "npy_close: %s is not a float32 .npy\n", argv[1]); return 2; }
        if (strcmp(gshape, eshape) != 0) {
            printf("FAIL shape %s), expected %s)\n0 passed, 1 failed\n", gshape + 9, eshape + 9);
            return 1;
        }
        got = malloc(n_got * sizeof(float) + 1);
        if (got) memcpy(got, g, n_got * sizeof(float));
    } else if (glen > 4 && strcmp(argv[1] + glen - 4, ".txt") == 0) {
        got = malloc((n_exp + 1) * sizeof(float));
        char *text = malloc(gsize + 1), *p = text, *end;
        if (!got || !text) return 2;
        memcpy(text, gbuf, gsize);
        text[gsize] = '\0';
        for (;;) {
            const float v = strtof(p, &end);
            if (end == p) break;
            if (n_got <= n_exp) got[n_got] = v;
            n_got++;
            p = end;
        }
        free(text);
    } else {
        n_got = gsize / sizeof(float);
        got = malloc(n_got * sizeof(float) + 1);
        if (got) memcpy(got, gbuf, n_got * sizeof(float));
    }
    if (!got) return 2;
    if (n_got != n_exp) {
        printf("FAIL %s holds %lu values, expected %lu\n0 passed, 1 failed\n", argv[1],
               (unsigned long)n_got, (unsigned long)n_exp);
        return 1;
    }
    size_t passed = 0, failed = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n_exp; i++) {
        const double d = fabs((double)got[i] - (double)expected[i]);
        if (d <= tol) {
            passed++;
        } else {
            if (failed++ < 5)
                printf("FAIL [%lu]: got %.9g, expected %.9g\n", (unsigned long)i, (double)got[i],
                       (double)expected[i]);
        }
        if (!(d <= worst)) worst = d;
    }
    printf("%s vs %s: %lu values, max |diff| %.3g (tolerance %.3g)\n", argv[1], argv[2],
           (unsigned long)n_exp, worst, tol);
    printf("%lu passed, %lu failed\n", (unsigned long)passed, (unsigned long)failed);
    free(got);
    free(gbuf);
    free(ebuf);
    return failed ? 1 : 0;
}
