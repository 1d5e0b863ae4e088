/* Training-mode BatchNorm (+ optional ReLU) over channels_last float32 tensors, fused into few memory passes.
 *
 * A channels_last (N, C, H, W) tensor is a (P = N*H*W, C) row-major matrix. Statistics are biased batch
 * statistics per channel, accumulated in double from a per-channel shift (the first pixel's value) so the
 * variance does not cancel. Work is split over pixels with a static schedule and the per-thread partial sums
 * are added in thread order, so results depend only on the thread count (deterministic for a fixed count).
 *
 *   forward  (2 passes: stats, then normalise):   y = act(x * scale[c] + shift[c]),
 *            scale = gamma * invstd, shift = beta - mean * scale, act = ReLU or identity.
 *   backward (2 passes: sums, then dx), the ReLU mask recomputed from x (y is not needed):
 *            dz = dy where (x * scale + shift > 0) (everywhere without ReLU),
 *            sum_dz[c] = sum_p dz, sum_dzx[c] = sum_p dz * (x - mean)      (dbeta = sum_dz, dgamma = sum_dzx*invstd)
 *            dx = scale * (dz - sum_dz / P - (x - mean) * invstd^2 * sum_dzx / P)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int thread_count(int nthreads, int64_t pixels) {
    if (nthreads < 1) nthreads = 1;
    if ((int64_t)nthreads > pixels) nthreads = (int)(pixels > 0 ? pixels : 1);
    return nthreads;
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Add the per-thread partial sums acc[t][2][C] into acc[0] (threads in order: deterministic). */
static void sum_partials(double *acc, int nthreads, int64_t channels) {
    for (int t = 1; t < nthreads; ++t) {
        const double *part = acc + (size_t)(2 * t) * (size_t)channels;
        for (int64_t e = 0; e < 2 * channels; ++e) acc[e] += part[e];
    }
}

/* Per-channel biased mean and variance of x (P, C). Returns 0, or -1 when out of memory. */
int bna_stats(const float *x, int64_t pixels, int64_t channels, double *mean, double *var, int nthreads) {
    nthreads = thread_count(nthreads, pixels);
    double *acc = calloc((size_t)(2 * nthreads * channels), sizeof(double));
    if (!acc) return -1;
    const float *shift = x; /* first pixel's row */
#pragma omp parallel num_threads(nthreads)
    {
        double *s1 = acc + (size_t)(2 * thread_id()) * (size_t)channels;
        double *s2 = s1 + channels;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < pixels; ++p) {
            const float *restrict row = x + p * channels;
            for (int64_t c = 0; c < channels; ++c) {
                const double d = (double)row[c] - (double)shift[c];
                s1[c] += d;
                s2[c] += d * d;
            }
        }
    }
    double *t1 = acc, *t2 = acc + channels;
    sum_partials(acc, nthreads, channels);
    for (int64_t c = 0; c < channels; ++c) {
        const double m = t1[c] / (double)pixels;
        double v = t2[c] / (double)pixels - m * m;
        mean[c] = m + (double)shift[c];
        var[c] = v > 0.0 ? v : 0.0;
    }
    free(acc);
    return 0;
}

/* y = act(x * scale + shift) per channel (relu != 0: ReLU). */
void bna_apply(const float *x, int64_t pixels, int64_t channels, const float *scale, const float *shift,
               int relu, float *y, int nthreads) {
    nthreads = thread_count(nthreads, pixels);
#pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t p = 0; p < pixels; ++p) {
        const float *restrict in = x + p * channels;
        float *restrict out = y + p * channels;
        if (relu) {
            for (int64_t c = 0; c < channels; ++c) {
                const float v = in[c] * scale[c] + shift[c];
                out[c] = v > 0.0f ? v : 0.0f;
            }
        } else {
            for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * scale[c] + shift[c];
        }
    }
}

/* Backward (see the header): fills dx (may be NULL), sum_dz and sum_dzx (per channel, double).
 * mean is float here (the value the forward normalised with). Returns 0, or -1 when out of memory. */
int bna_backward(const float *x, const float *dy, int64_t pixels, int64_t channels, const float *mean,
                 const float *invstd, const float *scale, const float *shift, int relu, float *dx,
                 double *sum_dz, double *sum_dzx, int nthreads) {
    nthreads = thread_count(nthreads, pixels);
    double *acc = calloc((size_t)(2 * nthreads * channels), sizeof(double));
    float *coef = malloc(sizeof(float) * (size_t)(3 * channels));
    if (!acc || !coef) {
        free(acc);
        free(coef);
        return -1;
    }
#pragma omp parallel num_threads(nthreads)
    {
        double *s1 = acc + (size_t)(2 * thread_id()) * (size_t)channels;
        double *s2 = s1 + channels;
#pragma omp for schedule(static)
        for (int64_t p = 0; p < pixels; ++p) {
            const float *restrict xr = x + p * channels;
            const float *restrict gr = dy + p * channels;
            if (relu) {
                for (int64_t c = 0; c < channels; ++c) {
                    const float on = xr[c] * scale[c] + shift[c] > 0.0f ? 1.0f : 0.0f;
                    const float dz = gr[c] * on;
                    s1[c] += (double)dz;
                    s2[c] += (double)(dz * (xr[c] - mean[c]));
                }
            } else {
                for (int64_t c = 0; c < channels; ++c) {
                    s1[c] += (double)gr[c];
                    s2[c] += (double)(gr[c] * (xr[c] - mean[c]));
                }
            }
        }
    }
    sum_partials(acc, nthreads, channels);
    for (int64_t c = 0; c < channels; ++c) {
        const double t1 = acc[c], t2 = acc[channels + c];
        sum_dz[c] = t1;
        sum_dzx[c] = t2;
        const double is = (double)invstd[c];
        coef[c] = scale[c];                                                    /* a: times dz */
        coef[channels + c] = (float)((double)scale[c] * is * is * t2 / (double)pixels); /* k: times (x - mean) */
        coef[2 * channels + c] = (float)((double)scale[c] * t1 / (double)pixels);       /* b: subtracted */
    }
    free(acc);
    if (dx) {
        const float *a = coef, *k = coef + channels, *b = coef + 2 * channels;
#pragma omp parallel for num_threads(nthreads) schedule(static)
        for (int64_t p = 0; p < pixels; ++p) {
            const float *restrict xr = x + p * channels;
            const float *restrict gr = dy + p * channels;
            float *restrict out = dx + p * channels;
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
    free(coef);
    return 0;
}
