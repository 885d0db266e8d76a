/* kernels.h - the kernel interface: packed weight panels and the table of
 * functions each instruction set provides (generic C, AVX2+FMA, AVX-512,
 * NEON).
 *
 * Weight layout ("panel16", the same on every ISA): a matrix from K inputs
 * to G gates of H outputs each (G = 3 for a GRU's r, z, n; 1 for a dense
 * layer) is stored as nb = ceil(H / 16) blocks of shape (K, G, 16):
 *
 *     w[b][k][g][l] = weight from input k to output g*H + 16*b + l
 *
 * and zero where 16*b + l >= H.  For a fixed block, one step of k reads
 * G*16 contiguous floats: one AVX-512 register per gate, two AVX2, four
 * NEON.  Biases are (nb, G, 16), and so is every row of a product, so a
 * bias, a product and a gate vector share one index: (b*G + g)*16 + l.
 *
 * Every kernel computes each output as bias + x[0]*w[0] + x[1]*w[1] + ...
 * with one accumulator, k ascending.  Results therefore do not depend on
 * how many rows are computed together or on which thread: a stream, a
 * batch and a threaded batch give the same bits on one ISA.  (NaNs aside:
 * where two NaN operands meet, the compiler's choice of FMA form decides
 * which one comes out, and that choice differs between kernels.) */
#ifndef GRULITE_KERNELS_H
#define GRULITE_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "grulite.h"

#define GL_LANES 16

/* Weights are float32, float16 (IEEE half), bfloat16 or int8 with one float32 scale
 * per output: w = q * scale[output], so a product is
 * bias + scale * sum_k x[k] * q[k] (the chain runs over x * q, and is
 * scaled once at the end). */
typedef struct gl_panel {
    const void *w;    /* (nb, K, G, 16) of float / uint16_t (half, bfloat16); int8: below */
    const float *b;   /* (nb, G, 16), or NULL for no bias */
    const float *scale; /* (nb, G, 16) for int8 weights, else NULL */
    int dtype;        /* GRULITE_DTYPE_F32 / _F16 / _BF16 / _I8 */
    size_t K;         /* inputs */
    size_t G;         /* gates (3 for a GRU, 1 for a dense layer) */
    size_t H;         /* outputs per gate */
    size_t nb;        /* ceil(H / 16) */
} gl_panel;

/* Elements of a packed matrix (float32 / float16 / bfloat16 layout). */
static inline size_t gl_panel_floats(size_t K, size_t G, size_t H)
{
    return ((H + GL_LANES - 1) / GL_LANES) * K * G * GL_LANES;
}

/* int8 panels keep 4 consecutive inputs of a lane together, the unit of
 * the dot-product instructions (AVX-512 VNNI vpdpbusd, NEON sdot):
 * (nb, ceil(K/4), G, 16, 4) bytes, each the weight q + 128 (q in
 * [-127, 127]; zero-point 128, so q = byte ^ 0x80 as int8).  Padding
 * inputs hold q = 0. */
static inline size_t gl_panel_k4(size_t K)
{
    return (K + 3) / 4;
}

/* Elements of panel p's matrix in its own dtype's layout. */
static inline size_t gl_panel_elems(const gl_panel *p)
{
    const size_t K = p->dtype == GRULITE_DTYPE_I8 ? 4 * gl_panel_k4(p->K) : p->K;
    return p->nb * K * p->G * GL_LANES;
}

/* Bytes of one stored weight of a dtype (float32, IEEE half, bfloat16, int8). */
static inline size_t gl_dtype_bytes(int dtype)
{
    return dtype == GRULITE_DTYPE_F16 || dtype == GRULITE_DTYPE_BF16 ? 2
           : dtype == GRULITE_DTYPE_I8 ? 1 : 4;
}

/* Bytes of panel p's matrix. */
static inline size_t gl_panel_bytes(const gl_panel *p)
{
    return gl_panel_elems(p) * gl_dtype_bytes(p->dtype);
}

/* Byte offsets in an int8 panel of vectors v .. v+n-1 of a product over
 * gates [g0, g0+gc) (vector v is block v / gc, gate g0 + v % gc), and
 * their slots in a y row; one division, then steps. */
