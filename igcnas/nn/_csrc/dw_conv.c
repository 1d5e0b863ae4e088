/* Depthwise k x k convolution, stride 1, no channel permutation: the fast case of gc_forward / gc_backward.
 *
 * Tensors are channels_last (NHWC) float32, C channels, padding p = k / 2 (odd k <= 7), w (C, 1, k, k):
 *
 *     y[n, h, x, c] = sum_{kh, kw} w[c][kh][kw] * in[n, h - p + kh, x - p + kw, c]   (out of range = 0)
 *
 * Every channel is its own group, so there is nothing to expand (group_conv.c's row buffers copy each input row
 * once more): the kernels read the activations in place, vectorised across channels. A row of output is one
 * work item. Per block of DT = 8 interior output pixels and strip of DV channels (one register: 16 with AVX-512,
 * else 8), the k*k weight vectors are loaded and 8 accumulators summed; edge pixels take the taps that are in
 * range one pixel at a time; the channels past the last full strip are one strip of masked loads and stores.
 * Outputs of STREAM_BYTES and more are written with non-temporal stores (AVX-512, aligned rows): they do not fit
 * in the caches, and a normal store would first read every line it writes.
 *
 *   forward:         y = conv(x, w)
 *   input gradient:  dx = conv(dy, w flipped in both spatial axes)  (stride 1 and p = k / 2 make it the same conv)
 *   weight gradient: dw[c][kh][kw] = sum_{n, h, x} dy[n, h, x, c] * in[n, h - p + kh, x - p + kw, c]
 *
 * The backward computes both in one sweep over the rows (row r: dx of row r and the weight-gradient terms of dy's
 * row r, which read the same few rows of x and dy). The weight gradient is summed in per-thread accumulators
 * added up in thread order, so it is deterministic for a thread count. Rows go to OpenMP threads in static chunks.
 *
 * GNU C (vector extensions) + OpenMP, no torch headers; reached through gc_forward / gc_backward (group_conv.c).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"

#define DV NV /* floats per vector: one zmm register with AVX-512, else one ymm (16-float vectors would spill) */
/* Output pixels per interior block: its DT accumulators, the DT + K - 1 input vectors they read, a weight and the
 * BatchNorm's scale and shift must fit the vector registers (32 with AVX-512; AVX2's 16 hold them for 4 pixels,
 * while 8 kept some on the stack, reloaded at every tap). */
#if defined(__AVX512F__)
#define DT 8
#else
#define DT 4
#endif

typedef float dvf __attribute__((vector_size(DV * 4), aligned(4), may_alias));
typedef int32_t dvi __attribute__((vector_size(DV * 4), aligned(4), may_alias));

/* Unaligned vector load and store (macros: a function returning a 64-byte vector draws ABI notes on AVX2 builds). */
#define dload(p) (*(const dvf *)(p))
#define dstore(p, v) (*(dvf *)(p) = (v))
/* The load and store of a strip of channels: all DV lanes (M = 0), or the lanes of the mask m (M = 1: the strip past
 * the last full vector, M a compile-time constant in the kernels below). */
#define LD(p) (M ? (dvf)load_lanes((p), m) : dload(p))
#define ST(p, v) do { if (M) store_lanes((p), m, (v)); else dstore((p), (v)); } while (0)

/* A store that bypasses the caches (p 64-byte aligned) where the ISA has one, else a plain store. */
#if defined(__AVX512F__)
#define dstream(p, v) _mm512_stream_ps((p), (__m512)(v))
#else
#define dstream(p, v) dstore((p), (v))
#endif

/* How an output of `elements` floats at y, C channels per pixel, is written: 1 streamed in place (large, rows
 * line-aligned), 2 streamed through a row buffer (large, rows not line-aligned; AVX-512), else 0 (stored). */
static int output_mode(const float *y, int64_t elements, int64_t c) {
    if (!past_caches(elements)) return 0;
    if (((uintptr_t)y & 63) == 0 && c % DV == 0) return 1;
#if defined(__AVX512F__)
    return 2;
#else
    return 0;
#endif
}


/* The input as the conv reads it: x itself (A = 0), x * s + b per channel (A = 1: a BatchNorm folded in, its
 * scale and shift), or that through a ReLU (A = 2). Out-of-range taps stay zero: the padding is the normalised
 * input's. */
