// The two GGUF matrix kernels, templated on the block format (gguf_blocks.h); matmul_<type>.cu instantiate them.
//
// gemv_kernel (decode, T <= 8 per pass): a block of 8 warps; each weight row gets `wpr` of them (1, 2, 4 or 8), which
// take the row's chunks in turn (a chunk: 32 blocks of a quantized type, 8 of a float type). A warp stages a chunk's
// bytes in its shared memory with 16-byte loads of the 16-byte words that cover it (blocks of 18, 20 or 34 bytes are
// only 2- or 4-byte aligned, so the words are aligned to the tensor, not the block; the words cover consecutive bytes:
// fully coalesced), then each lane decodes (block, slice) items from shared memory: lanes 4j..4j+3 hold the 4 slices
// of block j, so a warp's activation loads (two float4 per token per item) are also consecutive. Per item and token:
// acc += d * sum_i x_i q_i (+ m * sum_i x_i for Q4_1). The lanes' sums meet by warp shuffles, the row's warps through
// shared memory, in a fixed order (deterministic).
//
// tiled_kernel (prefill): 64 tokens x 64 rows per block of 256 threads, K in steps of one 32-element block: each thread
// dequantizes one slice (row tid/4, slice tid%4) into shared memory and loads two float4 of the activation tile (both
// stored transposed, k-major), then computes 4 tokens x 4 rows with fp32 FMAs. The next step's global loads are issued
// into registers before the current step's products (one step of software pipelining).
#pragma once

#include <algorithm>

#include "cuda/cuda_check.cuh"
#include "cuda/gguf/gguf_blocks.h"
#include "cuda/gguf/gguf_matmul.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda::gguf_detail {

using namespace ms::gguf;

constexpr int kGemvWarps = 8;
constexpr int kMaxGemvTokens = 8;

template <class F> struct GemvCfg {
    static constexpr int kChunkBlocks = F::kBytes <= 34 ? 32 : 8;
    static constexpr int kItemsPerLane = kChunkBlocks * 4 / 32;
    static constexpr int kChunkBytes = kChunkBlocks * F::kBytes;
    // The 16-byte words covering a chunk that starts anywhere in its first word.
    static constexpr int kStageBytes = (kChunkBytes + 15) / 16 * 16 + 16;
    // Worst case: the chunk starts at byte 15 of a word (14 for the 2-byte aligned blocks).
    static_assert((15 + kChunkBytes + 15) / 16 * 16 <= kStageBytes, "stage too small");
};

