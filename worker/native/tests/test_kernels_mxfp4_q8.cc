// The int8-activation MXFP4 kernel (cpu/matmul_mxfp4_q8.h): quantizer SIMD vs scalar (same bytes), the scalar
// reference against an independent computation from dequantised weights and activations, SIMD kernels (AVX2
// vpmaddubsw, AVX-512 VNNI) against the reference bit for bit, independence from the token count and row range, and
// the distance to the fp32-activation kernel within the bound the activation rounding allows. The same for the
// int8 x int8 dense kernel (cpu/matmul_q8_dense.h) against the bf16 x fp32 one.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/matmul_bf16.h"
#include "cpu/bf16.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/matmul_q8_dense.h"
#include "kernel_test_util.h"

namespace {

std::vector<ms::Simd> simd_levels() {
    std::vector<ms::Simd> v;
    for (ms::Simd s : {ms::Simd::Avx2, ms::Simd::Avx512})
        if (ms::simd_supported(s)) v.push_back(s);
    return v;
}

using ms_test::randn;

struct Weights {
    std::vector<uint8_t> blocks, scales;
    std::vector<double> dense;  // [N][K], natural element order, exact
};

Weights random_weights(int N, int K, std::mt19937 &rng) {
    Weights c;
    c.blocks.resize(size_t(N) * K / 2);
    c.scales.resize(size_t(N) * K / 32);
    for (auto &b : c.blocks) b = uint8_t(rng());
    for (auto &s : c.scales) s = uint8_t(116 + rng() % 12);
    c.dense.resize(size_t(N) * K);
    for (int r = 0; r < N; ++r)
        for (int k = 0; k < K; ++k) {
            const uint8_t byte = c.blocks[size_t(r) * K / 2 + k / 2];
            const int nib = (k % 2 == 0) ? (byte & 15) : (byte >> 4);
            c.dense[size_t(r) * K + k] = double(ms::kE2M1[nib]) * std::ldexp(1.0, int(c.scales[size_t(r) * K / 32 + k / 32]) - 127);
        }
    return c;
}

// Activation panels for T tokens of K values (rows of x), quantized with level s.
struct Panels {
    ms::AlignedVector<int8_t> qs;
    ms::AlignedVector<float> d;
    ms::AlignedVector<int32_t> sum;
    ms::Q8Panels p;
    Panels(int T, int K, int extra_panels = 0) {
        const int np = (T + 7) / 8 + extra_panels;
        qs.assign(size_t(np) * ms::q8_panel_qs_bytes(K), 0x55);  // garbage: the quantizer must write every byte
        d.assign(size_t(np) * ms::q8_panel_blocks(K), NAN);
        sum.assign(size_t(np) * ms::q8_panel_blocks(K), 12345);
        p.qs = qs.data();
        p.d = d.data();
        p.sum = sum.data();
        p.K = K;
    }
    void fill(ms::Simd s, const float *x, int T, int first_panel = 0) {
        for (int p0 = 0; p0 * 8 < T; ++p0) {
            const float *rows[8];
            const int n = std::min(8, T - p0 * 8);
            for (int j = 0; j < n; ++j) rows[j] = x + size_t(p0 * 8 + j) * p.K;
            ms::q8_quantize_panel(s, rows, n, p, first_panel + p0);
        }
    }
    int8_t q(int t, int k) const {
        return qs[size_t(t / 8) * ms::q8_panel_qs_bytes(p.K) + ms::q8_panel_q_offset(t % 8, k / 32, ms::q8_block_position(k % 32))];
    }
    size_t block(int t, int b) const { return size_t(t / 8) * ms::q8_panel_blocks(p.K) + ms::q8_panel_block_offset(t % 8, b); }
    float scale(int t, int b) const { return d[block(t, b)]; }
};

TEST(KernelsMxfp4Q8, QuantizerSimdMatchesScalarAndRoundsWithinHalfAStep) {
    if (simd_levels().empty()) GTEST_SKIP() << "no SIMD level on this CPU";
    std::mt19937 rng(11);
    for (int T : {1, 5, 8, 13}) {
        const int K = 96;
        auto x = randn(size_t(T) * K, rng, 3.0f);
        for (int k = 32; k < 64; ++k) x[k] = 0.0f;                         // an all-zero block
        x[5] = 1e-30f;                                                      // a tiny value next to normal ones
        if (T > 1) x[K + 7] = 100.0f;                                       // an outlier
        Panels ref(T, K), got(T, K);
        ref.fill(ms::Simd::Scalar, x.data(), T);
        for (ms::Simd s : simd_levels()) {
            got.fill(s, x.data(), T);
            ASSERT_EQ(0, std::memcmp(ref.qs.data(), got.qs.data(), ref.qs.size())) << ms::simd_name(s) << " T=" << T;
            ASSERT_EQ(0, std::memcmp(ref.d.data(), got.d.data(), ref.d.size() * 4)) << ms::simd_name(s);
            ASSERT_EQ(0, std::memcmp(ref.sum.data(), got.sum.data(), ref.sum.size() * 4)) << ms::simd_name(s);
        }
        for (int t = 0; t < T; ++t)
            for (int b = 0; b < K / 32; ++b) {
                int32_t s = 0;
                const float d = ref.scale(t, b);
                for (int k = b * 32; k < b * 32 + 32; ++k) {
                    const int q = ref.q(t, k);
                    ASSERT_LE(std::abs(q), 127);
                    ASSERT_LE(std::fabs(x[size_t(t) * K + k] - q * d), 0.5f * d * (1 + 1e-5f) + 1e-37f) << "t=" << t << " k=" << k;
                    s += q;
                }
                ASSERT_EQ(s, ref.sum[ref.block(t, b)]);
            }
        // Lanes past T are zero with zero scale.
        if (T % 8) {
            const int t = T;  // first unused lane of the last panel
            for (int k = 0; k < K; ++k) ASSERT_EQ(ref.q(t, k), 0);
            ASSERT_EQ(ref.scale(t, 0), 0.0f);
        }
    }
}

TEST(KernelsMxfp4Q8, ScalarMatchesDequantisedProduct) {
    std::mt19937 rng(12);
    const int N = 9, K = 160, T = 11;
    Weights w = random_weights(N, K, rng);
    auto x = randn(size_t(T) * K, rng);
    auto bias = randn(N, rng);
    Panels px(T, K);
    px.fill(ms::Simd::Scalar, x.data(), T);
    std::vector<float> out(size_t(T) * N, NAN);
    ms::matmul_mxfp4_q8_rows(ms::Simd::Scalar, px.p, 0, T, w.blocks.data(), w.scales.data(), bias.data(), K, 0, N, out.data(), N);
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double s = bias[r], mag = std::fabs(bias[r]);
            for (int k = 0; k < K; ++k) {
                const double term = double(px.q(t, k)) * px.scale(t, k / 32) * w.dense[size_t(r) * K + k];
                s += term;
                mag += std::fabs(term);
            }
            // Exact integer block sums; only the fp32 scale product and K/32 fp32 accumulations round.
            ASSERT_NEAR(out[t * N + r], s, 4e-7 * mag * (K / 32 + 2) + 1e-6) << "t=" << t << " r=" << r;
        }
}

