/* Grouped 3x3 conv with square narrow groups, In_g = Out_g = M (2, 4 or 8), stride 1 and no shuffle, read in place
 * (igcnas.nn._native): IGCV1's primary convs (IGC-L24M2: 24 groups of 2 channels).
 *
 * Tensors are channels_last float32. Output channel co of group g = co / M reads the M input channels g*M + i.
 * Rotate an input vector by r lanes within each M-lane block (for M = 2 or 4 an in-lane permute, the blocks never
 * crossing a 128-bit lane; for M = 8 a permute by an index vector, AVX2 or AVX-512) and lane co holds input
 * channel g*M + (co % M + r) % M. So with p = 1
 *
 *     y[co] = sum_{r < M} sum_{kh, kw} W_r[kh][kw][co] * rot_r(x[n, h - p + kh, w - p + kw, :])[co],
 *     W_r[kh][kw][co] = w[co][(co % M + r) % M][kh][kw]:
 *
 * M depthwise convs over rotated copies of the input that are never written (group_conv.c's kernels write In_g
 * copies of every input row into a buffer first). The input gradient is the same form on dy with the taps
 * flipped, WB_r[a][b][c] = w[g*M + (c % M + r) % M][c % M][2 - a][2 - b]; the weight gradient adds up
 * dy * rot_r(x) per tap. With aff (a BatchNorm folded in: scale[C] then shift[C]) the conv reads relu'd (when
 * relu) x * scale + shift, the padding staying zero, as gc_forward does; with bn_sums the input gradient's rows
 * give that BatchNorm's backward sums while in cache (bn_grad_sums).
 *
 * Channels in strips of NV (16 with AVX-512, 8 with AVX; the last strip masked), output pixels 4 at a time inside
 * the row (each weight vector loaded once for the 4, with four independent sums; a tap past either end of the row
 * reads zeros, so that blocks run up to the ends and the narrow rows of late stages, 8 or 16 pixels, have no pixel
 * alone, whose one sum of 9 x M products waits on each FMA), each block of 4 through every strip before the next block, so
 * that the rows are read in order rather than one strip along the whole row at a time (slower on rows read from
 * memory). Rows are spread over OpenMP threads with schedule(static); the weight gradient is summed in per-thread
 * accumulators added up in thread order (deterministic for a thread count). Needs AVX or AVX-512 (M = 8: AVX2 or
 * AVX-512); rot_handles is 0 elsewhere and group_conv.c runs the conv.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"

#define K ROT_K  /* the kernel size handled */

float *rot_ring_alloc(const float *aff, int64_t wd, int64_t c, int64_t *tags, int *failed) {
    for (int kh = 0; kh < K; ++kh) tags[kh] = -1;
    if (!aff) return NULL;
    float *ring = alloc_aligned(sizeof(float) * (size_t)(K * wd * c));
    if (!ring) *failed = 1;
    return ring;
}

#if defined(__AVX512F__) || defined(__AVX__)

#define PB 4   /* output pixels per block */

/* What a tap past either end of a row reads (a strip's worth of zeros, NV floats at most). */
static const float zero_row[16] __attribute__((aligned(64))) = {0};

typedef float rv_u __attribute__((vector_size(NV * 4), aligned(4), may_alias));  /* an unaligned vector */

#if defined(__AVX512F__) || defined(__AVX2__)
#define ROT8 1  /* blocks of 8 lanes cross a 128-bit lane: a permute by an index vector (AVX2, AVX-512) */
/* rot8_index[r][l] = the lane that lane l takes in a rotation by r within blocks of 8 */
static const int32_t rot8_index[8][16] __attribute__((aligned(64))) = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},   {1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12, 13, 14, 15, 8},
    {2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9},   {3, 4, 5, 6, 7, 0, 1, 2, 11, 12, 13, 14, 15, 8, 9, 10},
    {4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11},   {5, 6, 7, 0, 1, 2, 3, 4, 13, 14, 15, 8, 9, 10, 11, 12},
    {6, 7, 0, 1, 2, 3, 4, 5, 14, 15, 8, 9, 10, 11, 12, 13},   {7, 0, 1, 2, 3, 4, 5, 6, 15, 8, 9, 10, 11, 12, 13, 14}};
#else
#define ROT8 0
#endif

