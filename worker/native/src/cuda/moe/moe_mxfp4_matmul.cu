// Grouped MXFP4 expert matmul on tensor cores for prefill and large batches (token tile 64; with
// MODELSERVE_MOE_PREFILL_V2=1 prefill takes moe_mxfp4_prefill_v2.cu's tile of 128 instead), and for mid-size decode
// batches (token tile 16: ~4-24 tokens per expert, e.g. 64 sequences of 20b, where the decode kernel's tile of 8 would
// read an expert's weights again for every 8 of its tokens and dequantise them each time).
//
// Each block takes one tile (an expert and up to kTokens of its slots) and 256 output rows (8 warps x 32). The tile's
// activations are staged in shared memory as fp16, 512 columns of K at a time; every warp streams its weight rows
// through its own cp.async ring, dequantises them in registers (moe_mxfp4_common.cuh) and feeds mma.sync.m16n8k16 with
// fp32 accumulation, reusing each dequantised fragment for the 8 n-tiles of the token tile.
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/env.h"
#include "cuda/moe/moe_mxfp4_common.cuh"

namespace ms::cuda::moe {
namespace {

// Stage columns [k0, k0 + kc) of the tile's NT fp16 input rows into shared memory (rows past `count` are zero).
template <int NT>
__device__ __forceinline__ void stage_inputs(const MatmulArgs &a, const Tile &tl, int k0, int kc, __half *sb) {
  const int q = kc / 8;  // 16-byte pieces per row
  for (int idx = threadIdx.x; idx < NT * q; idx += blockDim.x) {
    const int j = idx / q, c = idx - j * q;
    uint4 v = make_uint4(0u, 0u, 0u, 0u);
    if (j < tl.count) {
      const int s = tl.first_slot + j;
      const size_t row = a.in_row ? a.in_row[s] : s;
      v = *reinterpret_cast<const uint4 *>(static_cast<const __half *>(a.in) + row * a.K + k0 + c * 8);
    }
    *reinterpret_cast<uint4 *>(sb + j * a.ldb + c * 8) = v;
  }
}

constexpr int kWarps = 8;
constexpr int kTokens = 64;                            // prefill token tile
constexpr int kMidTokens = 16;                         // mid-batch token tile
constexpr int kRows = 32;                              // rows per warp (two m16 tiles)
constexpr int kStages = 3;
constexpr int kBlocksPerStage = 8;                     // 32-element blocks per row per stage
constexpr int kChunkBlocks = 2 * kBlocksPerStage;      // B staged 512 elements of K at a time
constexpr int kRowPitch = kBlocksPerStage * 16 + 16;   // padded: conflict-free fragment reads
constexpr int kStageBytes = kRows * kRowPitch;
constexpr int kLdb = kChunkBlocks * 32 + 32;           // halves; 64 bytes past a multiple of 128
__host__ __device__ constexpr int b_bytes(int nt) { return nt * kLdb * 2; }

__host__ __device__ constexpr int scale_bytes(int nb) { return (kRows * nb + 15) / 16 * 16; }
__host__ __device__ constexpr int warp_smem(int nb) { return kStages * kStageBytes + scale_bytes(nb); }

// Each warp owns 32 rows of the expert and streams their blocks through its own cp.async ring (as the decode kernel);
// the block stages the tile's 64 token rows 512 columns at a time, the only block-wide barriers.
template <bool kGateUp, int kTokens>
__global__ void __launch_bounds__(kWarps * 32) mxfp4_prefill_kernel(const MatmulArgs a) {
  pdl_wait();
  pdl_trigger();
  if (int(blockIdx.y) >= *a.n_tiles) return;
  const Tile tl = a.tiles[blockIdx.y];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nb = a.K / 32;
  const int row0 = (blockIdx.x * kWarps + warp) * kRows;
  const bool active = row0 < a.rows;  // rows is a multiple of 32 (checked on the host)
  extern __shared__ __align__(16) uint8_t smem[];
  __half *sb = reinterpret_cast<__half *>(smem);
  uint8_t *ring = smem + b_bytes(kTokens) + warp * warp_smem(nb);
  uint8_t *sscale = ring + kStages * kStageBytes;
  const size_t first_row = size_t(tl.expert) * a.rows + row0;
  const uint8_t *gw = a.blocks + first_row * nb * 16;
  const uint8_t *gs = a.scales + first_row * nb;
  const int n_stages = (nb + kBlocksPerStage - 1) / kBlocksPerStage;
  auto issue = [&](int st) {
    if (st < n_stages) {
      const int b0 = st * kBlocksPerStage, cb = min(kBlocksPerStage, nb - b0);
      uint8_t *dst = ring + (st % kStages) * kStageBytes;
#pragma unroll
      for (int i = 0; i < kRows * kBlocksPerStage / 32; ++i) {
        const int c = lane + 32 * i, r = c / kBlocksPerStage, j = c % kBlocksPerStage;
        if (j < cb) cp_async16(dst + r * kRowPitch + j * 16, gw + (size_t(r) * nb + b0 + j) * 16);
      }
    }
    cp_async_commit();
  };
  if (active) {
    for (int c = lane; c < kRows * nb / 16; c += 32) cp_async16(sscale + 16 * c, gs + 16 * c);
    cp_async_commit();
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) issue(st);
  }