TEST(KernelsMxfp4Q8, SimdMatchesScalarBitForBit) {
    if (simd_levels().empty()) GTEST_SKIP() << "no SIMD level on this CPU";
    std::mt19937 rng(13);
    for (int K : {32, 96, 2880}) {
        const int N = 11;
        Weights w = random_weights(N, K, rng);
        auto bias = randn(N, rng);
        for (int T : {1, 3, 7, 8, 9, 17, 33}) {
            auto x = randn(size_t(T) * K, rng);
            Panels px(T, K, 1);
            px.fill(ms::Simd::Scalar, x.data(), T, 1);  // starting at panel 1: panel0 is honoured
            std::vector<float> ref(size_t(T) * N), out(ref.size());
            ms::matmul_mxfp4_q8_rows(ms::Simd::Scalar, px.p, 1, T, w.blocks.data(), w.scales.data(), bias.data(), K, 0, N, ref.data(), N);
            for (ms::Simd s : simd_levels()) {
                std::fill(out.begin(), out.end(), NAN);
                ms::matmul_mxfp4_q8_rows(s, px.p, 1, T, w.blocks.data(), w.scales.data(), bias.data(), K, 0, 6, out.data(), N);
                ms::matmul_mxfp4_q8_rows(s, px.p, 1, T, w.blocks.data(), w.scales.data(), bias.data(), K, 6, N, out.data(), N);
                for (int i = 0; i < T * N; ++i)
                    ASSERT_EQ(out[i], ref[i]) << ms::simd_name(s) << (ms::q8_vnni_available() && s == ms::Simd::Avx512 ? " (vnni)" : "")
                                              << " K=" << K << " T=" << T << " t=" << i / N << " r=" << i % N;
            }
        }
    }
}

