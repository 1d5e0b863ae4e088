/* The pixel tiles that the grouped 1x1 kernels (group_pw.c) and their fused chains (pw_chain.c) share.
 *
 * Tensors are channels_last (NHWC) float32, i.e. row-major (P = N*H*W, C) matrices. A tile is TILE consecutive
 * pixels, transposed into a slot-major buffer (one TILE-float vector per channel, pixel axis innermost) by
 * gather_tile and back by scatter_tile; the matmuls run on those vectors. TILE is 16 with AVX-512, 8 otherwise: a
 * tile is one register's vector either way, and with AVX-512 or AVX its TILE x TILE blocks are transposed in
 * registers (the last block of a row that is not a multiple of TILE channels with masked loads and stores).
 */
#ifndef IGCNAS_PW_TILES_H
#define IGCNAS_PW_TILES_H

#include <stdint.h>

#include "native_common.h"

#define TILE NV   /* pixels per tile: one vector (a zmm register with AVX-512; else a ymm: 16 would spill) */
#define WSUB 4   /* tiles per step of the backward kernel (its dw update is written for 4) */

typedef float vf __attribute__((vector_size(TILE * 4), aligned(TILE * 4)));
typedef float nv_u __attribute__((vector_size(TILE * 4), aligned(4), may_alias)); /* an unaligned vector */

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
#elif defined(__AVX__)
/* Transpose the 8 x 8 block r[k] (8 rows of 8 floats) in registers. */
static inline void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int k = 0; k < 8; k += 2) {
        t[k] = _mm256_unpacklo_ps(r[k], r[k + 1]);
        t[k + 1] = _mm256_unpackhi_ps(r[k], r[k + 1]);
    }
    /* per 128-bit half: u[4q + j] holds column j (of 4) of rows 4q..4q+3 */
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
        u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xee);
        u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xee);
    }
    for (int j = 0; j < 4; ++j) {
        r[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
        r[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
    }
}
#define transpose_tile transpose8
#endif
#if defined(__AVX512F__)
#define transpose_tile transpose16
#endif

/* The TILE x TILE block of a tile's rows (rows of stride c from src) at channel j0, transposed into buf's slots of
 * channels j0 .. j0 + width - 1 (W: width is TILE, a constant, else masked loads of the first `width` lanes). */
#if defined(__AVX512F__) || defined(__AVX__)
static inline __attribute__((always_inline)) void gather_block(const float *restrict src, int64_t c, int64_t j0,
                                                               int64_t width, const int64_t *restrict slot,
                                                               float *restrict buf, const int W) {
    nv_t r[TILE];
    const lanes_t m = lanes_first(W ? TILE : width);
    for (int t = 0; t < TILE; ++t) r[t] = W ? (nv_t) * (const nv_u *)(src + t * c + j0) : load_lanes(src + t * c + j0, m);
    transpose_tile(r);
    for (int k = 0; k < TILE; ++k)
        if (W || k < width) *(nv_t *)(buf + (slot ? slot[j0 + k] : j0 + k) * TILE) = r[k];
}

/* The inverse of gather_block: the slots of channels j0 .. j0 + width - 1 transposed into the tile's rows (stride c
 * from dst; W: width is TILE, else masked stores); nt: non-temporal stores (AVX-512, W, dst rows line-aligned). */
static inline __attribute__((always_inline)) void scatter_block(float *restrict dst, int64_t c, int64_t j0,
                                                                int64_t width, const int64_t *restrict slot,
                                                                const float *restrict buf, const int W, int nt) {
    nv_t r[TILE];
    const lanes_t m = lanes_first(W ? TILE : width);
    for (int k = 0; k < TILE; ++k)
        r[k] = W || k < width ? *(const nv_t *)(buf + (slot ? slot[j0 + k] : j0 + k) * TILE) : (nv_t){0};
    transpose_tile(r);
#if defined(__AVX512F__)
    if (W && nt) {
        for (int t = 0; t < TILE; ++t) _mm512_stream_ps(dst + t * c + j0, r[t]);
        return;
    }
#else
    (void)nt;
#endif
    for (int t = 0; t < TILE; ++t) {
        if (W)
            *(nv_u *)(dst + t * c + j0) = r[t];
        else
            store_lanes(dst + t * c + j0, m, r[t]);
    }
}
#endif

/* buf[slot(j)][t] = src[(p0 + t) * c + j] for j < c, t < n (columns t >= n are zero). A full tile goes by blocks of
 * TILE channels transposed in registers, the last one with masked loads. */
static inline void gather_tile(const float *restrict src, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
                               float *restrict buf) {
    int64_t j0 = 0;
#if defined(__AVX512F__) || defined(__AVX__)
    if (n == TILE) {
        for (; j0 + TILE <= c; j0 += TILE) gather_block(src + p0 * c, c, j0, TILE, slot, buf, 1);
        if (j0 < c) gather_block(src + p0 * c, c, j0, c - j0, slot, buf, 0);
        return;
    }
#endif
    for (int64_t j = j0; j < c; ++j) {
        float *restrict dst = buf + (slot ? slot[j] : j) * TILE;
        int t = 0;
        for (; t < n; ++t) dst[t] = src[(p0 + t) * c + j];
        for (; t < TILE; ++t) dst[t] = 0.0f;
    }
}

/* dst[(p0 + t) * c + j] = buf[slot(j)][t] for j < c, t < n; stream: non-temporal stores (AVX-512). A full tile goes
 * as gather_tile's, the last block with masked stores; streamed, its rows are written in place when they are
 * line-aligned (C a multiple of 16), else through a per-thread buffer that stream_copy writes out. */
static inline void scatter_tile(float *restrict dst, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
                                const float *restrict buf, int stream) {
#if defined(__AVX512F__) || defined(__AVX__)
    if (n == TILE) {
        int64_t j0 = 0;
#if defined(__AVX512F__)
        const int aligned = stream && ((uintptr_t)(dst + p0 * c) & 63) == 0 && (c & 15) == 0;
        float *stage = stream && !aligned ? thread_scratch(TILE * c) : NULL;
#else
        const int aligned = 0;
        float *stage = NULL;
#endif
        float *out = stage ? stage : dst + p0 * c; /* the tile's first row */
        for (; j0 + TILE <= c; j0 += TILE) scatter_block(out, c, j0, TILE, slot, buf, 1, aligned);
        if (j0 < c) scatter_block(out, c, j0, c - j0, slot, buf, 0, 0);
        if (stage) stream_copy(dst + p0 * c, stage, TILE * c);
        return;
    }
#endif
    (void)stream;
    for (int64_t j = 0; j < c; ++j) {
        const float *restrict b = buf + (slot ? slot[j] : j) * TILE;
        for (int t = 0; t < n; ++t) dst[(p0 + t) * c + j] = b[t];
    }
}

/* buf[slot(j)] = buf[slot(j)] * aff[j] + aff[c + j] for the c channels of a gathered tile, through a ReLU when
 * relu: a BatchNorm (+ ReLU) applied as the tile is read, so that its output is never written. */
static inline void map_tile(float *restrict buf, int64_t c, const int64_t *restrict slot, const float *restrict aff,
                            int relu) {
    typedef float tv __attribute__((vector_size(TILE * 4), aligned(TILE * 4)));
    typedef int32_t ti __attribute__((vector_size(TILE * 4), aligned(TILE * 4)));
    const tv zero = {0};
    for (int64_t j = 0; j < c; ++j) {
        tv *v = (tv *)(buf + (slot ? slot[j] : j) * TILE);
        tv y = *v * aff[j] + aff[c + j];
        if (relu) y = (tv)((ti)y & (ti)(y > zero));
        *v = y;
    }
}

/* Input channels per block of dw_update4's register-held accumulators: two output channels'
 * 2 x DWU_BLOCK accumulators, their two gradients and one input must fit the vector registers (32 with AVX-512;
 * AVX2's 16 would spill 2 x 8 of them to the stack, where every update waits on a store and a reload). */
#if defined(__AVX512F__)
#define DWU_BLOCK 8
#else
#define DWU_BLOCK 4
#endif

/* dw_update4 for the output channels oc, oc + 1 and the input channels i0 .. i0 + DWU_BLOCK - 1: their
 * 2 x DWU_BLOCK accumulators stay in registers over the 4 tiles. */
static inline __attribute__((always_inline)) void dwu_pair(vf *restrict mine, const vf *restrict dt,
                                                           const vf *restrict x0, int64_t oc, int64_t i0,
                                                           int64_t in_g, int64_t in_c, int64_t out_c) {
    vf *restrict a = mine + oc * in_g + i0, *restrict b = a + in_g;
    vf r[DWU_BLOCK], q[DWU_BLOCK];
    for (int i = 0; i < DWU_BLOCK; ++i) {
        r[i] = a[i];
        q[i] = b[i];
    }
    for (int s = 0; s < 4; ++s) {
        const vf d0 = dt[s * out_c + oc], d1 = dt[s * out_c + oc + 1];
        const vf *restrict xs = x0 + s * in_c + i0;
        for (int i = 0; i < DWU_BLOCK; ++i) {
            r[i] += d0 * xs[i];
            q[i] += d1 * xs[i];
        }
    }
    for (int i = 0; i < DWU_BLOCK; ++i) {
        a[i] = r[i];
        b[i] = q[i];
    }
}

/* mine[g*Og + o][i] += sum_s dt[s][g*Og + o] * xt[s][g*Ig + i] over the WSUB = 4 tiles of a step (TILE lanes kept):
 * the weight-gradient update of a grouped 1x1 conv (group_pw.c) or of a chain's layer (pw_chain.c). */
static inline void dw_update4(vf *restrict mine, const vf *restrict dt, const vf *restrict xt, int64_t groups,
                       int64_t in_g, int64_t out_g) {
    const int64_t in_c = groups * in_g, out_c = groups * out_g;
    for (int64_t g = 0; g < groups; ++g) {
        const vf *restrict x0 = xt + g * in_g;
        int64_t o = 0;
        if (in_g % DWU_BLOCK == 0) /* other widths: one output at a time (blocks of 4 measured slower with AVX-512) */
            for (; o + 2 <= out_g; o += 2)
                for (int64_t i0 = 0; i0 < in_g; i0 += DWU_BLOCK)
                    dwu_pair(mine, dt, x0, g * out_g + o, i0, in_g, in_c, out_c);
        for (; o < out_g; ++o) {
            const int64_t oc = g * out_g + o;
            const vf d0 = dt[oc], d1 = dt[out_c + oc], d2 = dt[2 * out_c + oc], d3 = dt[3 * out_c + oc];
            vf *restrict a = mine + oc * in_g;
            for (int64_t i = 0; i < in_g; ++i)
                a[i] += d0 * x0[i] + d1 * x0[in_c + i] + d2 * x0[2 * in_c + i] + d3 * x0[3 * in_c + i];
        }
    }
}

#endif
