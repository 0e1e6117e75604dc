// The llama.cpp-compatible operations (src/llama/llama_ggml_ops.*): every SIMD path gives the same bits as its scalar
// twin on random inputs, for both emulated builds; the emulated expf are close to the true exp and handle the range
// ends. That they equal llama.cpp itself is checked end to end by llama_reference_test.cc (MS_LLAMA_NUMERICS).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/quant_types.h"
#include "llama/llama_ggml_ops.h"

namespace {

using ms::Simd;
using ms::WeightType;
using ms::ggml_ops::GgmlBuild;

std::vector<Simd> simd_levels() {
    std::vector<Simd> v;
    for (Simd s : {Simd::Avx2, Simd::Avx512})
        if (ms::simd_supported(s)) v.push_back(s);
    return v;
}

uint32_t bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}

TEST(LlamaGgmlOps, ExpLanesAreCloseToExpAndHandleTheRangeEnds) {
    for (float x : {-80.0f, -10.0f, -1.0f, -0.1f, 0.0f, 0.5f, 3.0f, 20.0f, 80.0f}) {
        EXPECT_NEAR(ms::ggml_ops::expf_lane(x) / std::exp(double(x)), 1.0, 1e-6) << x;
        EXPECT_NEAR(ms::ggml_ops::expf_lane512(x) / std::exp(double(x)), 1.0, 1e-6) << x;
    }
    for (auto f : {ms::ggml_ops::expf_lane, ms::ggml_ops::expf_lane512}) {
        EXPECT_EQ(f(-INFINITY), 0.0f);
        EXPECT_EQ(f(-200.0f), 0.0f);
        EXPECT_EQ(f(200.0f), INFINITY);
        EXPECT_GT(f(-100.0f), 0.0f);  // subnormal, not flushed
    }
}

TEST(LlamaGgmlOps, SwigluSimdEqualsScalar) {
    std::mt19937 rng(3);
    const int n = 1541;  // whole groups of 8 and 16 and a libm tail
    std::vector<float> x(n), g(n), want(n), got(n);
    std::normal_distribution<float> nd(0.0f, 4.0f);
    for (int i = 0; i < n; ++i) {
        x[i] = nd(rng) * (i % 97 == 0 ? 40.0f : 1.0f);  // some beyond exp's normal range
        g[i] = nd(rng);
    }
    x[5] = -INFINITY;
    for (GgmlBuild b : {GgmlBuild::Avx2, GgmlBuild::Avx512}) {
        ms::ggml_ops::swiglu_row(Simd::Scalar, b, x.data(), g.data(), want.data(), n);
        for (Simd s : simd_levels()) {
            ms::ggml_ops::swiglu_row(s, b, x.data(), g.data(), got.data(), n);
            for (int i = 0; i < n; ++i) ASSERT_EQ(bits(got[i]), bits(want[i])) << "i " << i << " x " << x[i];
        }
    }
}

std::vector<uint8_t> random_weights(WeightType t, int rows, int K, std::mt19937 &rng) {
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<uint8_t> w(size_t(rows * rb));
    std::uniform_int_distribution<int> byte(0, 255);
    std::uniform_real_distribution<float> scale(0.001f, 0.05f);
    const int bsz = t == WeightType::Q4_1 ? 20 : 34;
    for (int r = 0; r < rows; ++r)
        for (int b = 0; b < K / 32; ++b) {
            uint8_t *blk = w.data() + r * rb + b * bsz;
            const uint16_t d = ms::f32_to_fp16(scale(rng)), m = ms::f32_to_fp16(-scale(rng) * 8);
            std::memcpy(blk, &d, 2);
            if (t == WeightType::Q4_1) std::memcpy(blk + 2, &m, 2);
            for (int j = t == WeightType::Q4_1 ? 4 : 2; j < bsz; ++j) blk[j] = uint8_t(byte(rng));
            if (t == WeightType::Q8_0)
                for (int j = 2; j < bsz; ++j) blk[j] = uint8_t(std::max(-127, int(int8_t(blk[j]))));
        }
    return w;
}

