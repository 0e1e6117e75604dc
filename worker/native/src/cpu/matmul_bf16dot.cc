#include "cpu/matmul_bf16dot.h"

#include "cpu/x86_intrinsics.h"
#include "cpu/avx512_reduce.h"

#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/aligned_vector.h"

#include "cpu/bf16.h"
#include "cpu/matmul_mxfp4.h"

namespace ms {

bool bf16_dot_supported() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

bool bf16_dot_enabled() {
    const char *env = std::getenv("MS_SIMD");
    return env && std::strcmp(env, "avx512bf16") == 0 && bf16_dot_supported() && simd_supported(Simd::Avx512);
}

namespace {

// ---- scalar references -------------------------------------------------------------------------------------------

void dense_scalar(const uint16_t *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K, int r0, int r1,
                  float *y, int64_t ldy) {
    for (int r = r0; r < r1; ++r) {
        const uint16_t *wr = w + int64_t(r) * K;
        for (int t = 0; t < n_tok; ++t) {
            const uint16_t *xt = x + t * ldx;
            float s = 0;
            for (int k = 0; k < K; ++k) s += bf16_to_f32(xt[k]) * bf16_to_f32(wr[k]);
            y[t * ldy + r] = s + (bias ? bias[r] : 0.0f);
        }
    }
}

void mxfp4_scalar(const uint16_t *x, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales, const float *bias,
                  int K, int r0, int r1, float *y, int64_t ldy) {
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r)
        for (int t = 0; t < n_tok; ++t) {
            const uint16_t *xt = x + t * ldx;
            float s = 0;
            for (int b = 0; b < nb; ++b) {
                const uint8_t *blk = blocks + (int64_t(r) * nb + b) * 16;
                const float sc = e8m0_scale(scales[int64_t(r) * nb + b]);
                for (int j = 0; j < 16; ++j) {
                    s += kE2M1[blk[j] & 15] * sc * bf16_to_f32(xt[b * 32 + 2 * j]);
                    s += kE2M1[blk[j] >> 4] * sc * bf16_to_f32(xt[b * 32 + 2 * j + 1]);
                }
            }
            y[t * ldy + r] = s + (bias ? bias[r] : 0.0f);
        }
}

// ---- AVX512-BF16 ---------------------------------------------------------------------------------------------------

#define MS_BF16DOT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")))


MS_BF16DOT inline __m512bh load_bh(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512(p); }
MS_BF16DOT inline __m512bh load_bh(const uint16_t *p, __mmask32 m) { return (__m512bh)_mm512_maskz_loadu_epi16(m, p); }

// R rows (w, row stride ldw) x NT tokens: each weight load feeds NT vdpbf16ps, each activation load R.
// y points at column r of token 0; bias at bias[r] (or null).
template <int R, int NT>
MS_BF16DOT inline void tile(const uint16_t *w, int64_t ldw, const uint16_t *x, int64_t ldx, int K, const float *bias,
                            float *y, int64_t ldy) {
    __m512 acc[R][NT];
#pragma GCC unroll 4
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
        __m512bh wv[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) wv[i] = load_bh(w + i * ldw + k);
#pragma GCC unroll 6
        for (int t = 0; t < NT; ++t) {
            const __m512bh xv = load_bh(x + t * ldx + k);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv);
        }
    }
    if (k < K) {  // zero-filled tail: adds exact zeros
        const __mmask32 m = __mmask32((1ull << (K - k)) - 1);
        __m512bh wv[R];
        for (int i = 0; i < R; ++i) wv[i] = load_bh(w + i * ldw + k, m);
        for (int t = 0; t < NT; ++t) {
            const __m512bh xv = load_bh(x + t * ldx + k, m);
            for (int i = 0; i < R; ++i) acc[i][t] = _mm512_dpbf16_ps(acc[i][t], wv[i], xv);
        }
    }
    const __m512 z = _mm512_setzero_ps();
    const __mmask8 rows = __mmask8((1u << R) - 1);
    const __m128 b4 = bias ? _mm_maskz_loadu_ps(rows, bias) : _mm_setzero_ps();
#pragma GCC unroll 6
    for (int t = 0; t < NT; ++t) {
        const __m128 s = hsum4_avx512(acc[0][t], R > 1 ? acc[R > 1 ? 1 : 0][t] : z, R > 2 ? acc[R > 2 ? 2 : 0][t] : z,
                               R > 3 ? acc[R > 3 ? 3 : 0][t] : z);
        _mm_mask_storeu_ps(y + t * ldy, rows, _mm_add_ps(s, b4));
    }
}