  float acc[2][kTokens / 8][4];
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int n = 0; n < kTokens / 8; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mi][n][i] = 0.f;

  auto block = [&](const uint8_t *sa, int j, int b, int bb) {  // stage slot, block in stage, in K, in B chunk
    uint32_t lo[2][4], hi[2][4];
    float sc[2][2];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
      const int r = mi * 16 + g;
      dequant_e2m1x8(*reinterpret_cast<const uint32_t *>(sa + r * kRowPitch + j * 16), lo[mi]);
      dequant_e2m1x8(*reinterpret_cast<const uint32_t *>(sa + (r + 8) * kRowPitch + j * 16), hi[mi]);
      sc[mi][0] = block_scale(sscale[r * nb + b]);
      sc[mi][1] = block_scale(sscale[(r + 8) * nb + b]);
    }
#pragma unroll
    for (int n = 0; n < kTokens / 8; ++n) {
      const uint4 v = *reinterpret_cast<const uint4 *>(sb + (n * 8 + g) * kLdb + bb * 32 + 8 * t);
#pragma unroll
      for (int mi = 0; mi < 2; ++mi) {
        float c[4] = {0.f, 0.f, 0.f, 0.f};
        mma_f16(c, lo[mi][0], hi[mi][0], lo[mi][1], hi[mi][1], v.x, v.y);
        mma_f16(c, lo[mi][2], hi[mi][2], lo[mi][3], hi[mi][3], v.z, v.w);
        acc[mi][n][0] += c[0] * sc[mi][0];
        acc[mi][n][1] += c[1] * sc[mi][0];
        acc[mi][n][2] += c[2] * sc[mi][1];
        acc[mi][n][3] += c[3] * sc[mi][1];
      }
    }
  };

  int st = 0;
  for (int cb0 = 0; cb0 < nb; cb0 += kChunkBlocks) {
    const int kc = min(kChunkBlocks, nb - cb0) * 32;
    __syncthreads();  // the previous chunk is no longer read
    stage_inputs<kTokens>(a, tl, cb0 * 32, kc, sb);
    __syncthreads();
    if (active) {
      for (; st * kBlocksPerStage < min(nb, cb0 + kChunkBlocks); ++st) {
        cp_async_wait<kStages - 2>();
        __syncwarp();
        const uint8_t *sa = ring + (st % kStages) * kStageBytes + 4 * t;
        const int b0 = st * kBlocksPerStage;
        if (b0 + kBlocksPerStage <= nb) {
#pragma unroll 2
          for (int j = 0; j < kBlocksPerStage; ++j) block(sa, j, b0 + j, b0 + j - cb0);
        } else {
          for (int j = 0; j < nb - b0; ++j) block(sa, j, b0 + j, b0 + j - cb0);
        }
        __syncwarp();
        issue(st + kStages - 1);
      }
    }
  }
  if (!active) return;
  cp_async_wait<0>();

  // Epilogue. C fragment: acc[..][0..1] = row g, tokens 2t, 2t+1; acc[..][2..3] = row g + 8.
#pragma unroll
  for (int mi = 0; mi < 2; ++mi)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = row0 + mi * 16 + h * 8 + g;
      const float bias = bf16_to_float(a.bias[size_t(tl.expert) * a.rows + row]);
#pragma unroll
      for (int n = 0; n < kTokens / 8; ++n)
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const float v = acc[mi][n][2 * h + u] + bias;
          const int j = n * 8 + 2 * t + u;
          if constexpr (kGateUp) {
            // Interleaved rows: even = gate, odd = linear; the odd row of a pair sits in the lane 4 above.
            const float lin = __shfl_xor_sync(0xffffffffu, v, 4);
            if (!(g & 1) && j < tl.count)
              static_cast<__half *>(a.out)[size_t(tl.first_slot + j) * (a.rows / 2) + row / 2] =
                  __float2half_rn(swiglu(v, lin, a.limit, a.alpha));
          } else {
            if (j < tl.count) static_cast<float *>(a.out)[size_t(tl.first_slot + j) * a.rows + row] = v;
          }
        }
    }
}

template <bool kGateUp, int NT>
void launch_prefill(MatmulArgs a, int n_pairs, int n_experts, cudaStream_t stream) {
  auto kernel = mxfp4_prefill_kernel<kGateUp, NT>;
  a.ldb = kLdb;
  const size_t smem = b_bytes(NT) + size_t(kWarps) * warp_smem(a.K / 32);
  prepare_prefill();
  const int rows_per_block = kWarps * kRows;
  const dim3 grid((a.rows + rows_per_block - 1) / rows_per_block, max_tiles(n_pairs, n_experts, NT));
  launch_pdl(kernel, grid, dim3(kWarps * 32), smem, stream, a);
}

