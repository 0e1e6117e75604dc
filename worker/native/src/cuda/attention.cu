// Paged attention with sinks and the sliding window, for decode and chunked prefill alike. A block takes
// `query_tile` consecutive query tokens (1 for decode, 8 for prefill chunks) and one kv head, one warp per query head
// of the group. Keys and values are staged 32 positions at a time in shared memory and read once for the whole head
// group and every query of the tile that belongs to the same sequence; each lane scores one key, then the online
// softmax (the sink seeds the running max and contributes exp(sink - max) to the denominator, with a zero value vector)
// rescales the accumulators, whose head dimensions are spread over the lanes.
//
// Decode with few (token, kv head) pairs splits the key range over `splits` blocks (flash-decoding): each writes its
// running max, denominator and unnormalised accumulator; the last block of a (token, kv head) to finish (an atomic
// counter, reset by that block) merges the splits with the sink in a fixed order, so no second kernel is launched and
// results do not depend on which block finishes last. The split count is fixed per launch shape (graph-capturable);
// the key range is divided on the device from the positions.
//
// Prefill steps (a chunk of >= kPrefillTcMinTokens tokens) go to the tensor-core kernel of attention_prefill.cu when
// it supports the shape (head_dim 64, bf16 cache) and MODELSERVE_CUDA_PREFILL_ATTN=1 (off by default until measured).
#include <cuda_bf16.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "common/env.h"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {

constexpr int kTile = 32;
constexpr int kMaxDimsPerLane = 4;  // head_dim <= 128
constexpr int kMaxSplits = 32;
constexpr int kPrefillTcMinTokens = 8;  // longest chunk of a step from which the tensor-core prefill kernel runs

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

__device__ __forceinline__ int first_key(int pos, int window) { return window > 0 ? max(0, pos - window + 1) : 0; }