TEST(KernelsMxfp4Q8, ResultDoesNotDependOnTokenCountOrRowRange) {
    std::mt19937 rng(14);
    const int K = 192, N = 10, T = 19;
    Weights w = random_weights(N, K, rng);
    auto x = randn(size_t(T) * K, rng);
    auto bias = randn(N, rng);
    std::vector<ms::Simd> levels = simd_levels();
    levels.push_back(ms::Simd::Scalar);
    for (ms::Simd s : levels) {
        Panels all(T, K);
        all.fill(s, x.data(), T);
        std::vector<float> y_all(size_t(T) * N), y_one(N);
        ms::matmul_mxfp4_q8_rows(s, all.p, 0, T, w.blocks.data(), w.scales.data(), nullptr, K, 0, N, y_all.data(), N);
        for (int t = 0; t < T; ++t) {
            Panels one(1, K);
            one.fill(s, x.data() + size_t(t) * K, 1);
            for (int r = 0; r < N; ++r)  // one row at a time: row groups of 1 instead of 4
                ms::matmul_mxfp4_q8_rows(s, one.p, 0, 1, w.blocks.data(), w.scales.data(), nullptr, K, r, r + 1, y_one.data(), N);
            for (int r = 0; r < N; ++r) ASSERT_EQ(y_one[r], y_all[size_t(t) * N + r]) << ms::simd_name(s) << " t=" << t << " r=" << r;
        }
    }
}

TEST(KernelsMxfp4Q8, WithinActivationRoundingOfFp32Kernel) {
    std::mt19937 rng(15);
    const int K = 2880, N = 7, T = 10;
    Weights w = random_weights(N, K, rng);
    auto x = randn(size_t(T) * K, rng);
    for (int i = 0; i < 20; ++i) x[rng() % x.size()] *= 30.0f;  // outliers widen some blocks' steps
    auto bias = randn(N, rng);
    const ms::Simd s = simd_levels().empty() ? ms::Simd::Scalar : simd_levels().back();
    Panels px(T, K);
    px.fill(s, x.data(), T);
    std::vector<float> xs(x.size()), y8(size_t(T) * N), y32(size_t(T) * N);
    for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + size_t(t) * K, K, xs.data() + size_t(t) * K);
    ms::matmul_mxfp4_q8_rows(s, px.p, 0, T, w.blocks.data(), w.scales.data(), bias.data(), K, 0, N, y8.data(), N);
    ms::matmul_mxfp4_rows(s, xs.data(), T, K, w.blocks.data(), w.scales.data(), bias.data(), K, 0, N, y32.data(), N);
    double worst_ratio = 0;
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double bound = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
                bound += 0.5 * px.scale(t, k / 32) * std::fabs(w.dense[size_t(r) * K + k]);
                mag += std::fabs(x[size_t(t) * K + k] * w.dense[size_t(r) * K + k]);
            }
            const double diff = std::fabs(double(y8[t * N + r]) - y32[t * N + r]);
            ASSERT_LE(diff, bound + 1e-5 * mag + 1e-5) << "t=" << t << " r=" << r;
            worst_ratio = std::max(worst_ratio, diff / bound);
        }
    // The bound is worst case (every rounding error the same sign); random data stays far inside it.
    EXPECT_LT(worst_ratio, 0.25);
    EXPECT_GT(worst_ratio, 0.0);
}

std::vector<uint16_t> random_bf16(size_t n, std::mt19937 &rng) {
    std::normal_distribution<float> nd(0.0f, 0.05f);
    std::vector<uint16_t> w(n);
    for (auto &v : w) v = ms::f32_to_bf16(nd(rng));
    return w;
}

