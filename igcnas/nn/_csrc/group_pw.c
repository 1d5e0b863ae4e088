/* Grouped 1x1 convolution with a channel permutation folded into its indexing (igcnas.nn._native).
 *
 * Tensors are channels_last (NHWC) float32, i.e. row-major (P = N*H*W, C) matrices. A "grouped pointwise"
 * map with G groups reads, for group g, the In_g input channels in slots [g*In_g, (g+1)*In_g) and writes the
 * Out_g output channels in slots [g*Out_g, (g+1)*Out_g):
 *
 *     out[p, c'] = sum_i w[g][o][i] * in[p, c]   with islot[c] = g*In_g + i and oslot[c'] = g*Out_g + o
 *
 * islot / oslot map a natural channel to its slot (NULL = identity), i.e. they are the *inverse* of the
 * permutation ("slot j holds channel perm[j]"). Forward: islot = inverse shuffle, oslot = NULL, w = weight
 * (Cout, Ig). Input gradient: in = grad_out, islot = NULL, oslot = inverse shuffle, w = weight transposed per
 * group (G, Ig, Og); gpw_backward computes it together with the weight gradient in one pass.
 *
 * Pixels are processed in tiles of TILE = 16 with AVX-512 (8 otherwise: a tile is one register's vector either
 * way): a tile is transposed (16 x 16 blocks in registers when AVX-512 is available, element by element
 * otherwise) into a slot-major buffer (pixel axis innermost), the per-group matmuls run on TILE-pixel vectors, and
 * the result is transposed back (with non-temporal stores for outputs of STREAM_BYTES and more, which would
 * only evict the caches). Tiles are spread over OpenMP threads; the weight gradient is summed in per-thread,
 * per-lane accumulators that are added up at the end.
 *
 * GNU C (vector extensions; gcc or clang) + OpenMP, no torch headers; called through ctypes with raw pointers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"

#if defined(__AVX512F__)
#define TILE 16  /* pixels per tile: one vector, one zmm register */
#else
#define TILE 8   /* one ymm register: 16-float vectors take two on AVX2, and the accumulators then spill */
#endif
#define WSUB 4   /* tiles per step of the backward kernel (its dw update is written for 4) */

typedef float vf __attribute__((vector_size(TILE * 4), aligned(TILE * 4)));

#if defined(__AVX512F__)
/* Transpose the 16 x 16 block r[k] (16 rows of 16 floats) in registers. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int k = 0; k < 16; k += 2) {
        t[k] = _mm512_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm512_unpackhi_ps(r[k], r[k + 1]);
    }
    for (int k = 0; k < 16; k += 4) {
        r[k] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
        r[k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k]), _mm512_castps_pd(t[k + 2])));
        r[k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
        r[k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[k + 1]), _mm512_castps_pd(t[k + 3])));
    }
    /* r[0..15] now hold, per 128-bit lane L, columns 4L + {0,1,2,3} of 4-row groups (rows 4q..4q+3 in r[4q..]) */
    for (int k = 0; k < 4; ++k) {
        t[k] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0x88);
        t[k + 4] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0xdd);
        t[k + 8] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0x88);
        t[k + 12] = _mm512_shuffle_f32x4(r[k + 8], r[k + 12], 0xdd);
    }
    for (int k = 0; k < 4; ++k) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0x88);
        r[k + 8] = _mm512_shuffle_f32x4(t[k], t[k + 8], 0xdd);
        r[k + 4] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0x88);
        r[k + 12] = _mm512_shuffle_f32x4(t[k + 4], t[k + 12], 0xdd);
    }
}
#endif

