// The register tile shared by the int8-activation kernels (cpu/matmul_mxfp4_q8.h: MXFP4 weights unpacked to bytes;
// cpu/matmul_q8_dense.h: int8 copies of bf16 weights): R output rows x one panel of 8 tokens, over the block-pair
// layout that matmul_mxfp4_q8.h describes.
//
// Why block pairs: a 512-bit vpdpbusd holds 16 int32 lanes. With 8 tokens x 2 blocks in the lanes (lane 2j + h =
// token j, block 2bp + h), a weight operand is one 8-byte broadcast (the row's quad of both blocks, a pure load),
// every lane ends a block pair with its complete integer block sum, and one convert + one scale product + one FMA per
// row covers two blocks: 8 vpdpbusd (64 multiply-adds each) per 3 other vector instructions. The even and odd
// blocks of a row therefore accumulate in two fp32 chains (the even and odd lanes of a token), added at the end.
//
// Weight tile (wq): for block pair bp, tile row i (0 <= i < RS, the tile's row stride), quad q: 8 bytes at
// w_offset(bp, i, q, RS) = [quad q of block 2bp, quad q of block 2bp + 1], unsigned (the true weight + kOffset).
// Two block pairs of a row share 128 bytes: quads 0-3 of both, then quads 4-7 of both, which is the order in which
// a 512-bit table lookup of the low, then the high nibbles of 4 MXFP4 blocks produces them.
// Scale tile (ws): 2 floats at (bp * RS + i) * 2, the weight factor of blocks 2bp and 2bp + 1 (0 for a pad block).
// Activations: the panels of matmul_mxfp4_q8.h; each block's accumulator starts at -kOffset * (the block's activation
// sum, stored with the panel), so it ends at the true integer product. The kernels compute rows i0 .. i0 + R - 1 of
// a tile; out[i][j] = the sum over blocks for token j and row i0 + i exactly as reference_dot computes it.
#pragma once

// GCC 12 flags its own AVX-512 intrinsic headers (_mm512_undefined_*) as uninitialised: a false positive.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/prefetch.h"

namespace ms::q8pair {

inline int64_t w_offset(int bp, int i, int q, int RS) {
    return int64_t(bp >> 1) * RS * 128 + i * 128 + (q >> 2) * 64 + (bp & 1) * 32 + (q & 3) * 8;
}
// Bytes of a weight tile of RS rows for np block pairs.
inline int64_t w_tile_bytes(int np, int RS) { return int64_t(np + 1) / 2 * RS * 128; }

// Memory a later tile will read (up to two ranges), fetched into the cache while this tile computes (cpu/prefetch.h:
// the weights stream from DRAM once per step). The lines are spread evenly over the tile's block pairs.
struct Prefetch {
    const char *p[2] = {nullptr, nullptr};
    int64_t lines[2] = {0, 0}, per_bp[2] = {0, 0};
    Prefetch() = default;
    Prefetch(const void *a, int64_t a_bytes, const void *b, int64_t b_bytes, int np) {
        p[0] = static_cast<const char *>(a);
        p[1] = static_cast<const char *>(b);
        lines[0] = a ? (a_bytes + 63) / 64 : 0;
        lines[1] = b ? (b_bytes + 63) / 64 : 0;
        for (int s = 0; s < 2; ++s) per_bp[s] = (lines[s] + np - 1) / np;
    }
    void at(int bp) const {
        for (int s = 0; s < 2; ++s)
            for (int64_t l = bp * per_bp[s], e = std::min(l + per_bp[s], lines[s]); l < e; ++l) prefetch_line(p[s] + l * 64);
    }
};

// The scalar reference of one (row, token): w(b, pos) is the unsigned weight byte at block b, block-split position
// pos; wscale(b) the weight factor of block b.
template <int kOffset, class W, class S>
inline float reference_dot(const Q8Panels &x, int64_t panel, int j, int nb, const W &w, const S &wscale) {
    const int8_t *qs = x.qs + panel * q8_panel_qs_bytes(x.K);
    const float *d = x.d + panel * q8_panel_blocks(x.K);
    float acc[2] = {0.0f, 0.0f};
    for (int b = 0; b < nb; ++b) {
        int32_t isum = 0;
        for (int pos = 0; pos < 32; ++pos) isum += (int32_t(w(b, pos)) - kOffset) * qs[q8_panel_q_offset(j, b, pos)];
        acc[b & 1] = std::fma(float(isum), d[q8_panel_block_offset(j, b)] * wscale(b), acc[b & 1]);
    }
    return acc[0] + acc[1];
}

#define MS_Q8_AVX512 __attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni")))

// AVX-512 VNNI: R rows of a tile of row stride RS, one panel; out[i][0..7].
template <int R, int RS, int kOffset>
MS_Q8_AVX512 inline void tile_avx512(const uint8_t *wq, const float *ws, int np, const int8_t *qs, const float *d,
                                     const int32_t *sum, float out[][8], const Prefetch &pf) {
    __m512 facc[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) facc[i] = _mm512_setzero_ps();
    for (int bp = 0; bp < np; ++bp) {
        pf.at(bp);
        const __m512i s = _mm512_loadu_si512(sum + bp * 16);
        const __m512i neg = _mm512_mullo_epi32(s, _mm512_set1_epi32(-kOffset));
        __m512i acc[R];
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) acc[i] = neg;
        const uint8_t *w = wq + w_offset(bp, 0, 0, RS);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const __m512i a = _mm512_loadu_si512(qs + (int64_t(bp) * 8 + q) * 64);
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) {
                int64_t wv;
                std::memcpy(&wv, w + i * 128 + (q >> 2) * 64 + (q & 3) * 8, 8);
                acc[i] = _mm512_dpbusd_epi32(acc[i], _mm512_set1_epi64(wv), a);
            }
        }
        const __m512 dv = _mm512_loadu_ps(d + bp * 16);
        const float *sc = ws + int64_t(bp) * RS * 2;
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
            double sp;
            std::memcpy(&sp, sc + i * 2, 8);
            const __m512 f = _mm512_mul_ps(dv, _mm512_castpd_ps(_mm512_set1_pd(sp)));
            facc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[i]), f, facc[i]);
        }
    }
    // Even + odd lanes of each token: the two block chains.
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
        const __m512 e = _mm512_permutexvar_ps(even, facc[i]), o = _mm512_permutexvar_ps(odd, facc[i]);
        _mm256_storeu_ps(out[i], _mm256_add_ps(_mm512_castps512_ps256(e), _mm512_castps512_ps256(o)));
    }
}

