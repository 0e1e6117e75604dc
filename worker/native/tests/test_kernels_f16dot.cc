// The fp16-activation kernels (vfmadd231ph) against their scalar references, against the fp32-activation kernels, and
// batch invariance; the scaled fp16 conversion of activation rows (range, non-finite fallback).
//
// Tolerances (see cpu/matmul_f16dot.h):
// - vs the scalar reference (the same fp16 inputs, products summed in double): each fp16 lane sums at most 32
//   products, each product and each addition rounded to 11 significant bits, so a lane's 32-term sum is off by at most
//   33 * 2^-11 times the sum of its terms' magnitudes (the classic n * u bound, n = 32 additions + 1 product rounding);
//   over the whole dot product the error is at most 33 * 2^-11 * sum_k |x_k w_k| (kWorstCase), plus fp32 rounding of
//   the folds. The tests also bound the RMS error over all outputs by 2^-9 * RMS(sum_k |x_k w_k|): rounding errors of
//   independent terms grow like the square root of their count (sqrt(33) * 2^-12 < 2^-9), which catches a kernel that
//   is systematically worse than fp16 arithmetic while staying under the worst case.
// - vs the fp32-activation kernels: the activations are rounded to fp16 (2^-11 relative each), the dense weights are
//   exact except those below 2^-18 of their row's largest (zero here: the generated rows have no such spread), MXFP4
//   weights exact: kWorstCase + 2^-11 (the input rounding).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_f16dot.h"
#include "cpu/matmul_mxfp4.h"
#include "kernel_test_util.h"

namespace {

constexpr double kWorstCase = 33.0 / 2048;
constexpr double kRms = 1.0 / 512;

bool fast_available() { return ms::f16_dot_supported() && ms::simd_supported(ms::Simd::Avx512); }

using ms_test::randn;

// Activation rows scaled to fp16 (scalar conversion), plus the values they stand for as fp32.
struct F16Rows {
    std::vector<uint16_t> h;
    std::vector<float> scale, value;
};
F16Rows to_f16_rows(const std::vector<float> &x, int n_tok, int K) {
    F16Rows r;
    r.h.resize(x.size());
    r.scale.resize(n_tok);
    r.value.resize(x.size());
    for (int t = 0; t < n_tok; ++t) {
        EXPECT_TRUE(ms::f32_to_f16_row_scaled(ms::Simd::Scalar, x.data() + size_t(t) * K, K, r.h.data() + size_t(t) * K, &r.scale[t]));
        for (int k = 0; k < K; ++k) r.value[size_t(t) * K + k] = ms::f16_to_f32(r.h[size_t(t) * K + k]) * r.scale[t];
    }
    return r;
}

double abs_dot(const float *x, const float *w, int K) {
    double s = 0;
    for (int k = 0; k < K; ++k) s += std::fabs(double(x[k]) * w[k]);
    return s;
}

// Compares out with ref element by element (worst-case bound) and in RMS; a = sum |x w| per element.
void expect_close(const std::vector<float> &out, const std::vector<float> &ref, const std::vector<double> &a, double worst,
                  const std::string &what) {
    double se = 0, sa = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        ASSERT_TRUE(std::isfinite(out[i])) << what << " i=" << i;
        ASSERT_NEAR(out[i], ref[i], worst * a[i] + 1e-5 * std::fabs(ref[i]) + 1e-30) << what << " i=" << i;
        se += (double(out[i]) - ref[i]) * (double(out[i]) - ref[i]);
        sa += a[i] * a[i];
    }
    EXPECT_LE(std::sqrt(se), kRms * std::sqrt(sa) + 1e-30) << what << " (RMS)";
}

