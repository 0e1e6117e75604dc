// The block reading of the CUDA GGUF matrix kernels (src/cuda/gguf/gguf_blocks.h: __host__ __device__ functions the
// kernels call), run here on the host without a GPU: every type's slice decoding against the CPU engine's scalar
// dequantization (ms::dequantize_row) bit for bit, the slice layout the kernels' float4 activation loads assume, and
// the per-slice dot product the GEMV adds against a double-precision product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/quant_matmul.h"
#include "cuda/gguf/gguf_blocks.h"

namespace {

using ms::WeightType;

// Random bytes for n rows of K elements, valid for the type: quantized scales/mins drawn as finite halves of varied
// magnitude (subnormal ones included), nibbles and int8 over their whole range. Float values: `wild` = from random
// bit patterns (NaN replaced; infinities, huge values, subnormals and signed zeros kept), else normally distributed.
std::vector<uint8_t> random_rows(WeightType t, int rows, int K, std::mt19937 &rng, bool wild) {
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<uint8_t> w(size_t(rows * rb));
    std::uniform_int_distribution<int> byte(0, 255);
    for (auto &b : w) b = uint8_t(byte(rng));
    auto finite_half = [&](float lo, float hi) {
        std::uniform_real_distribution<float> u(lo, hi);
        return ms::f32_to_fp16(u(rng));
    };
    auto put16 = [](uint8_t *p, uint16_t v) { std::memcpy(p, &v, 2); };
    for (int r = 0; r < rows; ++r) {
        uint8_t *row = w.data() + r * rb;
        const int nb = K / 32;
        for (int b = 0; b < nb; ++b) {
            // Every fourth block a tiny (subnormal-half) scale, else one of order 0.01 .. 1.
            const float mag = b % 4 == 3 ? 1e-6f : 1.0f;
            switch (t) {
                case WeightType::Q4_0: put16(row + b * 18, finite_half(-mag, mag)); break;
                case WeightType::Q8_0: put16(row + b * 34, finite_half(-mag, mag)); break;
                case WeightType::Q4_1:
                    put16(row + b * 20, finite_half(-mag, mag));
                    put16(row + b * 20 + 2, finite_half(-8 * mag, 8 * mag));
                    break;
                default: break;
            }
        }
        if (!wild && !ms::weight_type_quantized(t)) {
            std::normal_distribution<float> nd(0.f, 1.f);
            for (int k = 0; k < K; ++k) {
                const float f = nd(rng);
                if (t == WeightType::F32) std::memcpy(row + 4 * k, &f, 4);
                else put16(row + 2 * k, t == WeightType::F16 ? ms::f32_to_fp16(f) : ms::f32_to_bf16(f));
            }
        }
        if (t == WeightType::F16 || t == WeightType::BF16) {
            for (int k = 0; k < K; ++k) {
                uint16_t h;
                std::memcpy(&h, row + 2 * k, 2);
                const bool nan = t == WeightType::F16 ? (h & 0x7c00) == 0x7c00 && (h & 0x3ff)
                                                      : (h & 0x7f80) == 0x7f80 && (h & 0x7f);
                if (nan) put16(row + 2 * k, uint16_t(h & 0x8000));  // signed zero instead
            }
        }
        if (t == WeightType::F32) {
            for (int k = 0; k < K; ++k) {
                float f;
                std::memcpy(&f, row + 4 * k, 4);
                if (std::isnan(f)) {
                    f = 0.5f;
                    std::memcpy(row + 4 * k, &f, 4);
                }
            }
        }
    }
    return w;
}

template <class F> void dequantize_row_gpu_way(const uint8_t *row, int K, float *out) {
    for (int b = 0; b < K / 32; ++b) ms::gguf::dequantize_block<F>(row + b * F::kBytes, out + b * 32);
}

template <class F> void check_type(WeightType t) {
    ASSERT_EQ(F::kBytes * 1, ms::weight_row_bytes(t, 32)) << ms::weight_type_name(t);
    // The slice layout: (s, i) -> elem is a permutation of the block, in two runs of 4 consecutive elements.
    std::vector<int> seen(32, 0);
    for (int s = 0; s < 4; ++s)
        for (int i = 0; i < 8; ++i) {
            const int e = F::elem(s, i);
            ASSERT_TRUE(e >= 0 && e < 32);
            ++seen[e];
            EXPECT_EQ(e, F::elem(s, i < 4 ? 0 : 4) + i % 4) << "s=" << s << " i=" << i;
        }
    for (int e = 0; e < 32; ++e) EXPECT_EQ(seen[e], 1) << e;
    for (int s = 0; s < 4; ++s) EXPECT_EQ(F::elem(s, 0) % 4, 0) << "float4-aligned runs";

    std::mt19937 rng(int(t) + 101);
    const int rows = 9, K = 32 * 13;
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<uint8_t> w = random_rows(t, rows, K, rng, true);
    std::vector<float> want(K), got(K);
    for (int r = 0; r < rows; ++r) {
        ms::dequantize_row(t, w.data() + r * rb, K, want.data());
        dequantize_row_gpu_way<F>(w.data() + r * rb, K, got.data());
        // Equal values (infinities included; the float types' -0 comes back as +0 = 1 * -0 + 0, harmless in a product).
        for (int k = 0; k < K; ++k) ASSERT_EQ(got[k], want[k]) << ms::weight_type_name(t) << " r=" << r << " k=" << k;
    }

    // The GEMV's per-slice sum, block by block, against double precision of the CPU's dequantized row times x.
    w = random_rows(t, rows, K, rng, false);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(K);
    for (auto &v : x) v = nd(rng);
    for (int r = 0; r < rows; ++r) {
        ms::dequantize_row(t, w.data() + r * rb, K, want.data());
        double ref = 0, mag = 0;
        bool finite = true;
        for (int k = 0; k < K; ++k) {
            ref += double(want[k]) * x[k];
            mag += std::fabs(double(want[k]) * x[k]);
            finite = finite && std::isfinite(want[k]);
        }
        ASSERT_TRUE(finite);
        float acc = 0;
        for (int b = 0; b < K / 32; ++b) {
            const uint8_t *blk = w.data() + r * rb + b * F::kBytes;
            for (int s = 0; s < 4; ++s) {
                float q[8], xa[8];
                F::quants(blk, s, q);
                for (int i = 0; i < 8; ++i) xa[i] = x[b * 32 + F::elem(s, i)];
                acc += ms::gguf::slice_dot<F>(q, F::scale(blk), F::min(blk), xa);
            }
        }
        // fp32 sums of K = 416 terms: the worst-case bound is about K * 2^-24 = 2.5e-5 of the sum of magnitudes.
        EXPECT_NEAR(acc, ref, 3e-5 * mag) << ms::weight_type_name(t) << " r=" << r;
    }
}

TEST(GgufCudaBlocks, Q4_0MatchesCpuDequantization) { check_type<ms::gguf::FmtQ4_0>(WeightType::Q4_0); }
TEST(GgufCudaBlocks, Q4_1MatchesCpuDequantization) { check_type<ms::gguf::FmtQ4_1>(WeightType::Q4_1); }
TEST(GgufCudaBlocks, Q8_0MatchesCpuDequantization) { check_type<ms::gguf::FmtQ8_0>(WeightType::Q8_0); }
TEST(GgufCudaBlocks, F32MatchesCpuDequantization) { check_type<ms::gguf::FmtF32>(WeightType::F32); }
TEST(GgufCudaBlocks, F16MatchesCpuDequantization) { check_type<ms::gguf::FmtF16>(WeightType::F16); }
TEST(GgufCudaBlocks, BF16MatchesCpuDequantization) { check_type<ms::gguf::FmtBF16>(WeightType::BF16); }

// The byte-permute trick on its own: every nibble and int8 value comes back exactly.
TEST(GgufCudaBlocks, MagicNumberConversionIsExactForEveryByte) {
    for (uint32_t v = 0; v < 256; ++v) {
        float q[8];
        ms::gguf::nibbles(v | v << 8 | v << 16 | v << 24, 8.0f, q);
        for (int i = 0; i < 4; ++i) {
            EXPECT_EQ(q[i], float(int(v & 15) - 8));
            EXPECT_EQ(q[4 + i], float(int(v >> 4) - 8));
        }
        float s[4];
        ms::gguf::int8x4(v << 8, s);
        EXPECT_EQ(s[0], 0.0f);
        EXPECT_EQ(s[1], float(int8_t(uint8_t(v))));
    }
}

}  // namespace
