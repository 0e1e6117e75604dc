// Grouped MXFP4 expert matmul for decode (token tile 8, usually 1-2 tokens per expert): a pure weight stream.
//
// Work unit: 16 output rows of one expert ("row group"). Their blocks (16 x K/2 bytes) and scales (16 x K/32 bytes)
// are contiguous in the checkpoint layout, so a block copies a whole row group into shared memory in one linear sweep
// of 16-byte cp.async (DRAM sees long sequential runs), then its warps (8; MODELSERVE_MOE_DECODE_WARPS=4 for 4) split
// K between them and feed mma.sync from shared memory; warp 0 adds the partial sums in a fixed order (results do not depend on timing) and runs the
// epilogue. The tile's activations (fp16, only min(8, n_tokens) token rows: 1 row at batch 1) are staged once per
// block. At batch 1-2 (small activation tiles) blocks are persistent over row groups and double-buffered (kBufs = 2:
// the next group streams in during the current one's math) and the grid is one wave; with larger activation tiles
// shared memory is better spent on more resident blocks, one row group each (kBufs = 1).
#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "common/env.h"
#include "cuda/moe/moe_mxfp4_common.cuh"

namespace ms::cuda::moe {
namespace {

// Warps per block (each takes 1/kW of K). 8 by default: with blocks limited by shared memory to ~3 per SM, twice the
// warps per block doubles the warps that hide the dequantisation's and the mma's latencies (the kernel is bound by
// instruction issue as much as by DRAM at batch 1). MODELSERVE_MOE_DECODE_WARPS=4 restores the previous shape.
int decode_warps() {
  static const int w = env_choice("MODELSERVE_MOE_DECODE_WARPS", 8, {4, 8});
  return w;
}
// Row-group buffers of the persistent batch 1-2 kernel: 2 (double-buffered); MODELSERVE_MOE_DECODE_BUFS=3 streams two
// row groups ahead (fewer resident blocks: shared memory).
int decode_bufs() {
  static const int b = env_choice("MODELSERVE_MOE_DECODE_BUFS", 2, {2, 3});
  return b;
}

__host__ __device__ constexpr int align16(int n) { return (n + 15) / 16 * 16; }
// Row pitch of the staged weights: 16 or 32 bytes of padding so that fragment reads (8 rows x 4 lanes) hit 32 banks.
__host__ __device__ constexpr int weight_pitch(int nb) { return nb * 16 + (nb % 2 ? 32 : 16); }
struct DecodeSmem {  // byte offsets
  int b, red, buf, buf_bytes, scale_off;
  __host__ __device__ DecodeSmem(int ntb, int ldb, int nb, int warps) {
    b = 0;
    red = align16(ntb * ldb * 2);
    buf = red + (warps - 1) * 32 * 4 * int(sizeof(float));
    scale_off = 16 * weight_pitch(nb);  // within a buffer: weights, then scales
    buf_bytes = scale_off + align16(16 * nb);
  }
  __host__ __device__ int total(int bufs) const { return buf + bufs * buf_bytes; }
};

// The down kernel's tail: every block counts itself finished; the last one (its writes and everyone's visible after
// the fences) runs the combine, which reads all of dn, and leaves the counter at zero for the next launch. Only
// with kCombineThreads threads per block (8 warps), so that the next norm's reduction order is the combine kernel's.
// Opt-in (MODELSERVE_MOE_COMBINE_TAIL=1): on an H100 the tail matches the combine kernel bitwise
// (moe_combine_tail_test.cu) and every model test passes with it, but the two tests that also turn on the L2 hints
// (MoeL2Hints, CudaExecutorMoeOptions.FusedNormAndL2PrefetchKeepTheLogits) fail with "illegal instruction", each in
// its own process (sessions 9 and 10); not yet explained.
template <int kWarps>
__device__ void combine_tail(const MatmulArgs &a) {
  static_assert(kWarps * 32 == kCombineThreads, "the tail reduces as the combine kernel does");
  __shared__ int last;
  __threadfence();  // this block's dn writes, before its count
  __syncthreads();
  if (threadIdx.x == 0) last = atomicAdd(a.tail_counter, 1) == int(gridDim.x * gridDim.y) - 1;
  __syncthreads();
  if (!last) return;
  __threadfence();
  pdl_wait();  // (idle blocks skip it otherwise; act and the router's outputs are complete by now anyway)
  for (int t = 0; t < a.tail_tokens; ++t) combine_token(a.tail, t);
  if (threadIdx.x == 0) *a.tail_counter = 0;
}

template <bool kGateUp, int kBufs, int kWarps>
__global__ void __launch_bounds__(kWarps * 32) mxfp4_decode_kernel(const MatmulArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nb = a.K / 32, n_groups = a.rows / 16;  // rows is a multiple of 16 (checked on the host)
  // The tile list comes from the router. The down kernel may start (programmatic dependent launch) while gate_up
  // still runs, but only after every gate_up block has waited for the router, so it may read the tiles and start
  // streaming its weights at once; gate_up itself must wait for the router first.
  if constexpr (kGateUp) pdl_wait();
  const int n_tiles = *a.n_tiles;
  const Tile tl = a.tiles[blockIdx.y];  // the list has max_tiles entries: always in bounds
  if (int(blockIdx.y) >= n_tiles || int(blockIdx.x) >= n_groups) {
    if constexpr (!kGateUp && kWarps * 32 == kCombineThreads)
      if (a.tail_counter) combine_tail<kWarps>(a);  // counted too: the tail waits for every block of the grid
    return;
  }
  extern __shared__ __align__(16) uint8_t smem[];
  const DecodeSmem lay(a.ntb, a.ldb, nb, kWarps);
  __half *sb = reinterpret_cast<__half *>(smem + lay.b);  // [ntb][ldb]
  float *red = reinterpret_cast<float *>(smem + lay.red);
  const int pitch = weight_pitch(nb);
  const uint8_t *gw = a.blocks + size_t(tl.expert) * a.rows * nb * 16;
  const uint8_t *gs = a.scales + size_t(tl.expert) * a.rows * nb;

  // With L2 hints (moe.cuh, MoeL2Prefetch) the weights go through L2 as evict_first: read once per step, they must
  // not push out the lines fetched for the next layer.
  const bool evict_first = a.evict_first;
  const uint64_t policy = evict_first ? l2_evict_first_policy() : 0;
  auto copy = [&](void *dst, const void *src) {
    if (evict_first) cp_async16_hint(dst, src, policy);
    else cp_async16(dst, src);
  };
  // Row group i of this block: blockIdx.x + i * gridDim.x.
  auto issue = [&](int i) {
    const int rg = blockIdx.x + i * gridDim.x;
    if (rg < n_groups) {
      uint8_t *buf = smem + lay.buf + (i % kBufs) * lay.buf_bytes;
      const uint8_t *src = gw + size_t(rg) * 16 * nb * 16;
      for (int r = warp; r < 16; r += kWarps)
        for (int b = lane; b < nb; b += 32) copy(buf + r * pitch + b * 16, src + (size_t(r) * nb + b) * 16);
      for (int c = threadIdx.x; c < nb; c += blockDim.x)  // 16 * nb scale bytes, 16-byte aligned (checked)
        copy(buf + lay.scale_off + 16 * c, gs + size_t(rg) * 16 * nb + 16 * c);
    }
    cp_async_commit();  // always, so that the group count per row group stays uniform
  };
  issue(0);

  if constexpr (!kGateUp) pdl_wait();  // act is gate_up's output
  pdl_trigger();
  const int k8 = a.K / 8;
  for (int idx = threadIdx.x; idx < a.ntb * k8; idx += blockDim.x) {
    const int j = idx / k8, c = idx - j * k8;
    __half *dst = sb + j * a.ldb + 8 * c;
    if (j < tl.count) {
      const int s = tl.first_slot + j;
      cp_async16(dst, static_cast<const __half *>(a.in) + size_t(a.in_row ? a.in_row[s] : s) * a.K + 8 * c);
    } else {
      *reinterpret_cast<uint4 *>(dst) = make_uint4(0u, 0u, 0u, 0u);
    }
  }
  cp_async_commit();
#pragma unroll
  for (int j = 1; j < kBufs; ++j) issue(j);

  const int per = (nb + kWarps - 1) / kWarps;  // this warp's K slice, in 32-element blocks
  const int kb0 = warp * per, kb1 = min(nb, kb0 + per);
  const uint8_t *sbg = reinterpret_cast<const uint8_t *>(sb + (g < a.ntb ? g : 0) * a.ldb + 8 * t);
  const bool has_b = g < a.ntb;
  for (int i = 0; int(blockIdx.x) + i * int(gridDim.x) < n_groups; ++i) {
    cp_async_wait<kBufs - 1>();  // row group i (and the activations) landed; i + 1 .. i + kBufs - 1 may be in flight
    __syncthreads();
    const uint8_t *buf = smem + lay.buf + (i % kBufs) * lay.buf_bytes;
    const uint8_t *sa = buf + 4 * t, *sscale = buf + lay.scale_off;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    auto block = [&](int b) {
      uint32_t bf[4] = {0u, 0u, 0u, 0u};
      if (has_b) {
        const uint4 v = *reinterpret_cast<const uint4 *>(sbg + b * 64);
        bf[0] = v.x;
        bf[1] = v.y;
        bf[2] = v.z;
        bf[3] = v.w;
      }
      const uint32_t q0 = *reinterpret_cast<const uint32_t *>(sa + g * pitch + b * 16);
      const uint32_t q1 = *reinterpret_cast<const uint32_t *>(sa + (g + 8) * pitch + b * 16);
      const float sc0 = block_scale(sscale[g * nb + b]), sc1 = block_scale(sscale[(g + 8) * nb + b]);
      uint32_t lo[4], hi[4];
      dequant_e2m1x8(q0, lo);
      dequant_e2m1x8(q1, hi);
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      mma_f16(c, lo[0], hi[0], lo[1], hi[1], bf[0], bf[1]);
      mma_f16(c, lo[2], hi[2], lo[3], hi[3], bf[2], bf[3]);
      acc[0] += c[0] * sc0;
      acc[1] += c[1] * sc0;
      acc[2] += c[2] * sc1;
      acc[3] += c[3] * sc1;
    };
    int b = kb0;
    for (; b + 4 <= kb1; b += 4) {
#pragma unroll
      for (int j = 0; j < 4; ++j) block(b + j);
    }
    for (; b < kb1; ++b) block(b);

    if (warp > 0) {
#pragma unroll
      for (int q = 0; q < 4; ++q) red[((warp - 1) * 32 + lane) * 4 + q] = acc[q];
    }
    __syncthreads();  // partial sums written; buffer i % kBufs no longer read
    if constexpr (kBufs >= 2) issue(i + kBufs);
    if (warp > 0) continue;
#pragma unroll
    for (int w = 0; w < kWarps - 1; ++w)
#pragma unroll
      for (int q = 0; q < 4; ++q) acc[q] += red[(w * 32 + lane) * 4 + q];

    // C fragment: acc[0..1] = row g, tokens 2t, 2t+1; acc[2..3] = row g + 8.
    const int row0 = (blockIdx.x + i * gridDim.x) * 16;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + h * 8 + g;
      const float bias = bf16_to_float(a.bias[size_t(tl.expert) * a.rows + row]);
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const float v = acc[2 * h + u] + bias;
        const int j = 2 * t + u;
        if constexpr (kGateUp) {
          const float lin = __shfl_xor_sync(0xffffffffu, v, 4);  // odd (linear) row of the pair: lane + 4
          if (!(g & 1) && j < tl.count)
            static_cast<__half *>(a.out)[size_t(tl.first_slot + j) * (a.rows / 2) + row / 2] =
                __float2half_rn(swiglu(v, lin, a.limit, a.alpha));
        } else {
          if (j < tl.count) static_cast<float *>(a.out)[size_t(tl.first_slot + j) * a.rows + row] = v;
        }
      }
    }
  }
  cp_async_wait<0>();
  if constexpr (!kGateUp && kWarps * 32 == kCombineThreads)
    if (a.tail_counter) combine_tail<kWarps>(a);
}

