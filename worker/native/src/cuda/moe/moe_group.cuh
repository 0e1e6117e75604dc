// Grouping of (token, choice) pairs by expert, as a block-wide device function: used by the stand-alone group kernel
// (prefill) and fused into the router kernel when one block routes every token (decode).
//
// Deterministic: slot order within an expert is (token, choice) order, so results never depend on scheduling. Each
// warp owns experts and finds their pairs with ballots (no atomics). Also emits the matmul tile list (expert, first
// slot, count <= token_tile) and its length, which the matmul kernels read on the device (their grids are sized for
// the worst case and surplus blocks exit).
#pragma once

#include <cfloat>
#include <cstdint>

#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda::moe {

struct GroupOut {
  int *slot_token, *slot_of, *expert_off;
  Tile *tiles;
  int *n_tiles;
  int *tail_counter;  // zeroed here: the down kernel's last block counts on a zero start (it leaves it at zero too)
};

// All threads of the block must call it. `ids` may be in shared or global memory; count/off: shared, E and E+1 ints.
__device__ inline void group_pairs(const int *ids, int n_pairs, int n_experts, int k, int token_tile, int *count,
                                   int *off, const GroupOut &o) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
  for (int e = warp; e < n_experts; e += n_warps) {
    int c = 0;
    for (int i0 = 0; i0 < n_pairs; i0 += 32) {
      const int i = i0 + lane;
      c += __popc(__ballot_sync(0xffffffffu, i < n_pairs && ids[i] == e));
    }
    if (lane == 0) count[e] = c;
  }
  __syncthreads();
  if (warp == 0) {  // offsets and tiles: each lane a run of consecutive experts, placed by a scan over the lanes
    const int per = (n_experts + 31) / 32, e0 = min(n_experts, lane * per), e1 = min(n_experts, e0 + per);
    int slots = 0, tiles = 0;
    for (int e = e0; e < e1; ++e) {
      slots += count[e];
      tiles += (count[e] + token_tile - 1) / token_tile;
    }
    int slots_end = slots, tiles_end = tiles;  // inclusive scans
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const int s = __shfl_up_sync(0xffffffffu, slots_end, d), t = __shfl_up_sync(0xffffffffu, tiles_end, d);
      if (lane >= d) {
        slots_end += s;
        tiles_end += t;
      }
    }
    int acc = slots_end - slots, nt = tiles_end - tiles;
    for (int e = e0; e < e1; ++e) {
      off[e] = acc;
      o.expert_off[e] = acc;
      for (int s = 0; s < count[e]; s += token_tile) o.tiles[nt++] = Tile{e, acc + s, min(token_tile, count[e] - s), 0};
      acc += count[e];
    }
    if (lane == 31) {
      off[n_experts] = slots_end;
      o.expert_off[n_experts] = slots_end;
      *o.n_tiles = tiles_end;
      if (o.tail_counter) *o.tail_counter = 0;
    }
  }
  __syncthreads();
  for (int e = warp; e < n_experts; e += n_warps) {
    int base = off[e];
    for (int i0 = 0; i0 < n_pairs; i0 += 32) {
      const int i = i0 + lane;
      const bool mine = i < n_pairs && ids[i] == e;
      const uint32_t m = __ballot_sync(0xffffffffu, mine);
      if (mine) {
        const int s = base + __popc(m & ((1u << lane) - 1u));
        o.slot_token[s] = i / k;
        o.slot_of[i] = s;
      }
      base += __popc(m);
    }
  }
}

inline GroupOut group_out(const Workspace &w) {
  return GroupOut{w.slot_token, w.slot_of, w.expert_off, w.tiles, w.n_tiles, w.tail_counter};
}

// Dot product of 8 bf16 weights (one 16-byte load) with 8 fp32 activations p (first 4) and q (last 4): the router
// GEMV's inner step.
__device__ __forceinline__ float dot_bf16x8(const uint4 &w, const float4 &p, const float4 &q) {
  const uint32_t wu[4] = {w.x, w.y, w.z, w.w};
  float wf[8];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    wf[2 * i] = __uint_as_float(wu[i] << 16);
    wf[2 * i + 1] = __uint_as_float(wu[i] & 0xffff0000u);
  }
  return wf[0] * p.x + wf[1] * p.y + wf[2] * p.z + wf[3] * p.w + wf[4] * q.x + wf[5] * q.y + wf[6] * q.z + wf[7] * q.w;
}

// Top k of one token's router logits `lg` (n_experts <= 32 * kPerLane), one warp: every lane ends with the k largest in
// descending order and their expert ids (ties to the lower id), for the caller's softmax over them.
template <int kPerLane>
__device__ __forceinline__ void warp_top_k(const float *lg, int n_experts, int k, float *chosen, int *chosen_id) {
  const int lane = threadIdx.x & 31;
  float v[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int e = lane + 32 * j;
    v[j] = e < n_experts ? lg[e] : -FLT_MAX;
  }
  uint32_t taken = 0;  // bit j: expert lane + 32 j already chosen
  for (int r = 0; r < k; ++r) {
    float best = -FLT_MAX;
    int best_e = 0x7fffffff;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int e = lane + 32 * j;
      if (e < n_experts && !(taken >> j & 1u) && (v[j] > best || best_e == 0x7fffffff)) {
        best = v[j];
        best_e = e;
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(0xffffffffu, best, o);
      const int oe = __shfl_xor_sync(0xffffffffu, best_e, o);
      if (ob > best || (ob == best && oe < best_e)) {
        best = ob;
        best_e = oe;
      }
    }
    if ((best_e & 31) == lane) taken |= 1u << (best_e >> 5);
    chosen[r] = best;
    chosen_id[r] = best_e;
  }
}

}  // namespace ms::cuda::moe