TEST(KernelsF16Dot, ScalarConversionRoundsToNearestEven) {
    // Every finite fp16 survives the round trip, and the midpoint between two neighbours rounds to the even one.
    for (uint32_t h = 0; h < 0x10000; ++h) {
        if ((h & 0x7c00) == 0x7c00) continue;
        const float f = ms::f16_to_f32(uint16_t(h));
        ASSERT_EQ(ms::f32_to_f16(f), h) << std::hex << h;
        if ((h & 0x7fff) == 0x7bff) continue;
        const double mid = (double(f) + ms::f16_to_f32(uint16_t(h + 1))) / 2;  // exact in fp32 (12 bits)
        const uint16_t even = (h & 1) ? uint16_t(h + 1) : uint16_t(h);
        ASSERT_EQ(ms::f32_to_f16(float(mid)), even) << std::hex << h;
    }
    EXPECT_EQ(ms::f32_to_f16(65519.0f), 0x7bff);
    EXPECT_EQ(ms::f32_to_f16(65520.0f), 0x7c00);
    EXPECT_EQ(ms::f32_to_f16(std::ldexp(1.0f, -25)), 0);
    EXPECT_EQ(ms::f32_to_f16(std::ldexp(1.1f, -25)), 1);
    EXPECT_EQ(ms::f32_to_f16(-INFINITY), 0xfc00);
}

TEST(KernelsF16Dot, RowScalingKeepsValuesInRangeAndRefusesNonFinite) {
    std::mt19937 rng(1);
    for (float mag : {1e-20f, 1e-3f, 1.0f, 3e4f, 1e6f, 1e30f})
        for (int n : {1, 15, 16, 33, 2880}) {
            auto x = randn(n, rng, mag);
            std::vector<uint16_t> a(n), b(n);
            float sa = 0, sb = 0;
            ASSERT_TRUE(ms::f32_to_f16_row_scaled(ms::Simd::Scalar, x.data(), n, a.data(), &sa));
            float mx = 0;
            for (int i = 0; i < n; ++i) {
                const float v = ms::f16_to_f32(a[i]);
                ASSERT_TRUE(std::isfinite(v));
                mx = std::max(mx, std::fabs(v));
                // 2^-11 relative for normal fp16, 2^-25 absolute (of the scaled row, max >= 16) for subnormal ones.
                ASSERT_NEAR(v * sa, x[i], std::fabs(x[i]) / 2048 + std::ldexp(sa, -25)) << mag << " " << i;
            }
            EXPECT_GE(mx, 16.0f);
            EXPECT_LE(mx, 32.0f);
            EXPECT_EQ(sa, std::exp2(std::round(std::log2(sa))));  // a power of two
            if (fast_available()) {
                ASSERT_TRUE(ms::f32_to_f16_row_scaled(ms::Simd::Avx512, x.data(), n, b.data(), &sb));
                EXPECT_EQ(sa, sb);
                EXPECT_EQ(a, b);
            }
        }
    // All zero, or below 2^-122: unscaled, all zeros.
    for (float tiny : {0.0f, 1e-37f}) {
        std::vector<float> z(40, tiny);
        std::vector<uint16_t> h(40, 1);
        float s = 0;
        ASSERT_TRUE(ms::f32_to_f16_row_scaled(ms::Simd::Scalar, z.data(), 40, h.data(), &s));
        EXPECT_EQ(s, 1.0f);
        EXPECT_EQ(h, std::vector<uint16_t>(40, 0));
    }
    std::vector<uint16_t> h(40);
    float s = 0;
    for (float bad : {INFINITY, -INFINITY, NAN})
        for (ms::Simd simd : {ms::Simd::Scalar, ms::Simd::Avx512}) {
            if (simd == ms::Simd::Avx512 && !fast_available()) continue;
            std::vector<float> x(37, 1.0f);
            x[35] = bad;  // in the masked tail of the SIMD loop
            EXPECT_FALSE(ms::f32_to_f16_row_scaled(simd, x.data(), 37, h.data(), &s)) << bad;
            x[35] = 1.0f;
            x[3] = bad;
            EXPECT_FALSE(ms::f32_to_f16_row_scaled(simd, x.data(), 37, h.data(), &s)) << bad;
        }
}

