#include "cpu/quant_matmul.h"

#include "cpu/x86_intrinsics.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/env.h"
#include "common/error.h"
#include "cpu/avx2_reduce.h"
#include "cpu/bf16.h"

namespace ms {

const char *weight_type_name(WeightType t) {
    switch (t) {
        case WeightType::F32: return "F32";
        case WeightType::F16: return "F16";
        case WeightType::BF16: return "BF16";
        case WeightType::Q4_0: return "Q4_0";
        case WeightType::Q4_1: return "Q4_1";
        case WeightType::Q8_0: return "Q8_0";
    }
    return "?";
}

bool weight_type_quantized(WeightType t) { return t == WeightType::Q4_0 || t == WeightType::Q4_1 || t == WeightType::Q8_0; }

int64_t weight_row_bytes(WeightType t, int K) {
    switch (t) {
        case WeightType::F32: return int64_t(K) * 4;
        case WeightType::F16: case WeightType::BF16: return int64_t(K) * 2;
        case WeightType::Q4_0: return int64_t(K / 32) * 18;
        case WeightType::Q4_1: return int64_t(K / 32) * 20;
        case WeightType::Q8_0: return int64_t(K / 32) * 34;
    }
    return 0;
}

bool quant_vnni_available() {
#if defined(__x86_64__)
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }();
    return ok;
#else
    return false;
#endif
}

namespace {
std::atomic<int> g_quant_vnni{-1};  // -1: not read yet
}

bool quant_kernel_vnni() {
    int v = g_quant_vnni.load(std::memory_order_relaxed);
    if (v < 0) {
        v = env_switch("MS_QUANT_VNNI", false) ? 1 : 0;
        int expected = -1;
        g_quant_vnni.compare_exchange_strong(expected, v, std::memory_order_relaxed);
        v = g_quant_vnni.load(std::memory_order_relaxed);
    }
    return v == 1;
}

void set_quant_kernel_vnni(bool on) { g_quant_vnni.store(on ? 1 : 0, std::memory_order_relaxed); }

bool quant_vbmi_available() {
#if defined(__x86_64__)
    static const bool cpu = [] {
        __builtin_cpu_init();
        return quant_vnni_available() && __builtin_cpu_supports("avx512vbmi");
    }();
    const char *env = std::getenv("MS_QUANT_NO_VBMI");  // read per call: the tests switch to the plain VNNI path
    return cpu && !(env && *env == '1');
#else
    return false;
#endif
}

namespace {

inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// ---- activation quantization ------------------------------------------------------------------------------------
// As llama.cpp: id = 127 / max|x|, q = round-half-even(x * id), d = max|x| / 127 (stored rounded to fp16),
// s = d * sum(q) (rounded to fp16).

void quantize_block_scalar(const float *x, int8_t *qs, float *d, float *s, int32_t *sum) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float dd = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t acc = 0;
    for (int j = 0; j < 32; ++j) {
        const int v = int(std::nearbyint(x[j] * id));
        qs[j] = int8_t(v);
        acc += v;
    }
    *d = fp16_to_f32(f32_to_fp16(dd));
    *s = fp16_to_f32(f32_to_fp16(dd * float(acc)));
    *sum = acc;
}

__attribute__((target("avx2,fma,f16c"))) void quantize_block_avx2(const float *x, int8_t *qs, float *d, float *s,
                                                                  int32_t *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
    }
    const float amax = hmax_avx2(mx);
    const float dd = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4], acc = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        acc = _mm256_add_epi32(acc, q[i]);
    }
    __m128i a4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    a4 = _mm_add_epi32(a4, _mm_unpackhi_epi64(a4, a4));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 1));
    const int32_t total = _mm_cvtsi128_si32(a4);
    // Pack 32 int32 to int8 in element order (packs work per 128-bit lane, so fix the order with a permute).
    __m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
    __m256i p = _mm256_packs_epi16(p01, p23);
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(qs), p);
    *d = _cvtsh_ss(_cvtss_sh(dd, _MM_FROUND_TO_NEAREST_INT));
    *s = _cvtsh_ss(_cvtss_sh(dd * float(total), _MM_FROUND_TO_NEAREST_INT));
    *sum = total;
}

// ---- scalar reference dot products --------------------------------------------------------------------------------
// noinline: inlined into the AVX-512 VNNI kernels (their odd-block tail), GCC 12 auto-vectorises the signed int8
// products of the Q8_0 loop into vpdpbusd as if one side were unsigned, giving wrong sums. Kept out of line, they are
// compiled for the baseline target only.

