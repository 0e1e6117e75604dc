// Matrix kernels on bf16 activations for CPUs with AVX512-BF16 (vdpbf16ps: 32 bf16 products summed pairwise into 16
// fp32 lanes per instruction). With them the model rounds each step's matmul inputs to bf16 once (f32_to_bf16_n,
// round to nearest even) and runs its projections, experts and unembedding on bf16 x bf16 products. The weights are
// unchanged: dense bf16 rows are used as they are, MXFP4 blocks decode exactly to bf16 (an E2M1 value times a power
// of two has at most 2 significant bits).
//
// OFF by default (MS_SIMD=avx512bf16 turns it on): on the Sapphire-Rapids-class Xeons we measured, vdpbf16ps zmm
// retires at about half the fp32 FLOP rate of vfmadd231ps zmm (tools/bench_simd_peak: ~60 vs ~130 GFLOP/s per core),
// so it does not speed up the compute-bound batched steps there (docs/benchmarks/engine.md has the numbers). It is
// kept, tested, for CPUs whose vdpbf16ps runs at full rate (e.g. AMD Zen 4) and as the base for an AMX path.
//
// Results differ from the fp32-activation kernels only by that rounding: per element |x - bf16(x)| <= 2^-8 |x|, so a
// dot product moves by at most 2^-8 * sum_k |x_k w_k| (plus fp32 summation-order noise).
//
// Layouts are those of matmul_bf16_rows / matmul_mxfp4_rows, except that MXFP4 activations stay in natural element
// order (vdpbf16ps pairs elements 2j and 2j+1, exactly the two nibbles of byte j). Every (row, token) result is
// accumulated in the same order whatever n_tok and the row range are, so batching never changes a token's result.
//
// `s` selects the implementation: Simd::Avx512 on a CPU with AVX512-BF16 runs vdpbf16ps; anything else runs the
// scalar reference (fp32 products of the same bf16 values, summed in k order).
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

bool bf16_dot_supported();  // AVX-512 F/BW/VL/DQ + BF16
// Supported and asked for with MS_SIMD=avx512bf16. Read on every call (the model reads it once when it loads).
bool bf16_dot_enabled();

// y[t * ldy + r] = bias[r] + sum_k x[t * ldx + k] * w[r * K + k]   (x: bf16 activations, w: bf16 weights [rows][K])
void matmul_bf16_bf16x_rows(Simd s, const uint16_t *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias,
                            int K, int r0, int r1, float *y, int64_t ldy);

// The same with MXFP4 weights (blocks/scales as in matmul_mxfp4.h; K % 32 == 0), x in natural element order.
void matmul_mxfp4_bf16x_rows(Simd s, const uint16_t *x, int n_tok, int64_t ldx, const uint8_t *blocks,
                             const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y, int64_t ldy);

}  // namespace ms