/* v rotated by r lanes within each block of M lanes: lane j of a block takes lane (j + r) % M. */
static inline __attribute__((always_inline)) nv_t rot(nv_t v, const int m_, const int r) {
#if defined(__AVX512F__)
#define PERMUTE(v, imm) _mm512_permute_ps((v), (imm))
#else
#define PERMUTE(v, imm) _mm256_permute_ps((v), (imm))
#endif
    if (r == 0) return v;
#if ROT8
    if (m_ == 8) {
#if defined(__AVX512F__)
        return _mm512_permutexvar_ps(_mm512_load_si512((const void *)rot8_index[r]), v);
#else
        return _mm256_permutevar8x32_ps(v, _mm256_load_si256((const __m256i *)rot8_index[r]));
#endif
    }
#endif
    if (m_ == 2) return PERMUTE(v, 0xB1); /* 1 0 3 2 */
    if (r == 1) return PERMUTE(v, 0x39);  /* 1 2 3 0 */
    if (r == 2) return PERMUTE(v, 0x4E);  /* 2 3 0 1 */
    return PERMUTE(v, 0x93);              /* 3 0 1 2 */
#undef PERMUTE
}

/* The load and store of a strip of channels: all NV lanes, or those of the mask m when T. */
#define LDV(p) (T ? (nv_t)load_lanes((p), m) : (nv_t)(*(const rv_u *)(p)))
#define STV(p, v) do { if (T) store_lanes((p), m, (v)); else *(rv_u *)(p) = (rv_u)(v); } while (0)

/* Pixels x0 <= x < x1 of one row of out[x][c] = sum_{r, kh, kw} wt[(r * K + kh) * K + kw][c] *
 * rot_r(rows[kh][x - 1 + kw][c]) for the strip at cb, pixel x written at out + (x - x0) * c (rows[kh] NULL: out of
 * range, skipped; columns out of range skipped). wt: M * K * K vectors of cpad floats. */
static inline __attribute__((always_inline)) void conv_strip(const float *const *rows, const float *wt, int64_t cpad,
                                                             float *out, int64_t x0, int64_t x1, int64_t wd,
                                                             int64_t c, int64_t cb, const int m_, const int T,
                                                             lanes_t m) {
    const nv_t zero = {0};
    int64_t x = x0;
    while (x < x1) {
        if (x + PB <= x1) { /* PB pixels; a tap past either end of the row reads zeros */
            nv_t a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            for (int kh = 0; kh < K; ++kh) {
                if (!rows[kh]) continue;
                for (int kw = 0; kw < K; ++kw) {
                    const int64_t col = x - 1 + kw; /* pixel x's tap; pixel x + j's is col + j */
                    const float *q = rows[kh] + col * c + cb;
                    /* only the first pixel's left tap and the last one's right tap can leave the row */
                    const float *first = col >= 0 ? q : zero_row, *last = col + 3 < wd ? q + 3 * c : zero_row;
                    const nv_t v0 = LDV(first), v1 = LDV(q + c), v2 = LDV(q + 2 * c), v3 = LDV(last);
                    for (int r = 0; r < m_; ++r) {
                        const nv_t w = *(const nv_t *)(wt + ((r * K + kh) * K + kw) * cpad + cb);
                        a0 += w * rot(v0, m_, r);
                        a1 += w * rot(v1, m_, r);
                        a2 += w * rot(v2, m_, r);
                        a3 += w * rot(v3, m_, r);
                    }
                }
            }
            STV(out + (x - x0) * c + cb, a0);
            STV(out + (x - x0 + 1) * c + cb, a1);
            STV(out + (x - x0 + 2) * c + cb, a2);
            STV(out + (x - x0 + 3) * c + cb, a3);
            x += PB;
            continue;
        }
        nv_t a = zero;
        for (int kh = 0; kh < K; ++kh) {
            if (!rows[kh]) continue;
            for (int kw = 0; kw < K; ++kw) {
                const int64_t ix = x - 1 + kw;
                if (ix < 0 || ix >= wd) continue;
                const nv_t v = LDV(rows[kh] + ix * c + cb);
                for (int r = 0; r < m_; ++r)
                    a += *(const nv_t *)(wt + ((r * K + kh) * K + kw) * cpad + cb) * rot(v, m_, r);
            }
        }
        STV(out + (x - x0) * c + cb, a);
        ++x;
    }
}

