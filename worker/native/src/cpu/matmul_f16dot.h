// Matrix kernels on fp16 activations for CPUs with AVX512-FP16, for steps of many tokens. vfmadd231ph does 32
// multiply-adds per instruction against vfmadd231ps's 16, at about the same instruction rate on the Sapphire-Rapids-class
// Xeons we measured (tools/bench_simd_peak: 2.2-2.4x the FLOP rate), so the compute-bound batched steps can run up to
// twice as fast as on the fp32 kernels. Results are fp32.
//
// Range and precision. fp16 has 11 significant bits but only reaches 65504, so nothing enters an fp16 product
// unscaled:
// - each activation row (one token) is scaled by a power of two 2^-e so that its largest |x| lies in [16, 32), then
//   rounded to fp16 (f32_to_f16_row_scaled; round to nearest even); 2^e is kept per token and multiplied back in fp32;
// - dense bf16 weights are scaled per row by a power of two so that the row's largest |w| lies in [16, 32) (exactly:
//   a bf16 has 8 significant bits); weights below 2^-18 of the row's largest become 0;
// - MXFP4 weights: each E2M1 value (at most 6) times 2^(2 + block exponent - the row's largest block exponent), so the
//   row's largest block holds values up to 24; exact down to 2^-24 (fp16 subnormals), smaller ones round to 0.
// Lanes run along k: lane j of a 32-wide vector adds the products of elements k = j mod 32 in fp16, at most 32 of
// them: every product is below 32 * 32 = 1024, a lane's sum below 32768 (no overflow). Every 32 vectors (1024
// elements) the lanes are widened (vcvtph2ps) and added into fp32 partial sums. A dot product therefore carries,
// beyond the input rounding (2^-11 relative per activation), at most the fp16 summation error of 32-term sums:
// |error| <= 33 * 2^-11 * sum_k |x_k w_k| in the worst case (32 additions + 1 product rounding; the tests use this),
// typically far less (random rounding errors grow like the square root).
// (Adding lanes j and j + 16 in fp16 before widening measured ~3 % faster in the kernel, but its extra rounding
// flipped near-tied router choices in the transformers test vectors: kept out.)
//
// Non-finite activations cannot be scaled: f32_to_f16_row_scaled returns false and the caller runs the fp32 kernels
// for that step instead, which propagate inf/NaN the usual way (the fp16 path never produces inf on its own).
//
// Layouts are those of matmul_bf16_bf16x_rows / matmul_mxfp4_bf16x_rows (cpu/matmul_bf16dot.h): activations in
// natural element order, x_scale[t] the factor of token t's row. Each (row, token) result is accumulated in the same
// order whatever n_tok and the row range are, so batching never changes a token's result.
//
// `s` selects the implementation: Simd::Avx512 on a CPU with AVX512-FP16 runs vfmadd231ph; anything else runs the
// scalar reference (the same fp16 inputs, products summed in double).
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

bool f16_dot_supported();  // AVX-512 F/BW/VL/DQ + FP16 + VBMI (every FP16 CPU has it), checked at run time

// IEEE binary16 <-> fp32 (round to nearest even, subnormals kept), portable.
uint16_t f32_to_f16(float f);
float f16_to_f32(uint16_t h);
// n values rounded to fp16 as they are (no scaling: values beyond 65504 become inf). vcvtps2ph where AVX-512 runs.
void f32_to_f16_n(Simd s, const float *in, uint16_t *out, int64_t n);
// One activation row scaled as described above and rounded to fp16; *scale = the factor to multiply results by
// (a power of two; 1 for an all-zero row). Returns false, leaving out unspecified, if any value is inf or NaN.
bool f32_to_f16_row_scaled(Simd s, const float *in, int64_t n, uint16_t *out, float *scale);

// y[t * ldy + r] = bias[r] + sum_k x_t[k] * w[r * K + k], x_t = the fp16 row x + t * ldx times x_scale[t]
// (w: bf16 weights [rows][K], any K >= 1).
void matmul_bf16_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx, const uint16_t *w,
                           const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

// Dense bf16 weights converted once into the fp16 form above, for a model that multiplies them on every step:
// converting on each call (matmul_bf16_f16x_rows) cost ~25 % of that kernel at 32 tokens. Writes rows r0..r1: row r
// at out + r * f16_dense_stride(K) (K rounded up to 32, plus 32 zeros: rows a power of two apart would share L1
// sets), so a matrix takes rows * f16_dense_stride(K) fp16, a little over its bf16 size; factor[r] = row r's
// power-of-two factor. matmul_f16w_f16x_rows on them gives bit for bit what matmul_bf16_f16x_rows gives on w.
int64_t f16_dense_stride(int K);
void f16_dense_convert(Simd s, const uint16_t *w, int K, int r0, int r1, uint16_t *out, float *factor);
void matmul_f16w_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx, const uint16_t *w16,
                           const float *factor, const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

// matmul_bf16_f16x_rows with MXFP4 weights (blocks/scales as in matmul_mxfp4.h; K % 32 == 0), x in natural element
// order. Calls of up to 12 tokens decode the blocks inside the register tile, larger ones into an L1 scratch shared by
// the token tiles; both give the same bits.
void matmul_mxfp4_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx,
                            const uint8_t *blocks, const uint8_t *scales, const float *bias, int K, int r0, int r1,
                            float *y, int64_t ldy);

}  // namespace ms
