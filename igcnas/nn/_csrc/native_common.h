/* What the kernel sources of igcnas.nn._native share (they are compiled into one library): the thread count of a
 * parallel loop, aligned buffers, the current thread's index, the size from which outputs are streamed past the
 * caches and the fence after such stores, and the entry points of dw_conv.c that group_conv.c and pw_chain.c call.
 */
#ifndef IGCNAS_NATIVE_COMMON_H
#define IGCNAS_NATIVE_COMMON_H

#include <stdint.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

/* Outputs at least this large are written with non-temporal stores: they do not fit in the caches anyway, and a
 * normal store first reads every line it writes. */
#define STREAM_BYTES ((int64_t)16 << 20)

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

/* dw_conv.c: the depthwise conv with stride 1 and no shuffle, which needs no row expansion. dw_handles says
 * whether it computes the conv gc_forward / gc_backward were given. */
int dw_handles(const int64_t *perm, int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride);
int dw_forward(const float *x, const float *w, float *y, int64_t n, int64_t h, int64_t wd, int64_t c, int64_t k,
               const float *aff, int relu, int nthreads);
int dw_backward(const float *x, const float *w, const float *dy, float *dx, float *dw, int64_t n, int64_t h,
                int64_t wd, int64_t c, int64_t k, const float *aff, int relu, const float *bn_mean, double *bn_sums,
                int nthreads);
/* The depthwise weights (C, 1, k, k) tap-major, wt[t][c] (flip: spatially flipped), malloc'd; and the forward's
 * output for a span of pixels, the depthwise prefix of a fused chain (pw_chain.c). */
float *dw_tap_major(const float *w, int64_t c, int64_t k, int flip);
void dw_span(const float *x, const float *wt, float *y, int64_t h, int64_t wd, int64_t c, int64_t k, int64_t p0,
             int64_t count, const float *aff, int relu);

#endif
