// MoE decode path v2: batches of <= 8 tokens with hidden, inter <= 3072 (gpt-oss 20b and 120b). Three kernels and the
// combine of moe_combine.cu, every one launched with programmatic dependent launch:
//
// router_group_v2  one cluster of 8 blocks x 16 warps. x (fp32, <= 8 tokens) is copied to shared memory with cp.async
//                  while every warp loads its slice of the router matrix into registers (16-byte loads, all issued
//                  before any math: one memory round trip instead of one per loop trip); the logits of the cluster's
//                  experts go to the first block's shared memory, which picks the top k per token (ties: lower
//                  expert, as the CPU path), softmaxes them and groups the (token, choice) pairs by expert. The
//                  grouping is one thread per pair counting in shared memory (no serial loop over experts); at <= 8
//                  tokens an expert has at most 8 pairs, so every active expert is exactly one tile of the matmuls.
// gate_up / down   a persistent MXFP4 weight stream over the whole GPU: the work items (16 weight rows of one active
//                  expert, all of K) of every tile are numbered tile-major and each of the grid's blocks (one per SM)
//                  takes a contiguous, equal share (+-1 item), whatever the number of active experts. A block streams
//                  its items through a ring of 2..8 shared-memory stages with 16-byte cp.async (a stage is one item:
//                  ~24 KB at K = 2880, so ~100 KB in flight per SM). Its 8 warps split K; each warp keeps its slice of
//                  the tile's activations (the mma B fragments) in registers, reloaded only when the item's tile
//                  changes, so nothing but weights passes through shared memory. The math is straight-line over a
//                  fixed 12-block window per warp (no branch per block: the compiler interleaves them) and
//                  dequantises into a pair order that needs no masking (dequant_e2m1x8_v2): ~40 SASS instructions
//                  per 32 x 16 weights, so an item's issue time should stay under its DRAM time at one block per SM.
//                  The 8 partial sums of an output are added in a fixed order (deterministic); the epilogue is
//                  spread over the block's threads (bias, clamped SwiGLU for gate_up). Blocks take <= ~104 KB of
//                  shared memory and <= 128 registers per thread, so a down block fits on an SM next to a gate_up
//                  block: down's blocks become resident as soon as gate_up has waited for the router, and stream
//                  their first stages of weights (which need nothing from gate_up) while gate_up runs.
//
// Numerics are those of the v1 decode kernel (fp16 activations, exact dequantisation, fp32 accumulation, the block
// scale applied per 32-element block); only the order of the additions differs. Results are bitwise
// reproducible run to run. MODELSERVE_MOE_DECODE_V2=1 selects these kernels; the v1 kernels stay the default until
// this path has been measured on a GPU.
#include <cooperative_groups.h>

#include <cuda_fp16.h>

#include <algorithm>
#include <cfloat>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/env.h"
#include "cuda/moe/moe_group.cuh"
#include "cuda/moe/moe_mxfp4_common.cuh"

