#include "cpu/matmul_mxfp4.h"

#include "cpu/x86_intrinsics.h"

#include <cmath>
#include <vector>

#include "cpu/avx2_reduce.h"
#include "cpu/aligned_vector.h"

#include "cpu/gemm_f32_avx512.h"
#include "cpu/prefetch.h"

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

// 2^(e - 128): the E8M0 factor with a halving folded in, for the AVX2 decode's table of 2 * E2M1 as int8
// {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, ..., -12} (bit 3 of the nibble is the sign). w2 * 2^(e - 128) == kE2M1 * 2^(e - 127) exactly
// (a power of two times an integer of at most 4 significant bits, subnormal only for e = 0, still exact).
struct HalfScaleTable {
    float v[256];
    HalfScaleTable() {
        for (int e = 0; e < 256; ++e) v[e] = std::ldexp(1.0f, e - 128);
    }
};
const HalfScaleTable kHalfScales;

// The AVX2 kernels work on activations in "quad-split" order, a permutation of block-split order inside each
// 32-block: position 8b + j holds block-split element 4j + b (b < 4, j < 8). quad_split makes it.
inline void quad_split(const float *xs, int K, float *xq) {
    for (int k = 0; k < K; k += 32)
        for (int b = 0; b < 4; ++b)
            for (int j = 0; j < 8; ++j) xq[k + 8 * b + j] = xs[k + 4 * j + b];
}

// One block of one row decoded to fp32 in quad-split order (w[b] lane j = block-split element 4j + b): one 128-bit
// broadcast, the nibble halves in the two lanes (block-split order), one byte-table lookup to 2 * E2M1 as int8 for
// all 32 values, then each int8 of a dword sign-extended in place by two shifts (no cross-lane shuffles), int32 ->
// fp32 and the scale. The values equal kE2M1[nibble] * 2^(e - 127) exactly (the same weights as the scalar reference).
__attribute__((target("avx2,fma"))) inline void decode_block_avx2(const uint8_t *blk, uint8_t e, __m256 w[4]) {
    const __m256i lut = _mm256_setr_epi8(0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12, 0, 1, 2, 3, 4, 6, 8, 12,
                                         0, -1, -2, -3, -4, -6, -8, -12);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk)));
    const __m256i nib = _mm256_and_si256(_mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xf0), m4);
    const __m256i q = _mm256_shuffle_epi8(lut, nib);
    const __m256 s = _mm256_set1_ps(kHalfScales.v[e]);
    w[0] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(q, 24), 24)), s);
    w[1] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(q, 16), 24)), s);
    w[2] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(_mm256_slli_epi32(q, 8), 24)), s);
    w[3] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srai_epi32(q, 24)), s);
}

// The end of an R x NT tile, the same in both tile kernels: per (row, token) the horizontal sum of the 8 lanes plus
// the bias.
template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void store_tile_avx2(const __m256 (&acc)[R][NT], float *out, int64_t ldy,
                                                                const float *bias) {
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) {
            out[t * ldy + i] = hsum_avx2(acc[i][t]) + (bias ? bias[i] : 0.0f);
        }
}

// R rows x NT tokens. Every (row, token) pair has one 8-lane accumulator fed in the same order (4 FMAs per block,
// block by block) whatever R and NT are, so a token's result does not depend on the tile it lands in. Several independent
// accumulators hide the FMA latency (one chain is 4 dependent FMAs per block); each decoded block feeds NT tokens.
template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void tile_avx2(const float *xs, int64_t ldx, const uint8_t *blk,
                                                          const uint8_t *sc, int nb, float *out, int64_t ldy,
                                                          const float *bias) {
    __m256 acc[R][NT];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 4
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
            __m256 w[4];
            decode_block_avx2(blk + (int64_t(i) * nb + b) * 16, sc[int64_t(i) * nb + b], w);
#pragma GCC unroll 4
            for (int t = 0; t < NT; ++t) {
                const float *x = xs + t * ldx + b * 32;
                __m256 a = acc[i][t];
                a = _mm256_fmadd_ps(w[0], _mm256_loadu_ps(x), a);
                a = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(x + 8), a);
                a = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(x + 16), a);
                a = _mm256_fmadd_ps(w[3], _mm256_loadu_ps(x + 24), a);
                acc[i][t] = a;
            }
        }
    }
    store_tile_avx2<R, NT>(acc, out, ldy, bias);
}

// The same tile on rows already decoded to fp32 (sw: R rows of nb * 32 values lds apart, block-split order): the same
// weights and the same FMA sequence per (row, token), so the same results as tile_avx2.
template <int R, int NT>
__attribute__((target("avx2,fma"))) inline void tile_decoded_avx2(const float *xs, int64_t ldx, const float *sw, int64_t lds,
                                                                  int nb, float *out, int64_t ldy, const float *bias) {
    const int64_t K = int64_t(nb) * 32;
    __m256 acc[R][NT];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i)
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) acc[i][t] = _mm256_setzero_ps();
    // Each activation vector is loaded once for the R rows; per accumulator the order is that of tile_avx2.
    for (int64_t k = 0; k < K; k += 8) {
        __m256 w[R];
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) w[i] = _mm256_load_ps(sw + i * lds + k);
#pragma GCC unroll 8
        for (int t = 0; t < NT; ++t) {
            const __m256 x = _mm256_loadu_ps(xs + t * ldx + k);
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) acc[i][t] = _mm256_fmadd_ps(w[i], x, acc[i][t]);
        }
    }
    store_tile_avx2<R, NT>(acc, out, ldy, bias);
}