__attribute__((noinline)) float dot_q4_0_scalar(const uint8_t *w, const Q8Rows &x, int64_t t, int nb) {
    const int8_t *qs = x.qs + t * x.K;
    const float *d = x.d + t * nb;
    float acc = 0;
    for (int b = 0; b < nb; ++b) {
        const uint8_t *blk = w + b * 18;
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j) {
            isum += ((blk[2 + j] & 15) - 8) * qs[b * 32 + j];
            isum += ((blk[2 + j] >> 4) - 8) * qs[b * 32 + 16 + j];
        }
        acc += fp16_to_f32(load_u16(blk)) * d[b] * float(isum);
    }
    return acc;
}

__attribute__((noinline)) float dot_q4_1_scalar(const uint8_t *w, const Q8Rows &x, int64_t t, int nb) {
    const int8_t *qs = x.qs + t * x.K;
    const float *d = x.d + t * nb, *s = x.s + t * nb;
    float acc = 0, mins = 0;
    for (int b = 0; b < nb; ++b) {
        const uint8_t *blk = w + b * 20;
        int32_t isum = 0;
        for (int j = 0; j < 16; ++j) {
            isum += (blk[4 + j] & 15) * qs[b * 32 + j];
            isum += (blk[4 + j] >> 4) * qs[b * 32 + 16 + j];
        }
        acc += fp16_to_f32(load_u16(blk)) * d[b] * float(isum);
        mins += fp16_to_f32(load_u16(blk + 2)) * s[b];
    }
    return acc + mins;
}

__attribute__((noinline)) float dot_q8_0_scalar(const uint8_t *w, const Q8Rows &x, int64_t t, int nb) {
    const int8_t *qs = x.qs + t * x.K;
    const float *d = x.d + t * nb;
    float acc = 0;
    for (int b = 0; b < nb; ++b) {
        const uint8_t *blk = w + b * 34;
        int32_t isum = 0;
        for (int j = 0; j < 32; ++j) isum += int8_t(blk[2 + j]) * qs[b * 32 + j];
        acc += fp16_to_f32(load_u16(blk)) * d[b] * float(isum);
    }
    return acc;
}

float weight_at(WeightType t, const uint8_t *row, int k) {
    switch (t) {
        case WeightType::F32: {
            float f;
            std::memcpy(&f, row + 4 * int64_t(k), 4);
            return f;
        }
        case WeightType::F16: return fp16_to_f32(load_u16(row + 2 * int64_t(k)));
        case WeightType::BF16: return bf16_to_f32(load_u16(row + 2 * int64_t(k)));
        default: break;
    }
    const int b = k / 32, j = k % 32;
    switch (t) {
        case WeightType::Q4_0: {
            const uint8_t *blk = row + b * 18;
            const int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
            return fp16_to_f32(load_u16(blk)) * float(q - 8);
        }
        case WeightType::Q4_1: {
            const uint8_t *blk = row + b * 20;
            const int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
            return fp16_to_f32(load_u16(blk)) * float(q) + fp16_to_f32(load_u16(blk + 2));
        }
        case WeightType::Q8_0: {
            const uint8_t *blk = row + b * 34;
            return fp16_to_f32(load_u16(blk)) * float(int8_t(blk[2 + j]));
        }
        default: return 0;
    }
}

void matmul_scalar(WeightType wt, const uint8_t *w, int K, const float *x, int64_t ldx, const Q8Rows *xq, int n_tok,
                   int r0, int r1, float *y, int64_t ldy) {
    const int64_t rb = weight_row_bytes(wt, K);
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * rb;
        for (int t = 0; t < n_tok; ++t) {
            float v = 0;
            switch (wt) {
                case WeightType::Q4_0: v = dot_q4_0_scalar(row, *xq, t, nb); break;
                case WeightType::Q4_1: v = dot_q4_1_scalar(row, *xq, t, nb); break;
                case WeightType::Q8_0: v = dot_q8_0_scalar(row, *xq, t, nb); break;
                default:
                    for (int k = 0; k < K; ++k) v += weight_at(wt, row, k) * x[t * ldx + k];
            }
            y[t * ldy + r] = v;
        }
    }
}

