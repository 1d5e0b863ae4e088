/* Grouped 1x1 convolution computed directly on channels_last rows, without transposing pixel tiles
 * (igcnas.nn._native, the "direct" kernel of a native PWG; group_pw.c is the tiled one).
 *
 * Tensors are channels_last (NHWC) float32, i.e. row-major (P = N*H*W, C) matrices. With perm[s] the natural input
 * channel held by slot s (the shuffle; NULL = identity), group g maps slots g*Ig .. g*Ig + Ig - 1 to output channels
 * g*Og .. g*Og + Og - 1:
 *
 *     out[p, g*Og + o] = sum_i w[g*Og + o][i] * x[p, perm[g*Ig + i]]
 *
 * Vectors of 8 floats run along the output channels (forward, weight gradient) or the group's input slots (input
 * gradient); each input value is broadcast from its row, so the shuffle is only an index and no tile is transposed.
 * A block of PB pixels keeps its PB x 3 accumulators (24 channels) in registers over a group's inputs. The input
 * gradient is computed in slot order into a per-thread row buffer and written to the natural channels (as it is
 * without a shuffle when Ig is a multiple of 8, by vector shuffles for an IGC shuffle of whole vectors, else value by
 * value). The weight gradient is summed in per-thread accumulators added up in thread order (deterministic for a
 * thread count). Pixels past the last whole block are copied into a zero-padded block first, so that no row past the
 * tensor is read. A forward output of STREAM_BYTES and more (past the caches) is computed a block of rows at a time
 * into a buffer and written with non-temporal stores; the input gradient is stored normally (streamed, it measured
 * slower).
 *
 * GNU C (vector extensions; gcc or clang) + OpenMP, no torch headers; called through ctypes with raw pointers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"

#if defined(__AVX512F__)
#define PB 8  /* pixels per block: PB x 3 accumulators + 3 weights fit 32 vector registers */
#define IB 8  /* input channels per block of the weight gradient: IB x 3 accumulators */
#else
#define PB 4  /* 16 registers (AVX2, NEON's 32 of half the width) */
#define IB 4
#endif
#define DV 8   /* floats per vector */
#define OB 24  /* channels per block: 3 vectors */
#define TP_MAX 256           /* pixels per tile of the backward at most (a multiple of PB) ... */
#define TP_BYTES (256 << 10) /* ... and a tile's rows of x and dy within this many bytes (half of an L2) */

typedef float v8 __attribute__((vector_size(DV * 4), aligned(DV * 4)));
typedef float v8u __attribute__((vector_size(DV * 4), aligned(4), may_alias)); /* an unaligned vector */

/* n rounded up to whole vectors. */
static inline int64_t padded(int64_t n) { return (n + DV - 1) / DV * DV; }

/* Vectors of a block of `width` (<= OB) channels. */
static inline int vectors(int64_t width) { return (int)((width < OB ? width : OB) + DV - 1) / DV; }

/* The first `width` (<= DV) floats at p as a vector, the rest zero (a load that stays inside the row). */
static inline v8 load_part(const float *p, int64_t width) {
    if (width >= DV) return *(const v8u *)p;
    v8 v = {0};
    for (int64_t l = 0; l < width; ++l) v[l] = p[l];
    return v;
}

/* The first `width` (<= DV) lanes of v stored at p. */
static inline void store_part(float *p, v8 v, int64_t width) {
    if (width >= DV) {
        *(v8u *)p = v;
        return;
    }
    for (int64_t l = 0; l < width; ++l) p[l] = v[l];
}

/* The natural channel of every input slot (perm, or the identity); malloc'd, or NULL. */
static int64_t *slot_sources(const int64_t *perm, int64_t in_c) {
    int64_t *src = malloc(sizeof(int64_t) * (size_t)in_c);
    if (src)
        for (int64_t s = 0; s < in_c; ++s) src[s] = perm ? perm[s] : s;
    return src;
}

/* Packed weights, zero past each group's width: wo[g][i][o] (Og padded, transposed: vectors along the outputs) or,
 * with along_inputs, wi[g][o][i] (Ig padded). malloc'd, or NULL. */