/* buf[slot(j)][t] = src[(p0 + t) * c + j] for j < c, t < n (columns t >= n are zero). */
static void gather_tile(const float *restrict src, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
                        float *restrict buf) {
    int64_t j0 = 0;
#if defined(__AVX512F__)
    if (n == TILE) {
        for (; j0 + 16 <= c; j0 += 16) {
            __m512 r[16];
            for (int t = 0; t < 16; ++t) r[t] = _mm512_loadu_ps(src + (p0 + t) * c + j0);
            transpose16(r);
            for (int k = 0; k < 16; ++k) {
                const int64_t s = slot ? slot[j0 + k] : j0 + k;
                _mm512_store_ps(buf + s * TILE, r[k]);
            }
        }
    }
#endif
    for (int64_t j = j0; j < c; ++j) {
        float *restrict dst = buf + (slot ? slot[j] : j) * TILE;
        int t = 0;
        for (; t < n; ++t) dst[t] = src[(p0 + t) * c + j];
        for (; t < TILE; ++t) dst[t] = 0.0f;
    }
}

/* dst[(p0 + t) * c + j] = buf[slot(j)][t] for j < c, t < n; stream: non-temporal stores where aligned. */
static void scatter_tile(float *restrict dst, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
                         const float *restrict buf, int stream) {
    int64_t j0 = 0;
#if defined(__AVX512F__)
    if (n == TILE) {
        const int aligned = stream && ((uintptr_t)(dst + p0 * c) & 63) == 0 && (c & 15) == 0;
        for (; j0 + 16 <= c; j0 += 16) {
            __m512 r[16];
            for (int k = 0; k < 16; ++k) {
                const int64_t s = slot ? slot[j0 + k] : j0 + k;
                r[k] = _mm512_load_ps(buf + s * TILE);
            }
            transpose16(r);
            if (aligned) {
                for (int t = 0; t < 16; ++t) _mm512_stream_ps(dst + (p0 + t) * c + j0, r[t]);
            } else {
                for (int t = 0; t < 16; ++t) _mm512_storeu_ps(dst + (p0 + t) * c + j0, r[t]);
            }
        }
    }
#else
    (void)stream;
#endif
    for (int64_t j = j0; j < c; ++j) {
        const float *restrict b = buf + (slot ? slot[j] : j) * TILE;
        for (int t = 0; t < n; ++t) dst[(p0 + t) * c + j] = b[t];
    }
}

/* ot[g*Out_g + o] = sum_i w[g][o][i] * it[g*In_g + i] for one tile (slot-major, TILE-pixel vectors). */
static void tile_matmul(const vf *restrict it, const float *restrict w, vf *restrict ot, int64_t groups,
                        int64_t in_g, int64_t out_g) {
    for (int64_t g = 0; g < groups; ++g) {
        const vf *restrict ib = it + g * in_g;
        const float *restrict wg = w + g * out_g * in_g;
        vf *restrict ob = ot + g * out_g;
        int64_t o = 0;
        for (; o + 8 <= out_g; o += 8) {  /* 8 independent FMA chains keep both FMA units busy */
            const float *restrict w0 = wg + o * in_g;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
            for (int64_t i = 0; i < in_g; ++i) {
                const vf xv = ib[i];
                a0 += w0[i] * xv;
                a1 += w0[in_g + i] * xv;
                a2 += w0[2 * in_g + i] * xv;
                a3 += w0[3 * in_g + i] * xv;
                a4 += w0[4 * in_g + i] * xv;
                a5 += w0[5 * in_g + i] * xv;
                a6 += w0[6 * in_g + i] * xv;
                a7 += w0[7 * in_g + i] * xv;
            }
            ob[o] = a0;
            ob[o + 1] = a1;
            ob[o + 2] = a2;
            ob[o + 3] = a3;
            ob[o + 4] = a4;
            ob[o + 5] = a5;
            ob[o + 6] = a6;
            ob[o + 7] = a7;
        }
        for (; o + 4 <= out_g; o += 4) {
            const float *restrict w0 = wg + o * in_g;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
            for (int64_t i = 0; i < in_g; ++i) {
                const vf xv = ib[i];
                a0 += w0[i] * xv;
                a1 += w0[in_g + i] * xv;
                a2 += w0[2 * in_g + i] * xv;
                a3 += w0[3 * in_g + i] * xv;
            }
            ob[o] = a0;
            ob[o + 1] = a1;
            ob[o + 2] = a2;
            ob[o + 3] = a3;
        }
        for (; o < out_g; ++o) {
            const float *restrict w0 = wg + o * in_g;
            vf a0 = {0};
            for (int64_t i = 0; i < in_g; ++i) a0 += w0[i] * ib[i];
            ob[o] = a0;
        }
    }
}

