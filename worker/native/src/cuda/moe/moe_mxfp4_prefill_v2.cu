// Grouped MXFP4 expert matmul for prefill, version 2: token tile 128 (kPrefillV2TokenTile), chosen with
// MODELSERVE_MOE_PREFILL_V2=1 (off by default until measured on a GPU; choose_token_tile picks the tile, the dispatch
// the kernel).
//
// The tile-64 kernel dequantises each weight in every warp's registers once per 64 tokens and scales fp32 partial
// sums per 32-element block (two FMAs per mma), so at ~128 tokens per expert (1,024-token 20b prefill) it spends more
// issue slots on dequantisation and rescaling than on mma. Here a block takes 256 expert rows x 128 token slots and,
// for each stage of 64 columns of K:
//   - every thread dequantises one row's 64 weights ONCE for the block, into shared memory as fp16 with the block
//     scale already folded in (moe_mxfp4_common.cuh's E2M1 bit trick, then one fp16 multiply per pair);
//   - 8 warps (4 along the rows x 2 along the tokens, 64 x 64 outputs each, fp32 accumulators) run a plain
//     ldmatrix + mma.sync.m16n8k16 loop over that fp16 tile and the stage's fp16 activations;
//   - raw MXFP4 bytes and activations arrive through a 4-stage cp.async ring (activation rows gathered by slot,
//     zero-filled past the tile's count and past K), the fp16 weights are double-buffered: stage k+1 is dequantised
//     while stage k's mma run, with one __syncthreads per stage.
// Warps whose 64 tokens hold fewer valid slots skip whole 8-token mma columns (partial and small tiles are cheaper).
//
// Scale folding. fp16 cannot hold every E8M0 factor, so each row is shifted by its own largest (capped) block exponent
// m >= 2: a weight is stored as v * 2^(s - m + 1) (|.| <= 12), exact for blocks within 24 binades of the row's largest
// factor, while smaller ones round into fp16 subnormals (absolute error < 2^-25 of the row's largest block factor);
// the epilogue multiplies the fp32 sum by 2^(m - 128) and adds the bias. E8M0 bytes above 240 are capped at 240 as in
// the other MoE kernels.
//
// Shared-memory layouts (16-byte chunks XOR-swizzled so that 8 consecutive rows at one chunk hit 8 bank groups, for
// ldmatrix, the dequantisation stores and the cp.async copies alike):
//   A (fp16 weights)      [256 rows][64 k]   row-major, 128-byte rows: the mma A operand (row-major 16x16)
//   B (fp16 activations)  [128 slots][64 k]  128-byte rows: the mma B operand (16x8 "col", k contiguous per token)
//   raw (MXFP4 bytes)     [256 rows][2 blocks of 16 bytes]
//   row exponents [256] int, block scales [256][K/32] bytes (the rows' whole scale table, loaded once)
#include <cuda_fp16.h>

#include <mutex>

#include "cuda/moe/moe_mxfp4_common.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kThreads = 256;
constexpr int kBM = 256;                    // expert rows per block: one per thread when dequantising
constexpr int kBN = kPrefillV2TokenTile;    // token slots per block
constexpr int kBK = 64;                     // columns of K per stage: two MXFP4 blocks
constexpr int kStages = 4;                  // cp.async ring depth (raw weights + activations)
constexpr int kABytes = kBM * kBK * 2;      // fp16 weights of one stage (32 KB), double-buffered
constexpr int kBBytes = kBN * kBK * 2;      // fp16 activations of one stage (16 KB)
constexpr int kRawBytes = kBM * kBK / 2;    // MXFP4 bytes of one stage (8 KB)
constexpr int kOffB = 2 * kABytes;
constexpr int kOffRaw = kOffB + kStages * kBBytes;
constexpr int kOffRowExp = kOffRaw + kStages * kRawBytes;
constexpr int kOffScales = kOffRowExp + kBM * 4;
static_assert(kThreads == kBM, "one thread per weight row when dequantising");
static_assert(kBM == 4 * 64 && kBN == 2 * 64 && kThreads == 8 * 32, "8 warps of 64 rows x 64 tokens");
static_assert(kBK == 64, "128-byte fp16 rows of 8 swizzled 16-byte chunks; two MXFP4 blocks per stage");

