/*
 * grulite_run.c - run a .grl model from plain C, no Python: the same
 * numbers as `grulite run`.
 *
 *     grulite_run MODEL.grl [INPUT] [-o OUTPUT] [options]
 *
 * INPUT (a file, or "-" / nothing for standard input) holds float sequences
 * of shape (N, T, input_size), batch-first, or one sequence (T, input_size):
 *   - a .npy file (format 1.0-3.0, little-endian float32 or float64, C order),
 *     recognised by its magic bytes, so `grulite run`'s inputs work as they are;
 *   - otherwise raw little-endian float32: --steps T gives T, and N follows
 *     from the length; without --steps it is one sequence.
 * Output: the head (N, head_size) for models with a head, else y
 * (N, T, D*H); --outputs picks.  -o NAME.npy writes a .npy (float32, as
 * `grulite run -o` does), any other name raw float32; without -o, text on
 * standard output: one line per sequence (head) or per step (y), "%.9g".
 *
 * Options:
 *   --outputs head|y   what to write (default: head if the model has one, else y)
 *   --steps T          raw input: steps per sequence
 *   --batch-size N     sequences per grulite_forward call (default 256)
 *   --threads N        threads for a call (default: GRULITE_NUM_THREADS or all CPUs)
 *   --isa NAME         kernel set: generic, avx2, avx512, avx512vnni, neon, auto
 *   -v                 print the model, kernel set and memory use on stderr
 *
 * Example (the model from `grulite convert digits.npz -o digits.grl --head fc:softmax`):
 *
 *     grulite_run digits.grl x.npy -o probs.npy      # == grulite run digits.grl x.npy -o probs.npy
 *     cat x.f32 | grulite_run digits.grl --steps 10  # text, one line per sequence
 *
 * Build: cmake (target grulite_run), or
 *     cc -O2 -Iinclude examples/grulite_run.c src/core/[a-z]*.c -lm -lpthread -o grulite_run
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grulite.h"

#if defined(_WIN32)
#  include <fcntl.h>
#  include <io.h>
#endif

static const char *g_prog = "grulite_run";

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "%s: %s%s%s\n", g_prog, what, detail ? ": " : "", detail ? detail : "");
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory", NULL);
    return p;
}

/* ---- Input ------------------------------------------------------------------- */

/* The whole of `path` ("-": standard input) in memory; *size gets its length. */
static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) die("cannot open", path);
#if defined(_WIN32)
    if (f == stdin) _setmode(_fileno(stdin), _O_BINARY);
#endif
    size_t n = 0, cap = 1 << 16;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap > SIZE_MAX / 2) die("input too large", path);
        unsigned char *nb = realloc(buf, cap *= 2);
        if (!nb) die("out of memory", NULL);
        buf = nb;
    }
    if (ferror(f)) die("cannot read", path);
    if (f != stdin) fclose(f);
    *size = n;
    return buf;
}

