// Dense bf16 projections (attention q/k/v/o and the unembedding) with fp32 accumulation.
// - gemv_bf16: fp32 activations, one warp per output row, up to 8 tokens per pass over the weights. Decode is
//   bandwidth-bound: each weight byte is read once per 8 tokens with 16-byte loads.
// - gemm_bf16_tc: tensor cores (WMMA 16x16x16, bf16 in, fp32 accumulate) for prefill and large batches; the
//   activations are rounded to bf16 first, as every bf16 GEMM does.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/env.h"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {

__device__ __forceinline__ float bf16_lo(uint32_t v) { return __uint_as_float(v << 16); }
__device__ __forceinline__ float bf16_hi(uint32_t v) { return __uint_as_float(v & 0xffff0000u); }

constexpr int kGemvRowsPerBlock = 8;  // one warp per row

template <int NT>
__global__ void gemv_kernel(const float *__restrict__ x, int K, const uint16_t *__restrict__ w,
                            const float *__restrict__ bias, int N, float *__restrict__ out, bool accumulate) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * kGemvRowsPerBlock + warp;
    // The weights do not depend on the previous kernel: start pulling this warp's row into L2 before waiting for it.
    if (r < N) {
        const char *row = reinterpret_cast<const char *>(w + (long long)r * K);
        for (int off = lane * 128; off < K * 2; off += 32 * 128) prefetch_l2(row + off);
    }
    pdl_wait();
    pdl_trigger();
    if (r >= N) return;
    const uint4 *wr = reinterpret_cast<const uint4 *>(w + (long long)r * K);
    float acc[NT];
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[t] = 0.f;
    const int K8 = K / 8;
#pragma unroll 4
    for (int k8 = lane; k8 < K8; k8 += 32) {
        const uint4 wv = __ldg(wr + k8);
        const float w0 = bf16_lo(wv.x), w1 = bf16_hi(wv.x), w2 = bf16_lo(wv.y), w3 = bf16_hi(wv.y);
        const float w4 = bf16_lo(wv.z), w5 = bf16_hi(wv.z), w6 = bf16_lo(wv.w), w7 = bf16_hi(wv.w);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
            const float4 a = __ldg(reinterpret_cast<const float4 *>(x + (long long)t * K) + 2 * k8);
            const float4 b = __ldg(reinterpret_cast<const float4 *>(x + (long long)t * K) + 2 * k8 + 1);
            acc[t] += a.x * w0 + a.y * w1 + a.z * w2 + a.w * w3 + b.x * w4 + b.y * w5 + b.z * w6 + b.w * w7;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; ++t) {
        float v = acc[t];
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (lane == 0) {
            if (bias) v += bias[r];
            float *dst = out + (long long)t * N + r;
            *dst = accumulate ? *dst + v : v;
        }
    }
}

template <int NT>
void launch_gemv(const float *x, int K, const uint16_t *w, const float *bias, int N, float *out, bool acc, cudaStream_t s) {
    launch_maybe_pdl(gemv_kernel<NT>, dim3(ceil_div(N, kGemvRowsPerBlock)), dim3(32 * kGemvRowsPerBlock), 0, s, x, K, w,
                     bias, N, out, acc);
}