// The same for a panel with at most 4 tokens (lanes 4-7 empty): 256-bit vpdpbusd on the lower half of each 64-byte
// group, half the instructions for the same results (an expert's last panel is often this short).
template <int R, int RS, int kOffset>
MS_Q8_AVX512 inline void tile_avx512_half(const uint8_t *wq, const float *ws, int np, const int8_t *qs, const float *d,
                                          const int32_t *sum, float out[][8], const Prefetch &pf) {
    __m256 facc[R];
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
    for (int bp = 0; bp < np; ++bp) {
        pf.at(bp);
        const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sum + bp * 16));
        const __m256i neg = _mm256_mullo_epi32(s, _mm256_set1_epi32(-kOffset));
        __m256i acc[R];
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) acc[i] = neg;
        const uint8_t *w = wq + w_offset(bp, 0, 0, RS);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) {
            const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(bp) * 8 + q) * 64));
#pragma GCC unroll 8
            for (int i = 0; i < R; ++i) {
                int64_t wv;
                std::memcpy(&wv, w + i * 128 + (q >> 2) * 64 + (q & 3) * 8, 8);
                acc[i] = _mm256_dpbusd_epi32(acc[i], _mm256_set1_epi64x(wv), a);
            }
        }
        const __m256 dv = _mm256_loadu_ps(d + bp * 16);
        const float *sc = ws + int64_t(bp) * RS * 2;
#pragma GCC unroll 8
        for (int i = 0; i < R; ++i) {
            double sp;
            std::memcpy(&sp, sc + i * 2, 8);
            const __m256 f = _mm256_mul_ps(dv, _mm256_castpd_ps(_mm256_set1_pd(sp)));
            facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), f, facc[i]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < R; ++i) {
        const __m256 e = _mm256_permutevar8x32_ps(facc[i], _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0));
        const __m256 o = _mm256_permutevar8x32_ps(facc[i], _mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0));
        _mm_storeu_ps(out[i], _mm_add_ps(_mm256_castps256_ps128(e), _mm256_castps256_ps128(o)));
    }
}

// AVX-VNNI's VEX-encoded vpdpbusd, written out so that the function needs no "avxvnni" target (which would let the
// compiler use it anywhere in the function); the caller runs it only where the CPU has AVX-VNNI.
__attribute__((target("avx2"), always_inline)) inline __m256i dpbusd_vex(__m256i acc, __m256i w, __m256i a) {
    asm("%{vex%} vpdpbusd %2, %1, %0" : "+x"(acc) : "x"(w), "x"(a));
    return acc;
}

// AVX2 (and AVX-VNNI): the same on two 256-bit halves (tokens 0-3, tokens 4-7). Without VNNI, vpmaddubsw + vpmaddwd:
// for MXFP4 bytes (0..24) a pair is at most 2 * 24 * 127 = 6096, so the four quads of half a block add up in int16;
// for the dense weights (bytes up to 255) the offset comes off first (vpxor 0x80) and the sign moves onto the
// activation (vpsignb), |w| * |a| pairs staying below 2^15, widened at once.
template <int R, int RS, int kOffset, bool kVnni>
__attribute__((target("avx2,fma"))) inline void tile_avx2(const uint8_t *wq, const float *ws, int np, const int8_t *qs,
                                                         const float *d, const int32_t *sum, float out[][8],
                                                         const Prefetch &pf) {
    const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(char(0x80));
    // Tokens 0-3 (h = 0), then 4-7: 16 ymm registers hold 4 rows' accumulators for one half.
    for (int h = 0; h < 2; ++h) {
        __m256 facc[R];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) facc[i] = _mm256_setzero_ps();
        for (int bp = 0; bp < np; ++bp) {
            if (h == 0) pf.at(bp);
            const uint8_t *w = wq + w_offset(bp, 0, 0, RS);
            const float *sc = ws + int64_t(bp) * RS * 2;
            __m256i acc[R], t[R];
            if (kVnni || kOffset != 128) {
                const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sum + bp * 16 + h * 8));
                const __m256i neg = _mm256_mullo_epi32(s, _mm256_set1_epi32(-kOffset));
#pragma GCC unroll 4
                for (int i = 0; i < R; ++i) acc[i] = neg;
            } else {
#pragma GCC unroll 4
                for (int i = 0; i < R; ++i) acc[i] = _mm256_setzero_si256();
            }
