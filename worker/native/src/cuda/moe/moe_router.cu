// Router + top-k + softmax over the chosen k, one kernel.
// A cluster of 8 blocks takes up to kRouterTokens tokens: each block computes the logits of E/8 experts (two warps per
// expert row, each half of H, bf16 weights read with 128-bit loads and reused for every token) and writes them into
// the shared memory of the cluster's first block, which then picks, per token, the k largest logits (ties: lower
// expert index, as the CPU path) and normalises them with a softmax over those k only. Spreading the router over
// 8 SMs keeps it short at decode, where a single block would wait on its loads one round trip at a time. When one
// cluster holds every token (decode) it also groups the pairs by expert (moe_group.cuh), saving a launch per layer.
// With an input norm (MoeInputNorm) every block first computes the inverse RMS of its cluster's tokens from their full
// rows, in rmsnorm.cu's order (so every block, and the stand-alone kernel, get the same bits), and reads x * inv * gain
// wherever it read x. With L2 hints (MoeL2Prefetch) the grid has extra clusters that only issue them: the router's own
// blocks stay as short as without.
#include <cooperative_groups.h>

#include <cuda_fp16.h>

#include <cfloat>

#include "cuda/moe/moe_group.cuh"

namespace ms::cuda::moe {
namespace {

namespace cg = cooperative_groups;

constexpr int kRouterTokens = 8;
constexpr int kClusterBlocks = 8;
constexpr int kRouterWarps = 8;
constexpr int kMaxExpertsPerLane = 8;  // up to 256 experts
// Clusters of hint-only blocks next to the router's own when L2 hints are given: 64 blocks x 256 threads, ~14 lines
// each for a 29.5 MB range (the 20b qkv projection), issued from 64 SMs' load units rather than 8.
constexpr int kHintClusters = 8;

struct RouterSmem {  // offsets (in 4-byte words) into the dynamic shared memory
  int logits, partial, ids, count, norm_partial, inv_rms, total;
  __host__ __device__ RouterSmem(int n_experts, int k) {
    const int per_block = (n_experts + kClusterBlocks - 1) / kClusterBlocks;
    logits = 0;
    partial = logits + kRouterTokens * n_experts;
    ids = partial + 2 * per_block * kRouterTokens;
    count = ids + kRouterTokens * k;
    norm_partial = count + 2 * n_experts + 1;           // [kRouterWarps][kRouterTokens] (input norm only)
    inv_rms = norm_partial + kRouterWarps * kRouterTokens;  // [kRouterTokens]
    total = inv_rms + kRouterTokens;
  }
};

// The lines of [r.ptr, r.ptr + r.bytes), `thread` of `n_threads` taking every n_threads-th from its own: op(line
// address, 128-byte aligned; a cudaMalloc'd range starts 256-byte aligned, so no line leaves its allocation).
template <typename Op>
__device__ __forceinline__ void for_lines(const L2Range &r, int thread, int n_threads, Op op) {
  if (!r.bytes) return;
  const uintptr_t first = reinterpret_cast<uintptr_t>(r.ptr) >> 7;
  const uintptr_t last = (reinterpret_cast<uintptr_t>(r.ptr) + r.bytes - 1) >> 7;
  for (uintptr_t line = first + thread; line <= last; line += n_threads) op(line << 7);
}

// Releases first (those lines are where the fetched ones can go), then fetches.
__device__ void issue_l2_hints(const MoeL2Prefetch &h, int thread, int n_threads) {
  if (h.keep)
    for (const L2Range &r : h.release)
      for_lines(r, thread, n_threads,
                [](uintptr_t a) { asm volatile("applypriority.global.L2::evict_normal [%0], 128;" ::"l"(a)); });
  for (const L2Range &r : h.fetch) {
    if (h.keep)
      for_lines(r, thread, n_threads, [](uintptr_t a) { asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(a)); });
    else
      for_lines(r, thread, n_threads,
                [](uintptr_t a) { asm volatile("prefetch.global.L2::evict_normal [%0];" ::"l"(a)); });
  }
}

// (v * inv) * gain per element, as rmsnorm.cu writes its output (the two products in that order: same bits).
__device__ __forceinline__ float4 rms_scaled(const float4 &v, float inv, const float *__restrict__ g) {
  return make_float4(v.x * inv * g[0], v.y * inv * g[1], v.z * inv * g[2], v.w * inv * g[3]);
}

template <bool kFuseGroup, bool kNorm>
__global__ void __cluster_dims__(kClusterBlocks, 1, 1) __launch_bounds__(kRouterWarps * 32)
    router_topk_kernel(const uint16_t *__restrict__ w, const uint16_t *__restrict__ b, const float *__restrict__ x,
                       int n_tokens, int hidden, int n_experts, int k, int *__restrict__ ids, float *__restrict__ wts,
                       __half *__restrict__ xh, int token_tile, GroupOut group, const float *__restrict__ gain,
                       float eps, MoeL2Prefetch hints) {
  if (int(blockIdx.x) >= kClusterBlocks) {  // a hint-only cluster: no cluster barrier, no shared memory
    pdl_trigger();                           // triggering early is always allowed (pdl.cuh); the router blocks gate
    if (blockIdx.y == 0)                     // the next launch anyway, after their own wait
      issue_l2_hints(hints, (blockIdx.x - kClusterBlocks) * blockDim.x + threadIdx.x,
                     (gridDim.x - kClusterBlocks) * blockDim.x);
    pdl_wait();  // a kernel must not complete before its wait returned: completion stays transitive down the chain
    return;
  }
  extern __shared__ float sh[];
  const RouterSmem lay(n_experts, k);
  cg::cluster_group cluster = cg::this_cluster();
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");  // "started"; waited on before writing remotely
  const int rank0 = int(cluster.block_rank());
  {  // The router weights do not depend on the previous kernel: start pulling this block's rows into L2 now.
    const int per = (n_experts + kClusterBlocks - 1) / kClusterBlocks;
    const int e0 = min(n_experts, rank0 * per), e1 = min(n_experts, e0 + per);
    const char *p = reinterpret_cast<const char *>(w + size_t(e0) * hidden);
    for (size_t off = threadIdx.x * 128; off < size_t(e1 - e0) * hidden * 2; off += blockDim.x * 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
    if constexpr (kNorm) {  // and the norm's gain, every block a share of its lines
      const char *g = reinterpret_cast<const char *>(gain);
      for (size_t off = (rank0 * blockDim.x + threadIdx.x) * 128; off < size_t(hidden) * 4;
           off += kClusterBlocks * blockDim.x * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(g + off));
    }
  }
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  const int rank = int(cluster.block_rank());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int t0 = blockIdx.y * kRouterTokens;
  const int nt = min(kRouterTokens, n_tokens - t0);
  float inv[kRouterTokens];  // input norm: 1 / RMS of each of this cluster's tokens
  if constexpr (kNorm) {
    // rmsnorm.cu's order (it also runs 256 threads a row): each thread sums the squares of columns thread,
    // thread + 256, ... in turn, then the warp adds its lanes (xor butterfly), then warp 0 adds the 8 warps' sums the
    // same way. Every block of every cluster gets the same bits as the stand-alone kernel.
    static_assert(kRouterWarps == 8, "the sum of squares follows rmsnorm.cu's 256-thread reduction");
    float *ss_part = sh + lay.norm_partial, *inv_rms = sh + lay.inv_rms;
    float ss[kRouterTokens];
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) ss[t] = 0.f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
#pragma unroll
      for (int t = 0; t < kRouterTokens; ++t)
        if (t < nt) {
          const float v = x[size_t(t0 + t) * hidden + i];
          ss[t] += v * v;
        }
    }
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) {
      for (int o = 16; o > 0; o >>= 1) ss[t] += __shfl_xor_sync(0xffffffffu, ss[t], o);
      if (lane == 0) ss_part[warp * kRouterTokens + t] = ss[t];
    }
    __syncthreads();
    if (warp == 0)
      for (int t = 0; t < nt; ++t) {
        float v = lane < kRouterWarps ? ss_part[lane * kRouterTokens + t] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) inv_rms[t] = rsqrtf(v / float(hidden) + eps);
      }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) inv[t] = t < nt ? inv_rms[t] : 0.f;
  }
  // The expert matmuls read x in fp16: convert this cluster's tokens once here, 1/8 of the columns per block.
  const int own = (hidden / 8 - rank + kClusterBlocks - 1) / kClusterBlocks;  // 8-column chunks rank, rank + 8, ...
  for (int i = threadIdx.x; i < nt * own; i += blockDim.x) {
    const int t = i / own, c = (rank + (i - t * own) * kClusterBlocks) * 8;
    const float4 *src = reinterpret_cast<const float4 *>(x + size_t(t0 + t) * hidden + c);
    float4 p = src[0], q = src[1];
    if constexpr (kNorm) {
      const float r = sh[lay.inv_rms + t];
      p = rms_scaled(p, r, gain + c);
      q = rms_scaled(q, r, gain + c + 4);
    }
    const __half2 h[4] = {__floats2half2_rn(p.x, p.y), __floats2half2_rn(p.z, p.w), __floats2half2_rn(q.x, q.y),
                          __floats2half2_rn(q.z, q.w)};
    *reinterpret_cast<uint4 *>(xh + size_t(t0 + t) * hidden + c) = *reinterpret_cast<const uint4 *>(h);
  }
  const int per_block = (n_experts + kClusterBlocks - 1) / kClusterBlocks;
  const int e_begin = min(n_experts, rank * per_block), n_e = min(n_experts, e_begin + per_block) - e_begin;
  float *partial = sh + lay.partial;  // [2 * per_block][kRouterTokens]
  const int n_chunks = hidden / 8, half_chunks = (n_chunks + 1) / 2;

  for (int item = warp; item < 2 * n_e; item += kRouterWarps) {
    const int e = e_begin + item / 2, c_begin = (item & 1) * half_chunks;
    const int c_end = min(n_chunks, c_begin + half_chunks);
    float acc[kRouterTokens];
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) acc[t] = 0.f;
    const uint16_t *wr = w + size_t(e) * hidden;