__global__ void to_bf16_kernel(const float *x, long long n, __nv_bfloat16 *y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

// Block tile 64 tokens x 64 output rows, four warps of 32x32 (2x2 WMMA fragments each). The K loop is a 4-stage
// cp.async pipeline of 32-deep steps (three steps' loads in flight while one is multiplied), and when the output
// tiles alone cannot fill the GPU (small batches: 64 tokens x 2880 rows is 45 tiles) the K range is split over
// gridDim.z blocks whose fp32 partial sums a second kernel adds in a fixed order (deterministic). The fp32 output
// tile reuses the operand stages' shared memory after the K loop.
constexpr int BM = 64, BN = 64, BK = 32, kStages = 4, LDS = BK + 8, LDC = BN + 4;
constexpr int kStageElems = (BM + BN) * LDS;
constexpr int kOperandBytes = kStages * kStageElems * 2, kOutBytes = BM * LDC * 4;
constexpr int kGemmSmem = kOperandBytes > kOutBytes ? kOperandBytes : kOutBytes;
constexpr int kMaxSplits = 8;

__device__ __forceinline__ void cp_async16_zfill(void *smem, const void *gmem, bool full) {
    const uint32_t sa = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
    const int bytes = full ? 16 : 0;  // 0: the 16 bytes are zero-filled, nothing is read
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(sa), "l"(gmem), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

// partial: nullptr = write out (+ bias, accumulate); else this split's raw sums go to partial[z][T][N].
__global__ void __launch_bounds__(128) gemm_tc_kernel(const __nv_bfloat16 *__restrict__ x, int T, int K,
                                                      const __nv_bfloat16 *__restrict__ w, const float *__restrict__ bias,
                                                      int N, float *__restrict__ out, bool accumulate,
                                                      float *__restrict__ partial) {
    using namespace nvcuda;
    __shared__ __align__(128) unsigned char smem[kGemmSmem];
    __nv_bfloat16 *stages = reinterpret_cast<__nv_bfloat16 *>(smem);
    float *Cs = reinterpret_cast<float *>(smem);  // after the K loop only
    const int tid = threadIdx.x, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int nk = (K + BK - 1) / BK, per = (nk + gridDim.z - 1) / gridDim.z;
    const int kt0 = blockIdx.z * per, kt1 = min(nk, kt0 + per);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.f);

    // One step: 64 rows x 32 columns = 256 16-byte pieces per operand, 2 per thread each (zero past T, N or K).
    auto load = [&](int kt, int slot) {
        __nv_bfloat16 *As = stages + slot * kStageElems, *Bs = As + BM * LDS;
        const int k0 = kt * BK;
#pragma unroll
        for (int v = 0; v < 2; ++v) {
            const int idx = tid + v * 128, row = idx >> 2, col = (idx & 3) * 8;
            const bool kin = k0 + col < K;
            const bool ain = kin && m0 + row < T, bin = kin && n0 + row < N;
            cp_async16_zfill(As + row * LDS + col, ain ? x + (long long)(m0 + row) * K + k0 + col : x, ain);
            cp_async16_zfill(Bs + row * LDS + col, bin ? w + (long long)(n0 + row) * K + k0 + col : w, bin);
        }
    };
#pragma unroll
    for (int st = 0; st < kStages - 1; ++st) {
        if (kt0 + st < kt1) load(kt0 + st, st);
        cp_async_commit();
    }
    for (int kt = kt0; kt < kt1; ++kt) {
        cp_async_wait<kStages - 2>();  // step kt landed (this thread's copies) ...
        __syncthreads();               // ... everyone's, and slot (kt - 1) % kStages is no longer read
        if (kt + kStages - 1 < kt1) load(kt + kStages - 1, (kt - kt0 + kStages - 1) % kStages);
        cp_async_commit();
        const __nv_bfloat16 *As = stages + ((kt - kt0) % kStages) * kStageElems, *Bs = As + BM * LDS;
#pragma unroll
        for (int kk = 0; kk < BK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], As + (wm * 32 + i * 16) * LDS + kk, LDS);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], Bs + (wn * 32 + j * 16) * LDS + kk, LDS);
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int j = 0; j < 2; ++j) wmma::mma_sync(c[i][j], a[i], b[j], c[i][j]);
        }
    }
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, c[i][j], LDC, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < BM * BN; idx += 128) {
        const int m = idx / BN, n = idx % BN;
        if (m0 + m >= T || n0 + n >= N) continue;
        if (partial) {
            partial[((long long)blockIdx.z * T + m0 + m) * N + n0 + n] = Cs[m * LDC + n];
            continue;
        }
        float v = Cs[m * LDC + n] + (bias ? bias[n0 + n] : 0.f);
        float *dst = out + (long long)(m0 + m) * N + n0 + n;
        *dst = accumulate ? *dst + v : v;
    }
}

// out = (accumulate ? out : 0) + (sum of the splits in order + bias).
__global__ void split_reduce_kernel(const float *__restrict__ partial, int splits, int T, int N,
                                    const float *__restrict__ bias, float *__restrict__ out, bool accumulate) {
    const long long n = (long long)T * N;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        float v = 0.f;
        for (int z = 0; z < splits; ++z) v += partial[z * n + i];
        v += bias ? bias[i % N] : 0.f;
        out[i] = accumulate ? out[i] + v : v;
    }
}

