#include "cpu/matmul_mxfp4_q8.h"

#include "cpu/x86_intrinsics.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "cpu/aligned_vector.h"
#include "cpu/avx2_reduce.h"
#include "cpu/q8_pair_kernel.h"

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


// ---- activation quantization --------------------------------------------------------------------------------------

// Block b of one token into lane j of a panel (qs/d/sum point at the panel).
void quantize_block_scalar(const float *x, int8_t *qs, int j, int b, float *d, int32_t *sum) {
    float amax = 0;
    for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(x[k]));
    const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int k = 0; k < 32; ++k) {
        const int v = int(std::nearbyint(x[k] * id));
        qs[q8_panel_q_offset(j, b, q8_block_position(k))] = int8_t(v);
        s += v;
    }
    d[q8_panel_block_offset(j, b)] = amax / 127.0f;
    sum[q8_panel_block_offset(j, b)] = s;
}

__attribute__((target("avx2,fma"))) void quantize_block_avx2(const float *x, int8_t *qs, int j, int b, float *d, int32_t *sum) {
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
    for (int g = 0; g < 8; ++g) std::memcpy(qs + q8_panel_q_offset(j, b, 4 * g), &quads[g], 4);
    d[q8_panel_block_offset(j, b)] = amax / 127.0f;
    sum[q8_panel_block_offset(j, b)] = _mm_cvtsi128_si32(a4);
}

// ---- scalar reference ---------------------------------------------------------------------------------------------

void rows_scalar(const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales, const float *bias,
                 int K, int r0, int r1, float *y, int64_t ldy) {
    const int nb = K / 32;
    for (int r = r0; r < r1; ++r) {
        const uint8_t *row = blocks + int64_t(r) * nb * 16;
        auto w = [&](int b, int pos) {  // the unsigned byte w2 + 12 at block-split position pos
            const uint8_t byte = row[b * 16 + pos % 16];
            return kW2[pos < 16 ? (byte & 15) : (byte >> 4)] + kW2Offset;
        };
        auto wscale = [&](int b) { return kHalfScale.v[scales[int64_t(r) * nb + b]]; };
        for (int t = 0; t < n_tok; ++t)
            y[t * ldy + r] = q8pair::reference_dot<kW2Offset>(x, panel0 + t / kQ8PanelTokens, t % kQ8PanelTokens, nb, w, wscale) +
                             (bias ? bias[r] : 0.0f);
    }
}

// ---- SIMD ---------------------------------------------------------------------------------------------------------

// 2^(e - 128) for 16 E8M0 bytes, as kHalfScale holds it: (e - 1) << 23 is the float for e >= 2, the two smallest are
// subnormal (e = 1: 2^-127 = 1 << 22, e = 0: 2^-128 = 1 << 21).
MS_Q8_AVX512 inline __m512 half_scales_avx512(__m128i e8) {
    const __m512i e = _mm512_cvtepu8_epi32(e8);
    const __m512i normal = _mm512_slli_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(1)), 23);
    const __m512i tiny = _mm512_sllv_epi32(_mm512_set1_epi32(1), _mm512_add_epi32(e, _mm512_set1_epi32(21)));
    return _mm512_castsi512_ps(_mm512_mask_mov_epi32(normal, _mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(2)), tiny));
}

