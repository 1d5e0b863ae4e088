/* Grouped k x k convolution with an input channel permutation folded into its indexing (igcnas.nn._native).
 *
 * Tensors are channels_last (NHWC) float32. With G groups, In_g = Cin / G and Out_g = Cout / G, stride s,
 * padding p = k / 2 (odd k) and "slot j holds input channel perm[j]" (perm NULL = identity):
 *
 *     y[n, oh, ow, co] = sum_{i, kh, kw} w[co][i][kh][kw] * x[n, oh*s - p + kh, ow*s - p + kw, perm[g*In_g + i]]
 *                        (g = co / Out_g; out-of-range rows/columns are zero)
 *
 * Narrow groups (a few channels each) give too little work per group for a GEMM, so every product is turned into
 * a depthwise conv over an *expanded* row buffer, vectorised across channels (VL floats per vector: 16 with
 * AVX-512, else 8, one register either way):
 *
 *   forward / weight gradient: E[w][i][co] = x[., w, perm[(co / Out_g) * In_g + i]]  (In_g copies of the
 *       input row in output-channel order), then y[ow][co] = sum_{kh, kw, i} wf[kh][kw][i][co] * E_kh[ow*s + kw][i][co]
 *       and dw[co][i][kh][kw] = sum_{n, oh, ow} dy[ow][co] * E_kh[ow*s + kw][i][co];
 *   input gradient: F[ow][o][j] = dy[., ow, (j / In_g) * Out_g + o]  (Out_g copies of the output-gradient row in
 *       input-slot order), then dx[w][perm[j]] = sum over (kh, kw, o) with w + p - kw = ow*s of
 *       wb[kh][kw][o][j] * F_oh[ow][o][j] (the transposed conv; for s > 1 per class of w mod s).
 *
 * Expanded rows are built once per input (output-gradient) row into a per-thread ring of k rows, padded with zero
 * columns so the inner loops have no bounds checks; out-of-range rows are skipped. With AVX-512 the expansion
 * copies a 16-lane vector with one two-register permute when its source channels lie within 32 consecutive
 * channels (no shuffle, or a shuffle by In_g), else with a gather; AVX2 the same on 8 lanes (two permutes and a
 * blend over a window of 16 channels); other builds copy lane by lane. Output
 * pixels are computed TW = 8 at a time (8 accumulator vectors, one weight vector per tap). Rows are spread over
 * OpenMP threads with schedule(static); the weight gradient is summed in per-thread accumulators added up in
 * thread order (deterministic for a thread count).
 *
 * A depthwise conv with stride 1 and no shuffle has nothing to expand: gc_forward / gc_backward hand it to
 * dw_conv.c, which reads the activations in place; so do they the 3x3 convs with stride 1, no shuffle and groups of
 * 2, 4 or 8 channels in and out, to group_rot.c (with AVX or AVX-512).
 *
 * GNU C (vector extensions; gcc or clang) + OpenMP, no torch headers; called through ctypes with raw pointers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "native_common.h"

#if defined(__AVX512F__)
#define VL 16  /* floats per vector: one zmm register */
#else
#define VL 8   /* one ymm register: 16-float vectors take two on AVX2, and the TW accumulators then spill */
#endif
#define TW 8   /* output pixels per block (accumulator vectors) */

typedef float cvf __attribute__((vector_size(VL * 4), aligned(VL * 4)));

static void *gc_zalloc(size_t bytes) {
    void *ptr = alloc_aligned(bytes);
    if (ptr) memset(ptr, 0, bytes ? bytes : 64);
    return ptr;
}

static int64_t round_vl(int64_t c) { return (c + VL - 1) / VL * VL; }


/* One VL-lane vector of an expanded pixel: lanes take source channels lo + rel[l] (window of 32 channels), or
 * rel[l] (gather, lo < 0); rel[l] < 0 = zero lane. */
typedef struct {
    int32_t rel[VL];
    int64_t lo;
    uint16_t valid, m0, m1;
} expand_vec;