// ---- AVX-512 VNNI: two 32-blocks per 512-bit register ----------------------------------------------------------------
#define MS_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512dq,avx512vbmi,avx2,fma,f16c")))

// Per-block weight unpacking into 32 bytes ordered like the activations (element j at byte j).
template <WeightType WT> struct Unpack;
template <> struct Unpack<WeightType::Q4_1> {
    static constexpr int kBytes = 20, kQs = 4;
};
template <> struct Unpack<WeightType::Q4_0> {
    static constexpr int kBytes = 18, kQs = 2;
};
template <> struct Unpack<WeightType::Q8_0> {
    static constexpr int kBytes = 34, kQs = 2;
};

// 2 blocks' 4-bit weights as unsigned bytes: 128-bit lanes [lo0, hi0, lo1, hi1].
MS_VNNI inline __m512i nibbles2(const uint8_t *b0, const uint8_t *b1) {
    const __m256i q = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i *>(b1)),
                                       _mm_loadu_si128(reinterpret_cast<const __m128i *>(b0)));
    const __m256i m = _mm256_set1_epi8(0x0f);
    const __m256i lo = _mm256_and_si256(q, m), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m);
    const __m512i w = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // [lo0, lo1, hi0, hi1]
    return _mm512_shuffle_i64x2(w, w, _MM_SHUFFLE(3, 1, 2, 0));
}

// The same with AVX-512 VBMI from one masked load of the two blocks (`stride` bytes each, nibbles at `qs`): a byte
// permute puts each nibble byte twice, a 16-bit shift by 0 or 4 per half and a mask leave the low or high nibble.
template <int kStride, int kQs> MS_VNNI inline __m512i nibbles2_vbmi(const uint8_t *b0) {
    static const struct Index {
        alignas(64) uint8_t idx[64];
        Index() {
            for (int j = 0; j < 16; ++j) idx[j] = idx[16 + j] = uint8_t(kQs + j), idx[32 + j] = idx[48 + j] = uint8_t(kStride + kQs + j);
        }
    } index;
    const __m512i raw = _mm512_maskz_loadu_epi8((__mmask64(1) << (2 * kStride)) - 1, b0);
    const __m512i v = _mm512_permutexvar_epi8(_mm512_load_si512(index.idx), raw);
    const __m512i shift = _mm512_setr_epi64(0, 0, 0x0004000400040004LL, 0x0004000400040004LL, 0, 0,
                                            0x0004000400040004LL, 0x0004000400040004LL);
    return _mm512_and_si512(_mm512_srlv_epi16(v, shift), _mm512_set1_epi8(0x0f));
}

// 2 blocks' int8 weights offset by 128 into unsigned bytes (the activation sums undo the offset).
MS_VNNI inline __m512i bytes2(const uint8_t *b0, const uint8_t *b1) {
    const __m512i w = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(b0))),
        _mm256_loadu_si256(reinterpret_cast<const __m256i *>(b1)), 1);
    return _mm512_xor_si512(w, _mm512_set1_epi8(char(0x80)));
}

// [v0 x8, v1 x8] from two consecutive floats.
MS_VNNI inline __m512 pair_ps(const float *p) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    // loadl_epi64 reads through an unaligned type (a float pair is only 4-byte aligned; _mm_load_sd would not be).
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p)))));
}
MS_VNNI inline __m512i pair_epi32(const int32_t *p) {
    const __m512i idx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    // Only one lane per block carries the correction, the others get zero.
    return _mm512_maskz_permutexvar_epi32(0x0101, idx, _mm512_castsi128_si512(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(p))));
}

