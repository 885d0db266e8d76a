/*
 * main.c - grulite on a microcontroller: a GRU compiled into flash, run one
 * step at a time with no operating system, no heap and no stdio.
 *
 * The model (model.c) was written by
 *
 *     grulite convert model.npz --head fc --dtype int8 --emit-c model.c --name example_model
 *
 * (here by tools/make_edge_fixtures.py: a torch.nn.GRU(8, 64) with a
 * nn.Linear(64, 4) head).  Everything grulite needs lives in three static
 * arrays sized by grulite_model_mem_size and grulite_stream_mem_size.  The
 * program prints the head's 4 outputs at each of 20 steps in millionths
 * ("step 3: 27412 -42357 129614 55289"), then what memory it used; ctest
 * compares the steps with what grulite gives on the host
 * (expected.txt; docs/edge.md).
 *
 * Board: board.h (semihosting on the Cortex-M4, stdio on a desktop).
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "grulite.h"

extern const unsigned char example_model[];
extern const size_t example_model_size;

#define STEPS 20
#define INPUTS 8
#define OUTPUTS 4

/* The model's descriptors and one stream: sizes checked against the
 * queries at run time (a real product would size them once, from the
 * queries, and keep the check). */
static unsigned char model_mem[2048];
static unsigned char stream_mem[4096];     /* the target: an H = 64 int8 stream in 4 KiB */

static void print_line(const char *label, long v, const char *unit)
{
    char buf[96];
    char *p = buf;
    for (const char *s = label; *s; s++) *p++ = *s;
    p = board_int(p, v);
    for (const char *s = unit; *s; s++) *p++ = *s;
    *p++ = '\n';
    *p = '\0';
    board_write(buf);
}

static int fail(const char *what, int rc, const char *msg)
{
    board_write("error: ");
    board_write(what);
    board_write(": ");
    board_write(grulite_strerror(rc));
    if (msg && *msg) {
        board_write(": ");
        board_write(msg);
    }
    board_write("\n");
    return 1;
}

/* ---- Stack use: the region below the stack pointer is painted before the
 * run and inspected after it. */
#define PAINT_BYTES 16384
#define PAINT 0xA5u

__attribute__((noinline)) static void paint_stack(void)
{
    /* A volatile loop: no call (memset's own frame would be painted over). */
    volatile unsigned char *sp = __builtin_frame_address(0);
    for (volatile unsigned char *p = sp - PAINT_BYTES; p < sp - 256; p++) *p = PAINT;
}

__attribute__((noinline)) static long stack_used(const unsigned char *top)
{
    const unsigned char *low = top - PAINT_BYTES;
    size_t i = 0;
    while (i < PAINT_BYTES - 256 && low[i] == PAINT) i++;
    return (long)(top - (low + i));
}

__attribute__((noinline)) static int run(void)
{
    char msg[120];
    const size_t model_need = grulite_model_mem_size(example_model, example_model_size);
    if (model_need == 0 || model_need > sizeof model_mem) {
        print_line("model_mem too small: need ", (long)model_need, " bytes");
        return 1;
    }
    grulite_model *model = NULL;
    int rc = grulite_model_load_mem(example_model, example_model_size, model_mem,
                                    sizeof model_mem, &model, msg, sizeof msg);
    if (rc) return fail("load", rc, msg);
    grulite_info info;
    grulite_model_info(model, &info);
    if (info.input_size != INPUTS || info.head_size != OUTPUTS) {
        board_write("error: not the model this example was written for\n");
        return 1;
    }

    const size_t stream_need = grulite_stream_mem_size(model, 1, 1);
    if (stream_need == 0 || stream_need > sizeof stream_mem) {
        print_line("stream_mem too small: need ", (long)stream_need, " bytes");
        return 1;
    }
    grulite_stream *stream = NULL;
    rc = grulite_stream_init(model, 1, 1, stream_mem, sizeof stream_mem, &stream);
    if (rc) return fail("stream", rc, NULL);

    for (int t = 0; t < STEPS; t++) {
        float x[INPUTS], head[OUTPUTS];
        for (int i = 0; i < INPUTS; i++)           /* tools/make_edge_fixtures.py: example_input */
            x[i] = (float)((t * 7 + i * 3) % 11 - 5) / 5.0f;
        rc = grulite_stream_step(stream, x, 1, NULL, head);
        if (rc) return fail("step", rc, NULL);
        char line[96];
        char *p = line;
        memcpy(p, "step ", 5);
        p = board_int(p + 5, t);
        *p++ = ':';
        for (int o = 0; o < OUTPUTS; o++) {
            *p++ = ' ';
            const float v = head[o] * 1e6f;
            p = board_int(p, (long)(v + (v >= 0.0f ? 0.5f : -0.5f)));
        }
        *p++ = '\n';
        *p = '\0';
        board_write(line);
    }
    print_line("model image (flash): ", (long)example_model_size, " bytes");
    print_line("model descriptors (RAM): ", (long)model_need, " bytes");
    print_line("stream (RAM): ", (long)stream_need, " bytes");
    return 0;
}

int main(void)
{
    const unsigned char *top = __builtin_frame_address(0);
    paint_stack();
    const int rc = run();
    if (rc == 0) print_line("stack below main (RAM): ", stack_used(top), " bytes");
    return rc;
}
