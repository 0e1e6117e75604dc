// SIMD matrix kernels against their scalar references on random inputs, and the MXFP4 scalar kernel against a
// dequantise-then-multiply computation in natural element order (checks the nibble order and block-split layout).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_mxfp4.h"
#include "kernel_test_util.h"

namespace {

std::vector<ms::Simd> simd_levels() {
    std::vector<ms::Simd> v;
    for (ms::Simd s : {ms::Simd::Avx2, ms::Simd::Avx512})
        if (ms::simd_supported(s)) v.push_back(s);
    return v;
}

using ms_test::randn;

// Tolerance for a dot product of length K computed in two fp32 orders: a few ulps of the sum of |terms|.
float dot_tolerance(const float *x, const float *w_dense, int K) {
    double s = 0;
    for (int k = 0; k < K; ++k) s += std::fabs(double(x[k]) * w_dense[k]);
    return float(2e-6 * s * std::sqrt(double(K)) + 1e-6);
}

TEST(KernelsMatmulBf16, SimdMatchesScalar) {
    std::mt19937 rng(1);
    for (int K : {16, 64, 200, 2880}) {
        const int N = 13;
        for (int n_tok : {1, 2, 3, 4, 5, 9}) {
            auto x = randn(size_t(n_tok) * K, rng);
            auto wf = randn(size_t(N) * K, rng, 0.05f);
            std::vector<uint16_t> w(wf.size());
            for (size_t i = 0; i < w.size(); ++i) {
                w[i] = ms::f32_to_bf16(wf[i]);
                wf[i] = ms::bf16_to_f32(w[i]);
            }
            auto bias = randn(N, rng);
            std::vector<float> ref(size_t(n_tok) * N), out(ref.size());
            ms::matmul_bf16_rows(ms::Simd::Scalar, x.data(), n_tok, K, w.data(), bias.data(), K, 0, N, ref.data(), N);
            for (ms::Simd s : simd_levels()) {
                std::fill(out.begin(), out.end(), NAN);
                // Two row ranges, as two threads would split them.
                ms::matmul_bf16_rows(s, x.data(), n_tok, K, w.data(), bias.data(), K, 0, 6, out.data(), N);
                ms::matmul_bf16_rows(s, x.data(), n_tok, K, w.data(), bias.data(), K, 6, N, out.data(), N);
                for (int t = 0; t < n_tok; ++t)
                    for (int r = 0; r < N; ++r) {
                        float tol = dot_tolerance(x.data() + t * K, wf.data() + r * K, K);
                        ASSERT_NEAR(out[t * N + r], ref[t * N + r], tol)
                            << ms::simd_name(s) << " K=" << K << " n_tok=" << n_tok << " t=" << t << " r=" << r;
                    }
            }
        }
    }
}

// The AVX2 kernel runs 4 rows x 1-2 tokens, 2 x 1-4, and above 4 tokens widened row pairs x token tiles of 3-6
// (plus odd-row tails): token counts 1..14 against row splits and a K with a scalar tail.
TEST(KernelsMatmulBf16, SimdMatchesScalarEveryTiling) {
    std::mt19937 rng(8);
    for (int K : {64, 77}) {
        for (int N : {7, 18}) {
            auto wf = randn(size_t(N) * K, rng, 0.05f);
            std::vector<uint16_t> w(wf.size());
            for (size_t i = 0; i < w.size(); ++i) {
                w[i] = ms::f32_to_bf16(wf[i]);
                wf[i] = ms::bf16_to_f32(w[i]);
            }
            auto bias = randn(N, rng);
            for (int n_tok = 1; n_tok <= 14; ++n_tok) {
                auto x = randn(size_t(n_tok) * K, rng);
                std::vector<float> ref(size_t(n_tok) * N), out(ref.size());
                ms::matmul_bf16_rows(ms::Simd::Scalar, x.data(), n_tok, K, w.data(), bias.data(), K, 0, N, ref.data(), N);
                for (ms::Simd s : simd_levels())
                    for (int split : {0, 3, N / 2}) {
                        std::fill(out.begin(), out.end(), NAN);
                        ms::matmul_bf16_rows(s, x.data(), n_tok, K, w.data(), bias.data(), K, 0, split, out.data(), N);
                        ms::matmul_bf16_rows(s, x.data(), n_tok, K, w.data(), bias.data(), K, split, N, out.data(), N);
                        for (int t = 0; t < n_tok; ++t)
                            for (int r = 0; r < N; ++r)
                                ASSERT_NEAR(out[t * N + r], ref[t * N + r], dot_tolerance(x.data() + t * K, wf.data() + r * K, K))
                                    << ms::simd_name(s) << " K=" << K << " N=" << N << " n_tok=" << n_tok << " split=" << split
                                    << " t=" << t << " r=" << r;
                    }
            }
        }
    }
}

TEST(KernelsMatmulBf16, ResultDoesNotDependOnTokenCount) {
    if (simd_levels().empty()) GTEST_SKIP() << "no SIMD level on this CPU";
    std::mt19937 rng(2);
    const int K = 100, N = 9, T = 13;  // T >= 8 takes the widened path, single tokens the direct one
    auto x = randn(size_t(T) * K, rng);
    std::vector<uint16_t> w(size_t(N) * K);
    for (auto &e : w) e = ms::f32_to_bf16(std::normal_distribution<float>(0, 0.1f)(rng));
    for (ms::Simd s : simd_levels()) {
        std::vector<float> all(size_t(T) * N), one(N);
        ms::matmul_bf16_rows(s, x.data(), T, K, w.data(), nullptr, K, 0, N, all.data(), N);
        for (int t = 0; t < T; ++t) {
            ms::matmul_bf16_rows(s, x.data() + t * K, 1, K, w.data(), nullptr, K, 0, N, one.data(), N);
            for (int r = 0; r < N; ++r) ASSERT_EQ(one[r], all[t * N + r]) << ms::simd_name(s);
        }
    }
}

struct Mxfp4Case {
    std::vector<uint8_t> blocks, scales;
    std::vector<float> dense;  // [N][K], natural element order
};

Mxfp4Case random_mxfp4(int N, int K, std::mt19937 &rng) {
    Mxfp4Case c;
    c.blocks.resize(size_t(N) * K / 2);
    c.scales.resize(size_t(N) * K / 32);
    for (auto &b : c.blocks) b = uint8_t(rng());
    for (auto &s : c.scales) s = uint8_t(118 + rng() % 8);
    c.dense.resize(size_t(N) * K);
    for (int r = 0; r < N; ++r)
        for (int k = 0; k < K; ++k) {
            uint8_t byte = c.blocks[size_t(r) * K / 2 + k / 2];
            int nib = (k % 2 == 0) ? (byte & 15) : (byte >> 4);
            c.dense[size_t(r) * K + k] = ms::kE2M1[nib] * std::ldexp(1.0f, int(c.scales[size_t(r) * K / 32 + k / 32]) - 127);
        }
    return c;
}

TEST(KernelsMatmulMxfp4, ScalarMatchesDequantisedProduct) {
    std::mt19937 rng(3);
    const int N = 9, K = 128, T = 3;
    Mxfp4Case c = random_mxfp4(N, K, rng);
    auto x = randn(size_t(T) * K, rng);
    auto bias = randn(N, rng);
    std::vector<float> xs(x.size()), out(size_t(T) * N);
    for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + t * K, K, xs.data() + t * K);
    ms::matmul_mxfp4_rows(ms::Simd::Scalar, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, out.data(), N);
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double s = bias[r];
            for (int k = 0; k < K; ++k) s += double(x[t * K + k]) * c.dense[size_t(r) * K + k];
            ASSERT_NEAR(out[t * N + r], s, dot_tolerance(x.data() + t * K, c.dense.data() + r * K, K));
        }
}

