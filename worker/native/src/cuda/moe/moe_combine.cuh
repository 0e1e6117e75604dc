// The combine step as a block-wide device function: used by the stand-alone combine kernel (moe_combine.cu) and by the
// last block of the decode down kernel (moe_mxfp4_decode.cu, MoeCombineTail), which then saves a launch per layer.
// Both run it with kCombineThreads threads, so the sum of squares of the next norm is reduced in the same order: the
// same bits either way.
#pragma once

#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda::moe {

constexpr int kCombineThreads = 256;

struct CombineArgs {
  const float *dn;       // [slots][hidden]
  const int *slot_of;    // [T][k]
  const float *wts;      // [T][k]
  int hidden, k;
  float *residual;       // [T][hidden], updated in place
  const float *gain;     // next layer's attention norm, or nullptr
  float eps;
  float *normed;         // [T][hidden] RMSNorm(residual) * gain (with gain)
};

// residual[t] += sum_j wts[t][j] * dn[slot_of[t][j]] in order j = 0..k-1 (as the CPU path), then the next norm.
// All kCombineThreads threads of the block must call it.
__device__ inline void combine_token(const CombineArgs &a, int t) {
  __shared__ float partial[kCombineThreads / 32];
  float4 *res = reinterpret_cast<float4 *>(a.residual + size_t(t) * a.hidden);
  for (int c = threadIdx.x; c < a.hidden / 4; c += blockDim.x) {
    float4 r = res[c];
    for (int j = 0; j < a.k; ++j) {
      const float w = a.wts[t * a.k + j];
      const float4 d = __ldcg(reinterpret_cast<const float4 *>(a.dn + size_t(a.slot_of[t * a.k + j]) * a.hidden) + c);
      r.x += w * d.x;
      r.y += w * d.y;
      r.z += w * d.z;
      r.w += w * d.w;
    }
    res[c] = r;
  }
  if (!a.gain) return;
  float ss = 0.f;
  for (int c = threadIdx.x; c < a.hidden / 4; c += blockDim.x) {  // this thread's own writes: visible to it
    const float4 r = res[c];
    ss += r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w;
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < kCombineThreads / 32; ++i) total += partial[i];
  __syncthreads();  // partial may be reused by the next token's call
  const float inv = rsqrtf(total / float(a.hidden) + a.eps);
  float4 *dst = reinterpret_cast<float4 *>(a.normed + size_t(t) * a.hidden);
  for (int c = threadIdx.x; c < a.hidden / 4; c += blockDim.x) {
    const float4 r = res[c];
    const float *g = a.gain + 4 * c;  // scalar reads: no alignment asked of the gain vector
    dst[c] = make_float4(r.x * inv * g[0], r.y * inv * g[1], r.z * inv * g[2], r.w * inv * g[3]);
  }
}

}  // namespace ms::cuda::moe