// Shared bytes for a given K (<= 6144: 209 KB). The scale table is 256 * K/32 bytes, a multiple of 16.
size_t smem_bytes(int K) { return size_t(kOffScales) + size_t(kBM) * (K / 32); }

// Byte offset of 16-byte chunk c (0..7) of row r in a tile of 128-byte rows.
__device__ __forceinline__ uint32_t swz(int r, int c) { return uint32_t(r * 128 + ((c ^ (r & 7)) << 4)); }
// Byte offset of MXFP4 block b (0..1) of row r in the raw stage (rows r and r + 4 swap halves: conflict-free reads
// of one block by 8 consecutive rows).
__device__ __forceinline__ uint32_t raw_off(int r, int b) { return uint32_t(r * 32 + ((b ^ ((r >> 2) & 1)) << 4)); }

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte cp.async that writes zeros instead (reading nothing) when !ok.
__device__ __forceinline__ void cp_async16_zfill(void *smem, const void *gmem, bool ok) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(smem_addr(smem)), "l"(gmem), "r"(ok ? 16 : 0)
               : "memory");
}

// Four 8x8 b16 matrices; lanes 8j..8j+7 give the row addresses of matrix j, which lands in register j (thread l holds
// row l/4, columns 2(l%4), 2(l%4)+1).
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}