#pragma GCC unroll 8
            for (int q = 0; q < 8; ++q) {
                const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + (int64_t(bp) * 8 + q) * 64 + h * 32));
#pragma GCC unroll 4
                for (int i = 0; i < R; ++i) {
                    int64_t wv;
                    std::memcpy(&wv, w + i * 128 + (q >> 2) * 64 + (q & 3) * 8, 8);
                    const __m256i wb = _mm256_set1_epi64x(wv);
                    if constexpr (kVnni) {
                        acc[i] = dpbusd_vex(acc[i], wb, a);
                    } else if constexpr (kOffset == 128) {
                        const __m256i sw = _mm256_xor_si256(wb, flip);
                        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_abs_epi8(sw), _mm256_sign_epi8(a, sw)), ones);
                        acc[i] = _mm256_add_epi32(acc[i], p);
                    } else {
                        const __m256i p = _mm256_maddubs_epi16(wb, a);
                        t[i] = (q & 3) == 0 ? p : _mm256_add_epi16(t[i], p);
                        if ((q & 3) == 3) acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(t[i], ones));
                    }
                }
            }
            const __m256 dv = _mm256_loadu_ps(d + bp * 16 + h * 8);
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) {
                double sp;
                std::memcpy(&sp, sc + i * 2, 8);
                const __m256 f = _mm256_mul_ps(dv, _mm256_castpd_ps(_mm256_set1_pd(sp)));
                facc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i]), f, facc[i]);
            }
        }
        // [t0e t0o t1e t1o | t2e t2o t3e t3o] -> t0..t3: even + odd lanes.
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i) {
            const __m256 e = _mm256_permutevar8x32_ps(facc[i], _mm256_setr_epi32(0, 2, 4, 6, 0, 0, 0, 0));
            const __m256 o = _mm256_permutevar8x32_ps(facc[i], _mm256_setr_epi32(1, 3, 5, 7, 0, 0, 0, 0));
            _mm_storeu_ps(out[i] + 4 * h, _mm_add_ps(_mm256_castps256_ps128(e), _mm256_castps256_ps128(o)));
        }
    }
}

enum class Kind { Avx2, AvxVnni, Avx512Vnni };
// The kernel for SIMD level s (not Scalar) on this CPU (matmul_mxfp4_q8.cc).
Kind kind_for(Simd s);

// Rows 0 .. m - 1 (m <= 8) of a tile of row stride 8, one panel whose tokens are lanes 0 .. lanes - 1, with kernel k:
// out[i][j] for row i, token lane j (j < lanes).
template <int kOffset>
inline void tile_rows(Kind k, const uint8_t *wq, const float *ws, int m, int np, int lanes, const int8_t *qs, const float *d,
                      const int32_t *sum, float out[][8], const Prefetch &pf) {
    int i = 0;
    const Prefetch none;
    if (k == Kind::Avx512Vnni && lanes <= 4) {
        if (m == 8) return tile_avx512_half<8, 8, kOffset>(wq, ws, np, qs, d, sum, out, pf);
        for (; i + 4 <= m; i += 4) tile_avx512_half<4, 8, kOffset>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        for (; i < m; ++i) tile_avx512_half<1, 8, kOffset>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        return;
    }
    if (k == Kind::Avx512Vnni) {
        if (m == 8) return tile_avx512<8, 8, kOffset>(wq, ws, np, qs, d, sum, out, pf);
        for (; i + 4 <= m; i += 4) tile_avx512<4, 8, kOffset>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        for (; i + 2 <= m; i += 2) tile_avx512<2, 8, kOffset>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        for (; i < m; ++i) tile_avx512<1, 8, kOffset>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        return;
    }
    auto run = [&](auto vnni) {
        constexpr bool V = decltype(vnni)::value;
        for (; i + 4 <= m; i += 4) tile_avx2<4, 8, kOffset, V>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        for (; i + 2 <= m; i += 2) tile_avx2<2, 8, kOffset, V>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
        for (; i < m; ++i) tile_avx2<1, 8, kOffset, V>(wq + i * 128, ws + i * 2, np, qs, d, sum, out + i, i ? none : pf);
    };
    if (k == Kind::AvxVnni) run(std::true_type{});
    else run(std::false_type{});
}

}  // namespace ms::q8pair