// Returns whether the kernel also ran the combine (decode down kernel with a tail; see MatmulArgs).
template <bool kGateUp>
bool dispatch(const MatmulArgs &a, int n_pairs, int n_experts, int token_tile, cudaStream_t stream) {
  if (token_tile == kDecodeTokenTile)
    return launch_decode(a, kGateUp, n_pairs, n_experts, stream);
  else if (token_tile == kMidTokens)
    launch_prefill<kGateUp, kMidTokens>(a, n_pairs, n_experts, stream);
  else if (token_tile == kPrefillV2TokenTile)
    launch_prefill_v2(a, kGateUp, n_pairs, n_experts, stream);
  else
    launch_prefill<kGateUp, kTokens>(a, n_pairs, n_experts, stream);
  return false;
}

}  // namespace

void prepare_prefill() {
  // Opt both kernels in to the most shared memory a block may have (K <= 6144 needs up to ~225 KB).
  static std::once_flag once;
  std::call_once(once, [] {
    int device = 0, optin = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaFuncSetAttribute(mxfp4_prefill_kernel<true, kTokens>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    cudaFuncSetAttribute(mxfp4_prefill_kernel<false, kTokens>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    cudaFuncSetAttribute(mxfp4_prefill_kernel<true, kMidTokens>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    cudaFuncSetAttribute(mxfp4_prefill_kernel<false, kMidTokens>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  });
  prepare_prefill_v2();
}

int choose_token_tile(int n_tokens, int top_k, int n_experts) {
  // MODELSERVE_MOE_TOKEN_TILE=8|16|64|128 forces a tile (for benchmarks; 128 = the v2 prefill kernel, 64 = its predecessor); read once.
  static const int forced =
      env_choice("MODELSERVE_MOE_TOKEN_TILE", 0, {kDecodeTokenTile, kMidTokens, kTokens, kPrefillV2TokenTile});
  if (forced) return forced;
  // MODELSERVE_MOE_MID_TILE=0: tiles of 8 up to 8 pairs per expert, then 64 (as before)
  static const bool no_mid = !env_switch("MODELSERVE_MOE_MID_TILE", true);
  if (no_mid) return (long long)n_tokens * top_k <= 8LL * n_experts ? kDecodeTokenTile : kTokens;
  // Decode (<= 4 (token, expert) pairs per expert on average): many small blocks, every SM streaming weights. Mid
  // batches (<= 24 per expert): tiles of 16, so an expert's weights are read and dequantised once for up to 16 of
  // its tokens. Prefill: big tiles so each dequantised weight feeds 64 tokens.
  const long long pairs = (long long)n_tokens * top_k;
  if (pairs <= 4LL * n_experts) return kDecodeTokenTile;
  if (pairs <= 24LL * n_experts) return kMidTokens;
  // Prefill: moe_mxfp4_prefill_v2.cu's tile of 128 (on an H100, 1,024 tokens: 29.0 ms of MoE instead of 47.6 with the
  // tile of 64; docs/benchmarks/cuda.md). MODELSERVE_MOE_PREFILL_V2=0 keeps the tile-64 kernel.
  static const bool v2 = env_switch("MODELSERVE_MOE_PREFILL_V2", true);
  return v2 ? kPrefillV2TokenTile : kTokens;
}

void launch_gate_up_swiglu(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream,
                           bool evict_first) {
  MatmulArgs a{};
  a.evict_first = evict_first;
  a.blocks = l.gate_up_blocks;
  a.scales = l.gate_up_scales;
  a.bias = l.gate_up_bias;
  a.rows = 2 * l.inter;
  a.K = l.hidden;
  a.in = w.xh;
  a.in_row = w.slot_token;
  a.tiles = w.tiles;
  a.n_tiles = w.n_tiles;
  a.out = w.act;
  a.limit = l.swiglu_limit;
  a.alpha = l.swiglu_alpha;
  a.ntb = std::min(kDecodeTokenTile, n_tokens);  // an expert gets each token at most once
  dispatch<true>(a, n_tokens * l.top_k, l.n_experts, token_tile, stream);
}

bool launch_down(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream,
                 bool evict_first, const CombineArgs *tail) {
  MatmulArgs a{};
  a.evict_first = evict_first;
  a.blocks = l.down_blocks;
  a.scales = l.down_scales;
  a.bias = l.down_bias;
  a.rows = l.hidden;
  a.K = l.inter;
  a.in = w.act;
  a.in_row = nullptr;
  a.tiles = w.tiles;
  a.n_tiles = w.n_tiles;
  a.out = w.dn;
  a.ntb = std::min(kDecodeTokenTile, n_tokens);
  if (tail && token_tile == kDecodeTokenTile && n_tokens <= kDecodeTokenTile) {
    a.tail_counter = w.tail_counter;
    a.tail_tokens = n_tokens;
    a.tail = *tail;
  }
  return dispatch<false>(a, n_tokens * l.top_k, l.n_experts, token_tile, stream);
}

}  // namespace ms::cuda::moe