template <WeightType WT, int NT, bool VBMI>
MS_VNNI inline void row_vnni(const uint8_t *row, const Q8Rows &x, int t0, int nb, float *y, int64_t ldy) {
    constexpr int BB = Unpack<WT>::kBytes, QS = Unpack<WT>::kQs;
    __m512 acc[NT];
    float mins[NT];
    for (int t = 0; t < NT; ++t) {
        acc[t] = _mm512_setzero_ps();
        mins[t] = 0;
    }
    const int K = x.K;
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
        const uint8_t *b0 = row + b * BB, *b1 = b0 + BB;
        __m512i w;
        if constexpr (WT == WeightType::Q8_0) w = bytes2(b0 + QS, b1 + QS);
        else if constexpr (VBMI) w = nibbles2_vbmi<BB, QS>(b0);
        else w = nibbles2(b0 + QS, b1 + QS);
        const __m512 dw = _mm512_insertf32x8(_mm512_set1_ps(_cvtsh_ss(load_u16(b0))), _mm256_set1_ps(_cvtsh_ss(load_u16(b1))), 1);
        float m0 = 0, m1 = 0;
        if (WT == WeightType::Q4_1) {
            m0 = _cvtsh_ss(load_u16(b0 + 2));
            m1 = _cvtsh_ss(load_u16(b1 + 2));
        }
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
            const int64_t tt = t0 + t;
            const __m512i a = _mm512_loadu_si512(x.qs + tt * K + b * 32);
            __m512i init = _mm512_setzero_si512();
            if (WT == WeightType::Q8_0) init = _mm512_slli_epi32(_mm512_sub_epi32(init, pair_epi32(x.sum + tt * nb + b)), 7);
            if (WT == WeightType::Q4_0) init = _mm512_slli_epi32(_mm512_sub_epi32(init, pair_epi32(x.sum + tt * nb + b)), 3);
            const __m512i dot = _mm512_dpbusd_epi32(init, w, a);
            acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, pair_ps(x.d + tt * nb + b)), acc[t]);
            if (WT == WeightType::Q4_1) mins[t] += m0 * x.s[tt * nb + b] + m1 * x.s[tt * nb + b + 1];
        }
    }
    for (; b < nb; ++b) {  // an odd last block: the scalar form (rare: K / 32 odd)
        const uint8_t *blk = row + b * BB;
        for (int t = 0; t < NT; ++t) {
            Q8Rows one = x;
            const int64_t tt = t0 + t;
            one.qs = x.qs + tt * K + b * 32;
            one.d = x.d + tt * nb + b;
            one.s = x.s + tt * nb + b;
            one.sum = x.sum + tt * nb + b;
            one.K = 32;
            float v = WT == WeightType::Q4_1 ? dot_q4_1_scalar(blk, one, 0, 1)
                      : WT == WeightType::Q4_0 ? dot_q4_0_scalar(blk, one, 0, 1) : dot_q8_0_scalar(blk, one, 0, 1);
            mins[t] += v;
        }
    }
    for (int t = 0; t < NT; ++t) y[t * ldy] = _mm512_reduce_add_ps(acc[t]) + mins[t];
}

template <WeightType WT, bool VBMI>
MS_VNNI void matmul_vnni(const uint8_t *w, int K, const Q8Rows &x, int n_tok, int r0, int r1, float *y, int64_t ldy) {
    const int64_t rb = weight_row_bytes(WT, K);
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * rb;
        int t = 0;
        for (; t + 4 <= n_tok; t += 4) row_vnni<WT, 4, VBMI>(row, x, t, nb, y + t * ldy + r, ldy);
        switch (n_tok - t) {
            case 3: row_vnni<WT, 3, VBMI>(row, x, t, nb, y + t * ldy + r, ldy); break;
            case 2: row_vnni<WT, 2, VBMI>(row, x, t, nb, y + t * ldy + r, ldy); break;
            case 1: row_vnni<WT, 1, VBMI>(row, x, t, nb, y + t * ldy + r, ldy); break;
            default: break;
        }
    }
}

// ---- AVX2 (no VNNI): one block per 256-bit register, maddubs + madd -------------------------------------------------
// Register tiles of R weight rows x NT tokens: each block's weights are unpacked once per tile and serve NT tokens, and
// R*NT independent accumulators hide the FMA latency. Per chunk of blocks, a vector pass first turns the fp16 weight
// scales into floats (8 block headers per convert) and multiplies them with the activation scales, so the inner loop
// is maddubs, madd, convert and one FMA with a broadcast scale per (row, token, block). The per-block terms that do not
// depend on the weights' values (Q4_1's m * s, Q4_0's -8 d_w d_a sum a) are vector dot products over the blocks in the
// same pass.
#define MS_AVX2Q __attribute__((target("avx2,fma,f16c")))

// One block's weights as 32 bytes ordered like the activations: unsigned nibbles for Q4_0/Q4_1, signed for Q8_0.
template <WeightType WT> MS_AVX2Q inline __m256i unpack_avx2(const uint8_t *qs) {
    if constexpr (WT == WeightType::Q8_0) {
        return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs));
    } else {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i *>(qs));
        const __m128i m = _mm_set1_epi8(0x0f);
        return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(q, 4), m), _mm_and_si128(q, m));
    }
}

