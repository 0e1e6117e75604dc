// Paged attention with sinks and the sliding window, for decode and chunked prefill alike: one block per
// (token, kv head), one warp per query head of the group. Keys and values are staged 32 positions at a time in shared
// memory (read once for the whole group); each lane scores one key, then the online softmax (the sink seeds the
// running max and contributes exp(sink - max) to the denominator, with a zero value vector) rescales the
// accumulators, whose head dimensions are spread over the lanes.
#include <cuda_bf16.h>

#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"

namespace ms::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kMaxDimsPerLane = 4;  // head_dim <= 128

__device__ __forceinline__ float load_kv(const void *base, bool bf16, long long i) {
    return bf16 ? __bfloat162float(static_cast<const __nv_bfloat16 *>(base)[i]) : static_cast<const float *>(base)[i];
}

// Elements [off, off + 8) (off a multiple of 8, so the address is 16-byte aligned) as fp32.
__device__ __forceinline__ void load8(const void *base, bool bf16, long long off, float *out) {
    if (bf16) {
        const uint4 u = __ldg(reinterpret_cast<const uint4 *>(static_cast<const __nv_bfloat16 *>(base) + off));
        const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            out[2 * i] = __uint_as_float(w[i] << 16);
            out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        }
    } else {
        const float4 *f = reinterpret_cast<const float4 *>(static_cast<const float *>(base) + off);
        const float4 a = __ldg(f), b = __ldg(f + 1);
        out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
    }
}

__host__ __device__ __forceinline__ int key_stride(int hd) { return hd % 4 == 0 ? hd + 4 : hd + 1; }

__global__ void attention_kernel(const float *qkv, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                                 const int32_t *pos_of, const int32_t *seq_of, PagedKv kv, float *out) {
    extern __shared__ float4 smem4[];  // 16-byte aligned
    float *smem = reinterpret_cast<float *>(smem4);
    const int t = blockIdx.x, kh = blockIdx.y, G = nh / nkv;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // Row stride of the staged keys: hd + 4 keeps rows 16-byte aligned and makes each quarter-warp's float4 reads
    // (lane = key) hit 32 distinct banks; hd + 1 (conflict-free scalar reads) when hd is not a multiple of 4.
    const int kvd = nkv * hd, ld = key_stride(hd);
    float *qs = smem, *ks = qs + G * hd, *vs = ks + kTile * ld;
    const float *q = qkv + (long long)t * (nh + 2 * nkv) * hd + (long long)kh * G * hd;
    for (int i = threadIdx.x; i < G * hd; i += blockDim.x) qs[i] = q[i];

    const int pos = pos_of[t];
    const int first = window > 0 ? max(0, pos - window + 1) : 0;
    const int32_t *table = kv.tables + kv.table_off[seq_of[t]];
    const int h = kh * G + warp;
    float m = sinks[h], l = 1.f;  // the sink column: exp(sink - m) with m = sink
    float acc[kMaxDimsPerLane] = {0.f, 0.f, 0.f, 0.f};

    for (int s0 = first; s0 <= pos; s0 += kTile) {
        __syncthreads();  // previous tile consumed (and q staged, on the first pass)
        if (hd % 8 == 0) {
            // 8 elements per load (16 bytes of bf16): one round of independent loads per tile instead of a chain of
            // dependent scalar ones, which is what bounds decode at small batch.
            const int per_row = hd / 8;
            for (int c = threadIdx.x; c < kTile * per_row; c += blockDim.x) {
                const int j = c / per_row, d0 = (c % per_row) * 8, p = s0 + j;
                float kk[8] = {0, 0, 0, 0, 0, 0, 0, 0}, vv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                if (p <= pos) {
                    const long long off = (long long)table[p / kv.block_size] * kv.block_stride + kv.layer_off +
                                          (long long)(p % kv.block_size) * kvd + (long long)kh * hd + d0;
                    load8(kv.k, kv.bf16, off, kk);
                    load8(kv.v, kv.bf16, off, vv);
                }
#pragma unroll
                for (int i = 0; i < 8; ++i) {
                    ks[j * ld + d0 + i] = kk[i];
                    vs[j * ld + d0 + i] = vv[i];
                }
            }
        } else {
            for (int idx = threadIdx.x; idx < kTile * hd; idx += blockDim.x) {
                const int j = idx / hd, d = idx % hd, p = s0 + j;
                float kvk = 0.f, kvv = 0.f;
                if (p <= pos) {
                    const long long off = (long long)table[p / kv.block_size] * kv.block_stride + kv.layer_off +
                                          (long long)(p % kv.block_size) * kvd + (long long)kh * hd + d;
                    kvk = load_kv(kv.k, kv.bf16, off);
                    kvv = load_kv(kv.v, kv.bf16, off);
                }
                ks[j * ld + d] = kvk;
                vs[j * ld + d] = kvv;
            }
        }
        __syncthreads();
        const int p = s0 + lane;
        float score = -INFINITY;
        if (p <= pos) {
            float dot = 0.f;
            const float *qh = qs + warp * hd, *kr = ks + lane * ld;
            if (hd % 4 == 0) {
                const float4 *q4 = reinterpret_cast<const float4 *>(qh), *k4 = reinterpret_cast<const float4 *>(kr);
                for (int d = 0; d < hd / 4; ++d) {
                    const float4 a = q4[d], b = k4[d];
                    dot += a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
                }
            } else {
                for (int d = 0; d < hd; ++d) dot += qh[d] * kr[d];
            }
            score = dot * scale;
        }
        float cmax = score;
        for (int o = 16; o > 0; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, o));
        const float m_new = fmaxf(m, cmax);
        const float corr = expf(m - m_new);
        const float pj = p <= pos ? expf(score - m_new) : 0.f;
        float psum = pj;
        for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
        l = l * corr + psum;
        m = m_new;
#pragma unroll
        for (int i = 0; i < kMaxDimsPerLane; ++i) acc[i] *= corr;
        const int n_valid = min(kTile, pos - s0 + 1);
        for (int j = 0; j < n_valid; ++j) {
            const float pjj = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
            for (int i = 0; i < kMaxDimsPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) acc[i] += pjj * vs[j * ld + d];
            }
        }
    }
    float *o = out + (long long)t * nh * hd + (long long)h * hd;
    const float inv = 1.f / l;
#pragma unroll
    for (int i = 0; i < kMaxDimsPerLane; ++i) {
        const int d = lane + 32 * i;
        if (d < hd) o[d] = acc[i] * inv;
    }
}

}  // namespace

void paged_attention(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                     const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, cudaStream_t s) {
    if (T <= 0) return;
    const int G = nh / nkv;
    if (hd > 32 * kMaxDimsPerLane || G > 32 || G * nkv != nh)
        throw Error(MS_ERR_UNSUPPORTED, "CUDA attention: head_dim must be <= 128 and heads / kv_heads <= 32");
    const size_t shmem = sizeof(float) * (size_t(G) * hd + 2 * size_t(kTile) * key_stride(hd));
    dim3 grid(T, nkv);
    attention_kernel<<<grid, 32 * G, shmem, s>>>(qkv, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out);
    check_launch("paged_attention");
}

}  // namespace ms::cuda