// Launch bounds (256 threads, 3 blocks per SM: at most 85 registers): with the thread count alone, ptxas held some
// instantiations near 40 registers and spilled.
template <class F, int NT>
__global__ void __launch_bounds__(kGemvWarps * 32, 3)
    gemv_kernel(const float *__restrict__ x, int K, const uint8_t *__restrict__ w, long long row_bytes,
                long long total_bytes, int N, int wpr, float *__restrict__ y, bool accumulate) {
    using C = GemvCfg<F>;
    __shared__ __align__(16) uint8_t stage[kGemvWarps][C::kStageBytes];
    __shared__ float red[kGemvWarps][NT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int part = warp % wpr;
    const int r = blockIdx.x * (kGemvWarps / wpr) + warp / wpr;
    const bool active = r < N;  // uniform over the warp
    pdl_wait();
    pdl_trigger();
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    const int nb = K / 32, nchunks = (nb + C::kChunkBlocks - 1) / C::kChunkBlocks;
    uint8_t *st = stage[warp];
    if (active) {
        for (int c = part; c < nchunks; c += wpr) {
            const int b0 = c * C::kChunkBlocks, nblk = min(C::kChunkBlocks, nb - b0);
            const long long a = (long long)r * row_bytes + (long long)b0 * F::kBytes;
            const long long e = a + (long long)nblk * F::kBytes;
            const long long w0 = a >> 4;
            const int nwords = int(((e + 15) >> 4) - w0);
            for (int j = lane; j < nwords; j += 32) {
                const long long wi = w0 + j;
                uint4 v;
                if (wi * 16 + 16 <= total_bytes) {
                    v = __ldg(reinterpret_cast<const uint4 *>(w) + wi);
                } else {  // the tensor's last word, cut short: never read past its end
                    uint32_t b[4] = {0, 0, 0, 0};
#pragma unroll
                    for (int i = 0; i < 16; ++i)
                        if (wi * 16 + i < total_bytes) b[i >> 2] |= uint32_t(w[wi * 16 + i]) << (8 * (i & 3));
                    v = make_uint4(b[0], b[1], b[2], b[3]);
                }
                *reinterpret_cast<uint4 *>(st + 16 * j) = v;
            }
            __syncwarp();
            const uint8_t *sb = st + (a & 15);
#pragma unroll
            for (int it = 0; it < C::kItemsPerLane; ++it) {
                const int item = lane + 32 * it, blk = item >> 2, s = item & 3;
                if (blk < nblk) {
                    const uint8_t *bp = sb + blk * F::kBytes;
                    float q[8];
                    F::quants(bp, s, q);
                    const float d = F::scale(bp), m = F::min(bp);
                    const float *xb = x + (long long)(b0 + blk) * 32;
#pragma unroll
                    for (int t = 0; t < NT; ++t) {
                        const float4 u = __ldg(reinterpret_cast<const float4 *>(xb + (long long)t * K + F::elem(s, 0)));
                        const float4 v = __ldg(reinterpret_cast<const float4 *>(xb + (long long)t * K + F::elem(s, 4)));
                        const float xa[8] = {u.x, u.y, u.z, u.w, v.x, v.y, v.z, v.w};
                        acc[t] += slice_dot<F>(q, d, m, xa);
                    }
                }
            }
            __syncwarp();  // the next chunk overwrites the stage
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) acc[t] += __shfl_xor_sync(0xffffffffu, acc[t], o);
    if (wpr == 1) {
        if (active && lane == 0) {
#pragma unroll
            for (int t = 0; t < NT; ++t) {
                float *dst = y + (long long)t * N + r;
                *dst = accumulate ? *dst + acc[t] : acc[t];
            }
        }
        return;
    }
    if (lane == 0) {
#pragma unroll
        for (int t = 0; t < NT; ++t) red[warp][t] = acc[t];
    }
    __syncthreads();
    if (active && part == 0 && lane < NT) {
        float v = 0.f;
        for (int p = 0; p < wpr; ++p) v += red[warp + p][lane];
        float *dst = y + (long long)lane * N + r;
        *dst = accumulate ? *dst + v : v;
    }
}

// Warps per row for the GEMV: doubled while the rows alone give fewer than ~32 warps per SM and every warp of the row
// still gets at least one chunk.
template <class F> int auto_warps_per_row(int N, int K) {
    const int nchunks = ceil_div(K / 32, GemvCfg<F>::kChunkBlocks);
    const long long target = 32LL * cuda_sm_count();
    int w = 1;
    while (w < kGemvWarps && (long long)N * w < target && nchunks >= 2 * w) w *= 2;
    return w;
}

template <class F, int NT>
void launch_gemv_nt(const float *x, int K, const uint8_t *w, int N, float *y, bool acc, int wpr, cudaStream_t s) {
    const long long row_bytes = (long long)(K / 32) * F::kBytes;
    const int rows_per_block = kGemvWarps / wpr;
    launch_maybe_pdl(gemv_kernel<F, NT>, dim3(ceil_div(N, rows_per_block)), dim3(kGemvWarps * 32), 0, s, x, K, w,
                     row_bytes, row_bytes * N, N, wpr, y, acc);
    check_launch("gguf gemv_kernel");
}

// T tokens in passes of up to 8 (each pass reads the weights once).
template <class F> void launch_gemv(const GgufMatmulArgs &a, int wpr, cudaStream_t s) {
    if (wpr == 0) wpr = auto_warps_per_row<F>(a.N, a.K);
    for (int t0 = 0; t0 < a.T; t0 += kMaxGemvTokens) {
        const int nt = std::min(kMaxGemvTokens, a.T - t0);
        const float *x = a.x + (long long)t0 * a.K;
        float *y = a.y + (long long)t0 * a.N;
        switch (nt) {
            case 1: launch_gemv_nt<F, 1>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 2: launch_gemv_nt<F, 2>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 3: launch_gemv_nt<F, 3>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 4: launch_gemv_nt<F, 4>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 5: launch_gemv_nt<F, 5>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 6: launch_gemv_nt<F, 6>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            case 7: launch_gemv_nt<F, 7>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
            default: launch_gemv_nt<F, 8>(x, a.K, a.w, a.N, y, a.accumulate, wpr, s); break;
        }
    }
}

constexpr int kTileM = 64, kTileN = 64, kTileThreads = 256, kTilePad = 4;

template <class F>
__global__ void __launch_bounds__(kTileThreads)
    tiled_kernel(const float *__restrict__ x, int T, int K, const uint8_t *__restrict__ w, long long row_bytes, int N,
                 float *__restrict__ y, bool accumulate) {
    __shared__ __align__(16) float xs[32][kTileM + kTilePad];  // [k][token]
    __shared__ __align__(16) float ws[32][kTileN + kTilePad];  // [k][row]
    const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
    const int m0 = blockIdx.y * kTileM, n0 = blockIdx.x * kTileN;
    // This thread's weight slice and activation pieces.
    const int wn = tid >> 2, sl = tid & 3;
    const bool wvalid = n0 + wn < N;
    const uint8_t *wrow = w + (long long)(wvalid ? n0 + wn : 0) * row_bytes;
    int xm[2], xc[2];
    bool xvalid[2];
#pragma unroll
    for (int v = 0; v < 2; ++v) {
        const int idx = tid + kTileThreads * v;
        xm[v] = idx >> 3;
        xc[v] = (idx & 7) * 4;
        xvalid[v] = m0 + xm[v] < T;
    }
    pdl_wait();
    pdl_trigger();

    float wv[8];
    float4 xv[2];
    auto load = [&](int kb) {
        if (wvalid) {
            const uint8_t *bp = wrow + (long long)kb * F::kBytes;
            float q[8];
            F::quants(bp, sl, q);
            const float d = F::scale(bp), m = F::min(bp);
#pragma unroll
            for (int i = 0; i < 8; ++i) wv[i] = d * q[i] + m;
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) wv[i] = 0.f;
        }
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            const float *p = x + (long long)(m0 + xm[v]) * K + kb * 32 + xc[v];
            xv[v] = xvalid[v] ? __ldg(reinterpret_cast<const float4 *>(p)) : make_float4(0.f, 0.f, 0.f, 0.f);
        }
    };

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;

    const int nb = K / 32;
    if (nb > 0) load(0);
    for (int kb = 0; kb < nb; ++kb) {
#pragma unroll
        for (int i = 0; i < 8; ++i) ws[F::elem(sl, i)][wn] = wv[i];
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            xs[xc[v] + 0][xm[v]] = xv[v].x;
            xs[xc[v] + 1][xm[v]] = xv[v].y;
            xs[xc[v] + 2][xm[v]] = xv[v].z;
            xs[xc[v] + 3][xm[v]] = xv[v].w;
        }
        __syncthreads();
        if (kb + 1 < nb) load(kb + 1);  // in flight during the products below
#pragma unroll 8
        for (int k = 0; k < 32; ++k) {
            const float4 a = *reinterpret_cast<const float4 *>(&xs[k][ty * 4]);
            const float4 b = *reinterpret_cast<const float4 *>(&ws[k][tx * 4]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();  // the next step overwrites the tiles
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty * 4 + i;
        if (m >= T) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx * 4 + j;
            if (n >= N) continue;
            float *dst = y + (long long)m * N + n;
            *dst = accumulate ? *dst + acc[i][j] : acc[i][j];
        }
    }
}

template <class F> void launch_tiled(const GgufMatmulArgs &a, cudaStream_t s) {
    const long long row_bytes = (long long)(a.K / 32) * F::kBytes;
    launch_maybe_pdl(tiled_kernel<F>, dim3(ceil_div(a.N, kTileN), ceil_div(a.T, kTileM)), dim3(kTileThreads), 0, s,
                     a.x, a.T, a.K, a.w, row_bytes, a.N, a.y, a.accumulate);
    check_launch("gguf tiled_kernel");
}

}  // namespace ms::cuda::gguf_detail