int activation_ldb(int K) { return K + ((32 - K % 64) + 64) % 64; }  // 64 B past a multiple of 128: no conflicts

struct LaunchShape {
  size_t smem;
  int capacity;  // blocks resident on the whole GPU at once
};

// Shared memory and resident-block count per (K, staged token rows), computed once: the first time opts the kernel in
// to the shared memory it needs and asks the occupancy calculator. moe_workspace_bytes runs this for every shape a
// layer can use, so that nothing but launches happens inside a CUDA graph capture.
template <bool kGateUp, int kBufs, int kWarps>
LaunchShape launch_shape(int K, int ntb) {
  struct Entry {
    int K, ntb;
    LaunchShape shape;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  static size_t opted_in = 0;
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry &e : cache)
    if (e.K == K && e.ntb == ntb) return e.shape;
  auto kernel = mxfp4_decode_kernel<kGateUp, kBufs, kWarps>;
  const size_t smem = DecodeSmem(ntb, activation_ldb(K), K / 32, kWarps).total(kBufs);
  if (smem > opted_in) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    opted_in = smem;
  }
  int device = 0, sms = 0, per_sm = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kWarps * 32, smem);
  cache.push_back(Entry{K, ntb, LaunchShape{smem, std::max(1, sms * per_sm)}});
  return cache.back().shape;
}