static float *pack_weights(const float *w, int64_t groups, int64_t in_g, int64_t out_g, int along_inputs) {
    const int64_t inner = along_inputs ? padded(in_g) : padded(out_g), outer = along_inputs ? out_g : in_g;
    float *pk = alloc_aligned(sizeof(float) * (size_t)(groups * outer * inner));
    if (!pk) return NULL;
    memset(pk, 0, sizeof(float) * (size_t)(groups * outer * inner));
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t o = 0; o < out_g; ++o)
            for (int64_t i = 0; i < in_g; ++i) {
                const float v = w[(g * out_g + o) * in_g + i];
                if (along_inputs)
                    pk[(g * out_g + o) * inner + i] = v;
                else
                    pk[(g * in_g + i) * inner + o] = v;
            }
    return pk;
}

/* acc[p][k] = sum_i wv[i][k] * rows[p][src[i]] (rows[p][i] unless INDEXED) over the n inputs (wv: row i of `stride`
 * floats, vector k at 8k; NC and INDEXED constants once inlined). */
static inline __attribute__((always_inline)) void broadcast_block(const float *restrict rows, int64_t rstride,
                                                                  const int64_t *restrict src, const float *restrict wv,
                                                                  int64_t stride, int64_t n, v8 acc[PB][3],
                                                                  const int NC, const int INDEXED) {
    for (int p = 0; p < PB; ++p)
        for (int k = 0; k < NC; ++k) acc[p][k] = (v8){0};
    for (int64_t i = 0; i < n; ++i) {
        v8 wk[3];
        for (int k = 0; k < NC; ++k) wk[k] = *(const v8u *)(wv + i * stride + DV * k);
        const int64_t c = INDEXED ? src[i] : i;
        for (int p = 0; p < PB; ++p) {
            const float v = rows[p * rstride + c];
            for (int k = 0; k < NC; ++k) acc[p][k] += wk[k] * v;
        }
    }
}

/* broadcast_block with NC (1 to 3) a constant; src NULL: the rows' channels in order. */
static void broadcast_any(const float *rows, int64_t rstride, const int64_t *src, const float *wv, int64_t stride,
                          int64_t n, v8 acc[PB][3], int nc) {
#define BROADCAST(NC)                                                                                              \
    do {                                                                                                           \
        if (src)                                                                                                   \
            broadcast_block(rows, rstride, src, wv, stride, n, acc, (NC), 1);                                      \
        else                                                                                                       \
            broadcast_block(rows, rstride, src, wv, stride, n, acc, (NC), 0);                                      \
    } while (0)
    if (nc == 3)
        BROADCAST(3);
    else if (nc == 2)
        BROADCAST(2);
    else
        BROADCAST(1);
#undef BROADCAST
}

/* The forward of PB pixels from rows (PB rows of in_c floats) into out (rows of out_c floats, the first np
 * written). */
static void forward_block(const float *rows, int64_t in_c, const int64_t *src, const float *wo, float *out,
                          int64_t out_c, int64_t groups, int np) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups, op = padded(out_g);
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t o0 = 0; o0 < out_g; o0 += OB) {
            const int nc = vectors(out_g - o0);
            v8 acc[PB][3];
            broadcast_any(rows, in_c, src + g * in_g, wo + g * in_g * op + o0, op, in_g, acc, nc);
            for (int p = 0; p < np; ++p)
                for (int k = 0; k < nc; ++k)
                    store_part(out + p * out_c + g * out_g + o0 + DV * k, acc[p][k], out_g - o0 - DV * k);
        }
}

/* rows p0 .. p0 + np - 1 of src (c floats each) as PB rows: in place when whole, else copied into the zero-padded
 * block pad (PB * c floats). */
static const float *block_rows(const float *src, int64_t c, int64_t p0, int np, float *pad) {
    if (np == PB) return src + p0 * c;
    memset(pad, 0, sizeof(float) * (size_t)(PB * c));
    memcpy(pad, src + p0 * c, sizeof(float) * (size_t)(np * c));
    return pad;
}

