#ifndef GRULITE_KERNELS_BLOCKING_H
#define GRULITE_KERNELS_BLOCKING_H

/* kernels/blocking.h - how a product's rows and weight vectors are cut
 * into micro-kernel calls, written once for every kernel set and weight
 * type that does not block over K (kernels/simd.h's int8 product, the
 * integer int8 products below; kernels/gemm.h uses the same row groups).  The
 * includer defines GL_MR (rows of the many-row micro-kernel: 8, 4 or 2),
 * GL_NV_MR (its weight vectors) and GL_NV1 (the one-row micro-kernel's).
 * The order never changes a result: each output is one FMA chain over k
 * whatever rows and vectors are computed with it (kernels.h). */

/* The vectors of one row of a product, in groups: GL_NV1 at a time, then
 * the rest in groups of 4, 2, 1 (one vector at a time would leave a single
 * FMA chain waiting on its own latency: H = 64 has 12 vectors = 8 + 4).
 * GROUP(N) handles vectors v .. v+N-1 and advances v. */
#if GL_NV1 > 4
#  define GL_IF_NV1_ABOVE_4(x) x
#else
#  define GL_IF_NV1_ABOVE_4(x)
#endif
#if GL_NV1 > 2
#  define GL_IF_NV1_ABOVE_2(x) x
#else
#  define GL_IF_NV1_ABOVE_2(x)
#endif
#define GL_ROW_GROUPS(GROUP)                                    \
    do {                                                        \
        while (v + GL_NV1 <= nv) GROUP(GL_NV1);                 \
        GL_IF_NV1_ABOVE_4(if (v + 4 <= nv) GROUP(4);)           \
        GL_IF_NV1_ABOVE_2(if (v + 2 <= nv) GROUP(2);)           \
        while (v < nv) GROUP(1);                                \
    } while (0)

/* The rows of a product after its last whole group of GL_MR rows, 4, 2
 * and 1 at a time (rem < GL_MR of them, from row r; GL_MR is 8, 4 or 2).
 * GROUP(R) handles rows r .. r+R-1; r advances. */
#if GL_MR > 4
#  define GL_IF_MR_ABOVE_4(x) x
#else
#  define GL_IF_MR_ABOVE_4(x)
#endif
#if GL_MR > 2
#  define GL_IF_MR_ABOVE_2(x) x
#else
#  define GL_IF_MR_ABOVE_2(x)
#endif
#define GL_REST_ROWS(rem, r, GROUP)                                 \
    do {                                                            \
        GL_IF_MR_ABOVE_4(if ((rem) & 4) { GROUP(4); (r) += 4; })    \
        GL_IF_MR_ABOVE_2(if ((rem) & 2) { GROUP(2); (r) += 2; })    \
        if ((rem) & 1) { GROUP(1); (r) += 1; }                      \
    } while (0)
/* The same with GROUP(R, X): X passed through. */
#define GL_REST_ROWS2(rem, r, GROUP, X)                                   \
    do {                                                                  \
        GL_IF_MR_ABOVE_4(if ((rem) & 4) { GROUP(4, X); (r) += 4; })       \
        GL_IF_MR_ABOVE_2(if ((rem) & 2) { GROUP(2, X); (r) += 2; })       \
        if ((rem) & 1) { GROUP(1, X); (r) += 1; }                         \
    } while (0)

/* Many rows: blocks of MC rows; in a block, the weight vectors in groups
 * of GL_NV_MR (the rest one at a time: nvg vectors from v), each group over
 * the block's rows GL_MR at a time and then 4, 2 and 1 at a time while its
 * weights are in cache.  Needs nv (vectors) in scope.  OFFSETS(v, n) sets
 * the offsets of vectors v .. v+n-1; FULL(NV, r) runs GL_MR rows from row
 * r and REST(R, NV, r) R rows, over NV vectors (GL_NV_MR or 1). */
#define GL_REST_OF_GROUP(R, REST)                                                   \
    do {                                                                            \
        if (nvg == GL_NV_MR) REST(R, GL_NV_MR, r);                                  \
        else REST(R, 1, r);                                                         \
    } while (0)
#define GL_ROW_BLOCKS(rows, MC, OFFSETS, FULL, REST)                                \
    for (size_t r0 = 0; r0 < (rows); r0 += (MC)) {                                  \
        const size_t rc = (rows) - r0 < (MC) ? (rows) - r0 : (MC);                  \
        const size_t rfull = rc - rc % GL_MR;                                       \
        for (size_t v = 0; v < nv;) {                                               \
            const size_t nvg = v + GL_NV_MR <= nv ? GL_NV_MR : 1;                   \
            OFFSETS(v, nvg);                                                        \
            size_t r = r0;                                                          \
            for (; r < r0 + rfull; r += GL_MR) {                                    \
                if (nvg == GL_NV_MR) FULL(GL_NV_MR, r);                             \
                else FULL(1, r);                                                    \
            }                                                                       \
            GL_REST_ROWS2(rc - rfull, r, GL_REST_OF_GROUP, REST);                   \
            v += nvg;                                                               \
        }                                                                           \
    }

/* ---- Integer int8 products (kernels/avx2.c, avx512vnni.c, neondot.c) ----
 * Each quantizes rows of x one at a time and multiplies them with its own
 * micro-kernels; these are the loops around them, written once.  The
 * includer defines GL_DOT_CALL(R, NV, r): its R-row x NV-vector
 * micro-kernel on quantized rows r .. r+R-1 (woff / yoff set; with p, g0,
 * gc, nv, woff and yoff in scope). */

/* One quantized row: its vectors as GL_ROW_GROUPS cuts them. */
#define GL_DOT_GROUP(N)                                                 \
    do {                                                                \
        gl_panel_offsets_q(p, g0, gc, v, N, woff, yoff);                \
        GL_DOT_CALL(1, N, 0);                                           \
        v += N;                                                         \
    } while (0)
#define GL_DOT_ONE_ROW()                                                \
    do {                                                                \
        size_t v = 0;                                                   \
        GL_ROW_GROUPS(GL_DOT_GROUP);                                    \
    } while (0)

/* Many quantized rows: blocks of MC rows, as GL_ROW_BLOCKS. */
#define GL_DOT_OFFSETS(v, n) gl_panel_offsets_q(p, g0, gc, (v), (n), woff, yoff)
#define GL_DOT_FULL(NV, r) GL_DOT_CALL(GL_MR, NV, r)
#define GL_DOT_ROWS(rows, MC) GL_ROW_BLOCKS(rows, MC, GL_DOT_OFFSETS, GL_DOT_FULL, GL_DOT_CALL)

/* The rows of x in runs: QUANT(e) quantizes row e (0; -1 for a row
 * holding NaN or inf), each run of quantized rows r .. r+n-1 goes to
 * RUN(r, n), each refused row alone to REST(e) (the set's float product):
 * a row's result never depends on its neighbours (kernels.h), so a stream,
 * a batch split over threads and a whole sequence agree even then. */
#define GL_DOT_RUNS(rows, QUANT, RUN, REST)                             \
    do {                                                                \
        size_t r_ = 0;                                                  \
        while (r_ < (rows)) {                                           \
            size_t e_ = r_;                                             \
            while (e_ < (rows) && QUANT(e_) == 0) e_++;                 \
            if (e_ > r_) RUN(r_, e_ - r_);                              \
            if (e_ < (rows)) REST(e_);                                  \
            r_ = e_ + 1;                                                \
        }                                                               \
    } while (0)

#endif /* GRULITE_KERNELS_BLOCKING_H */
