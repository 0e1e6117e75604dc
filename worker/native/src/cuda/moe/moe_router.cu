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
// Staged (MODELSERVE_MOE_ROUTER_STAGED=1, hidden <= 3072): at decode the router sits on the step's critical path with
// the DRAM idle, so its length is its chain of dependent memory round trips. The staged variant shortens the chain:
// before the wait on the previous kernel (which does not write them) each warp loads its first four expert row halves
// into registers (every row up to 128 experts) and the block copies the norm's gain into shared memory; after the
// wait the block copies its tokens' x into shared memory with every load in flight at once, and the norm, the fp16
// copy and the dot products read x from there. Same arithmetic in the same order: its outputs are bitwise those of the
// global-memory variant.
#include <cooperative_groups.h>

#include <cuda_fp16.h>

#include <cfloat>
#include <mutex>

#include "common/env.h"
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
// The staged variant: x of up to kRouterTokens tokens and the gain in shared memory (8 x 3072 + 3072 floats = 108 KB
// at most), and one expert row half of up to 3072 / 2 columns in registers (6 chunks of 8 bf16 per lane).
constexpr int kStagedMaxHidden = 3072;
constexpr int kStagedChunks = (kStagedMaxHidden / 8 / 2 + 31) / 32;
// Row halves per warp loaded before the wait: 4 covers 128 experts (gpt-oss-120b: 16 per block, 32 halves, 8 warps).
constexpr int kStagedItems = 4;

struct RouterSmem {  // offsets (in 4-byte words) into the dynamic shared memory
  int logits, partial, ids, count, norm_partial, inv_rms, gain, x, total;
  // staged_tokens: rows of x the staged variant keeps (0: the global-memory variant, which keeps none).
  __host__ __device__ RouterSmem(int n_experts, int k, int hidden = 0, int staged_tokens = 0) {
    const int per_block = (n_experts + kClusterBlocks - 1) / kClusterBlocks;
    logits = 0;
    partial = logits + kRouterTokens * n_experts;
    ids = partial + 2 * per_block * kRouterTokens;
    count = ids + kRouterTokens * k;
    norm_partial = count + 2 * n_experts + 1;           // [kRouterWarps][kRouterTokens] (input norm only)
    inv_rms = norm_partial + kRouterWarps * kRouterTokens;  // [kRouterTokens]
    gain = (inv_rms + kRouterTokens + 3) / 4 * 4;       // [hidden], 16-byte aligned (staged only)
    x = gain + (staged_tokens ? hidden : 0);            // [staged_tokens][hidden] (staged only)
    total = x + staged_tokens * hidden;
  }
};

// The staged variant serves a launch when every row fits it (MODELSERVE_MOE_ROUTER_STAGED=1 asks for it).
bool staged_switch() {
  static const bool on = env_switch("MODELSERVE_MOE_ROUTER_STAGED", false);
  return on;
}
bool staged_fits(int hidden) { return hidden <= kStagedMaxHidden; }

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

// One warp's share of an expert row half for the staged variant: chunk c_begin + lane + 32 j (8 bf16 each) into wv[j].
__device__ __forceinline__ void load_row_half(const uint16_t *__restrict__ w, int e, int hidden, int c_begin, int c_end,
                                              int lane, uint4 (&wv)[kStagedChunks]) {
  const uint16_t *wr = w + size_t(e) * hidden;
#pragma unroll
  for (int j = 0; j < kStagedChunks; ++j) {
    const int ch = c_begin + lane + 32 * j;
    if (ch < c_end) wv[j] = *reinterpret_cast<const uint4 *>(wr + ch * 8);
  }
}