/* The grouped pointwise map above over all P pixels. Returns 0, or -1 when out of memory. */
int gpw_forward(const float *in, int64_t in_c, const int64_t *islot, float *out, int64_t out_c,
                const int64_t *oslot, const float *w, int64_t groups, int64_t pixels, int nthreads) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups;
    const int64_t tiles = (pixels + TILE - 1) / TILE;
    const int stream = pixels * out_c * (int64_t)sizeof(float) >= STREAM_BYTES;
    int failed = 0;
    nthreads = clamp_threads(nthreads, tiles);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *it = alloc_aligned(sizeof(vf) * (size_t)in_c);
        vf *ot = alloc_aligned(sizeof(vf) * (size_t)out_c);
        const int ok = it && ot;
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t tile = 0; tile < tiles; ++tile) {
            if (!ok) continue;
            const int64_t p0 = tile * TILE;
            const int n = (int)(pixels - p0 < TILE ? pixels - p0 : TILE);
            gather_tile(in, in_c, p0, n, islot, (float *)it);
            tile_matmul(it, w, ot, groups, in_g, out_g);
            scatter_tile(out, out_c, p0, n, oslot, (const float *)ot, stream);
        }
        store_fence();
        free(it);
        free(ot);
    }
    return failed ? -1 : 0;
}

/* Backward of out[p, g*Og + o] = sum_i w[g*Og + o][i] * x[p, c] (islot[c] = g*Ig + i), in one pass over dy:
 *   dx[p, c] = sum_o w[g*Og + o][i] * dy[p, g*Og + o]    (when dx != NULL; wt = w transposed per group,
 *                                                          (G, Ig, Og))
 *   dw[g*Og + o][i] = sum_p dy[p, g*Og + o] * x[p, c]    (when dw != NULL; overwrites dw)
 * Returns 0, or -1 when out of memory. */