// Rows r .. r + m - 1 (m <= 8) into a weight tile of row stride 8 (cpu/q8_pair_kernel.h). Two block pairs (4 blocks,
// 64 bytes) at a time: interleaving each pair's two blocks by 4-byte groups (vpermd) puts quads 0-3 of both blocks
// side by side in the low nibbles and quads 4-7 in the high nibbles, which one table lookup per nibble half maps to
// w2 + 12 in the tile's order. The E8M0 scales become the float factors 2^(e - 128) 16 at a time.
MS_Q8_AVX512 void unpack_tile_avx512(const uint8_t *blocks, const uint8_t *scales, int K, int r, int m, uint8_t *wq, float *ws) {
    const int nb = K / 32, np = (nb + 1) / 2;
    const __m512i lut = _mm512_broadcast_i32x4(_mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i inter = _mm512_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7, 8, 12, 9, 13, 10, 14, 11, 15);
    for (int i = 0; i < m; ++i) {
        const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
        const uint8_t *sc = scales + int64_t(r + i) * nb;
        for (int bp = 0; bp < np; bp += 2) {
            // Blocks 2bp .. 2bp + 3; past the row's end (an odd block count, or an odd pair count) zero nibbles.
            const int have = std::min(4, nb - 2 * bp);
            const __m512i v = have == 4 ? _mm512_loadu_si512(blk + bp * 32)
                                        : _mm512_maskz_loadu_epi32(__mmask16((1u << (4 * have)) - 1), blk + bp * 32);
            const __m512i x = _mm512_permutexvar_epi32(inter, v);
            uint8_t *out = wq + q8pair::w_offset(bp, i, 0, 8);
            _mm512_store_si512(out, _mm512_shuffle_epi8(lut, _mm512_and_si512(x, m4)));
            _mm512_store_si512(out + 64, _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(x, 4), m4)));
        }
        for (int b = 0; b < nb; b += 16) {
            const int n = std::min(16, nb - b);
            const __m512 f = _mm512_maskz_mov_ps(__mmask16((1u << n) - 1),
                                                 half_scales_avx512(_mm_maskz_loadu_epi8(__mmask16((1u << n) - 1), sc + b)));
            // Blocks b + 2k, b + 2k + 1 (a float pair) go to pair b / 2 + k; an odd count leaves a 0 pad. Explicit
            // 8-byte stores: a loop of memcpy becomes a (slow) scatter.
            float *o = ws + (int64_t(b / 2) * 8 + i) * 2;
            const int pairs = (n + 1) / 2;
            const __m128 quarter[4] = {_mm512_castps512_ps128(f), _mm512_extractf32x4_ps(f, 1), _mm512_extractf32x4_ps(f, 2),
                                       _mm512_extractf32x4_ps(f, 3)};
            for (int k = 0; k < pairs; ++k) {
                if (k % 2 == 0) _mm_storel_pi(reinterpret_cast<__m64 *>(o + int64_t(k) * 16), quarter[k / 2]);
                else _mm_storeh_pi(reinterpret_cast<__m64 *>(o + int64_t(k) * 16), quarter[k / 2]);
            }
        }
    }
}

// The same with 256-bit operations (CPUs without AVX-512), one block pair at a time.
__attribute__((target("avx2"))) void unpack_tile_avx2(const uint8_t *blocks, const uint8_t *scales, int K, int r, int m, uint8_t *wq,
                                                      float *ws) {
    const int nb = K / 32, np = (nb + 1) / 2;
    const __m256i lut = _mm256_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0, 12, 13, 14, 15, 16, 18, 20,
                                         24, 12, 11, 10, 9, 8, 6, 4, 0);
    const __m256i m4 = _mm256_set1_epi8(0x0f), inter = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    for (int i = 0; i < m; ++i) {
        const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
        const uint8_t *sc = scales + int64_t(r + i) * nb;
        for (int bp = 0; bp < np; ++bp) {
            __m256i v;
            if (2 * bp + 1 < nb) v = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + bp * 32));
            else v = _mm256_zextsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + bp * 32)));
            v = _mm256_permutevar8x32_epi32(v, inter);
            uint8_t *out = wq + q8pair::w_offset(bp, i, 0, 8);
            _mm256_store_si256(reinterpret_cast<__m256i *>(out), _mm256_shuffle_epi8(lut, _mm256_and_si256(v, m4)));
            _mm256_store_si256(reinterpret_cast<__m256i *>(out + 64),
                               _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(v, 4), m4)));
            float *o = ws + (int64_t(bp) * 8 + i) * 2;
            o[0] = kHalfScale.v[sc[2 * bp]];
            o[1] = 2 * bp + 1 < nb ? kHalfScale.v[sc[2 * bp + 1]] : 0.0f;
        }
    }
}

// How far ahead (in tiles of 8 rows) the weights are prefetched.
constexpr int kPrefetchTiles = 2;

