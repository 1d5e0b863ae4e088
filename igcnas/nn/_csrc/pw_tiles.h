/* The pixel tiles that the grouped 1x1 kernels (group_pw.c) and their fused chains (pw_chain.c) share.
 *
 * Tensors are channels_last (NHWC) float32, i.e. row-major (P = N*H*W, C) matrices. A tile is TILE consecutive
 * pixels, transposed into a slot-major buffer (one TILE-float vector per channel, pixel axis innermost) by
 * gather_tile and back by scatter_tile; the matmuls run on those vectors. TILE is 16 with AVX-512 (16 x 16 blocks
 * transposed in registers), 8 otherwise: a tile is one register's vector either way.
 */
#ifndef IGCNAS_PW_TILES_H
#define IGCNAS_PW_TILES_H

#include <stdint.h>

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
static inline void gather_tile(const float *restrict src, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
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
static inline void scatter_tile(float *restrict dst, int64_t c, int64_t p0, int n, const int64_t *restrict slot,
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

/* mine[g*Og + o][i] += sum_s dt[s][g*Og + o] * xt[s][g*Ig + i] over the WSUB = 4 tiles of a step (TILE lanes kept):
 * the weight-gradient update of a grouped 1x1 conv (group_pw.c) or of a chain's layer (pw_chain.c). */
static inline void dw_update4(vf *restrict mine, const vf *restrict dt, const vf *restrict xt, int64_t groups,
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

#endif
