// Tensor-core paged attention for prefill and chunked-prefill steps (head_dim 64, bf16 KV cache), flash-attention
// style. A block takes 128 (token, query head) rows: 128 / G consecutive tokens of the step times the G query heads of
// one kv head (GQA; 16 tokens x 8 heads for gpt-oss), so each key/value tile staged in shared memory serves every head
// of the group. Each of the 8 warps owns 16 rows: its Q fragments (bf16) stay in registers, S = Q K^T and O += P V run
// on mma.sync m16n8k16 (bf16 in, fp32 accumulate), with the online softmax in fp32 in the exp2 domain. Keys and values
// stream from the paged cache 64 positions at a time through cp.async double buffers (XOR-swizzled rows, read with
// ldmatrix; values transposed by ldmatrix.trans).
//
// Tokens of one sequence form a run (a prefill chunk's tokens are contiguous, at consecutive positions); a tile that
// straddles runs (chunk boundaries, decode tokens in the same step) streams each run's key range in turn, with the
// rows of the other runs masked. A run's key range is [min first visible key, max position]: K tiles outside the
// sliding window are never loaded; a warp skips the tiles none of its rows can see, and masks (causal, window, other
// runs) only the tiles that need it. The sink is the extra logit column with a zero value of the CUDA-core kernel: it
// seeds the running max and adds exp(sink - max) to the denominator at the end.
//
// No allocation, no host synchronisation; the grid depends on (T, kv heads, group size) only, so a step plan's launch
// is graph-capturable.
#include <cuda_bf16.h>

#include <cstdint>

#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {

constexpr int kHd = 64;     // head_dim (the only one this kernel takes)
constexpr int kWarps = 8;   // 16 rows each
constexpr int kRows = 16 * kWarps;
constexpr int kKeys = 64;   // keys per staged tile
constexpr int kSub = 32;    // keys per online-softmax step (32: 128 registers, 2 blocks per SM; 64 spills)
constexpr float kLog2e = 1.4426950408889634f;

__device__ __forceinline__ uint32_t smem_addr(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared; bytes = 0 zero-fills the destination without reading.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t addr, uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}
__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two floats as bf16x2, `lo` in the low half (the lower k / column index of an mma fragment).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t *>(&v);
}
__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}
// Byte offset of 16-byte chunk `ch` (dims 8ch..8ch+7) of key row `key` in a [kKeys][kHd] bf16 tile: the chunk index
// is XORed with key & 7, so the 8 rows an ldmatrix phase reads (and 8 threads' cp.async writes) hit distinct banks.
__device__ __forceinline__ uint32_t tile_off(int key, int ch) {
    return uint32_t(key * kHd + ((ch ^ (key & 7)) << 3)) * 2u;
}

__device__ __forceinline__ int first_key(int pos, int window) { return window > 0 ? max(0, pos - window + 1) : 0; }

__global__ void __launch_bounds__(32 * kWarps, 2)
    prefill_attention_kernel(const float *__restrict__ qkv, int T, int nh, int nkv, const float *__restrict__ sinks,
                             float scale_log2, int window, const int32_t *__restrict__ pos_of,
                             const int32_t *__restrict__ seq_of, PagedKv kv, float *__restrict__ out) {
    pdl_trigger();  // as the CUDA-core kernel: the o projection may start pulling its weights into L2
    pdl_wait();
    __shared__ __align__(128) __nv_bfloat16 ks[2][kKeys * kHd];
    __shared__ __align__(128) __nv_bfloat16 vs[2][kKeys * kHd];
    __shared__ int spos[kRows], sseq[kRows];

    const int G = nh / nkv, QT = kRows / G;
    const int kh = blockIdx.y;
    const int t0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * QT;  // the last tiles (most keys, causal) start first
    const int nt = min(T, t0 + QT) - t0;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, quad = lane & 3;
    const int qkv_row = (nh + 2 * nkv) * kHd, kvd = nkv * kHd;

    for (int i = threadIdx.x; i < nt; i += blockDim.x) {
        spos[i] = pos_of[t0 + i];
        sseq[i] = seq_of[t0 + i];
    }

    // This thread's two rows of the warp's 16 (the mma fragment rows lane/4 and lane/4 + 8): row r is token r / G of
    // the tile, head r % G of the group.
    int tok[2], head[2];
    bool ok[2];
    float m[2], l[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int r = warp * 16 + (lane >> 2) + hr * 8;
        tok[hr] = r / G;
        head[hr] = kh * G + r % G;
        ok[hr] = r < QT * G && tok[hr] < nt;
        m[hr] = sinks[head[hr]] * kLog2e;  // the sink column seeds the running max; exp(sink - m) joins l at the end
        l[hr] = 0.f;
    }
    // Q as A fragments [k step of 16 dims][a0..a3]: a0/a2 row lane/4, a1/a3 row lane/4 + 8; dims 2*quad (+8).
    uint32_t qf[4][4];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const float *q = qkv + (long long)(t0 + tok[hr]) * qkv_row + (long long)head[hr] * kHd + 2 * quad;
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
            float2 a = make_float2(0.f, 0.f), b = make_float2(0.f, 0.f);
            if (ok[hr]) {
                a = *reinterpret_cast<const float2 *>(q + 16 * kk);
                b = *reinterpret_cast<const float2 *>(q + 16 * kk + 8);
            }
            qf[kk][hr] = pack_bf16(a.x, a.y);
            qf[kk][2 + hr] = pack_bf16(b.x, b.y);
        }
    }
    float o[8][4];  // [8-dim n tile][c0..c3]