static inline __attribute__((always_inline)) dvf dw_in(dvf v, dvf s, dvf b, const int A) {
    if (A == 0) return v;
    v = v * s + b;
    if (A == 2) {
        const dvf zero = {0};
        v = (dvf)((dvi)v & (dvi)(v > zero));
    }
    return v;
}

/* The affine's scale and shift vectors of channels [cb, cb + DV) (aff: scale[c] then shift[c]; unused for A = 0). */
#define AFF_S(aff, cb) (A ? LD((aff) + (cb)) : (dvf){0})
#define AFF_B(aff, c, cb) (A ? LD((aff) + (c) + (cb)) : (dvf){0})

/* Output pixel x, channels [cb, cb + DV) (M, m: see LD), of one row of the conv below into y, taps out of range
 * skipped. */
static inline __attribute__((always_inline)) void dw_pixel(const float *const *rows, const float *wt, float *y,
                                                           int64_t x, int64_t wd, int64_t c, int64_t cb, const int K,
                                                           const float *aff, const int A, const int M, lanes_t m) {
    const int p = K / 2;
    const dvf s = AFF_S(aff, cb), b = AFF_B(aff, c, cb);
    dvf acc = {0};
    for (int kh = 0; kh < K; ++kh) {
        if (!rows[kh]) continue;
        for (int kw = 0; kw < K; ++kw) {
            const int64_t ix = x - p + kw;
            if (ix >= 0 && ix < wd)
                acc += LD(wt + (int64_t)(kh * K + kw) * c + cb) * dw_in(LD(rows[kh] + ix * c + cb), s, b, A);
        }
    }
    ST(y + cb, acc);
}

/* T (DT or DT / 2) interior output pixels from x, channels [cb, cb + DV) (M, m: see LD), of one row of the conv
 * below into yx. */
static inline __attribute__((always_inline)) void dw_block(const float *const *rows, const float *wt, float *yx,
                                                           int64_t x, int64_t c, int64_t cb, int stream, const int K,
                                                           const float *aff, const int A, const int T, const int M,
                                                           lanes_t m) {
    const int p = K / 2;
    const dvf s = AFF_S(aff, cb), b = AFF_B(aff, c, cb);
    dvf acc[DT]; /* fixed sizes (T <= DT, K <= 7): arrays sized by parameters are VLAs the loops keep in memory */
    for (int t = 0; t < T; ++t) acc[t] = (dvf){0};
    for (int kh = 0; kh < K; ++kh) {
        if (!rows[kh]) continue;
        const float *base = rows[kh] + (x - p) * c + cb;
        dvf in[DT + 6]; /* T + K - 1 used: each input pixel read and mapped once for the K taps that use it */
        for (int t = 0; t < T + K - 1; ++t) in[t] = dw_in(LD(base + t * c), s, b, A);
        for (int kw = 0; kw < K; ++kw) {
            const dvf wk = LD(wt + (int64_t)(kh * K + kw) * c + cb);
            for (int t = 0; t < T; ++t) acc[t] += wk * in[t + kw];
        }
    }
    if (stream && !M)
        for (int t = 0; t < T; ++t) dstream(yx + t * c + cb, acc[t]);
    else
        for (int t = 0; t < T; ++t) ST(yx + t * c + cb, acc[t]);
}

/* The interior output pixels [ilo, ihi) of one row (y: output pixel x0's row) by blocks of T pixels, every channel
 * strip; the last block ends at ihi, overlapping the one before (its pixels computed twice, the same values). */
static inline __attribute__((always_inline)) void dw_blocks(const float *const *rows, const float *wt, float *y,
                                                            int64_t x0, int64_t ilo, int64_t ihi, int64_t c,
                                                            int stream, const int K, const float *aff, const int A,
                                                            const int T) {
    const int64_t full = c / DV * DV;
    const lanes_t tail = lanes_first(c - full);
    for (int64_t x = ilo; x < ihi; x += T) {
        const int64_t at = x + T <= ihi ? x : ihi - T;
        float *yx = y + (at - x0) * c;
        for (int64_t cb = 0; cb < full; cb += DV) dw_block(rows, wt, yx, at, c, cb, stream, K, aff, A, T, 0, tail);
        if (full < c) dw_block(rows, wt, yx, at, c, full, 0, K, aff, A, T, 1, tail);
    }
}