/* The vectors of an expansion: tab[v * 16 + l] = source channel of lane l of vector v (-1 = zero). */
static expand_vec *expand_plan(const int32_t *tab, int64_t nvec, int64_t src_c) {
    expand_vec *plan = alloc_aligned(sizeof(expand_vec) * (size_t)nvec);
    if (!plan) return NULL;
    for (int64_t v = 0; v < nvec; ++v) {
        expand_vec *e = plan + v;
        int32_t lo = INT32_MAX, hi = -1;
        e->valid = 0;
        for (int l = 0; l < VL; ++l) {
            const int32_t c = tab[v * VL + l];
            if (c < 0) continue;
            e->valid |= (uint16_t)(1u << l);
            if (c < lo) lo = c;
            if (c > hi) hi = c;
        }
        if (hi < 0) lo = 0;
        const int window = hi - lo < 2 * VL;
        e->lo = window ? lo : -1;
        e->m0 = e->m1 = 0;
        for (int l = 0; l < VL; ++l) {
            const int32_t c = tab[v * VL + l];
            e->rel[l] = c < 0 ? -1 : (window ? c - lo : c);
            if (lo + l < src_c) e->m0 |= (uint16_t)(1u << l);
            if (lo + VL + l < src_c) e->m1 |= (uint16_t)(1u << l);
        }
    }
    return plan;
}

/* dst[v * 16 + l] = src[channel of lane l of vector v] for the nvec vectors of the plan. */
static inline void expand_pixel(const float *restrict src, const expand_vec *restrict plan, int64_t nvec,
                                float *restrict dst) {
    for (int64_t v = 0; v < nvec; ++v) {
        const expand_vec *e = plan + v;
#if defined(__AVX512F__)
        const __m512i idx = _mm512_maskz_loadu_epi32(e->valid, e->rel);
        __m512 r;
        if (e->lo >= 0) {
            const __m512 a = _mm512_maskz_loadu_ps(e->m0, src + e->lo);
            const __m512 b = _mm512_maskz_loadu_ps(e->m1, src + e->lo + VL);
            r = _mm512_maskz_permutex2var_ps(e->valid, a, idx, b);
        } else {
            r = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), e->valid, idx, src, 4);
        }
        _mm512_store_ps(dst + v * VL, r);
#elif defined(__AVX2__)
        /* the same with 8 lanes: the window's two vectors permuted, then each lane taken from the one it indexes */
        const __m256i rel = _mm256_loadu_si256((const __m256i *)e->rel);
        const __m256i on = _mm256_cmpgt_epi32(rel, _mm256_set1_epi32(-1));
        __m256 r;
        if (e->lo >= 0) {
            const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            const __m256i m0 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(e->m0), bits), bits);
            const __m256i m1 = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(e->m1), bits), bits);
            const __m256 a = _mm256_permutevar8x32_ps(_mm256_maskload_ps(src + e->lo, m0), rel);
            const __m256 b = _mm256_permutevar8x32_ps(_mm256_maskload_ps(src + e->lo + VL, m1), rel);
            r = _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_cmpgt_epi32(rel, _mm256_set1_epi32(VL - 1))));
        } else {
            r = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), src, rel, _mm256_castsi256_ps(on), 4);
        }
        _mm256_store_ps(dst + v * VL, _mm256_and_ps(r, _mm256_castsi256_ps(on)));
#else
        const int64_t base = e->lo >= 0 ? e->lo : 0;
        for (int l = 0; l < VL; ++l) dst[v * VL + l] = e->rel[l] >= 0 ? src[base + e->rel[l]] : 0.0f;
#endif
    }
}

/* Expand one row of wd pixels (src pixel stride src_c) into dst (pixel stride pix) starting at column col0. */
static void expand_row(const float *restrict src, int64_t wd, int64_t src_c, const expand_vec *restrict plan,
                       int64_t nvec, float *restrict dst, int64_t col0, int64_t pix) {
    for (int64_t w = 0; w < wd; ++w) expand_pixel(src + w * src_c, plan, nvec, dst + (col0 + w) * pix);
}

