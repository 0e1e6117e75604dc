// Quantized and float GGUF-weight kernels: fp16 conversion against the hardware converter, activation quantization
// (scalar and SIMD give the same bytes), and every weight type's scalar kernel against a double-precision product of
// the dequantized operands, and every SIMD level against the scalar kernel, on random inputs.
#include <gtest/gtest.h>

#include <immintrin.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/quant_matmul.h"

namespace {

using ms::Simd;
using ms::WeightType;

std::vector<Simd> simd_levels() {
    std::vector<Simd> v;
    for (Simd s : {Simd::Avx2, Simd::Avx512})
        if (ms::simd_supported(s)) v.push_back(s);
    return v;
}

__attribute__((target("f16c"))) uint16_t hw_to_half(float f) { return _cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT); }
__attribute__((target("f16c"))) float hw_from_half(uint16_t h) { return _cvtsh_ss(h); }

TEST(QuantFp16, EveryHalfConvertsExactlyAndRoundTrips) {
    if (!ms::simd_supported(Simd::Avx2)) GTEST_SKIP() << "no F16C to compare with";
    for (uint32_t h = 0; h < 65536; ++h) {
        const float f = ms::fp16_to_f32(uint16_t(h));
        const float hw = hw_from_half(uint16_t(h));
        if (std::isnan(hw)) {
            ASSERT_TRUE(std::isnan(f)) << h;
            continue;
        }
        ASSERT_EQ(std::memcmp(&f, &hw, 4), 0) << "half " << h;
        ASSERT_EQ(ms::f32_to_fp16(f), uint16_t(h)) << "half " << h;
    }
}

TEST(QuantFp16, FloatToHalfRoundsLikeTheHardware) {
    if (!ms::simd_supported(Simd::Avx2)) GTEST_SKIP() << "no F16C to compare with";
    std::mt19937 rng(7);
    for (int i = 0; i < 2000000; ++i) {
        uint32_t bits = rng();
        float f;
        std::memcpy(&f, &bits, 4);
        if (std::isnan(f)) continue;
        ASSERT_EQ(ms::f32_to_fp16(f), hw_to_half(f)) << "bits " << bits;
    }
}

// Weight rows quantized the straightforward way (the kernels only read them, so any valid blocks do).
std::vector<uint8_t> make_weights(WeightType t, int rows, int K, std::mt19937 &rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_int_distribution<int> q4(0, 15), q8(-128, 127);
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<uint8_t> w(size_t(rows * rb));
    auto put16 = [](uint8_t *p, uint16_t v) { std::memcpy(p, &v, 2); };
    for (int r = 0; r < rows; ++r) {
        uint8_t *row = w.data() + r * rb;
        for (int k = 0; k < K; ++k) {
            switch (t) {
                case WeightType::F32: {
                    float f = nd(rng);
                    std::memcpy(row + 4 * k, &f, 4);
                    break;
                }
                case WeightType::F16: put16(row + 2 * k, ms::f32_to_fp16(nd(rng))); break;
                case WeightType::BF16: put16(row + 2 * k, ms::f32_to_bf16(nd(rng))); break;
                default: break;
            }
        }
        for (int b = 0; b < K / 32 && ms::weight_type_quantized(t); ++b) {
            const float scale = 0.01f + 0.05f * std::fabs(nd(rng));
            if (t == WeightType::Q4_0) {
                uint8_t *blk = row + b * 18;
                put16(blk, ms::f32_to_fp16(scale));
                for (int j = 0; j < 16; ++j) blk[2 + j] = uint8_t(q4(rng) | q4(rng) << 4);
            } else if (t == WeightType::Q4_1) {
                uint8_t *blk = row + b * 20;
                put16(blk, ms::f32_to_fp16(scale));
                put16(blk + 2, ms::f32_to_fp16(-8 * scale + 0.1f * nd(rng)));
                for (int j = 0; j < 16; ++j) blk[4 + j] = uint8_t(q4(rng) | q4(rng) << 4);
            } else {
                uint8_t *blk = row + b * 34;
                put16(blk, ms::f32_to_fp16(scale / 16));
                for (int j = 0; j < 32; ++j) blk[2 + j] = uint8_t(int8_t(q8(rng)));  // -128 included on purpose
            }
        }
    }
    return w;
}

