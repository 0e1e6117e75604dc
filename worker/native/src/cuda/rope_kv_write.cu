// YaRN RoPE and the KV-cache write, fused: q and k are rotated in place in the projected qkv rows, then k and v are
// stored at their paged cache slots (bf16 round-to-nearest-even or fp32, as the CPU path stores them).
#include <cuda_bf16.h>

#include "common/env.h"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {

__global__ void cos_sin_kernel(const int32_t *pos, int n, const float *inv_freq, float conc, int half, float *cs) {
    const int idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= n * half) return;
    const int t = idx / half, i = idx % half;
    const float angle = float(pos[t]) * inv_freq[i];  // fp32 product, then double-precision cos/sin (as the CPU)
    cs[(long long)t * 2 * half + 2 * i] = float(cos(double(angle))) * conc;
    cs[(long long)t * 2 * half + 2 * i + 1] = float(sin(double(angle))) * conc;
}

__global__ void rope_kv_kernel(float *qkv, int nh, int nkv, int hd, const float *cos_sin, const int32_t *pos,
                               const int32_t *seq, PagedKv kv) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x, half = hd / 2, kvd = nkv * hd;
    float *row = qkv + (long long)t * (nh + 2 * nkv) * hd;
    const float *cs = cos_sin + (long long)t * hd;
    for (int idx = threadIdx.x; idx < (nh + nkv) * half; idx += blockDim.x) {
        const int h = idx / half, i = idx % half;  // heads 0..nh-1 are q, nh.. are k (contiguous after q)
        float *v = row + h * hd;
        const float a = v[i], b = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
    __syncthreads();
    const int p = pos[t];
    const int32_t block = kv.tables[kv.table_off[seq[t]] + p / kv.block_size];
    const long long off = (long long)block * kv.block_stride + kv.layer_off + (long long)(p % kv.block_size) * kvd;
    const float *k = row + nh * hd, *v = k + kvd;
    for (int j = threadIdx.x; j < kvd; j += blockDim.x) {
        if (kv.bf16) {
            static_cast<__nv_bfloat16 *>(kv.k)[off + j] = __float2bfloat16_rn(k[j]);
            static_cast<__nv_bfloat16 *>(kv.v)[off + j] = __float2bfloat16_rn(v[j]);
        } else {
            static_cast<float *>(kv.k)[off + j] = k[j];
            static_cast<float *>(kv.v)[off + j] = v[j];
        }
    }
}

// The same work spread over blocks: one thread per rotated (q or k) pair or copied v element of a token, grid (blocks
// of 256 items, T). Each k thread writes the two values it rotated straight into the cache, so no block waits on
// another. At batch 1 the one-block kernel above walks 2,816 items in 11 dependent rounds (its stores into qkv may
// alias its next loads), ~9 us on the H100 (Nsight Compute) on the path from the q/k/v projection to attention.
// MODELSERVE_CUDA_ROPE_SPREAD=0: the one-block kernel.
__global__ void rope_kv_spread_kernel(float *qkv, int nh, int nkv, int hd, const float *cos_sin, const int32_t *pos,
                                      const int32_t *seq, PagedKv kv) {
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.y, half = hd / 2, kvd = nkv * hd;
    const int rot = (nh + nkv) * half, idx = blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= rot + kvd) return;
    float *row = qkv + (long long)t * (nh + 2 * nkv) * hd;
    const int p = pos[t];
    const int32_t block = kv.tables[kv.table_off[seq[t]] + p / kv.block_size];
    const long long off = (long long)block * kv.block_stride + kv.layer_off + (long long)(p % kv.block_size) * kvd;
    auto store = [&](void *base, long long j, float x) {
        if (kv.bf16) static_cast<__nv_bfloat16 *>(base)[off + j] = __float2bfloat16_rn(x);
        else static_cast<float *>(base)[off + j] = x;
    };
    if (idx < rot) {
        const int h = idx / half, i = idx % half;  // heads 0..nh-1 are q, nh.. are k (contiguous after q)
        const float *cs = cos_sin + (long long)t * hd;
        float *v = row + h * hd;
        const float a = v[i], b = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
        const float lo = a * c - b * s, hi = b * c + a * s;
        v[i] = lo;
        v[i + half] = hi;
        if (h >= nh) {
            store(kv.k, (h - nh) * hd + i, lo);
            store(kv.k, (h - nh) * hd + i + half, hi);
        }
    } else {
        const int j = idx - rot;
        store(kv.v, j, row[(nh + nkv) * hd + j]);
    }
}

bool rope_spread_enabled() {
    static const bool on = env_switch("MODELSERVE_CUDA_ROPE_SPREAD", true);
    return on;
}

}  // namespace

void rope_cos_sin(const int32_t *pos, int n_tokens, const float *inv_freq, float concentration, int head_dim,
                  float *cos_sin, cudaStream_t s) {
    if (n_tokens <= 0) return;
    const int half = head_dim / 2;
    cos_sin_kernel<<<ceil_div((long long)n_tokens * half, 256), 256, 0, s>>>(pos, n_tokens, inv_freq, concentration, half,
                                                                             cos_sin);
    check_launch("rope_cos_sin");
}

void rope_and_kv_write(float *qkv, int T, int nh, int nkv, int hd, const float *cos_sin, const int32_t *pos,
                       const int32_t *seq, const PagedKv &kv, cudaStream_t s) {
    if (T <= 0) return;
    if (rope_spread_enabled() && T <= 65535) {  // T is the grid's y dimension
        const int items = (nh + nkv) * (hd / 2) + nkv * hd;
        launch_maybe_pdl(rope_kv_spread_kernel, dim3(ceil_div(items, 256), T), dim3(256), 0, s, qkv, nh, nkv, hd,
                         cos_sin, pos, seq, kv);
    } else {
        launch_maybe_pdl(rope_kv_kernel, dim3(T), dim3(256), 0, s, qkv, nh, nkv, hd, cos_sin, pos, seq, kv);
    }
    check_launch("rope_and_kv_write");
}

}  // namespace ms::cuda
