#include "cpu/matmul_mxfp4_q8.h"

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/avx2_reduce.h"
#include "cpu/aligned_vector.h"

namespace ms {

namespace {

// 2 * E2M1 for each nibble (bit 3 sign), and the same plus 12 as the unsigned bytes the SIMD kernels multiply.
constexpr int8_t kW2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
constexpr int kW2Offset = 12;

// 2^(e - 128): the E8M0 factor 2^(e - 127) with the E2M1 halving folded in (exact, subnormal only for e = 0).
struct HalfScaleTable {
    float v[256];
    HalfScaleTable() {
        for (int e = 0; e < 256; ++e) v[e] = std::ldexp(1.0f, e - 128);
    }
};
const HalfScaleTable kHalfScale;

inline int32_t load_i32(const void *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

// ---- activation quantization --------------------------------------------------------------------------------------

// One 32-block of one token into lane j of a panel (qs/d/sum already point at the panel's block b).
void quantize_block_scalar(const float *x, int8_t *qs_block, int j, float *d, int32_t *sum) {
    float amax = 0;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int k = 0; k < 32; ++k) {
        const int v = int(std::nearbyint(x[k] * id));
        const int pos = q8_block_position(k);
        qs_block[(pos / 4) * 32 + j * 4 + pos % 4] = int8_t(v);
        s += v;
    }
    d[j] = amax / 127.0f;
    sum[j] = s;
}

__attribute__((target("avx2,fma"))) void quantize_block_avx2(const float *x, int8_t *qs_block, int j, float *d,
                                                             int32_t *sum) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4], mx = _mm256_setzero_ps();
    for (int i = 0; i < 4; ++i) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        mx = _mm256_max_ps(mx, _mm256_andnot_ps(sign, v[i]));
    }
    const float amax = hmax_avx2(mx);
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    const __m256 idv = _mm256_set1_ps(id);
    __m256i q[4], acc = _mm256_setzero_si256();
    for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[i], idv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
        acc = _mm256_add_epi32(acc, q[i]);
    }
    __m128i a4 = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    a4 = _mm_add_epi32(a4, _mm_unpackhi_epi64(a4, a4));
    a4 = _mm_add_epi32(a4, _mm_shuffle_epi32(a4, 1));
    // 32 int32 -> 32 int8 in element order (packs work per 128-bit lane; the permute restores the order), then into
    // block-split order: even elements of each 128-bit lane first (byte shuffle), then the lanes' halves interleaved.
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    p = _mm256_shuffle_epi8(p, _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                                                14, 1, 3, 5, 7, 9, 11, 13, 15));
    p = _mm256_permute4x64_epi64(p, _MM_SHUFFLE(3, 1, 2, 0));
    alignas(32) int32_t quads[8];
    _mm256_store_si256(reinterpret_cast<__m256i *>(quads), p);
    for (int g = 0; g < 8; ++g) std::memcpy(qs_block + g * 32 + j * 4, &quads[g], 4);
    d[j] = amax / 127.0f;
    sum[j] = _mm_cvtsi128_si32(a4);
}

// ---- scalar reference ---------------------------------------------------------------------------------------------

void rows_scalar(const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales, const float *bias,
                 int K, int r0, int r1, float *y, int64_t ldy) {
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r)
        for (int t = 0; t < n_tok; ++t) {
            const int64_t p = panel0 + t / kQ8PanelTokens;
            const int j = t % kQ8PanelTokens;
            const int8_t *qs = x.qs + p * q8_panel_qs_bytes(K);
            const float *d = x.d + p * q8_panel_blocks(K);
            float acc = 0;
            for (int b = 0; b < nb; ++b) {
                const uint8_t *blk = blocks + (int64_t(r) * nb + b) * 16;
                int32_t isum = 0;
                for (int k = 0; k < 32; ++k) {
                    const int w2 = kW2[(k % 2 == 0) ? (blk[k / 2] & 15) : (blk[k / 2] >> 4)];
                    const int pos = q8_block_position(k);
                    isum += w2 * qs[(int64_t(b) * 8 + pos / 4) * 32 + j * 4 + pos % 4];
                }
                const float sc = d[b * kQ8PanelTokens + j] * kHalfScale.v[scales[int64_t(r) * nb + b]];
                acc = std::fma(float(isum), sc, acc);
            }
            y[t * ldy + r] = acc + (bias ? bias[r] : 0.0f);
        }
}

// ---- SIMD ---------------------------------------------------------------------------------------------------------

