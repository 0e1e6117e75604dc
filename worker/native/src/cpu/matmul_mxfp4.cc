#include "cpu/matmul_mxfp4.h"

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cmath>
#include <vector>

#include "cpu/aligned_vector.h"

#include "cpu/gemm_f32_avx512.h"

namespace ms {

const float kE2M1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                         -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

namespace {

struct ScaleTable {
    float v[256];
    ScaleTable() {
        for (int e = 0; e < 256; ++e) v[e] = std::ldexp(1.0f, e - 127);
    }
};
const ScaleTable kScales;

void rows_scalar(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales, const float *bias,
                 int K, int r0, int r1, float *y, int64_t ldy) {
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r) {
        for (int t = 0; t < n_tok; ++t) {
            const float *xt = xs + t * ldx;
            float s = 0;
            for (int b = 0; b < nb; ++b) {
                const uint8_t *blk = blocks + (int64_t(r) * nb + b) * 16;
                float sc = kScales.v[scales[int64_t(r) * nb + b]];
                for (int j = 0; j < 16; ++j) {
                    s += kE2M1[blk[j] & 15] * sc * xt[b * 32 + j];
                    s += kE2M1[blk[j] >> 4] * sc * xt[b * 32 + 16 + j];
                }
            }
            y[t * ldy + r] = s + (bias ? bias[r] : 0.0f);
        }
    }
}

template <int NT>
__attribute__((target("avx2,fma"))) inline void row_avx2(const float *xs, int64_t ldx, const uint8_t *blk, const uint8_t *sc,
                                                         int nb, float *out, int64_t ldy, float bias) {
    const __m256 lut = _mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f);
    const __m256i m7 = _mm256_set1_epi32(7), m8 = _mm256_set1_epi32(8);
    __m256 acc[NT];
#pragma GCC unroll 8
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + b * 16));
        __m256 scale = _mm256_set1_ps(kScales.v[sc[b]]);
        __m256 w[4];  // even 0-7, even 8-15, odd 0-7, odd 8-15
#pragma GCC unroll 2
        for (int h = 0; h < 2; ++h) {
            __m256i v = _mm256_cvtepu8_epi32(h ? _mm_srli_si128(bytes, 8) : bytes);
            __m256i lo = v, hi = _mm256_srli_epi32(v, 4);
            __m256 lo_mag = _mm256_permutevar8x32_ps(lut, _mm256_and_si256(lo, m7));
            __m256 hi_mag = _mm256_permutevar8x32_ps(lut, _mm256_and_si256(hi, m7));
            __m256 lo_sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(lo, m8), 28));
            __m256 hi_sign = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_and_si256(hi, m8), 28));
            w[h] = _mm256_mul_ps(_mm256_xor_ps(lo_mag, lo_sign), scale);
            w[2 + h] = _mm256_mul_ps(_mm256_xor_ps(hi_mag, hi_sign), scale);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            const float *x = xs + t * ldx + b * 32;
            __m256 a = acc[t];
            a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), a);
            a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), a);
            a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), a);
            a = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), a);
            acc[t] = a;
        }
    }
    for (int t = 0; t < NT; ++t) {
        __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[t]), _mm256_extractf128_ps(acc[t], 1));
        s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
        out[t * ldy] = _mm_cvtss_f32(s4) + bias;
    }
}

__attribute__((target("avx2,fma"))) void rows_avx2(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks,
                                                   const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y,
                                                   int64_t ldy) {
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r) {
        const uint8_t *blk = blocks + int64_t(r) * nb * 16;
        const uint8_t *sc = scales + int64_t(r) * nb;
        float bv = bias ? bias[r] : 0.0f;
        int t = 0;
        for (; t + 4 <= n_tok; t += 4) row_avx2<4>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy + r, ldy, bv);
        switch (n_tok - t) {
            case 3: row_avx2<3>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy + r, ldy, bv); break;
            case 2: row_avx2<2>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy + r, ldy, bv); break;
            case 1: row_avx2<1>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy + r, ldy, bv); break;
            default: break;
        }
    }
}

// R output rows x NT tokens per tile: each activation load feeds R FMAs, each dequantised block NT tokens.
template <int R, int NT>
__attribute__((target("avx512f"))) inline void rows_tile_avx512(const float *xs, int64_t ldx, const uint8_t *blk,
                                                                const uint8_t *sc, int nb, float *out, int64_t ldy,
                                                                const float *bias) {
    const __m512 lut = _mm512_loadu_ps(kE2M1);
    const __m512i m15 = _mm512_set1_epi32(15);
    __m512 acc[R][NT];
#pragma GCC unroll 2
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m512 we[R], wo[R];
#pragma GCC unroll 2
        for (int i = 0; i < R; ++i) {
            __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + (int64_t(i) * nb + b) * 16)));
            __m512 scale = _mm512_set1_ps(kScales.v[sc[int64_t(i) * nb + b]]);
            we[i] = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(v, m15), lut), scale);
            wo[i] = _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), scale);
        }
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            const float *x = xs + t * ldx + b * 32;
            const __m512 xe = _mm512_loadu_ps(x), xo = _mm512_loadu_ps(x + 16);