// Blocks [b, b + 8) of one row: the fp16 scale d (and, in `mv`, Q4_1's min m) as floats, from the block headers (4
// bytes at each block's start: d, then m or the first weight bytes; inserts, which beat vpgatherdd on Zen 3).
template <WeightType WT> MS_AVX2Q inline __m256 scales8_avx2(const uint8_t *row, int b, __m256 *mv) {
    constexpr int BB = Unpack<WT>::kBytes;
    const uint8_t *p0 = row + int64_t(b) * BB;
    auto u32 = [&](int i) {
        int v;
        std::memcpy(&v, p0 + i * BB, 4);
        return v;
    };
    const __m256i g = _mm256_setr_epi32(u32(0), u32(1), u32(2), u32(3), u32(4), u32(5), u32(6), u32(7));
    // 16-bit halves packed: per 128-bit lane [d0..3, m0..3 | d4..7, m4..7], then [d0..7 | m0..7].
    const __m256i lo = _mm256_and_si256(g, _mm256_set1_epi32(0xffff)), hi = _mm256_srli_epi32(g, 16);
    const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), _MM_SHUFFLE(3, 1, 2, 0));
    if (WT == WeightType::Q4_1) *mv = _mm256_cvtph_ps(_mm256_extracti128_si256(p, 1));
    return _mm256_cvtph_ps(_mm256_castsi256_si128(p));
}

template <WeightType WT, int R, int NT>
MS_AVX2Q void tile_avx2(const uint8_t *w, int64_t rb, const Q8Rows &x, int t0, int nb, float *y, int64_t ldy) {
    constexpr int BB = Unpack<WT>::kBytes, QS = Unpack<WT>::kQs, KC = 64;
    const int K = x.K;
    alignas(32) float sc[R][NT][KC];  // d_w * d_a per (row, token, block of the chunk)
    __m256 total[R][NT], extra[R][NT];  // extra: the weight-independent per-block terms, summed over 8 blocks per lane
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) total[r][t] = extra[r][t] = _mm256_setzero_ps();
    float extra_tail[R][NT] = {};
    const __m256i ones = _mm256_set1_epi16(1);
    // One token (decode) streams the weights from DRAM once: prefetch the rows 4 tiles ahead (measured on Zen 3 with
    // 35-60 MB matrices: 2 to 6 tiles ahead all gave about 1.2x (Q4_1) and 1.35x (Q8_0) over no prefetch). Prefetches
    // past the matrix's end do not fault.
    if (NT == 1)
        for (int64_t off = 0; off < R * rb; off += 64)
            _mm_prefetch(reinterpret_cast<const char *>(reinterpret_cast<uintptr_t>(w) + uintptr_t(4 * R * rb + off)), _MM_HINT_T0);
    for (int c0 = 0; c0 < nb; c0 += KC) {
        const int n = std::min(KC, nb - c0);
        int j = 0;
        for (; j + 8 <= n; j += 8) {
            for (int r = 0; r < R; ++r) {
                __m256 mv = _mm256_setzero_ps();
                const __m256 dw = scales8_avx2<WT>(w + r * rb, c0 + j, &mv);
                for (int t = 0; t < NT; ++t) {
                    const int64_t o = int64_t(t0 + t) * nb + c0 + j;
                    const __m256 s = _mm256_mul_ps(dw, _mm256_loadu_ps(x.d + o));
                    _mm256_store_ps(&sc[r][t][j], s);
                    if (WT == WeightType::Q4_1) extra[r][t] = _mm256_fmadd_ps(mv, _mm256_loadu_ps(x.s + o), extra[r][t]);
                    if (WT == WeightType::Q4_0) {
                        const __m256 sa = _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(x.sum + o)));
                        extra[r][t] = _mm256_fmadd_ps(_mm256_mul_ps(s, _mm256_set1_ps(-8.0f)), sa, extra[r][t]);
                    }
                }
            }
        }
        for (; j < n; ++j)  // the chunk's last blocks that do not fill 8
            for (int r = 0; r < R; ++r) {
                const uint8_t *blk = w + r * rb + int64_t(c0 + j) * BB;
                const float dw = _cvtsh_ss(load_u16(blk));
                for (int t = 0; t < NT; ++t) {
                    const int64_t o = int64_t(t0 + t) * nb + c0 + j;
                    sc[r][t][j] = dw * x.d[o];
                    if (WT == WeightType::Q4_1) extra_tail[r][t] += _cvtsh_ss(load_u16(blk + 2)) * x.s[o];
                    if (WT == WeightType::Q4_0) extra_tail[r][t] += sc[r][t][j] * -8.0f * float(x.sum[o]);
                }
            }
        __m256 acc[R][NT];  // this chunk's sums (a fresh array per chunk: GCC then keeps it in registers)
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < NT; ++t) acc[r][t] = _mm256_setzero_ps();
        for (int b = 0; b < n; ++b) {
            __m256i wv[R];
            for (int r = 0; r < R; ++r) {
                wv[r] = unpack_avx2<WT>(w + r * rb + int64_t(c0 + b) * BB + QS);
                if (WT == WeightType::Q8_0) wv[r] = _mm256_sign_epi8(wv[r], wv[r]);  // |w|; w's sign moves onto a below
            }
            for (int t = 0; t < NT; ++t) {
                const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x.qs + int64_t(t0 + t) * K + (c0 + b) * 32));
                for (int r = 0; r < R; ++r) {
                    __m256i at = a;
                    if (WT == WeightType::Q8_0)
                        at = _mm256_sign_epi8(a, unpack_avx2<WT>(w + r * rb + int64_t(c0 + b) * BB + QS));
                    const __m256i dot = _mm256_madd_epi16(_mm256_maddubs_epi16(wv[r], at), ones);
                    acc[r][t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_broadcast_ss(&sc[r][t][b]), acc[r][t]);
                }
            }
        }
        for (int r = 0; r < R; ++r)
            for (int t = 0; t < NT; ++t) total[r][t] = _mm256_add_ps(total[r][t], acc[r][t]);
    }
    for (int r = 0; r < R; ++r)
        for (int t = 0; t < NT; ++t) {
            float v = hsum_avx2(total[r][t]);
            if (WT != WeightType::Q8_0) v += hsum_avx2(extra[r][t]) + extra_tail[r][t];
            y[t * ldy + r] = v;
        }
}