namespace ms::cuda::moe {
namespace {

namespace cg = cooperative_groups;

// ---------------------------------------------------------------------------------------------------------------
// Router + top-k + grouping
// ---------------------------------------------------------------------------------------------------------------

constexpr int kV2MaxTokens = 8;
constexpr int kV2MaxK = 3072;           // hidden and inter
constexpr int kRClusterBlocks = 8;
constexpr int kRWarps = 16;
constexpr int kRChunks = 8;             // 16-byte chunks of a router row per lane per round (registers)
constexpr int kRMaxItems = 32;          // (expert, K segment) items per block: see RouterV2Plan
constexpr int kRMaxExpertsPerLane = 8;  // up to 256 experts

__host__ __device__ constexpr size_t align16z(size_t n) { return (n + 15) / 16 * 16; }

// How a block splits its experts' rows between its warps: per_block experts, each cut into n_seg K segments
// (n_seg * per_block <= max(16, per_block) items, so <= kRMaxItems for <= 256 experts).
struct RouterV2Plan {
  int per_block, n_seg, seg_len, n_chunks;
  __host__ __device__ RouterV2Plan(int n_experts, int hidden) {
    per_block = (n_experts + kRClusterBlocks - 1) / kRClusterBlocks;
    n_seg = max(1, kRWarps / max(1, per_block));
    n_chunks = hidden / 8;
    seg_len = (n_chunks + n_seg - 1) / n_seg;
  }
};

struct RouterV2Smem {  // byte offsets into the dynamic shared memory
  size_t xs, partial, logits, sids, present, bias, total;
  __host__ __device__ RouterV2Smem(int n_tokens, int hidden, int n_experts, int k) {
    xs = 0;                                                            // float [n_tokens][hidden]
    partial = align16z(size_t(n_tokens) * hidden * 4);                 // float [kRMaxItems][kV2MaxTokens]
    logits = partial + size_t(kRMaxItems) * kV2MaxTokens * 4;          // float [kV2MaxTokens][n_experts]
    sids = logits + align16z(size_t(kV2MaxTokens) * n_experts * 4);    // int [n_tokens * k]
    present = sids + align16z(size_t(kV2MaxTokens) * k * 4);           // uint32 [8]: experts chosen at least once
    bias = present + 32;                                               // float [32]: this block's router biases
    total = bias + 32 * 4;
  }
};

// <= 64 registers (launch bounds: 2 blocks per SM), so that a gate_up block (256 threads x 128 registers) fits next to
// a router block on its SM: gate_up becomes resident on all SMs while the router runs.
__global__ void __cluster_dims__(kRClusterBlocks, 1, 1) __launch_bounds__(kRWarps * 32, 2)
    router_group_v2_kernel(const uint16_t *__restrict__ w, const uint16_t *__restrict__ bias,
                           const float *__restrict__ x, int nt, int hidden, int n_experts, int k,
                           int *__restrict__ ids, float *__restrict__ wts, __half *__restrict__ xh, GroupOut group) {
  extern __shared__ __align__(16) uint8_t rsh[];
  const RouterV2Smem lay(nt, hidden, n_experts, k);
  float *xs = reinterpret_cast<float *>(rsh + lay.xs);
  float *partial = reinterpret_cast<float *>(rsh + lay.partial);
  cg::cluster_group cluster = cg::this_cluster();
  asm volatile("barrier.cluster.arrive.relaxed;" ::: "memory");  // "started"; waited on before writing remotely
  const int rank = int(cluster.block_rank());
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const RouterV2Plan plan(n_experts, hidden);
  const int e_begin = min(n_experts, rank * plan.per_block);
  const int n_e = min(n_experts, e_begin + plan.per_block) - e_begin;
  const int n_items = n_e * plan.n_seg;
  float *sbias = reinterpret_cast<float *>(rsh + lay.bias);
  if (int(threadIdx.x) < n_e) sbias[threadIdx.x] = bf16_to_float(bias[e_begin + threadIdx.x]);  // read after a barrier
  {  // The router weights do not depend on the previous kernel: start pulling this block's rows into L2 now.
    const char *p = reinterpret_cast<const char *>(w + size_t(e_begin) * hidden);
    for (size_t off = size_t(threadIdx.x) * 128; off < size_t(n_e) * hidden * 2; off += size_t(blockDim.x) * 128)
      prefetch_l2(p + off);
  }
  pdl_wait();  // x comes from the previous kernel
  pdl_trigger();

  // x -> shared memory (cp.async: no registers held), then this warp's first row slice -> registers.
  for (int i = threadIdx.x; i < nt * hidden / 4; i += blockDim.x) cp_async16(xs + 4 * i, x + 4 * i);
  cp_async_commit();
  uint4 wv[kRChunks];
  auto load_w = [&](int item, int base) {
    const int e = e_begin + item / plan.n_seg, seg = item % plan.n_seg;
    const int c_end = min(plan.n_chunks, (seg + 1) * plan.seg_len);
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + size_t(e) * hidden);
#pragma unroll
    for (int j = 0; j < kRChunks; ++j) {
      const int c = base + lane + 32 * j;
      wv[j] = c < c_end ? __ldg(wr + c) : make_uint4(0u, 0u, 0u, 0u);
    }
  };
  if (warp < n_items) load_w(warp, (warp % plan.n_seg) * plan.seg_len);
  cp_async_wait<0>();
  __syncthreads();