/* The forward above over all P pixels. Returns 0, or -1 when out of memory. */
int gpd_forward(const float *x, int64_t in_c, const int64_t *perm, float *out, int64_t out_c, const float *w,
                int64_t groups, int64_t pixels, int nthreads) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups, blocks = (pixels + PB - 1) / PB;
    float *wo = pack_weights(w, groups, in_g, out_g, 0);
    int64_t *src = slot_sources(perm, in_c);
    float *pad = alloc_aligned(sizeof(float) * (size_t)(PB * in_c));
    if (!wo || !src || !pad) {
        free(wo), free(src), free(pad);
        return -1;
    }
    /* an output past the caches: each block's rows are computed into a buffer and streamed out (a store would
     * first read every line it writes) */
    const int stream = past_caches(pixels * out_c);
    int failed = 0;
    nthreads = clamp_threads(nthreads, blocks);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *stage = stream ? alloc_aligned(sizeof(float) * (size_t)(PB * out_c)) : NULL;
        if (stream && !stage) failed = 1;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < blocks; ++b) {
            if (stream && !stage) continue;
            const int64_t p0 = b * PB;
            const int np = (int)(pixels - p0 < PB ? pixels - p0 : PB);
            /* only the last block can be partial: one thread uses pad */
            forward_block(block_rows(x, in_c, p0, np, pad), in_c, src, wo, stage ? stage : out + p0 * out_c, out_c,
                          groups, np);
            if (stage) stream_copy(out + p0 * out_c, stage, np * out_c);
        }
        store_fence();
        free(stage);
    }
    free(wo), free(src), free(pad);
    return failed ? -1 : 0;
}

/* acc[ii][k] += sum_p dy[p][o0 + 8k ..] * x[p][src[ii]] over the n pixels of a tile, for B inputs (B a constant
 * once inlined) and NC vectors of outputs; acc: rows of `stride` floats (the thread's accumulators). */
static inline __attribute__((always_inline)) void weight_block(const float *restrict x, int64_t in_c,
                                                               const int64_t *restrict src, const float *restrict dy,
                                                               int64_t out_c, int64_t width, int64_t n,
                                                               float *restrict acc, int64_t stride, const int B,
                                                               const int NC, const int TAIL) {
    v8 a[IB][3];
    for (int ii = 0; ii < B; ++ii)
        for (int k = 0; k < NC; ++k) a[ii][k] = *(const v8 *)(acc + ii * stride + DV * k);
    int64_t cs[IB];
    for (int ii = 0; ii < B; ++ii) cs[ii] = src[ii];
    for (int64_t p = 0; p < n; ++p) {
        v8 d[3];
        for (int k = 0; k < NC; ++k)
            d[k] = TAIL && k == NC - 1 ? load_part(dy + p * out_c + DV * k, width - DV * k)
                                       : (v8) * (const v8u *)(dy + p * out_c + DV * k);
        for (int ii = 0; ii < B; ++ii) {
            const float v = x[p * in_c + cs[ii]];
            for (int k = 0; k < NC; ++k) a[ii][k] += d[k] * v;
        }
    }
    for (int ii = 0; ii < B; ++ii)
        for (int k = 0; k < NC; ++k) *(v8 *)(acc + ii * stride + DV * k) = a[ii][k];
}

#define WEIGHT_NC(B, T)                                                                                            \
    do {                                                                                                           \
        if (nc == 3)                                                                                               \
            weight_block(x, in_c, s, d, out_c, width, n, a, op, (B), 3, (T));                                     \
        else if (nc == 2)                                                                                          \
            weight_block(x, in_c, s, d, out_c, width, n, a, op, (B), 2, (T));                                     \
        else                                                                                                       \
            weight_block(x, in_c, s, d, out_c, width, n, a, op, (B), 1, (T));                                     \
    } while (0)
/* weight_block for B inputs, its last vector loaded in part (TAIL) only when the block ends inside one */
#define WEIGHT_BLOCK(B)                                                                                            \
    do {                                                                                                           \
        if (width >= DV * nc)                                                                                      \
            WEIGHT_NC(B, 0);                                                                                       \
        else                                                                                                       \
            WEIGHT_NC(B, 1);                                                                                       \
    } while (0)

#if IB > 4
/* weight_block for 4 inputs (the tail of a group whose width is not a multiple of IB), compiled apart so that the
 * main blocks' code stays as it is. */
static __attribute__((noinline)) void weight_run4(const float *x, int64_t in_c, const int64_t *s, const float *d,
                                                  int64_t out_c, int64_t width, int64_t n, float *a, int64_t op,
                                                  int nc) {
    WEIGHT_BLOCK(4);
}
#endif

