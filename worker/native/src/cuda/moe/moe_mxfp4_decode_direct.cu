// Grouped MXFP4 expert matmul for decode, weights streamed straight into registers (opt-in:
// MODELSERVE_MOE_DECODE_DIRECT=1, or =2 for two chunks in flight instead of three; moe_mxfp4_decode.cu stages them
// through shared memory instead).
//
// Why a second decode kernel: at batch 1 the MoE is a pure weight stream (4 experts x 13 MB per layer for 20b), and the
// staged kernel's blocks are few (shared memory allows ~3 per SM), each walking 3-4 row groups behind a
// __syncthreads pipeline, so the DRAM queue drains between groups and the last blocks set the kernel's length. Here a
// block is one row group of 16 rows split over 4 warps along K, blocks are small (registers are the only limit) and
// many (1,440 for 20b's gate_up at batch 1), and every warp keeps 2-3 chunks of loads in flight with no barrier
// until its last chunk.
//
// Chunk = 4 consecutive 32-element blocks of K for the 16 rows. Thread (g, t) loads, with one 16-byte load per row,
// block b + t of rows g and g + 8 (the quad of g covers 64 contiguous bytes of each row: whole sectors), then a 4 x 4
// transpose of 32-bit words within the quad (two shuffle rounds) leaves it holding bytes 4t..4t+3 of blocks b..b+3,
// which is the mma fragment layout of moe_mxfp4_common.cuh (elements 8t..8t+7 of each block). Scales: thread (g, t)
// loads those of block b + t for its two rows and the quad exchanges them. Activations (min(8, tokens) rows, fp16)
// are staged in shared memory once per block. The 4 warps' partial sums are added by warp 0 in a fixed order, so
// results do not depend on timing. The L2 evict-first hint (MatmulArgs::evict_first) is not used here.
#include <algorithm>
#include <mutex>

#include "common/env.h"
#include "cuda/moe/moe_mxfp4_common.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kWarps = 4;  // along K

struct Chunk {
  uint4 lo, hi;    // block b + t of rows g and g + 8
  uint32_t scale;  // their E8M0 scales: row g in bits 0-7, row g + 8 in bits 8-15
};

__device__ __forceinline__ Chunk load_chunk(const uint8_t *rows_g, const uint8_t *rows_g8, const uint8_t *sc_g,
                                            const uint8_t *sc_g8, int b, int kb1, int t) {
  Chunk c{make_uint4(0u, 0u, 0u, 0u), make_uint4(0u, 0u, 0u, 0u), 0u};
  const int blk = b + t;
  if (blk < kb1) {
    c.lo = __ldg(reinterpret_cast<const uint4 *>(rows_g) + blk);
    c.hi = __ldg(reinterpret_cast<const uint4 *>(rows_g8) + blk);
    c.scale = uint32_t(__ldg(sc_g + blk)) | (uint32_t(__ldg(sc_g8 + blk)) << 8);
  }
  return c;
}

// Quad transpose of 32-bit words: lane t holds w[j] = word j of block b + t; afterwards w[j] = word t of block b + j.
// Stage k exchanges, with the lane whose t differs in bit k, the words whose index differs from t in bit k.
__device__ __forceinline__ void quad_transpose(uint32_t w[4], int t) {
  {
    const bool odd = t & 1;
    const uint32_t s0 = odd ? w[0] : w[1], s1 = odd ? w[2] : w[3];
    const uint32_t r0 = __shfl_xor_sync(0xffffffffu, s0, 1), r1 = __shfl_xor_sync(0xffffffffu, s1, 1);
    if (odd) w[0] = r0, w[2] = r1;
    else w[1] = r0, w[3] = r1;
  }
  {
    const bool high = t & 2;
    const uint32_t s0 = high ? w[0] : w[2], s1 = high ? w[1] : w[3];
    const uint32_t r0 = __shfl_xor_sync(0xffffffffu, s0, 2), r1 = __shfl_xor_sync(0xffffffffu, s1, 2);
    if (high) w[0] = r0, w[1] = r1;
    else w[2] = r0, w[3] = r1;
  }
}

