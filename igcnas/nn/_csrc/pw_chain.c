/* Chains of grouped 1x1 convs (IGCV2), optionally behind a depthwise or grouped 3x3 conv, fused per tile of pixels
 * (igcnas.nn._native.pointwise_chain): y = W_{L-1} P_{L-1} ... W_1 P_1 W_0 P_0 D x, computed per tile with the
 * intermediates kept in cache, so the activations are read once and written once.
 *
 * Layer l maps chans[l] channels to chans[l + 1] with groups[l] groups; islots[l] (NULL = identity) is the inverse
 * of its input shuffle (slot of each natural input channel), perms[l] the shuffle itself (natural channel held
 * by each slot), w[l] its weight (chans[l + 1], chans[l] / groups[l]) and wt[l] the same transposed per group
 * (groups[l], Ig, Og).
 *
 * D is the identity, a depthwise k x k conv (stride 1, padding k / 2; prefix_args) of the (N, height, width) image
 * x, or a grouped 3x3 conv of group_rot.c's form (groups of 2, 4 or 8 channels, stride 1: IGCV1's GC before its
 * PWG); each may read x through a BatchNorm's scale and shift (+ ReLU), applied as each value is loaded. The prefix
 * conv's output is computed per span of tiles into a small buffer (dw_span, rot_span) and never written to memory.
 * The backward recomputes it the same way; the prefix conv's own gradients are left to its backward (dw_backward,
 * rot_backward) on the gradient this backward writes (that of D x).
 *
 * GNU C (vector extensions; gcc or clang) + OpenMP, no torch headers; called through ctypes with raw pointers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pw_tiles.h"

/* Output channels per block of tile_matmul_map2 (then blocks of 4, then one at a time): 2 x MAP2_BLOCK
 * accumulators, the two inputs and the broadcast weight must fit the vector registers, or the compiler keeps some
 * accumulators on the stack and every step of the inner loop waits on a store and a reload (AVX2 and NEON have 16
 * and 32 registers of 8 and 4 floats). */
#if defined(__AVX512F__)
#define MAP2_BLOCK 8
#else
#define MAP2_BLOCK 4
#endif

/* Output channels o .. o + B - 1 of one group of tile_matmul_map2 (B a constant once inlined): their 2 x B
 * accumulators stay in registers over the group's inputs, each broadcast weight feeding two FMAs. */
static inline __attribute__((always_inline)) void map2_block(const vf *restrict ia, const vf *restrict ib,
                                                             const float *restrict w0, int64_t in_g, int64_t first,
                                                             const int64_t *restrict omap, vf *restrict ot0,
                                                             vf *restrict ot1, const int B) {
    vf a[MAP2_BLOCK], b[MAP2_BLOCK];
    for (int q = 0; q < B; ++q) a[q] = b[q] = (vf){0};
    for (int64_t i = 0; i < in_g; ++i) {
        const vf xa = ia[i], xb = ib[i];
        for (int q = 0; q < B; ++q) {
            const float k = w0[q * in_g + i];
            a[q] += k * xa;
            b[q] += k * xb;
        }
    }
    for (int q = 0; q < B; ++q) {
        const int64_t k = omap ? omap[first + q] : first + q;
        ot0[k] = a[q];
        ot1[k] = b[q];
    }
}

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
        for (; o + MAP2_BLOCK <= out_g; o += MAP2_BLOCK)
            map2_block(ia, ib, wg + o * in_g, in_g, base + o, omap, ot0, ot1, MAP2_BLOCK);
        if (MAP2_BLOCK > 4)
            for (; o + 4 <= out_g; o += 4) map2_block(ia, ib, wg + o * in_g, in_g, base + o, omap, ot0, ot1, 4);
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

static int64_t chain_max_width(const int64_t *chans, int64_t layers) {
    int64_t widest = 0;
    for (int64_t l = 0; l <= layers; ++l) widest = chans[l] > widest ? chans[l] : widest;
    return widest;
}

/* What the chain reads its input through, as the caller gives it (igcnas.nn._native.PrefixArgs): a depthwise
 * conv, or a grouped 3x3 conv of rot_forward's form (groups of mg = 2, 4 or 8 channels, stride 1, no shuffle),
 * and/or a BatchNorm's scale and shift. */
typedef struct {
    const float *w;      /* (C, 1, k, k) or, with mg, (C, mg, 3, 3); NULL: no prefix conv */
    const float *aff;    /* NULL, or scale[C] then shift[C]: the conv reads x * scale + shift (a BatchNorm) */
    int64_t k, height, width;
    int64_t relu;        /* with aff: and a ReLU after it */
    int64_t mg;          /* 0: w is depthwise; else the grouped conv's channels per group */
} prefix_args;

/* The same, with the weights in the prefix kernel's form (wt NULL: no prefix conv; aff NULL: no BatchNorm):
 * dw_tap_major's, or rot_prefix_weights' with mg. */