TEST(KernelsF16Dot, PlainConversionMatchesScalar) {
    std::mt19937 rng(2);
    auto x = randn(1000, rng, 300.0f);
    x[5] = 1e6f;   // inf in fp16
    x[6] = 1e-7f;  // subnormal
    std::vector<uint16_t> a(x.size()), b(x.size());
    ms::f32_to_f16_n(ms::Simd::Scalar, x.data(), a.data(), int64_t(x.size()));
    ms::f32_to_f16_n(ms::Simd::Avx512, x.data(), b.data(), int64_t(x.size()));  // scalar where AVX-512 is missing
    EXPECT_EQ(a, b);
    EXPECT_EQ(a[5], 0x7c00);
}

std::vector<uint16_t> to_bf16(const std::vector<float> &x) {
    std::vector<uint16_t> out(x.size());
    ms::f32_to_bf16_n(ms::Simd::Scalar, x.data(), out.data(), int64_t(x.size()));
    return out;
}

// Dense weights with rows of very different magnitudes (1e-6 .. 1e4) and one outlier per row (30x the row's spread).
std::vector<float> dense_weights(int N, int K, std::mt19937 &rng) {
    std::vector<float> w(size_t(N) * K);
    const float mags[] = {0.05f, 1e-6f, 1e4f, 1.0f, 3e-3f};
    for (int r = 0; r < N; ++r) {
        auto row = randn(K, rng, mags[r % 5]);
        row[size_t(rng() % K)] = 30 * mags[r % 5];
        std::copy(row.begin(), row.end(), w.begin() + size_t(r) * K);
    }
    return w;
}

TEST(KernelsF16Dot, ScalarReferencesMatchExactProducts) {
    // The references against a double-precision product of the very values they stand for (fp16 activations times
    // their scale, bf16 / MXFP4 weights): only the dense weights' flush (below 2^-18 of the row's largest) differs.
    std::mt19937 rng(3);
    const int N = 10, K = 200, T = 3;
    auto wf = dense_weights(N, K, rng);
    auto w = to_bf16(wf);
    auto x = randn(size_t(T) * K, rng, 40.0f);
    F16Rows xr = to_f16_rows(x, T, K);
    auto bias = randn(N, rng);
    std::vector<float> out(size_t(T) * N);
    ms::matmul_bf16_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), T, K, w.data(), bias.data(), K, 0, N, out.data(), N);
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double s = bias[r], a = 0, wmax = 0;
            for (int k = 0; k < K; ++k) wmax = std::max(wmax, std::fabs(double(ms::bf16_to_f32(w[r * K + k]))));
            for (int k = 0; k < K; ++k) {
                const double p = double(xr.value[t * K + k]) * ms::bf16_to_f32(w[r * K + k]);
                s += p;
                a += std::fabs(p);
            }
            ASSERT_NEAR(out[t * N + r], s, 1e-6 * a + std::ldexp(wmax, -18) * K * 40 * 4) << t << " " << r;
        }
}

