// RMSNorm, YaRN RoPE, paged attention with sinks, SwiGLU, routing and the thread pool: SIMD against scalar
// references, and scalar kernels against direct formulas and published gpt-oss figures.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <random>
#include <stdexcept>
#include <vector>

#include "common/error.h"
#include "cpu/attention.h"
#include "cpu/bf16.h"
#include "cpu/rmsnorm.h"
#include "cpu/rope.h"
#include "cpu/router.h"
#include "cpu/swiglu.h"
#include "cpu/thread_pool.h"
#include "kernel_test_util.h"

namespace {

std::vector<ms::Simd> simd_levels() {
    std::vector<ms::Simd> v;
    for (ms::Simd s : {ms::Simd::Avx2, ms::Simd::Avx512})
        if (ms::simd_supported(s)) v.push_back(s);
    return v;
}

using ms_test::randn;

TEST(KernelsRmsNorm, ScalarMatchesFormulaAndSimdMatchesScalar) {
    std::mt19937 rng(1);
    for (int n : {64, 100, 2880}) {
        auto x = randn(n, rng, 3.0f), w = randn(n, rng);
        std::vector<float> ref(n), out(n);
        ms::rmsnorm(ms::Simd::Scalar, x.data(), w.data(), n, 1e-5f, ref.data());
        double ss = 0;
        for (float v : x) ss += double(v) * v;
        const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; ++i) ASSERT_NEAR(ref[i], x[i] * inv * w[i], 1e-5 * (std::fabs(x[i] * inv * w[i]) + 1e-3));
        for (ms::Simd s : simd_levels()) {
            ms::rmsnorm(s, x.data(), w.data(), n, 1e-5f, out.data());
            // Relative 1e-5: the sum of squares is accumulated in a different order.
            for (int i = 0; i < n; ++i) ASSERT_NEAR(out[i], ref[i], 1e-5f * (std::fabs(ref[i]) + 1e-3f)) << ms::simd_name(s);
        }
    }
}

TEST(KernelsRope, YarnFrequenciesMatchGptOss) {
    // gpt-oss: base 150000, head dim 64, factor 32, original context 4096, beta 32 / 1 (shared/notes/gpt-oss.md).
    ms::RopeParams p;
    p.head_dim = 64;
    p.theta = 150000;
    p.factor = 32;
    ms::Rope r = ms::make_rope(p);
    const double expect[] = {1.0, 0.6890443, 0.4747821, 0.3271459, 0.2254180, 0.1553230, 0.1070244, 0.07374457};
    for (int i = 0; i < 8; ++i) EXPECT_NEAR(r.inv_freq[i], expect[i], 1e-6 * expect[i] + 1e-9) << i;
    EXPECT_NEAR(r.inv_freq[31], 3.023511e-07, 1e-12);
    EXPECT_NEAR(r.concentration, 1.3465736f, 1e-6);
}

TEST(KernelsRope, SimdMatchesScalarAndRotationIsRight) {
    ms::RopeParams p;
    p.head_dim = 64;
    p.factor = 32;
    ms::Rope r = ms::make_rope(p);
    std::mt19937 rng(2);
    std::vector<float> cs(64);
    ms::rope_cos_sin(r, 1234, cs.data());
    auto x = randn(4 * 64, rng);
    auto ref = x;
    ms::rope_apply(ms::Simd::Scalar, r, cs.data(), ref.data(), 4);
    // Element i pairs with i + 32 (half split), rotated by pos * inv_freq[i] and scaled by the concentration.
    for (int i = 0; i < 32; ++i) {
        double a = 1234.0f * r.inv_freq[i];
        double c = std::cos(a) * r.concentration, s = std::sin(a) * r.concentration;
        EXPECT_NEAR(ref[i], x[i] * c - x[i + 32] * s, 1e-4);
        EXPECT_NEAR(ref[i + 32], x[i + 32] * c + x[i] * s, 1e-4);
    }
    for (ms::Simd s : simd_levels()) {
        auto out = x;
        ms::rope_apply(s, r, cs.data(), out.data(), 4);
        for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-6f * (std::fabs(ref[i]) + 1)) << ms::simd_name(s);
    }
}