typedef struct {
    const float *wt, *aff;
    int64_t k, height, width, mg;
    int relu;
} chain_prefix;

/* The prefix of `args` (NULL: none) with its weights in the kernel's form in *wt (malloc'd; NULL when none).
 * Returns 0, -1 (memory), or -2 for a grouped prefix that rot_forward does not compute (another group width or
 * kernel size, or a build without its kernels). */
static int prefix_of(const prefix_args *args, int64_t chans0, float **wt, chain_prefix *pre) {
    *wt = NULL;
    *pre = (chain_prefix){NULL, NULL, 0, 0, 0, 0, 0};
    if (!args) return 0;
    if (args->w && args->mg &&
        (args->mg < 2 || chans0 % args->mg || args->k != 3 || !rot_handles(NULL, chans0, chans0, chans0 / args->mg, 3, 1)))
        return -2;
    if (args->w && !(*wt = args->mg ? rot_prefix_weights(args->w, chans0, args->mg)
                                    : dw_tap_major(args->w, chans0, args->k, 0)))
        return -1;
    *pre = (chain_prefix){*wt, args->aff, args->k, args->height, args->width, args->w ? args->mg : 0,
                       (int)args->relu};
    return 0;
}

/* A thread's working memory for the prefix: the span of its output (2 * TILE or WSUB * TILE pixels) and, for a
 * grouped prefix reading through a BatchNorm, the ring of normalised input rows (rot_span). */
typedef struct {
    float *span, *ring;
    int64_t tags[ROT_K];
} prefix_scratch;

/* Allocates s for `pixels` pixels of the prefix's output; 0, or -1 (memory). */
static int scratch_alloc(prefix_scratch *s, const chain_prefix *pre, int64_t chans0, int64_t pixels) {
    int failed = 0;
    s->span = pre->wt ? alloc_aligned(sizeof(float) * (size_t)(pixels * chans0)) : NULL;
    s->ring = rot_ring_alloc(pre->mg ? pre->aff : NULL, pre->width, chans0, s->tags, &failed);
    return failed || (pre->wt && !s->span) ? -1 : 0;
}

static void scratch_free(prefix_scratch *s) {
    free(s->span);
    free(s->ring);
}

/* The chain input (slot order of layer 0) of the `count` pixels from p0 into `tiles` tile buffers, buf + t * stride:
 * gathered from x, or computed by the prefix conv into s->span (count x chans0) first. */
static void chain_input(const float *x, const chain_prefix *pre, int64_t chans0, const int64_t *islot, int64_t p0,
                        int64_t count, int tiles, int64_t stride, prefix_scratch *s, vf *buf) {
    const float *src = x;
    int64_t q = p0;
    if (pre->wt) {
        if (pre->mg)
            rot_span(x, pre->wt, s->span, pre->height, pre->width, chans0, pre->mg, p0, count, pre->aff, pre->relu,
                     s->ring, s->tags);
        else
            dw_span(x, pre->wt, s->span, pre->height, pre->width, chans0, pre->k, p0, count, pre->aff, pre->relu);
        src = s->span;
        q = 0;
    }
    for (int t = 0; t < tiles; ++t) {
        const int64_t left = count - (int64_t)t * TILE;
        const int n = (int)(left < 0 ? 0 : (left < TILE ? left : TILE));
        gather_tile(src, chans0, q + (int64_t)t * TILE, n, islot, (float *)(buf + t * stride));
        /* the BatchNorm on the chain's own input (past the end: shift, times zero gradients in the backward) */
        if (!pre->wt && pre->aff) map_tile((float *)(buf + t * stride), chans0, islot, pre->aff, pre->relu);
    }
}

/* Forward of the chain over all P pixels: out (P, chans[L]) from x (P, chans[0]). Returns 0, -1 (memory) or -2
 * (a prefix prefix_of refuses). */
int gpc_forward(const float *x, const prefix_args *prefix, float *out, int64_t layers, const int64_t *chans,
                const int64_t *groups, const int64_t *const *islots, const float *const *w, int64_t pixels,
                int nthreads) {
    const int64_t widest = chain_max_width(chans, layers);
    float *dwt;
    chain_prefix pre;
    const int refused = prefix_of(prefix, chans[0], &dwt, &pre);
    if (refused) return refused;
    const int64_t pairs = (pixels + 2 * TILE - 1) / (2 * TILE);
    const int stream = past_caches(pixels * chans[layers]);
    int failed = 0;
    nthreads = clamp_threads(nthreads, pairs);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *a = alloc_aligned(sizeof(vf) * (size_t)(2 * widest));
        vf *b = alloc_aligned(sizeof(vf) * (size_t)(2 * widest));
        prefix_scratch scratch;
        const int ok = (scratch_alloc(&scratch, &pre, chans[0], 2 * TILE) == 0) & (a != NULL) & (b != NULL);
        if (!ok) failed = 1;
#pragma omp for schedule(static)
        for (int64_t pair = 0; pair < pairs; ++pair) {
            if (!ok) continue;
            const int64_t p0 = pair * 2 * TILE, p1 = p0 + TILE;
            const int n0 = (int)(pixels - p0 < TILE ? pixels - p0 : TILE);
            const int n1 = (int)(pixels - p1 <= 0 ? 0 : (pixels - p1 < TILE ? pixels - p1 : TILE));
            vf *cur = a, *nxt = b;
            chain_input(x, &pre, chans[0], islots[0], p0, n0 + n1, 2, widest, &scratch, cur);
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
        scratch_free(&scratch);
    }
    free(dwt);
    return failed ? -1 : 0;
}