TEST(KernelsMatmulMxfp4, SimdMatchesScalar) {
    std::mt19937 rng(4);
    for (int K : {32, 96, 2880}) {
        const int N = 11;
        Mxfp4Case c = random_mxfp4(N, K, rng);
        auto bias = randn(N, rng);
        for (int T : {1, 3, 4, 7, 8, 9, 17}) {
            auto x = randn(size_t(T) * K, rng);
            std::vector<float> xs(x.size()), ref(size_t(T) * N), out(ref.size());
            for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + t * K, K, xs.data() + t * K);
            ms::matmul_mxfp4_rows(ms::Simd::Scalar, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, ref.data(), N);
            for (ms::Simd s : simd_levels()) {
                std::fill(out.begin(), out.end(), NAN);
                ms::matmul_mxfp4_rows(s, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, 5, out.data(), N);
                ms::matmul_mxfp4_rows(s, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 5, N, out.data(), N);
                for (int t = 0; t < T; ++t)
                    for (int r = 0; r < N; ++r)
                        ASSERT_NEAR(out[t * N + r], ref[t * N + r], dot_tolerance(x.data() + t * K, c.dense.data() + r * K, K))
                            << ms::simd_name(s) << " K=" << K << " T=" << T;
            }
        }
    }
}

// The AVX2 kernel tiles 8 rows x 1 token, 4 x 2, 3 x 3 and 2 x 4 (plus single-row tails): every token count up to
// 10 against row counts and row-range splits that hit each tile shape and its tails.
TEST(KernelsMatmulMxfp4, SimdMatchesScalarEveryRowTiling) {
    std::mt19937 rng(7);
    const int K = 160;
    for (int N : {8, 19, 37}) {
        Mxfp4Case c = random_mxfp4(N, K, rng);
        auto bias = randn(N, rng);
        for (int T = 1; T <= 10; ++T) {
            auto x = randn(size_t(T) * K, rng);
            std::vector<float> xs(x.size()), ref(size_t(T) * N), out(ref.size());
            for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + t * K, K, xs.data() + t * K);
            ms::matmul_mxfp4_rows(ms::Simd::Scalar, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, ref.data(), N);
            for (ms::Simd s : simd_levels())
                for (int split : {0, 3, N / 2}) {
                    std::fill(out.begin(), out.end(), NAN);
                    ms::matmul_mxfp4_rows(s, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, split, out.data(), N);
                    ms::matmul_mxfp4_rows(s, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, split, N, out.data(), N);
                    for (int t = 0; t < T; ++t)
                        for (int r = 0; r < N; ++r)
                            ASSERT_NEAR(out[t * N + r], ref[t * N + r], dot_tolerance(x.data() + t * K, c.dense.data() + r * K, K))
                                << ms::simd_name(s) << " N=" << N << " T=" << T << " split=" << split << " t=" << t << " r=" << r;
                }
        }
    }
}