// R rows unpacked to unsigned bytes w2 + 12 (wq, row i at wq + i * wq_row_bytes(K)): the low nibbles of a block are its
// block-split positions 0..15, the high ones 16..31, so a table lookup per nibble half is all it takes. Per pair of
// blocks, 64 bytes: [low nibbles of b, of b + 1, high nibbles of b, of b + 1] (wq_offset gives a quad's place).
inline int64_t wq_row_bytes(int K) { return int64_t(K / 32 + 1) / 2 * 64; }
inline int wq_offset(int b, int quad) { return (b >> 1) * 64 + (b & 1) * 16 + (quad >> 2) * 32 + (quad & 3) * 4; }

__attribute__((target("avx2"))) void unpack_rows(const uint8_t *blocks, int K, int r, int R, uint8_t *wq) {
    const int nb = K / 32;
    const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14, 15, 16, 18, 20,
                                         24, 12, 11, 10, 9, 8, 6, 4, 0);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int i = 0; i < R; ++i) {
        const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
        uint8_t *out = wq + int64_t(i) * wq_row_bytes(K);
        int b = 0;
        for (; b + 2 <= nb; b += 2) {
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + b * 16));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + b * 32), _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m4)));
            _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + b * 32 + 32),
                                _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)));
        }
        if (b < nb) {  // an odd last block: low half at +0, high half at +32 of its pair's slot
            const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + b * 16));
            const __m128i l = _mm256_castsi256_si128(lut), m = _mm256_castsi256_si128(m4);
            _mm_storeu_si128(reinterpret_cast<__m128i *>(out + b * 32), _mm_shuffle_epi8(l, _mm_and_si128(v, m)));
            _mm_storeu_si128(reinterpret_cast<__m128i *>(out + b * 32 + 32), _mm_shuffle_epi8(l, _mm_and_si128(_mm_srli_epi16(v, 4), m)));
        }
    }
}

// R rows x one panel (8 token lanes). AVX2: vpmaddubsw (u8 weight x s8 activation, pairs summed to int16; at most
// 2 * 24 * 127 = 6096 each, 4 of them summed in int16 stay below 2^15), vpmaddwd to int32 per token lane.
template <int R>
__attribute__((target("avx2,fma"))) inline void panel_avx2(const uint8_t *wq, int K, const uint8_t *sc, const int8_t *qs,
                                                           const float *d, const int32_t *sum, float out[][8]) {
    const int nb = K / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 facc[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m256i acc[R];
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            __m256i t[R];
#pragma GCC unroll 4
            for (int q = 0; q < 4; ++q) {
                const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(b) * 8 + h * 4 + q) * 32));
#pragma GCC unroll 4
                for (int i = 0; i < R; ++i) {
                    const __m256i w = _mm256_set1_epi32(load_i32(wq + int64_t(i) * wq_row_bytes(K) + wq_offset(b, h * 4 + q)));
                    const __m256i p = _mm256_maddubs_epi16(w, a);
                    t[i] = q == 0 ? p : _mm256_add_epi16(t[i], p);
                }
            }
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) {
                const __m256i m = _mm256_madd_epi16(t[i], ones);
                acc[i] = h == 0 ? m : _mm256_add_epi32(acc[i], m);
            }
        }
        const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sum + b * 8));
        const __m256i c12 = _mm256_add_epi32(_mm256_slli_epi32(s, 3), _mm256_slli_epi32(s, 2));
        const __m256 dv = _mm256_loadu_ps(d + b * 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            const __m256 f = _mm256_mul_ps(dv, _mm256_set1_ps(kHalfScale.v[sc[int64_t(i) * nb + b]]));
            facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(acc[i], c12)), f, facc[i]);
        }
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out[i], facc[i]);
}

#define MS_Q8_VNNI __attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni")))

// The same with AVX-512 VNNI on 256-bit registers: vpdpbusd does the 4 products and the int32 accumulation at once.
template <int R>
MS_Q8_VNNI inline void panel_vnni(const uint8_t *wq, int K, const uint8_t *sc, const int8_t *qs, const float *d,
                                  const int32_t *sum, float out[][8]) {
    const int nb = K / 32;
    __m256 facc[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sum + b * 8));
        const __m256i neg = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_add_epi32(_mm256_slli_epi32(s, 3), _mm256_slli_epi32(s, 2)));
        __m256i acc[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i] = neg;
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(b) * 8 + q) * 32));
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i)
                acc[i] = _mm256_dpbusd_epi32(acc[i], _mm256_set1_epi32(load_i32(wq + int64_t(i) * wq_row_bytes(K) + wq_offset(b, q))), a);
        }
        const __m256 dv = _mm256_loadu_ps(d + b * 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            const __m256 f = _mm256_mul_ps(dv, _mm256_set1_ps(kHalfScale.v[sc[int64_t(i) * nb + b]]));
            facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), f, facc[i]);
        }
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out[i], facc[i]);
}