#pragma unroll
    for (int n = 0; n < 8; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
    __syncthreads();  // spos / sseq

    const __nv_bfloat16 *kg = static_cast<const __nv_bfloat16 *>(kv.k), *vg = static_cast<const __nv_bfloat16 *>(kv.v);
    const uint32_t ks0 = smem_addr(ks[0]), vs0 = smem_addr(vs[0]), buf_bytes = kKeys * kHd * 2;
    for (int ga = 0; ga < nt;) {
        const int sq = sseq[ga];
        int gb = ga + 1;
        while (gb < nt && sseq[gb] == sq) ++gb;
        int lo = 0x7fffffff, hi = -1;
        for (int i = ga; i < gb; ++i) {
            lo = min(lo, first_key(spos[i], window));
            hi = max(hi, spos[i]);
        }
        // Keys row hr sees in this run: [rlo, rhi] (empty for rows of other runs). Over the warp's 16 rows: the union
        // [wlo, whi] (tiles outside it are skipped) and the intersection [ilo, ihi] (tiles inside it need no mask).
        int rlo[2], rhi[2];
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            const bool in = ok[hr] && tok[hr] >= ga && tok[hr] < gb;
            rlo[hr] = in ? first_key(spos[tok[hr]], window) : 0x7fffffff;
            rhi[hr] = in ? spos[tok[hr]] : -1;
        }
        int wlo = min(rlo[0], rlo[1]), whi = max(rhi[0], rhi[1]), ilo = max(rlo[0], rlo[1]), ihi = min(rhi[0], rhi[1]);
#pragma unroll
        for (int x = 16; x > 0; x >>= 1) {
            wlo = min(wlo, __shfl_xor_sync(0xffffffffu, wlo, x));
            whi = max(whi, __shfl_xor_sync(0xffffffffu, whi, x));
            ilo = max(ilo, __shfl_xor_sync(0xffffffffu, ilo, x));
            ihi = min(ihi, __shfl_xor_sync(0xffffffffu, ihi, x));
        }
        const int32_t *table = kv.tables + kv.table_off[sq];
        const int n_tiles = (hi - lo) / kKeys + 1;
        // Stage keys/values lo + i*64 .. +63 of the run into buffer b; positions past hi are zero-filled (the zero
        // values meet p = 0 in P V, and no cache slot past the run's last position is read).
        auto load_tile = [&](int i, int b) {
            const int s0 = lo + i * kKeys;
#pragma unroll
            for (int it = 0; it < kKeys * 8 / (32 * kWarps); ++it) {
                const int c = threadIdx.x + it * 32 * kWarps, j = c >> 3, ch = c & 7, p = s0 + j;
                const __nv_bfloat16 *ksrc = kg, *vsrc = vg;
                int bytes = 0;
                if (p <= hi) {
                    const long long off = (long long)table[p / kv.block_size] * kv.block_stride + kv.layer_off +
                                          (long long)(p % kv.block_size) * kvd + (long long)kh * kHd + ch * 8;
                    ksrc += off;
                    vsrc += off;
                    bytes = 16;
                }
                const uint32_t so = b * buf_bytes + tile_off(j, ch);
                cp_async16(ks0 + so, ksrc, bytes);
                cp_async16(vs0 + so, vsrc, bytes);
            }
            cp_async_commit();
        };
        load_tile(0, 0);
        for (int i = 0; i < n_tiles; ++i) {
            const int b = i & 1;
            if (i + 1 < n_tiles) {
                load_tile(i + 1, b ^ 1);  // that buffer was released by the barrier ending iteration i - 1
                cp_async_wait<1>();
            } else {
                cp_async_wait<0>();
            }
            __syncthreads();
            const int s0 = lo + i * kKeys;
            const uint32_t kb = ks0 + b * buf_bytes, vb = vs0 + b * buf_bytes;
#pragma unroll
            for (int c0 = 0; c0 < kKeys; c0 += kSub) {  // keys s0 + c0 .. + kSub - 1: one online-softmax step
                const int k0 = s0 + c0;
                if (k0 > whi || k0 + kSub - 1 < wlo) continue;  // no row of this warp sees them (warp-uniform)
                float s[kSub / 8][4];
#pragma unroll
                for (int j = 0; j < kSub / 8; ++j) {  // keys 8j..8j+7
                    s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
                    for (int kp = 0; kp < 2; ++kp) {  // k steps 2kp, 2kp+1: dims 32kp..32kp+31
                        uint32_t b0, b1, b2, b3;
                        ldsm_x4(kb + tile_off(c0 + 8 * j + (lane & 7), 4 * kp + (lane >> 3)), b0, b1, b2, b3);
                        mma_bf16(s[j], qf[2 * kp], b0, b1);
                        mma_bf16(s[j], qf[2 * kp + 1], b2, b3);
                    }
                }
                const bool mask = !(k0 >= ilo && k0 + kSub - 1 <= ihi);  // warp-uniform
                float mx[2] = {m[0], m[1]};
#pragma unroll
                for (int j = 0; j < kSub / 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int hr = e >> 1;
                        float v = s[j][e] * scale_log2;
                        if (mask) {
                            const int p = k0 + 8 * j + 2 * quad + (e & 1);
                            if (p < rlo[hr] || p > rhi[hr]) v = -INFINITY;
                        }
                        s[j][e] = v;
                        mx[hr] = fmaxf(mx[hr], v);
                    }
                float corr[2];
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 1));
                    mx[hr] = fmaxf(mx[hr], __shfl_xor_sync(0xffffffffu, mx[hr], 2));
                    corr[hr] = ex2(m[hr] - mx[hr]);  // m starts at the (finite) sink: never -inf - -inf
                    m[hr] = mx[hr];
                    l[hr] *= corr[hr];
                }