/* The weight gradient of the n pixels of a tile (x, dy at its first row) added to mine[g][i][o] (Og padded). */
static void weight_tile(const float *x, int64_t in_c, const int64_t *src, const float *dy, int64_t out_c,
                        int64_t groups, int64_t n, float *mine) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups, op = padded(out_g);
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t o0 = 0; o0 < out_g; o0 += OB) {
            const int nc = vectors(out_g - o0);
            const int64_t width = out_g - o0;
            const float *d = dy + g * out_g + o0;
            int64_t i = 0;
            for (; i + IB <= in_g; i += IB) {
                const int64_t *s = src + g * in_g + i;
                float *a = mine + (g * in_g + i) * op + o0;
                WEIGHT_BLOCK(IB);
            }
#if IB > 4
            for (; i + 4 <= in_g; i += 4) /* a tail of 4 inputs or more (Ig = 12, 20 ...) in a block */
                weight_run4(x, in_c, src + g * in_g + i, d, out_c, width, n, mine + (g * in_g + i) * op + o0, op, nc);
#endif
            for (; i < in_g; ++i) {
                const int64_t *s = src + g * in_g + i;
                float *a = mine + (g * in_g + i) * op + o0;
                WEIGHT_BLOCK(1);
            }
        }
}

/* The input gradient of PB pixels (dy rows of out_c floats) in slot order into buf (PB rows of groups * Ig padded
 * floats: group g's slots at g * Ig padded). */
static void input_block(const float *dy, int64_t out_c, const float *wi, int64_t groups, int64_t in_g, float *buf) {
    const int64_t out_g = out_c / groups, ip = padded(in_g), row = groups * ip;
    for (int64_t g = 0; g < groups; ++g)
        for (int64_t i0 = 0; i0 < in_g; i0 += OB) {
            const int nc = vectors(in_g - i0);
            v8 acc[PB][3];
            broadcast_any(dy + g * out_g, out_c, NULL, wi + g * out_g * ip + i0, ip, out_g, acc, nc);
            for (int p = 0; p < PB; ++p)
                for (int k = 0; k < nc; ++k) *(v8 *)(buf + p * row + g * ip + i0 + DV * k) = acc[p][k];
        }
}

typedef int32_t v8i __attribute__((vector_size(DV * 4)));
#if defined(__clang__)
#define SHUF(a, b, ...) __builtin_shufflevector((a), (b), __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle((a), (b), (v8i){__VA_ARGS__})
#endif

/* m (2, 4 or 8) when natural channel l * m + j sits in slot j * s + l of a row of C = m * s channels, s a multiple
 * of 8 (an IGC channel shuffle of s groups), so that a row goes from slot order to channel order as an m x s
 * matrix transposed; else 0. */
static int interleave_of(const int64_t *islot, int64_t in_c) {
    if (!islot) return 0;
    for (int m = 2; m <= 8; m *= 2) {
        if (in_c % m || (in_c / m) % DV) continue;
        const int64_t s = in_c / m;
        int64_t c = 0;
        while (c < in_c && islot[c] == (c % m) * s + c / m) ++c;
        if (c == in_c) return m;
    }
    return 0;
}

/* dst[l * m + j] = src[j * s + l] for l < s, j < m (interleave_of's transpose), 8 values of l at a time. */
static void interleave_row(const float *restrict src, float *restrict dst, int64_t s, int m) {
    for (int64_t l = 0; l < s; l += DV, dst += DV * m) {
        v8 v[8];
        for (int j = 0; j < m; ++j) v[j] = *(const v8u *)(src + j * s + l);
        v8 p[8];  /* pairs of segments interleaved value by value: [a0 b0 a1 b1 a2 b2 a3 b3], then the upper half */
        for (int j = 0; j < m; j += 2) {
            p[j] = SHUF(v[j], v[j + 1], 0, 8, 1, 9, 2, 10, 3, 11);
            p[j + 1] = SHUF(v[j], v[j + 1], 4, 12, 5, 13, 6, 14, 7, 15);
        }
        if (m == 2) {
            *(v8u *)dst = p[0];
            *(v8u *)(dst + DV) = p[1];
            continue;
        }
        v8 q[8];  /* two pairs interleaved two values at a time: [a0 b0 c0 d0 a1 b1 c1 d1] ... */
        for (int j = 0; j < m; j += 4)
            for (int h = 0; h < 2; ++h) {
                q[j + 2 * h] = SHUF(p[j + h], p[j + 2 + h], 0, 1, 8, 9, 2, 3, 10, 11);
                q[j + 2 * h + 1] = SHUF(p[j + h], p[j + 2 + h], 4, 5, 12, 13, 6, 7, 14, 15);
            }
        if (m == 4) {
            for (int k = 0; k < 4; ++k) *(v8u *)(dst + DV * k) = q[k];
            continue;
        }
        for (int k = 0; k < 4; ++k) { /* two quads four values at a time: [a0 .. h0], [a1 .. h1] */
            *(v8u *)(dst + DV * 2 * k) = SHUF(q[k], q[4 + k], 0, 1, 2, 3, 8, 9, 10, 11);
            *(v8u *)(dst + DV * (2 * k + 1)) = SHUF(q[k], q[4 + k], 4, 5, 6, 7, 12, 13, 14, 15);
        }
    }
}

