// MXFP4 expert weights times int8 activations (the model's opt-in "q8" activation mode, see model.h).
//
// An E2M1 value times 2 is an integer in {0, ±1, ±2, ±3, ±4, ±6, ±8, ±12}, so with the E8M0 block factor
// 2^(e - 127) a weight is exactly w2 * 2^(e - 128) with w2 a small integer. The activations are quantized to int8
// per 32-block of k (q = round-half-even(x * 127 / max|x|), d = max|x| / 127, as llama.cpp's Q8_0 but with an fp32
// d), so a block's contribution is an exact integer dot product times one float factor:
//   isum(r, t, b) = sum_{j < 32} w2[r][32b + j] * q[t][32b + j]                           (exact, |isum| < 2^16)
//   y[t][r]       = bias[r] + sum_b float(isum(r, t, b)) * d[t][b] * 2^(e[r][b] - 128)
// in the fixed order of fp32 operations given below. Every implementation computes exactly that sequence, so the SIMD
// kernels equal the scalar reference bit for bit, and a token's result does not depend on the other tokens of the
// call (or the row range).
// The only approximation against the fp32-activation kernels is the activation rounding: |x - q d| <= d / 2 per
// element, so a dot product moves by at most sum_b (d_b / 2) sum_{k in b} |w_k| (plus fp32 rounding).
//
// The kernels keep even and odd blocks in two fp32 chains (see the layout below), so precisely:
//   acc_h(r, t)   = fma(float(isum(r, t, b)), d[t][b] * 2^(e[r][b] - 128), acc_h)   for b = h, h + 2, ... (h = 0, 1)
//   y[t][r]       = (acc_0 + acc_1) + bias[r]
//
// Activations live in panels of 8 tokens (Q8Panels), laid out by block pair: each 32-block in block-split order (its
// 16 even elements, then its 16 odd ones: the order of a block's low nibbles, then its high nibbles); for block pair
// bp (blocks 2bp, 2bp + 1; an odd last block is paired with a zero pad block) and each quad q of 4 consecutive
// positions, 64 bytes holding, for token lane j, the quad of block 2bp at 8j and that of block 2bp + 1 at 8j + 4. One
// 512-bit vpdpbusd (AVX-512 VNNI) then does 4 k steps for 8 tokens x 2 blocks against one 8-byte weight broadcast,
// and each 32-bit lane ends the pair holding one complete block sum (cpu/q8_pair_kernel.h). The weights are unpacked
// per call and row to unsigned bytes w2 + 12 (0..24) by one table lookup per nibble half; the offset comes back out
// through the stored per-block activation sums.
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

constexpr int kQ8PanelTokens = 8;

// Position of element k (0..31) of a 32-block in block-split order.
constexpr int q8_block_position(int k) { return (k % 2) * 16 + k / 2; }

// Panels of quantized activations for K inputs (K % 32 == 0), nb = K / 32 blocks in npair = (nb + 1) / 2 pairs.
// Panel p holds tokens 8p .. 8p + 7 of a call.
//   qs [p][npair][8 quads][8 lanes][2 blocks][4]   int8; q8_panel_q_offset gives an element's place in its panel
//   d  [p][npair][8 lanes][2 blocks]               fp32 block scale (0 for an all-zero or pad block, unused lanes)
//   sum[p][npair][8 lanes][2 blocks]               sum of the block's 32 int8 values
struct Q8Panels {
    int8_t *qs = nullptr;
    float *d = nullptr;
    int32_t *sum = nullptr;
    int K = 0;
};
inline int q8_block_pairs(int K) { return (K / 32 + 1) / 2; }
inline int64_t q8_panel_qs_bytes(int K) { return int64_t(q8_block_pairs(K)) * 8 * 64; }
inline int64_t q8_panel_blocks(int K) { return int64_t(q8_block_pairs(K)) * 16; }  // floats in d, ints in sum
// Offset inside a panel of lane j's value at block b, block-split position pos (0..31).
inline int64_t q8_panel_q_offset(int j, int b, int pos) { return (int64_t(b / 2) * 8 + pos / 4) * 64 + j * 8 + (b % 2) * 4 + pos % 4; }
// Offset inside a panel's d / sum of lane j's block b.
inline int64_t q8_panel_block_offset(int j, int b) { return int64_t(b / 2) * 16 + j * 2 + b % 2; }

// Quantizes n <= 8 rows (rows[j] points at K fp32 values) into panel `panel` of p; lanes n..7 are zeroed.
// Simd::Scalar is the reference; every other level gives the same bytes and scales.
void q8_quantize_panel(Simd s, const float *const *rows, int n, const Q8Panels &p, int panel);

// y[t * ldy + r] = bias[r] + sum_k x[t][k] W[r][k] as defined above, for tokens t < n_tok (token t is lane t % 8 of
// panel panel0 + t / 8) and rows r0 <= r < r1. blocks/scales: the MXFP4 layout of matmul_mxfp4.h.
// Simd::Avx512 runs AVX-512 VNNI (512-bit vpdpbusd) where the CPU has it; otherwise (and at Simd::Avx2) the 256-bit
// kernel, with AVX-VNNI's vpdpbusd where the CPU has that, else vpmaddubsw; Simd::Scalar the reference. All give the
// same bits.
void matmul_mxfp4_q8_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales,
                          const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

// Whether Simd::Avx512 uses the VNNI kernel on this CPU (AVX-512 F/BW/VL/VNNI).
bool q8_vnni_available();
// Whether the 256-bit kernel uses AVX-VNNI on this CPU; set_q8_avx_vnni(false), or MS_Q8_AVX_VNNI=0 at start, turns it
// off (tests and benchmarks reach the vpmaddubsw kernel that way on CPUs that have it); returns the previous setting.
bool q8_avx_vnni_available();
bool set_q8_avx_vnni(bool on);

// The kernel the int8 paths run at level s on this CPU, in words (for benchmark tables).
const char *q8_kernel_name(Simd s);

}  // namespace ms
