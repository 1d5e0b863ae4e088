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

#include "pw_tiles.h"

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
    const int stream = past_caches(pixels * out_c);
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
    const int stream = past_caches(pixels * in_c);
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
            if (dw) dw_update4(mine, dt, xt, groups, in_g, out_g);
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