/* acc[(r * K + kh) * K + kw][c] += sum_x rot_r^-1(dy[x])[c] * rows[kh][x - 1 + kw][c] over one row, strip cb:
 * the weight gradient's sums sum_x dy[x] * rot_r(rows[kh][x - 1 + kw]) rotated back by r (rot_backward's sum over
 * the threads reads each channel's from its lane), so that each pixel's dy is rotated once per r rather than each of
 * its K input taps. */
static inline __attribute__((always_inline)) void grad_strip(const float *const *rows, const float *dy, float *acc,
                                                             int64_t cpad, int64_t wd, int64_t c, int64_t cb,
                                                             const int m_, const int T, lanes_t m) {
    for (int kh = 0; kh < K; ++kh) {
        if (!rows[kh]) continue;
        nv_t g[K][8];  /* this kernel row's accumulators, [kw][r] */
        for (int kw = 0; kw < K; ++kw)
            for (int r = 0; r < m_; ++r) g[kw][r] = *(const nv_t *)(acc + ((r * K + kh) * K + kw) * cpad + cb);
        for (int64_t x = 0; x < wd; ++x) {
            const nv_t d = LDV(dy + x * c + cb);
            nv_t v[K]; /* the pixel's input taps; past either end of the row, zeros */
            for (int kw = 0; kw < K; ++kw) {
                const int64_t ix = x - 1 + kw;
                v[kw] = LDV(ix >= 0 && ix < wd ? rows[kh] + ix * c + cb : zero_row);
            }
            for (int r = 0; r < m_; ++r) {
                const nv_t dr = rot(d, m_, (m_ - r) % m_);
                for (int kw = 0; kw < K; ++kw) g[kw][r] += dr * v[kw];
            }
        }
        for (int kw = 0; kw < K; ++kw)
            for (int r = 0; r < m_; ++r) *(nv_t *)(acc + ((r * K + kh) * K + kw) * cpad + cb) = g[kw][r];
    }
}

/* The strips of one row: full strips, then the masked one; one instantiation per M. */
#define ROW_KERNELS(M_)                                                                                             \
    static __attribute__((noinline)) void conv_row_##M_(const float *const *rows, const float *wt, int64_t cpad,   \
                                                        float *out, int64_t x0, int64_t x1, int64_t wd,            \
                                                        int64_t c) {                                               \
        for (int64_t xa = x0; xa < x1;) { /* a block of pixels through every strip, then the next */           \
            const int64_t xb = xa + PB < x1 ? xa + PB : x1;                                                        \
            float *o = out + (xa - x0) * c;                                                                        \
            int64_t cb = 0;                                                                                        \
            for (; cb + NV <= c; cb += NV) conv_strip(rows, wt, cpad, o, xa, xb, wd, c, cb, M_, 0, lanes_first(NV)); \
            if (cb < c) conv_strip(rows, wt, cpad, o, xa, xb, wd, c, cb, M_, 1, lanes_first(c - cb));             \
            xa = xb;                                                                                               \
        }                                                                                                          \
    }                                                                                                              \
    static __attribute__((noinline)) void grad_row_##M_(const float *const *rows, const float *dy, float *acc,     \
                                                        int64_t cpad, int64_t wd, int64_t c) {                     \
        int64_t cb = 0;                                                                                            \
        for (; cb + NV <= c; cb += NV) grad_strip(rows, dy, acc, cpad, wd, c, cb, M_, 0, lanes_first(NV));        \
        if (cb < c) grad_strip(rows, dy, acc, cpad, wd, c, cb, M_, 1, lanes_first(c - cb));                       \
    }
ROW_KERNELS(2)
ROW_KERNELS(4)
#if ROT8
ROW_KERNELS(8)
#endif

/* The row kernels of M (conv_row: pixels x0 <= x < x1 of the row, pixel x0 written at out). */
static void conv_row(const float *const *rows, const float *wt, int64_t cpad, float *out, int64_t x0, int64_t x1,
                     int64_t wd, int64_t c, int64_t mg) {
#if ROT8
    if (mg == 8) {
        conv_row_8(rows, wt, cpad, out, x0, x1, wd, c);
        return;
    }
#endif
    if (mg == 4)
        conv_row_4(rows, wt, cpad, out, x0, x1, wd, c);
    else
        conv_row_2(rows, wt, cpad, out, x0, x1, wd, c);
}
static void grad_row(const float *const *rows, const float *dy, float *acc, int64_t cpad, int64_t wd, int64_t c,
                     int64_t mg) {
#if ROT8
    if (mg == 8) {
        grad_row_8(rows, dy, acc, cpad, wd, c);
        return;
    }
#endif
    if (mg == 4)
        grad_row_4(rows, dy, acc, cpad, wd, c);
    else
        grad_row_2(rows, dy, acc, cpad, wd, c);
}