/* dst[t * dstep + c] = sum_tap w[tap][c] * src[tap][t * step + c] for t < n (c < 16 * nvec); TW pixels computed. */
static void conv_block(const float *const *restrict src, const float *const *restrict w, int64_t ntaps,
                       int64_t step, int64_t nvec, float *restrict dst, int64_t dstep, int n) {
    for (int64_t v = 0; v < nvec; ++v) {
        const int64_t off = v * VL;
        cvf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
        for (int64_t tap = 0; tap < ntaps; ++tap) {
            const cvf wv = *(const cvf *)(w[tap] + off);
            const float *restrict s = src[tap] + off;
            a0 += wv * *(const cvf *)(s);
            a1 += wv * *(const cvf *)(s + step);
            a2 += wv * *(const cvf *)(s + 2 * step);
            a3 += wv * *(const cvf *)(s + 3 * step);
            a4 += wv * *(const cvf *)(s + 4 * step);
            a5 += wv * *(const cvf *)(s + 5 * step);
            a6 += wv * *(const cvf *)(s + 6 * step);
            a7 += wv * *(const cvf *)(s + 7 * step);
        }
        const cvf acc[TW] = {a0, a1, a2, a3, a4, a5, a6, a7};
        for (int t = 0; t < n; ++t) memcpy(dst + t * dstep + off, &acc[t], sizeof(cvf));
    }
}

/* acc[tap][c] += sum_t d[t * dstep + c] * src[tap][t * step + c] over the TW pixels (d is zero past the row). */
static void grad_block(const float *const *restrict src, float *const *restrict acc, int64_t ntaps, int64_t step,
                       int64_t nvec, const float *restrict d, int64_t dstep) {
    for (int64_t v = 0; v < nvec; ++v) {
        const int64_t off = v * VL;
        const cvf d0 = *(const cvf *)(d + off), d1 = *(const cvf *)(d + dstep + off);
        const cvf d2 = *(const cvf *)(d + 2 * dstep + off), d3 = *(const cvf *)(d + 3 * dstep + off);
        const cvf d4 = *(const cvf *)(d + 4 * dstep + off), d5 = *(const cvf *)(d + 5 * dstep + off);
        const cvf d6 = *(const cvf *)(d + 6 * dstep + off), d7 = *(const cvf *)(d + 7 * dstep + off);
        for (int64_t tap = 0; tap < ntaps; ++tap) {
            const float *restrict s = src[tap] + off;
            cvf *restrict a = (cvf *)(acc[tap] + off);
            *a += (d0 * *(const cvf *)(s) + d1 * *(const cvf *)(s + step)) +
                  (d2 * *(const cvf *)(s + 2 * step) + d3 * *(const cvf *)(s + 3 * step)) +
                  ((d4 * *(const cvf *)(s + 4 * step) + d5 * *(const cvf *)(s + 5 * step)) +
                   (d6 * *(const cvf *)(s + 6 * step) + d7 * *(const cvf *)(s + 7 * step)));
        }
    }
}

/* Shape of one grouped conv and the per-call tables shared by its passes. */
typedef struct {
    int64_t n, h, wd, cin, cout, groups, k, stride, pad, ho, wo, ig, og;
    int64_t cpad;          /* Cout rounded up to whole vectors */
    int64_t epix, ecols;   /* floats per expanded-input pixel (In_g * cpad), columns per expanded row */
    int64_t blocks;        /* TW-pixel blocks per output row */
    expand_vec *eplan;     /* the input expansion (In_g * cpad / 16 vectors) */
    float *wf;             /* wf[kh][kw][i][cpad] */
    const float *aff;      /* a BatchNorm folded into the input (scale[cin], shift[cin]), or NULL */
    int relu;              /* with aff: the ReLU after that BatchNorm */
} gc_geom;