#pragma unroll 6
    for (int ch = c_begin + lane; ch < c_end; ch += 32) {
      const int c = ch * 8;
      const uint4 wv = *reinterpret_cast<const uint4 *>(wr + c);
      float g[8];  // input norm: this chunk's gain, shared by the tokens (scalar loads: no alignment asked of it)
      if constexpr (kNorm) {
#pragma unroll
        for (int j = 0; j < 8; ++j) g[j] = __ldg(gain + c + j);
      }
#pragma unroll
      for (int t = 0; t < kRouterTokens; ++t) {
        if (t < nt) {
          const float4 *xp = reinterpret_cast<const float4 *>(x + size_t(t0 + t) * hidden + c);
          if constexpr (kNorm)
            acc[t] += dot_bf16x8(wv, rms_scaled(xp[0], inv[t], g), rms_scaled(xp[1], inv[t], g + 4));
          else
            acc[t] += dot_bf16x8(wv, xp[0], xp[1]);
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) {
      float v = acc[t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[item * kRouterTokens + t] = v;
    }
  }
  __syncthreads();
  asm volatile("barrier.cluster.wait;" ::: "memory");
  float *logits0 = cluster.map_shared_rank(sh + lay.logits, 0);  // [kRouterTokens][n_experts] in the first block
  for (int i = threadIdx.x; i < n_e * nt; i += blockDim.x) {
    const int el = i / nt, t = i - el * nt;
    logits0[t * n_experts + e_begin + el] = partial[(2 * el) * kRouterTokens + t] +
                                            partial[(2 * el + 1) * kRouterTokens + t] +
                                            bf16_to_float(b[e_begin + el]);
  }
  cluster.sync();
  if (rank != 0) return;

  int *sids = reinterpret_cast<int *>(sh + lay.ids);
  for (int t = warp; t < nt; t += kRouterWarps) {
    const float *lg = sh + lay.logits + t * n_experts;
    float chosen[8];
    int chosen_id[8];
    warp_top_k<kMaxExpertsPerLane>(lg, n_experts, k, chosen, chosen_id);
    if (lane == 0) {
      float sum = 0.f, ex[8];
      for (int r = 0; r < k; ++r) {
        ex[r] = expf(chosen[r] - chosen[0]);
        sum += ex[r];
      }
      const int tok = t0 + t;
      for (int r = 0; r < k; ++r) {
        ids[tok * k + r] = chosen_id[r];
        wts[tok * k + r] = ex[r] / sum;
        sids[t * k + r] = chosen_id[r];
      }
    }
  }
  if constexpr (kFuseGroup) {
    __syncthreads();
    int *count = reinterpret_cast<int *>(sh + lay.count);
    group_pairs(sids, n_tokens * k, n_experts, k, token_tile, count, count + n_experts, group);
  }
}

}  // namespace