/* Backward of gpd_forward: dx (when not NULL; overwritten) and dw (when not NULL; (Cout, Ig), overwritten) from
 * dy and the saved input x. islot: the inverse of perm (the slot of each natural channel; NULL with perm NULL).
 * Returns 0, or -1 when out of memory. */
int gpd_backward(const float *x, int64_t in_c, const int64_t *perm, const int64_t *islot, const float *dy,
                 int64_t out_c, const float *w, float *dx, float *dw, int64_t groups, int64_t pixels, int nthreads) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups, op = padded(out_g), ip = padded(in_g);
    /* tiles as large as fit in TP_BYTES (each tile adds its weight gradient to the accumulators once), halved
     * while there are fewer than the threads */
    int64_t tp = TP_MAX;
    while (tp > 4 * PB && (tp * (in_c + out_c) * (int64_t)sizeof(float) > TP_BYTES || (pixels + tp - 1) / tp < nthreads))
        tp /= 2;
    const int64_t tiles = (pixels + tp - 1) / tp, numel = groups * in_g * op, row = groups * ip;
    /* dx rows copied as they are when slots are channels and every group's width is whole vectors */
    const int direct_rows = !perm && ip == in_g;
    /* an IGC shuffle of whole vectors: rows go to channel order by vector shuffles, not value by value */
    const int interleave = ip == in_g ? interleave_of(islot, in_c) : 0;
    nthreads = clamp_threads(nthreads, tiles);
    float *wi = dx ? pack_weights(w, groups, in_g, out_g, 1) : NULL;
    int64_t *src = slot_sources(perm, in_c);
    float *acc = dw ? alloc_aligned(sizeof(float) * (size_t)(nthreads * numel)) : NULL;
    int64_t *pos = dx ? malloc(sizeof(int64_t) * (size_t)in_c) : NULL; /* buffer position of each natural channel */
    if ((dx && (!wi || !pos)) || !src || (dw && !acc)) {
        free(wi), free(src), free(acc), free(pos);
        return -1;
    }
    if (acc) memset(acc, 0, sizeof(float) * (size_t)(nthreads * numel));
    if (pos)
        for (int64_t c = 0; c < in_c; ++c) {
            const int64_t s = islot ? islot[c] : c;
            pos[c] = s / in_g * ip + s % in_g;
        }
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *mine = acc ? acc + (int64_t)thread_id() * numel : NULL;
        float *buf = dx ? alloc_aligned(sizeof(float) * (size_t)(PB * row)) : NULL;
        float *pad = dx ? alloc_aligned(sizeof(float) * (size_t)(PB * out_c)) : NULL;
        const int ok = !dx || (buf && pad);
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tiles; ++t) {
            if (!ok) continue;
            const int64_t p0 = t * tp, n = pixels - p0 < tp ? pixels - p0 : tp;
            if (dw) weight_tile(x + p0 * in_c, in_c, src, dy + p0 * out_c, out_c, groups, n, mine);
            if (!dx) continue;
            for (int64_t q = p0; q < p0 + n; q += PB) {
                const int np = (int)(p0 + n - q < PB ? p0 + n - q : PB);
                input_block(block_rows(dy, out_c, q, np, pad), out_c, wi, groups, in_g, buf);
                for (int p = 0; p < np; ++p) {
                    float *dst = dx + (q + p) * in_c;
                    const float *b = buf + p * row;
                    if (direct_rows)
                        memcpy(dst, b, sizeof(float) * (size_t)in_c);
                    else if (interleave)
                        interleave_row(b, dst, in_c / interleave, interleave);
                    else
                        for (int64_t c = 0; c < in_c; ++c) dst[c] = b[pos[c]];
                }
            }
        }
        free(buf);
        free(pad);
    }
    if (dw && !failed)
        for (int64_t g = 0; g < groups; ++g)
            for (int64_t i = 0; i < in_g; ++i)
                for (int64_t o = 0; o < out_g; ++o) {
                    float total = 0.0f;
                    for (int th = 0; th < nthreads; ++th) total += acc[(int64_t)th * numel + (g * in_g + i) * op + o];
                    dw[(g * out_g + o) * in_g + i] = total;
                }
    free(wi), free(src), free(acc), free(pos);
    return failed ? -1 : 0;
}