static int geom_init(gc_geom *g, const int64_t *perm, const float *w, int64_t n, int64_t h, int64_t wd,
                     int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride) {
    g->n = n, g->h = h, g->wd = wd, g->cin = cin, g->cout = cout, g->groups = groups, g->k = k;
    g->stride = stride, g->pad = k / 2;
    /* h + 2 * pad - k = h - 1 (odd k): an empty input (h or wd 0) has no output rows/columns (C division
     * truncates -1 / stride to 0, which would give one) */
    g->ho = h > 0 ? (h + 2 * g->pad - k) / stride + 1 : 0, g->wo = wd > 0 ? (wd + 2 * g->pad - k) / stride + 1 : 0;
    g->ig = cin / groups, g->og = cout / groups;
    g->cpad = round_vl(cout);
    g->epix = g->ig * g->cpad;
    g->blocks = (g->wo + TW - 1) / TW;
    const int64_t span = g->blocks * TW * stride + k;
    g->ecols = span > wd + 2 * g->pad ? span : wd + 2 * g->pad;
    g->eplan = NULL;
    g->wf = NULL;
    g->aff = NULL;
    g->relu = 0;
    int32_t *tab = malloc(sizeof(int32_t) * (size_t)g->epix);
    g->wf = gc_zalloc(sizeof(float) * (size_t)(k * k * g->epix));
    if (!tab || !g->wf) {
        free(tab);
        return -1;
    }
    for (int64_t i = 0; i < g->ig; ++i)
        for (int64_t c = 0; c < g->cpad; ++c) {
            const int64_t slot = (c / (g->og ? g->og : 1)) * g->ig + i;
            tab[i * g->cpad + c] = c < cout ? (int32_t)(perm ? perm[slot] : slot) : -1;
        }
    g->eplan = expand_plan(tab, g->epix / VL, cin);
    free(tab);
    if (!g->eplan) return -1;
    for (int64_t kh = 0; kh < k; ++kh)
        for (int64_t kw = 0; kw < k; ++kw)
            for (int64_t i = 0; i < g->ig; ++i)
                for (int64_t c = 0; c < cout; ++c)
                    g->wf[((kh * k + kw) * g->ig + i) * g->cpad + c] = w[((c * g->ig + i) * k + kh) * k + kw];
    return 0;
}

static void geom_free(gc_geom *g) {
    free(g->eplan);
    free(g->wf);
}

/* Make the k input rows of output row oh of image nb present in the ring (expanding missing ones, normalised into
 * nrm first when a BatchNorm is folded in); rowp[kh] = the expanded row for kh, or NULL where the input row is out
 * of range. */
static void ring_inputs(const gc_geom *g, const float *x, float *ring, int64_t *tags, int64_t nb, int64_t oh,
                        const float **rowp, float *nrm) {
    const int64_t erow = g->ecols * g->epix;
    for (int64_t kh = 0; kh < g->k; ++kh) {
        const int64_t ih = oh * g->stride - g->pad + kh;
        if (ih < 0 || ih >= g->h) {
            rowp[kh] = NULL;
            continue;
        }
        const int64_t slot = ih % g->k, tag = nb * g->h + ih;
        float *row = ring + slot * erow;
        if (tags[slot] != tag) {
            const float *src = x + (nb * g->h + ih) * g->wd * g->cin;
            if (g->aff) {
                normalise_row(src, g->wd, g->cin, g->aff, g->relu, nrm);
                src = nrm;
            }
            expand_row(src, g->wd, g->cin, g->eplan, g->epix / VL, row, g->pad, g->epix);
            tags[slot] = tag;
        }
        rowp[kh] = row;
    }
}