// Rows [r0, r1) x tokens [t0, t0 + NT): tiles of 2 rows, then a single row. One token (decode) of 4-bit weights takes 4
// rows per tile (measured on Zen 3: faster from cache, the same from DRAM; Q8_0 from DRAM was slower with 4).
template <WeightType WT, int NT>
MS_AVX2Q void rows_avx2(const uint8_t *w, int64_t rb, const Q8Rows &x, int t0, int nb, int r0, int r1, float *y, int64_t ldy) {
    constexpr int R = NT == 1 && WT != WeightType::Q8_0 ? 4 : 2;
    int r = r0;
    for (; r + R <= r1; r += R) tile_avx2<WT, R, NT>(w + r * rb, rb, x, t0, nb, y + t0 * ldy + r, ldy);
    for (; r < r1; ++r) tile_avx2<WT, 1, NT>(w + r * rb, rb, x, t0, nb, y + t0 * ldy + r, ldy);
}

// Rows in chunks of 16 (a few KB of weights, kept in L1) and, per chunk, every token: the weights come from memory
// once.
template <WeightType WT>
MS_AVX2Q void matmul_avx2(const uint8_t *w, int K, const Q8Rows &x, int n_tok, int r0, int r1, float *y, int64_t ldy) {
    const int64_t rb = weight_row_bytes(WT, K);
    const int nb = K / 32;
    for (int c0 = r0; c0 < r1; c0 += 16) {
        const int c1 = std::min(r1, c0 + 16);
        int t = 0;
        for (; t + 4 <= n_tok; t += 4) rows_avx2<WT, 4>(w, rb, x, t, nb, c0, c1, y, ldy);
        switch (n_tok - t) {
            case 3: rows_avx2<WT, 3>(w, rb, x, t, nb, c0, c1, y, ldy); break;
            case 2: rows_avx2<WT, 2>(w, rb, x, t, nb, c0, c1, y, ldy); break;
            case 1: rows_avx2<WT, 1>(w, rb, x, t, nb, c0, c1, y, ldy); break;
            default: break;
        }
    }
}

