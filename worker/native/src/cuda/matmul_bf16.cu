// Dense bf16 projections (attention q/k/v/o and the unembedding) with fp32 accumulation.
// - gemv_bf16: fp32 activations, one warp per output row, up to 8 tokens per pass over the weights. Decode is
//   bandwidth-bound: each weight byte is read once per 8 tokens with 16-byte loads.
// - gemm_bf16_tc: tensor cores (WMMA 16x16x16, bf16 in, fp32 accumulate) for prefill and large batches; the
//   activations are rounded to bf16 first, as every bf16 GEMM does.
#include <cuda_bf16.h>
#include <mma.h>

#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"

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
    gemv_kernel<NT><<<ceil_div(N, kGemvRowsPerBlock), 32 * kGemvRowsPerBlock, 0, s>>>(x, K, w, bias, N, out, acc);
}

__global__ void to_bf16_kernel(const float *x, long long n, __nv_bfloat16 *y) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        y[i] = __float2bfloat16_rn(x[i]);
}

// Block tile 64 tokens x 64 output rows, K step 128 (each thread has 16 16-byte loads in flight per step: at small
// batch the kernel is bound by load latency, not math); four warps of 32x32 (2x2 WMMA fragments each). The fp32
// output tile reuses the operand tiles' shared memory after the K loop.
constexpr int BM = 64, BN = 64, BK = 128, LDS = BK + 8, LDC = BN + 4;
constexpr int kOperandBytes = (BM + BN) * LDS * 2, kOutBytes = BM * LDC * 4;
constexpr int kGemmSmem = kOperandBytes > kOutBytes ? kOperandBytes : kOutBytes;

__global__ void __launch_bounds__(128) gemm_tc_kernel(const __nv_bfloat16 *__restrict__ x, int T, int K,
                                                      const __nv_bfloat16 *__restrict__ w, const float *__restrict__ bias,
                                                      int N, float *__restrict__ out, bool accumulate) {
    using namespace nvcuda;
    __shared__ __align__(32) unsigned char smem[kGemmSmem];
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(smem), *Bs = As + BM * LDS;
    float *Cs = reinterpret_cast<float *>(smem);  // after the K loop only
    const int tid = threadIdx.x, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[2][2];
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::fill_fragment(c[i][j], 0.f);

    for (int k0 = 0; k0 < K; k0 += BK) {
        // 64 rows x 128 columns = 1024 vectors of 8 bf16 per operand; 8 per thread each.
#pragma unroll
        for (int v = 0; v < 8; ++v) {
            const int idx = tid + v * 128, row = idx >> 4, col = (idx & 15) * 8;
            uint4 a = make_uint4(0, 0, 0, 0), b = make_uint4(0, 0, 0, 0);
            if (m0 + row < T && k0 + col < K) a = *reinterpret_cast<const uint4 *>(x + (long long)(m0 + row) * K + k0 + col);
            if (n0 + row < N && k0 + col < K) b = __ldg(reinterpret_cast<const uint4 *>(w + (long long)(n0 + row) * K + k0 + col));
            *reinterpret_cast<uint4 *>(As + row * LDS + col) = a;
            *reinterpret_cast<uint4 *>(Bs + row * LDS + col) = b;
        }
        __syncthreads();
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
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j)
            wmma::store_matrix_sync(Cs + (wm * 32 + i * 16) * LDC + wn * 32 + j * 16, c[i][j], LDC, wmma::mem_row_major);
    __syncthreads();
    for (int idx = tid; idx < BM * BN; idx += 128) {
        const int m = idx / BN, n = idx % BN;
        if (m0 + m >= T || n0 + n >= N) continue;
        float v = Cs[m * LDC + n] + (bias ? bias[n0 + n] : 0.f);
        float *dst = out + (long long)(m0 + m) * N + n0 + n;
        *dst = accumulate ? *dst + v : v;
    }
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

void gemm_bf16_tc(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                  bool accumulate, uint16_t *x_bf16_scratch, cudaStream_t s) {
    auto *xb = reinterpret_cast<__nv_bfloat16 *>(x_bf16_scratch);
    const long long n = (long long)T * K;
    to_bf16_kernel<<<ceil_div(n, 256) < 4096 ? ceil_div(n, 256) : 4096, 256, 0, s>>>(x, n, xb);
    check_launch("to_bf16");
    dim3 grid(ceil_div(N, BN), ceil_div(T, BM));
    gemm_tc_kernel<<<grid, 128, 0, s>>>(xb, T, K, reinterpret_cast<const __nv_bfloat16 *>(w), bias, N, out, accumulate);
    check_launch("gemm_bf16_tc");
}

void matmul_bf16(const float *x, int T, int K, const uint16_t *w, const float *bias, int N, float *out,
                 bool accumulate, bool exact, uint16_t *x_bf16_scratch, cudaStream_t s) {
    if (T <= 0 || N <= 0) return;
    if (exact || T <= 8 || !x_bf16_scratch) gemv_bf16(x, T, K, w, bias, N, out, accumulate, s);
    else gemm_bf16_tc(x, T, K, w, bias, N, out, accumulate, x_bf16_scratch, s);
}

}  // namespace ms::cuda
