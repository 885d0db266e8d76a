/*
 * bochs_shim.c - preloaded (LD_PRELOAD) into the Python that runs
 * tools/emu/x86emu.py, for two reasons:
 *
 * 1. bochscpu-python 0.4.0's wheel says manylinux_2_28, but its extension
 *    imports two names that glibc 2.38 introduced (C23's strtoull and
 *    sscanf).  On an older glibc (Debian 12 has 2.36) it fails to import;
 *    these two forward to the C library's own.
 *
 * 2. Which CPU Bochs models.  The wheel asks its parameter "cpu.model"
 *    through sim_get_param_enum(), an exported function that a preloaded
 *    library can stand in for.  With EMU_CPU_MODEL set (an index into
 *    Bochs's CPU database; x86emu.py maps the names), the model parameter
 *    answers that index; every other parameter is the wheel's own.
 *
 * Build: cc -shared -fPIC -O2 bochs_shim.c -o libbochs_shim.so -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

unsigned long long __isoc23_strtoull(const char *s, char **end, int base);
int __isoc23_sscanf(const char *s, const char *format, ...);
void *sim_get_param_enum(const char *name);

unsigned long long __isoc23_strtoull(const char *s, char **end, int base)
{
    return strtoull(s, end, base);
}

int __isoc23_sscanf(const char *s, const char *format, ...)
{
    va_list ap;
    va_start(ap, format);
    const int n = vsscanf(s, format, ap);
    va_end(ap);
    return n;
}

typedef void *(*get_enum_fn)(const char *);
typedef void *(*new_enum_fn)(const char *, const char **, unsigned);

void *sim_get_param_enum(const char *name)
{
    static get_enum_fn wheel_get;
    static void *model;
    if (!wheel_get) wheel_get = (get_enum_fn)dlsym(RTLD_NEXT, "sim_get_param_enum");
    const char *index = getenv("EMU_CPU_MODEL");
    if (!index || strcmp(name, "cpu.model") != 0) return wheel_get(name);
    if (!model) {
        /* The wheel's constructor of enum parameters, found in the object
         * that is asking (the extension is loaded RTLD_LOCAL). */
        Dl_info info;
        void *ext = NULL;
        if (dladdr(__builtin_return_address(0), &info) && info.dli_fname)
            ext = dlopen(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
        new_enum_fn new_enum = ext ? (new_enum_fn)dlsym(ext, "sim_new_param_enum") : NULL;
        if (!new_enum) {
            fprintf(stderr, "bochs_shim: sim_new_param_enum not found; the default CPU model\n");
            return wheel_get(name);
        }
        /* Bochs reads the model as the parameter's index; the labels are
         * only printed. */
        static char labels[64][8];
        static const char *list[65];
        for (int i = 0; i < 64; i++) {
            snprintf(labels[i], sizeof labels[i], "m%d", i);
            list[i] = labels[i];
        }
        list[64] = NULL;
        model = new_enum("model", list, (unsigned)atoi(index) % 64u);
    }
    return model;
}