int gpw_backward(const float *x, int64_t in_c, const int64_t *islot, const float *dy, int64_t out_c,
                 const float *wt, float *dx, float *dw, int64_t groups, int64_t pixels, int nthreads) {
    const int64_t in_g = in_c / groups, out_g = out_c / groups;
    const int64_t numel = out_c * in_g;
    const int64_t steps = (pixels + WSUB * TILE - 1) / (WSUB * TILE);
    const int stream = pixels * in_c * (int64_t)sizeof(float) >= STREAM_BYTES;
    nthreads = clamp_threads(nthreads, steps);
    /* per-thread lane accumulators of dw: acc[thread][g*Og + o][i] (TILE lanes each) */
    vf *acc = NULL;
    if (dw) {
        acc = alloc_aligned(sizeof(vf) * (size_t)(nthreads * numel));
        if (!acc) return -1;
        memset(acc, 0, sizeof(vf) * (size_t)(nthreads * numel));
    }
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *xt = dw ? alloc_aligned(sizeof(vf) * (size_t)(WSUB * in_c)) : NULL;
        vf *dt = alloc_aligned(sizeof(vf) * (size_t)(WSUB * out_c));
        vf *gt = dx ? alloc_aligned(sizeof(vf) * (size_t)in_c) : NULL;
        const int ok = (xt || !dw) && dt && (gt || !dx);
        if (!ok) failed = 1;
        vf *mine = NULL;
        if (dw) {
#ifdef _OPENMP
            mine = acc + (size_t)omp_get_thread_num() * (size_t)numel;
#else
            mine = acc;
#endif
        }
#pragma omp for schedule(static)
        for (int64_t step = 0; step < steps; ++step) {
            if (!ok) continue;
            for (int s = 0; s < WSUB; ++s) {
                const int64_t p0 = (step * WSUB + s) * TILE;
                const int64_t left = pixels - p0;
                const int n = (int)(left < 0 ? 0 : (left < TILE ? left : TILE));
                gather_tile(dy, out_c, p0, n, NULL, (float *)(dt + s * out_c));
                if (dw) gather_tile(x, in_c, p0, n, islot, (float *)(xt + s * in_c));
                if (dx && n > 0) {
                    tile_matmul(dt + s * out_c, wt, gt, groups, out_g, in_g);
                    scatter_tile(dx, in_c, p0, n, islot, (const float *)gt, stream);
                }
            }
            if (!dw) continue;
            for (int64_t g = 0; g < groups; ++g) {
                const vf *restrict x0 = xt + g * in_g;
                for (int64_t o = 0; o < out_g; ++o) {
                    const int64_t oc = g * out_g + o;
                    const vf d0 = dt[oc], d1 = dt[out_c + oc], d2 = dt[2 * out_c + oc], d3 = dt[3 * out_c + oc];
                    vf *restrict a = mine + oc * in_g;
                    for (int64_t i = 0; i < in_g; ++i)
                        a[i] += d0 * x0[i] + d1 * x0[in_c + i] + d2 * x0[2 * in_c + i] + d3 * x0[3 * in_c + i];
                }
            }
        }
        store_fence();
        free(xt);
        free(dt);
        free(gt);
    }
    if (dw && !failed) {
        for (int64_t e = 0; e < numel; ++e) {
            vf s = acc[e];
            for (int th = 1; th < nthreads; ++th) s += acc[(size_t)th * (size_t)numel + (size_t)e];
            float total = 0.0f;
            for (int t = 0; t < TILE; ++t) total += s[t];
            dw[e] = total;
        }
    }
    free(acc);
    return failed ? -1 : 0;
}

/* ------------------------------------------------------------------------------------------------------------
 * Chains of grouped 1x1 convs (IGCV2): y = W_{L-1} P_{L-1} ... W_1 P_1 W_0 P_0 x, computed per tile of pixels
 * with the intermediates kept in cache, so the activations are read once and written once.
 *
 * Layer l maps chans[l] channels to chans[l + 1] with groups[l] groups; islots[l] (NULL = identity) is the inverse
 * of its input shuffle (slot of each natural input channel), perms[l] the shuffle itself (natural channel held
 * by each slot), w[l] its weight (chans[l + 1], chans[l] / groups[l]) and wt[l] the same transposed per group
 * (groups[l], Ig, Og).
 */

/* As tile_matmul for two tiles at once (it0 -> ot0, it1 -> ot1; each broadcast weight feeds two FMAs, so the loop
 * is bound by the FMA units rather than by the loads), with output channel k (= g*Out_g + o) going to slot omap[k]
 * of the output (omap NULL = identity). */