/* Taps of the output block starting at ow0: src = expanded-row pointers, w = weight vectors (or accumulators). */
static int64_t forward_taps(const gc_geom *g, const float *const *rowp, int64_t ow0, float *base,
                            const float **src, float **w) {
    int64_t ntaps = 0;
    for (int64_t kh = 0; kh < g->k; ++kh) {
        if (!rowp[kh]) continue;
        for (int64_t kw = 0; kw < g->k; ++kw)
            for (int64_t i = 0; i < g->ig; ++i) {
                src[ntaps] = rowp[kh] + (ow0 * g->stride + kw) * g->epix + i * g->cpad;
                w[ntaps] = base + ((kh * g->k + kw) * g->ig + i) * g->cpad;
                ++ntaps;
            }
    }
    return ntaps;
}

/* y = the grouped conv above (y: N x Ho x Wo x Cout) of x' = x, or with aff (scale[cin] then shift[cin], a
 * BatchNorm folded in) of x' = x * scale + shift, relu'd when relu: the conv reads x' as it expands each input
 * row, and x' is never written. Returns 0, or -1 when out of memory. */
int gc_forward(const float *x, const int64_t *perm, const float *w, float *y, int64_t n, int64_t h, int64_t wd,
               int64_t cin, int64_t cout, int64_t groups, int64_t k, int64_t stride, const float *aff, int relu,
               int nthreads) {
    if (!aff) relu = 0;
    if (dw_handles(perm, cin, cout, groups, k, stride))
        return dw_forward(x, w, y, n, h, wd, cin, k, aff, relu, nthreads);
    if (rot_handles(perm, cin, cout, groups, k, stride))
        return rot_forward(x, w, y, n, h, wd, cin, cin / groups, aff, relu, nthreads);
    gc_geom g;
    if (geom_init(&g, perm, w, n, h, wd, cin, cout, groups, k, stride) != 0) {
        geom_free(&g);
        return -1;
    }
    g.aff = aff, g.relu = relu;
    const int64_t rows = n * g.ho, ntap_max = k * k * g.ig;
    const int direct = cout % VL == 0;
    int failed = 0;
    nthreads = clamp_threads(nthreads, rows);
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *ring = gc_zalloc(sizeof(float) * (size_t)(k * g.ecols * g.epix));
        int64_t *tags = malloc(sizeof(int64_t) * (size_t)k);
        float *orow = direct ? NULL : alloc_aligned(sizeof(float) * (size_t)(g.blocks * TW * g.cpad));
        float *nrm = aff ? alloc_aligned(sizeof(float) * (size_t)(wd * cin)) : NULL;
        const float **rowp = malloc(sizeof(float *) * (size_t)k);
        const float **src = malloc(sizeof(float *) * (size_t)ntap_max);
        float **wt = malloc(sizeof(float *) * (size_t)ntap_max);
        const int ok = ring && tags && (orow || direct) && (nrm || !aff) && rowp && src && wt;
        if (!ok) failed = 1;
        if (tags)
            for (int64_t s = 0; s < k; ++s) tags[s] = -1;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
            if (!ok) continue;
            const int64_t nb = row / g.ho, oh = row % g.ho;
            float *yrow = y + row * g.wo * cout;
            ring_inputs(&g, x, ring, tags, nb, oh, rowp, nrm);
            for (int64_t b = 0; b < g.blocks; ++b) {
                const int64_t ow0 = b * TW;
                const int cnt = (int)(g.wo - ow0 < TW ? g.wo - ow0 : TW);
                const int64_t ntaps = forward_taps(&g, rowp, ow0, g.wf, src, wt);
                if (direct)
                    conv_block(src, (const float *const *)wt, ntaps, stride * g.epix, g.cpad / VL,
                               yrow + ow0 * cout, cout, cnt);
                else
                    conv_block(src, (const float *const *)wt, ntaps, stride * g.epix, g.cpad / VL,
                               orow + ow0 * g.cpad, g.cpad, cnt);
            }
            if (!direct)
                for (int64_t ow = 0; ow < g.wo; ++ow)
                    memcpy(yrow + ow * cout, orow + ow * g.cpad, sizeof(float) * (size_t)cout);
        }
        free(ring);
        free(tags);
        free(orow);
        free(nrm);
        free(rowp);
        free(src);
        free(wt);
    }
    geom_free(&g);
    return failed ? -1 : 0;
}