struct Acts {
    std::vector<float> x;
    std::vector<int8_t> qs;
    std::vector<float> d, s;
    std::vector<int32_t> sum;
    ms::Q8Rows q;
    Acts(int n, int K, std::mt19937 &rng) : x(size_t(n) * K), qs(size_t(n) * K), d(size_t(n) * K / 32), s(d.size()), sum(d.size()) {
        std::normal_distribution<float> nd(0.0f, 1.0f);
        for (float &v : x) v = nd(rng) * 3.0f;
        for (int k = 0; k < 32 && n > 0; ++k) x[k] = 0.0f;  // an all-zero block: scale 0
        q = {qs.data(), d.data(), s.data(), sum.data(), K};
        ms::quantize_rows_q8(Simd::Scalar, x.data(), K, 0, n, q);
    }
};

TEST(QuantActivations, SimdQuantizationMatchesScalarBitForBit) {
    std::mt19937 rng(1);
    const int n = 7, K = 576;
    Acts a(n, K, rng);
    for (Simd s : simd_levels()) {
        std::vector<int8_t> qs(a.qs.size());
        std::vector<float> d(a.d.size()), sv(a.s.size());
        std::vector<int32_t> sum(a.sum.size());
        ms::Q8Rows q{qs.data(), d.data(), sv.data(), sum.data(), K};
        ms::quantize_rows_q8(s, a.x.data(), K, 0, n, q);
        EXPECT_EQ(qs, a.qs) << ms::simd_name(s);
        EXPECT_EQ(d, a.d) << ms::simd_name(s);
        EXPECT_EQ(sv, a.s) << ms::simd_name(s);
        EXPECT_EQ(sum, a.sum) << ms::simd_name(s);
    }
    // The quantized values reconstruct the input within half a step per element.
    for (int t = 0; t < n; ++t)
        for (int k = 0; k < K; ++k) {
            const int64_t b = (int64_t(t) * K + k) / 32;
            EXPECT_NEAR(a.qs[size_t(t) * K + k] * a.d[b], a.x[size_t(t) * K + k], a.d[b] * 0.51 + 1e-3 * a.d[b] * 127);
        }
}

class QuantMatmul : public ::testing::TestWithParam<WeightType> {};

