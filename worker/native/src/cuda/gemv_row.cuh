// One output row of a bf16 GEMV for NT tokens, one warp: the inner loop of the decode GEMV (matmul_bf16.cu), kept
// apart so that a kernel fusing a GEMV with its epilogue gets the same bits.
#pragma once

#include <cstdint>

#include "cuda/pdl.cuh"

namespace ms::cuda {

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

// The row's weights do not depend on the previous kernel: pull them into L2 before its wait.
__device__ __forceinline__ void gemv_row_prefetch(const uint16_t *row, int K, int lane) {
    const char *p = reinterpret_cast<const char *>(row);
    for (int off = lane * 128; off < K * 2; off += 32 * 128) prefetch_l2(p + off);
}

// acc[t] = sum_k x[t][k] * row[k] (K a multiple of 8, 16-byte aligned rows), summed over the warp: every lane returns
// the totals. Each lane takes 16-byte pieces lane, lane + 32, ...; the lanes' sums are added by an xor butterfly.
template <int NT>
__device__ __forceinline__ void gemv_row_dot(const float *__restrict__ x, int K, const uint16_t *__restrict__ row,
                                             int lane, float acc[NT]) {
    const uint4 *wr = reinterpret_cast<const uint4 *>(row);
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    const int K8 = K / 8;
#pragma unroll 4
    for (int k8 = lane; k8 < K8; k8 += 32) {
        const uint4 wv = __ldg(wr + k8);
        const float w0 = bf16_lo(wv.x), w1 = bf16_hi(wv.x), w2 = bf16_lo(wv.y), w3 = bf16_hi(wv.y);
        const float w4 = bf16_lo(wv.z), w5 = bf16_hi(wv.z), w6 = bf16_lo(wv.w), w7 = bf16_hi(wv.w);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float4 a = __ldg(reinterpret_cast<const float4 *>(x + (long long)t * K) + 2 * k8);
            const float4 b = __ldg(reinterpret_cast<const float4 *>(x + (long long)t * K) + 2 * k8 + 1);
            acc[t] += a.x * w0 + a.y * w1 + a.z * w2 + a.w * w3 + b.x * w4 + b.y * w5 + b.z * w6 + b.w * w7;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t)
        for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
}

}  // namespace ms::cuda