template <bool kGateUp, int kBufs, int kWarps>
bool launch(MatmulArgs a, int n_pairs, int n_experts, cudaStream_t stream) {
  if (kGateUp || kWarps * 32 != kCombineThreads) a.tail_counter = nullptr;
  auto kernel = mxfp4_decode_kernel<kGateUp, kBufs, kWarps>;
  a.ldb = activation_ldb(a.K);
  const LaunchShape shape = launch_shape<kGateUp, kBufs, kWarps>(a.K, a.ntb);
  const size_t smem = shape.smem;
  const int capacity = shape.capacity;
  const int tiles = max_tiles(n_pairs, n_experts, kDecodeTokenTile), groups = a.rows / 16;
  // Persistent: blocks per tile such that all tiles' blocks fit in one wave. Otherwise one block per row group.
  const int per_tile = kBufs >= 2 ? std::clamp(capacity / tiles, 1, groups) : groups;
  launch_pdl(kernel, dim3(per_tile, tiles), dim3(kWarps * 32), smem, stream, a);
  return a.tail_counter != nullptr;
}

template <int kWarps>
void prepare_decode_w(int hidden, int inter, int max_tokens) {
  for (int ntb = 1; ntb <= std::min(kDecodeTokenTile, max_tokens); ++ntb) {
    if (ntb <= 2 && decode_bufs() == 3) {
      launch_shape<true, 3, kWarps>(hidden, ntb);
      launch_shape<false, 3, kWarps>(inter, ntb);
    } else if (ntb <= 2) {
      launch_shape<true, 2, kWarps>(hidden, ntb);
      launch_shape<false, 2, kWarps>(inter, ntb);
    } else {
      launch_shape<true, 1, kWarps>(hidden, ntb);
      launch_shape<false, 1, kWarps>(inter, ntb);
    }
  }
}