static void tile_matmul_map2(const vf *restrict it0, const vf *restrict it1, const float *restrict w,
                             vf *restrict ot0, vf *restrict ot1, int64_t groups, int64_t in_g, int64_t out_g,
                             const int64_t *restrict omap) {
    for (int64_t g = 0; g < groups; ++g) {
        const vf *restrict ia = it0 + g * in_g;
        const vf *restrict ib = it1 + g * in_g;
        const float *restrict wg = w + g * out_g * in_g;
        const int64_t base = g * out_g;
        int64_t o = 0;
        for (; o + 8 <= out_g; o += 8) {
            const float *restrict w0 = wg + o * in_g;
            vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
            vf b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, b4 = {0}, b5 = {0}, b6 = {0}, b7 = {0};
            for (int64_t i = 0; i < in_g; ++i) {
                const vf xa = ia[i], xb = ib[i];
                float k;
                k = w0[i]; a0 += k * xa; b0 += k * xb;
                k = w0[in_g + i]; a1 += k * xa; b1 += k * xb;
                k = w0[2 * in_g + i]; a2 += k * xa; b2 += k * xb;
                k = w0[3 * in_g + i]; a3 += k * xa; b3 += k * xb;
                k = w0[4 * in_g + i]; a4 += k * xa; b4 += k * xb;
                k = w0[5 * in_g + i]; a5 += k * xa; b5 += k * xb;
                k = w0[6 * in_g + i]; a6 += k * xa; b6 += k * xb;
                k = w0[7 * in_g + i]; a7 += k * xa; b7 += k * xb;
            }
            const vf ra[8] = {a0, a1, a2, a3, a4, a5, a6, a7}, rb[8] = {b0, b1, b2, b3, b4, b5, b6, b7};
            for (int q = 0; q < 8; ++q) {
                const int64_t k = omap ? omap[base + o + q] : base + o + q;
                ot0[k] = ra[q];
                ot1[k] = rb[q];
            }
        }
        for (; o < out_g; ++o) {
            const float *restrict w0 = wg + o * in_g;
            vf a0 = {0}, b0 = {0};
            for (int64_t i = 0; i < in_g; ++i) {
                a0 += w0[i] * ia[i];
                b0 += w0[i] * ib[i];
            }
            const int64_t k = omap ? omap[base + o] : base + o;
            ot0[k] = a0;
            ot1[k] = b0;
        }
    }
}

/* mine[g*Og + o][i] += sum_s dt[s][g*Og + o] * xt[s][g*Ig + i] over the WSUB = 4 tiles of a step (TILE lanes kept). */
static void dw_update4(vf *restrict mine, const vf *restrict dt, const vf *restrict xt, int64_t groups,
                       int64_t in_g, int64_t out_g) {
    const int64_t in_c = groups * in_g, out_c = groups * out_g;
    for (int64_t g = 0; g < groups; ++g) {
        const vf *restrict x0 = xt + g * in_g;
        int64_t o = 0;
        if (in_g == 8) {
            /* two output channels' 8 + 8 accumulators stay in registers over the 4 tiles */
            for (; o + 2 <= out_g; o += 2) {
                const int64_t oc = g * out_g + o;
                vf *restrict a = mine + oc * 8;
                vf r[16];
                for (int q = 0; q < 16; ++q) r[q] = a[q];
                for (int s = 0; s < 4; ++s) {
                    const vf d0 = dt[s * out_c + oc], d1 = dt[s * out_c + oc + 1];
                    const vf *restrict xs = x0 + s * in_c;
                    for (int i = 0; i < 8; ++i) {
                        r[i] += d0 * xs[i];
                        r[8 + i] += d1 * xs[i];
                    }
                }
                for (int q = 0; q < 16; ++q) a[q] = r[q];
            }
        }
        for (; o < out_g; ++o) {
            const int64_t oc = g * out_g + o;
            const vf d0 = dt[oc], d1 = dt[out_c + oc], d2 = dt[2 * out_c + oc], d3 = dt[3 * out_c + oc];
            vf *restrict a = mine + oc * in_g;
            for (int64_t i = 0; i < in_g; ++i)
                a[i] += d0 * x0[i] + d1 * x0[in_c + i] + d2 * x0[2 * in_c + i] + d3 * x0[3 * in_c + i];
        }
    }
}

static int64_t chain_max_width(const int64_t *chans, int64_t layers) {
    int64_t widest = 0;
    for (int64_t l = 0; l <= layers; ++l) widest = chans[l] > widest ? chans[l] : widest;
    return widest;
}

