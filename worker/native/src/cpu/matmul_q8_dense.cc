#include "cpu/matmul_q8_dense.h"

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/bf16.h"

namespace ms {

namespace {

inline int32_t load_i32(const void *p) {
    int32_t v;
    std::memcpy(&v, p, 4);
    return v;
}

void rows_scalar(const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias, int r0, int r1,
                 float *y, int64_t ldy) {
    const int K = W.K, nb = K / 32;
    for (int r = r0; r < r1; ++r)
        for (int t = 0; t < n_tok; ++t) {
            const int64_t p = panel0 + t / kQ8PanelTokens;
            const int j = t % kQ8PanelTokens;
            const int8_t *qs = x.qs + p * q8_panel_qs_bytes(K);
            const float *d = x.d + p * q8_panel_blocks(K);
            const int8_t *wr = W.q.data() + int64_t(r) * K;
            float acc = 0;
            for (int b = 0; b < nb; ++b) {
                int32_t isum = 0;
                for (int pos = 0; pos < 32; ++pos) isum += int32_t(wr[b * 32 + pos]) * qs[(int64_t(b) * 8 + pos / 4) * 32 + j * 4 + pos % 4];
                acc = std::fma(float(isum), d[b * kQ8PanelTokens + j] * W.d[int64_t(r) * nb + b], acc);
            }
            y[t * ldy + r] = acc + (bias ? bias[r] : 0.0f);
        }
}

template <int R>
__attribute__((target("avx2,fma"))) inline void panel_avx2(const int8_t *w, const float *wd, int K, const int8_t *qs,
                                                           const float *d, float out[][8]) {
    const int nb = K / 32;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 facc[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m256i acc[R];
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(b) * 8 + q) * 32));
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) {
                const __m256i wv = _mm256_set1_epi32(load_i32(w + int64_t(i) * K + b * 32 + q * 4));
                const __m256i m = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(wv), _mm256_sign_epi8(a, wv)), ones);
                acc[i] = q == 0 ? m : _mm256_add_epi32(acc[i], m);
            }
        }
        const __m256 dv = _mm256_loadu_ps(d + b * 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
            facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), _mm256_mul_ps(dv, _mm256_set1_ps(wd[int64_t(i) * nb + b])), facc[i]);
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out[i], facc[i]);
}

template <int R>
__attribute__((target("avx2,fma,avx512f,avx512vl,avx512vnni"))) inline void panel_vnni(const int8_t *w, const float *wd, int K,
                                                                                       const int8_t *qs, const float *d,
                                                                                       float out[][8]) {
    const int nb = K / 32;
    __m256 facc[R];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
        __m256i acc[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(b) * 8 + q) * 32));
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) {
                const __m256i wv = _mm256_set1_epi32(load_i32(w + int64_t(i) * K + b * 32 + q * 4));
                acc[i] = _mm256_dpbusd_epi32(acc[i], _mm256_abs_epi8(wv), _mm256_sign_epi8(a, wv));
            }
        }
        const __m256 dv = _mm256_loadu_ps(d + b * 8);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
            facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), _mm256_mul_ps(dv, _mm256_set1_ps(wd[int64_t(i) * nb + b])), facc[i]);
    }
    for (int i = 0; i < R; ++i) _mm256_storeu_ps(out[i], facc[i]);
}

template <bool VNNI, int R>
void row_group(const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias, int r, float *y,
               int64_t ldy) {
    const int K = W.K, nb = K / 32;
    alignas(32) float out[4][8];
    const int8_t *w = W.q.data() + int64_t(r) * K;
    const float *wd = W.d.data() + int64_t(r) * nb;
    for (int p = 0; p * kQ8PanelTokens < n_tok; ++p) {
        const int64_t pp = panel0 + p;
        const int8_t *qs = x.qs + pp * q8_panel_qs_bytes(K);
        const float *d = x.d + pp * q8_panel_blocks(K);
        if constexpr (VNNI) panel_vnni<R>(w, wd, K, qs, d, out);
        else panel_avx2<R>(w, wd, K, qs, d, out);
        const int lanes = std::min(kQ8PanelTokens, n_tok - p * kQ8PanelTokens);
        for (int j = 0; j < lanes; ++j)
            for (int i = 0; i < R; ++i) y[int64_t(p * kQ8PanelTokens + j) * ldy + r + i] = out[i][j] + (bias ? bias[r + i] : 0.0f);
    }
}

template <bool VNNI>
void rows_simd(const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias, int r0, int r1,
               float *y, int64_t ldy) {
    for (int r = r0; r < r1; r += 4) {
        switch (std::min(4, r1 - r)) {
            case 4: row_group<VNNI, 4>(x, panel0, n_tok, W, bias, r, y, ldy); break;
            case 3: row_group<VNNI, 3>(x, panel0, n_tok, W, bias, r, y, ldy); break;
            case 2: row_group<VNNI, 2>(x, panel0, n_tok, W, bias, r, y, ldy); break;
            default: row_group<VNNI, 1>(x, panel0, n_tok, W, bias, r, y, ldy); break;
        }
    }
}

}  // namespace

void q8_quantize_dense_bf16(const uint16_t *w, int rows, int K, Q8DenseWeights &out) {
    const int nb = K / 32;
    out.rows = rows;
    out.K = K;
    out.q.assign(size_t(rows) * K, 0);
    out.d.assign(size_t(rows) * nb, 0.0f);
    for (int64_t r = 0; r < rows; ++r)
        for (int b = 0; b < nb; ++b) {
            float x[32], amax = 0;
            for (int k = 0; k < 32; ++k) {
                x[k] = bf16_to_f32(w[r * K + b * 32 + k]);
                amax = std::max(amax, std::fabs(x[k]));
            }
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            for (int k = 0; k < 32; ++k) out.q[size_t(r) * K + b * 32 + q8_block_position(k)] = int8_t(std::nearbyint(x[k] * id));
            out.d[size_t(r) * nb + b] = amax / 127.0f;
        }
}

void matmul_q8_dense_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias,
                          int r0, int r1, float *y, int64_t ldy) {
    if (n_tok <= 0 || r1 <= r0) return;
    if (s == Simd::Scalar) return rows_scalar(x, panel0, n_tok, W, bias, r0, r1, y, ldy);
    if (s == Simd::Avx512 && q8_vnni_available()) return rows_simd<true>(x, panel0, n_tok, W, bias, r0, r1, y, ldy);
    rows_simd<false>(x, panel0, n_tok, W, bias, r0, r1, y, ldy);
}

}  // namespace ms