TEST(KernelsMatmulMxfp4, ResultDoesNotDependOnTokenCount) {
    if (simd_levels().empty()) GTEST_SKIP() << "no SIMD level on this CPU";
    std::mt19937 rng(6);
    const int K = 96, N = 9, T = 13;
    Mxfp4Case c = random_mxfp4(N, K, rng);
    auto xs = randn(size_t(T) * K, rng);
    auto bias = randn(N, rng);
    for (ms::Simd s : simd_levels()) {
        std::vector<float> all(size_t(T) * N), one(N);
        ms::matmul_mxfp4_rows(s, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, all.data(), N);
        for (int t = 0; t < T; ++t) {
            ms::matmul_mxfp4_rows(s, xs.data() + t * K, 1, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, one.data(), N);
            for (int r = 0; r < N; ++r) ASSERT_EQ(one[r], all[t * N + r]) << ms::simd_name(s) << " t=" << t << " r=" << r;
        }
    }
}

TEST(KernelsMatmulMxfp4, E8M0ScaleIsPowerOfTwo) {
    EXPECT_EQ(ms::e8m0_scale(127), 1.0f);
    EXPECT_EQ(ms::e8m0_scale(128), 2.0f);
    EXPECT_EQ(ms::e8m0_scale(120), 1.0f / 128);
    EXPECT_EQ(ms::kE2M1[7], 6.0f);
    EXPECT_EQ(ms::kE2M1[15], -6.0f);
    EXPECT_EQ(ms::kE2M1[9], -0.5f);
}

TEST(KernelsBf16, ConversionsMatchScalarExactly) {
    std::mt19937 rng(5);
    std::vector<float> f(1003);
    for (auto &x : f) {
        uint32_t u = rng();
        std::memcpy(&x, &u, 4);  // every bit pattern class: NaN, inf, denormals, ties
    }
    f[0] = 1.0f + 1.0f / 256;  // exact tie: rounds to even (1.0)
    f[1] = NAN;
    f[2] = -INFINITY;
    std::vector<uint16_t> ref(f.size()), out(f.size());
    ms::f32_to_bf16_n(ms::Simd::Scalar, f.data(), ref.data(), int64_t(f.size()));
    EXPECT_EQ(ref[0], 0x3f80);
    EXPECT_TRUE(std::isnan(ms::bf16_to_f32(ref[1])));
    for (ms::Simd s : simd_levels()) {
        ms::f32_to_bf16_n(s, f.data(), out.data(), int64_t(f.size()));
        for (size_t i = 0; i < f.size(); ++i) ASSERT_EQ(out[i], ref[i]) << ms::simd_name(s) << " i=" << i;
        std::vector<float> back(f.size()), back_ref(f.size());
        ms::bf16_to_f32_n(ms::Simd::Scalar, ref.data(), back_ref.data(), int64_t(f.size()));
        ms::bf16_to_f32_n(s, ref.data(), back.data(), int64_t(f.size()));
        ASSERT_EQ(0, std::memcmp(back.data(), back_ref.data(), back.size() * 4));
    }
}

}  // namespace