void rows_simd(q8pair::Kind kind, const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales,
               const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local AlignedVector<uint8_t> wq_buf;
    thread_local AlignedVector<float> ws_buf;
    const int nb = K / 32, np = q8_block_pairs(K);
    const size_t wq_bytes = size_t(q8pair::w_tile_bytes(np, 8));
    if (wq_buf.size() < wq_bytes) wq_buf.resize(wq_bytes);
    if (ws_buf.size() < size_t(np) * 16) ws_buf.resize(size_t(np) * 16);
    alignas(64) float out[8][8];
    for (int r = r0; r < r1; r += 8) {
        const int m = std::min(8, r1 - r);
        if (kind == q8pair::Kind::Avx512Vnni) unpack_tile_avx512(blocks, scales, K, r, m, wq_buf.data(), ws_buf.data());
        else unpack_tile_avx2(blocks, scales, K, r, m, wq_buf.data(), ws_buf.data());
        // While this tile computes, the blocks and scales of the tile kPrefetchTiles ahead come in (the first tiles
        // of a call: all of those up to there).
        const int pf0 = r == r0 ? r + 8 : r + 8 * kPrefetchTiles, pf1 = std::min(r1, r + 8 * (kPrefetchTiles + 1));
        const q8pair::Prefetch pf = pf1 > pf0 ? q8pair::Prefetch(blocks + int64_t(pf0) * nb * 16, int64_t(pf1 - pf0) * nb * 16,
                                                                 scales + int64_t(pf0) * nb, int64_t(pf1 - pf0) * nb, np)
                                              : q8pair::Prefetch();
        for (int p = 0; p * kQ8PanelTokens < n_tok; ++p) {
            const int64_t pp = panel0 + p;
            const int lanes = std::min(kQ8PanelTokens, n_tok - p * kQ8PanelTokens);
            q8pair::tile_rows<kW2Offset>(kind, wq_buf.data(), ws_buf.data(), m, np, lanes, x.qs + pp * q8_panel_qs_bytes(K),
                                         x.d + pp * q8_panel_blocks(K), x.sum + pp * q8_panel_blocks(K), out,
                                         p == 0 ? pf : q8pair::Prefetch());
            for (int j = 0; j < lanes; ++j) {
                float *yr = y + int64_t(p * kQ8PanelTokens + j) * ldy + r;
                for (int i = 0; i < m; ++i) yr[i] = out[i][j] + (bias ? bias[r + i] : 0.0f);
            }
        }
    }
}

// MS_Q8_AVX_VNNI=0 starts with AVX-VNNI off: the vpmaddubsw kernel of CPUs without it, measurable on one with it.
std::atomic<bool> g_avx_vnni_on{[] {
    const char *v = std::getenv("MS_Q8_AVX_VNNI");
    return !(v && std::strcmp(v, "0") == 0);
}()};

}  // namespace

bool q8_vnni_available() {
#if defined(__x86_64__)
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    }();
    return ok;
#else
    return false;
#endif
}

bool q8_avx_vnni_available() {
#if defined(__x86_64__)
    static const bool ok = [] {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("avxvnni");
    }();
    return ok && g_avx_vnni_on.load(std::memory_order_relaxed);
#else
    return false;
#endif
}

bool set_q8_avx_vnni(bool on) { return g_avx_vnni_on.exchange(on); }

namespace q8pair {
Kind kind_for(Simd s) {
    if (s == Simd::Avx512 && q8_vnni_available()) return Kind::Avx512Vnni;
    return q8_avx_vnni_available() ? Kind::AvxVnni : Kind::Avx2;
}
}  // namespace q8pair

const char *q8_kernel_name(Simd s) {
    if (s == Simd::Scalar) return "scalar";
    switch (q8pair::kind_for(s)) {
        case q8pair::Kind::Avx512Vnni: return "AVX-512 VNNI";
        case q8pair::Kind::AvxVnni: return "AVX-VNNI";
        default: return "AVX2 vpmaddubsw";
    }
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
    } else if (nb % 2) {  // the pad block after an odd last block: zero for every lane
        const int bp = nb / 2;
        std::memset(qs + int64_t(bp) * 512, 0, 512);
        std::fill(d + bp * 16, d + bp * 16 + 16, 0.0f);
        std::fill(sum + bp * 16, sum + bp * 16 + 16, 0);
    }
    for (int j = 0; j < n; ++j)
        for (int b = 0; b < nb; ++b) {
            if (s == Simd::Scalar) quantize_block_scalar(rows[j] + b * 32, qs, j, b, d, sum);
            else quantize_block_avx2(rows[j] + b * 32, qs, j, b, d, sum);
        }
}

void matmul_mxfp4_q8_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const uint8_t *blocks, const uint8_t *scales,
                          const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (n_tok <= 0 || r1 <= r0) return;
    if (s == Simd::Scalar) return rows_scalar(x, panel0, n_tok, blocks, scales, bias, K, r0, r1, y, ldy);
    rows_simd(q8pair::kind_for(s), x, panel0, n_tok, blocks, scales, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