/* rows[kh] = image nb's row oh - 1 + kh of t (H x W x C), NULL out of range; with aff, that row normalised
 * (normalise_row) into a ring of K rows (ring, tags: this thread's), each row once while the rows come in order. */
static void row_window3(const float *t, int64_t nb, int64_t oh, int64_t h, int64_t wd, int64_t c, const float *aff,
                        int relu, float *ring, int64_t *tags, const float **rows) {
    for (int kh = 0; kh < K; ++kh) {
        const int64_t ih = oh - 1 + kh;
        rows[kh] = ih >= 0 && ih < h ? t + ((nb * h + ih) * wd) * c : NULL;
        if (!aff || !rows[kh]) continue;
        const int64_t slot = ih % K, tag = nb * h + ih;
        float *row = ring + slot * wd * c;
        if (tags[slot] != tag) {
            normalise_row(rows[kh], wd, c, aff, relu, row);
            tags[slot] = tag;
        }
        rows[kh] = row;
    }
}

/* The weight vectors, zero past C: forward (flip 0) W_r[kh][kw][co] = w[co][(co % M + r) % M][kh][kw]; input
 * gradient (flip 1) WB_r[a][b][c] = w[g*M + (c % M + r) % M][c % M][2 - a][2 - b]. malloc'd, or NULL. */
static float *rot_weights(const float *w, int64_t c, int64_t mg, int flip, int64_t cpad) {
    float *wt = alloc_aligned(sizeof(float) * (size_t)(mg * K * K * cpad));
    if (!wt) return NULL;
    memset(wt, 0, sizeof(float) * (size_t)(mg * K * K * cpad));
    for (int64_t r = 0; r < mg; ++r)
        for (int64_t t = 0; t < K * K; ++t)
            for (int64_t ch = 0; ch < c; ++ch) {
                const int64_t j = (ch % mg + r) % mg, base = ch - ch % mg;
                const int64_t co = flip ? base + j : ch, i = flip ? ch % mg : j;
                const int64_t tap = flip ? K * K - 1 - t : t;
                wt[(r * K * K + t) * cpad + ch] = w[(co * mg + i) * K * K + tap];
            }
    return wt;
}

int rot_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride) {
    if (perm || cin != cout || groups < 1 || cin % groups || k != K || stride != 1) return 0;
    const int64_t mg = cin / groups;
    return mg == 2 || mg == 4 || (ROT8 && mg == 8);
}

float *rot_prefix_weights(const float *w, int64_t c, int64_t mg) {
    return rot_weights(w, c, mg, 0, (c + NV - 1) / NV * NV);
}

void rot_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t mg, int64_t p0,
              int64_t count, const float *aff, int relu, float *ring, int64_t *tags) {
    const int64_t cpad = (c + NV - 1) / NV * NV, end = p0 + count;
    int64_t p = p0;
    while (p < end) {
        const int64_t r = p / wd, col = p % wd;
        const int64_t stop = end - p < wd - col ? col + (end - p) : wd;
        const float *window[K];
        row_window3(x, r / h, r % h, h, wd, c, aff, relu, ring, tags, window);
        conv_row(window, wt, cpad, y + (p - p0) * c, col, stop, wd, c, mg);
        p += stop - col;
    }
}

/* y = the conv of x' (x, or x * scale + shift with aff, relu'd when relu): N x H x W x C, weight (C, M, 3, 3).
 * Returns 0, or -1 when out of memory. */
int rot_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t mg,
                const float *aff, int relu, int nthreads) {
    const int64_t cpad = (c + NV - 1) / NV * NV, rows = n * h;
    float *wt = rot_weights(w, c, mg, 0, cpad);
    if (!wt) return -1;
    int failed = 0;
    nthreads = clamp_threads(nthreads, rows);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        int64_t tags[K];
        float *ring = rot_ring_alloc(aff, wd, c, tags, &failed);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
            if (aff && !ring) continue;
            const float *window[K];
            row_window3(x, row / h, row % h, h, wd, c, aff, relu, ring, tags, window);
            conv_row(window, wt, cpad, y + row * wd * c, 0, wd, wd, c, mg);
        }
        free(ring);
    }
    free(wt);
    return failed ? -1 : 0;
}

