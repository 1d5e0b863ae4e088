/* Training-mode BatchNorm (+ optional ReLU) over channels_last float32 tensors, fused into few memory passes.
 *
 * A channels_last (N, C, H, W) tensor is a (P = N*H*W, C) row-major matrix. Statistics are biased batch
 * statistics per channel, taken from a per-channel shift (the first pixel's value) so the variance does not
 * cancel: summed in float over blocks of BN_BLOCK pixels, the block sums accumulated in double. Work is split
 * over blocks with a static schedule and the per-thread partial sums are added in thread order, so results
 * depend only on the thread count (deterministic for a fixed count).
 *
 *   forward  (2 passes: stats, then normalise):   y = act(x * scale[c] + shift[c]),
 *            scale = gamma * invstd, shift = beta - mean * scale, act = ReLU or identity;
 *            with a residual r (bna_apply_add): y = act(x * scale[c] + shift[c] + r), a block's BN, shortcut
 *            sum and closing ReLU in the one normalise pass (its backward masks dy by y > 0 in the sums
 *            pass of bna_backward, which writes the masked gradient for the residual).
 *   backward (2 passes: sums, then dx), the ReLU mask recomputed from x (y is not needed):
 *            dz = dy where (x * scale + shift > 0) (everywhere without ReLU),
 *            sum_dz[c] = sum_p dz, sum_dzx[c] = sum_p dz * (x - mean)      (dbeta = sum_dz, dgamma = sum_dzx*invstd)
 *            dx = scale * (dz - sum_dz / P - (x - mean) * invstd^2 * sum_dzx / P)
 */
#define _POSIX_C_SOURCE 200112L /* posix_memalign */
#include <stdint.h>
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "native_common.h"

/* Pixels summed in float before their sums are added to the double accumulators: double precision where the
 * sums grow large, float (full vector width, no conversions) in the inner loop. */
#define BN_BLOCK 32

/* Blocks of BN_BLOCK pixels in `pixels` (the last one may be partial). */
static int64_t block_count(int64_t pixels) { return (pixels + BN_BLOCK - 1) / BN_BLOCK; }

/* One past the last pixel of block blk. */
static int64_t block_end(int64_t blk, int64_t pixels) {
    return (blk + 1) * BN_BLOCK < pixels ? (blk + 1) * BN_BLOCK : pixels;
}

/* Threads for `pixels` pixels: at most one per block of BN_BLOCK pixels (a thread without a block would only
 * allocate and zero its partial sums). */
static int thread_count(int nthreads, int64_t pixels) { return clamp_threads(nthreads, block_count(pixels)); }

/* Per-thread partial sums: for each thread a row of 2*C doubles (the two sums, double) and 2*C floats (the sums
 * of the current block of pixels), each row padded to whole 64-byte cache lines so that no two threads write
 * one line (false sharing had made the 2-thread reductions slower than 1 thread). */
typedef struct {
    double *sums;   /* nthreads rows of `dstride` doubles: sum1[C], sum2[C] */
    float *block;   /* nthreads rows of `fstride` floats: block1[C], block2[C] */
    int64_t dstride, fstride;
} partials;

static int partials_alloc(partials *pt, int nthreads, int64_t channels) {
    pt->dstride = (2 * channels + 7) / 8 * 8;   /* 8 doubles = 64 bytes */
    pt->fstride = (2 * channels + 15) / 16 * 16; /* 16 floats = 64 bytes */
    /* posix_memalign, not C11's aligned_alloc: declared whatever -std the compiler defaults to */
    void *sums = NULL, *block = NULL;
    if (posix_memalign(&sums, 64, sizeof(double) * (size_t)(pt->dstride * nthreads))) sums = NULL;
    if (posix_memalign(&block, 64, sizeof(float) * (size_t)(pt->fstride * nthreads))) block = NULL;
    pt->sums = sums;
    pt->block = block;
    if (!pt->sums || !pt->block) {
        free(pt->sums);
        free(pt->block);
        return -1;
    }
    memset(pt->sums, 0, sizeof(double) * (size_t)(pt->dstride * nthreads));
    return 0;
}

static void partials_free(partials *pt) {
    free(pt->sums);
    free(pt->block);
}

/* Add every thread's sums into row 0 (threads in order: deterministic for a thread count). */
static void partials_total(partials *pt, int nthreads, int64_t channels) {
    thread_totals(pt->sums, pt->sums, nthreads, pt->dstride, 2 * channels);
}