/* Output pixels [x0, x1) of one row of the stride-1 depthwise conv: y[(x - x0) * c + ch] from the k input rows
 * rows[kh] (NULL: out of range, i.e. zero) and the tap-major weights wt[kh * k + kw][c]. K is k, a compile-time
 * constant where inlined; stream: non-temporal stores for the interior blocks (y line-aligned, c % DV == 0);
 * aff and A: how the input is read (dw_in). Channels past the last full vector run as one masked strip; the
 * interior pixels go by blocks of DT (or DT / 2 when fewer than DT), the edge pixels and any fewer than DT / 2
 * one at a time. */
static inline __attribute__((always_inline)) void dw_segment(const float *const *rows, const float *wt, float *y,
                                                              int64_t x0, int64_t x1, int64_t wd, int64_t c,
                                                              int stream, const int K, const float *aff,
                                                              const int A) {
    const int p = K / 2;
    const int64_t full = c / DV * DV;
    const lanes_t tail = lanes_first(c - full);
    const int64_t lo = p < wd ? p : wd, hi = wd - p; /* the row's interior [lo, hi) */
    int64_t ilo = lo > x0 ? lo : x0, ihi = hi < x1 ? hi : x1;
    if (ihi - ilo >= DT) {
        dw_blocks(rows, wt, y, x0, ilo, ihi, c, stream, K, aff, A, DT);
    } else if (ihi - ilo >= DT / 2) {
        dw_blocks(rows, wt, y, x0, ilo, ihi, c, stream, K, aff, A, DT / 2);
    } else if (ihi < ilo) {
        ihi = ilo; /* no interior: every pixel below as an edge pixel */
    } else {
        ilo = ihi; /* the few interior pixels one at a time below */
    }
    for (int64_t x = x0; x < x1; ++x) {
        if (x == ilo && ilo < ihi) { /* skip the blocked interior */
            x = ihi - 1;
            continue;
        }
        for (int64_t cb = 0; cb < full; cb += DV)
            dw_pixel(rows, wt, y + (x - x0) * c, x, wd, c, cb, K, aff, A, 0, tail);
        if (full < c) dw_pixel(rows, wt, y + (x - x0) * c, x, wd, c, full, K, aff, A, 1, tail);
    }
}

/* The weight-gradient terms of edge pixel x of one row of dy, channels [cb, cb + DV) (M, m: see LD), into sum. */
static inline __attribute__((always_inline)) void dw_grad_edge(const float *const *rows, const float *dyrow,
                                                                dvf *sum, int64_t x, int64_t wd, int64_t c,
                                                                int64_t cb, const int K, const float *aff,
                                                                const int A, const int M, lanes_t m) {
    const int p = K / 2;
    const dvf g = LD(dyrow + x * c + cb);
    const dvf s = AFF_S(aff, cb), b = AFF_B(aff, c, cb);
    for (int kh = 0; kh < K; ++kh) {
        if (!rows[kh]) continue;
        for (int kw = 0; kw < K; ++kw) {
            const int64_t ix = x - p + kw;
            if (ix >= 0 && ix < wd) sum[kh * K + kw] += g * dw_in(LD(rows[kh] + ix * c + cb), s, b, A);
        }
    }
}

/* The weight-gradient terms of the interior pixels of one row of dy with input row r (tap row kh), channels
 * [cb, cb + DV) (M, m: see LD): acc[kh * k + kw][c] += sum_x dyrow[x][c] * r[x - p + kw][c]. */
static inline __attribute__((always_inline)) void dw_grad_inner(const float *r, const float *dyrow, float *acc,
                                                                 int64_t lo, int64_t hi, int64_t c, int64_t cb,
                                                                 int kh, const int K, const float *aff, const int A,
                                                                 const int M, lanes_t m) {
    const int p = K / 2;
    const dvf s = AFF_S(aff, cb), b = AFF_B(aff, c, cb);
    dvf sum[7]; /* K used */
    for (int kw = 0; kw < K; ++kw) sum[kw] = LD(acc + (int64_t)(kh * K + kw) * c + cb);
    for (int64_t x = lo; x < hi; ++x) {
        const dvf g = LD(dyrow + x * c + cb);
        const float *base = r + (x - p) * c + cb;
        for (int kw = 0; kw < K; ++kw) sum[kw] += g * dw_in(LD(base + kw * c), s, b, A);
    }
    for (int kw = 0; kw < K; ++kw) ST(acc + (int64_t)(kh * K + kw) * c + cb, sum[kw]);
}

