// Matrix products with GGUF weights on the CUDA backend: y[T x N] (fp32) = x[T x K] (fp32) times W^T, W being N rows
// of K values in the GGUF on-disk layout (exactly the tensor's bytes: Q4_0, Q4_1, Q8_0 blocks as in
// cpu/quant_types.h, or F32 / F16 / BF16 values). The weights are dequantized in registers (GEMV) or into shared
// memory (tiled) and multiply the fp32 activations with fp32 accumulation: the activations are NOT quantized to int8
// the way the CPU's quantized kernels do (quant_matmul.h), so the result is the exact product of the dequantized
// weights and x up to fp32 summation order (see docs/engine-cuda.md, "GGUF tensor types on CUDA").
//
// Requirements (checked, MS_ERR_INVALID_ARGUMENT otherwise): K % 32 == 0, w and x 16-byte aligned, y 4-byte aligned.
// All launchers are asynchronous on the stream, allocate nothing and never synchronise (graph-capturable; launch
// shapes depend only on T, K, N and the path).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/quant_matmul.h"  // ms::WeightType

namespace ms::cuda {

// Gemv: one to eight warps per weight row, up to 8 tokens per pass over the weights (decode). Tiled: 64 tokens x 64
// rows per block, a 32-wide K step of dequantized weights in shared memory reused by all tokens (prefill).
// Auto: Gemv for T <= 8, else Tiled; MODELSERVE_CUDA_GGUF_PATH=gemv|tiled (read once) forces one path for Auto.
enum class GgufPath { Auto, Gemv, Tiled };

struct GgufMatmulArgs {
    const float *x = nullptr;   // [T][K]
    int T = 0, K = 0;
    const uint8_t *w = nullptr;  // N rows of weight_row_bytes(type, K) bytes
    int N = 0;
    float *y = nullptr;  // [T][N]
    bool accumulate = false;  // y += product (else y = product)
};

// warps_per_row: Gemv only; 1, 2, 4 or 8, or 0 = chosen from N and K (more warps per row when N is small).
void gguf_matmul(WeightType type, const GgufMatmulArgs &a, GgufPath path, cudaStream_t s, int warps_per_row = 0);

// The per-type launchers gguf_matmul dispatches to (one file each: matmul_q4_0.cu, matmul_q4_1.cu, matmul_q8_0.cu,
// matmul_float.cu). No argument checks: call gguf_matmul.
void gguf_gemv_q4_0(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_q4_0(const GgufMatmulArgs &a, cudaStream_t s);
void gguf_gemv_q4_1(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_q4_1(const GgufMatmulArgs &a, cudaStream_t s);
void gguf_gemv_q8_0(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_q8_0(const GgufMatmulArgs &a, cudaStream_t s);
void gguf_gemv_f32(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_f32(const GgufMatmulArgs &a, cudaStream_t s);
void gguf_gemv_f16(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_f16(const GgufMatmulArgs &a, cudaStream_t s);
void gguf_gemv_bf16(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s);
void gguf_tiled_bf16(const GgufMatmulArgs &a, cudaStream_t s);

}  // namespace ms::cuda
