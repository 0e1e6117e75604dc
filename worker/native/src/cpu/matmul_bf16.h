// Dense bf16 weights (row-major [rows][K], one row per output) times fp32 activations, plus an optional fp32 bias:
//   y[t * ldy + r] = bias[r] + sum_k x[t * ldx + k] * w[r * K + k]      for t < n_tok, r0 <= r < r1.
// The caller splits rows over threads. Each weight row is read from memory once per call for all n_tok tokens
// (tiles of tokens reuse it from L1), which is what makes batched decode cheaper per token than batch 1.
// Every (row, token) dot product is accumulated in the same order whatever n_tok is, so results do not depend on
// how tokens were batched.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

void matmul_bf16_rows(Simd s, const float *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K, int r0,
                      int r1, float *y, int64_t ldy);

}  // namespace ms