TEST(LlamaGgmlOps, QuantizedMatmulSimdEqualsScalar) {
    std::mt19937 rng(5);
    const int K = 576, rows = 13, n_tok = 7;  // edge tiles in both directions
    std::vector<float> x(size_t(n_tok) * K);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float &v : x) v = nd(rng);
    std::vector<int8_t> qs(x.size());
    std::vector<float> d(x.size() / 32), s(d.size());
    std::vector<int32_t> sum(d.size());
    ms::Q8Rows q;
    q.qs = qs.data();
    q.d = d.data();
    q.s = s.data();
    q.sum = sum.data();
    q.K = K;
    ms::quantize_rows_q8(Simd::Scalar, x.data(), K, 0, n_tok, q);
    for (WeightType t : {WeightType::Q4_1, WeightType::Q8_0}) {
        const std::vector<uint8_t> w = random_weights(t, rows, K, rng);
        std::vector<float> want(size_t(n_tok) * rows), got(want.size());
        ms::ggml_ops::matmul_rows(Simd::Scalar, t, w.data(), K, q, n_tok, 0, rows, want.data(), rows);
        for (Simd sl : simd_levels()) {
            std::fill(got.begin(), got.end(), NAN);
            ms::ggml_ops::matmul_rows(sl, t, w.data(), K, q, n_tok, 0, rows, got.data(), rows);
            for (size_t i = 0; i < got.size(); ++i)
                ASSERT_EQ(bits(got[i]), bits(want[i])) << ms::weight_type_name(t) << " simd " << int(sl) << " i " << i;
        }
    }
}

TEST(LlamaGgmlOps, AttentionSimdEqualsScalar) {
    std::mt19937 rng(9);
    const int hd = 64, G = 3, bs = 16, n_blocks = 12, kvd = 2 * hd;  // two KV heads per row, we read the second
    std::vector<float> k(size_t(n_blocks) * bs * kvd), v(k.size()), q(size_t(G) * hd);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float &e : k) e = nd(rng) * 3;
    for (float &e : v) e = nd(rng);
    for (float &e : q) e = nd(rng);
    std::vector<int32_t> table(n_blocks);
    for (int b = 0; b < n_blocks; ++b) table[size_t(b)] = (b * 5) % n_blocks;  // scattered blocks
    ms::PagedKvView view;
    view.k = k.data() + hd;
    view.v = v.data() + hd;
    view.block_size = bs;
    view.block_stride = int64_t(bs) * kvd;
    view.row_stride = kvd;
    view.block_table = table.data();
    view.n_blocks = n_blocks;
    for (GgmlBuild b : {GgmlBuild::Avx2, GgmlBuild::Avx512})
        for (bool batched : {false, true})
            for (int last : {0, 7, 40, 63, 64, 150, n_blocks * bs - 1}) {
                std::vector<float> want(q.size()), got(q.size());
                ms::ggml_ops::attend_paged(Simd::Scalar, b, q.data(), G, hd, 0.125f, view, last, batched, want.data());
                for (Simd sl : simd_levels()) {
                    ms::ggml_ops::attend_paged(sl, b, q.data(), G, hd, 0.125f, view, last, batched, got.data());
                    for (size_t i = 0; i < got.size(); ++i)
                        ASSERT_EQ(bits(got[i]), bits(want[i])) << "last " << last << " batched " << batched << " i " << i;
                }
            }
}

TEST(LlamaGgmlOps, RopeRotationFusesAsGcc) {
    // out0 = fma(x0, cos, -(x1 sin)), out1 = fma(x0, sin, x1 cos); for these inputs both differ from the separately
    // rounded forms x0 cos - x1 sin and x0 sin + x1 cos.
    const float x0 = -0x1.94d2a8p-2f, x1 = 0x1.ff047cp-1f, c = -0x1.0b08d2p-1f, s = -0x1.b4d936p-1f;
    float cs[2] = {c, s}, x[2] = {x0, x1};
    ms::ggml_ops::rope_pairs(cs, x, 1, 2, 2);
    const float p0 = x0 * c, p1 = x1 * s, p2 = x0 * s, p3 = x1 * c;
    ASSERT_NE(bits(p0 - p1), bits(std::fma(x0, c, -p1)));
    ASSERT_NE(bits(p2 + p3), bits(std::fma(x0, s, p3)));
    EXPECT_EQ(bits(x[0]), bits(std::fma(x0, c, -p1)));
    EXPECT_EQ(bits(x[1]), bits(std::fma(x0, s, p3)));
}

}  // namespace