bool launch_router_topk(const MoeLayer &l, const float *x, int n_tokens, int token_tile, const Workspace &w,
                        cudaStream_t stream, const MoeInputNorm &in_norm, const MoeL2Prefetch &l2) {
  const int token_blocks = (n_tokens + kRouterTokens - 1) / kRouterTokens;
  const size_t smem = size_t(RouterSmem(l.n_experts, l.top_k).total) * sizeof(float);
  const dim3 grid(kClusterBlocks * (1 + (l2.any() ? kHintClusters : 0)), token_blocks);
  const bool fuse_group = token_blocks == 1, norm = in_norm.gain != nullptr;
  auto kernel = fuse_group ? (norm ? router_topk_kernel<true, true> : router_topk_kernel<true, false>)
                           : (norm ? router_topk_kernel<false, true> : router_topk_kernel<false, false>);
  launch_pdl(kernel, grid, dim3(kRouterWarps * 32), smem, stream, l.router_w, l.router_b, x, n_tokens, l.hidden,
             l.n_experts, l.top_k, w.topk_ids, w.topk_w, reinterpret_cast<__half *>(w.xh), token_tile,
             fuse_group ? group_out(w) : GroupOut{}, in_norm.gain, in_norm.eps, l2);
  return fuse_group;
}

}  // namespace ms::cuda::moe
