// Matrix-vector and small matrix-matrix products with GGUF weights, CPU. Quantized weights (Q4_0, Q4_1, Q8_0) meet
// activations quantized to int8 per 32-block (quantize_rows_q8), so the inner loop is an integer dot product (AVX-512
// VNNI vpdpbusd where the CPU has it, AVX2 maddubs otherwise) and one float multiply-add per block:
//   Q4_0 · Q8: d_w d_a (sum q_w a - 8 sum a)        Q4_1 · Q8: d_w d_a sum q_w a + m_w s_a
//   Q8_0 · Q8: d_w d_a sum q_w a
// Float weights (F32, F16, BF16) multiply the fp32 activations directly. Every kernel has a scalar reference (used
// for Simd::Scalar and by the tests as the ground truth).
#pragma once

#include <cstdint>

#include "cpu/quant_types.h"
#include "cpu/simd.h"

namespace ms {

enum class WeightType { F32, F16, BF16, Q4_0, Q4_1, Q8_0 };
const char *weight_type_name(WeightType t);
bool weight_type_quantized(WeightType t);
int64_t weight_row_bytes(WeightType t, int K);  // bytes of one row of K elements (K % 32 == 0 when quantized)

// n rows of K fp32 activations quantized per 32-block: row t has qs[t*K ...], d/s/sum[t*K/32 ...].
struct Q8Rows {
    int8_t *qs = nullptr;
    float *d = nullptr;
    float *s = nullptr;
    int32_t *sum = nullptr;
    int K = 0;
};

// Rows [t0, t1) of x (row stride ldx) into q (K % 32 == 0).
void quantize_rows_q8(Simd s, const float *x, int64_t ldx, int t0, int t1, const Q8Rows &q);

// One weight row of K elements to fp32 (embedding lookup, tests).
void dequantize_row(WeightType t, const uint8_t *row, int K, float *out);

// y[t * ldy + r] = sum_k W[r][k] * x[t][k] for t < n_tok and r0 <= r < r1; W's rows are weight_row_bytes apart.
// Quantized W reads `xq`; float W reads `x` (row stride ldx). The other activation pointer may be null.
void matmul_rows(Simd s, WeightType t, const uint8_t *w, int K, const float *x, int64_t ldx, const Q8Rows *xq,
                 int n_tok, int r0, int r1, float *y, int64_t ldy);

// Whether this CPU has what the AVX-512 VNNI int8 kernels need.
bool quant_vnni_available();
// Whether the Q4_0/Q4_1/Q8_0 matmuls at Simd::Avx512 use the AVX-512 VNNI kernels (on a CPU that has them) instead of
// the AVX2 ones. Off by default: on the 2-core Xeon VM (2026-12-07) the AVX2 kernel's register tiles ran SmolLM2
// 1.3x faster in prefill and 1.6x in decode than the VNNI kernel (docs/benchmarks/slm.md). MS_QUANT_VNNI=1 turns them
// on (read once, validated by quant_kernel_vnni(), which model loading calls); tests switch with set_quant_kernel_vnni.
bool quant_kernel_vnni();
void set_quant_kernel_vnni(bool on);
// Whether the 4-bit kernels also use AVX-512 VBMI byte permutes to unpack nibbles (MS_QUANT_NO_VBMI=1 turns it off).
bool quant_vbmi_available();

}  // namespace ms
