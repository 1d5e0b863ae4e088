/* Agreements of binary activation codes between the images of a batch (NASWOT's kernel, igcnas.proxies).
 *
 * x is a row-major (n, d) float32 matrix: row i holds every unit of image i (any unit order). The code of unit u
 * of image i is x[i][u] > 0. For every pair of images:
 *
 *     agree[i][j] += d - popcount(code_i XOR code_j)        (units where both are active or both inactive)
 *
 * The codes are packed 64 units to a word (pad bits 0 in every row, so they never differ); the pair loop runs
 * over chunks of words that stay in cache for all n rows. Counts are exact integers; threads split the packing by
 * rows and the pair counts by chunks, each with its own counters added up at the end (no floating point).
 *
 * GNU C + OpenMP, no torch headers; called through ctypes with raw pointers.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

#include "native_common.h"

#define CHUNK_WORDS 512 /* 4 KiB of each row's code per chunk: n rows stay in L2 while every pair is counted */

/* Bits of 64 consecutive units of one row: bit b set when row[b] > 0 (units past `count` are 0). */
static uint64_t pack_word(const float *restrict row, int64_t count) {
    uint64_t word = 0;
    if (count == 64) {
#if defined(__AVX512F__)
        const __m512 zero = _mm512_setzero_ps();
        for (int q = 0; q < 4; ++q)
            word |= (uint64_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(row + 16 * q), zero, _CMP_GT_OQ) << (16 * q);
#elif defined(__AVX__)
        const __m256 zero = _mm256_setzero_ps();
        for (int q = 0; q < 8; ++q)
            word |= (uint64_t)(unsigned)_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + 8 * q), zero, _CMP_GT_OQ))
                    << (8 * q);
#else
        for (int b = 0; b < 64; ++b) word |= (uint64_t)(row[b] > 0.0f) << b;
#endif
    } else {
        for (int64_t b = 0; b < count; ++b) word |= (uint64_t)(row[b] > 0.0f) << b;
    }
    return word;
}

/* agree (n x n, double, accumulated into) += the agreements above. Returns 0, or -1 when out of memory. */
int codes_agreements(const float *x, int64_t n, int64_t d, double *agree, int nthreads) {
    const int64_t words = (d + 63) / 64, pairs = n * (n + 1) / 2;
    uint64_t *bits = malloc(sizeof(uint64_t) * (size_t)(n * words + 1));
    if (!bits) return -1;
    int threads = clamp_threads(nthreads, n * words);
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t t = 0; t < n * words; ++t) {
        const int64_t i = t / words, w = t % words;
        const int64_t left = d - w * 64;
        bits[t] = pack_word(x + i * d + w * 64, left < 64 ? left : 64);
    }
    const int64_t chunks = (words + CHUNK_WORDS - 1) / CHUNK_WORDS;
    threads = clamp_threads(nthreads, chunks);
    int64_t *diff = calloc((size_t)(threads * pairs), sizeof(int64_t));
    if (!diff) {
        free(bits);
        return -1;
    }
#pragma omp parallel num_threads(threads)
    {
        int64_t *mine = diff + (int64_t)thread_id() * pairs;
#pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks; ++c) {
            const int64_t w0 = c * CHUNK_WORDS, w1 = w0 + CHUNK_WORDS < words ? w0 + CHUNK_WORDS : words;
            int64_t pair = 0;
            for (int64_t i = 0; i < n; ++i) {
                const uint64_t *restrict a = bits + i * words;
                for (int64_t j = i; j < n; ++j, ++pair) {
                    const uint64_t *restrict b = bits + j * words;
                    int64_t count = 0;
                    for (int64_t w = w0; w < w1; ++w) count += __builtin_popcountll(a[w] ^ b[w]);
                    mine[pair] += count;
                }
            }
        }
    }
    int64_t pair = 0;
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = i; j < n; ++j, ++pair) {
            int64_t total = 0;
            for (int t = 0; t < threads; ++t) total += diff[(int64_t)t * pairs + pair];
            const double same = (double)(d - total);
            agree[i * n + j] += same;
            if (j != i) agree[j * n + i] += same;
        }
    free(diff);
    free(bits);
    return 0;
}