  // The expert matmuls read x in fp16: this block converts 1/8 of the 8-column chunks (rank, rank + 8, ...).
  {
    const int own = (hidden / 8 - rank + kRClusterBlocks - 1) / kRClusterBlocks;
    for (int i = threadIdx.x; i < nt * own; i += blockDim.x) {
      const int t = i / own, c = (rank + (i - t * own) * kRClusterBlocks) * 8;
      const float4 p = *reinterpret_cast<const float4 *>(xs + size_t(t) * hidden + c);
      const float4 q = *reinterpret_cast<const float4 *>(xs + size_t(t) * hidden + c + 4);
      const __half2 h[4] = {__floats2half2_rn(p.x, p.y), __floats2half2_rn(p.z, p.w), __floats2half2_rn(q.x, q.y),
                            __floats2half2_rn(q.z, q.w)};
      *reinterpret_cast<uint4 *>(xh + size_t(t) * hidden + c) = *reinterpret_cast<const uint4 *>(h);
    }
  }

  for (int item = warp; item < n_items; item += kRWarps) {
    const int seg = item % plan.n_seg;
    const int c_begin = seg * plan.seg_len, c_end = min(plan.n_chunks, c_begin + plan.seg_len);
    float acc[kV2MaxTokens];
#pragma unroll
    for (int t = 0; t < kV2MaxTokens; ++t) acc[t] = 0.f;
    for (int base = c_begin; base < c_end; base += 32 * kRChunks) {
      if (item != warp || base != c_begin) load_w(item, base);  // the first slice was loaded before the barrier
#pragma unroll
      for (int j = 0; j < kRChunks; ++j) {
        const int c = base + lane + 32 * j;
        if (c < c_end) {
#pragma unroll
          for (int t = 0; t < kV2MaxTokens; ++t) {
            if (t < nt) {
              const float4 p = *reinterpret_cast<const float4 *>(xs + size_t(t) * hidden + 8 * c);
              const float4 q = *reinterpret_cast<const float4 *>(xs + size_t(t) * hidden + 8 * c + 4);
              acc[t] += dot_bf16x8(wv[j], p, q);
            }
          }
        }
      }
    }
#pragma unroll
    for (int t = 0; t < kV2MaxTokens; ++t) {
      if (t < nt) {
        float v = acc[t];
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) partial[item * kV2MaxTokens + t] = v;
      }
    }
  }
  __syncthreads();
  asm volatile("barrier.cluster.wait;" ::: "memory");
  float *logits0 = cluster.map_shared_rank(reinterpret_cast<float *>(rsh + lay.logits), 0);  // [8][E], block 0
  for (int i = threadIdx.x; i < n_e * nt; i += blockDim.x) {
    const int el = i / nt, t = i - el * nt;
    float v = 0.f;
    for (int s = 0; s < plan.n_seg; ++s) v += partial[(el * plan.n_seg + s) * kV2MaxTokens + t];  // fixed order
    logits0[t * n_experts + e_begin + el] = v + sbias[el];
  }
  cluster.sync();
  if (rank != 0) return;

