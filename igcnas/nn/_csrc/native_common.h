/* What the kernel sources of igcnas.nn._native share (they are compiled into one library): the thread count of a
 * parallel loop, aligned buffers, the current thread's index, the size from which outputs are streamed past the
 * caches and the fence after such stores, and the entry points of dw_conv.c that group_conv.c and pw_chain.c call.
 */
#ifndef IGCNAS_NATIVE_COMMON_H
#define IGCNAS_NATIVE_COMMON_H

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

/* Outputs at least this large are written with non-temporal stores: they do not fit in the caches anyway, and a
 * normal store first reads every line it writes. */
#define STREAM_BYTES ((int64_t)16 << 20)

/* Whether `elements` floats reach STREAM_BYTES: a tensor past the caches. */
static inline int past_caches(int64_t elements) { return elements * (int64_t)sizeof(float) >= STREAM_BYTES; }

/* Threads for `work` independent items: at least one, at most one per item. */
static inline int clamp_threads(int nthreads, int64_t work) {
    if (nthreads < 1) nthreads = 1;
    if (work < 1) work = 1;
    return nthreads > work ? (int)work : nthreads;
}

/* A 64-byte aligned block of `bytes` (at least 64) for free(), or NULL when out of memory. */
static inline void *alloc_aligned(size_t bytes) {
    void *ptr = NULL;
    if (posix_memalign(&ptr, 64, bytes ? bytes : 64) != 0) return NULL;
    return ptr;
}

/* Index of the calling thread in its OpenMP team (0 without OpenMP). */
static inline int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Make this thread's non-temporal stores visible before the parallel region ends (they are AVX-512 only). */
static inline void store_fence(void) {
#if defined(__AVX512F__)
    _mm_sfence();
#endif
}

/* dst[0, count) = src[0, count) with non-temporal stores for the whole 64-byte lines of dst (AVX-512; the partial
 * lines at either end stored normally, so that no line is written both ways), else memcpy: a block computed in a
 * cache-resident buffer and streamed out, for outputs whose rows are not line-aligned (C not a multiple of 16). */
