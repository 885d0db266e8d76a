/* dispatch.c - choosing a kernel set once, at load: the best the CPU
 * supports, or the one GRULITE_ISA / grulite_model_set_isa() names. */
#include <string.h>

#include "internal.h"

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

int gl_kernels_supported(const char *name)
{
    if (!name) return 0;
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
#if defined(GL_HAVE_NEON_KERNELS)
    if (!strcmp(name, "neon")) return 1;
#endif
    return 0;
}

const gl_kernels *gl_kernels_select(const char *name)
{
    if (!name || !*name || !strcmp(name, "auto")) {
#if defined(GL_HAVE_X86_KERNELS)
        if (gl_kernels_supported("avx512vnni")) return &gl_kernels_avx512vnni;
        if (gl_kernels_supported("avx512")) return &gl_kernels_avx512;
        if (gl_kernels_supported("avx2")) return &gl_kernels_avx2;
#endif
#if defined(GL_HAVE_NEON_KERNELS)
        return &gl_kernels_neon;
#endif
        return &gl_kernels_generic;
    }
    if (!gl_kernels_supported(name)) return NULL;
    if (!strcmp(name, "generic")) return &gl_kernels_generic;
#if defined(GL_HAVE_X86_KERNELS)
    if (!strcmp(name, "avx2")) return &gl_kernels_avx2;
    if (!strcmp(name, "avx512")) return &gl_kernels_avx512;
    if (!strcmp(name, "avx512vnni")) return &gl_kernels_avx512vnni;
#endif
#if defined(GL_HAVE_NEON_KERNELS)
    if (!strcmp(name, "neon")) return &gl_kernels_neon;
#endif
    return NULL;
}

int grulite_isa_supported(const char *isa)
{
    return gl_kernels_supported(isa);
}
