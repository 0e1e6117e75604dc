// Router + top-k + grouping for a decode step (<= 8 tokens) in ONE block of 1,024 threads, with
// MODELSERVE_MOE_ROUTER_BLOCK=1 (off by default: written in session 9 when no GPU could be had, compiled but not yet
// run; moe_router_block_test.cu checks it against the cluster kernel of moe_router.cu, which otherwise serves every
// step). On an H100 the cluster kernel cost 15.6 us per layer of the 20b batch-1 step (left out, the step was that
// much shorter; hack/gpu/ablation.sh), about five times its work: eight blocks, two cluster barriers and a transfer
// into the first block's shared memory on the path from the attention output to the expert matmuls. Here one warp per
// expert row (32 warps) does the dot products, all loads of a row in flight at once, against the normed tokens staged
// in shared memory; the router weights (184 KB at the 20b shape) are pulled into L2 before the wait.
//
// Same arithmetic as the cluster kernel where it matters for agreement between the two: the input norm sums squares
// in rmsnorm.cu's order (threads 0-255) and scales as it does, so xh (the experts' fp16 input) is bitwise the same; the
// logits are summed in another order (one warp per row instead of two halves), a few ulp apart.
#include <cuda_fp16.h>

#include "common/env.h"
#include "cuda/moe/moe_group.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kThreads = 1024, kWarps = kThreads / 32;
constexpr int kTokens = 8;             // tokens per launch (one decode step)
constexpr int kMaxExpertsPerLane = 8;  // up to 256 experts

struct BlockRouterSmem {  // offsets in 4-byte words
  int xn, logits, ids, count, norm_partial, inv_rms, total;
  __host__ __device__ BlockRouterSmem(int nt, int hidden, int n_experts, int k) {
    xn = 0;                                       // [nt][hidden] normed tokens, fp32
    logits = xn + nt * hidden;                    // [kTokens][n_experts]
    ids = logits + kTokens * n_experts;           // [kTokens][k]
    count = ids + kTokens * k;                    // [2 n_experts + 1]
    norm_partial = count + 2 * n_experts + 1;     // [8 warps][kTokens]
    inv_rms = norm_partial + 8 * kTokens;         // [kTokens]
    total = inv_rms + kTokens;
  }
};