/* Weight gradient dw[co][i][kh][kw] (overwritten) of the conv above from dy (N x Ho x Wo x Cout); the input
 * rows are read as the forward read them (g->aff). */
static int gc_weight_grad(const gc_geom *g, const float *x, const float *dy, float *dw, int nthreads) {
    const int64_t k = g->k, cout = g->cout, rows = g->n * g->ho, ntap_max = k * k * g->ig;
    const int64_t numel = k * k * g->epix;
    nthreads = clamp_threads(nthreads, rows);
    float *acc = gc_zalloc(sizeof(float) * (size_t)(nthreads * numel));
    if (!acc) return -1;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *ring = gc_zalloc(sizeof(float) * (size_t)(k * g->ecols * g->epix));
        int64_t *tags = malloc(sizeof(int64_t) * (size_t)k);
        float *drow = gc_zalloc(sizeof(float) * (size_t)(g->blocks * TW * g->cpad));
        float *nrm = g->aff ? alloc_aligned(sizeof(float) * (size_t)(g->wd * g->cin)) : NULL;
        const float **rowp = malloc(sizeof(float *) * (size_t)k);
        const float **src = malloc(sizeof(float *) * (size_t)ntap_max);
        float **at = malloc(sizeof(float *) * (size_t)ntap_max);
        const int ok = ring && tags && drow && (nrm || !g->aff) && rowp && src && at;
        if (!ok) failed = 1;
        if (tags)
            for (int64_t s = 0; s < k; ++s) tags[s] = -1;
#ifdef _OPENMP
        float *mine = acc + (size_t)omp_get_thread_num() * (size_t)numel;
#else
        float *mine = acc;
#endif
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
            if (!ok) continue;
            const int64_t nb = row / g->ho, oh = row % g->ho;
            const float *dyrow = dy + row * g->wo * cout;
            for (int64_t ow = 0; ow < g->wo; ++ow)
                memcpy(drow + ow * g->cpad, dyrow + ow * cout, sizeof(float) * (size_t)cout);
            ring_inputs(g, x, ring, tags, nb, oh, rowp, nrm);
            for (int64_t b = 0; b < g->blocks; ++b) {
                const int64_t ntaps = forward_taps(g, rowp, b * TW, mine, src, at);
                grad_block(src, at, ntaps, g->stride * g->epix, g->cpad / VL, drow + b * TW * g->cpad, g->cpad);
            }
        }
        free(ring);
        free(tags);
        free(drow);
        free(nrm);
        free(rowp);
        free(src);
        free(at);
    }
    if (!failed) {
        for (int64_t kh = 0; kh < k; ++kh)
            for (int64_t kw = 0; kw < k; ++kw)
                for (int64_t i = 0; i < g->ig; ++i)
                    for (int64_t c = 0; c < cout; ++c) {
                        const int64_t e = ((kh * k + kw) * g->ig + i) * g->cpad + c;
                        float s = acc[e];
                        for (int th = 1; th < nthreads; ++th) s += acc[(size_t)th * (size_t)numel + (size_t)e];
                        dw[((c * g->ig + i) * k + kh) * k + kw] = s;
                    }
    }
    free(acc);
    return failed ? -1 : 0;
}

/* Input gradient dx (N x H x W x Cin, overwritten) of the conv above from dy: the transposed conv (the gradient
 * of x', the input as read). With bn_sums (g->aff set): the folded BatchNorm's backward sums over dx, taken per
 * row while it is in cache (see bn_grad_sums; x the BatchNorm's input, bn_mean its batch mean). */