/* Sums over pixels [p0, p1) of d = x - shift and of d * d into b1, b2 (overwritten). Each pass's inner loops are
 * functions of their own like this one: their restrict arguments let the compiler vectorize the channel loops,
 * which it did not do for the same loops inside the parallel regions. */
static void stat_block_sums(const float *restrict x, int64_t p0, int64_t p1, int64_t channels,
                            const float *restrict shift, float *restrict b1, float *restrict b2) {
    for (int64_t c = 0; c < channels; ++c) b1[c] = b2[c] = 0.0f;
    for (int64_t p = p0; p < p1; ++p) {
        const float *row = x + p * channels;
        for (int64_t c = 0; c < channels; ++c) {
            const float d = row[c] - shift[c];
            b1[c] += d;
            b2[c] += d * d;
        }
    }
}

/* Whether the outputs of a pass over `elements` floats are streamed: computed per block into a per-thread buffer
 * and written out by stream_copy (large outputs, AVX-512; a normal store would first read every line it writes). */
static int streamed(int64_t elements) {
#if defined(__AVX512F__)
    return past_caches(elements);
#else
    (void)elements;
    return 0;
#endif
}

/* y[p - p0] = act(x * scale + shift [+ r]) over pixels [p0, p1) (y: the block's first output row); r (a residual of
 * x's shape) may be NULL. With r, the BN, the residual sum and the ReLU after it take one pass. */
static void apply_rows(const float *restrict x, const float *restrict r, int64_t p0, int64_t p1, int64_t channels,
                       const float *restrict scale, const float *restrict shift, int relu, float *restrict y) {
    for (int64_t p = p0; p < p1; ++p) {
        const float *in = x + p * channels;
        const float *res = r ? r + p * channels : NULL;
        float *out = y + (p - p0) * channels;
        if (res && relu) {
            for (int64_t c = 0; c < channels; ++c) {
                const float v = in[c] * scale[c] + shift[c] + res[c];
                out[c] = v > 0.0f ? v : 0.0f;
            }
        } else if (res) {
            for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * scale[c] + shift[c] + res[c];
        } else if (relu) {
            for (int64_t c = 0; c < channels; ++c) {
                const float v = in[c] * scale[c] + shift[c];
                out[c] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * scale[c] + shift[c];
        }
    }
}

/* dx[p - p0] = a * dz - k * (x - mean) - b over pixels [p0, p1) (dx: the block's first row), dz = dy masked by the
 * ReLU when relu != 0. */
static void grad_rows(const float *restrict x, const float *restrict dy, int64_t p0, int64_t p1, int64_t channels,
                      const float *restrict mean, const float *restrict scale, const float *restrict shift,
                      const float *restrict a, const float *restrict k, const float *restrict b, int relu,
                      float *restrict dx) {
    for (int64_t p = p0; p < p1; ++p) {
        const float *xr = x + p * channels, *gr = dy + p * channels;
        float *out = dx + (p - p0) * channels;
        if (relu) {
            for (int64_t c = 0; c < channels; ++c) {
                const float on = xr[c] * scale[c] + shift[c] > 0.0f ? 1.0f : 0.0f;
                out[c] = a[c] * (gr[c] * on) - k[c] * (xr[c] - mean[c]) - b[c];
            }
        } else {
            for (int64_t c = 0; c < channels; ++c) out[c] = a[c] * gr[c] - k[c] * (xr[c] - mean[c]) - b[c];
        }
    }
}

/* What a writing pass reads: apply_rows's (in = x, other = r) or grad_rows's (other = dy; mean, a, k, b). */
typedef struct {
    const float *in, *other, *mean, *scale, *shift, *a, *k, *b;
    int relu, grad;
} pass_args;

/* One pass that writes dst (P, C) block by block: apply_rows, or grad_rows with pa->grad. A large output goes
 * through this thread's buffer and stream_copy, block by block (see streamed). */
static void write_pass(const pass_args *pa, float *dst, int64_t pixels, int64_t channels, int nthreads) {
    const int64_t blocks = block_count(pixels);
    const int stream = streamed(pixels * channels);
#pragma omp parallel num_threads(nthreads)
    {
        float *stage = stream ? thread_scratch(BN_BLOCK * channels) : NULL;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; ++blk) {
            const int64_t p0 = blk * BN_BLOCK, p1 = block_end(blk, pixels);
            float *to = stage ? stage : dst + p0 * channels;
            if (pa->grad)
                grad_rows(pa->in, pa->other, p0, p1, channels, pa->mean, pa->scale, pa->shift, pa->a, pa->k, pa->b,
                          pa->relu, to);
            else
                apply_rows(pa->in, pa->other, p0, p1, channels, pa->scale, pa->shift, pa->relu, to);
            if (stage) stream_copy(dst + p0 * channels, stage, (p1 - p0) * channels);
        }
        if (stage) store_fence();
    }
}