// ---- float weights ------------------------------------------------------------------------------------------------
__attribute__((target("avx512f,f16c,fma"))) void matmul_float_avx512(WeightType wt, const uint8_t *w, int K, const float *x,
                                                                   int64_t ldx, int n_tok, int r0, int r1, float *y,
                                                                   int64_t ldy) {
    const int64_t rb = weight_row_bytes(wt, K);
    for (int r = r0; r < r1; ++r) {
        const uint8_t *row = w + r * rb;
        for (int t = 0; t < n_tok; ++t) {
            const float *xt = x + t * ldx;
            __m512 acc = _mm512_setzero_ps();
            int k = 0;
            for (; k + 16 <= K; k += 16) {
                __m512 wv;
                if (wt == WeightType::F32) wv = _mm512_loadu_ps(reinterpret_cast<const float *>(row) + k);
                else if (wt == WeightType::F16) wv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * k)));
                else
                    wv = _mm512_castsi512_ps(_mm512_slli_epi32(
                        _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(row + 2 * k))), 16));
                acc = _mm512_fmadd_ps(wv, _mm512_loadu_ps(xt + k), acc);
            }
            float v = _mm512_reduce_add_ps(acc);
            for (; k < K; ++k) v += weight_at(wt, row, k) * xt[k];
            y[t * ldy + r] = v;
        }
    }
}

}  // namespace

void quantize_rows_q8(Simd s, const float *x, int64_t ldx, int t0, int t1, const Q8Rows &q) {
    const int nb = q.K / 32;
    for (int t = t0; t < t1; ++t)
        for (int b = 0; b < nb; ++b) {
            const float *xb = x + t * ldx + b * 32;
            const int64_t i = int64_t(t) * nb + b;
            if (s != Simd::Scalar) quantize_block_avx2(xb, q.qs + i * 32, q.d + i, q.s + i, q.sum + i);
            else quantize_block_scalar(xb, q.qs + i * 32, q.d + i, q.s + i, q.sum + i);
        }
}

void dequantize_row(WeightType t, const uint8_t *row, int K, float *out) {
    for (int k = 0; k < K; ++k) out[k] = weight_at(t, row, k);
}

void matmul_rows(Simd s, WeightType t, const uint8_t *w, int K, const float *x, int64_t ldx, const Q8Rows *xq, int n_tok,
                 int r0, int r1, float *y, int64_t ldy) {
    if (weight_type_quantized(t) && (!xq || K % 32 != 0 || xq->K != K))
        throw Error(MS_ERR_INTERNAL, std::string("matmul_rows: ") + weight_type_name(t) + " needs Q8 activations of K");
    if (!weight_type_quantized(t) && !x) throw Error(MS_ERR_INTERNAL, "matmul_rows: float weights need fp32 activations");
    if (s == Simd::Scalar) return matmul_scalar(t, w, K, x, ldx, xq, n_tok, r0, r1, y, ldy);
    if (!weight_type_quantized(t)) {
        if (s == Simd::Avx512) return matmul_float_avx512(t, w, K, x, ldx, n_tok, r0, r1, y, ldy);
        return matmul_scalar(t, w, K, x, ldx, xq, n_tok, r0, r1, y, ldy);
    }
    const bool vnni = s == Simd::Avx512 && quant_vnni_available() && quant_kernel_vnni();
    if (vnni && quant_vbmi_available()) {
        switch (t) {
            case WeightType::Q4_0: return matmul_vnni<WeightType::Q4_0, true>(w, K, *xq, n_tok, r0, r1, y, ldy);
            case WeightType::Q4_1: return matmul_vnni<WeightType::Q4_1, true>(w, K, *xq, n_tok, r0, r1, y, ldy);
            default: break;
        }
    }
    switch (t) {
        case WeightType::Q4_0:
            return vnni ? matmul_vnni<WeightType::Q4_0, false>(w, K, *xq, n_tok, r0, r1, y, ldy)
                        : matmul_avx2<WeightType::Q4_0>(w, K, *xq, n_tok, r0, r1, y, ldy);
        case WeightType::Q4_1:
            return vnni ? matmul_vnni<WeightType::Q4_1, false>(w, K, *xq, n_tok, r0, r1, y, ldy)
                        : matmul_avx2<WeightType::Q4_1>(w, K, *xq, n_tok, r0, r1, y, ldy);
        case WeightType::Q8_0:
            return vnni ? matmul_vnni<WeightType::Q8_0, false>(w, K, *xq, n_tok, r0, r1, y, ldy)
                        : matmul_avx2<WeightType::Q8_0>(w, K, *xq, n_tok, r0, r1, y, ldy);
        default: break;
    }
}

}  // namespace ms