/* The weight-gradient terms of the edge pixels of one row of dy, channels [cb, cb + DV) (M, m: see LD). */
static inline __attribute__((always_inline)) void dw_grad_edges(const float *const *rows, const float *dyrow,
                                                                 float *acc, int64_t lo, int64_t hi, int64_t wd,
                                                                 int64_t c, int64_t cb, const int K, const float *aff,
                                                                 const int A, const int M, lanes_t m) {
    dvf sum[49]; /* K * K used */
    for (int t = 0; t < K * K; ++t) sum[t] = (dvf){0};
    for (int64_t x = 0; x < lo; ++x) dw_grad_edge(rows, dyrow, sum, x, wd, c, cb, K, aff, A, M, m);
    for (int64_t x = hi; x < wd; ++x) dw_grad_edge(rows, dyrow, sum, x, wd, c, cb, K, aff, A, M, m);
    for (int t = 0; t < K * K; ++t) ST(acc + (int64_t)t * c + cb, LD(acc + (int64_t)t * c + cb) + sum[t]);
}

/* The weight-gradient terms of one row of dy: acc[kh * k + kw][c] += sum_x dyrow[x][c] * rows[kh][x - p + kw][c]. */
static inline __attribute__((always_inline)) void dw_grad_row(const float *const *rows, const float *dyrow,
                                                               float *acc, int64_t wd, int64_t c, const int K,
                                                               const float *aff, const int A) {
    const int p = K / 2;
    const int64_t lo = p < wd ? p : wd, hi = wd - p > lo ? wd - p : lo;
    const int64_t full = c / DV * DV;
    const lanes_t tail = lanes_first(c - full);
    for (int kh = 0; kh < K; ++kh) {
        if (!rows[kh]) continue;
        for (int64_t cb = 0; cb < full; cb += DV)
            dw_grad_inner(rows[kh], dyrow, acc, lo, hi, c, cb, kh, K, aff, A, 0, tail);
        if (full < c) dw_grad_inner(rows[kh], dyrow, acc, lo, hi, c, full, kh, K, aff, A, 1, tail);
    }
    for (int64_t cb = 0; cb < full; cb += DV) dw_grad_edges(rows, dyrow, acc, lo, hi, wd, c, cb, K, aff, A, 0, tail);
    if (full < c) dw_grad_edges(rows, dyrow, acc, lo, hi, wd, c, full, K, aff, A, 1, tail);
}

/* rows[kh] = row h - p + kh of image b of src (N x H x W x C), NULL where out of range. */
static void row_window(const float *src, int64_t b, int64_t h, int64_t ht, int64_t wd, int64_t c, int64_t k,
                       const float **rows) {
    const int64_t p = k / 2;
    for (int64_t kh = 0; kh < k; ++kh) {
        const int64_t ih = h - p + kh;
        rows[kh] = (ih >= 0 && ih < ht) ? src + ((b * ht + ih) * wd) * c : NULL;
    }
}

/* One function per kernel size K and input map A (dw_in) for the row kernels, each with its loops unrolled: kept
 * apart (noinline), since twelve copies inlined into one function had the compiler spill the loops' registers. */
#define DW_KERNELS(K_, A_)                                                                                       \
    static __attribute__((noinline)) void segment_##K_##_##A_(const float *const *rows, const float *wt, float *y, \
                                                              int64_t x0, int64_t x1, int64_t wd, int64_t c,     \
                                                              int stream, const float *aff) {                    \
        dw_segment(rows, wt, y, x0, x1, wd, c, stream, K_, aff, A_);                                             \
    }                                                                                                            \
    static __attribute__((noinline)) void grad_##K_##_##A_(const float *const *rows, const float *dyrow,         \
                                                           float *acc, int64_t wd, int64_t c, const float *aff) { \
        dw_grad_row(rows, dyrow, acc, wd, c, K_, aff, A_);                                                       \
    }
DW_KERNELS(1, 0)
DW_KERNELS(1, 1)
DW_KERNELS(1, 2)
DW_KERNELS(3, 0)
DW_KERNELS(3, 1)
DW_KERNELS(3, 2)
DW_KERNELS(5, 0)
DW_KERNELS(5, 1)
DW_KERNELS(5, 2)
DW_KERNELS(7, 0)
DW_KERNELS(7, 1)
DW_KERNELS(7, 2)

/* Calls F_K_A(args..., aff) with K = k (1, 3, 5 or 7; the callers check k) and A the input map (dw_in): 0 without
 * aff, 2 with aff and relu, else 1. */