TEST(KernelsQ8Dense, SimdMatchesScalarBitForBitAndIgnoresTokenCount) {
    std::mt19937 rng(21);
    for (int K : {32, 96, 1024}) {
        const int N = 13;
        auto wb = random_bf16(size_t(N) * K, rng);
        wb[5] = 0;  // a zero weight (sign_epi8 of a zero weight gives zero)
        ms::Q8DenseWeights W;
        ms::q8_quantize_dense_bf16(wb.data(), N, K, W);
        auto bias = randn(N, rng);
        for (int T : {1, 5, 8, 9, 32}) {
            auto x = randn(size_t(T) * K, rng);
            Panels px(T, K);
            px.fill(ms::Simd::Scalar, x.data(), T);
            std::vector<float> ref(size_t(T) * N), out(ref.size());
            ms::matmul_q8_dense_rows(ms::Simd::Scalar, px.p, 0, T, W, bias.data(), 0, N, ref.data(), N);
            for (ms::Simd s : simd_levels()) {
                std::fill(out.begin(), out.end(), NAN);
                ms::matmul_q8_dense_rows(s, px.p, 0, T, W, bias.data(), 0, 6, out.data(), N);
                ms::matmul_q8_dense_rows(s, px.p, 0, T, W, bias.data(), 6, N, out.data(), N);
                for (int i = 0; i < T * N; ++i) ASSERT_EQ(out[i], ref[i]) << ms::simd_name(s) << " K=" << K << " T=" << T << " i=" << i;
                // One token alone in its own panel, one row at a time.
                Panels one(1, K);
                one.fill(s, x.data() + size_t(T - 1) * K, 1);
                std::vector<float> y1(N);
                for (int r = 0; r < N; ++r) ms::matmul_q8_dense_rows(s, one.p, 0, 1, W, bias.data(), r, r + 1, y1.data(), N);
                for (int r = 0; r < N; ++r) ASSERT_EQ(y1[r], ref[size_t(T - 1) * N + r]) << ms::simd_name(s) << " r=" << r;
            }
        }
    }
}

TEST(KernelsQ8Dense, MatchesDequantisedProductAndStaysWithinRoundingOfFp32) {
    std::mt19937 rng(22);
    const int K = 1024, N = 9, T = 11;
    auto wb = random_bf16(size_t(N) * K, rng);
    ms::Q8DenseWeights W;
    ms::q8_quantize_dense_bf16(wb.data(), N, K, W);
    auto x = randn(size_t(T) * K, rng);
    auto bias = randn(N, rng);
    const ms::Simd s = simd_levels().empty() ? ms::Simd::Scalar : simd_levels().back();
    Panels px(T, K);
    px.fill(s, x.data(), T);
    std::vector<float> y8(size_t(T) * N), y32(size_t(T) * N);
    ms::matmul_q8_dense_rows(s, px.p, 0, T, W, bias.data(), 0, N, y8.data(), N);
    ms::matmul_bf16_rows(s, x.data(), T, K, wb.data(), bias.data(), K, 0, N, y32.data(), N);
    for (int r = 0; r < N; ++r)
        for (int k = 0; k < K; ++k) {  // weight rounding: within half a step of the block's scale
            const float w = ms::bf16_to_f32(wb[size_t(r) * K + k]), dw = W.scale(r, k / 32);
            const float q = float(W.weight(r, k));
            ASSERT_LE(std::fabs(w - q * dw), 0.5f * dw * (1 + 1e-5f)) << "r=" << r << " k=" << k;
        }
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double exact = bias[r], mag = std::fabs(bias[r]), bound = 0;
            for (int k = 0; k < K; ++k) {
                const double dw = W.scale(r, k / 32), da = px.scale(t, k / 32);
                const double qw = W.weight(r, k);
                const double term = qw * dw * px.q(t, k) * da;
                exact += term;
                mag += std::fabs(term);
                bound += 0.5 * da * std::fabs(ms::bf16_to_f32(wb[size_t(r) * K + k])) + 0.5 * dw * std::fabs(x[size_t(t) * K + k]) + 0.25 * da * dw;
            }
            ASSERT_NEAR(y8[t * N + r], exact, 4e-7 * mag * (K / 32 + 2) + 1e-6) << "t=" << t << " r=" << r;
            ASSERT_LE(std::fabs(double(y8[t * N + r]) - y32[t * N + r]), bound + 1e-5 * mag + 1e-5) << "t=" << t << " r=" << r;
        }
}

}  // namespace