/* Forward of the chain over all P pixels: out (P, chans[L]) from x (P, chans[0]). Returns 0, or -1 (memory). */
int gpc_forward(const float *x, float *out, int64_t layers, const int64_t *chans, const int64_t *groups,
                const int64_t *const *islots, const float *const *w, int64_t pixels, int nthreads) {
    const int64_t widest = chain_max_width(chans, layers);
    const int64_t pairs = (pixels + 2 * TILE - 1) / (2 * TILE);
    const int stream = pixels * chans[layers] * (int64_t)sizeof(float) >= STREAM_BYTES;
    int failed = 0;
    nthreads = clamp_threads(nthreads, pairs);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *a = alloc_aligned(sizeof(vf) * (size_t)(2 * widest));
        vf *b = alloc_aligned(sizeof(vf) * (size_t)(2 * widest));
        const int ok = a && b;
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t pair = 0; pair < pairs; ++pair) {
            if (!ok) continue;
            const int64_t p0 = pair * 2 * TILE, p1 = p0 + TILE;
            const int n0 = (int)(pixels - p0 < TILE ? pixels - p0 : TILE);
            const int n1 = (int)(pixels - p1 <= 0 ? 0 : (pixels - p1 < TILE ? pixels - p1 : TILE));
            vf *cur = a, *nxt = b;
            gather_tile(x, chans[0], p0, n0, islots[0], (float *)cur);
            gather_tile(x, chans[0], p1, n1, islots[0], (float *)(cur + widest));
            for (int64_t l = 0; l < layers; ++l) {
                const int64_t g = groups[l];
                tile_matmul_map2(cur, cur + widest, w[l], nxt, nxt + widest, g, chans[l] / g, chans[l + 1] / g,
                                 l + 1 < layers ? islots[l + 1] : NULL);
                vf *swap = cur;
                cur = nxt;
                nxt = swap;
            }
            scatter_tile(out, chans[layers], p0, n0, NULL, (const float *)cur, stream);
            if (n1 > 0) scatter_tile(out, chans[layers], p1, n1, NULL, (const float *)(cur + widest), stream);
        }
        store_fence();
        free(a);
        free(b);
    }
    return failed ? -1 : 0;
}

/* Backward of the chain from dy (P, chans[L]) and the saved input x: dx (when not NULL) and dw[l] (each when not
 * NULL; overwritten), recomputing the intermediates per step of WSUB tiles. Deterministic for a given nthreads
 * (static schedule, per-thread lane sums added in thread order). Returns 0, or -1 when out of memory. */