  // Top k per token (one warp per token), softmax over the chosen k.
  int *sids = reinterpret_cast<int *>(rsh + lay.sids);
  uint32_t *present = reinterpret_cast<uint32_t *>(rsh + lay.present);
  if (threadIdx.x < 8) present[threadIdx.x] = 0u;
  const float *logits = reinterpret_cast<const float *>(rsh + lay.logits);
  for (int t = warp; t < nt; t += kRWarps) {
    const float *lg = logits + t * n_experts;
    float chosen[8];
    int chosen_id[8];
    warp_top_k<kRMaxExpertsPerLane>(lg, n_experts, k, chosen, chosen_id);
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

  // Grouping: slots ordered by (expert, token, choice), as group_pairs. One thread per pair (<= 64 pairs).
  const int n_pairs = nt * k;
  const int i = threadIdx.x;
  if (i < n_pairs) atomicOr(&present[sids[i] >> 5], 1u << (sids[i] & 31));
  __syncthreads();
  if (i < n_pairs) {
    const int e = sids[i];
    int less = 0, before = 0, same = 0;
    for (int p = 0; p < n_pairs; ++p) {
      const int f = sids[p];
      less += f < e;
      same += f == e;
      before += (f == e) & (p < i);
    }
    const int slot = less + before;
    group.slot_token[slot] = i / k;
    group.slot_of[i] = slot;
    if (before == 0) {  // the expert's first pair writes its tile (an expert has <= 8 pairs: one tile)
      int idx = __popc(present[e >> 5] & ((1u << (e & 31)) - 1u));
      for (int q = 0; q < (e >> 5); ++q) idx += __popc(present[q]);
      group.tiles[idx] = Tile{e, less, same, 0};
    }
  }
  if (i == 0) {
    int n = 0;
    for (int q = 0; q < 8; ++q) n += __popc(present[q]);
    *group.n_tiles = n;
  }
  for (int e = i; e <= n_experts; e += blockDim.x) {
    int less = 0;
    for (int p = 0; p < n_pairs; ++p) less += sids[p] < e;
    group.expert_off[e] = less;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Persistent MXFP4 weight stream (gate_up + SwiGLU, down)
// ---------------------------------------------------------------------------------------------------------------

constexpr int kMW = 8;                          // warps per block, each takes 1/8 of K
constexpr int kMaxBW = kV2MaxK / 32 / kMW;      // 32-element blocks per warp (12): B fragments held in registers
constexpr int kMaxStages = 8;
constexpr size_t kMatmulSmemBudget = 104 * 1024;  // two blocks (a gate_up and a down) per SM

struct V2Args {
  const uint8_t *blocks;  // [E][rows][K/32][16]
  const uint8_t *scales;  // [E][rows][K/32]
  const uint16_t *bias;   // bf16 [E][rows]
  int rows, K;
  const __half *in;    // B rows: gate_up xh[token][K], down act[slot][K]
  const int *in_row;   // slot -> B row (gate_up: slot_token); nullptr: the slot itself
  const Tile *tiles;
  const int *n_tiles;
  void *out;           // gate_up: __half act[slot][rows / 2]; down: float dn[slot][rows]
  int max_tiles, n_pairs, stages;
  float limit, alpha;
};

__host__ __device__ constexpr int v2_pitch(int nb) { return nb * 16 + (nb % 2 ? 32 : 16); }  // conflict-free rows

struct MatmulV2Smem {  // byte offsets
  int tiles, rows, red, stage0, scale_off, stage_bytes;
  __host__ __device__ MatmulV2Smem(int max_tiles, int n_pairs, int K) {
    const int nb = K / 32;
    tiles = 0;                                                // Tile [max_tiles]
    rows = int(align16z(size_t(max_tiles) * sizeof(Tile)));   // int [n_pairs]
    red = rows + int(align16z(size_t(n_pairs) * 4));           // float [kMW][32][4]
    stage0 = red + kMW * 32 * 4 * 4;
    scale_off = 16 * v2_pitch(max(nb, kMaxBW));
    stage_bytes = scale_off + int(align16z(size_t(16) * nb + 16));  // + 16: reads of the 12-block window (below)
  }
  __host__ __device__ int total(int stages) const { return stage0 + stages * stage_bytes; }
};

// 8 E2M1 nibbles n0..n7 (4 bytes, n0 lowest) -> 4 fp16 pairs, each value * 2^-14 (the bit placement of
// dequant_e2m1x8), paired as h[0] = (n0, n2), h[1] = (n4, n6), h[2] = (n1, n3), h[3] = (n5, n7): 4 instructions fewer
// than dequant_e2m1x8's (n0, n1), (n2, n3), ... pairs (byte_perm against zero instead of byte_perm + mask). The mma
// B fragments are permuted to match once per tile (b_pairs).
__device__ __forceinline__ void dequant_e2m1x8_v2(uint32_t q, uint32_t h[4]) {
  const uint32_t hb_even = ((q << 4) & 0x80808080u) | ((q << 1) & 0x0e0e0e0eu);  // fp16 high byte of n0, n2, n4, n6
  const uint32_t hb_odd = (q & 0x80808080u) | ((q >> 3) & 0x0e0e0e0eu);          // ... of n1, n3, n5, n7
  h[0] = __byte_perm(hb_even, 0u, 0x1404);
  h[1] = __byte_perm(hb_even, 0u, 0x3424);
  h[2] = __byte_perm(hb_odd, 0u, 0x1404);
  h[3] = __byte_perm(hb_odd, 0u, 0x3424);
}

// fp16 x0..x7 (as loaded: (x0, x1), (x2, x3), (x4, x5), (x6, x7)) -> the pairs matching dequant_e2m1x8_v2:
// (x0, x2), (x4, x6), (x1, x3), (x5, x7).
__device__ __forceinline__ uint4 b_pairs(uint4 v) {
  return make_uint4(__byte_perm(v.x, v.y, 0x5410), __byte_perm(v.z, v.w, 0x5410), __byte_perm(v.x, v.y, 0x7632),
                    __byte_perm(v.z, v.w, 0x7632));
}

__device__ __forceinline__ void cp_async_wait_dyn(int n) {  // n <= kMaxStages - 1
  switch (n) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    default: cp_async_wait<7>(); break;
  }
}

template <bool kGateUp>
__global__ void __launch_bounds__(kMW * 32, 2) mxfp4_decode_v2_kernel(const V2Args a) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nb = a.K / 32, n_groups = a.rows / 16, S = a.stages;
  const MatmulV2Smem lay(a.max_tiles, a.n_pairs, a.K);
  const int pitch = v2_pitch(max(nb, kMaxBW));  // rows hold >= kMaxBW blocks: see the window below
  Tile *s_tiles = reinterpret_cast<Tile *>(smem + lay.tiles);
  int *s_row = reinterpret_cast<int *>(smem + lay.rows);
  float *red = reinterpret_cast<float *>(smem + lay.red);
  uint8_t *stage0 = smem + lay.stage0;

  // gate_up needs the router's tiles (and later its xh) at once; it lets down launch right after. down's blocks
  // become resident once every gate_up block has waited for the router, so they may read the tiles and stream
  // weights before their own wait.
  if constexpr (kGateUp) {
    pdl_wait();
    pdl_trigger();
  }
  const int n_tiles = min(__ldcg(a.n_tiles), a.max_tiles);
  for (int i = threadIdx.x; i < a.max_tiles; i += blockDim.x) {
    const int4 v = __ldcg(reinterpret_cast<const int4 *>(a.tiles) + i);
    s_tiles[i] = Tile{v.x, v.y, v.z, v.w};
  }
  if constexpr (kGateUp) {
    for (int i = threadIdx.x; i < a.n_pairs; i += blockDim.x) s_row[i] = __ldcg(a.in_row + i);
  } else {
    for (int i = threadIdx.x; i < a.n_pairs; i += blockDim.x) s_row[i] = i;
  }
  __syncthreads();

  const int n_items = n_tiles * n_groups;
  const int lo = int((long long)blockIdx.x * n_items / gridDim.x);
  const int hi = int((long long)(blockIdx.x + 1) * n_items / gridDim.x);

  auto issue = [&](int it) {  // item lo + it -> stage it % S
    const int item = lo + it;
    if (item < hi) {
      const int ti = item / n_groups, rg = item - ti * n_groups;
      const size_t grp = size_t(s_tiles[ti].expert) * n_groups + rg;  // row group within the whole tensor
      uint8_t *buf = stage0 + (it % S) * lay.stage_bytes;
      const uint8_t *src = a.blocks + grp * 16 * nb * 16;
      for (int r = warp; r < 16; r += kMW)
        for (int b = lane; b < nb; b += 32) cp_async16(buf + r * pitch + b * 16, src + (size_t(r) * nb + b) * 16);
      const uint8_t *ssrc = a.scales + grp * 16 * nb;  // 16 * nb bytes, 16-byte aligned
      for (int c = threadIdx.x; c < nb; c += blockDim.x) cp_async16(buf + lay.scale_off + 16 * c, ssrc + 16 * c);
      if (threadIdx.x == 0) prefetch_l2(a.bias + grp * 16);  // read by this item's epilogue
    }
    cp_async_commit();  // always: one group per item keeps the wait counts uniform
  };
  for (int s = 0; s < S; ++s) issue(s);

  if constexpr (!kGateUp) {
    pdl_wait();  // act is gate_up's output
    pdl_trigger();
  }

  // This warp's slice of K is blocks [kb0, kb1) (<= kMaxBW of them). It runs over a fixed window of kMaxBW blocks
  // [wb, wb + kMaxBW) that contains the slice and lies inside the staged rows (rows are >= kMaxBW blocks long), so
  // every address is a constant offset from one base; blocks of the window outside the slice get zero B fragments.
  const int per = (nb + kMW - 1) / kMW;
  const int kb0 = warp * per, kb1 = min(nb, kb0 + per);
  const int wb = nb >= kMaxBW ? min(kb0, nb - kMaxBW) : 0;
  // Epilogue: thread -> (row or gate/linear row pair, token j). gate_up: 8 pairs x 8 tokens; down: 16 rows x 8.
  const int ej = threadIdx.x & 7, er = threadIdx.x >> 3;
  const bool epi = kGateUp ? threadIdx.x < 64 : threadIdx.x < 128;
  const int r0 = kGateUp ? 2 * er : er;  // output row within the item (gate_up: the gate row; r0 + 1 is linear)

  int cur_tile = -1;
  uint4 bf[kMaxBW];
#pragma unroll
  for (int j = 0; j < kMaxBW; ++j) bf[j] = make_uint4(0u, 0u, 0u, 0u);
  for (int it = 0; lo + it < hi; ++it) {
    const int item = lo + it;
    const int ti = item / n_groups, rg = item - ti * n_groups;
    const Tile tl = s_tiles[ti];
    if (ti != cur_tile) {  // block-uniform: this warp's slice of the tile's activations -> B fragments
      cur_tile = ti;
      const bool has = g < tl.count;
      const __half *src = a.in + size_t(has ? s_row[tl.first_slot + g] : 0) * a.K + 8 * t;
#pragma unroll
      for (int j = 0; j < kMaxBW; ++j) {
        const int b = wb + j;
        bf[j] = has && b >= kb0 && b < kb1 ? b_pairs(__ldcg(reinterpret_cast<const uint4 *>(src + b * 32)))
                                           : make_uint4(0u, 0u, 0u, 0u);
      }
    }
    float bias0 = 0.f, bias1 = 0.f;  // loaded now, used after the math
    const bool live = epi && ej < tl.count;
    if (live) {
      const uint16_t *bp = a.bias + (size_t(tl.expert) * n_groups + rg) * 16 + r0;
      bias0 = bf16_to_float(bp[0]);
      if constexpr (kGateUp) bias1 = bf16_to_float(bp[1]);
    }

    cp_async_wait_dyn(S - 1);  // item it landed; it + 1 .. it + S - 1 may be in flight
    __syncthreads();
    const uint8_t *buf = stage0 + (it % S) * lay.stage_bytes;
    const uint8_t *sa0 = buf + g * pitch + wb * 16 + 4 * t, *sa1 = sa0 + 8 * pitch;
    const uint8_t *ss0 = buf + lay.scale_off + g * nb + wb, *ss1 = ss0 + 8 * nb;
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    // Straight-line over the window (no branch per block, so the compiler interleaves the blocks' loads,
    // dequantisation and mma). Window blocks outside the slice meet zero B fragments: whatever bytes they read
    // (another warp's blocks, row padding, the scale area), E2M1 dequantises to finite fp16 and scales are finite, so
    // they add exactly 0 and the sums equal the slice's alone, in the same order.
#pragma unroll
    for (int j = 0; j < kMaxBW; ++j) {
      const uint32_t q0 = *reinterpret_cast<const uint32_t *>(sa0 + j * 16);
      const uint32_t q1 = *reinterpret_cast<const uint32_t *>(sa1 + j * 16);
      const float sc0 = block_scale(ss0[j]), sc1 = block_scale(ss1[j]);
      uint32_t lo4[4], hi4[4];
      dequant_e2m1x8_v2(q0, lo4);
      dequant_e2m1x8_v2(q1, hi4);
      float c[4] = {0.f, 0.f, 0.f, 0.f};
      mma_f16(c, lo4[0], hi4[0], lo4[1], hi4[1], bf[j].x, bf[j].y);
      mma_f16(c, lo4[2], hi4[2], lo4[3], hi4[3], bf[j].z, bf[j].w);
      acc[0] += c[0] * sc0;
      acc[1] += c[1] * sc0;
      acc[2] += c[2] * sc1;
      acc[3] += c[3] * sc1;
    }
    // C fragment: acc[0..1] = row g, tokens 2t, 2t+1; acc[2..3] = row g + 8.
    *reinterpret_cast<float4 *>(red + (warp * 32 + lane) * 4) = make_float4(acc[0], acc[1], acc[2], acc[3]);
    __syncthreads();  // partial sums written; stage it % S no longer read
    issue(it + S);
    if (live) {
      auto sum_row = [&](int r) {  // the 8 warps' partial sums of (row r, token ej), warp order: deterministic
        const int l = (r & 7) * 4 + (ej >> 1), q = (r >> 3) * 2 + (ej & 1);
        float v = 0.f;
#pragma unroll
        for (int w8 = 0; w8 < kMW; ++w8) v += red[(w8 * 32 + l) * 4 + q];
        return v;
      };
      const int slot = tl.first_slot + ej;
      if constexpr (kGateUp) {
        const float gate = sum_row(r0) + bias0, lin = sum_row(r0 + 1) + bias1;
        static_cast<__half *>(a.out)[size_t(slot) * (a.rows / 2) + (rg * 16 + r0) / 2] =
            __float2half_rn(swiglu(gate, lin, a.limit, a.alpha));
      } else {
        static_cast<float *>(a.out)[size_t(slot) * a.rows + rg * 16 + r0] = sum_row(r0) + bias0;
      }
    }
  }
  cp_async_wait<0>();
}

// ---------------------------------------------------------------------------------------------------------------
// Host side
// ---------------------------------------------------------------------------------------------------------------

struct V2Device {
  int sms = 0;
};

V2Device &v2_device() {
  static V2Device d;
  return d;
}

int v2_stages(int max_tiles, int n_pairs, int K) {
  const MatmulV2Smem lay(max_tiles, n_pairs, K);
  const int fit = int((long long)(kMatmulSmemBudget - lay.stage0) / lay.stage_bytes);
  return std::clamp(fit, 2, kMaxStages);
}

V2Args matmul_args(const MoeLayer &l, int n_tokens, const Workspace &w, bool gate_up) {
  V2Args a{};
  a.blocks = gate_up ? l.gate_up_blocks : l.down_blocks;
  a.scales = gate_up ? l.gate_up_scales : l.down_scales;
  a.bias = gate_up ? l.gate_up_bias : l.down_bias;
  a.rows = gate_up ? 2 * l.inter : l.hidden;
  a.K = gate_up ? l.hidden : l.inter;
  a.in = reinterpret_cast<const __half *>(gate_up ? w.xh : w.act);
  a.in_row = gate_up ? w.slot_token : nullptr;
  a.tiles = w.tiles;
  a.n_tiles = w.n_tiles;
  a.out = gate_up ? static_cast<void *>(w.act) : static_cast<void *>(w.dn);
  a.n_pairs = n_tokens * l.top_k;
  a.max_tiles = max_tiles(a.n_pairs, l.n_experts, kMinTokenTile);
  a.stages = v2_stages(a.max_tiles, a.n_pairs, a.K);
  a.limit = l.swiglu_limit;
  a.alpha = l.swiglu_alpha;
  return a;
}

template <bool kGateUp>
void launch_matmul_v2(const V2Args &a, cudaStream_t stream) {
  const size_t smem = size_t(MatmulV2Smem(a.max_tiles, a.n_pairs, a.K).total(a.stages));
  launch_pdl(mxfp4_decode_v2_kernel<kGateUp>, dim3(std::max(1, v2_device().sms)), dim3(kMW * 32), smem, stream, a);
}

}  // namespace