// Direct attention over positions [first, last] with a sink column, in double precision.
std::vector<float> direct_attention(const std::vector<float> &q, int G, int hd, const std::vector<float> &sinks,
                                    const std::vector<std::vector<float>> &K, const std::vector<std::vector<float>> &Vv,
                                    int first, int last) {
    std::vector<float> out(size_t(G) * hd, 0.0f);
    for (int g = 0; g < G; ++g) {
        std::vector<double> s;
        double mx = sinks[g];
        for (int p = first; p <= last; ++p) {
            double d = 0;
            for (int i = 0; i < hd; ++i) d += double(q[g * hd + i]) * K[p][i];
            s.push_back(d / std::sqrt(double(hd)));
            mx = std::max(mx, s.back());
        }
        double den = std::exp(sinks[g] - mx);
        for (double &e : s) den += (e = std::exp(e - mx));
        for (int p = first; p <= last; ++p)
            for (int i = 0; i < hd; ++i) out[g * hd + i] += float(s[p - first] / den * Vv[p][i]);
    }
    return out;
}

TEST(KernelsAttention, PagedWithSinksMatchesDirectSoftmax) {
    std::mt19937 rng(3);
    const int hd = 64, G = 8, bs = 16, n_pos = 150, n_blocks = 12, layers = 2, layer = 1, kv_heads = 2, kh = 1;
    const int kv_dim = kv_heads * hd;
    // Storage [block][layer][pos][kv_dim], blocks assigned in a scrambled order.
    std::vector<int32_t> table(n_blocks);
    for (int b = 0; b < n_blocks; ++b) table[b] = (b * 5 + 2) % n_blocks;
    const size_t block_stride = size_t(layers) * bs * kv_dim;
    std::vector<float> kstore(n_blocks * block_stride, NAN), vstore(kstore.size(), NAN);
    std::vector<std::vector<float>> K(n_pos), Vv(n_pos);
    for (int p = 0; p < n_pos; ++p) {
        K[p] = randn(hd, rng);
        Vv[p] = randn(hd, rng);
        size_t off = table[p / bs] * block_stride + size_t(layer) * bs * kv_dim + size_t(p % bs) * kv_dim + kh * hd;
        std::copy(K[p].begin(), K[p].end(), kstore.begin() + off);
        std::copy(Vv[p].begin(), Vv[p].end(), vstore.begin() + off);
    }
    std::vector<uint16_t> k16(kstore.size()), v16(vstore.size());
    ms::f32_to_bf16_n(ms::Simd::Scalar, kstore.data(), k16.data(), int64_t(k16.size()));
    ms::f32_to_bf16_n(ms::Simd::Scalar, vstore.data(), v16.data(), int64_t(v16.size()));
    auto q = randn(size_t(G) * hd, rng, 0.5f);
    auto sinks = randn(G, rng, 2.0f);
    for (bool bf16 : {false, true}) {
        ms::PagedKvView view;
        const size_t base = size_t(layer) * bs * kv_dim + kh * hd;
        view.k = bf16 ? static_cast<const void *>(k16.data() + base) : static_cast<const void *>(kstore.data() + base);
        view.v = bf16 ? static_cast<const void *>(v16.data() + base) : static_cast<const void *>(vstore.data() + base);
        view.bf16 = bf16;
        view.block_size = bs;
        view.block_stride = int64_t(block_stride);
        view.row_stride = kv_dim;
        view.block_table = table.data();
        view.n_blocks = n_blocks;
        auto Kr = K, Vr = Vv;
        if (bf16)
            for (int p = 0; p < n_pos; ++p)
                for (int i = 0; i < hd; ++i) {
                    Kr[p][i] = ms::bf16_to_f32(ms::f32_to_bf16(K[p][i]));
                    Vr[p][i] = ms::bf16_to_f32(ms::f32_to_bf16(Vv[p][i]));
                }
        for (auto [first, last] : {std::pair{0, 0}, {0, 149}, {22, 149}, {3, 17}}) {
            auto expect = direct_attention(q, G, hd, sinks, Kr, Vr, first, last);
            std::vector<float> ref(expect.size());
            ms::attend_paged(ms::Simd::Scalar, q.data(), G, hd, 1.0f / 8, sinks.data(), view, first, last, ref.data());
            for (size_t i = 0; i < ref.size(); ++i) ASSERT_NEAR(ref[i], expect[i], 1e-5) << "bf16=" << bf16;
            for (ms::Simd s : simd_levels()) {
                std::vector<float> out(expect.size());
                ms::attend_paged(s, q.data(), G, hd, 1.0f / 8, sinks.data(), view, first, last, out.data());
                for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 1e-5) << ms::simd_name(s);
            }
        }
    }
}

TEST(KernelsAttention, UnmappedBlockIsAnErrorNotACrash) {
    std::vector<float> k(64 * 16, 0.0f), v(64 * 16, 0.0f), q(64, 0.0f), out(64), sinks(1, 0.0f);
    std::vector<int32_t> table = {0, -1};
    ms::PagedKvView view;
    view.k = k.data();
    view.v = v.data();
    view.block_size = 16;
    view.block_stride = 16 * 64;
    view.row_stride = 64;
    view.block_table = table.data();
    view.n_blocks = 2;
    EXPECT_THROW(ms::attend_paged(ms::Simd::Scalar, q.data(), 1, 64, 0.125f, sinks.data(), view, 0, 20, out.data()), ms::Error);
}