template <bool VNNI, int R>
inline void panel(const uint8_t *wq, int K, const uint8_t *sc, const int8_t *qs, const float *d, const int32_t *sum,
                  float out[][8]) {
    if constexpr (VNNI) panel_vnni<R>(wq, K, sc, qs, d, sum, out);
    else panel_avx2<R>(wq, K, sc, qs, d, sum, out);
}

template <bool VNNI, int R>
void row_group(const Q8Panels &x, int panel0, int n_tok, const uint8_t *wq, const uint8_t *sc, const float *bias, int K,
               int r, float *y, int64_t ldy) {
    alignas(32) float out[4][8];
    for (int p = 0; p * kQ8PanelTokens < n_tok; ++p) {
        const int64_t pp = panel0 + p;
        panel<VNNI, R>(wq, K, sc, x.qs + pp * q8_panel_qs_bytes(K), x.d + pp * q8_panel_blocks(K), x.sum + pp * q8_panel_blocks(K), out);
        const int lanes = std::min(kQ8PanelTokens, n_tok - p * kQ8PanelTokens);
        for (int j = 0; j < lanes; ++j)
            for (int i = 0; i < R; ++i)
                y[int64_t(p * kQ8PanelTokens + j) * ldy + r + i] = out[i][j] + (bias ? bias[r + i] : 0.0f);
    }
}

template <bool VNNI>
void rows_simd(const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales, const float *bias,
               int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local AlignedVector<uint8_t> wq_buf;
    const int nb = K / 32;
    // Rows of whole 64-byte block pairs (an odd last block's high half sits at +32).
    const size_t row_bytes = size_t(wq_row_bytes(K));
    if (wq_buf.size() < 4 * row_bytes) wq_buf.resize(4 * row_bytes);
    uint8_t *wq = wq_buf.data();
    for (int r = r0; r < r1; r += 4) {
        const int R = std::min(4, r1 - r);
        unpack_rows(blocks, K, r, R, wq);
        const uint8_t *sc = scales + int64_t(r) * nb;
        switch (R) {
            case 4: row_group<VNNI, 4>(x, panel0, n_tok, wq, sc, bias, K, r, y, ldy); break;
            case 3: row_group<VNNI, 3>(x, panel0, n_tok, wq, sc, bias, K, r, y, ldy); break;
            case 2: row_group<VNNI, 2>(x, panel0, n_tok, wq, sc, bias, K, r, y, ldy); break;
            default: row_group<VNNI, 1>(x, panel0, n_tok, wq, sc, bias, K, r, y, ldy); break;
        }
    }
}

}  // namespace

bool q8_vnni_available() {
#if defined(__x86_64__)
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }();
    return ok;
#else
    return false;
#endif
}

void q8_quantize_panel(Simd s, const float *const *rows, int n, const Q8Panels &p, int panel) {
    const int K = p.K, nb = K / 32;
    int8_t *qs = p.qs + int64_t(panel) * q8_panel_qs_bytes(K);
    float *d = p.d + int64_t(panel) * q8_panel_blocks(K);
    int32_t *sum = p.sum + int64_t(panel) * q8_panel_blocks(K);
    if (n < kQ8PanelTokens) {  // unused lanes: zero values, zero scale (they are computed and never stored)
        std::memset(qs, 0, size_t(q8_panel_qs_bytes(K)));
        std::fill(d, d + q8_panel_blocks(K), 0.0f);
        std::fill(sum, sum + q8_panel_blocks(K), 0);
    }
    for (int j = 0; j < n; ++j)
        for (int b = 0; b < nb; ++b) {
            int8_t *qb = qs + int64_t(b) * 8 * 32;
            if (s == Simd::Scalar) quantize_block_scalar(rows[j] + b * 32, qb, j, d + b * 8, sum + b * 8);
            else quantize_block_avx2(rows[j] + b * 32, qb, j, d + b * 8, sum + b * 8);
        }
}

void matmul_mxfp4_q8_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales,
                          const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (n_tok <= 0 || r1 <= r0) return;
    if (s == Simd::Scalar) return rows_scalar(x, panel0, n_tok, blocks, scales, bias, K, r0, r1, y, ldy);
    if (s == Simd::Avx512 && q8_vnni_available())
        return rows_simd<true>(x, panel0, n_tok, blocks, scales, bias, K, r0, r1, y, ldy);
    rows_simd<false>(x, panel0, n_tok, blocks, scales, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