// R rows against all tokens. Up to 4 tokens the blocks are decoded inside the tile; with more, each row is decoded
// once into an L1-sized scratch that every token tile then reads (a decode costs about as much as 4 tokens' FMAs of
// the block).
template <int R>
__attribute__((target("avx2,fma"))) inline void rowgroup_avx2(const float *xs, int n_tok, int64_t ldx, const uint8_t *blk,
                                                              const uint8_t *sc, int nb, float *y, int64_t ldy,
                                                              const float *bias) {
    if (n_tok > 4) {
        thread_local AlignedVector<float> scratch;
        // Rows one cache line further apart than K: activation rows a power of two apart (K = 1024: 4 KiB) already
        // share L1 sets, the scratch rows must not add to them.
        const int64_t lds = int64_t(nb) * 32 + 16;
        if (scratch.size() < size_t(R * lds)) scratch.resize(size_t(R * lds));
        float *sw = scratch.data();
        for (int i = 0; i < R; ++i)
            for (int b = 0; b < nb; ++b) {
                __m256 w[4];
                decode_block_avx2(blk + (int64_t(i) * nb + b) * 16, sc[int64_t(i) * nb + b], w);
                float *o = sw + i * lds + b * 32;
                _mm256_store_ps(o, w[0]);
                _mm256_store_ps(o + 8, w[1]);
                _mm256_store_ps(o + 16, w[2]);
                _mm256_store_ps(o + 24, w[3]);
            }
        // Token tiles of at most 4, as even as possible (8 tokens: 4 + 4, not 4 + 3 + 1): with 3 rows, 12
        // accumulator chains hide the FMA latency and the 3 weight vectors, 12 accumulators and the activation
        // vector fill the 16 registers.
        const int tiles = (n_tok + 3) / 4;
        for (int i = 0, t = 0; i < tiles; ++i) {
            const int nt = (n_tok - t) / (tiles - i);
            const float *xt = xs + t * ldx;
            float *yt = y + t * ldy;
            switch (nt) {
                case 4: tile_decoded_avx2<R, 4>(xt, ldx, sw, lds, nb, yt, ldy, bias); break;
                case 3: tile_decoded_avx2<R, 3>(xt, ldx, sw, lds, nb, yt, ldy, bias); break;
                default: tile_decoded_avx2<R, 2>(xt, ldx, sw, lds, nb, yt, ldy, bias); break;  // 5 tokens: 2 + 3
            }
            t += nt;
        }
        return;
    }
    int t = 0;
    for (; t + 4 <= n_tok; t += 4) tile_avx2<R, 4>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias);
    switch (n_tok - t) {
        case 3: tile_avx2<R, 3>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 2: tile_avx2<R, 2>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        case 1: tile_avx2<R, 1>(xs + t * ldx, ldx, blk, sc, nb, y + t * ldy, ldy, bias); break;
        default: break;
    }
}

template <int R>
__attribute__((target("avx2,fma"))) void rows_by_avx2(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks,
                                                      const uint8_t *scales, const float *bias, int nb, int r0, int r1,
                                                      float *y, int64_t ldy) {
    int r = r0;
    for (; r + R <= r1; r += R)
        rowgroup_avx2<R>(xs, n_tok, ldx, blocks + int64_t(r) * nb * 16, scales + int64_t(r) * nb, nb, y + r, ldy,
                         bias ? bias + r : nullptr);
    for (; r < r1; ++r)
        rowgroup_avx2<1>(xs, n_tok, ldx, blocks + int64_t(r) * nb * 16, scales + int64_t(r) * nb, nb, y + r, ldy,
                         bias ? bias + r : nullptr);
}

__attribute__((target("avx2,fma"))) void rows_avx2(const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks,
                                                   const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y,
                                                   int64_t ldy) {
    const int nb = K / 32;
    // The activations in the decode's order (K values per token: noise next to the rows x K weights).
    thread_local AlignedVector<float> xq_buf;
    if (xq_buf.size() < size_t(n_tok) * K) xq_buf.resize(size_t(n_tok) * K);
    float *xq = xq_buf.data();
    for (int t = 0; t < n_tok; ++t) quad_split(xs + t * ldx, K, xq + int64_t(t) * K);
    xs = xq;
    ldx = K;
    // Rows per tile: for one token 4 chains suffice (decoding 4 blocks takes longer than a chain's latency; 8 rows
    // measured no faster), from 2 tokens on rows x tokens >= 8 chains.
    switch (n_tok) {
        case 1:
        case 2: return rows_by_avx2<4>(xs, n_tok, ldx, blocks, scales, bias, nb, r0, r1, y, ldy);
        case 3: return rows_by_avx2<3>(xs, n_tok, ldx, blocks, scales, bias, nb, r0, r1, y, ldy);
        case 4: return rows_by_avx2<2>(xs, n_tok, ldx, blocks, scales, bias, nb, r0, r1, y, ldy);
        default: return rows_by_avx2<3>(xs, n_tok, ldx, blocks, scales, bias, nb, r0, r1, y, ldy);  // decoded once
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
        // The next 4 rows stream in from DRAM while these compute.
        if (r + 8 <= r1) {
            prefetch_bytes(blocks + int64_t(r + 4) * nb * 16, int64_t(4) * nb * 16);
            prefetch_bytes(scales + int64_t(r + 4) * nb, int64_t(4) * nb);
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