/* The gradients of rot_forward: dx (that of x', when not NULL) and dw (when not NULL), both overwritten; with
 * bn_sums (needs dx and aff, bn_mean the BatchNorm's batch mean) the sums of gc_backward. Returns 0 or -1
 * (memory). */
int rot_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                 int64_t wd, int64_t c, int64_t mg, const float *aff, int relu, const float *bn_mean,
                 double *bn_sums, int nthreads) {
    const int64_t cpad = (c + NV - 1) / NV * NV, rows = n * h, numel = mg * K * K * cpad;
    nthreads = clamp_threads(nthreads, rows);
    float *wb = dx ? rot_weights(w, c, mg, 1, cpad) : NULL;
    float *acc = dw ? alloc_aligned(sizeof(float) * (size_t)(nthreads * numel)) : NULL;
    bn_rows sums;
    if ((dx && !wb) || (dw && !acc) || bn_rows_alloc(&sums, nthreads, c, bn_sums != NULL) != 0) {
        free(wb);
        free(acc);
        return -1;
    }
    if (acc) memset(acc, 0, sizeof(float) * (size_t)(nthreads * numel));
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        const int me = thread_id();
        int64_t tags[K];
        float *ring = dw ? rot_ring_alloc(aff, wd, c, tags, &failed) : NULL;
        float *mine = acc ? acc + (int64_t)me * numel : NULL;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
            if (dw && aff && !ring) continue;
            const int64_t nb = row / h, oh = row % h;
            const float *window[K];
            if (dx) {
                row_window3(dy, nb, oh, h, wd, c, NULL, 0, NULL, NULL, window);
                conv_row(window, wb, cpad, dx + row * wd * c, 0, wd, wd, c, mg);
                bn_rows_add(&sums, me, dx + row * wd * c, x + row * wd * c, wd, aff, bn_mean, relu);
            }
            if (dw) {
                row_window3(x, nb, oh, h, wd, c, aff, relu, ring, tags, window);
                grad_row(window, dy + row * wd * c, mine, cpad, wd, c, mg);
            }
        }
        free(ring);
    }
    if (dw && !failed)
        for (int64_t r = 0; r < mg; ++r)
            for (int64_t t = 0; t < K * K; ++t)
                for (int64_t co = 0; co < c; ++co) {
                    /* grad_strip's sums are rotated back by r: output channel co's sits in the lane it reads,
                     * that of its input j */
                    const int64_t j = (co % mg + r) % mg, lane = co - co % mg + j;
                    float total = 0.0f;
                    for (int th = 0; th < nthreads; ++th) total += acc[(int64_t)th * numel + (r * K * K + t) * cpad + lane];
                    dw[(co * mg + j) * K * K + t] = total;
                }
    bn_rows_finish(&sums, nthreads, failed ? NULL : bn_sums);
    free(wb);
    free(acc);
    return failed ? -1 : 0;
}

#else  /* no in-lane permute: group_conv.c's kernels run these convs */

float *rot_prefix_weights(const float *w, int64_t c, int64_t mg) {
    (void)w, (void)c, (void)mg;
    return NULL;
}

void rot_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t mg, int64_t p0,
              int64_t count, const float *aff, int relu, float *ring, int64_t *tags) {
    (void)x, (void)wt, (void)y, (void)h, (void)wd, (void)c, (void)mg, (void)p0, (void)count, (void)aff;
    (void)relu, (void)ring, (void)tags;
}

int rot_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride) {
    (void)perm, (void)cin, (void)cout, (void)groups, (void)k, (void)stride;
    return 0;
}

int rot_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t mg,
                const float *aff, int relu, int nthreads) {
    (void)x, (void)w, (void)y, (void)n, (void)h, (void)wd, (void)c, (void)mg, (void)aff, (void)relu, (void)nthreads;
    return -2;
}

int rot_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                 int64_t wd, int64_t c, int64_t mg, const float *aff, int relu, const float *bn_mean,
                 double *bn_sums, int nthreads) {
    (void)x, (void)w, (void)dy, (void)dx, (void)dw, (void)n, (void)h, (void)wd, (void)c, (void)mg, (void)aff;
    (void)relu, (void)bn_mean, (void)bn_sums, (void)nthreads;
    return -2;
}

#endif