TEST_P(QuantMatmul, ScalarMatchesDoublePrecisionAndSimdMatchesScalar) {
    const WeightType t = GetParam();
    std::mt19937 rng(int(t) + 11);
    // 96: an odd number of blocks exercises the one-block tail; 2400 (75 blocks): the AVX2 kernel's second chunk of
    // blocks (64 per chunk), with 8 blocks of vector scales and 3 of scalar ones.
    for (int K : {96, 576, 1536, 2400}) {
        const int rows = 37, n = 6;
        const std::vector<uint8_t> w = make_weights(t, rows, K, rng);
        Acts a(n, K, rng);
        const bool quant = ms::weight_type_quantized(t);
        // Reference: double-precision sums of dequantized weights times the activations the kernel sees.
        std::vector<double> ref(size_t(n) * rows);
        std::vector<float> wrow(K);
        for (int r = 0; r < rows; ++r) {
            ms::dequantize_row(t, w.data() + r * ms::weight_row_bytes(t, K), K, wrow.data());
            for (int tt = 0; tt < n; ++tt) {
                double acc = 0;
                for (int k = 0; k < K; ++k) {
                    const double xv = quant ? double(a.qs[size_t(tt) * K + k]) * a.d[(size_t(tt) * K + k) / 32]
                                            : double(a.x[size_t(tt) * K + k]);
                    acc += double(wrow[k]) * xv;
                }
                ref[size_t(tt) * rows + r] = acc;
            }
        }
        std::vector<float> y(size_t(n) * rows, NAN);
        ms::matmul_rows(Simd::Scalar, t, w.data(), K, a.x.data(), K, &a.q, n, 0, rows, y.data(), rows);
        double scale = 0;
        for (double v : ref) scale = std::max(scale, std::fabs(v));
        // The min term of Q4_1 uses s = fp16(d * sum q), as llama.cpp does: a relative error of 2^-11 of that term.
        const double tol = scale * (t == WeightType::Q4_1 ? 2e-3 : 1e-5);
        for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], ref[i], tol) << ms::weight_type_name(t) << " K=" << K << " i=" << i;
        for (Simd s : simd_levels()) {
            // At AVX-512 the AVX2 kernels run (the default), then on a VNNI CPU the VNNI ones (MS_QUANT_VNNI), their
            // 4-bit kernels twice: with VBMI nibble unpacking (when the CPU has it) and without.
            const int variants = s == Simd::Avx512 && ms::quant_vnni_available() ? 3 : 1;
            for (int variant = 0; variant < variants; ++variant)
            for (int n_tok : {1, 2, 3, 4, 5, 6}) {
                const bool vnni = variant > 0, no_vbmi = variant == 2;
                ms::set_quant_kernel_vnni(vnni);
                if (no_vbmi) setenv("MS_QUANT_NO_VBMI", "1", 1);
                else unsetenv("MS_QUANT_NO_VBMI");
                std::vector<float> ys(size_t(n_tok) * rows, NAN);
                // Two row ranges, as threads split them.
                ms::matmul_rows(s, t, w.data(), K, a.x.data(), K, &a.q, n_tok, 0, 13, ys.data(), rows);
                ms::matmul_rows(s, t, w.data(), K, a.x.data(), K, &a.q, n_tok, 13, rows, ys.data(), rows);
                unsetenv("MS_QUANT_NO_VBMI");
                ms::set_quant_kernel_vnni(false);
                for (size_t i = 0; i < ys.size(); ++i)
                    ASSERT_NEAR(ys[i], y[i], 1e-5 * scale) << ms::simd_name(s) << " " << ms::weight_type_name(t) << " K=" << K
                                                           << " n_tok=" << n_tok << " vnni=" << vnni << " no_vbmi=" << no_vbmi
                                                           << " i=" << i;
            }
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, QuantMatmul,
                         ::testing::Values(WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0, WeightType::F32,
                                           WeightType::F16, WeightType::BF16),
                         [](const ::testing::TestParamInfo<WeightType> &i) { return std::string(ms::weight_type_name(i.param)); });

TEST(QuantDequantize, BlockFormulas) {
    // Q4_1 block: d = 0.5, m = -1, byte j = (j) | (15 - j) << 4 -> element j = 0.5 j - 1, element 16 + j = 0.5 (15 - j) - 1.
    uint8_t blk[20];
    const uint16_t d = ms::f32_to_fp16(0.5f), m = ms::f32_to_fp16(-1.0f);
    std::memcpy(blk, &d, 2);
    std::memcpy(blk + 2, &m, 2);
    for (int j = 0; j < 16; ++j) blk[4 + j] = uint8_t(j | (15 - j) << 4);
    float out[32];
    ms::dequantize_row(WeightType::Q4_1, blk, 32, out);
    for (int j = 0; j < 16; ++j) {
        EXPECT_EQ(out[j], 0.5f * j - 1.0f);
        EXPECT_EQ(out[16 + j], 0.5f * (15 - j) - 1.0f);
    }
    // Q4_0: element = d (q - 8); Q8_0: element = d q.
    uint8_t b0[18];
    std::memcpy(b0, &d, 2);
    for (int j = 0; j < 16; ++j) b0[2 + j] = uint8_t(j | (15 - j) << 4);
    ms::dequantize_row(WeightType::Q4_0, b0, 32, out);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(out[j], 0.5f * (j - 8));
    uint8_t b8[34];
    std::memcpy(b8, &d, 2);
    for (int j = 0; j < 32; ++j) b8[2 + j] = uint8_t(int8_t(j - 16));
    ms::dequantize_row(WeightType::Q8_0, b8, 32, out);
    for (int j = 0; j < 32; ++j) EXPECT_EQ(out[j], 0.5f * (j - 16));
}

}  // namespace