#pragma GCC unroll 2
            for (int i = 0; i < R; ++i) {
                acc[i][t] = _mm512_fmadd_ps(we[i], xe, acc[i][t]);
                acc[i][t] = _mm512_fmadd_ps(wo[i], xo, acc[i][t]);
            }
        }
    }
    for (int i = 0; i < R; ++i)
        for (int t = 0; t < NT; ++t) out[t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]) + (bias ? bias[i] : 0.0f);
}

template <int R>
__attribute__((target("avx512f"))) void rowblock_avx512(const float *xs, int n_tok, int64_t ldx, const uint8_t *blk,
                                                        const uint8_t *sc, int nb, float *y, int64_t ldy, const float *bias) {
    int t = 0;
    for (; t + 8 <= n_tok; t += 8) rows_tile_avx512<R, 8>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias);
    switch (n_tok - t) {
        case 7: rows_tile_avx512<R, 7>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 6: rows_tile_avx512<R, 6>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 5: rows_tile_avx512<R, 5>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 4: rows_tile_avx512<R, 4>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 3: rows_tile_avx512<R, 3>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 2: rows_tile_avx512<R, 2>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 1: rows_tile_avx512<R, 1>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        default: break;
    }
}

// Many tokens: dequantise 4 rows once into fp32 scratch in block-split order (even half, odd half of each block:
// the k order of rows_tile_avx512), then the register-tile kernel; bit-identical to the direct path.
__attribute__((target("avx512f"))) void rows_widened_avx512(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks,
                                                            const uint8_t *scales, const float *bias, int K, int r0, int r1,
                                                            float *y, int64_t ldy) {
    thread_local AlignedVector<float> scratch;
    const int nb = K / 32;
    if (scratch.size() < size_t(4) * K) scratch.resize(size_t(4) * K);
    float *sw = scratch.data();
    const __m512 lut = _mm512_loadu_ps(kE2M1);
    const __m512i m15 = _mm512_set1_epi32(15);
    int r = r0;
    for (; r + 4 <= r1; r += 4) {
        for (int i = 0; i < 4; ++i) {
            const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
            const uint8_t *sc = scales + int64_t(r + i) * nb;
            for (int b = 0; b < nb; ++b) {
                __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + b * 16)));
                __m512 scale = _mm512_set1_ps(kScales.v[sc[b]]);
                _mm512_storeu_ps(sw + int64_t(i) * K + b * 32, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_and_si512(v, m15), lut), scale));
                _mm512_storeu_ps(sw + int64_t(i) * K + b * 32 + 16, _mm512_mul_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), lut), scale));
            }
        }
        gemm_f32_rows_avx512<4>(sw, K, xs, n_tok, ldx, K, y + r, ldy);
        if (bias)
            for (int t = 0; t < n_tok; ++t)
                for (int i = 0; i < 4; ++i) y[t * ldy + r + i] += bias[r + i];
    }
    for (; r < r1; ++r)
        rowblock_avx512<1>(xs, n_tok, ldx, blocks + int64_t(r) * nb * 16, scales + int64_t(r) * nb, nb, y + r, ldy,
                           bias ? bias + r : nullptr);
}

__attribute__((target("avx512f"))) void rows_avx512(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks,
                                                    const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y,
                                                    int64_t ldy) {
    if (n_tok >= kWidenMinTokens) return rows_widened_avx512(xs, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
    const int nb = K / 32;
    int r = r0;
    for (; r + 2 <= r1; r += 2)
        rowblock_avx512<2>(xs, n_tok, ldx, blocks + int64_t(r) * nb * 16, scales + int64_t(r) * nb, nb, y + r, ldy,
                           bias ? bias + r : nullptr);
    for (; r < r1; ++r)
        rowblock_avx512<1>(xs, n_tok, ldx, blocks + int64_t(r) * nb * 16, scales + int64_t(r) * nb, nb, y + r, ldy,
                           bias ? bias + r : nullptr);
}

}  // namespace

float e8m0_scale(uint8_t e) { return kScales.v[e]; }

void mxfp4_split_activations(const float *x, int K, float *out) {
    for (int b = 0; b < K; b += 32)
        for (int j = 0; j < 16; ++j) {
            out[b + j] = x[b + 2 * j];
            out[b + 16 + j] = x[b + 2 * j + 1];
        }
}

void matmul_mxfp4_rows(Simd s, const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales,
                       const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (s == Simd::Avx512) rows_avx512(xs, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
    else if (s == Simd::Avx2) rows_avx2(xs, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
    else rows_scalar(xs, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
