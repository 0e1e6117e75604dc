#include "cpu/matmul_q8_dense.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/bf16.h"
#include "cpu/q8_pair_kernel.h"

namespace ms {

namespace {

constexpr int kDenseOffset = 128;  // stored byte = qw + 128

// Place of row r, block b, block-split position pos in Q8DenseWeights::q, and of its scale in ::d.
inline int64_t q_index(int np, int r, int b, int pos) {
    return int64_t(r / 8) * q8pair::w_tile_bytes(np, 8) + q8pair::w_offset(b / 2, r % 8, pos / 4, 8) + (b % 2) * 4 + pos % 4;
}
inline int64_t d_index(int np, int r, int b) { return ((int64_t(r / 8) * np + b / 2) * 8 + r % 8) * 2 + b % 2; }

void rows_scalar(const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias, int r0, int r1,
                 float *y, int64_t ldy) {
    const int K = W.K, nb = K / 32, np = q8_block_pairs(K);
    for (int r = r0; r < r1; ++r) {
        auto w = [&](int b, int pos) { return W.q[size_t(q_index(np, r, b, pos))]; };
        auto wscale = [&](int b) { return W.d[size_t(d_index(np, r, b))]; };
        for (int t = 0; t < n_tok; ++t)
            y[t * ldy + r] = q8pair::reference_dot<kDenseOffset>(x, panel0 + t / kQ8PanelTokens, t % kQ8PanelTokens, nb, w, wscale) +
                             (bias ? bias[r] : 0.0f);
    }
}

void rows_simd(q8pair::Kind kind, const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias,
               int r0, int r1, float *y, int64_t ldy) {
    const int K = W.K, np = q8_block_pairs(K);
    alignas(64) float out[8][8];
    for (int g = r0 / 8; g * 8 < r1; ++g) {
        const int i0 = std::max(0, r0 - g * 8), i1 = std::min(8, r1 - g * 8), r = g * 8 + i0;
        const uint8_t *wq = W.q.data() + int64_t(g) * q8pair::w_tile_bytes(np, 8) + i0 * 128;
        const float *ws = W.d.data() + int64_t(g) * np * 16 + i0 * 2;
        // While this group computes, the next one's weights and scales come in.
        const bool more = (g + 1) * 8 < r1;
        const q8pair::Prefetch pf = more ? q8pair::Prefetch(wq - i0 * 128 + q8pair::w_tile_bytes(np, 8), q8pair::w_tile_bytes(np, 8),
                                                            ws - i0 * 2 + np * 16, int64_t(np) * 16 * 4, np)
                                         : q8pair::Prefetch();
        for (int p = 0; p * kQ8PanelTokens < n_tok; ++p) {
            const int64_t pp = panel0 + p;
            const int lanes = std::min(kQ8PanelTokens, n_tok - p * kQ8PanelTokens);
            q8pair::tile_rows<kDenseOffset>(kind, wq, ws, i1 - i0, np, lanes, x.qs + pp * q8_panel_qs_bytes(K), x.d + pp * q8_panel_blocks(K),
                                            x.sum + pp * q8_panel_blocks(K), out, p == 0 ? pf : q8pair::Prefetch());
            for (int j = 0; j < lanes; ++j) {
                float *yr = y + int64_t(p * kQ8PanelTokens + j) * ldy + r;
                for (int i = 0; i < i1 - i0; ++i) yr[i] = out[i][j] + (bias ? bias[r + i] : 0.0f);
            }
        }
    }
}

}  // namespace

int Q8DenseWeights::weight(int r, int k) const {
    return int(q[size_t(q_index(q8_block_pairs(K), r, k / 32, q8_block_position(k % 32)))]) - kDenseOffset;
}

float Q8DenseWeights::scale(int r, int b) const { return d[size_t(d_index(q8_block_pairs(K), r, b))]; }

void q8_quantize_dense_bf16(const uint16_t *w, int rows, int K, Q8DenseWeights &out) {
    const int nb = K / 32, np = q8_block_pairs(K), groups = (rows + 7) / 8;
    out.rows = rows;
    out.K = K;
    // Pad rows and pad blocks: weight 0 (byte 128), scale 0.
    out.q.assign(size_t(groups) * q8pair::w_tile_bytes(np, 8), uint8_t(kDenseOffset));
    out.d.assign(size_t(groups) * np * 16, 0.0f);
    for (int r = 0; r < rows; ++r)
        for (int b = 0; b < nb; ++b) {
            float x[32], amax = 0;
            for (int k = 0; k < 32; ++k) {
                x[k] = bf16_to_f32(w[int64_t(r) * K + b * 32 + k]);
                amax = std::max(amax, std::fabs(x[k]));
            }
            const float id = amax != 0.0f ? 127.0f / amax : 0.0f;
            for (int k = 0; k < 32; ++k)
                out.q[size_t(q_index(np, r, b, q8_block_position(k)))] = uint8_t(int(std::nearbyint(x[k] * id)) + kDenseOffset);
            out.d[size_t(d_index(np, r, b))] = amax / 127.0f;
        }
}

void matmul_q8_dense_rows(Simd s, const Q8Panels &x, int panel0, int n_tok, const Q8DenseWeights &W, const float *bias,
                          int r0, int r1, float *y, int64_t ldy) {
    if (n_tok <= 0 || r1 <= r0) return;
    if (s == Simd::Scalar) return rows_scalar(x, panel0, n_tok, W, bias, r0, r1, y, ldy);
    rows_simd(q8pair::kind_for(s), x, panel0, n_tok, W, bias, r0, r1, y, ldy);
}

}  // namespace ms