TEST(KernelsF16Dot, DenseMatchesScalarReferenceAndFp32) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-FP16 on this CPU";
    std::mt19937 rng(4);
    // K: below one vector, tails, exactly one fold (1024), several folds with a tail (3000).
    for (int K : {16, 40, 200, 1024, 2880, 3000}) {
        const int N = 13;  // 3 blocks of 4 rows and a tail row
        auto w = to_bf16(dense_weights(N, K, rng));
        std::vector<float> wf(w.size());
        for (size_t i = 0; i < w.size(); ++i) wf[i] = ms::bf16_to_f32(w[i]);
        auto bias = randn(N, rng);
        for (int n_tok : {1, 2, 5, 6, 7, 8, 13, 32}) {
            for (bool with_bias : {true, false}) {
                // Activation rows of different magnitudes, one of them beyond fp16's range unscaled.
                std::vector<float> x = randn(size_t(n_tok) * K, rng);
                for (int t = 0; t < n_tok; ++t)
                    for (int k = 0; k < K; ++k) x[size_t(t) * K + k] *= t % 3 == 0 ? 1e5f : t % 3 == 1 ? 1e-4f : 2.0f;
                F16Rows xr = to_f16_rows(x, n_tok, K);
                const float *b = with_bias ? bias.data() : nullptr;
                std::vector<float> ref(size_t(n_tok) * N), f32(ref.size()), out(ref.size(), NAN);
                std::vector<double> a(ref.size());
                ms::matmul_bf16_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), n_tok, K, w.data(), b, K, 0, N, ref.data(), N);
                ms::matmul_bf16_rows(ms::Simd::Scalar, x.data(), n_tok, K, w.data(), b, K, 0, N, f32.data(), N);
                // Two row ranges, as two threads would split them (the first not a multiple of 4).
                ms::matmul_bf16_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), n_tok, K, w.data(), b, K, 0, 6, out.data(), N);
                ms::matmul_bf16_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), n_tok, K, w.data(), b, K, 6, N, out.data(), N);
                for (int t = 0; t < n_tok; ++t)
                    for (int r = 0; r < N; ++r) a[t * N + r] = abs_dot(x.data() + t * K, wf.data() + r * K, K);
                const std::string what = "K=" + std::to_string(K) + " n_tok=" + std::to_string(n_tok);
                expect_close(out, ref, a, kWorstCase, what + " vs reference");
                expect_close(out, f32, a, kWorstCase + 1.0 / 2048, what + " vs fp32");
            }
        }
    }
}

using Mxfp4 = ms_test::Mxfp4Natural;

// Random blocks; scales around 2^0 except row 1, whose blocks span 2^-100 .. 2^+20 (block exponents far below the
// row's largest: the kernels' tables end at 2^-40 below it, smaller blocks count as zero).
Mxfp4 random_mxfp4(int N, int K, std::mt19937 &rng) {
    return ms_test::random_mxfp4_natural(N, K, rng, [&](size_t i) {
        const bool wide = int(i / (K / 32)) == 1;
        return uint8_t(wide ? 27 + rng() % 121 : 118 + rng() % 12);
    });
}

TEST(KernelsF16Dot, Mxfp4ScalarReferenceMatchesDequantisedProduct) {
    std::mt19937 rng(5);
    const int N = 7, K = 96, T = 3;
    Mxfp4 c = random_mxfp4(N, K, rng);
    auto x = randn(size_t(T) * K, rng, 7.0f);
    F16Rows xr = to_f16_rows(x, T, K);
    auto bias = randn(N, rng);
    std::vector<float> out(size_t(T) * N);
    ms::matmul_mxfp4_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0,
                               N, out.data(), N);
    for (int t = 0; t < T; ++t)
        for (int r = 0; r < N; ++r) {
            double s = bias[r], a = 0, wmax = 0;
            for (int k = 0; k < K; ++k) {
                const double p = double(xr.value[t * K + k]) * c.dense[size_t(r) * K + k];
                s += p;
                a += std::fabs(p);
                wmax = std::max(wmax, std::fabs(double(c.dense[size_t(r) * K + k])));
            }
            // Blocks more than 2^-40 below the row's largest are dropped: at most K * 6 * 2^-41 of it per |x|.
            ASSERT_NEAR(out[t * N + r], s, 1e-6 * a + std::ldexp(wmax, -38) * K * 7 * 4 + 1e-6 * std::fabs(bias[r])) << t << " " << r;
        }
}