#pragma unroll
                for (int n = 0; n < 8; ++n) {
                    o[n][0] *= corr[0];
                    o[n][1] *= corr[0];
                    o[n][2] *= corr[1];
                    o[n][3] *= corr[1];
                }
#pragma unroll
                for (int j = 0; j < kSub / 8; ++j)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const float p = ex2(s[j][e] - m[e >> 1]);
                        l[e >> 1] += p;
                        s[j][e] = p;
                    }
#pragma unroll
                for (int kk = 0; kk < kSub / 16; ++kk) {  // keys 16kk..16kk+15: S accumulators 2kk, 2kk+1 as A
                    const uint32_t a[4] = {pack_bf16(s[2 * kk][0], s[2 * kk][1]), pack_bf16(s[2 * kk][2], s[2 * kk][3]),
                                           pack_bf16(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                           pack_bf16(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                    for (int np = 0; np < 4; ++np) {  // dims 16np..16np+15
                        uint32_t b0, b1, b2, b3;
                        ldsm_x4_trans(vb + tile_off(c0 + 16 * kk + (lane & 7) + ((lane >> 3) & 1) * 8,
                                                    2 * np + (lane >> 4)),
                                      b0, b1, b2, b3);
                        mma_bf16(o[2 * np], a, b0, b1);
                        mma_bf16(o[2 * np + 1], a, b2, b3);
                    }
                }
            }
            __syncthreads();  // buffer b consumed before iteration i + 1 refills it
        }
        ga = gb;
    }

#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        float L = l[hr];
        L += __shfl_xor_sync(0xffffffffu, L, 1);
        L += __shfl_xor_sync(0xffffffffu, L, 2);
        L += ex2(sinks[head[hr]] * kLog2e - m[hr]);
        if (!ok[hr]) continue;
        const float inv = 1.f / L;
        float *dst = out + (long long)(t0 + tok[hr]) * nh * kHd + (long long)head[hr] * kHd + 2 * quad;
#pragma unroll
        for (int n = 0; n < 8; ++n)
            *reinterpret_cast<float2 *>(dst + 8 * n) = make_float2(o[n][2 * hr] * inv, o[n][2 * hr + 1] * inv);
    }
}

}  // namespace

bool prefill_attention_supported(int nh, int nkv, int hd, const PagedKv &kv) {
    return hd == kHd && kv.bf16 && nkv > 0 && nh % nkv == 0 && nh / nkv <= kRows;
}

void paged_attention_prefill(const float *qkv, int T, int nh, int nkv, int hd, const float *sinks, float scale,
                             int window, const int32_t *pos, const int32_t *seq, const PagedKv &kv, float *out,
                             cudaStream_t s) {
    if (T <= 0) return;
    if (!prefill_attention_supported(nh, nkv, hd, kv))
        throw Error(MS_ERR_UNSUPPORTED, "CUDA prefill attention: needs head_dim 64 (got " + std::to_string(hd) +
                                            "), a bf16 KV cache and heads / kv_heads <= 128");
    const int QT = kRows / (nh / nkv);
    launch_maybe_pdl(prefill_attention_kernel, dim3(ceil_div(T, QT), nkv), dim3(32 * kWarps), 0, s, qkv, T, nh, nkv,
                     sinks, scale * kLog2e, window, pos, seq, kv, out);
    check_launch("paged_attention_prefill");
}

}  // namespace ms::cuda
