// Device helpers shared by the MXFP4 expert matmul kernels (decode: moe_mxfp4_decode.cu, prefill:
// moe_mxfp4_matmul.cu): arguments, E2M1 dequantisation straight into fp16 mma fragments, the mma itself, SwiGLU.
//
// Dequantisation without a lookup table: an E2M1 nibble s|e1 e0|m placed at fp16 bits 15|11 10|9 is exactly
// value * 2^-14 (code 1 lands on the fp16 subnormal 2^-15, which tensor cores take as is). The 2^14 and the block's
// E8M0 factor 2^(u8-127) are applied in fp32 to the partial sum of each 32-element block: both k-steps of an mma pair
// lie inside one block, so one multiply per accumulator per block suffices and any scale in range stays exact.
//
// Fragment layout (mma.m16n8k16, weights = A rows, tokens = B columns): the reduction order inside a k-step is free as
// long as A and B agree. Thread (g = lane/4, t = lane%4) takes bytes 4t..4t+3 of a row's 16-byte block, i.e. elements
// 8t..8t+7; byte i becomes the fp16 pair of A registers for k-step i/2, slot (i%2 ? hi : lo). The matching B values
// are x[8t..8t+7] of that block for token g: one 128-bit load. Weights and activations are staged in shared memory
// with cp.async (16-byte copies, no registers held while in flight).
#pragma once

#include <cuda_fp16.h>

#include "cuda/moe/moe_combine.cuh"
#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda::moe {

struct MatmulArgs {
  const uint8_t *blocks;  // expert 0, [E][rows][K/32][16]
  const uint8_t *scales;  // [E][rows][K/32]
  const uint16_t *bias;   // bf16 [E][rows]
  int rows, K;
  const void *in;         // fp16 [.][K]: gate_up x (indexed by token through in_row), down act (by slot)
  const int *in_row;      // slot -> input row (nullptr: the slot itself)
  const Tile *tiles;
  const int *n_tiles;
  void *out;              // gate_up: __half act[slot][rows/2]; down: float dn[slot][rows]
  int ldb;                // row stride of the staged activations (in halves), set by the kernel's launcher
  int ntb;                // decode: token rows staged per tile (min(8, n_tokens))
  float limit, alpha;
  bool evict_first;       // decode kernel: weights (each read once per step) loaded with an L2 evict_first policy
  // Decode down kernel with 8 warps: with tail_counter set, the last block to finish runs the combine for tail_tokens
  // tokens (moe_combine.cuh) and leaves the counter at zero again.
  int *tail_counter;
  int tail_tokens;
  CombineArgs tail;
};

constexpr int kDecodeTokenTile = 8;

// Decode kernel (moe_mxfp4_decode.cu).
// Returns whether the launch runs the combine in its tail (a.tail_counter set, down, 8 warps per block).
bool launch_decode(const MatmulArgs &a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream);

// Prefill kernel v2 (moe_mxfp4_prefill_v2.cu): token tile 128, each block dequantises its weights once into shared
// memory (fp16, block scales folded in) for ldmatrix + mma.sync. prepare_prefill_v2: shared-memory opt-in (once).
constexpr int kPrefillV2TokenTile = 128;
void launch_prefill_v2(const MatmulArgs &a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream);
void prepare_prefill_v2();

__device__ __forceinline__ void cp_async16(void *smem, const void *gmem) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(s), "l"(gmem) : "memory");
}
// As cp_async16, with an L2 eviction policy from l2_evict_first_policy() for the line it reads.
__device__ __forceinline__ void cp_async16_hint(void *smem, const void *gmem, uint64_t policy) {
  const uint32_t s = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global.L2::cache_hint [%0], [%1], 16, %2;" ::"r"(s), "l"(gmem), "l"(policy)
               : "memory");
}
// Every access made with this policy gets L2 evict_first priority: its lines are the first to go when L2 needs room.
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
  uint64_t policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

// 8 E2M1 nibbles (4 bytes) -> 4 fp16 pairs (lo nibble in the low half), each value * 2^-14.
__device__ __forceinline__ void dequant_e2m1x8(uint32_t q, uint32_t h[4]) {
  const uint32_t hb_even = ((q << 4) & 0x80808080u) | ((q << 1) & 0x0e0e0e0eu);
  const uint32_t hb_odd = (q & 0x80808080u) | ((q >> 3) & 0x0e0e0e0eu);
  h[0] = __byte_perm(hb_even, hb_odd, 0x4400) & 0xff00ff00u;
  h[1] = __byte_perm(hb_even, hb_odd, 0x5511) & 0xff00ff00u;
  h[2] = __byte_perm(hb_even, hb_odd, 0x6622) & 0xff00ff00u;
  h[3] = __byte_perm(hb_even, hb_odd, 0x7733) & 0xff00ff00u;
}

// 2^(u8 - 127) * 2^14 in one integer multiply-add. Exponents are capped at u8 = 240 (2^113), far beyond any trained
// weight; the CPU path gives inf for 241..255, which no checkpoint contains.
__device__ __forceinline__ float block_scale(uint32_t u8) {
  return __uint_as_float(min(u8, 240u) * (1u << 23) + (14u << 23));
}

__device__ __forceinline__ void mma_f16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float swiglu(float gate, float lin, float limit, float alpha) {
  const float g = fminf(gate, limit);
  const float u = fminf(fmaxf(lin, -limit), limit);
  return g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
}


}  // namespace ms::cuda::moe