#define DW_DISPATCH(F, k, aff, relu, ...)                                                                          \
    do {                                                                                                         \
        const int a_ = (aff) ? ((relu) ? 2 : 1) : 0;                                                             \
        switch ((int)(k) * 4 + a_) {                                                                             \
        case 4: F##_1_0(__VA_ARGS__, aff); break;                                                                \
        case 5: F##_1_1(__VA_ARGS__, aff); break;                                                                \
        case 6: F##_1_2(__VA_ARGS__, aff); break;                                                                \
        case 12: F##_3_0(__VA_ARGS__, aff); break;                                                               \
        case 13: F##_3_1(__VA_ARGS__, aff); break;                                                               \
        case 14: F##_3_2(__VA_ARGS__, aff); break;                                                               \
        case 20: F##_5_0(__VA_ARGS__, aff); break;                                                               \
        case 21: F##_5_1(__VA_ARGS__, aff); break;                                                               \
        case 22: F##_5_2(__VA_ARGS__, aff); break;                                                               \
        case 28: F##_7_0(__VA_ARGS__, aff); break;                                                               \
        case 29: F##_7_1(__VA_ARGS__, aff); break;                                                               \
        case 30: F##_7_2(__VA_ARGS__, aff); break;                                                               \
        default: break; /* another k: the callers check k first (dw_handles, the Python entry points) */         \
        }                                                                                                        \
    } while (0)

/* dw_segment for any k and input map. */
static void segment_any(const float *const *rows, const float *wt, float *y, int64_t x0, int64_t x1, int64_t wd,
                        int64_t c, int stream, int64_t k, const float *aff, int relu) {
    DW_DISPATCH(segment, k, aff, relu, rows, wt, y, x0, x1, wd, c, stream);
}

/* dw_grad_row for any k and input map. */
static void grad_any(const float *const *rows, const float *dyrow, float *acc, int64_t wd, int64_t c, int64_t k,
                     const float *aff, int relu) {
    DW_DISPATCH(grad, k, aff, relu, rows, dyrow, acc, wd, c);
}


/* Tap-major copy of w (C, 1, k, k): wt[t][c] = w[c][t], or of w flipped in both axes: wt[t][c] = w[c][k*k-1-t]. */
float *dw_tap_major(const float *w, int64_t c, int64_t k, int flip) {
    const int64_t taps = k * k;
    float *wt = malloc(sizeof(float) * (size_t)(taps * c));
    if (!wt) return NULL;
    for (int64_t ch = 0; ch < c; ++ch)
        for (int64_t t = 0; t < taps; ++t) wt[t * c + ch] = w[ch * taps + (flip ? taps - 1 - t : t)];
    return wt;
}

/* The forward's output pixels [p0, p0 + count) of the flat pixel order (n, h, x) into y (count x C, no streaming):
 * the depthwise prefix of a fused chain (pw_chain.c), a few row segments per call. wt from dw_tap_major; aff and
 * relu as for dw_forward. */
void dw_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t k, int64_t p0,
             int64_t count, const float *aff, int relu) {
    int64_t p = p0;
    const int64_t end = p0 + count;
    while (p < end) {
        const int64_t r = p / wd, col = p % wd;
        const int64_t stop = end - p < wd - col ? col + (end - p) : wd;
        const float *window[7];
        row_window(x, r / h, r % h, h, wd, c, k, window);
        segment_any(window, wt, y + (p - p0) * c, col, stop, wd, c, 0, k, aff, relu);
        p += stop - col;
    }
}

/* Prefetches the row after `last` (wd x c floats; none when `last` is NULL, i.e. past the image) into the caches,
 * in order: the row that the next output row adds to its window. The kernels walk a window strip of channels by
 * strip, a line of every pixel at a time, which the hardware prefetchers do not follow from memory. */
static inline void prefetch_next(const float *last, int64_t wd, int64_t c) {
    if (!last) return;
    const float *next = last + wd * c;
    for (int64_t e = 0; e < wd * c; e += 64 / (int64_t)sizeof(float)) __builtin_prefetch(next + e, 0, 2);
}

/* Output row yrow (wd pixels) of the conv from its input rows `window`, written as output_mode's `mode` says. */
static inline __attribute__((always_inline)) void conv_row(const float *const *window, const float *wt, float *yrow, int64_t wd, int64_t c, int mode,
                     int64_t k, const float *aff, int relu) {
    float *row = mode == 2 ? thread_scratch(wd * c) : NULL;
    if (row) {
        segment_any(window, wt, row, 0, wd, wd, c, 0, k, aff, relu);
        stream_copy(yrow, row, wd * c);
    } else {
        segment_any(window, wt, yrow, 0, wd, wd, c, mode == 1, k, aff, relu);
    }
}

