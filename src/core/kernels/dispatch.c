/* dispatch.c - choosing a kernel set once, at load: the best the CPU
 * supports, or the one GRULITE_ISA / grulite_model_set_isa() names. */
#include <stdlib.h>
#include <string.h>

#include "../internal.h"

#if defined(GL_HAVE_NEONDOT_KERNELS)
#  include <sys/auxv.h>
#  ifndef HWCAP_ASIMDDP
#    define HWCAP_ASIMDDP (1UL << 20)      /* Linux's arm64 hwcap bit for SDOT / UDOT */
#  endif
#endif

#if defined(GL_HAVE_NEON_KERNELS) && defined(__arm__)
/* 32-bit ARM: NEON and VFPv4 (fused multiply-add, half conversions) are
 * optional; Linux's arm hwcap bits (its asm/hwcap.h names). */
#  include <sys/auxv.h>
#  define GL_HWCAP_NEON (1UL << 12)
#  define GL_HWCAP_VFPv4 (1UL << 16)
#endif

#if defined(GL_HAVE_X86_KERNELS) && defined(__clang__)
/* Older clang (e.g. 14) rejects __builtin_cpu_supports("f16c"): ask CPUID
 * (leaf 1, ECX bit 29) directly. */
#  include <cpuid.h>
static int gl_cpu_f16c(void)
{
    unsigned int a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && ((c >> 29) & 1u);
}
#  define GL_CPU_F16C() gl_cpu_f16c()
#else
#  define GL_CPU_F16C() __builtin_cpu_supports("f16c")
#endif

/* Every kernel set the library knows, plainest first: the one list of
 * their names.  `k` is NULL where this build has no such set. */
typedef struct gl_isa {
    const char *name;
    const gl_kernels *k;
} gl_isa;

static const gl_isa gl_isas[] = {
    { "generic", &gl_kernels_generic },
#if defined(GL_HAVE_X86_KERNELS)
    { "avx2", &gl_kernels_avx2 },
    { "avx512", &gl_kernels_avx512 },
    { "avx512vnni", &gl_kernels_avx512vnni },
#else
    { "avx2", NULL },
    { "avx512", NULL },
    { "avx512vnni", NULL },
#endif
#if defined(GL_HAVE_NEON_KERNELS)
    { "neon", &gl_kernels_neon },
#else
    { "neon", NULL },
#endif
#if defined(GL_HAVE_NEONDOT_KERNELS)
    { "neondot", &gl_kernels_neondot },
#else
    { "neondot", NULL },
#endif
};

#define GL_N_ISAS ((int)(sizeof gl_isas / sizeof gl_isas[0]))

/* Whether the running CPU has what set `name` needs (the build aside). */
static int cpu_runs(const char *name)
{
    if (!strcmp(name, "generic")) return 1;
#if defined(GL_HAVE_X86_KERNELS)
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     GL_CPU_F16C();
    if (!strcmp(name, "avx2")) return avx2;
    const int avx512 = avx2 && __builtin_cpu_supports("avx512f");
    if (!strcmp(name, "avx512")) return avx512;
    if (!strcmp(name, "avx512vnni"))
        return avx512 && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#if defined(GL_HAVE_NEON_KERNELS) && defined(__arm__)
    if (!strcmp(name, "neon")) {
        const unsigned long need = GL_HWCAP_NEON | GL_HWCAP_VFPv4;
        return (getauxval(AT_HWCAP) & need) == need;
    }
#elif defined(GL_HAVE_NEON_KERNELS)
    if (!strcmp(name, "neon")) return 1;    /* part of every aarch64 CPU */
#endif
#if defined(GL_HAVE_NEONDOT_KERNELS)
    if (!strcmp(name, "neondot")) return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#endif
    return 0;
}

int gl_kernels_supported(const char *name)
{
    for (int i = 0; name && i < GL_N_ISAS; i++)
        if (!strcmp(gl_isas[i].name, name)) return gl_isas[i].k != NULL && cpu_runs(name);
    return 0;
}

const gl_kernels *gl_kernels_select(const char *name)
{
    if (!name || !*name || !strcmp(name, "auto")) {
        for (int i = GL_N_ISAS - 1; i > 0; i--)      /* the most specific that runs */
            if (gl_isas[i].k && cpu_runs(gl_isas[i].name)) return gl_isas[i].k;
        return &gl_kernels_generic;
    }
    for (int i = 0; i < GL_N_ISAS; i++)
        if (!strcmp(gl_isas[i].name, name))
            return gl_isas[i].k && cpu_runs(name) ? gl_isas[i].k : NULL;
    return NULL;
}

const char *gl_isa_env(void)
{
#if defined(GL_HOSTED)
    return getenv("GRULITE_ISA");
#else
    return NULL;                       /* no environment: the best set that runs */
#endif
}

const gl_kernels *gl_kernels_from_env(void)
{
    return gl_kernels_select(gl_isa_env());
}

int grulite_isa_supported(const char *isa)
{
    return gl_kernels_supported(isa);
}

const char *grulite_isa_name(int index)
{
    return index >= 0 && index < GL_N_ISAS ? gl_isas[index].name : NULL;
}

const char *grulite_isa_default(void)
{
    const gl_kernels *k = gl_kernels_from_env();
    return k ? k->name : NULL;
}

int gl_isa_list(char *buf, size_t size)
{
    size_t used = 0;
    if (!size) return 0;
    buf[0] = '\0';
    for (int i = 0; i < GL_N_ISAS; i++) {
        const size_t n = strlen(gl_isas[i].name);
        if (used + n + 3 > size) break;
        if (i) { memcpy(buf + used, ", ", 2); used += 2; }
        memcpy(buf + used, gl_isas[i].name, n + 1);
        used += n;
    }
    return (int)used;
}