static inline void gl_panel_offsets_q(const gl_panel *p, size_t g0, size_t gc, size_t v,
                                      size_t n, size_t *woff, size_t *yoff)
{
    size_t b = v / gc, g = g0 + v % gc;
    for (size_t j = 0; j < n; j++) {
        woff[j] = (b * gl_panel_k4(p->K) * p->G + g) * GL_LANES * 4;
        yoff[j] = (b * p->G + g) * GL_LANES;
        if (++g == g0 + gc) { g = g0; b++; }
    }
}

/* Index of the weight from input k to output 16*b + l of gate g. */
static inline size_t gl_panel_index(const gl_panel *p, size_t b, size_t k, size_t g, size_t l)
{
    if (p->dtype == GRULITE_DTYPE_I8)
        return (((b * gl_panel_k4(p->K) + k / 4) * p->G + g) * GL_LANES + l) * 4 + k % 4;
    return ((b * p->K + k) * p->G + g) * GL_LANES + l;
}

/* float <-> IEEE half, round to nearest even (kernels/ref.c). */
float gl_half_to_float(uint16_t h);
uint16_t gl_float_to_half(float f);

/* bfloat16 -> float: the 16 bits become float32's top half (exact). */
static inline float gl_bf16_to_float(uint16_t b)
{
    const uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* float -> bfloat16, round to nearest even (as torch's .to(torch.bfloat16));
 * a NaN stays a (quiet) NaN, overflow rounds to infinity. */
static inline uint16_t gl_float_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7FFFu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

/* Stored weight i of panel p as a float: int8 gives its code q, unscaled. */
static inline float gl_panel_weight(const gl_panel *p, size_t i)
{
    switch (p->dtype) {
    case GRULITE_DTYPE_F16: return gl_half_to_float(((const uint16_t *)p->w)[i]);
    case GRULITE_DTYPE_BF16: return gl_bf16_to_float(((const uint16_t *)p->w)[i]);
    case GRULITE_DTYPE_I8: return (float)((int)((const uint8_t *)p->w)[i] - 128);
    default: return ((const float *)p->w)[i];
    }
}

/* A GRU direction's activations when they are not the default sigmoid /
 * tanh without clip: f for the gates r and z, g for the candidate n
 * (GRULITE_ACT_*, with their alpha and beta), and clip > 0 to bound each
 * pre-activation to [-clip, clip] first (0: none). */
typedef struct gl_gate_fns {
    int f, g;
    float f_alpha, f_beta, g_alpha, g_beta;
    float clip;
} gl_gate_fns;

/* One step of one row, PyTorch variant: with ih, xp = W_ih xin + b_ih
 * (else xp holds it already); hp = W_hh x + b_hh (all three gates of
 * every block of hh, as gemm; x: the whole state, K floats); and hn = the
 * new state of hh's units (gates_after, or gates_after_fn with fn, from
 * their old state h: x itself, or its part when hh is some blocks of a
 * panel).  A set may compute them block by block, a block's gates while
 * the next block's weights arrive: the values are gemm's and the gates'
 * all the same, in whichever order of blocks.  With `down`, a set that
 * goes block by block takes the last first (callers alternate it between
 * steps, so a step begins with the weights the last one ended with, still
 * in L1).  h, hn: nb*16 floats; hn must not overlap x or h; xp, hp:
 * nb*3*16; tmp as gemm's for one row. */
typedef struct gl_step {
    const gl_panel *hh, *ih;     /* ih: NULL when xp is given */
    const float *x, *h, *xin;
    float *xp, *hp, *hn;
    const gl_gate_fns *fn;       /* NULL: the default gates */
    int down;
    void *tmp;
} gl_step;

typedef struct gl_kernels {
    const char *name;

    /* y[r][(b*G + g)*16 + l] = bias + sum_k x[r][k] * w[b][k][g][l]
     * (int8: bias + scale * sum_k x[r][k] * q[b][k][g][l]), any dtype
     * for rows r < rows, every block b, and gates g0 <= g < g0 + gc (other
     * gates' slots are left alone).  x rows are ldx floats apart, y rows
     * ldy (>= nb*G*16).  x and y must not overlap.  tmp: scratch of
     * gl_gemm_tmp_bytes(rows, K) bytes (64-aligned) for kernels that
     * quantize x on the fly (int8 dot products); others ignore it. */
    void (*gemm)(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                 size_t g0, size_t gc, float *y, size_t ldy, void *tmp);

    /* GRU update for one row, PyTorch variant.  xp, hp: (nb, 3, 16), the
     * input and recurrent products with their biases; h: nb*16 floats,
     * updated in place: h = n + z*(h - n). */
    void (*gates_after)(size_t nb, const float *xp, const float *hp, float *h);

    /* Reset-before variant, first half: from gates r, z of xp and hp,
     * rh = r*h and z (nb*16 each). */
    void (*gates_rz)(size_t nb, const float *xp, const float *hp, const float *h,
                     float *rh, float *z);

    /* Second half: n = tanh(xp_n + hn) with hn the n-gate slots of hp
     * (W_hn (r*h) + b_hn); h updated in place. */
    void (*gates_n)(size_t nb, const float *xp, const float *hp, const float *z, float *h);

    /* The same three with any activations and clip (fn): separate
     * functions, so the default ones above stay as fast as they were. */
    void (*gates_after_fn)(size_t nb, const float *xp, const float *hp, float *h,
                           const gl_gate_fns *fn);
    void (*gates_rz_fn)(size_t nb, const float *xp, const float *hp, const float *h,
                        float *rh, float *z, const gl_gate_fns *fn);
    void (*gates_n_fn)(size_t nb, const float *xp, const float *hp, const float *z, float *h,
                       const gl_gate_fns *fn);

    /* One step of one row, PyTorch variant (gl_step above). */
    void (*step_after)(const gl_step *s);
} gl_kernels;

/* step_after as its parts: k's gemm over the whole row (each matrix),
 * then k's gates on a copy of h (for a set, or a weight type, without a
 * step of its own). */
static inline void gl_step_after_parts(const gl_kernels *k, const gl_step *s)
{
    const size_t nb = s->hh->nb, Hp = nb * GL_LANES;
    if (s->ih) k->gemm(1, s->xin, s->ih->K, s->ih, 0, 3, s->xp, 3 * Hp, s->tmp);
    k->gemm(1, s->x, s->hh->K, s->hh, 0, 3, s->hp, 3 * Hp, s->tmp);
    memcpy(s->hn, s->h, Hp * sizeof(float));
    if (s->fn) k->gates_after_fn(nb, s->xp, s->hp, s->hn, s->fn);
    else k->gates_after(nb, s->xp, s->hp, s->hn);
}

/* In-place activation (GRULITE_ACT_*) of one row of n floats (kernels/ref.c). */
void gl_ref_activate(int act, size_t n, float *v);

/* A GRU activation (GRULITE_ACT_*, with its alpha and beta) of one value:
 * the reference every kernel set matches (kernels/ref.c). */
float gl_gate_act(int act, float alpha, float beta, float x);

/* x bounded to [-clip, clip] for clip > 0 (a NaN stays NaN); x for 0. */
static inline float gl_clip(float x, float clip)
{
    if (clip > 0.0f) {
        if (x > clip) return clip;
        if (x < -clip) return -clip;
    }
    return x;
}

/* Scratch a gemm over `rows` rows of K inputs may need. */
static inline size_t gl_gemm_tmp_bytes(size_t rows, size_t K)
{
    return rows * (4 * gl_panel_k4(K) + 8);
}

/* The SIMD micro-kernels keep their accumulators in registers only when
 * their constant-trip loops are unrolled, which GCC does at -O3 but not at
 * -O2 (about 3x slower there).  Each SIMD kernel file starts with
 * GL_KERNEL_OPTIMIZE: -O3 for that file in a -O1 / -O2 build; -O0 (debug)
 * and -Os (size) builds are left as asked. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__OPTIMIZE__) && \
    !defined(__OPTIMIZE_SIZE__)
#  define GL_KERNEL_OPTIMIZE _Pragma("GCC optimize(\"O3\")")
#else
#  define GL_KERNEL_OPTIMIZE
#endif

extern const gl_kernels gl_kernels_generic;
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#  if defined(__GNUC__) || defined(__clang__)
#    define GL_HAVE_X86_KERNELS 1
/* Everything between GL_TARGET_BEGIN("avx2,fma") and GL_TARGET_END is
 * compiled for those instruction-set extensions (function attributes):
 * each kernel file builds for any x86-64 target, and runs only where
 * dispatch.c found the CPU has them. */
#    define GL_PRAGMA(x) _Pragma(#x)
#    if defined(__clang__)
#      define GL_TARGET_BEGIN(t) \
           GL_PRAGMA(clang attribute push(__attribute__((target(t))), apply_to = function))
#      define GL_TARGET_END GL_PRAGMA(clang attribute pop)
#    else
#      define GL_TARGET_BEGIN(t) GL_PRAGMA(GCC push_options) GL_PRAGMA(GCC target(t))
#      define GL_TARGET_END GL_PRAGMA(GCC pop_options)
#    endif
extern const gl_kernels gl_kernels_avx2;
extern const gl_kernels gl_kernels_avx512;
extern const gl_kernels gl_kernels_avx512vnni;
/* A product over int8 weights in float (a set's own, no scratch). */
typedef void (*gl_gemm_i8_fn)(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                              size_t g0, size_t gc, float *y, size_t ldy);
/* AVX2's int8 product in integers (kernels/avx2.c), a gemm as above: the
 * avx2 and avx512 sets' int8 path.  Rows it cannot take (NaN or inf in
 * them, K above 131072, no tmp) go to `rest`. */
void gl_avx2_gemm_i8_dot(size_t rows, const float *x, size_t ldx, const gl_panel *p,
                         size_t g0, size_t gc, float *y, size_t ldy, void *tmp,
                         gl_gemm_i8_fn rest);
#  endif
#endif
/* NEON is part of every aarch64 CPU: no runtime check needed. */
#if defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#  define GL_HAVE_NEON_KERNELS 1
extern const gl_kernels gl_kernels_neon;
/* The Armv8.2 dot products (SDOT) for int8: GCC on Linux (the CPU is asked
 * through getauxval; the functions compile with #pragma GCC target), not
 * in a build with no operating system. */
#  if defined(__GNUC__) && !defined(__clang__) && defined(__linux__) && defined(GL_HOSTED)
#    define GL_HAVE_NEONDOT_KERNELS 1
extern const gl_kernels gl_kernels_neondot;
#  endif
/* 32-bit ARM Linux: the same set when the build targets NEON with VFPv4
 * (its fused multiply-add) and IEEE halves, e.g. -mfpu=neon-vfpv4
 * -mfp16-format=ieee (tools/armv7.cmake); it runs where the CPU reports
 * NEON and VFPv4 (dispatch.c: getauxval). */
#elif defined(__arm__) && defined(__linux__) && defined(GL_HOSTED) && \
      (defined(__GNUC__) || defined(__clang__)) && defined(__ARM_NEON) && defined(__ARM_FEATURE_FMA) && defined(__ARM_FP16_FORMAT_IEEE)
#  define GL_HAVE_NEON_KERNELS 1
extern const gl_kernels gl_kernels_neon;
#endif

/* The best kernel set this CPU supports, or the one named (generic, avx2,
 * avx512, avx512vnni, neon, neondot); NULL for an unknown or unsupported name. */
const gl_kernels *gl_kernels_select(const char *name);

/* Whether the running CPU can run the named kernel set. */
int gl_kernels_supported(const char *name);

/* The set GRULITE_ISA names, or the best (NULL: it names one this CPU
 * cannot run). */
const gl_kernels *gl_kernels_from_env(void);
/* GRULITE_ISA from the environment (hosted builds), else NULL. */
const char *gl_isa_env(void);

/* The names of every known set, ", "-separated, into buf (for messages);
 * returns the length written. */
int gl_isa_list(char *buf, size_t size);

#endif /* GRULITE_KERNELS_H */