TEST(KernelsF16Dot, Mxfp4MatchesScalarReferenceAndFp32) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-FP16 on this CPU";
    std::mt19937 rng(6);
    for (int K : {32, 96, 1024, 2880}) {
        const int N = 11;
        Mxfp4 c = random_mxfp4(N, K, rng);
        auto bias = randn(N, rng);
        for (int T : {1, 3, 4, 6, 8, 9, 17, 32}) {
            std::vector<float> x = randn(size_t(T) * K, rng, 3.0f);
            x[0] = 9e4f;  // beyond fp16's range unscaled
            F16Rows xr = to_f16_rows(x, T, K);
            std::vector<float> xs(x.size());
            for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + t * K, K, xs.data() + t * K);
            std::vector<float> ref(size_t(T) * N), f32(ref.size()), out(ref.size(), NAN);
            std::vector<double> a(ref.size());
            ms::matmul_mxfp4_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(),
                                       K, 0, N, ref.data(), N);
            ms::matmul_mxfp4_rows(ms::Simd::Scalar, xs.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(), K, 0, N, f32.data(), N);
            ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(),
                                       K, 0, 5, out.data(), N);
            ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(),
                                       K, 5, N, out.data(), N);
            for (int t = 0; t < T; ++t)
                for (int r = 0; r < N; ++r) a[t * N + r] = abs_dot(x.data() + t * K, c.dense.data() + r * K, K);
            const std::string what = "K=" + std::to_string(K) + " T=" + std::to_string(T);
            expect_close(out, ref, a, kWorstCase, what + " vs reference");
            expect_close(out, f32, a, kWorstCase + 1.0 / 2048, what + " vs fp32");
        }
    }
}

TEST(KernelsF16Dot, ResultDoesNotDependOnTokenCountOrRowRange) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-FP16 on this CPU";
    std::mt19937 rng(7);
    const int K = 2080, N = 10, T = 13;  // K: two folds and a tail
    auto x = randn(size_t(T) * K, rng);
    F16Rows xr = to_f16_rows(x, T, K);
    auto w = to_bf16(randn(size_t(N) * K, rng, 0.1f));
    Mxfp4 c = random_mxfp4(N, K, rng);
    std::vector<float> all(size_t(T) * N), one(N), mx_all(size_t(T) * N), mx_one(N);
    ms::matmul_bf16_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, w.data(), nullptr, K, 0, N, all.data(), N);
    ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), nullptr, K, 0, N,
                               mx_all.data(), N);
    for (int t = 0; t < T; ++t) {
        for (int r = 0; r < N; ++r) {
            ms::matmul_bf16_f16x_rows(ms::Simd::Avx512, xr.h.data() + t * K, &xr.scale[t], 1, K, w.data(), nullptr, K, r, r + 1, one.data(), N);
            ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data() + t * K, &xr.scale[t], 1, K, c.blocks.data(), c.scales.data(), nullptr,
                                       K, r, r + 1, mx_one.data(), N);
        }
        for (int r = 0; r < N; ++r) {
            ASSERT_EQ(one[r], all[t * N + r]) << "dense t=" << t << " r=" << r;
            ASSERT_EQ(mx_one[r], mx_all[t * N + r]) << "mxfp4 t=" << t << " r=" << r;
        }
    }
}