TEST(KernelsSwiglu, ClampsAndGates) {
    // (gate, linear) pairs: gate clamped above at 7, linear to [-7, 7]; out = g * sigmoid(1.702 g) * (u + 1).
    std::vector<float> gu = {1.0f, 2.0f, 10.0f, -9.0f, -3.0f, 8.0f};
    std::vector<float> out(3);
    ms::swiglu_interleaved(gu.data(), 3, 7.0f, 1.702f, out.data());
    auto f = [](double g, double u) { return g / (1 + std::exp(-1.702 * g)) * (u + 1); };
    EXPECT_NEAR(out[0], f(1, 2), 1e-6);
    EXPECT_NEAR(out[1], f(7, -7), 1e-5);
    EXPECT_NEAR(out[2], f(-3, 7), 1e-6);
}

// The dispatched SwiGLU (AVX-512 with its own exp where the CPU has it) against the scalar loop (libm expf): within
// 5e-7 relative (about 4 ulp; 2^20 random inputs measured 3.7e-7) over gates that reach the clamp, deep into the
// sigmoid's tails (exp overflowing to inf and underflowing through the subnormals) and every tail length.
TEST(KernelsSwiglu, DispatchedMatchesScalar) {
    std::mt19937 rng(11);
    for (float alpha : {1.702f, 100.0f}) {
        for (int n : {1, 7, 15, 16, 17, 33, 2880}) {
            std::vector<float> gu = randn(size_t(2 * n), rng, 4.0f);
            for (int i = 0; i < 2 * n; i += 7) gu[i] *= 30.0f;  // gates far into both tails (and linear beyond limit)
            std::vector<float> got(n), want(n);
            ms::swiglu_interleaved(gu.data(), n, 7.0f, alpha, got.data());
            ms::swiglu_interleaved_scalar(gu.data(), n, 7.0f, alpha, want.data());
            for (int i = 0; i < n; ++i)
                ASSERT_NEAR(got[i], want[i], 5e-7 * std::fabs(want[i]) + 1e-37) << "n " << n << " i " << i << " gate " << gu[2 * i];
        }
    }
    // NaN stays NaN (std::min / std::clamp keep a NaN first argument); -inf gate: -inf / inf is NaN in both.
    std::vector<float> gu = {NAN, 1.0f, 1.0f, NAN, 3.0f, 2.0f}, out(3);
    ms::swiglu_interleaved(gu.data(), 3, 7.0f, 1.702f, out.data());
    EXPECT_TRUE(std::isnan(out[0]));
    EXPECT_TRUE(std::isnan(out[1]));
    EXPECT_FALSE(std::isnan(out[2]));
}

TEST(KernelsRouter, TopKOfRawLogitsThenSoftmax) {
    std::vector<float> logits = {0.5f, 3.0f, -1.0f, 2.0f, 2.5f, 0.1f, 4.0f, -3.0f};
    int ids[4];
    float w[4];
    ms::router_topk_softmax(logits.data(), 8, 4, ids, w);
    EXPECT_EQ(ids[0], 6);
    EXPECT_EQ(ids[1], 1);
    EXPECT_EQ(ids[2], 4);
    EXPECT_EQ(ids[3], 3);
    double den = std::exp(4.0) + std::exp(3.0) + std::exp(2.5) + std::exp(2.0);
    EXPECT_NEAR(w[0], std::exp(4.0) / den, 1e-6);
    EXPECT_NEAR(w[3], std::exp(2.0) / den, 1e-6);
    EXPECT_NEAR(w[0] + w[1] + w[2] + w[3], 1.0f, 1e-6);
}

TEST(ThreadPool, CoversEveryIndexOnceAndPropagatesErrors) {
    ms::ThreadPool pool(3);
    for (int64_t n : {1, 7, 1000}) {
        std::vector<std::atomic<int>> hits(n);
        pool.parallel_for(n, 3, [&](int64_t b, int64_t e) {
            for (int64_t i = b; i < e; ++i) hits[i]++;
        });
        for (auto &h : hits) ASSERT_EQ(h.load(), 1);
    }
    EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t b, int64_t) {
        if (b == 57) throw std::runtime_error("boom");
    }),
                 std::runtime_error);
    int count = 0;
    pool.parallel_for(10, 100, [&](int64_t b, int64_t e) { count += int(e - b); });
    EXPECT_EQ(count, 10);
}

}  // namespace