// R rows for all n_tok tokens, 6 tokens per tile (24 accumulators + 4 weights + 1 activation = 29 registers).
template <int R>
MS_BF16DOT void row_block(const uint16_t *w, int64_t ldw, const uint16_t *x, int n_tok, int64_t ldx, int K,
                          const float *bias, float *y, int64_t ldy) {
    int t = 0;
    for (; t + 6 <= n_tok; t += 6) tile<R, 6>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy);
    switch (n_tok - t) {
        case 5: tile<R, 5>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy); break;
        case 4: tile<R, 4>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy); break;
        case 3: tile<R, 3>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy); break;
        case 2: tile<R, 2>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy); break;
        case 1: tile<R, 1>(w, ldw, x + t * ldx, ldx, K, bias, y + t * ldy, ldy); break;
        default: break;
    }
}

MS_BF16DOT void rows_of(int n_rows, const uint16_t *w, int64_t ldw, const uint16_t *x, int n_tok, int64_t ldx, int K,
                        const float *bias, float *y, int64_t ldy) {
    switch (n_rows) {
        case 4: row_block<4>(w, ldw, x, n_tok, ldx, K, bias, y, ldy); break;
        case 3: row_block<3>(w, ldw, x, n_tok, ldx, K, bias, y, ldy); break;
        case 2: row_block<2>(w, ldw, x, n_tok, ldx, K, bias, y, ldy); break;
        case 1: row_block<1>(w, ldw, x, n_tok, ldx, K, bias, y, ldy); break;
        default: break;
    }
}

// The weights of a row block are read from memory once and reused from L1 by every token tile.
MS_BF16DOT void dense_avx512bf16(const uint16_t *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K,
                                 int r0, int r1, float *y, int64_t ldy) {
    for (int r = r0; r < r1; r += 4)
        rows_of(r1 - r < 4 ? r1 - r : 4, w + int64_t(r) * K, K, x, n_tok, ldx, K, bias ? bias + r : nullptr, y + r, ldy);
}

// One MXFP4 block (16 bytes, one scale) to 32 bf16 in natural element order: word 2j = low nibble of byte j, word
// 2j+1 = its high nibble. The block's 16 possible values (E2M1 times the scale, exact in bf16) form a vpermw table.
MS_BF16DOT inline __m512i decode_block(const uint8_t *blk, float scale, __m512 e2m1) {
    const __m512 vals = _mm512_mul_ps(e2m1, _mm512_set1_ps(scale));
    // Both halves of the 32-entry table hold the 16 values, so index bit 4 is a don't-care.
    const __m512i table = (__m512i)_mm512_cvtne2ps_pbh(vals, vals);
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk)));
    // dword j = byte j | byte j << 12: its low word indexes with the low nibble, its high word with the high nibble.
    const __m512i idx = _mm512_or_si512(v, _mm512_slli_epi32(v, 12));
    return _mm512_permutexvar_epi16(idx, table);
}

// Decodes up to 4 rows of an expert into bf16 once (L1-resident scratch), then runs the dense tiles over all the
// expert's tokens: the decode cost is shared by every token routed to that expert in this step.
MS_BF16DOT void mxfp4_avx512bf16(const uint16_t *x, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales,
                                 const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local AlignedVector<uint16_t> scratch;
    if (scratch.size() < size_t(4) * K) scratch.resize(size_t(4) * K);
    uint16_t *sw = scratch.data();
    const int nb = K / 32;
    const __m512 e2m1 = _mm512_loadu_ps(kE2M1);
    for (int r = r0; r < r1; r += 4) {
        const int n = r1 - r < 4 ? r1 - r : 4;
        for (int i = 0; i < n; ++i) {
            const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
            const uint8_t *sc = scales + int64_t(r + i) * nb;
            for (int b = 0; b < nb; ++b)
                _mm512_storeu_si512(sw + int64_t(i) * K + b * 32, decode_block(blk + b * 16, e8m0_scale(sc[b]), e2m1));
        }
        rows_of(n, sw, K, x, n_tok, ldx, K, bias ? bias + r : nullptr, y + r, ldy);
    }
}

bool use_fast(Simd s) {
    static const bool ok = bf16_dot_supported();
    return s == Simd::Avx512 && ok;
}

}  // namespace

void matmul_bf16_bf16x_rows(Simd s, const uint16_t *x, int n_tok, int64_t ldx, const uint16_t *w, const float *bias,
                            int K, int r0, int r1, float *y, int64_t ldy) {
    if (use_fast(s)) dense_avx512bf16(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
    else dense_scalar(x, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
}

void matmul_mxfp4_bf16x_rows(Simd s, const uint16_t *x, int n_tok, int64_t ldx, const uint8_t *blocks,
                             const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (use_fast(s)) mxfp4_avx512bf16(x, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
    else mxfp4_scalar(x, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