static inline void stream_copy(float *restrict dst, const float *restrict src, int64_t count) {
#if defined(__AVX512F__)
    int64_t i = (int64_t)(((64 - ((uintptr_t)dst & 63)) & 63) / sizeof(float));
    if (i > count) i = count;
    for (int64_t j = 0; j < i; ++j) dst[j] = src[j];
    for (; i + 16 <= count; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
    for (; i < count; ++i) dst[i] = src[i];
#else
    memcpy(dst, src, sizeof(float) * (size_t)count);
#endif
}

/* This thread's scratch of at least `floats` floats, 64-byte aligned, kept for its later calls (NULL: out of
 * memory); one per thread and source file, grown as needed, freed when the thread exits (a pthread key whose
 * destructor frees it). The block's first 64 bytes hold its capacity. */
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ready;

static void scratch_key_create(void) { scratch_ready = pthread_key_create(&scratch_key, free) == 0; }

static inline float *thread_scratch(int64_t floats) {
    pthread_once(&scratch_once, scratch_key_create);
    if (!scratch_ready) return NULL;
    float *block = pthread_getspecific(scratch_key);
    if (!block || *(int64_t *)block < floats) {
        free(block);
        block = alloc_aligned(sizeof(float) * (size_t)(floats + 16));
        if (block) *(int64_t *)block = floats;
        if (pthread_setspecific(scratch_key, block) != 0) {
            free(block);
            return NULL;
        }
        if (!block) return NULL;
    }
    return block + 16;
}

/* NV floats per vector (16 with AVX-512, else 8) and the first n of them (0 <= n <= NV) loaded with the other lanes
 * zero (load_lanes) or stored with the memory past them untouched (store_lanes), for the channels past the last full
 * vector of a row: lanes_first(n) is the mask, built once per row. Masked moves with AVX-512 or AVX, else a loop. */
#if defined(__AVX512F__)
#define NV 16
typedef __m512 nv_t;
typedef __mmask16 lanes_t;
static inline lanes_t lanes_first(int64_t n) { return (lanes_t)((1u << n) - 1u); }
#define load_lanes(p, m) _mm512_maskz_loadu_ps((m), (p))
#define store_lanes(p, m, v) _mm512_mask_storeu_ps((p), (m), (__m512)(v))
#elif defined(__AVX__)
#define NV 8
typedef __m256 nv_t;
typedef __m256i lanes_t;
static inline lanes_t lanes_first(int64_t n) {
    static const int32_t ones[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
    return _mm256_loadu_si256((const __m256i *)(ones + 8 - n));
}
#define load_lanes(p, m) _mm256_maskload_ps((p), (m))
#define store_lanes(p, m, v) _mm256_maskstore_ps((p), (m), (__m256)(v))
#else
#define NV 8
typedef float nv_t __attribute__((vector_size(NV * 4)));
typedef int64_t lanes_t;
static inline lanes_t lanes_first(int64_t n) { return n; }
#define load_lanes(p, m)                                                                                        \
    ({                                                                                                           \
        nv_t v_ = {0};                                                                                           \
        for (int64_t i_ = 0; i_ < (m); ++i_) v_[i_] = (p)[i_];                                                   \
        v_;                                                                                                      \
    })
#define store_lanes(p, m, v)                                                                                     \
    do {                                                                                                         \
        const nv_t v_ = (nv_t)(v);                                                                               \
        for (int64_t i_ = 0; i_ < (m); ++i_) (p)[i_] = v_[i_];                                                   \
    } while (0)
#endif

/* g where xv * sc + sh > 0, else 0 (nv_t each): the gradient through a BatchNorm's ReLU, its mask recomputed from
 * the input. A macro: a function returning a vector draws ABI notes on builds without AVX. */
typedef int32_t nv_bits __attribute__((vector_size(NV * 4)));
#define BN_DZ(g, xv, sc, sh) ((nv_t)((nv_bits)(g) & (nv_bits)((xv) * (sc) + (sh) > (nv_t){0})))

/* A BatchNorm's backward sums over `pixels` consecutive pixels of the gradient g of its output and of its input x
 * (both C channels per pixel), added to acc (2C doubles): acc[c] += sum dz, acc[C + c] += sum dz * (x - mean[c]),
 * dz = g where x * scale + shift > 0 (everywhere without relu; scale and shift then unread), summed in float in
 * part (2C floats, overwritten) first. bna_backward's sums pass takes them so, block by block, and the kernels that
 * write g for a folded BatchNorm (bn_rows_add) while g is in cache. */
static inline void bn_grad_sums(const float *restrict g, const float *restrict x, int64_t pixels, int64_t c,
                                const float *restrict scale, const float *restrict shift, const float *restrict mean,
                                int relu, float *restrict part, double *restrict acc) {
    /* a strip of NV channels at a time, its two sums in registers over the pixels (each channel summed over the
     * pixels in order, as a loop per channel would) */
    for (int64_t cb = 0; cb < c; cb += NV) {
        const lanes_t m = lanes_first(c - cb < NV ? c - cb : NV);
        const nv_t zero = {0};
        const nv_t mu = load_lanes(mean + cb, m);
        const nv_t sc = relu ? load_lanes(scale + cb, m) : zero, sh = relu ? load_lanes(shift + cb, m) : zero;
        nv_t s1 = zero, s2 = zero;
        for (int64_t p = 0; p < pixels; ++p) {
            const nv_t xv = load_lanes(x + p * c + cb, m);
            nv_t dz = load_lanes(g + p * c + cb, m);
            if (relu) dz = BN_DZ(dz, xv, sc, sh);
            s1 += dz;
            s2 += dz * (xv - mu);
        }
        store_lanes(part + cb, m, s1);
        store_lanes(part + c + cb, m, s2);
    }
    for (int64_t e = 0; e < 2 * c; ++e) acc[e] += (double)part[e];
}

/* As bn_grad_sums (the same sums, each channel's added over the pixels in the same order), row by row: each row
 * of x and of g is read in order, so a pass over tensors past the caches streams from memory, where
 * bn_grad_sums' walk down a strip of channels reads every row of the block one line at a time; the strips' sums
 * stay in `part` (in L1) instead of registers, which costs more than it saves on tensors in cache. */
static inline void bn_grad_sums_rows(const float *restrict g, const float *restrict x, int64_t pixels, int64_t c,
                                     const float *restrict scale, const float *restrict shift,
                                     const float *restrict mean, int relu, float *restrict part,
                                     double *restrict acc) {
    for (int64_t e = 0; e < 2 * c; ++e) part[e] = 0.0f;
    for (int64_t p = 0; p < pixels; ++p) {
        const float *restrict xr = x + p * c, *restrict gr = g + p * c;
        for (int64_t cb = 0; cb < c; cb += NV) {
            const lanes_t m = lanes_first(c - cb < NV ? c - cb : NV);
            const nv_t xv = load_lanes(xr + cb, m);
            nv_t dz = load_lanes(gr + cb, m);
            if (relu) dz = BN_DZ(dz, xv, load_lanes(scale + cb, m), load_lanes(shift + cb, m));
            store_lanes(part + cb, m, load_lanes(part + cb, m) + dz);
            store_lanes(part + c + cb, m, load_lanes(part + c + cb, m) + dz * (xv - load_lanes(mean + cb, m)));
        }
    }
    for (int64_t e = 0; e < 2 * c; ++e) acc[e] += (double)part[e];
}

/* dst = relu(src * scale + shift) per channel over a row of wd pixels of cin channels (aff: scale then shift;
 * relu 0: the affine alone): the folded BatchNorm's output, never written to memory. */
static inline void normalise_row(const float *restrict src, int64_t wd, int64_t cin, const float *restrict aff, int relu,
                          float *restrict dst) {
    typedef int32_t nvi_t __attribute__((vector_size(NV * 4)));
    for (int64_t cb = 0; cb < cin; cb += NV) {  /* a strip of channels, its scale and shift in registers */
        const lanes_t m = lanes_first(cin - cb < NV ? cin - cb : NV);
        const nv_t sc = load_lanes(aff + cb, m), sh = load_lanes(aff + cin + cb, m), zero = {0};
        for (int64_t w = 0; w < wd; ++w) {
            nv_t v = load_lanes(src + w * cin + cb, m) * sc + sh;
            if (relu) v = (nv_t)((nvi_t)v & (nvi_t)(v > zero));
            store_lanes(dst + w * cin + cb, m, v);
        }
    }
}

/* out[e] = rows[0][e] + rows[1][e] + ... for e < n, the nthreads per-thread rows `stride` doubles apart added in
 * thread order (deterministic for a thread count); out may be rows[0]. */
static inline void thread_totals(double *out, const double *rows, int nthreads, int64_t stride, int64_t n) {
    for (int64_t e = 0; e < n; ++e) {
        double total = rows[e];
        for (int th = 1; th < nthreads; ++th) total += rows[(int64_t)th * stride + e];
        out[e] = total;
    }
}

/* The per-thread accumulators of a folded BatchNorm's backward sums in a kernel's parallel loop (the depthwise,
 * grouped and chain backwards): a row of 2C doubles (zeroed) and one of 2C floats per thread. An empty set (sums
 * not asked) holds nothing and adds nothing. */
typedef struct {
    double *sums;
    float *part;
    int64_t c;
} bn_rows;

/* 0, or -1 when out of memory (then nothing is held); without `wanted`, an empty set. */
static inline int bn_rows_alloc(bn_rows *r, int nthreads, int64_t c, int wanted) {
    r->c = c;
    r->sums = wanted ? calloc((size_t)(nthreads * 2 * c), sizeof(double)) : NULL;
    r->part = wanted ? malloc(sizeof(float) * (size_t)(nthreads * 2 * c)) : NULL;
    if (wanted && (!r->sums || !r->part)) {
        free(r->sums);
        free(r->part);
        r->sums = NULL, r->part = NULL;
        return -1;
    }
    return 0;
}

/* Thread me adds the sums over `pixels` consecutive pixels of g and x (bn_grad_sums). */
static inline void bn_rows_add(const bn_rows *r, int me, const float *g, const float *x, int64_t pixels,
                               const float *aff, const float *mean, int relu) {
    if (!r->sums) return;
    const int64_t at = (int64_t)me * 2 * r->c;
    bn_grad_sums(g, x, pixels, r->c, aff, aff + r->c, mean, relu, r->part + at, r->sums + at);
}

/* out (2C doubles) = the threads' sums added in thread order; then the set is freed. */
static inline void bn_rows_finish(bn_rows *r, int nthreads, double *out) {
    if (r->sums && out) thread_totals(out, r->sums, nthreads, 2 * r->c, 2 * r->c);
    free(r->sums);
    free(r->part);
    r->sums = NULL, r->part = NULL;
}

/* dw_conv.c: the depthwise conv with stride 1 and no shuffle, which needs no row expansion. dw_handles says
 * whether it computes the conv gc_forward / gc_backward were given. */
int dw_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride);
int dw_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t k,
               const float *aff, int relu, int nthreads);