/* Backward of the chain from dy (P, chans[L]) and the saved input x (with a prefix conv: that conv's input):
 * dx (when not NULL; the gradient of the chain's input, i.e. of D x) and dw[l] (each when not NULL;
 * overwritten), recomputing the intermediates per step of WSUB tiles. Deterministic for a given nthreads (static
 * schedule, per-thread lane sums added in thread order). With bn_sums (needs dx, and prefix with aff and no
 * weight): the sums of that BatchNorm's backward (bn_grad_sums), taken per step from the rows of dx just written.
 * Returns 0, -1 when out of memory, or -2 for bn_sums without what it needs or a prefix prefix_of refuses. */
int gpc_backward(const float *x, const prefix_args *prefix, const float *dy, float *dx, int64_t layers,
                 const int64_t *chans, const int64_t *groups, const int64_t *const *islots,
                 const int64_t *const *perms, const float *const *w, const float *const *wt, float *const *dw,
                 int64_t pixels, const float *bn_mean, double *bn_sums, int nthreads) {
    const int64_t widest = chain_max_width(chans, layers);
    const int64_t steps = (pixels + WSUB * TILE - 1) / (WSUB * TILE);
    const int64_t c0 = chans[0];
    /* bn_sums: the BatchNorm read through prefix->aff (no prefix conv) gets its backward sums here */
    if (bn_sums && (!dx || !prefix || !prefix->aff || prefix->w || !bn_mean)) return -2;
    /* with the sums, dx is stored normally: each step's rows are read back at once from the cache */
    const int stream = !bn_sums && past_caches(pixels * c0);
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
    /* the highest layer whose weight gradient is needed: the inputs of layers 0..top are recomputed, none without
     * any weight gradient (the input gradient needs only dy and the weights) */
    int64_t top = -1;
    for (int64_t l = 0; l < layers; ++l)
        if (dw[l]) top = l;
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
    bn_rows sums;
    if (bn_rows_alloc(&sums, nthreads, c0, bn_sums != NULL) != 0) {
        free(off);
        free(acc);
        free(hoff);
        return -1;
    }
    float *dwt;
    chain_prefix pre;
    const int refused = prefix_of(prefix, chans[0], &dwt, &pre);
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        vf *h = alloc_aligned(sizeof(vf) * (size_t)hsize);
        vf *da = alloc_aligned(sizeof(vf) * (size_t)(WSUB * widest));
        vf *db = alloc_aligned(sizeof(vf) * (size_t)(WSUB * widest));
        prefix_scratch scratch;
        const int ok = (scratch_alloc(&scratch, &pre, chans[0], WSUB * TILE) == 0) & !refused & (h != NULL) &
                       (da != NULL) & (db != NULL);
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
            const int64_t first = step * WSUB * TILE;
            const int64_t count = pixels - first < WSUB * TILE ? pixels - first : WSUB * TILE;
            /* the inputs of every layer are recomputed; columns past the end are zero (or a BatchNorm's shift),
             * and their output gradient is zero, so they add nothing to the weight gradients */
            if (top >= 0)
                chain_input(x, &pre, chans[0], islots[0], first, count, WSUB, chans[0], &scratch, h + hoff[0]);
            for (int s = 0; s < WSUB; ++s) {
                const int64_t p0 = first + (int64_t)s * TILE;
                const int64_t left = pixels - p0;
                const int n = (int)(left < 0 ? 0 : (left < TILE ? left : TILE));
                ns[s] = n;
                gather_tile(dy, chans[layers], p0, n, NULL, (float *)(da + s * chans[layers]));
            }
            for (int64_t l = 0; l < top; ++l) {
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
            if (bn_sums) /* the step's rows of dx, just written, and of x: the BatchNorm's sums */
                bn_rows_add(&sums, (int)me, dx + first * c0, x + first * c0, count, prefix->aff, bn_mean,
                            (int)prefix->relu);
        }
        store_fence();
        free(h);
        free(da);
        free(db);
        scratch_free(&scratch);
    }
    free(dwt);
    bn_rows_finish(&sums, nthreads, failed ? NULL : bn_sums);
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
    return refused ? refused : failed ? -1 : 0;
}
