// The bf16-activation kernels (vdpbf16ps) against their scalar references on random inputs, against the fp32-activation
// kernels within the bf16 rounding bound, and batch invariance (a token's result does not depend on n_tok).
//
// Tolerances:
// - vdpbf16ps vs the scalar reference (same bf16 inputs, exact products, different fp32 summation order):
//   dot_tolerance below, a few ulps of sum |x_k w_k| times sqrt(K) — the bound the fp32 kernels' tests use.
// - vs the fp32-activation reference: each activation is rounded to bf16 (relative error <= 2^-8, half an ulp of 8
//   significant bits), so a result may move by up to 2^-8 * sum |x_k w_k|, plus the summation-order term.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_bf16dot.h"
#include "cpu/matmul_mxfp4.h"
#include "kernel_test_util.h"

namespace {

using ms_test::randn;

std::vector<uint16_t> to_bf16(const std::vector<float> &x) {
    std::vector<uint16_t> out(x.size());
    ms::f32_to_bf16_n(ms::Simd::Scalar, x.data(), out.data(), int64_t(x.size()));
    return out;
}

double abs_dot(const float *x, const float *w, int K) {
    double s = 0;
    for (int k = 0; k < K; ++k) s += std::fabs(double(x[k]) * w[k]);
    return s;
}
float dot_tolerance(double abs_sum, int K) { return float(2e-6 * abs_sum * std::sqrt(double(K)) + 1e-6); }
float rounding_tolerance(double abs_sum, int K) { return float(abs_sum / 256.0) + dot_tolerance(abs_sum, K); }

bool fast_available() { return ms::bf16_dot_supported(); }

TEST(KernelsBf16Dot, DenseMatchesScalarReferenceAndFp32WithinRounding) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
    std::mt19937 rng(11);
    for (int K : {16, 64, 200, 1024, 2880}) {
        const int N = 13;  // 3 blocks of 4 rows and a tail row
        auto wf = randn(size_t(N) * K, rng, 0.05f);
        auto w = to_bf16(wf);
        for (size_t i = 0; i < w.size(); ++i) wf[i] = ms::bf16_to_f32(w[i]);
        auto bias = randn(N, rng);
        for (int n_tok : {1, 2, 5, 6, 7, 13, 32}) {
            auto x = randn(size_t(n_tok) * K, rng);
            auto xb = to_bf16(x);
            std::vector<float> xr(x.size());  // the bf16 activations as fp32
            for (size_t i = 0; i < x.size(); ++i) xr[i] = ms::bf16_to_f32(xb[i]);
            std::vector<float> ref(size_t(n_tok) * N), f32(ref.size()), out(ref.size(), NAN);
            ms::matmul_bf16_bf16x_rows(ms::Simd::Scalar, xb.data(), n_tok, K, w.data(), bias.data(), K, 0, N, ref.data(), N);
            ms::matmul_bf16_rows(ms::Simd::Scalar, x.data(), n_tok, K, w.data(), bias.data(), K, 0, N, f32.data(), N);
            // Two row ranges, as two threads would split them (the first not a multiple of 4).
            ms::matmul_bf16_bf16x_rows(ms::Simd::Avx512, xb.data(), n_tok, K, w.data(), bias.data(), K, 0, 6, out.data(), N);
            ms::matmul_bf16_bf16x_rows(ms::Simd::Avx512, xb.data(), n_tok, K, w.data(), bias.data(), K, 6, N, out.data(), N);
            for (int t = 0; t < n_tok; ++t)
                for (int r = 0; r < N; ++r) {
                    const double a = abs_dot(xr.data() + t * K, wf.data() + r * K, K);
                    ASSERT_NEAR(out[t * N + r], ref[t * N + r], dot_tolerance(a, K)) << "K=" << K << " n_tok=" << n_tok << " t=" << t << " r=" << r;
                    ASSERT_NEAR(out[t * N + r], f32[t * N + r], rounding_tolerance(a, K)) << "K=" << K << " n_tok=" << n_tok;
                }
        }
    }
}

using Mxfp4 = ms_test::Mxfp4Natural;

Mxfp4 random_mxfp4(int N, int K, std::mt19937 &rng) {
    return ms_test::random_mxfp4_natural(N, K, rng, [&](size_t i) {
        const bool wide = int(i / (K / 32)) == 1;
        return uint8_t(wide ? 27 + rng() % 121 : 118 + rng() % 12);
    });
}