static uint32_t rd_le(const unsigned char *p, int bytes)
{
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* Input sequences as float32: x (N*T*I floats), ndim 3, or 2 for one (T, I). */
typedef struct input {
    float *x;
    size_t N, T, I;
    int ndim;
} input;

/* Parses a .npy image: float32 / float64, little-endian, C order, 2 or 3 dims. */
static void parse_npy(const unsigned char *buf, size_t size, const char *path, input *in)
{
    if (size < 10) die("truncated .npy file", path);
    const int major = buf[6];
    const size_t lenbytes = major == 1 ? 2 : 4;
    if (major < 1 || major > 3 || size < 8 + lenbytes) die("unsupported .npy version", path);
    const size_t hlen = rd_le(buf + 8, (int)lenbytes), start = 8 + lenbytes;
    if (hlen > size - start) die("truncated .npy header", path);
    char *h = xmalloc(hlen + 1);
    memcpy(h, buf + start, hlen);
    h[hlen] = '\0';

    const char *d = strstr(h, "'descr'");
    int itemsize = 0;
    if (d && (d = strchr(d + 7, '\'')) != NULL) {
        if (!strncmp(d, "'<f4'", 5)) itemsize = 4;
        else if (!strncmp(d, "'<f8'", 5)) itemsize = 8;
    }
    if (!itemsize) die("expected a little-endian float32 or float64 .npy array", path);
    const char *fo = strstr(h, "'fortran_order'");
    if (!fo || !strstr(fo, "False")) die("expected a C-order .npy array", path);
    const char *s = strstr(h, "'shape'");
    s = s ? strchr(s, '(') : NULL;
    if (!s) die("no shape in the .npy header", path);
    size_t dims[4];
    int nd = 0;
    for (s++; *s && *s != ')';) {
        char *end;
        const unsigned long long v = strtoull(s, &end, 10);
        if (end == s) { s++; continue; }   /* ", " */
        if (nd == 4) die("expected 2 or 3 dimensions", path);
        dims[nd++] = (size_t)v;
        s = end;
    }
    free(h);
    if (nd != 2 && nd != 3) die("expected an array of shape (N, steps, input_size) or (steps, input_size)", path);
    in->ndim = nd;
    in->N = nd == 3 ? dims[0] : 1;
    in->T = dims[nd - 2];
    in->I = dims[nd - 1];
    const size_t count = in->N * in->T * in->I;
    if ((in->T && in->I && count / in->T / in->I != in->N) || count > (size - start - hlen) / (size_t)itemsize)
        die("the .npy data is shorter than its shape", path);
    const unsigned char *data = buf + start + hlen;
    in->x = xmalloc(count * sizeof(float));
    if (itemsize == 4) {
        memcpy(in->x, data, count * sizeof(float));
    } else {
        for (size_t i = 0; i < count; i++) {
            double v;
            memcpy(&v, data + 8 * i, 8);
            in->x[i] = (float)v;
        }
    }
}

/* ---- Output ------------------------------------------------------------------ */

/* A .npy 1.0 header as numpy writes it, padded so the data starts at a
 * multiple of 64 bytes. */
static void write_npy(FILE *f, const float *v, const size_t *shape, int nd)
{
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    for (int i = 0; i < nd; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%llu", i ? ", " : "",
                      (unsigned long long)shape[i]);
    n += snprintf(dict + n, sizeof dict - (size_t)n, "%s), }", nd == 1 ? "," : "");
    size_t total = 10 + (size_t)n + 1;
    const size_t pad = (64 - total % 64) % 64;
    total += pad;
    unsigned char pre[10] = { 0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0 };
    pre[8] = (unsigned char)((total - 10) & 0xFF);
    pre[9] = (unsigned char)((total - 10) >> 8);
    size_t count = 1;
    for (int i = 0; i < nd; i++) count *= shape[i];
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(dict, 1, (size_t)n, f) == (size_t)n;
    for (size_t i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF && fwrite(v, sizeof(float), count, f) == count;
    if (!ok) die("cannot write the output", NULL);
}

static int ends_with(const char *s, const char *suffix)
{
    const size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

/* ---- main -------------------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
            "usage: %s MODEL.grl [INPUT|-] [-o OUTPUT[.npy]] [--outputs head|y] [--steps T]\n"
            "       [--batch-size N] [--threads N] [--isa NAME] [-v]\n"
            "INPUT: .npy (N, steps, input_size) or (steps, input_size), or raw float32\n"
            "(--steps T); standard input when absent.  See the top of examples/grulite_run.c.\n",
            g_prog);
    exit(2);
}

static long parse_count(const char *s, const char *opt)
{
    char *end;
    const long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || v < 0 || v > (1L << 30)) die("bad number for", opt);
    return v;
}

int main(int argc, char **argv)
{
    const char *model_path = NULL, *in_path = "-", *out_path = NULL, *outputs = NULL;
    const char *isa = NULL;
    long steps = 0, batch_size = 256, threads = 0;
    int verbose = 0, n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const int has_val = i + 1 < argc;
        if (!strcmp(a, "-o") && has_val) out_path = argv[++i];
        else if (!strcmp(a, "--outputs") && has_val) outputs = argv[++i];
        else if (!strcmp(a, "--steps") && has_val) steps = parse_count(argv[++i], a);
        else if (!strcmp(a, "--batch-size") && has_val) batch_size = parse_count(argv[++i], a);
        else if (!strcmp(a, "--threads") && has_val) threads = parse_count(argv[++i], a);
        else if (!strcmp(a, "--isa") && has_val) isa = argv[++i];
        else if (!strcmp(a, "-v")) verbose = 1;
        else if (!strcmp(a, "-h") || !strcmp(a, "--help")) usage();
        else if (a[0] == '-' && a[1] != '\0') usage();
        else if (n_pos == 0) { model_path = a; n_pos++; }
        else if (n_pos == 1) { in_path = a; n_pos++; }
        else usage();
    }
    if (!model_path) usage();
    const uint16_t one = 1;
    if (*(const unsigned char *)&one != 1) die("this example reads little-endian data only", NULL);

    /* The model: mapped read-only, validated; the kernel set chosen. */
    grulite_model *model = NULL;
    char msg[256];
    int rc = grulite_model_load(model_path, &model, msg, sizeof msg);
    if (rc < 0) die(grulite_strerror(rc), msg[0] ? msg : model_path);
    if (isa && (rc = grulite_model_set_isa(model, isa)) < 0) die(grulite_strerror(rc), isa);
    grulite_info info;
    grulite_model_info(model, &info);
    const int head = outputs ? !strcmp(outputs, "head") : info.num_dense > 0;
    if (outputs && strcmp(outputs, "head") && strcmp(outputs, "y")) die("--outputs: expected head or y", outputs);
    if (head && info.num_dense == 0) die("--outputs head: the model has no head", NULL);

    /* The input, as float32 (N, T, I). */
    size_t size = 0;
    unsigned char *buf = read_all(in_path, &size);
    input in;
    memset(&in, 0, sizeof in);
    if (size >= 6 && !memcmp(buf, "\x93NUMPY", 6)) {
        parse_npy(buf, size, in_path, &in);
    } else {
        const size_t floats = size / sizeof(float), I = (size_t)info.input_size;
        if (size % sizeof(float) != 0) die("raw input: length is not a whole number of float32", in_path);
        in.I = I;
        in.T = steps ? (size_t)steps : floats / I;
        in.ndim = steps ? 3 : 2;
        in.N = steps ? floats / (in.T * I) : 1;
        if (in.T == 0 || in.N * in.T * I != floats) {
            snprintf(msg, sizeof msg, "raw input of %lu floats is not N sequences of %lu steps x %lu features",
                     (unsigned long)floats, (unsigned long)in.T, (unsigned long)I);
            die(msg, in_path);
        }
        in.x = xmalloc(floats * sizeof(float));
        memcpy(in.x, buf, floats * sizeof(float));
    }
    free(buf);
    if (in.I != (size_t)info.input_size) {
        snprintf(msg, sizeof msg, "the input has %lu features; the model expects %d",
                 (unsigned long)in.I, info.input_size);
        die(msg, in_path);
    }
    if (in.T == 0 || in.T > INT32_MAX) die("the input has no steps", in_path);

    /* Run in batches: the workspace grows to what one batch needs. */
    const size_t N = in.N, T = in.T;
    const size_t row = head ? (size_t)info.head_size : T * (size_t)info.output_size;
    float *out = xmalloc(N * row * sizeof(float));
    grulite_workspace *ws = grulite_workspace_new();
    if (!ws) die("out of memory", NULL);
    if (threads) grulite_workspace_set_threads(ws, (int)threads);
    const size_t bs = batch_size > 0 ? (size_t)batch_size : 1;
    for (size_t i = 0; i < N; i += bs) {
        grulite_run run;
        memset(&run, 0, sizeof run);
        run.batch = (int32_t)(N - i < bs ? N - i : bs);
        run.steps = (int32_t)T;
        run.batch_first = 1;
        run.x = in.x + i * T * in.I;
        if (head) run.head = out + i * row;
        else run.y = out + i * row;
        rc = grulite_forward(model, ws, &run);
        if (rc < 0) die("grulite_forward", grulite_strerror(rc));
    }
    if (verbose)
        fprintf(stderr, "%s: %s: input %d, %d layer(s), %s %lu x %lu; kernel set %s, "
                "%d thread(s); model image %lu bytes, workspace %lu bytes\n",
                g_prog, model_path, info.input_size, info.num_layers, head ? "head" : "y",
                (unsigned long)N, (unsigned long)row, grulite_model_isa(model),
                grulite_workspace_threads(ws), (unsigned long)info.image_size,
                (unsigned long)grulite_workspace_bytes(ws));

    /* Write: .npy, raw float32, or text. */
    size_t shape[3];
    int nd = 0;
    if (in.ndim == 3) shape[nd++] = N;
    if (!head) shape[nd++] = T;
    shape[nd++] = head ? (size_t)info.head_size : (size_t)info.output_size;
    if (out_path) {
        FILE *f = fopen(out_path, "wb");
        if (!f) die("cannot create", out_path);
        if (ends_with(out_path, ".npy")) write_npy(f, out, shape, nd);
        else if (fwrite(out, sizeof(float), N * row, f) != N * row) die("cannot write", out_path);
        if (fclose(f) != 0) die("cannot write", out_path);
    } else {
        const size_t width = shape[nd - 1];
        for (size_t j = 0; j < N * row; j++)
            printf("%.9g%c", (double)out[j], (j + 1) % width ? ' ' : '\n');
        if (fflush(stdout) != 0) die("cannot write the output", NULL);
    }

    grulite_workspace_free(ws);
    grulite_model_free(model);
    free(out);
    free(in.x);
    return 0;
}