// Dense weights converted once (f16_dense_convert, what the model does when fp16 is on) give bit for bit what the
// per-call conversion gives: the same fp16 rows and factors, the same tiles. Scalar and AVX-512 conversions agree,
// the padding is zeros, and the converted scalar reference equals the bf16 one.
TEST(KernelsF16Dot, ConvertedDenseEqualsPerCallConversion) {
    std::mt19937 rng(8);
    for (int K : {16, 40, 1024, 2080}) {
        const int N = 13;
        const int64_t ld = ms::f16_dense_stride(K);
        ASSERT_GE(ld, (K + 31) / 32 * 32);
        auto w = to_bf16(dense_weights(N, K, rng));
        w[3] = 0x0001;  // a bf16 subnormal: flushed like everything below 2^-18 of the row's largest
        std::vector<uint16_t> w16s(size_t(N) * ld, 0xffff), w16v(size_t(N) * ld, 0xffff);
        std::vector<float> fs(N), fv(N);
        ms::f16_dense_convert(ms::Simd::Scalar, w.data(), K, 0, N, w16s.data(), fs.data());
        ms::f16_dense_convert(ms::Simd::Avx512, w.data(), K, 0, 7, w16v.data(), fv.data());  // scalar without AVX-512
        ms::f16_dense_convert(ms::Simd::Avx512, w.data(), K, 7, N, w16v.data(), fv.data());
        ASSERT_EQ(w16s, w16v) << "K=" << K;
        ASSERT_EQ(fs, fv) << "K=" << K;
        for (int r = 0; r < N; ++r)
            for (int64_t k = K; k < ld; ++k) ASSERT_EQ(w16s[r * ld + k], 0) << "padding r=" << r << " k=" << k;
        auto bias = randn(N, rng);
        for (int n_tok : {1, 5, 6, 7, 13, 32}) {
            std::vector<float> x = randn(size_t(n_tok) * K, rng, 4.0f);
            F16Rows xr = to_f16_rows(x, n_tok, K);
            for (bool with_bias : {true, false}) {
                const float *b = with_bias ? bias.data() : nullptr;
                const std::string what = "K=" + std::to_string(K) + " n_tok=" + std::to_string(n_tok);
                std::vector<float> ref(size_t(n_tok) * N), ref16(ref.size(), NAN);
                ms::matmul_bf16_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), n_tok, K, w.data(), b, K, 0, N, ref.data(), N);
                ms::matmul_f16w_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), n_tok, K, w16s.data(), fs.data(), b, K, 0, N,
                                          ref16.data(), N);
                ASSERT_EQ(ref, ref16) << what << " scalar";
                if (!fast_available()) continue;
                std::vector<float> out(ref.size(), NAN), out16(ref.size(), NAN);
                ms::matmul_bf16_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), n_tok, K, w.data(), b, K, 0, N, out.data(), N);
                // Row ranges as threads would split them: not multiples of the kernel's 8-row blocks.
                for (auto [r0, r1] : {std::pair{0, 6}, std::pair{6, 11}, std::pair{11, N}})
                    ms::matmul_f16w_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), n_tok, K, w16v.data(), fv.data(), b, K, r0,
                                              r1, out16.data(), N);
                ASSERT_EQ(out, out16) << what;
            }
        }
    }
}

// The MXFP4 kernel decodes inside the token tile for calls of up to 12 tokens (4 rows x 1-6 tokens, 3 x 7-8, 2 x
// 9-12, in the decode's shuffled element order) and into scratch for more (natural order): all of them give a token
// the same bits, whichever of them its call takes and whatever rows the call covers. Row 1 of random_mxfp4 has
// blocks far below its largest (the word tables), the others do not (the high-byte tables).
TEST(KernelsF16Dot, Mxfp4TileDecodeAndScratchDecodeAgree) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-FP16 on this CPU";
    std::mt19937 rng(9);
    for (int K : {32, 1024, 2080}) {
        const int N = 11, T = 14;
        Mxfp4 c = random_mxfp4(N, K, rng);
        auto bias = randn(N, rng);
        auto x = randn(size_t(T) * K, rng, 2.0f);
        F16Rows xr = to_f16_rows(x, T, K);
        std::vector<float> all(size_t(T) * N, NAN);
        ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), bias.data(),
                                   K, 0, N, all.data(), N);
        for (int n : {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}) {
            for (int t0 = 0; t0 + n <= T; t0 += n) {
                std::vector<float> part(size_t(n) * N, NAN);
                ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data() + size_t(t0) * K, xr.scale.data() + t0, n, K, c.blocks.data(),
                                           c.scales.data(), bias.data(), K, 0, 3, part.data(), N);
                ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data() + size_t(t0) * K, xr.scale.data() + t0, n, K, c.blocks.data(),
                                           c.scales.data(), bias.data(), K, 3, N, part.data(), N);
                for (int t = 0; t < n; ++t)
                    for (int r = 0; r < N; ++r)
                        ASSERT_EQ(part[size_t(t) * N + r], all[size_t(t0 + t) * N + r]) << "K=" << K << " n=" << n << " t=" << t0 + t << " r=" << r;
            }
        }
    }
}