// kDepth: chunks in flight per warp (3: 107 registers, 4 blocks per SM; 2: fewer registers, more blocks).
template <bool kGateUp, int kDepth>
__global__ void __launch_bounds__(kWarps * 32) mxfp4_decode_direct_kernel(const MatmulArgs a) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nb = a.K / 32, n_groups = a.rows / 16;
  // gate_up needs the router's tile list first; down may read it at once (every gate_up block waited for the router
  // before down could launch) and starts its weight loads before waiting for gate_up's activations.
  if constexpr (kGateUp) pdl_wait();
  const int n_tiles = *a.n_tiles;
  const Tile tl = a.tiles[blockIdx.y];  // the list has max_tiles entries: always in bounds
  if (int(blockIdx.y) >= n_tiles || int(blockIdx.x) >= n_groups) {
    if constexpr (!kGateUp) pdl_wait();  // complete only after the wait (completion stays transitive, pdl.cuh)
    return;
  }
  const size_t row0 = size_t(tl.expert) * a.rows + size_t(blockIdx.x) * 16;
  const uint8_t *rows_g = a.blocks + (row0 + g) * nb * 16, *rows_g8 = a.blocks + (row0 + g + 8) * nb * 16;
  const uint8_t *sc_g = a.scales + (row0 + g) * nb, *sc_g8 = a.scales + (row0 + g + 8) * nb;
  const int per = (nb + kWarps - 1) / kWarps;  // this warp's K slice, in 32-element blocks
  const int kb0 = min(nb, warp * per), kb1 = min(nb, kb0 + per);

  Chunk ring[kDepth];
#pragma unroll
  for (int i = 0; i < kDepth; ++i) ring[i] = load_chunk(rows_g, rows_g8, sc_g, sc_g8, kb0 + 4 * i, kb1, t);

  if constexpr (!kGateUp) pdl_wait();  // act is gate_up's output
  pdl_trigger();
  extern __shared__ __align__(16) uint8_t smem[];
  __half *sb = reinterpret_cast<__half *>(smem);  // [ntb][ldb]
  float *red = reinterpret_cast<float *>(smem + (size_t(a.ntb) * a.ldb * 2 + 15) / 16 * 16);
  const int k8 = a.K / 8;
  for (int idx = threadIdx.x; idx < a.ntb * k8; idx += blockDim.x) {
    const int j = idx / k8, c = idx - j * k8;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (j < tl.count) {
      const int s = tl.first_slot + j;
      v = *(reinterpret_cast<const uint4 *>(static_cast<const __half *>(a.in) + size_t(a.in_row ? a.in_row[s] : s) *
                                                                              a.K) + c);
    }
    *reinterpret_cast<uint4 *>(sb + j * a.ldb + 8 * c) = v;
  }
  __syncthreads();

  const bool has_b = g < a.ntb;
  const uint8_t *sbg = reinterpret_cast<const uint8_t *>(sb + (has_b ? g : 0) * a.ldb + 8 * t);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (int b = kb0; b < kb1; b += 4 * kDepth) {
#pragma unroll
    for (int i = 0; i < kDepth; ++i) {
      const int cb = b + 4 * i;
      if (cb >= kb1) break;
      Chunk c = ring[i];
      ring[i] = load_chunk(rows_g, rows_g8, sc_g, sc_g8, cb + 4 * kDepth, kb1, t);  // keep kDepth chunks in flight
      uint32_t lo[4] = {c.lo.x, c.lo.y, c.lo.z, c.lo.w}, hi[4] = {c.hi.x, c.hi.y, c.hi.z, c.hi.w};
      quad_transpose(lo, t);
      quad_transpose(hi, t);
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const uint32_t s = __shfl_sync(0xffffffffu, c.scale, (lane & ~3) | j);  // block cb + j's scales
        if (cb + j >= kb1) continue;  // uniform across the warp
        uint32_t bf[4] = {0u, 0u, 0u, 0u};
        if (has_b) {
          const uint4 v = *reinterpret_cast<const uint4 *>(sbg + (cb + j) * 64);
          bf[0] = v.x, bf[1] = v.y, bf[2] = v.z, bf[3] = v.w;
        }
        uint32_t wl[4], wh[4];
        dequant_e2m1x8(lo[j], wl);
        dequant_e2m1x8(hi[j], wh);
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        mma_f16(d, wl[0], wh[0], wl[1], wh[1], bf[0], bf[1]);
        mma_f16(d, wl[2], wh[2], wl[3], wh[3], bf[2], bf[3]);
        const float sc0 = block_scale(s & 0xffu), sc1 = block_scale((s >> 8) & 0xffu);
        acc[0] += d[0] * sc0;
        acc[1] += d[1] * sc0;
        acc[2] += d[2] * sc1;
        acc[3] += d[3] * sc1;
      }
    }
  }

  if (warp > 0) {
#pragma unroll
    for (int q = 0; q < 4; ++q) red[((warp - 1) * 32 + lane) * 4 + q] = acc[q];
  }
  __syncthreads();
  if (warp > 0) return;