static int gc_input_grad(const gc_geom *g, const int64_t *perm, const float *w, const float *dy, float *dx,
                         const float *x, const float *bn_mean, double *bn_sums, int nthreads) {
    const int64_t k = g->k, s = g->stride, pad = g->pad, cin = g->cin, cout = g->cout, ig = g->ig, og = g->og;
    const int64_t jpad = round_vl(cin), fpix = og * jpad;
    const int64_t xblocks = ((g->wd + s - 1) / s + TW - 1) / TW;  /* blocks per class of w mod s */
    const int64_t fcols = pad + (s - 1 + pad) / s + xblocks * TW + 1;
    const int64_t rows = g->n * g->h, ntap_max = k * k * og;
    const int direct = !perm && cin % VL == 0;
    int32_t *tab = malloc(sizeof(int32_t) * (size_t)fpix);
    int64_t *islot = malloc(sizeof(int64_t) * (size_t)cin);
    float *wb = gc_zalloc(sizeof(float) * (size_t)(k * k * fpix));
    expand_vec *fplan = NULL;
    int failed = !tab || !islot || !wb;
    if (!failed) {
        for (int64_t o = 0; o < og; ++o)
            for (int64_t j = 0; j < jpad; ++j) tab[o * jpad + j] = j < cin ? (int32_t)((j / ig) * og + o) : -1;
        fplan = expand_plan(tab, fpix / VL, cout);
        failed = !fplan;
        for (int64_t j = 0; j < cin; ++j) islot[perm ? perm[j] : j] = j;
        for (int64_t kh = 0; kh < k; ++kh)
            for (int64_t kw = 0; kw < k; ++kw)
                for (int64_t o = 0; o < og; ++o)
                    for (int64_t j = 0; j < cin; ++j)
                        wb[((kh * k + kw) * og + o) * jpad + j] =
                            w[((((j / ig) * og + o) * ig + j % ig) * k + kh) * k + kw];
    }
    free(tab);
    if (failed) {
        free(fplan);
        free(islot);
        free(wb);
        return -1;
    }
    nthreads = clamp_threads(nthreads, rows);
    bn_rows sums;
    if (bn_rows_alloc(&sums, nthreads, cin, bn_sums != NULL) != 0) {
        free(fplan);
        free(islot);
        free(wb);
        return -1;
    }
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        const int me = thread_id();
        float *ring = gc_zalloc(sizeof(float) * (size_t)(k * fcols * fpix));
        int64_t *tags = malloc(sizeof(int64_t) * (size_t)k);
        float *xrow = direct ? NULL : alloc_aligned(sizeof(float) * (size_t)((g->wd + s * TW) * jpad));
        const float **rowp = malloc(sizeof(float *) * (size_t)k);
        const float **src = malloc(sizeof(float *) * (size_t)ntap_max);
        const float **wt = malloc(sizeof(float *) * (size_t)ntap_max);
        const int ok = ring && tags && (xrow || direct) && rowp && src && wt;
        if (!ok) failed = 1;
        if (tags)
            for (int64_t q = 0; q < k; ++q) tags[q] = -1;
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; ++row) {
            if (!ok) continue;
            const int64_t nb = row / g->h, ih = row % g->h;
            for (int64_t kh = 0; kh < k; ++kh) {  /* output rows oh with oh * s = ih + pad - kh */
                const int64_t t = ih + pad - kh;
                rowp[kh] = NULL;
                if (t < 0 || t % s || t / s >= g->ho) continue;
                const int64_t oh = t / s, slot = oh % k, tag = nb * g->ho + oh;
                float *frow = ring + slot * fcols * fpix;
                if (tags[slot] != tag) {
                    expand_row(dy + (nb * g->ho + oh) * g->wo * cout, g->wo, cout, fplan, fpix / VL, frow, pad,
                               fpix);
                    tags[slot] = tag;
                }
                rowp[kh] = frow;
            }
            float *dxrow = dx + row * g->wd * cin;
            for (int64_t r = 0; r < s && r < g->wd; ++r) {  /* pixels w = r + s * t share their taps */
                const int64_t cnt = (g->wd - r + s - 1) / s;
                for (int64_t t0 = 0; t0 < cnt; t0 += TW) {
                    int64_t ntaps = 0;
                    for (int64_t kh = 0; kh < k; ++kh) {
                        if (!rowp[kh]) continue;
                        for (int64_t kw = 0; kw < k; ++kw) {
                            const int64_t u = r + pad - kw;  /* = ow * s for the first pixel */
                            if (((u % s) + s) % s) continue;
                            const int64_t q = u / s;  /* exact (u is a multiple of s), may be negative */
                            for (int64_t o = 0; o < og; ++o) {
                                src[ntaps] = rowp[kh] + (pad + q + t0) * fpix + o * jpad;
                                wt[ntaps] = wb + ((kh * k + kw) * og + o) * jpad;
                                ++ntaps;
                            }
                        }
                    }
                    const int n = (int)(cnt - t0 < TW ? cnt - t0 : TW);
                    if (direct)
                        conv_block(src, wt, ntaps, fpix, jpad / VL, dxrow + (r + s * t0) * cin, s * cin, n);
                    else
                        conv_block(src, wt, ntaps, fpix, jpad / VL, xrow + (r + s * t0) * jpad, s * jpad, n);
                }
            }
            if (!direct)
                for (int64_t w = 0; w < g->wd; ++w)
                    for (int64_t c = 0; c < cin; ++c) dxrow[w * cin + c] = xrow[w * jpad + islot[c]];
            bn_rows_add(&sums, me, dxrow, x + row * g->wd * cin, g->wd, g->aff, bn_mean, g->relu);
        }
        free(ring);
        free(tags);
        free(xrow);
        free(rowp);
        free(src);
        free(wt);
    }
    bn_rows_finish(&sums, nthreads, failed ? NULL : bn_sums);
    free(fplan);
    free(islot);
    free(wb);
    return failed ? -1 : 0;
}

