// The fp32 register-tile micro-kernel shared by the bf16 and MXFP4 matrix kernels when a call has many tokens:
// R weight rows (already widened to fp32 in an L1-resident scratch) times NT tokens, accumulated 16 lanes at a time
// over k. Per (row, token) the lane-wise FMA order and the final reduction are exactly those of the kernels' direct
// paths, so results are bit-identical whichever path a row takes (batching never changes a token's result).
#pragma once

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstdint>

namespace ms {

// out[t * ldy + i] = sum over k < K16 of w[i * ldw + k] * x[t * ldx + k]  (K16 a multiple of 16; no bias, no tail).
template <int R, int NT>
__attribute__((target("avx512f"))) inline void gemm_f32_tile_avx512(const float *w, int64_t ldw, const float *x,
                                                                    int64_t ldx, int K16, float *out, int64_t ldy) {
    __m512 acc[R][NT];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int k = 0; k < K16; k += 16) {
        __m512 wv[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) wv[i] = _mm512_loadu_ps(w + i * ldw + k);
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) {
            const __m512 xv = _mm512_loadu_ps(x + t * ldx + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
        }
    }
    for (int i = 0; i < R; ++i)
        for (int t = 0; t < NT; ++t) out[t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]);
}

// All n_tok tokens for R rows, in tiles of 6 tokens.
template <int R>
__attribute__((target("avx512f"))) inline void gemm_f32_rows_avx512(const float *w, int64_t ldw, const float *x, int n_tok,
                                                                    int64_t ldx, int K16, float *out, int64_t ldy) {
    int t = 0;
    for (; t + 6 <= n_tok; t += 6) gemm_f32_tile_avx512<R, 6>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy);
    switch (n_tok - t) {
        case 5: gemm_f32_tile_avx512<R, 5>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy); break;
        case 4: gemm_f32_tile_avx512<R, 4>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy); break;
        case 3: gemm_f32_tile_avx512<R, 3>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy); break;
        case 2: gemm_f32_tile_avx512<R, 2>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy); break;
        case 1: gemm_f32_tile_avx512<R, 1>(w, ldw, x + t * ldx, ldx, K16, out + t * ldy, ldy); break;
        default: break;
    }
}

// Token count from which widening a row block into scratch once beats converting weights inside every token tile.
constexpr int kWidenMinTokens = 4;

}  // namespace ms

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
