// The q/k/v projection of a decode step (<= 8 tokens) fused with YaRN RoPE and the KV-cache write, opt-in
// (MODELSERVE_CUDA_QKV_ROPE_FUSED=1): one kernel where the plain path runs the GEMV and then rope_kv_write.cu's kernel. At batch 1 the second kernel is pure latency on the
// way from the projection to attention (a launch, a wait for the GEMV's last block, a few hundred stores).
//
// Rows are assigned so that each block holds whole RoPE pairs: a block of a rotated head (q or k) computes rows
// i0..i0+3 and i0+half..i0+half+3 of that head (warps 0-3 and 4-7), then 4 x NT threads rotate the pairs exactly as
// rope_kv_write.cu does (same products, same order: the same bits) and store them into qkv and, for k, into the cache;
// a block of a v head computes 8 consecutive rows and copies them into the cache. The dot products are
// gemv_row.cuh's, as in the plain GEMV.
#include <cuda_bf16.h>

#include <string>

#include "common/env.h"
#include "common/error.h"
#include "cuda/cuda_check.cuh"
#include "cuda/gemv_row.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {

constexpr int kPairsPerBlock = 4;  // 8 warps: 4 rows of a head's first half and their 4 partners

// No __launch_bounds__, as the plain GEMV (both get 36-56 registers from ptxas: as many warps resident).
template <int NT>
__global__ void qkv_rope_kv_kernel(const float *__restrict__ x, int K, const uint16_t *__restrict__ w, const float *__restrict__ bias,
                       int nh, int nkv, int hd, const float *__restrict__ cos_sin, const int32_t *__restrict__ pos,
                       const int32_t *__restrict__ seq, PagedKv kv, float *__restrict__ qkv) {
    __shared__ float val[8][NT];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int half = hd / 2, kvd = nkv * hd, N = (nh + 2 * nkv) * hd;
    const int rot_blocks = (nh + nkv) * (half / kPairsPerBlock);
    const bool rotated = int(blockIdx.x) < rot_blocks;
    int h = 0, i0 = 0, r;
    if (rotated) {
        h = blockIdx.x / (half / kPairsPerBlock);
        i0 = (blockIdx.x % (half / kPairsPerBlock)) * kPairsPerBlock;
        r = h * hd + i0 + (warp & 3) + (warp >= 4 ? half : 0);
    } else {
        r = (nh + nkv) * hd + (blockIdx.x - rot_blocks) * 8 + warp;
    }
    gemv_row_prefetch(w + (long long)r * K, K, lane);
    // What the epilogue needs besides the dot products (the rotation's cos/sin, the cache slot) comes from the step's
    // inputs, complete before this kernel starts (rope_cos_sin runs two launches ahead of the first projection): load
    // it now, so that the last block's epilogue is not a chain of dependent loads after the GEMV.
    const int epi_threads = rotated ? kPairsPerBlock * NT : 8 * NT;
    const bool epi = int(threadIdx.x) < epi_threads;
    const int t = rotated ? threadIdx.x / kPairsPerBlock : threadIdx.x / 8;
    const int p = rotated ? threadIdx.x % kPairsPerBlock : threadIdx.x % 8;
    float c = 0.f, s = 0.f;
    long long off = 0;
    if (epi) {
        if (rotated) {
            const float *cs = cos_sin + (long long)t * hd + 2 * (i0 + p);
            c = cs[0];
            s = cs[1];
        }
        if (!rotated || h >= nh) {
            const int ps = pos[t];
            const int32_t block = kv.tables[kv.table_off[seq[t]] + ps / kv.block_size];
            off = (long long)block * kv.block_stride + kv.layer_off + (long long)(ps % kv.block_size) * kvd;
        }
    }
    pdl_wait();
    pdl_trigger();
    float acc[NT];
    gemv_row_dot<NT>(x, K, w + (long long)r * K, lane, acc);
    if (lane == 0) {
#pragma unroll
        for (int u = 0; u < NT; ++u) {
            float v = acc[u];
            if (bias) v += bias[r];
            val[warp][u] = v;
        }
    }
    __syncthreads();
    if (!epi) return;
    auto store = [&](void *base, long long i, float v) {
        if (kv.bf16) static_cast<__nv_bfloat16 *>(base)[i] = __float2bfloat16_rn(v);
        else static_cast<float *>(base)[i] = v;
    };
    if (rotated) {
        const int i = i0 + p;
        const float a = val[p][t], b = val[p + kPairsPerBlock][t];
        const float lo = a * c - b * s, hi = b * c + a * s;
        float *row = qkv + (long long)t * N + h * hd;
        row[i] = lo;
        row[i + half] = hi;
        if (h >= nh) {
            store(kv.k, off + (h - nh) * hd + i, lo);
            store(kv.k, off + (h - nh) * hd + i + half, hi);
        }
    } else {
        const int e = (blockIdx.x - rot_blocks) * 8 + p;  // element of the v part
        const float v = val[p][t];
        qkv[(long long)t * N + (nh + nkv) * hd + e] = v;
        store(kv.v, off + e, v);
    }
}

template <int NT>
void launch(const float *x, int K, const uint16_t *w, const float *bias, int nh, int nkv, int hd, const float *cs,
            const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *qkv, cudaStream_t s) {
    const int blocks = (nh + nkv) * (hd / 2 / kPairsPerBlock) + nkv * hd / 8;
    launch_maybe_pdl(qkv_rope_kv_kernel<NT>, dim3(blocks), dim3(256), 0, s, x, K, w, bias, nh, nkv, hd, cs, pos, seq, kv,
                     qkv);
}

}  // namespace

bool qkv_rope_kv_enabled() {
    // Off by default: its first H100 run made the 20b batch-1 step 0.056 ms slower (2.771 against 2.715 ms); the
    // epilogue's inputs are now loaded before the wait, not yet measured (docs/benchmarks/cuda.md, session 9).
    static const bool on = env_switch("MODELSERVE_CUDA_QKV_ROPE_FUSED", false);
    return on;
}

bool qkv_rope_kv_fusable(int T, int K, int hd) {
    return T >= 1 && T <= 8 && K % 8 == 0 && hd % (2 * kPairsPerBlock) == 0;
}

void qkv_rope_kv(const float *x, int T, int K, const uint16_t *w, const float *bias, int nh, int nkv, int hd,
                 const float *cos_sin, const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *qkv,
                 cudaStream_t s) {
    if (!qkv_rope_kv_fusable(T, K, hd))
        throw Error(MS_ERR_INVALID_ARGUMENT, "qkv_rope_kv: not fusable (T " + std::to_string(T) + ", K " +
                                                 std::to_string(K) + ", head_dim " + std::to_string(hd) + ")");
    switch (T) {
        case 1: launch<1>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 2: launch<2>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 3: launch<3>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 4: launch<4>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 5: launch<5>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 6: launch<6>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        case 7: launch<7>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
        default: launch<8>(x, K, w, bias, nh, nkv, hd, cos_sin, pos, seq, kv, qkv, s); break;
    }
    check_launch("qkv_rope_kv");
}

}  // namespace ms::cuda