template <bool kNorm>
__global__ void __launch_bounds__(kThreads)
    router_topk_block_kernel(const uint16_t *__restrict__ w, const uint16_t *__restrict__ b, const float *__restrict__ x,
                             int nt, int hidden, int n_experts, int k, int *__restrict__ ids, float *__restrict__ wts,
                             __half *__restrict__ xh, int token_tile, GroupOut group, const float *__restrict__ gain,
                             float eps) {
  extern __shared__ __align__(16) float sh[];
  const BlockRouterSmem lay(nt, hidden, n_experts, k);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  {  // Inputs that do not depend on the previous kernel: into L2 now.
    const char *p = reinterpret_cast<const char *>(w);
    for (size_t off = size_t(threadIdx.x) * 128; off < size_t(n_experts) * hidden * 2; off += size_t(kThreads) * 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
    if constexpr (kNorm)
      for (size_t off = size_t(threadIdx.x) * 128; off < size_t(hidden) * 4; off += size_t(kThreads) * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(reinterpret_cast<const char *>(gain) + off));
  }
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  float *xn = sh + lay.xn;
  if constexpr (kNorm) {
    // rmsnorm.cu's order: threads 0-255 each sum the squares of columns thread, thread + 256, ...; each warp adds its
    // lanes (xor butterfly), then warp 0 adds the 8 warps' sums the same way.
    float *ss_part = sh + lay.norm_partial;
    if (warp < 8) {
      float ss[kTokens];
#pragma unroll
      for (int t = 0; t < kTokens; ++t) ss[t] = 0.f;
      for (int i = threadIdx.x; i < hidden; i += 256) {
#pragma unroll
        for (int t = 0; t < kTokens; ++t)
          if (t < nt) {
            const float v = x[size_t(t) * hidden + i];
            ss[t] += v * v;
          }
      }
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        for (int o = 16; o > 0; o >>= 1) ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);
        if (lane == 0) ss_part[warp * kTokens + t] = ss[t];
      }
    }
    __syncthreads();
    if (warp == 0)
      for (int t = 0; t < nt; ++t) {
        float v = lane < 8 ? ss_part[lane * kTokens + t] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) sh[lay.inv_rms + t] = rsqrtf(v / float(hidden) + eps);
      }
    __syncthreads();
  }
  // Stage the (normed) tokens and write their fp16 copy for the expert matmuls, 8 columns per thread and step.
  const int chunks = hidden / 8;
  for (int i = threadIdx.x; i < nt * chunks; i += kThreads) {
    const int t = i / chunks, c = (i - t * chunks) * 8;
    const float4 *src = reinterpret_cast<const float4 *>(x + size_t(t) * hidden + c);
    float4 p = src[0], q = src[1];
    if constexpr (kNorm) {
      const float r = sh[lay.inv_rms + t];
      const float *g = gain + c;
      p = make_float4(p.x * r * g[0], p.y * r * g[1], p.z * r * g[2], p.w * r * g[3]);
      q = make_float4(q.x * r * g[4], q.y * r * g[5], q.z * r * g[6], q.w * r * g[7]);
    }
    reinterpret_cast<float4 *>(xn + size_t(t) * hidden + c)[0] = p;
    reinterpret_cast<float4 *>(xn + size_t(t) * hidden + c)[1] = q;
    const __half2 h[4] = {__floats2half2_rn(p.x, p.y), __floats2half2_rn(p.z, p.w), __floats2half2_rn(q.x, q.y),
                          __floats2half2_rn(q.z, q.w)};
    *reinterpret_cast<uint4 *>(xh + size_t(t) * hidden + c) = *reinterpret_cast<const uint4 *>(h);
  }
  __syncthreads();
  // Logits: warp e takes expert rows e, e + 32, ...; lane l its 16-byte pieces l, l + 32, ... of the row.
  for (int e = warp; e < n_experts; e += kWarps) {
    float acc[kTokens];
#pragma unroll
    for (int t = 0; t < kTokens; ++t) acc[t] = 0.f;
    const uint16_t *wr = w + size_t(e) * hidden;
#pragma unroll 4
    for (int ch = lane; ch < chunks; ch += 32) {
      const uint4 wv = *reinterpret_cast<const uint4 *>(wr + ch * 8);
#pragma unroll
      for (int t = 0; t < kTokens; ++t)
        if (t < nt) {
          const float4 *xp = reinterpret_cast<const float4 *>(xn + size_t(t) * hidden + ch * 8);
          acc[t] += dot_bf16x8(wv, xp[0], xp[1]);
        }
    }
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float v = acc[t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && t < nt) sh[lay.logits + t * n_experts + e] = v + bf16_to_float(b[e]);
    }
  }
  __syncthreads();
  int *sids = reinterpret_cast<int *>(sh + lay.ids);
  if (warp < nt) {  // warp t: token t's top k, softmax over those k (as the cluster kernel)
    const int t = warp;
    float chosen[8];
    int chosen_id[8];
    warp_top_k<kMaxExpertsPerLane>(sh + lay.logits + t * n_experts, n_experts, k, chosen, chosen_id);
    if (lane == 0) {
      float sum = 0.f, ex[8];
      for (int r = 0; r < k; ++r) {
        ex[r] = expf(chosen[r] - chosen[0]);
        sum += ex[r];
      }
      for (int r = 0; r < k; ++r) {
        ids[t * k + r] = chosen_id[r];
        wts[t * k + r] = ex[r] / sum;
        sids[t * k + r] = chosen_id[r];
      }
    }
  }
  __syncthreads();
  int *count = reinterpret_cast<int *>(sh + lay.count);
  group_pairs(sids, nt * k, n_experts, k, token_tile, count, count + n_experts, group);
}

bool block_router_switch() {
  static const bool on = env_switch("MODELSERVE_MOE_ROUTER_BLOCK", false);
  return on;
}

size_t block_router_smem(int nt, int hidden, int n_experts, int k) {
  return size_t(BlockRouterSmem(nt, hidden, n_experts, k).total) * sizeof(float);
}

}  // namespace

// Every validated layer fits (n_experts <= 256 = 32 lanes x kMaxExpertsPerLane).
bool block_router_applies(int n_tokens, const MoeL2Prefetch &l2) {
  return block_router_switch() && n_tokens >= 1 && n_tokens <= kTokens && !l2.any();
}

void prepare_block_router(const MoeLayer &l) {
  const size_t most = block_router_smem(kTokens, l.hidden, l.n_experts, l.top_k);
  for (auto kernel : {router_topk_block_kernel<true>, router_topk_block_kernel<false>})
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(most));
}

void launch_router_block(const MoeLayer &l, const float *x, int n_tokens, int token_tile, const Workspace &w,
                         cudaStream_t stream, const MoeInputNorm &in_norm) {
  const size_t smem = block_router_smem(n_tokens, l.hidden, l.n_experts, l.top_k);
  auto kernel = in_norm.gain ? router_topk_block_kernel<true> : router_topk_block_kernel<false>;
  launch_pdl(kernel, dim3(1), dim3(kThreads), smem, stream, l.router_w, l.router_b, x, n_tokens, l.hidden, l.n_experts,
             l.top_k, w.topk_ids, w.topk_w, reinterpret_cast<__half *>(w.xh), token_tile, group_out(w), in_norm.gain,
             in_norm.eps);
}

}  // namespace ms::cuda::moe