// QT: query tokens per block. kSplit (QT = 1): the key range is divided over gridDim.z blocks whose partial results go
// to part_acc [T][nh][S][hd] and part_ml [T][nh][S][2], merged by the last of them (counters [T][nkv], zero between
// launches); otherwise out is written directly.
template <int QT, bool kSplit>
__device__ __forceinline__ void attention_body(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale,
                                 int window, const int32_t *pos_of, const int32_t *seq_of, PagedKv kv, float *out,
                                 float *part_acc, float *part_ml, int *counters) {
    // Trigger first: the next kernels (split merge, o projection) pull their weights into L2 while attention, which
    // leaves the DRAM mostly idle at small batches, runs; they wait for this kernel before reading its output.
    pdl_trigger();
    pdl_wait();
    extern __shared__ float4 smem4[];  // 16-byte aligned
    float *smem = reinterpret_cast<float *>(smem4);
    const int kh = blockIdx.y, G = nh / nkv;
    const int t0 = blockIdx.x * QT, t1 = min(T, t0 + QT);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    // Row stride of the staged keys: hd + 4 keeps rows 16-byte aligned and makes each quarter-warp's float4 reads
    // (lane = key) hit 32 distinct banks; hd + 1 (conflict-free scalar reads) when hd is not a multiple of 4.
    const int kvd = nkv * hd, ld = key_stride(hd);
    float *qs = smem, *ks = qs + QT * G * hd, *vs = ks + kTile * ld;
    const int qkv_row = (nh + 2 * nkv) * hd;
    for (int i = threadIdx.x; i < (t1 - t0) * G * hd; i += blockDim.x) {
        const int qi = i / (G * hd), r = i - qi * G * hd;
        qs[i] = qkv[(long long)(t0 + qi) * qkv_row + (long long)kh * G * hd + r];
    }
    const int h = kh * G + warp;
    float m[QT], l[QT], acc[QT][kMaxDimsPerLane];
#pragma unroll
    for (int qi = 0; qi < QT; ++qi) {
        m[qi] = kSplit ? -INFINITY : sinks[h];  // unsplit: the sink column, exp(sink - m) = 1 with m = sink
        l[qi] = kSplit ? 0.f : 1.f;
#pragma unroll
        for (int i = 0; i < kMaxDimsPerLane; ++i) acc[qi][i] = 0.f;
    }

    // Runs of consecutive tokens of one sequence share the staged keys (a prefill chunk's tokens are contiguous).
    for (int ga = t0; ga < t1;) {
        const int sq = seq_of[ga];
        int gb = ga + 1;
        while (gb < t1 && seq_of[gb] == sq) ++gb;
        int lo = 0x7fffffff, hi = -1;
        for (int i = ga; i < gb; ++i) {
            lo = min(lo, first_key(pos_of[i], window));
            hi = max(hi, pos_of[i]);
        }
        int a = lo, b = hi;
        if constexpr (kSplit) {
            const int S = gridDim.z, span = hi - lo + 1;
            const int chunk = ((span + S - 1) / S + kTile - 1) / kTile * kTile;
            a = lo + int(blockIdx.z) * chunk;
            b = min(hi, a + chunk - 1);
        }
        const int32_t *table = kv.tables + kv.table_off[sq];
        for (int s0 = a; s0 <= b; s0 += kTile) {
            __syncthreads();  // previous tile consumed (and q staged, on the first pass)
            if (hd % 8 == 0) {
                // 8 elements per load (16 bytes of bf16): one round of independent loads per tile.
                const int per_row = hd / 8;
                for (int c = threadIdx.x; c < kTile * per_row; c += blockDim.x) {
                    const int j = c / per_row, d0 = (c % per_row) * 8, p = s0 + j;
                    float kk[8] = {0, 0, 0, 0, 0, 0, 0, 0}, vv[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                    if (p <= b) {
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
                    if (p <= b) {
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
#pragma unroll
            for (int qi = 0; qi < QT; ++qi) {
                const int t = t0 + qi;
                if (t < ga || t >= gb) continue;
                const int pos = pos_of[t], first = first_key(pos, window);
                if (s0 > pos || s0 + kTile - 1 < first) continue;  // no key of this tile is visible to t
                const bool valid = p <= b && p <= pos && p >= first;
                float score = -INFINITY;
                if (valid) {
                    float dot = 0.f;
                    const float *qh = qs + (qi * G + warp) * hd, *kr = ks + lane * ld;
                    if (hd % 4 == 0) {
                        const float4 *q4 = reinterpret_cast<const float4 *>(qh), *k4 = reinterpret_cast<const float4 *>(kr);
                        for (int d = 0; d < hd / 4; ++d) {
                            const float4 x = q4[d], y = k4[d];
                            dot += x.x * y.x + x.y * y.y + x.z * y.z + x.w * y.w;
                        }
                    } else {
                        for (int d = 0; d < hd; ++d) dot += qh[d] * kr[d];
                    }
                    score = dot * scale;
                }
                float cmax = score;
                for (int o = 16; o > 0; o >>= 1) cmax = fmaxf(cmax, __shfl_xor_sync(0xffffffffu, cmax, o));
                const float m_new = fmaxf(m[qi], cmax);
                if (m_new == -INFINITY) continue;  // (split) nothing visible yet: warp-uniform
                const float corr = expf(m[qi] - m_new);
                const float pj = valid ? expf(score - m_new) : 0.f;
                float psum = pj;
                for (int o = 16; o > 0; o >>= 1) psum += __shfl_xor_sync(0xffffffffu, psum, o);
                l[qi] = l[qi] * corr + psum;
                m[qi] = m_new;
#pragma unroll
                for (int i = 0; i < kMaxDimsPerLane; ++i) acc[qi][i] *= corr;
                const int j0 = max(0, first - s0), j1 = min(kTile, min(pos, b) - s0 + 1);
                for (int j = j0; j < j1; ++j) {
                    const float pjj = __shfl_sync(0xffffffffu, pj, j);
#pragma unroll
                    for (int i = 0; i < kMaxDimsPerLane; ++i) {
                        const int d = lane + 32 * i;
                        if (d < hd) acc[qi][i] += pjj * vs[j * ld + d];
                    }
                }
            }
        }
        ga = gb;
    }
#pragma unroll
    for (int qi = 0; qi < QT; ++qi) {
        const int t = t0 + qi;
        if (t >= t1) break;
        if constexpr (kSplit) {
            const int S = gridDim.z;
            const long long slot = ((long long)t * nh + h) * S + blockIdx.z;
            float *pa = part_acc + slot * hd;
#pragma unroll
            for (int i = 0; i < kMaxDimsPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) pa[d] = acc[qi][i];
            }
            if (lane == 0) part_ml[2 * slot] = m[qi], part_ml[2 * slot + 1] = l[qi];
        } else {
            float *o = out + (long long)t * nh * hd + (long long)h * hd;
            const float inv = 1.f / l[qi];
#pragma unroll
            for (int i = 0; i < kMaxDimsPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) o[d] = acc[qi][i] * inv;
            }
        }
    }
    if constexpr (kSplit) {
        __shared__ int is_last;
        __threadfence();  // this block's partials are visible device-wide before it is counted
        __syncthreads();
        if (threadIdx.x == 0) {
            int *c = counters + (long long)t0 * nkv + kh;
            is_last = atomicAdd(c, 1) == int(gridDim.z) - 1;
            if (is_last) *c = 0;  // every split has counted: ready for the next launch
        }
        __syncthreads();
        if (!is_last) return;
        __threadfence();
        // Merge head h of token t0: lane s holds split s (S <= 32); the sink joins as a column with a zero value.
        const int S = gridDim.z;
        const long long base = ((long long)t0 * nh + h) * S;
        float ms = -INFINITY, ls = 0.f;
        if (lane < S) {
            ms = __ldcg(part_ml + 2 * (base + lane));
            ls = __ldcg(part_ml + 2 * (base + lane) + 1);
        }
        const float sink = sinks[h];
        float M = fmaxf(ms, sink);
        for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
        const float f = ls > 0.f ? expf(ms - M) : 0.f;
        float L = ls * f;
        for (int o = 16; o > 0; o >>= 1) L += __shfl_xor_sync(0xffffffffu, L, o);
        L += expf(sink - M);
        float o_acc[kMaxDimsPerLane] = {0.f, 0.f, 0.f, 0.f};
        for (int sp = 0; sp < S; ++sp) {
            const float fs = __shfl_sync(0xffffffffu, f, sp);
            if (fs == 0.f) continue;  // warp-uniform
            const float *pa = part_acc + (base + sp) * hd;
#pragma unroll
            for (int i = 0; i < kMaxDimsPerLane; ++i) {
                const int d = lane + 32 * i;
                if (d < hd) o_acc[i] += __ldcg(pa + d) * fs;
            }
        }
        float *o = out + (long long)t0 * nh * hd + (long long)h * hd;
        const float inv = 1.f / L;
#pragma unroll
        for (int i = 0; i < kMaxDimsPerLane; ++i) {
            const int d = lane + 32 * i;
            if (d < hd) o[d] = o_acc[i] * inv;
        }
    }
}

// QT = 1 takes any head group up to 32 (no register cap); QT = 8 only groups of <= 8 (256 threads, two blocks per SM).
template <int QT, bool kSplit>
__global__ void attention_kernel(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale,
                                 int window, const int32_t *pos_of, const int32_t *seq_of, PagedKv kv, float *out,
                                 float *part_acc, float *part_ml, int *counters) {
    attention_body<QT, kSplit>(qkv, T, nh, nkv, hd, sinks, scale, window, pos_of, seq_of, kv, out, part_acc, part_ml,
                               counters);
}
template <>
__global__ void __launch_bounds__(256, 2) attention_kernel<8, false>(const float *qkv, int T, int nh, int nkv, int hd,
                                                                     const float *sinks, float scale, int window,
                                                                     const int32_t *pos_of, const int32_t *seq_of,
                                                                     PagedKv kv, float *out, float *part_acc,
                                                                     float *part_ml, int *counters) {
    attention_body<8, false>(qkv, T, nh, nkv, hd, sinks, scale, window, pos_of, seq_of, kv, out, part_acc, part_ml,
                             counters);
}

template <int QT, bool kSplit>
void launch(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
            const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, int splits, float *part_acc,
            float *part_ml, int *counters, cudaStream_t s) {
    const int G = nh / nkv;
    const size_t shmem = sizeof(float) * (size_t(QT) * G * hd + 2 * size_t(kTile) * key_stride(hd));
    dim3 grid(ceil_div(T, QT), nkv, splits);
    launch_maybe_pdl(attention_kernel<QT, kSplit>, grid, dim3(32 * G), shmem, s, qkv, T, nh, nkv, hd, sinks, scale,
                     window, pos, seq, kv, out, part_acc, part_ml, counters);
}

}  // namespace

int cuda_sm_count() {
    static const int n = [] {
        int device = 0, sms = 0;
        cudaGetDevice(&device);
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
        return sms > 0 ? sms : 1;
    }();
    return n;
}

AttentionPlan plan_attention(int T, int nkv, int max_tokens_per_seq) {
    AttentionPlan p;
    // MODELSERVE_CUDA_ATTN_PLAN=0: one block per (token, kv head), as before
    static const bool plain = !env_switch("MODELSERVE_CUDA_ATTN_PLAN", true);
    if (plain) return p;
    // Prefill chunks on the tensor-core kernel (on an H100, 1,024 tokens of 20b: 1.3 ms of attention instead of 26.4;
    // docs/benchmarks/cuda.md). MODELSERVE_CUDA_PREFILL_ATTN=0 keeps the CUDA-core kernel.
    static const bool prefill_tc = env_switch("MODELSERVE_CUDA_PREFILL_ATTN", true);
    if (max_tokens_per_seq >= 4) {
        p.query_tile = 8;  // prefill chunks: each staged key tile serves 8 queries
        // Chunks of 8+ tokens: the tensor-core kernel (attention_prefill.cu) where it supports the shape.
        p.tensor_cores = prefill_tc && max_tokens_per_seq >= kPrefillTcMinTokens;
        return p;
    }
    // Decode: enough blocks for ~4 per SM; a split gets at least one 32-key tile of work on the device.
    const int pairs = std::max(1, T * nkv);
    p.splits = std::clamp(ceil_div(4LL * cuda_sm_count(), pairs), 1, kMaxSplits);
    return p;
}

size_t attention_scratch_floats(int T, int nh, int hd, const AttentionPlan &p) {
    // partial accumulators, (max, denominator) pairs, then one int counter per (token, kv head): T * nh is an upper
    // bound of T * nkv that needs no nkv here.
    return p.splits > 1 ? size_t(T) * nh * p.splits * (hd + 2) + size_t(T) * nh : 0;
}

void paged_attention(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                     const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, const AttentionPlan &plan,
                     float *scratch, cudaStream_t s) {
    if (T <= 0) return;
    const int G = nh / nkv;
    if (hd > 32 * kMaxDimsPerLane || G > 32 || G * nkv != nh)
        throw Error(MS_ERR_UNSUPPORTED, "CUDA attention: head_dim must be <= 128 and heads / kv_heads <= 32");
    if (plan.splits < 1 || plan.splits > kMaxSplits || (plan.query_tile != 1 && plan.query_tile != 8) ||
        (plan.splits > 1 && (plan.query_tile != 1 || !scratch)))
        throw Error(MS_ERR_INVALID_ARGUMENT, "CUDA attention: bad plan (query_tile 1 or 8; splits need tile 1 + scratch)");
    if (plan.tensor_cores && plan.splits == 1 && prefill_attention_supported(nh, nkv, hd, kv)) {
        paged_attention_prefill(qkv, T, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out, s);
    } else if (plan.splits > 1) {
        float *part_acc = scratch, *part_ml = scratch + size_t(T) * nh * plan.splits * hd;
        int *counters = reinterpret_cast<int *>(part_ml + size_t(T) * nh * plan.splits * 2);
        launch<1, true>(qkv, T, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out, plan.splits, part_acc, part_ml,
                        counters, s);
        check_launch("paged_attention (split)");
    } else if (plan.query_tile == 8 && G <= 8 && sizeof(float) * (8 * size_t(G) * hd + 2 * size_t(kTile) * key_stride(hd)) <= 48 * 1024) {
        launch<8, false>(qkv, T, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out, 1, nullptr, nullptr, nullptr, s);
        check_launch("paged_attention (query tile 8)");
    } else {
        launch<1, false>(qkv, T, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out, 1, nullptr, nullptr, nullptr, s);
        check_launch("paged_attention");
    }
}

void paged_attention(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale, int window,
                     const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out, cudaStream_t s) {
    paged_attention(qkv, T, nh, nkv, hd, sinks, scale, window, pos, seq, kv, out, AttentionPlan{}, nullptr, s);
}

}  // namespace ms::cuda