int dw_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                int64_t wd, int64_t c, int64_t k, const float *aff, int relu, const float *bn_mean, double *bn_sums,
                int nthreads);
/* group_rot.c: the grouped 3x3 conv with In_g = Out_g = 2, 4 or 8, stride 1 and no shuffle, read in place (AVX or
 * AVX-512; rot_handles is 0 elsewhere). gc_forward / gc_backward hand it the convs rot_handles accepts. */
int rot_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride);
int rot_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t mg,
                const float *aff, int relu, int nthreads);
int rot_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                 int64_t wd, int64_t c, int64_t mg, const float *aff, int relu, const float *bn_mean,
                 double *bn_sums, int nthreads);
/* The kernel size of group_rot.c's convs, and the rows of a thread's ring of normalised input rows. */
#define ROT_K 3
/* A thread's ring of ROT_K rows of wd x c normalised inputs, its ROT_K tags set to -1 (NULL without aff, or when
 * out of memory: *failed set). */
float *rot_ring_alloc(const float *aff, int64_t wd, int64_t c, int64_t *tags, int *failed);
/* The grouped conv of rot_forward as the prefix of a fused chain (pw_chain.c): its weights in rot_forward's form
 * (malloc'd; NULL when out of memory or without the kernels, where rot_handles is 0), and the forward's output for
 * pixels [p0, p0 + count) of the flat order (n, h, x) into y (count x C). With aff, ring and tags
 * (rot_ring_alloc's) are the calling thread's: each input row is normalised into it once while the spans come in
 * order. */
float *rot_prefix_weights(const float *w, int64_t c, int64_t mg);
void rot_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t mg, int64_t p0,
              int64_t count, const float *aff, int relu, float *ring, int64_t *tags);
/* The depthwise weights (C, 1, k, k) tap-major, wt[t][c] (flip: spatially flipped), malloc'd; and the forward's
 * output for a span of pixels, the depthwise prefix of a fused chain (pw_chain.c). */
float *dw_tap_major(const float *w, int64_t c, int64_t k, int flip);
void dw_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t k, int64_t p0,
             int64_t count, const float *aff, int relu);

#endif