#pragma unroll
  for (int w = 0; w < kWarps - 1; ++w)
#pragma unroll
    for (int q = 0; q < 4; ++q) acc[q] += red[(w * 32 + lane) * 4 + q];

  // C fragment: acc[0..1] = row g, tokens 2t, 2t+1; acc[2..3] = row g + 8 (as moe_mxfp4_decode.cu's epilogue).
  const int rbase = blockIdx.x * 16;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = rbase + h * 8 + g;
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

// Staged activations: rows of K halves padded to 64 bytes past a multiple of 128, so that two token rows' 16-byte
// reads in one quarter-warp phase fall on different banks (the staged kernel's pitch).
int direct_ldb(int K) { return K + ((32 - K % 64) + 64) % 64; }

size_t direct_smem(int K, int ntb) {
  return (size_t(ntb) * direct_ldb(K) * 2 + 15) / 16 * 16 + size_t(kWarps - 1) * 32 * 4 * sizeof(float);
}

// MODELSERVE_MOE_DECODE_DIRECT: 0 (default) the staged kernel; 1 or 3 this kernel with 3 chunks in flight; 2 with 2.
int direct_depth() {
  static const int d = env_choice("MODELSERVE_MOE_DECODE_DIRECT", 0, {0, 1, 2, 3});
  return d == 1 ? 3 : d;
}

template <int kDepth>
void opt_in(size_t smem) {
  static std::mutex mu;
  static size_t opted = 48 * 1024;
  std::lock_guard<std::mutex> lock(mu);
  if (smem <= opted) return;
  cudaFuncSetAttribute(mxfp4_decode_direct_kernel<true, kDepth>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       int(smem));
  cudaFuncSetAttribute(mxfp4_decode_direct_kernel<false, kDepth>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                       int(smem));
  opted = smem;
}

template <int kDepth>
void launch_depth(const MatmulArgs &a, bool gate_up, const dim3 &grid, size_t smem, cudaStream_t stream) {
  if (gate_up) launch_pdl(mxfp4_decode_direct_kernel<true, kDepth>, grid, dim3(kWarps * 32), smem, stream, a);
  else launch_pdl(mxfp4_decode_direct_kernel<false, kDepth>, grid, dim3(kWarps * 32), smem, stream, a);
}

}  // namespace

bool decode_direct_enabled() { return direct_depth() != 0; }

void prepare_decode_direct(int hidden, int inter, int max_tokens) {
  const int ntb = std::min(kDecodeTokenTile, std::max(1, max_tokens));
  const size_t smem = std::max(direct_smem(hidden, ntb), direct_smem(inter, ntb));
  if (direct_depth() == 2) opt_in<2>(smem);
  else opt_in<3>(smem);
}

void launch_decode_direct(MatmulArgs a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream) {
  a.ldb = direct_ldb(a.K);
  const size_t smem = direct_smem(a.K, a.ntb);
  const dim3 grid(a.rows / 16, max_tiles(n_pairs, n_experts, kDecodeTokenTile));
  if (direct_depth() == 2) launch_depth<2>(a, gate_up, grid, smem, stream);
  else launch_depth<3>(a, gate_up, grid, smem, stream);
}

}  // namespace ms::cuda::moe