template <bool kFuseGroup, bool kNorm, bool kStaged>
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
  extern __shared__ __align__(16) float sh[];
  const RouterSmem lay(n_experts, k, hidden, kStaged ? min(kRouterTokens, n_tokens) : 0);
  cg::cluster_group cluster = cg::this_cluster();
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");  // "started"; waited on before writing remotely
  const int rank = int(cluster.block_rank());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int per_block = (n_experts + kClusterBlocks - 1) / kClusterBlocks;
  const int e_begin = min(n_experts, rank * per_block), n_e = min(n_experts, e_begin + per_block) - e_begin;
  const int n_chunks = hidden / 8, half_chunks = (n_chunks + 1) / 2;
  // Row half `item` (expert e_begin + item / 2, half item & 1) covers chunks [c_begin, c_end) of 8 columns.
  auto half_begin = [&](int item) { return (item & 1) * half_chunks; };
  auto half_end = [&](int item) { return min(n_chunks, half_begin(item) + half_chunks); };
  {  // The router weights do not depend on the previous kernel: start pulling this block's rows into L2 now.
    const char *p = reinterpret_cast<const char *>(w + size_t(e_begin) * hidden);
    for (size_t off = threadIdx.x * 128; off < size_t(n_e) * hidden * 2; off += blockDim.x * 128)
      asm volatile("prefetch.global.L2 [%0];" ::"l"(p + off));
    if constexpr (kNorm && !kStaged) {  // and the norm's gain, every block a share of its lines
      const char *g = reinterpret_cast<const char *>(gain);
      for (size_t off = (rank * blockDim.x + threadIdx.x) * 128; off < size_t(hidden) * 4;
           off += kClusterBlocks * blockDim.x * 128)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(g + off));
    }
  }
  // Staged: the warp's first kStagedItems row halves into registers, the gain into shared memory, before the wait.
  uint4 w_pre[kStaged ? kStagedItems : 1][kStaged ? kStagedChunks : 1];
  if constexpr (kStaged) {
#pragma unroll
    for (int j = 0; j < kStagedItems; ++j) {
      const int item = warp + j * kRouterWarps;
      if (item < 2 * n_e) load_row_half(w, e_begin + item / 2, hidden, half_begin(item), half_end(item), lane, w_pre[j]);
    }
    if constexpr (kNorm)
      for (int i = threadIdx.x; i < hidden; i += blockDim.x) sh[lay.gain + i] = __ldg(gain + i);
  }
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();
  const int t0 = blockIdx.y * kRouterTokens;
  const int nt = min(kRouterTokens, n_tokens - t0);
  if constexpr (kStaged) {  // this cluster's rows of x into shared memory, up to 8 16-byte loads per thread in flight
    const int n4 = nt * hidden / 4;
    const float4 *src = reinterpret_cast<const float4 *>(x + size_t(t0) * hidden);
    float4 *dst = reinterpret_cast<float4 *>(sh + lay.x);
    for (int i0 = threadIdx.x; i0 < n4; i0 += 8 * blockDim.x) {
      float4 v[8];
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (i0 + j * int(blockDim.x) < n4) v[j] = src[i0 + j * blockDim.x];
#pragma unroll
      for (int j = 0; j < 8; ++j)
        if (i0 + j * int(blockDim.x) < n4) dst[i0 + j * blockDim.x] = v[j];
    }
    __syncthreads();
  }
  // Where this block reads its tokens' x (row t at xr + t * hidden) and the gain.
  const float *xr = kStaged ? sh + lay.x : x + size_t(t0) * hidden;
  const float *gr = kStaged ? sh + lay.gain : gain;
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
          const float v = xr[size_t(t) * hidden + i];
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
    const float4 *src = reinterpret_cast<const float4 *>(xr + size_t(t) * hidden + c);
    float4 p = src[0], q = src[1];
    if constexpr (kNorm) {
      const float r = sh[lay.inv_rms + t];
      p = rms_scaled(p, r, gr + c);
      q = rms_scaled(q, r, gr + c + 4);
    }
    const __half2 h[4] = {__floats2half2_rn(p.x, p.y), __floats2half2_rn(p.z, p.w), __floats2half2_rn(q.x, q.y),
                          __floats2half2_rn(q.z, q.w)};
    *reinterpret_cast<uint4 *>(xh + size_t(t0 + t) * hidden + c) = *reinterpret_cast<const uint4 *>(h);
  }
  float *partial = sh + lay.partial;  // [2 * per_block][kRouterTokens]

  // One chunk (its 8 bf16 weights wv, column chunk ch) into every token's sum.
  auto add_chunk = [&](float (&acc)[kRouterTokens], const uint4 &wv, int ch) {
    const int c = ch * 8;
    float g[8];  // input norm: this chunk's gain, shared by the tokens (scalar loads: no alignment asked of it)
    if constexpr (kNorm) {
#pragma unroll
      for (int j = 0; j < 8; ++j) g[j] = kStaged ? gr[c + j] : __ldg(gain + c + j);
    }
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) {
      if (t < nt) {
        const float4 *xp = reinterpret_cast<const float4 *>(xr + size_t(t) * hidden + c);
        if constexpr (kNorm)
          acc[t] += dot_bf16x8(wv, rms_scaled(xp[0], inv[t], g), rms_scaled(xp[1], inv[t], g + 4));
        else
          acc[t] += dot_bf16x8(wv, xp[0], xp[1]);
      }
    }
  };
  // The lanes' sums of row half `item` into partial[item][t].
  auto store_item = [&](int item, float (&acc)[kRouterTokens]) {
#pragma unroll
    for (int t = 0; t < kRouterTokens; ++t) {
      float v = acc[t];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) partial[item * kRouterTokens + t] = v;
    }
  };
  if constexpr (kStaged) {
    // A row half whose chunks are in registers (lane's chunk c_begin + lane + 32 j in wv[j]).
    auto dot_staged = [&](int item, const uint4 (&wv)[kStagedChunks]) {
      float acc[kRouterTokens] = {};
#pragma unroll
      for (int j = 0; j < kStagedChunks; ++j)
        if (half_begin(item) + lane + 32 * j < half_end(item)) add_chunk(acc, wv[j], half_begin(item) + lane + 32 * j);
      store_item(item, acc);
    };
#pragma unroll
    for (int j = 0; j < kStagedItems; ++j)  // loaded before the wait (unrolled: w_pre stays in registers)
      if (warp + j * kRouterWarps < 2 * n_e) dot_staged(warp + j * kRouterWarps, w_pre[j]);
    for (int item = warp + kStagedItems * kRouterWarps; item < 2 * n_e; item += kRouterWarps) {
      uint4 wv[kStagedChunks];
      load_row_half(w, e_begin + item / 2, hidden, half_begin(item), half_end(item), lane, wv);
      dot_staged(item, wv);
    }
  } else {
    for (int item = warp; item < 2 * n_e; item += kRouterWarps) {
      const uint16_t *wr = w + size_t(e_begin + item / 2) * hidden;
      float acc[kRouterTokens] = {};
#pragma unroll 6
      for (int ch = half_begin(item) + lane; ch < half_end(item); ch += 32)
        add_chunk(acc, *reinterpret_cast<const uint4 *>(wr + ch * 8), ch);
      store_item(item, acc);
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

template <bool kStaged>
auto router_kernel(bool fuse_group, bool norm) {
  return fuse_group ? (norm ? router_topk_kernel<true, true, kStaged> : router_topk_kernel<true, false, kStaged>)
                    : (norm ? router_topk_kernel<false, true, kStaged> : router_topk_kernel<false, false, kStaged>);
}

// The most dynamic shared memory the staged variant asks for (256 experts, top-8, 8 rows of 3072).
size_t staged_smem_max() { return size_t(RouterSmem(256, 8, kStagedMaxHidden, kRouterTokens).total) * sizeof(float); }

}  // namespace

void prepare_router() {  // past 48 KB a kernel must opt in (8 staged rows of 2880 are 101 KB)
  static std::once_flag once;
  std::call_once(once, [] {
    for (const bool fuse : {false, true})
      for (const bool norm : {false, true})
        cudaFuncSetAttribute(router_kernel<true>(fuse, norm), cudaFuncAttributeMaxDynamicSharedMemorySize,
                             int(staged_smem_max()));
  });
}

bool launch_router_topk(const MoeLayer &l, const float *x, int n_tokens, int token_tile, const Workspace &w,
                        cudaStream_t stream, const MoeInputNorm &in_norm, const MoeL2Prefetch &l2,
                        RouterVariant variant) {
  const bool staged = (variant == RouterVariant::kStaged || (variant == RouterVariant::kDefault && staged_switch())) &&
                      staged_fits(l.hidden);
  const int token_blocks = (n_tokens + kRouterTokens - 1) / kRouterTokens;
  const int staged_rows = staged ? std::min(kRouterTokens, n_tokens) : 0;
  const size_t smem = size_t(RouterSmem(l.n_experts, l.top_k, l.hidden, staged_rows).total) * sizeof(float);
  const dim3 grid(kClusterBlocks * (1 + (l2.any() ? kHintClusters : 0)), token_blocks);
  const bool fuse_group = token_blocks == 1, norm = in_norm.gain != nullptr;
  auto kernel = staged ? router_kernel<true>(fuse_group, norm) : router_kernel<false>(fuse_group, norm);
  launch_pdl(kernel, grid, dim3(kRouterWarps * 32), smem, stream, l.router_w, l.router_b, x, n_tokens, l.hidden,
             l.n_experts, l.top_k, w.topk_ids, w.topk_w, reinterpret_cast<__half *>(w.xh), token_tile,
             fuse_group ? group_out(w) : GroupOut{}, in_norm.gain, in_norm.eps, l2);
  return fuse_group;
}

}  // namespace ms::cuda::moe