// The in-tile decode looks up only the high bytes of the fp16 weights for rows whose blocks all lie within 17
// binades of the row's largest (the low bytes are then 0) and the full words otherwise. Rows whose spread is exactly
// 17 and 18 (the last on the byte tables, the first off them), with the extreme blocks' weights at their largest and
// smallest magnitudes, so a wrong byte table (or a wrong threshold) changes the products: the result must match the
// scalar reference (the worst-case bound) and, bit for bit, the scratch path (13 tokens), which decodes through the
// word tables in natural element order.
TEST(KernelsF16Dot, Mxfp4ByteTablesAtTheirSpreadLimit) {
    if (!fast_available()) GTEST_SKIP() << "no AVX512-FP16 on this CPU";
    std::mt19937 rng(10);
    const int K = 1024, N = 8, nb = K / 32;
    for (int spread : {17, 18}) {
        Mxfp4 c = ms_test::random_mxfp4_natural(N, K, rng, [&](size_t i) {
            const int b = int(i % nb);
            return uint8_t(b == 0 ? 127 : b == 1 ? 127 - spread : 127 - int(rng() % (spread + 1)));
        });
        for (int r = 0; r < N; ++r) {
            uint8_t *blk = c.blocks.data() + size_t(r) * K / 2;
            for (int j = 0; j < 16; ++j) blk[16 + j] = uint8_t(0x17 + (j % 2) * 0x80);  // block 1: 6, 0.5, 6, -0.5, ...
            for (int k = 32; k < 64; ++k) {
                const int nib = (k % 2 == 0) ? (blk[k / 2] & 15) : (blk[k / 2] >> 4);
                c.dense[size_t(r) * K + k] = ms::kE2M1[nib] * std::ldexp(1.0f, int(c.scales[size_t(r) * nb + 1]) - 127);
            }
        }
        const int T = 13;
        auto x = randn(size_t(T) * K, rng, 2.0f);
        F16Rows xr = to_f16_rows(x, T, K);
        std::vector<float> ref(size_t(T) * N), scratch(ref.size(), NAN);
        std::vector<double> a(ref.size());
        ms::matmul_mxfp4_f16x_rows(ms::Simd::Scalar, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), nullptr, K, 0,
                                   N, ref.data(), N);
        ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), T, K, c.blocks.data(), c.scales.data(), nullptr, K, 0,
                                   N, scratch.data(), N);
        for (int t = 0; t < T; ++t)
            for (int r = 0; r < N; ++r) a[t * N + r] = abs_dot(x.data() + t * K, c.dense.data() + r * K, K);
        expect_close(scratch, ref, a, kWorstCase, "spread " + std::to_string(spread) + " scratch vs reference");
        for (int n : {1, 4, 7, 12}) {
            std::vector<float> out(size_t(n) * N, NAN);
            ms::matmul_mxfp4_f16x_rows(ms::Simd::Avx512, xr.h.data(), xr.scale.data(), n, K, c.blocks.data(), c.scales.data(), nullptr, K, 0,
                                       N, out.data(), N);
            for (int t = 0; t < n; ++t)
                for (int r = 0; r < N; ++r)
                    ASSERT_EQ(out[size_t(t) * N + r], scratch[size_t(t) * N + r]) << "spread " << spread << " n=" << n << " t=" << t << " r=" << r;
        }
    }
}

}  // namespace