bool decode_v2_enabled() {
  static const bool on = env_switch("MODELSERVE_MOE_DECODE_V2", false);  // off by default until it has run on a GPU
  return on;
}

bool decode_v2_supported(const MoeLayer &l, int n_tokens) {
  return n_tokens >= 1 && n_tokens <= kV2MaxTokens && l.hidden <= kV2MaxK && l.inter <= kV2MaxK;
}

void prepare_decode_v2(const MoeLayer &l, int max_tokens) {
  if (!decode_v2_supported(l, 1)) return;
  static std::once_flag once;
  std::call_once(once, [] {
    int device = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&v2_device().sms, cudaDevAttrMultiProcessorCount, device);
    // Every shape the v2 kernels can launch with stays under these: the matmuls under the budget (v2_stages), the
    // router under 8 tokens x 3072 floats plus its small tables.
    cudaFuncSetAttribute(mxfp4_decode_v2_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(kMatmulSmemBudget));
    cudaFuncSetAttribute(mxfp4_decode_v2_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(kMatmulSmemBudget));
    cudaFuncSetAttribute(router_group_v2_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         int(RouterV2Smem(kV2MaxTokens, kV2MaxK, 256, 8).total));
  });
  (void)max_tokens;
}

void launch_router_group_v2(const MoeLayer &l, const float *x, int n_tokens, const Workspace &w,
                            cudaStream_t stream) {
  const size_t smem = RouterV2Smem(n_tokens, l.hidden, l.n_experts, l.top_k).total;
  launch_pdl(router_group_v2_kernel, dim3(kRClusterBlocks), dim3(kRWarps * 32), smem, stream, l.router_w,
             l.router_b, x, n_tokens, l.hidden, l.n_experts, l.top_k, w.topk_ids, w.topk_w,
             reinterpret_cast<__half *>(w.xh), group_out(w));
}

void launch_gate_up_v2(const MoeLayer &l, int n_tokens, const Workspace &w, cudaStream_t stream) {
  launch_matmul_v2<true>(matmul_args(l, n_tokens, w, true), stream);
}

void launch_down_v2(const MoeLayer &l, int n_tokens, const Workspace &w, cudaStream_t stream) {
  launch_matmul_v2<false>(matmul_args(l, n_tokens, w, false), stream);
}

}  // namespace ms::cuda::moe