/* Per-channel biased mean and variance of x (P, C). Returns 0, or -1 when out of memory. */
int bna_stats(const float *x, int64_t pixels, int64_t channels, double *mean, double *var, int nthreads) {
    nthreads = thread_count(nthreads, pixels);
    partials pt;
    if (partials_alloc(&pt, nthreads, channels)) return -1;
    const float *restrict shift = x; /* first pixel's row */
    const int64_t blocks = block_count(pixels);
#pragma omp parallel num_threads(nthreads)
    {
        const int t = thread_id();
        double *restrict s1 = pt.sums + (size_t)(t * pt.dstride);
        double *restrict s2 = s1 + channels;
        float *restrict b1 = pt.block + (size_t)(t * pt.fstride);
        float *restrict b2 = b1 + channels;
#pragma omp for schedule(static)
        for (int64_t blk = 0; blk < blocks; ++blk) {
            const int64_t end = block_end(blk, pixels);
            stat_block_sums(x, blk * BN_BLOCK, end, channels, shift, b1, b2);
            for (int64_t c = 0; c < channels; ++c) {
                s1[c] += (double)b1[c];
                s2[c] += (double)b2[c];
            }
        }
    }
    partials_total(&pt, nthreads, channels);
    const double *t1 = pt.sums, *t2 = pt.sums + channels;
    for (int64_t c = 0; c < channels; ++c) {
        const double m = t1[c] / (double)pixels;
        double v = t2[c] / (double)pixels - m * m;
        mean[c] = m + (double)shift[c];
        var[c] = v > 0.0 ? v : 0.0;
    }
    partials_free(&pt);
    return 0;
}

/* What the normalising pass and the backward need from the statistics, as floats, into out (5 rows of C):
 * scale = gamma * invstd, shift = beta - mean * scale (gamma = 1 and beta = 0 when NULL), mean, invstd =
 * 1 / sqrt(var + eps), and the unbiased variance var * count / (count - 1) that the running statistics take.
 * Computed in double, each rounded once (as torch computed them from the double statistics). */
void bna_coefficients(const double *mean, const double *var, const float *gamma, const float *beta, double eps,
                      int64_t channels, int64_t count, float *out) {
    float *scale = out, *shift = out + channels, *mean32 = out + 2 * channels, *invstd32 = out + 3 * channels;
    float *unbiased = out + 4 * channels;
    const double correction = count > 1 ? (double)count / (double)(count - 1) : 1.0;
    for (int64_t c = 0; c < channels; ++c) {
        const double is = 1.0 / sqrt(var[c] + eps);
        const double s = gamma ? is * (double)gamma[c] : is;
        double b = -mean[c] * s;
        if (beta) b = b + (double)beta[c];
        scale[c] = (float)s;
        shift[c] = (float)b;
        mean32[c] = (float)mean[c];
        invstd32[c] = (float)is;
        unbiased[c] = (float)(var[c] * correction);
    }
}

/* The running statistics' update of nn.BatchNorm2d from bna_coefficients' rows: running += factor * (batch -
 * running) for the mean (row 2) and the unbiased variance (row 4), float32, as torch.lerp_ computes it. */
void bna_running_update(const float *coef, int64_t channels, double factor, float *running_mean,
                        float *running_var) {
    const float f = (float)factor;
    const float *mean = coef + 2 * channels, *unbiased = coef + 4 * channels;
    for (int64_t c = 0; c < channels; ++c) {
        running_mean[c] += f * (mean[c] - running_mean[c]);
        running_var[c] += f * (unbiased[c] - running_var[c]);
    }
}

/* y = act(x * scale + shift [+ r]) per channel, r a residual of x's shape or NULL (relu != 0: ReLU, after the sum). */
void bna_apply_add(const float *x, const float *r, int64_t pixels, int64_t channels, const float *scale,
                   const float *shift, int relu, float *y, int nthreads) {
    const pass_args pa = {x, r, NULL, scale, shift, NULL, NULL, NULL, relu, 0};
    write_pass(&pa, y, pixels, channels, thread_count(nthreads, pixels));
}

/* As bn_grad_sums' float block sums with dz = dy where out > 0 (the ReLU after a residual sum, masked by the forward's output),
 * dz also written to dz_out: the gradient that the sum passes on to the residual. */