template <int kWarps>
bool launch_decode_w(const MatmulArgs &a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream) {
  const bool persistent = a.ntb <= 2;
  if (persistent && decode_bufs() == 3)
    return gate_up ? launch<true, 3, kWarps>(a, n_pairs, n_experts, stream)
                   : launch<false, 3, kWarps>(a, n_pairs, n_experts, stream);
  if (gate_up)
    return persistent ? launch<true, 2, kWarps>(a, n_pairs, n_experts, stream)
                      : launch<true, 1, kWarps>(a, n_pairs, n_experts, stream);
  return persistent ? launch<false, 2, kWarps>(a, n_pairs, n_experts, stream)
                    : launch<false, 1, kWarps>(a, n_pairs, n_experts, stream);
}

}  // namespace

void prepare_decode(int hidden, int inter, int max_tokens) {
  if (decode_warps() == 4) prepare_decode_w<4>(hidden, inter, max_tokens);
  else prepare_decode_w<8>(hidden, inter, max_tokens);
}

bool launch_decode(const MatmulArgs &a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream) {
  if (decode_warps() == 4) return launch_decode_w<4>(a, gate_up, n_pairs, n_experts, stream);
  return launch_decode_w<8>(a, gate_up, n_pairs, n_experts, stream);
}

}  // namespace ms::cuda::moe
