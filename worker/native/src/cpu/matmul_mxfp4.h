// MXFP4 expert weights times fp32 activations, dequantized in registers (the weights are never expanded in memory).
// Layout (Hugging Face gpt-oss): for output row r, K/32 blocks of 16 bytes, blocks[(r * K/32 + b) * 16 + j] holding
// elements 32b + 2j (low nibble) and 32b + 2j + 1 (high nibble); scales[r * K/32 + b] is an E8M0 exponent, the
// block's factor being 2^(u8 - 127). A nibble is an E2M1 value: bit 3 sign, bits 0-2 index {0,.5,1,1.5,2,3,4,6}.
//
// The activations are first put in "block-split" order (mxfp4_split_activations): within each 32-block the 16 even
// elements, then the 16 odd ones, so a block's low nibbles multiply one contiguous vector and its high nibbles the
// next, with no shuffles per weight. Then
//   y[t * ldy + r] = bias[r] + sum_k xs[t][k] * W[r][k]        for t < n_tok, r0 <= r < r1.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

extern const float kE2M1[16];
float e8m0_scale(uint8_t e);  // 2^(e - 127)

void mxfp4_split_activations(const float *x, int K, float *out);  // one row of K (K % 32 == 0)

void matmul_mxfp4_rows(Simd s, const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales,
                       const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

}  // namespace ms
