// MXFP4 expert weights times int8 activations (the model's opt-in "q8" activation mode, see model.h).
//
// An E2M1 value times 2 is an integer in {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12}, so with the E8M0 block factor
// 2^(e - 127) a weight is exactly w2 * 2^(e - 128) with w2 a small integer. The activations are quantized to int8
// per 32-block of k (q = round-half-even(x * 127 / max|x|), d = max|x| / 127, as llama.cpp's Q8_0 but with an fp32
// d), so a block's contribution is an exact integer dot product times one float factor:
//   isum(r, t, b) = sum_{j < 32} w2[r][32b + j] * q[t][32b + j]                           (exact, |isum| < 2^16)
//   acc(r, t)     = fma(float(isum), d[t][b] * 2^(e[r][b] - 128), acc)   for b = 0, 1, ... in order, from 0
//   y[t][r]       = acc(r, t) + bias[r]
// Every implementation computes exactly this sequence of fp32 operations, so the SIMD kernels equal the scalar
// reference bit for bit, and a token's result does not depend on the other tokens of the call (or the row range).
// The only approximation against the fp32-activation kernels is the activation rounding: |x - q d| <= d / 2 per
// element, so a dot product moves by at most sum_b (d_b / 2) sum_{k in b} |w_k| (plus fp32 rounding).
//
// Activations live in panels of 8 tokens (Q8Panels), laid out for "token lanes": each 32-block in block-split order
// (its 16 even elements, then its 16 odd ones: the order of a block's low nibbles, then its high nibbles), and for
// each group of 4 consecutive positions the 4 int8 values of the panel's 8 tokens side by side (32 bytes), so one
// 256-bit integer multiply-add (AVX2 vpmaddubsw, AVX-512 VNNI vpdpbusd ymm) does 4 k steps for 8 tokens against one
// broadcast weight quad. The weights are unpacked per call and row to unsigned bytes w2 + 12 (0..24) by one table
// lookup per nibble half; the offset comes back out through the stored per-block activation sums.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

constexpr int kQ8PanelTokens = 8;

// Position of element k (0..31) of a 32-block in block-split order.
constexpr int q8_block_position(int k) { return (k % 2) * 16 + k / 2; }

// Panels of quantized activations for K inputs (K % 32 == 0). Panel p holds tokens 8p .. 8p + 7 of a call.
//   qs [p][K/4][8][4]   int8; element 32b + k of token lane j at qs[p*8K + (8b + pos/4)*32 + j*4 + pos%4] with
//                       pos = q8_block_position(k)
//   d  [p][K/32][8]     fp32 block scale of each token lane (0 for an all-zero block and for unused lanes)
//   sum[p][K/32][8]     sum of the block's 32 int8 values of each token lane
struct Q8Panels {
    int8_t *qs = nullptr;
    float *d = nullptr;
    int32_t *sum = nullptr;
    int K = 0;
};
inline int64_t q8_panel_qs_bytes(int K) { return int64_t(K) * kQ8PanelTokens; }
inline int64_t q8_panel_blocks(int K) { return int64_t(K / 32) * kQ8PanelTokens; }  // floats in d, ints in sum

// Quantizes n <= 8 rows (rows[j] points at K fp32 values) into panel `panel` of p; lanes n..7 are zeroed.
// Simd::Scalar is the reference; every other level gives the same bytes and scales.
void q8_quantize_panel(Simd s, const float *const *rows, int n, const Q8Panels &p, int panel);

// y[t * ldy + r] = bias[r] + sum_k x[t][k] W[r][k] as defined above, for tokens t < n_tok (token t is lane t % 8 of
// panel panel0 + t / 8) and rows r0 <= r < r1. blocks/scales: the MXFP4 layout of matmul_mxfp4.h.
// Simd::Avx512 runs AVX-512 VNNI (256-bit vpdpbusd) where the CPU has it, else the AVX2 kernel; Simd::Scalar the
// reference.
void matmul_mxfp4_q8_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales,
                          const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

// Whether Simd::Avx512 uses the VNNI kernel on this CPU (AVX-512 F/VL/VNNI).
bool q8_vnni_available();

}  // namespace ms