TEST(KernelsBf16Dot, Mxfp4ScalarReferenceMatchesDequantisedProduct) {
    std::mt19937 rng(12);
    const int N = 7, K = 96, T = 3;
    Mxfp4 c = random_mxfp4(N, K, rng);
    auto xb = to_bf16(randn(size_t(T) * K, rng));
    auto bias = randn(N, rng);
    std::vector<float> out(size_t(T) * N);
    ms::matmul_mxfp4_bf16x_rows(ms::Simd::Scalar, xb.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, out.data(), N);
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double s = bias[r], a = 0;
            for (int k = 0; k < K; ++k) {
                const double p = double(ms::bf16_to_f32(xb[t * K + k])) * c.dense[size_t(r) * K + k];
                s += p;
                a += std::fabs(p);
            }
            ASSERT_NEAR(out[t * N + r], s, dot_tolerance(a, K)) << "t=" << t << " r=" << r;
        }
}

TEST(KernelsBf16Dot, Mxfp4MatchesScalarReferenceAndFp32WithinRounding) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
    std::mt19937 rng(13);
    for (int K : {32, 96, 1024, 2880}) {
        const int N = 11;
        Mxfp4 c = random_mxfp4(N, K, rng);
        auto bias = randn(N, rng);
        for (int T : {1, 3, 6, 8, 9, 17}) {
            auto x = randn(size_t(T) * K, rng);
            auto xb = to_bf16(x);
            std::vector<float> xr(x.size()), xs(x.size());
            for (size_t i = 0; i < x.size(); ++i) xr[i] = ms::bf16_to_f32(xb[i]);
            for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + t * K, K, xs.data() + t * K);
            std::vector<float> ref(size_t(T) * N), f32(ref.size()), out(ref.size(), NAN);
            ms::matmul_mxfp4_bf16x_rows(ms::Simd::Scalar, xb.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, ref.data(), N);
            ms::matmul_mxfp4_rows(ms::Simd::Scalar, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, f32.data(), N);
            ms::matmul_mxfp4_bf16x_rows(ms::Simd::Avx512, xb.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, 5, out.data(), N);
            ms::matmul_mxfp4_bf16x_rows(ms::Simd::Avx512, xb.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 5, N, out.data(), N);
            for (int t = 0; t < T; ++t)
                for (int r = 0; r < N; ++r) {
                    const double a = abs_dot(xr.data() + t * K, c.dense.data() + r * K, K);
                    ASSERT_NEAR(out[t * N + r], ref[t * N + r], dot_tolerance(a, K)) << "K=" << K << " T=" << T << " t=" << t << " r=" << r;
                    ASSERT_NEAR(out[t * N + r], f32[t * N + r], rounding_tolerance(a, K)) << "K=" << K << " T=" << T;
                }
        }
    }
}

TEST(KernelsBf16Dot, ResultDoesNotDependOnTokenCountOrRowRange) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
    std::mt19937 rng(14);
    const int K = 160, N = 10, T = 13;
    auto xb = to_bf16(randn(size_t(T) * K, rng));
    auto w = to_bf16(randn(size_t(N) * K, rng, 0.1f));
    Mxfp4 c = random_mxfp4(N, K, rng);
    std::vector<float> all(size_t(T) * N), one(N), mx_all(size_t(T) * N), mx_one(N);
    ms::matmul_bf16_bf16x_rows(ms::Simd::Avx512, xb.data(), T, K, w.data(), nullptr, K, 0, N, all.data(), N);
    ms::matmul_mxfp4_bf16x_rows(ms::Simd::Avx512, xb.data(), T, K, c.blocks.data(), c.scales.data(), nullptr, K, 0, N, mx_all.data(), N);
    for (int t = 0; t < T; ++t) {
        // One token, rows one at a time (a different row grouping than the 4-row blocks of the batched call).
        for (int r = 0; r < N; ++r) {
            ms::matmul_bf16_bf16x_rows(ms::Simd::Avx512, xb.data() + t * K, 1, K, w.data(), nullptr, K, r, r + 1, one.data(), N);
            ms::matmul_mxfp4_bf16x_rows(ms::Simd::Avx512, xb.data() + t * K, 1, K, c.blocks.data(), c.scales.data(), nullptr, K, r,
                                        r + 1, mx_one.data(), N);
        }
        for (int r = 0; r < N; ++r) {
            ASSERT_EQ(one[r], all[t * N + r]) << "dense t=" << t << " r=" << r;
            ASSERT_EQ(mx_one[r], mx_all[t * N + r]) << "mxfp4 t=" << t << " r=" << r;
        }
    }
}

}  // namespace

#include "cpu/aligned_vector.h"

namespace {

TEST(KernelsAlignedVector, StorageIsCacheLineAligned) {
    // Odd sizes and repeated growth: every reallocation must stay 64-byte aligned (the kernels' loads rely on it for speed).
    ms::AlignedVector<float> v;
    for (size_t n : {size_t(1), size_t(17), size_t(1000), size_t(70000), size_t(300001)}) {
        v.resize(n);
        EXPECT_EQ(reinterpret_cast<uintptr_t>(v.data()) % 64, 0u) << n;
    }
    ms::AlignedVector<uint16_t> b(12345);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b.data()) % 64, 0u);
}

}  // namespace