// K splits for a grid of `tiles` output tiles: enough blocks for ~2 per SM, each split at least 4 K steps.
int gemm_splits(int tiles, int K) {
    // MODELSERVE_CUDA_GEMM_SPLIT=0: never split K
    static const bool off = !env_switch("MODELSERVE_CUDA_GEMM_SPLIT", true);
    const int sms = cuda_sm_count();
    if (off || tiles >= sms) return 1;
    const int nk = (K + BK - 1) / BK;
    int s = std::min(ceil_div(2LL * sms, tiles), std::min(kMaxSplits, nk / 4));
    return s < 1 ? 1 : s;
}

}  // namespace

void gemv_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out, bool accumulate,
               cudaStream_t s) {
    for (int t0 = 0; t0 < T; t0 += 8) {
        const int nt = T - t0 < 8 ? T - t0 : 8;
        const float *xc = x + (long long)t0 * K;
        float *oc = out + (long long)t0 * N;
        switch (nt) {
            case 1: launch_gemv<1>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 2: launch_gemv<2>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 3: launch_gemv<3>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 4: launch_gemv<4>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 5: launch_gemv<5>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 6: launch_gemv<6>(xc, K, w, bias, N, oc, accumulate, s); break;
            case 7: launch_gemv<7>(xc, K, w, bias, N, oc, accumulate, s); break;
            default: launch_gemv<8>(xc, K, w, bias, N, oc, accumulate, s); break;
        }
        check_launch("gemv_bf16");
    }
}

size_t gemm_split_scratch_floats() {
    // gemm_splits keeps splits * tiles below 3 * SMs, and each tile covers at most BM x BN outputs.
    return size_t(3) * cuda_sm_count() * BM * BN;
}

void gemm_bf16_tc(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                  bool accumulate, uint16_t *x_bf16_scratch, float *split_scratch, cudaStream_t s) {
    auto *xb = reinterpret_cast<__nv_bfloat16 *>(x_bf16_scratch);
    const long long n = (long long)T * K;
    to_bf16_kernel<<<ceil_div(n, 256) < 4096 ? ceil_div(n, 256) : 4096, 256, 0, s>>>(x, n, xb);
    check_launch("to_bf16");
    const int tiles = ceil_div(N, BN) * ceil_div(T, BM);
    int splits = split_scratch ? gemm_splits(tiles, K) : 1;
    if (splits > 1 && size_t(splits) * T * N > gemm_split_scratch_floats()) splits = 1;
    if (splits > 1) {  // drop splits that would get no K step
        const int nk = (K + BK - 1) / BK, per = (nk + splits - 1) / splits;
        splits = (nk + per - 1) / per;
    }
    dim3 grid(ceil_div(N, BN), ceil_div(T, BM), splits);
    gemm_tc_kernel<<<grid, 128, 0, s>>>(xb, T, K, reinterpret_cast<const __nv_bfloat16 *>(w), bias, N, out, accumulate,
                                        splits > 1 ? split_scratch : nullptr);
    check_launch("gemm_bf16_tc");
    if (splits > 1) {
        const long long outs = (long long)T * N;
        split_reduce_kernel<<<std::min(ceil_div(outs, 256), 2048), 256, 0, s>>>(split_scratch, splits, T, N, bias, out,
                                                                               accumulate);
        check_launch("gemm_bf16_tc split reduce");
    }
}

void gemm_bf16_tc(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                  bool accumulate, uint16_t *x_bf16_scratch, cudaStream_t s) {
    gemm_bf16_tc(x, T, K, w, bias, N, out, accumulate, x_bf16_scratch, nullptr, s);
}

void matmul_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                 bool accumulate, bool exact, uint16_t *x_bf16_scratch, float *split_scratch, cudaStream_t s) {
    if (T <= 0 || N <= 0) return;
    if (exact || T <= 8 || !x_bf16_scratch) gemv_bf16(x, T, K, w, bias, N, out, accumulate, s);
    else gemm_bf16_tc(x, T, K, w, bias, N, out, accumulate, x_bf16_scratch, split_scratch, s);
}

void matmul_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                 bool accumulate, bool exact, uint16_t *x_bf16_scratch, cudaStream_t s) {
    matmul_bf16(x, T, K, w, bias, N, out, accumulate, exact, x_bf16_scratch, nullptr, s);
}

}  // namespace ms::cuda