/* Backward of gc_forward: dx (when not NULL; the gradient of x', the input as read) and dw (when not NULL,
 * (Cout, In_g, k, k)), both overwritten, with aff and relu as the forward had them. With bn_sums (needs dx and
 * aff; bn_mean the folded BatchNorm's batch mean): bn_sums[c] = sum dz, bn_sums[Cin + c] = sum dz * (x - mean),
 * dz = dx masked by the ReLU (bna_backward's sums). Returns 0, -1 when out of memory, -2 for bn_sums without dx
 * or aff. */
int gc_backward(const float *x, const int64_t *perm, const float *w, const float *dy, float *dx, float *dw,
                int64_t n, int64_t h, int64_t wd, int64_t cin, int64_t cout, int64_t groups, int64_t k,
                int64_t stride, const float *aff, int relu, const float *bn_mean, double *bn_sums, int nthreads) {
    if (bn_sums && (!dx || !aff || !bn_mean)) return -2;
    if (!aff) relu = 0;
    if (dw_handles(perm, cin, cout, groups, k, stride))
        return dw_backward(x, w, dy, dx, dw, n, h, wd, cin, k, aff, relu, bn_mean, bn_sums, nthreads);
    if (rot_handles(perm, cin, cout, groups, k, stride))
        return rot_backward(x, w, dy, dx, dw, n, h, wd, cin, cin / groups, aff, relu, bn_mean, bn_sums, nthreads);
    gc_geom g;
    if (geom_init(&g, perm, w, n, h, wd, cin, cout, groups, k, stride) != 0) {
        geom_free(&g);
        return -1;
    }
    g.aff = aff, g.relu = relu;
    int code = 0;
    if (dw) code |= gc_weight_grad(&g, x, dy, dw, nthreads);
    if (dx && code == 0) code |= gc_input_grad(&g, perm, w, dy, dx, x, bn_mean, bn_sums, nthreads);
    geom_free(&g);
    return code ? -1 : 0;
}
