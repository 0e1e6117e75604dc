#include "cpu/matmul_bf16.h"

#include "cpu/x86_intrinsics.h"

#include "cpu/avx2_reduce.h"
#include "cpu/bf16.h"
#include "cpu/gemm_f32_avx512.h"
#include "cpu/prefetch.h"

#include <vector>

#include "cpu/aligned_vector.h"

namespace ms {

namespace {

void rows_scalar(const float *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K, int r0, int r1,
                 float *y, int64_t ldy) {
    for (int r = r0; r < r1; ++r) {
        const uint16_t *wr = w + int64_t(r) * K;
        for (int t = 0; t < n_tok; ++t) {
            const float *xt = x + t * ldx;
            float s = 0;
            for (int k = 0; k < K; ++k) s += xt[k] * bf16_to_f32(wr[k]);
            y[t * ldy + r] = s + (bias ? bias[r] : 0.0f);
        }
    }
}

// The end of an R x NT tile, the same in both tile kernels: per (row, token) the horizontal sum of the 8 lanes, the
// scalar tail k in [k_tail, K), then the bias.
template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void store_tile_avx2(const __m256 (&acc)[R][NT], const float *x, int64_t ldx,
                                                                const uint16_t *w, int K, int k_tail, const float *bias,
                                                                int r, float *y, int64_t ldy) {
    for (int i = 0; i < R; ++i)
        for (int t = 0; t < NT; ++t) {
            float s = hsum_avx2(acc[i][t]);
            for (int kk = k_tail; kk < K; ++kk) s += x[t * ldx + kk] * bf16_to_f32(w[int64_t(i) * K + kk]);
            y[t * ldy + r + i] = s + (bias ? bias[r + i] : 0.0f);
        }
}

template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void tile_avx2(const float *x, int64_t ldx, const uint16_t *w, int K,
                                                          const float *bias, int r, float *y, int64_t ldy) {
    __m256 acc[R][NT];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 wv[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + int64_t(i) * K + k)));
            wv[i] = _mm256_castsi256_ps(_mm256_slli_epi32(h, 16));
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
            __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
        }
    }
    store_tile_avx2<R, NT>(acc, x, ldx, w, K, k, bias, r, y, ldy);
}

template <int R>
__attribute__((target("avx2,fma"))) void rowtile_avx2(const float *x, int n_tok, int64_t ldx, const uint16_t *w, int K,
                                                      const float *bias, int r, float *y, int64_t ldy) {
    int t = 0;
    for (; t + 4 <= n_tok; t += 4) tile_avx2<R, 4>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy);
    switch (n_tok - t) {
        case 3: tile_avx2<R, 3>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        case 2: tile_avx2<R, 2>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        case 1: tile_avx2<R, 1>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        default: break;
    }
}

// R rows already widened to fp32 (sw, R rows of K8 = K / 8 * 8 values, lds apart) x NT tokens: per (row, token) the same
// accumulation order as tile_avx2 (8-lane FMAs over k, horizontal sum, scalar k tail, bias), so the same results;
// each activation vector is loaded once for the R rows.
template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void tile_widened_avx2(const float *x, int64_t ldx, const float *sw, int64_t lds, int K8,
                                                                  const uint16_t *w, int K, const float *bias, int r,
                                                                  float *y, int64_t ldy) {
    __m256 acc[R][NT];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int k = 0; k < K8; k += 8) {
        __m256 wv[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) wv[i] = _mm256_load_ps(sw + i * lds + k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            const __m256 xv = _mm256_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(wv[i], xv, acc[i][t]);
        }
    }
    store_tile_avx2<R, NT>(acc, x, ldx, w, K, K8, bias, r, y, ldy);
}

// More than 4 tokens: each group of 3 rows is widened to fp32 once into an L1-sized scratch and every token tile
// reads it (instead of widening the rows again in each 4-token tile). 3 rows x up to 4 tokens: 12 accumulator chains
// hide the FMA latency, and 3 weight vectors + 12 accumulators + the activation vector fill the 16 registers.
__attribute__((target("avx2,fma"))) void rows_widened_avx2(const float *x, int n_tok, int64_t ldx, const uint16_t *w,
                                                           const float *bias, int K, int r0, int r1, float *y,
                                                           int64_t ldy) {
    constexpr int R = 3;
    thread_local AlignedVector<float> scratch;
    const int K8 = K / 8 * 8;
    // Rows one cache line further apart than K8: activation rows a power of two apart (K = 1024: 4 KiB) already
    // share L1 sets, the scratch rows must not add to them.
    const int64_t lds = (K8 + 15) / 16 * 16 + 16;
    if (scratch.size() < size_t(R * lds)) scratch.resize(size_t(R * lds));
    float *sw = scratch.data();
    const int tiles = (n_tok + 3) / 4;  // token tiles of 2..4, as even as possible
    int r = r0;
    for (; r + R <= r1; r += R) {
        for (int i = 0; i < R; ++i)
            for (int k = 0; k < K8; k += 8) {
                const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(w + int64_t(r + i) * K + k)));
                _mm256_store_ps(sw + i * lds + k, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
            }
        const uint16_t *wr = w + int64_t(r) * K;
        for (int i = 0, t = 0; i < tiles; ++i) {
            const int nt = (n_tok - t) / (tiles - i);
            const float *xt = x + t * ldx;
            float *yt = y + t * ldy;
            switch (nt) {
                case 4: tile_widened_avx2<R, 4>(xt, ldx, sw, lds, K8, wr, K, bias, r, yt, ldy); break;
                case 3: tile_widened_avx2<R, 3>(xt, ldx, sw, lds, K8, wr, K, bias, r, yt, ldy); break;
                default: tile_widened_avx2<R, 2>(xt, ldx, sw, lds, K8, wr, K, bias, r, yt, ldy); break;  // 5 tokens: 2 + 3
            }
            t += nt;
        }
    }
    for (; r + 2 <= r1; r += 2) rowtile_avx2<2>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
    for (; r < r1; ++r) rowtile_avx2<1>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
}

