// Dense weights rounded to int8 times int8 activations: the q8 mode's optional path for the bf16 projections
// (attention q/k/v/o and the unembedding; Model::set_q8_activations with dense = true, MS_ACTIVATIONS=q8all).
//
// Unlike MXFP4, bf16 weights are not exact in int8: each 32-block of a row is rounded once, at load, as the
// activations are (q = round-half-even(w * 127 / max|w|), d = max|w| / 127, fp32), which adds a relative error of up to
// 1/254 of the block's largest weight per element. The product is then all integer per block:
//   isum(r, t, b) = sum_{j < 32} qw[r][32b + j] * qa[t][32b + j]                      (exact, |isum| <= 32 * 127^2)
//   acc_h(r, t)   = fma(float(isum), da[t][b] * dw[r][b], acc_h)   for b = h, h + 2, ... (h = 0, 1), from 0
//   y[t][r]       = (acc_0 + acc_1) + bias[r]
// and every implementation computes exactly that (SIMD equals the scalar reference bit for bit; a token's result does
// not depend on the other tokens or the row range). Activations come in the panels of cpu/matmul_mxfp4_q8.h; the
// weights are stored as the register tile of cpu/q8_pair_kernel.h reads them: groups of 8 rows (the last one padded
// with zero rows), per block pair and row 64 bytes of qw + 128 as unsigned bytes (AVX-512 VNNI / AVX-VNNI vpdpbusd
// multiply them directly, the offset coming back out through the activation sums; the AVX2 kernel takes the offset
// off and moves each weight's sign onto the activation, vpsignb, so vpmaddubsw sees |w| times a signed byte).
#pragma once

#include <cstdint>

#include "cpu/aligned_vector.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/simd.h"

namespace ms {

struct Q8DenseWeights {
    AlignedVector<uint8_t> q;  // [rows / 8][npair][8][64]: qw + 128, block-split order (see cpu/q8_pair_kernel.h)
    AlignedVector<float> d;    // [rows / 8][npair][8][2]: dw of blocks 2bp, 2bp + 1 (0 for a pad block or row)
    int rows = 0, K = 0;
    size_t bytes() const { return q.size() + d.size() * sizeof(float); }
    // The rounded weight of row r at element k (natural order) and the scale of its block b.
    int weight(int r, int k) const;
    float scale(int r, int b) const;
};

// Rounds a bf16 matrix [rows][K] (K % 32 == 0) to int8 per 32-block.
void q8_quantize_dense_bf16(const uint16_t *w, int rows, int K, Q8DenseWeights &out);

// y[t * ldy + r] = bias[r] + sum_k x[t][k] W[r][k] as above, tokens t < n_tok from panel panel0 on, rows [r0, r1).
// Fastest with r0 and r1 multiples of 8 (a row group is computed whole).
void matmul_q8_dense_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias,
                          int r0, int r1, float *y, int64_t ldy);

}  // namespace ms