int gpc_backward(const float *x, const float *dy, float *dx, int64_t layers, const int64_t *chans,
                 const int64_t *groups, const int64_t *const *islots, const int64_t *const *perms,
                 const float *const *w, const float *const *wt, float *const *dw, int64_t pixels, int nthreads) {
    const int64_t widest = chain_max_width(chans, layers);
    const int64_t steps = (pixels + WSUB * TILE - 1) / (WSUB * TILE);
    const int stream = pixels * chans[0] * (int64_t)sizeof(float) >= STREAM_BYTES;
    /* the lowest layer whose gradient products are needed (below it nothing is computed) */
    int64_t lowest = layers;
    if (dx) {
        lowest = 0;
    } else {
        for (int64_t l = 0; l < layers; ++l)
            if (dw[l]) {
                lowest = l;
                break;
            }
    }
    if (lowest == layers) return 0;
    nthreads = clamp_threads(nthreads, steps);
    /* per-thread lane accumulators, layer after layer: acc[off[l] + thread * numel_l + e] */
    int64_t total = 0;
    int64_t *off = malloc(sizeof(int64_t) * (size_t)(layers + 1));
    if (!off) return -1;
    for (int64_t l = 0; l < layers; ++l) {
        off[l] = total;
        if (dw[l]) total += nthreads * chans[l + 1] * (chans[l] / groups[l]);
    }
    vf *acc = NULL;
    if (total) {
        acc = alloc_aligned(sizeof(vf) * (size_t)total);
        if (!acc) {
            free(off);
            return -1;
        }
        memset(acc, 0, sizeof(vf) * (size_t)total);
    }
    /* saved inputs of layers lowest..L-1 (slot order), WSUB tiles each: hoff[l] vectors into h */
    int64_t hsize = 0;
    int64_t *hoff = malloc(sizeof(int64_t) * (size_t)(layers + 1));
    if (!hoff) {
        free(off);
        free(acc);
        return -1;
    }
    for (int64_t l = 0; l < layers; ++l) {
        hoff[l] = hsize;
        hsize += WSUB * chans[l];
    }
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *h = alloc_aligned(sizeof(vf) * (size_t)hsize);
        vf *da = alloc_aligned(sizeof(vf) * (size_t)(WSUB * widest));
        vf *db = alloc_aligned(sizeof(vf) * (size_t)(WSUB * widest));
        const int ok = h && da && db;
        if (!ok) failed = 1;
#ifdef _OPENMP
        const int64_t me = omp_get_thread_num();
#else
        const int64_t me = 0;
#endif
#pragma omp for schedule(static)
        for (int64_t step = 0; step < steps; ++step) {
            if (!ok) continue;
            int ns[WSUB];
            for (int s = 0; s < WSUB; ++s) {
                const int64_t p0 = (step * WSUB + s) * TILE;
                const int64_t left = pixels - p0;
                const int n = (int)(left < 0 ? 0 : (left < TILE ? left : TILE));
                ns[s] = n;
                /* the inputs of every layer are recomputed below (zero columns past the end stay zero: no bias) */
                gather_tile(x, chans[0], p0, n, islots[0], (float *)(h + hoff[0] + s * chans[0]));
                gather_tile(dy, chans[layers], p0, n, NULL, (float *)(da + s * chans[layers]));
            }
            for (int64_t l = 0; l + 1 < layers; ++l) {
                const int64_t g = groups[l];
                for (int s = 0; s < WSUB; s += 2)
                    tile_matmul_map2(h + hoff[l] + s * chans[l], h + hoff[l] + (s + 1) * chans[l], w[l],
                                     h + hoff[l + 1] + s * chans[l + 1], h + hoff[l + 1] + (s + 1) * chans[l + 1],
                                     g, chans[l] / g, chans[l + 1] / g, islots[l + 1]);
            }
            vf *cur = da, *nxt = db;
            for (int64_t l = layers - 1; l >= lowest; --l) {
                const int64_t g = groups[l], in_g = chans[l] / g, out_g = chans[l + 1] / g;
                if (dw[l]) dw_update4(acc + off[l] + me * chans[l + 1] * in_g, cur, h + hoff[l], g, in_g, out_g);
                if (l > lowest) {
                    /* gradient of layer l's input, back in the natural channel order of layer l-1's output */
                    for (int s = 0; s < WSUB; s += 2)
                        tile_matmul_map2(cur + s * chans[l + 1], cur + (s + 1) * chans[l + 1], wt[l],
                                         nxt + s * chans[l], nxt + (s + 1) * chans[l], g, out_g, in_g, perms[l]);
                    vf *swap = cur;
                    cur = nxt;
                    nxt = swap;
                } else if (l == 0 && dx) {
                    for (int s = 0; s < WSUB; s += 2) {
                        if (ns[s] == 0) continue;
                        tile_matmul_map2(cur + s * chans[1], cur + (s + 1) * chans[1], wt[0], nxt, nxt + chans[0], g,
                                         out_g, in_g, NULL);
                        for (int q = s; q < s + 2; ++q)
                            if (ns[q] > 0)
                                scatter_tile(dx, chans[0], (step * WSUB + q) * TILE, ns[q], islots[0],
                                             (const float *)(nxt + (q - s) * chans[0]), stream);
                    }
                }
            }
        }
        store_fence();
        free(h);
        free(da);
        free(db);
    }
    if (!failed) {
        for (int64_t l = 0; l < layers; ++l) {
            if (!dw[l]) continue;
            const int64_t numel = chans[l + 1] * (chans[l] / groups[l]);
            const vf *base = acc + off[l];
            for (int64_t e = 0; e < numel; ++e) {
                vf s = base[e];
                for (int th = 1; th < nthreads; ++th) s += base[(size_t)th * (size_t)numel + (size_t)e];
                float sum = 0.0f;
                for (int t = 0; t < TILE; ++t) sum += s[t];
                dw[l][e] = sum;
            }
        }
    }
    free(acc);
    free(off);
    free(hoff);
    return failed ? -1 : 0;
}
