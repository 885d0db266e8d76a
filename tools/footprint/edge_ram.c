/*
 * edge_ram.c - what a model needs beside its weights, from the library's
 * own queries: for each .grl file named, its image size (flash), the
 * model's descriptors (grulite_model_mem_size), a one-step stream of one
 * sequence (grulite_stream_mem_size) and a workspace for one sequence of
 * 100 steps (grulite_workspace_mem_size).  Built for a 64-bit and a 32-bit
 * target by tools/edge_footprint.py (pointer sizes change the descriptors).
 * Prints one line per file: "name image model stream workspace".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grulite.h"

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) { fprintf(stderr, "%s: cannot open\n", argv[i]); return 1; }
        static unsigned char img[1 << 22] __attribute__((aligned(64)));
        const size_t n = fread(img, 1, sizeof img, f);
        fclose(f);
        static unsigned char mem[1 << 16];
        char msg[200];
        grulite_model *m = NULL;
        const int rc = grulite_model_load_mem(img, n, mem, sizeof mem, &m, msg, sizeof msg);
        if (rc) { fprintf(stderr, "%s: %s\n", argv[i], msg); return 1; }
        printf("%s %lu %lu %lu %lu\n", argv[i], (unsigned long)n,
               (unsigned long)grulite_model_mem_size(img, n),
               (unsigned long)grulite_stream_mem_size(m, 1, 1),
               (unsigned long)grulite_workspace_mem_size(m, 1, 100));
    }
    return 0;
}