static void masked_block_sums(const float *restrict x, const float *restrict dy, const float *restrict out,
                              int64_t p0, int64_t p1, int64_t channels, const float *restrict mean,
                              float *restrict b1, float *restrict b2, float *restrict dz_out) {
    for (int64_t c = 0; c < channels; ++c) b1[c] = b2[c] = 0.0f;
    for (int64_t p = p0; p < p1; ++p) {
        const float *xr = x + p * channels, *gr = dy + p * channels, *yr = out + p * channels;
        float *zr = dz_out + p * channels;
        for (int64_t c = 0; c < channels; ++c) {
            const float dz = yr[c] > 0.0f ? gr[c] : 0.0f;
            zr[c] = dz;
            b1[c] += dz;
            b2[c] += dz * (xr[c] - mean[c]);
        }
    }
}

/* Backward (see the header): fills dx, dgamma = sum_dzx * invstd and dbeta = sum_dz (per channel; each may be
 * NULL). mean is float here (the value the forward normalised with). With `out` (the forward's output of a BN +
 * residual sum + ReLU; relu must then be 0), dz = dy where out > 0, written to dz_out in the sums pass and read
 * by the dx pass. With sums (sum dz, then sum dz * (x - mean): 2 x C doubles, taken by the pass that wrote dy)
 * the sums pass is skipped. Returns 0, or -1 when out of memory. */
int bna_backward(const float *x, const float *dy, const float *out, float *dz_out, const double *sums,
                 int64_t pixels, int64_t channels, const float *mean, const float *invstd, const float *scale,
                 const float *shift, int relu, float *dx, float *dgamma, float *dbeta, int nthreads) {
    nthreads = thread_count(nthreads, pixels);
    float *coef = malloc(sizeof(float) * (size_t)(3 * channels));
    if (!coef) return -1;
    const int64_t blocks = block_count(pixels);
    partials pt = {NULL, NULL, 0, 0};
    const double *total = sums; /* given: taken by the pass that wrote dy (dw_backward's bn_sums), no sums pass */
    /* tensors of STREAM_BYTES and more (past the caches) are read row by row (bn_grad_sums_rows) */
    const int rows = past_caches(pixels * channels);
    if (!total) {
        if (partials_alloc(&pt, nthreads, channels)) {
            free(coef);
            return -1;
        }
#pragma omp parallel num_threads(nthreads)
        {
            const int t = thread_id();
            double *restrict s1 = pt.sums + (size_t)(t * pt.dstride);
            double *restrict s2 = s1 + channels;
            float *restrict b1 = pt.block + (size_t)(t * pt.fstride);
            float *restrict b2 = b1 + channels;
#pragma omp for schedule(static)
            for (int64_t blk = 0; blk < blocks; ++blk) {
                const int64_t end = block_end(blk, pixels);
                const int64_t p0 = blk * BN_BLOCK;
                if (out) {
                    masked_block_sums(x, dy, out, p0, end, channels, mean, b1, b2, dz_out);
                    for (int64_t c = 0; c < channels; ++c) {
                        s1[c] += (double)b1[c];
                        s2[c] += (double)b2[c];
                    }
                } else { /* the float block sums (b1, b2), added to this thread's doubles (s1, s2) */
                    (rows ? bn_grad_sums_rows : bn_grad_sums)(dy + p0 * channels, x + p0 * channels, end - p0,
                                                              channels, scale, shift, mean, relu, b1, s1);
                }
            }
        }
        partials_total(&pt, nthreads, channels);
        total = pt.sums;
    }
    for (int64_t c = 0; c < channels; ++c) {
        const double t1 = total[c], t2 = total[channels + c];
        const double is = (double)invstd[c];
        if (dbeta) dbeta[c] = (float)t1;
        if (dgamma) dgamma[c] = (float)(t2 * is);
        coef[c] = scale[c];                                                    /* a: times dz */
        coef[channels + c] = (float)((double)scale[c] * is * is * t2 / (double)pixels); /* k: times (x - mean) */
        coef[2 * channels + c] = (float)((double)scale[c] * t1 / (double)pixels);       /* b: subtracted */
    }
    partials_free(&pt);
    if (dx) {
        const pass_args pa = {x, out ? dz_out : dy, mean, scale, shift, coef, coef + channels, coef + 2 * channels,
                              relu, 1};
        write_pass(&pa, dx, pixels, channels, nthreads);
    }
    free(coef);
    return 0;
}