__attribute__((target("avx2,fma"))) void rows_avx2(const float *x, int n_tok, int64_t ldx, const uint16_t *w,
                                                   const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (n_tok > 4) return rows_widened_avx2(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
    int r = r0;
    // One or two tokens (decode): 4 rows per tile, so that 4-8 independent FMA chains hide the FMA latency (each
    // (row, token) pair is computed the same way whatever the tile, so results do not depend on it).
    if (n_tok <= 2)
        for (; r + 4 <= r1; r += 4) rowtile_avx2<4>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
    for (; r + 2 <= r1; r += 2) rowtile_avx2<2>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
    for (; r < r1; ++r) rowtile_avx2<1>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
}

template <int R, int NT>
__attribute__((target("avx512f"))) inline void tile_avx512(const float *x, int64_t ldx, const uint16_t *w, int K,
                                                           const float *bias, int r, float *y, int64_t ldy) {
    __m512 acc[R][NT];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 wv[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + int64_t(i) * K + k)));
            wv[i] = _mm512_castsi512_ps(_mm512_slli_epi32(h, 16));
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
            __m512 xv = _mm512_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int t = 0; t < NT; ++t) {
            float s = _mm512_reduce_add_ps(acc[i][t]);
            for (int kk = k; kk < K; ++kk) s += x[t * ldx + kk] * bf16_to_f32(w[int64_t(i) * K + kk]);
            y[t * ldy + r + i] = s + (bias ? bias[r + i] : 0.0f);
        }
}

template <int R>
__attribute__((target("avx512f"))) void rowtile_avx512(const float *x, int n_tok, int64_t ldx, const uint16_t *w, int K,
                                                       const float *bias, int r, float *y, int64_t ldy) {
    int t = 0;
    for (; t + 4 <= n_tok; t += 4) tile_avx512<R, 4>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy);
    switch (n_tok - t) {
        case 3: tile_avx512<R, 3>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        case 2: tile_avx512<R, 2>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        case 1: tile_avx512<R, 1>(x + t * ldx, ldx, w, K, bias, r, y + t * ldy, ldy); break;
        default: break;
    }
}

// Many tokens: widen 4 rows to fp32 once, then run the register-tile kernel over all tokens (same per-(row, token)
// arithmetic as tile_avx512, so the same results).
__attribute__((target("avx512f"))) void rows_widened_avx512(const float *x, int n_tok, int64_t ldx, const uint16_t *w,
                                                            const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local AlignedVector<float> scratch;
    const int K16 = K / 16 * 16;
    if (scratch.size() < size_t(4) * K) scratch.resize(size_t(4) * K);
    float *sw = scratch.data();
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int i = 0; i < 4; ++i)
            for (int k = 0; k < K16; k += 16) {
                __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + int64_t(r + i) * K + k)));
                _mm512_storeu_ps(sw + int64_t(i) * K + k, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
            }
        // The next 4 rows stream in from DRAM while these compute.
        if (r + 8 <= r1) prefetch_bytes(w + int64_t(r + 4) * K, int64_t(4) * K * 2);
        gemm_f32_rows_avx512<4>(sw, K, x, n_tok, ldx, K16, y + r, ldy);
        for (int t = 0; t < n_tok; ++t)
            for (int i = 0; i < 4; ++i) {
                float s = y[t * ldy + r + i];
                for (int kk = K16; kk < K; ++kk) s += x[t * ldx + kk] * bf16_to_f32(w[int64_t(r + i) * K + kk]);
                y[t * ldy + r + i] = s + (bias ? bias[r + i] : 0.0f);
            }
    }
    for (; r < r1; ++r) rowtile_avx512<1>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
}

__attribute__((target("avx512f"))) void rows_avx512(const float *x, int n_tok, int64_t ldx, const uint16_t *w,
                                                    const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (n_tok >= kWidenMinTokens) return rows_widened_avx512(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
    int r = r0;
    for (; r + 4 <= r1; r += 4) rowtile_avx512<4>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
    for (; r < r1; ++r) rowtile_avx512<1>(x, n_tok, ldx, w + int64_t(r) * K, K, bias, r, y, ldy);
}

}  // namespace

void matmul_bf16_rows(Simd s, const float *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K, int r0,
                      int r1, float *y, int64_t ldy) {
    if (s == Simd::Avx512) rows_avx512(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
    else if (s == Simd::Avx2) rows_avx2(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
    else rows_scalar(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