/* Whether dw_forward / dw_backward compute this conv: depthwise (one channel per group, as many outputs), stride 1,
 * no shuffle, and a kernel size segment_any has a loop for. */
int dw_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride) {
    return !perm && groups == cin && cout == cin && stride == 1 && (k == 1 || k == 3 || k == 5 || k == 7);
}

/* y = conv(x'), x' = x, or with aff (scale[c] then shift[c]) x * scale + shift, through a ReLU when relu: a
 * BatchNorm (+ ReLU) folded into the conv's reads, so its output is never written. Returns 0, or -1 (memory). */
int dw_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t k,
               const float *aff, int relu, int nthreads) {
    float *wt = dw_tap_major(w, c, k, 0);
    if (!wt) return -1;
    const int64_t rows = n * h;
    const int mode = output_mode(y, rows * wd * c, c);
    nthreads = clamp_threads(nthreads, rows);
#pragma omp parallel num_threads(nthreads)
    {
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const float *window[7];
            row_window(x, r / h, r % h, h, wd, c, k, window);
            if (r + 1 + k / 2 < rows) prefetch_next(window[k - 1], wd, c); /* a row of x, not past its end */
            conv_row(window, wt, y + r * wd * c, wd, c, mode, k, aff, relu);
        }
        if (mode) store_fence();
    }
    free(wt);
    return 0;
}

/* The gradients of dw_forward: dx (that of x', the conv's input as read) and dw (its weight terms read x' from x
 * with aff and relu as the forward did). With bn_sums (needs dx and aff): the sums that the backward of the
 * BatchNorm whose scale and shift aff is (batch mean bn_mean) takes from dx, added up per row while the row is
 * in cache: bn_sums[c] = sum dz, bn_sums[C + c] = sum dz * (x - mean) (see bn_grad_sums; bna_backward's sums).
 * Returns 0, or -1 (memory). */
int dw_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                int64_t wd, int64_t c, int64_t k, const float *aff, int relu, const float *bn_mean, double *bn_sums,
                int nthreads) {
    const int64_t rows = n * h, taps = k * k;
    if (bn_sums && (!dx || !aff)) return -1;
    float *wf = dx ? dw_tap_major(w, c, k, 1) : NULL;
    nthreads = clamp_threads(nthreads, rows);
    float *acc = dw ? calloc((size_t)(nthreads * taps * c), sizeof(float)) : NULL;
    bn_rows sums;
    if ((dx && !wf) || (dw && !acc) || bn_rows_alloc(&sums, nthreads, c, bn_sums != NULL) != 0) {
        free(wf);
        free(acc);
        return -1;
    }
    /* with the sums, dx rows are stored normally: they are read back at once from the cache */
    const int mode = dx && !bn_sums ? output_mode(dx, rows * wd * c, c) : 0;
#pragma omp parallel num_threads(nthreads)
    {
        const int me = thread_id();
        float *mine = acc ? acc + (int64_t)me * taps * c : NULL;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t b = r / h, hh = r % h;
            const float *window[7];
            if (dx) {
                row_window(dy, b, hh, h, wd, c, k, window);
                if (r + 1 + k / 2 < rows) prefetch_next(window[k - 1], wd, c);
                conv_row(window, wf, dx + r * wd * c, wd, c, mode, k, NULL, 0);
                bn_rows_add(&sums, me, dx + r * wd * c, x + r * wd * c, wd, aff, bn_mean, relu);
            }
            if (dw) {
                row_window(x, b, hh, h, wd, c, k, window);
                grad_any(window, dy + r * wd * c, mine, wd, c, k, aff, relu);
            }
        }
        if (mode) store_fence();
    }
    if (dw) {
        for (int64_t ch = 0; ch < c; ++ch)
            for (int64_t t = 0; t < taps; ++t) {
                float s = 0.0f;
                for (int th = 0; th < nthreads; ++th) s += acc[((int64_t)th * taps + t) * c + ch];
                dw[ch * taps + t] = s;
            }
    }
    bn_rows_finish(&sums, nthreads, bn_sums);
    free(wf);
    free(acc);
    return 0;
}