// fp16x2 multiply, round to nearest, subnormals kept (no .ftz).
__device__ __forceinline__ uint32_t hmul2(uint32_t a, uint32_t b) {
  uint32_t d;
  asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

// fp16 2^(s - m + 15) in both halves, for s <= m (so at most 2^15); 0 below the smallest fp16 subnormal. Applied to
// dequant_e2m1x8's v * 2^-14 it gives v * 2^(s - m + 1).
__device__ __forceinline__ uint32_t fold_factor(int s, int m) {
  const int e = s - m + 30;  // biased fp16 exponent of the factor
  const uint32_t h = e >= 1 ? uint32_t(e) << 10 : (e >= -9 ? 1u << (e + 9) : 0u);
  return h * 0x10001u;
}

// One stage of mma for a warp's 64 rows x 64 tokens: 4 k-steps of 16; per k-step 4 ldmatrix.x4 for the A fragments of
// the 4 m16 tiles, ceil(kN8 / 2) ldmatrix.x4 for the B fragments of the first kN8 n8 tiles (the warp's valid tokens),
// 4 * kN8 mma. kN8 is a template argument so that every variant is one straight-line block the compiler interleaves
// with the dequantisation (a runtime count would predicate each mma). dequant(0) / dequant(1) (the next stage's two
// MXFP4 blocks of this thread's row) are issued between the k-steps. a_lane / b_lane: this lane's ldmatrix row
// address in the stage's A / B buffer (the chunk offset is added here).
template <int kN8, typename Dequant>
__device__ __forceinline__ void mma_stage(float (&acc)[4][8][4], uint32_t a_lane, uint32_t b_lane, int lane,
                                          Dequant &&dequant) {
#pragma unroll
  for (int ks = 0; ks < kBK / 16; ++ks) {
    // A (rows m0 + (l & 15), k-chunk 2ks + l/16): matrices (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15),
    // (rows 8-15, k 8-15) = mma registers a0..a3. B (tokens n0 + (l & 7) + 8 (l/16), k-chunk 2ks + (l/8)%2):
    // (tokens 0-7, k 0-7), (0-7, k 8-15), (8-15, k 0-7), (8-15, k 8-15) = b0, b1 of n8 tile 2p, then of 2p + 1.
    const uint32_t ca = uint32_t(((2 * ks + (lane >> 4)) ^ (lane & 7)) << 4);
    const uint32_t cb = uint32_t(((2 * ks + ((lane >> 3) & 1)) ^ (lane & 7)) << 4);
    uint32_t af[4][4], bf[8][2];
#pragma unroll
    for (int i = 0; i < 4; ++i) ldsm_x4(a_lane + i * 16 * 128 + ca, af[i][0], af[i][1], af[i][2], af[i][3]);
#pragma unroll
    for (int p = 0; 2 * p < kN8; ++p)
      ldsm_x4(b_lane + p * 16 * 128 + cb, bf[2 * p][0], bf[2 * p][1], bf[2 * p + 1][0], bf[2 * p + 1][1]);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < kN8; ++j) mma_f16(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
    if (ks == 1) dequant(0);
    if (ks == 3) dequant(1);
  }
}

template <bool kGateUp>
__global__ void __launch_bounds__(kThreads, 1) mxfp4_prefill_v2_kernel(const MatmulArgs a) {
  pdl_wait();
  pdl_trigger();
  if (int(blockIdx.y) >= *a.n_tiles) return;
  const Tile tl = a.tiles[blockIdx.y];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp & 3, wn = warp >> 2;
  const int nb = a.K / 32, n_stages = (nb + 1) / 2;
  const int row0 = blockIdx.x * kBM, rows_here = min(kBM, a.rows - row0);  // a multiple of 32 (checked on the host)
  extern __shared__ __align__(128) uint8_t smem[];
  uint8_t *const s_raw = smem + kOffRaw;
  const uint8_t *const s_scale = smem + kOffScales;
  int *const s_row_exp = reinterpret_cast<int *>(smem + kOffRowExp);
  const size_t first_row = size_t(tl.expert) * a.rows + row0;
  const uint8_t *const gw = a.blocks + first_row * nb * 16;
  const uint8_t *const gs = a.scales + first_row * nb;

  // Copy roles, fixed for the whole K loop. Weights: rows wr = tid/2 and wr + 128, MXFP4 block tid%2 of each stage
  // (rows wr and wr + 128 share the raw swizzle, hence the fixed 128 * 32-byte distance in the ring).
  const int wb = tid & 1, wr = tid >> 1;
  const bool w_ok0 = wr < rows_here, w_ok1 = wr + 128 < rows_here;
  const uint8_t *const w_src = gw + (size_t(wr) * nb + wb) * 16;  // + 32 bytes per stage
  const size_t w_src_128 = size_t(128) * nb * 16;
  const uint32_t w_dst = raw_off(wr, wb);
  // Activations: token slot bj = tid/2 of the tile, 16-byte chunks bc .. bc + 3 (bc = 4 (tid % 2)) of each stage.
  const int bj = tid >> 1, bc = (tid & 1) * 4;
  const bool b_ok = bj < tl.count;
  const __half *b_src = static_cast<const __half *>(a.in);
  if (b_ok) b_src += size_t(a.in_row ? a.in_row[tl.first_slot + bj] : tl.first_slot + bj) * a.K;
  b_src += bc * 8;  // + 64 halves per stage
  const uint32_t b_dst = uint32_t(bj) * 128, b_x = uint32_t(bj & 7);

  auto issue = [&](int st) {  // stage st into ring slot st % kStages; always one commit group
    if (st < n_stages) {
      const int slot = st % kStages;
      if (2 * st + wb < nb) {
        uint8_t *const raw = s_raw + slot * kRawBytes + w_dst;
        const uint8_t *const src = w_src + size_t(st) * 32;
        if (w_ok0) cp_async16(raw, src);
        if (w_ok1) cp_async16(raw + 128 * 32, src + w_src_128);
      }
      uint8_t *const bs = smem + kOffB + slot * kBBytes + b_dst;
      const __half *const src = b_src + st * kBK;
      const int k0 = st * kBK + bc * 8;
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const bool ok = b_ok && k0 + c * 8 < a.K;
        cp_async16_zfill(bs + (((uint32_t(bc + c)) ^ b_x) << 4), ok ? static_cast<const void *>(src + c * 8) : a.in,
                         ok);
      }
    }
    cp_async_commit();
  };

  // The rows' scale table (one contiguous run of rows_here * nb bytes, a multiple of 16), then the first stages.
  for (int p = tid; p < rows_here * nb / 16; p += kThreads)
    cp_async16(smem + kOffScales + 16 * p, gs + 16 * p);
  cp_async_commit();
#pragma unroll
  for (int st = 0; st < kStages - 1; ++st) issue(st);
  cp_async_wait<kStages - 2>();  // the scale table and stage 0
  __syncthreads();

  // Thread = row r for the dequantisation. Rows past rows_here hold stale bytes: their (finite) values only reach
  // accumulator rows that are never stored.
  const int r = tid;
  const uint8_t *const my_scales = s_scale + r * nb;
  int m = 2;
#pragma unroll 8
  for (int b = 0; b < nb; ++b) m = max(m, min(int(my_scales[b]), 240));
  s_row_exp[r] = m;

  // Dequantise MXFP4 block `half` of stage st of row r into the stage's fp16 buffer. Past the end of K (odd nb) the
  // values are stale but finite and meet zero activations.
  auto dequant = [&](int st, int half) {
    const uint8_t *const raw = s_raw + (st % kStages) * kRawBytes;
    uint8_t *const dst = smem + (st & 1) * kABytes;
    const int kb = min(2 * st + half, nb - 1);
    const uint32_t f = fold_factor(min(int(my_scales[kb]), 240), m);
    const uint4 q = *reinterpret_cast<const uint4 *>(raw + raw_off(r, half));
    const uint32_t qw[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int c = 0; c < 4; ++c) {  // 4 bytes = elements 8c .. 8c + 7 of the block = 16-byte chunk 4 half + c
      uint32_t h[4];
      dequant_e2m1x8(qw[c], h);
      *reinterpret_cast<uint4 *>(dst + swz(r, 4 * half + c)) =
          make_uint4(hmul2(h[0], f), hmul2(h[1], f), hmul2(h[2], f), hmul2(h[3], f));
    }
  };
  dequant(0, 0);
  dequant(0, 1);

  float acc[4][8][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.f;

  // Valid n8 tiles of this warp's 64 tokens; warps without valid rows or tokens only dequantise.
  const int n8 = min(8, max(0, (tl.count - wn * 64 + 7) >> 3));
  const bool mma_on = wm * 64 < rows_here && n8 > 0;
  const uint32_t a_lane = smem_addr(smem) + uint32_t(wm * 64 + (lane & 15)) * 128;
  const uint32_t b_lane = smem_addr(smem + kOffB) + uint32_t(wn * 64 + (lane & 7) + ((lane >> 4) << 3)) * 128;
  for (int st = 0; st < n_stages; ++st) {
    cp_async_wait<kStages - 3>();  // stage st + 1 landed (this thread's copies) ...
    __syncthreads();               // ... everyone's; fp16 weights of stage st written; stage st - 1 no longer read
    issue(st + kStages - 1);
    auto next = [&](int half) { dequant(st + 1, half); };  // past the last stage: harmless, never read
    const uint32_t a_s = a_lane + uint32_t(st & 1) * kABytes, b_s = b_lane + uint32_t(st % kStages) * kBBytes;
    switch (mma_on ? n8 : 0) {  // warp-uniform
      case 8: mma_stage<8>(acc, a_s, b_s, lane, next); break;
      case 7: mma_stage<7>(acc, a_s, b_s, lane, next); break;
      case 6: mma_stage<6>(acc, a_s, b_s, lane, next); break;
      case 5: mma_stage<5>(acc, a_s, b_s, lane, next); break;
      case 4: mma_stage<4>(acc, a_s, b_s, lane, next); break;
      case 3: mma_stage<3>(acc, a_s, b_s, lane, next); break;
      case 2: mma_stage<2>(acc, a_s, b_s, lane, next); break;
      case 1: mma_stage<1>(acc, a_s, b_s, lane, next); break;
      default:
        next(0);
        next(1);
    }
  }
  cp_async_wait<0>();
  if (!mma_on) return;

  // Epilogue. C fragment of m16 tile i, n8 tile j: acc[i][j][u] = row g, token 2t + u; acc[i][j][2 + u] = row g + 8.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int rt = wm * 64 + i * 16;  // first row of the m16 tile in the block
    if (rt >= rows_here) break;        // rows_here is a multiple of 32: an m16 tile is all valid or all not
    float fac[2], bias[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int rl = rt + h * 8 + g;
      fac[h] = __uint_as_float(uint32_t(s_row_exp[rl] - 1) << 23);  // 2^(m - 128), m >= 2
      bias[h] = bf16_to_float(a.bias[first_row + rl]);
    }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j >= n8) break;
#pragma unroll
      for (int u = 0; u < 2; ++u) {
        const int tok = wn * 64 + j * 8 + 2 * t + u;
        const float v0 = fmaf(acc[i][j][u], fac[0], bias[0]);      // row rt + g
        const float v1 = fmaf(acc[i][j][2 + u], fac[1], bias[1]);  // row rt + 8 + g
        if constexpr (kGateUp) {
          // Interleaved rows: even = gate, odd = linear; row g's partner g ^ 1 sits in lane ^ 4. Even lanes finish
          // the pair of rows (g, g + 1), odd lanes the pair (8 + g - 1, 8 + g): every lane stores one output.
          const float o0 = __shfl_xor_sync(0xffffffffu, v0, 4);
          const float o1 = __shfl_xor_sync(0xffffffffu, v1, 4);
          const bool odd = g & 1;
          const float y = swiglu(odd ? o1 : v0, odd ? v1 : o0, a.limit, a.alpha);
          const int col = (row0 + rt) / 2 + (odd ? 4 : 0) + (g >> 1);
          if (tok < tl.count)
            static_cast<__half *>(a.out)[size_t(tl.first_slot + tok) * (a.rows / 2) + col] = __float2half_rn(y);
        } else if (tok < tl.count) {
          float *const o = static_cast<float *>(a.out) + size_t(tl.first_slot + tok) * a.rows + row0 + rt + g;
          o[0] = v0;
          o[8] = v1;
        }
      }
    }
  }
}

}  // namespace

void prepare_prefill_v2() {
  static std::once_flag once;
  std::call_once(once, [] {
    int device = 0, optin = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    cudaFuncSetAttribute(mxfp4_prefill_v2_kernel<true>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
    cudaFuncSetAttribute(mxfp4_prefill_v2_kernel<false>, cudaFuncAttributeMaxDynamicSharedMemorySize, optin);
  });
}

void launch_prefill_v2(const MatmulArgs &a, bool gate_up, int n_pairs, int n_experts, cudaStream_t stream) {
  prepare_prefill_v2();
  // Grid: row blocks x the worst-case tile count (surplus blocks exit); x fastest, so the row blocks of one tile run
  // together and share its activation rows in L2.
  const dim3 grid((a.rows + kBM - 1) / kBM, max_tiles(n_pairs, n_experts, kBN));
  const size_t smem = smem_bytes(a.K);
  if (gate_up)
    launch_pdl(mxfp4_prefill_v2_kernel<true>, grid, dim3(kThreads), smem, stream, a);
  else
    launch_pdl(mxfp4_prefill_v2_kernel<false>, grid, dim3(kThreads), smem, stream, a);
}

}  // namespace ms::cuda::moe
