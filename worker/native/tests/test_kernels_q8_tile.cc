// The block-pair register tile behind both int8-activation kernels (cpu/q8_pair_kernel.h): every kernel variant this
// CPU can run — AVX-512 VNNI (512-bit, and 256-bit for panels of at most 4 tokens), AVX-VNNI, AVX2 vpmaddubsw (the
// last two reached through Simd::Avx2, AVX-VNNI switched off with set_q8_avx_vnni for the vpmaddubsw one) — against
// the scalar reference bit for bit, over block counts that leave a pad block (odd) or a lone last block pair, token
// counts that fill panels partly (1..4 lanes: the half-width kernel) or wholly, and row ranges that start and end
// inside 8-row tiles. The scalar reference itself is checked against a double-precision product of the dequantised
// operands, with the tolerance of K/32 fp32 accumulations.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/bf16.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/matmul_q8_dense.h"
#include "kernel_test_util.h"

namespace {

struct Variant {
    ms::Simd simd;
    bool avx_vnni;  // the 256-bit kernel's AVX-VNNI (only where the CPU has it)
    std::string name;
};

std::vector<Variant> variants() {
    std::vector<Variant> v;
    const bool saved = ms::set_q8_avx_vnni(true);
    const bool has_avx_vnni = ms::q8_avx_vnni_available();
    ms::set_q8_avx_vnni(saved);
    if (ms::simd_supported(ms::Simd::Avx512)) v.push_back({ms::Simd::Avx512, true, "avx512"});
    if (ms::simd_supported(ms::Simd::Avx2)) {
        if (has_avx_vnni) v.push_back({ms::Simd::Avx2, true, "avx-vnni"});
        v.push_back({ms::Simd::Avx2, false, "avx2"});
    }
    return v;
}

// Runs f with AVX-VNNI on or off, restoring the setting afterwards.
template <class F> void with_avx_vnni(bool on, F f) {
    const bool saved = ms::set_q8_avx_vnni(on);
    f();
    ms::set_q8_avx_vnni(saved);
}

struct Panels {
    ms::AlignedVector<int8_t> qs;
    ms::AlignedVector<float> d;
    ms::AlignedVector<int32_t> sum;
    ms::Q8Panels p;
    Panels(const std::vector<float> &x, int T, int K) {
        const int np = (T + 7) / 8;
        qs.assign(size_t(np) * ms::q8_panel_qs_bytes(K), 0x55);
        d.assign(size_t(np) * ms::q8_panel_blocks(K), NAN);
        sum.assign(size_t(np) * ms::q8_panel_blocks(K), 7);
        p = {qs.data(), d.data(), sum.data(), K};
        for (int pi = 0; pi < np; ++pi) {
            const float *rows[8];
            const int n = std::min(8, T - pi * 8);
            for (int j = 0; j < n; ++j) rows[j] = x.data() + size_t(pi * 8 + j) * K;
            ms::q8_quantize_panel(ms::Simd::Scalar, rows, n, p, pi);
        }
    }
    double value(int t, int k) const {
        const size_t panel = size_t(t / 8);
        const int8_t q = qs[panel * ms::q8_panel_qs_bytes(p.K) + ms::q8_panel_q_offset(t % 8, k / 32, ms::q8_block_position(k % 32))];
        return double(q) * d[panel * ms::q8_panel_blocks(p.K) + ms::q8_panel_block_offset(t % 8, k / 32)];
    }
};

using ms_test::randn;

struct Mxfp4 {
    std::vector<uint8_t> blocks, scales;
    Mxfp4(int N, int K, std::mt19937 &rng) : blocks(size_t(N) * K / 2), scales(size_t(N) * K / 32) {
        for (auto &b : blocks) b = uint8_t(rng());
        for (auto &s : scales) s = uint8_t(118 + rng() % 10);
        scales[0] = 0;  // the smallest factor, 2^-127 (subnormal once halved)
        if (scales.size() > 1) scales[1] = 1;
    }
    double weight(int r, int k, int K) const {
        const uint8_t byte = blocks[size_t(r) * K / 2 + k / 2];
        return double(ms::kE2M1[k % 2 ? byte >> 4 : byte & 15]) * std::ldexp(1.0, int(scales[size_t(r) * K / 32 + k / 32]) - 127);
    }
};

const int kKs[] = {32, 64, 96, 160, 1024, 2880};
const int kTs[] = {1, 3, 4, 5, 8, 11, 12, 16, 33};

TEST(KernelsQ8Tile, Mxfp4VariantsMatchScalarBitForBit) {
    std::mt19937 rng(31);
    const int N = 19;
    for (int K : kKs) {
        Mxfp4 w(N, K, rng);
        auto bias = randn(N, rng);
        for (int T : kTs) {
            auto x = randn(size_t(T) * K, rng);
            Panels px(x, T, K);
            std::vector<float> ref(size_t(T) * N), out(ref.size());
            ms::matmul_mxfp4_q8_rows(ms::Simd::Scalar, px.p, 0, T, w.blocks.data(), w.scales.data(), bias.data(), K, 0, N, ref.data(), N);
            for (const Variant &v : variants())
                with_avx_vnni(v.avx_vnni, [&] {
                    std::fill(out.begin(), out.end(), NAN);
                    // Ranges that start and end inside 8-row tiles, and one lone row.
                    for (auto [r0, r1] : {std::pair{0, 3}, std::pair{3, 13}, std::pair{13, 18}, std::pair{18, 19}})
                        ms::matmul_mxfp4_q8_rows(v.simd, px.p, 0, T, w.blocks.data(), w.scales.data(), bias.data(), K, r0, r1, out.data(), N);
                    for (int i = 0; i < T * N; ++i)
                        ASSERT_EQ(out[i], ref[i]) << v.name << " K=" << K << " T=" << T << " t=" << i / N << " r=" << i % N;
                });
        }
    }
}

TEST(KernelsQ8Tile, DenseVariantsMatchScalarBitForBit) {
    std::mt19937 rng(32);
    const int N = 21;
    for (int K : kKs) {
        std::normal_distribution<float> nd(0.0f, 0.05f);
        std::vector<uint16_t> wb(size_t(N) * K);
        for (auto &v : wb) v = ms::f32_to_bf16(nd(rng));
        for (int k = 0; k < 32; ++k) wb[size_t(2) * K + k] = 0;  // an all-zero block (scale 0)
        ms::Q8DenseWeights W;
        ms::q8_quantize_dense_bf16(wb.data(), N, K, W);
        auto bias = randn(N, rng);
        for (int T : kTs) {
            auto x = randn(size_t(T) * K, rng);
            Panels px(x, T, K);
            std::vector<float> ref(size_t(T) * N), out(ref.size());
            ms::matmul_q8_dense_rows(ms::Simd::Scalar, px.p, 0, T, W, bias.data(), 0, N, ref.data(), N);
            for (const Variant &v : variants())
                with_avx_vnni(v.avx_vnni, [&] {
                    std::fill(out.begin(), out.end(), NAN);
                    for (auto [r0, r1] : {std::pair{0, 8}, std::pair{8, 12}, std::pair{12, 21}})
                        ms::matmul_q8_dense_rows(v.simd, px.p, 0, T, W, bias.data(), r0, r1, out.data(), N);
                    for (int i = 0; i < T * N; ++i)
                        ASSERT_EQ(out[i], ref[i]) << v.name << " K=" << K << " T=" << T << " t=" << i / N << " r=" << i % N;
                });
        }
    }
}

TEST(KernelsQ8Tile, ScalarReferencesMatchDequantisedProducts) {
    std::mt19937 rng(33);
    const int N = 9, T = 10;
    for (int K : {96, 2880}) {
        auto x = randn(size_t(T) * K, rng);
        Panels px(x, T, K);
        Mxfp4 w(N, K, rng);
        std::normal_distribution<float> nd(0.0f, 0.05f);
        std::vector<uint16_t> wb(size_t(N) * K);
        for (auto &v : wb) v = ms::f32_to_bf16(nd(rng));
        ms::Q8DenseWeights W;
        ms::q8_quantize_dense_bf16(wb.data(), N, K, W);
        std::vector<float> y4(size_t(T) * N), y8(size_t(T) * N);
        ms::matmul_mxfp4_q8_rows(ms::Simd::Scalar, px.p, 0, T, w.blocks.data(), w.scales.data(), nullptr, K, 0, N, y4.data(), N);
        ms::matmul_q8_dense_rows(ms::Simd::Scalar, px.p, 0, T, W, nullptr, 0, N, y8.data(), N);
        for (int t = 0; t < T; ++t)
            for (int r = 0; r < N; ++r) {
                double e4 = 0, m4 = 0, e8 = 0, m8 = 0;
                for (int k = 0; k < K; ++k) {
                    const double a = px.value(t, k);
                    const double t4 = a * w.weight(r, k, K), t8 = a * W.weight(r, k) * double(W.scale(r, k / 32));
                    e4 += t4;
                    m4 += std::fabs(t4);
                    e8 += t8;
                    m8 += std::fabs(t8);
                }
                // Exact integer block sums; the scale products and K/32 fp32 accumulations round.
                ASSERT_NEAR(y4[size_t(t) * N + r], e4, 4e-7 * m4 * (K / 32 + 2) + 1e-30) << "mxfp4 K=" << K << " t=" << t << " r=" << r;
                ASSERT_NEAR(y8[size_t(t) * N + r], e8, 4e-7 * m8 * (K / 32 + 2) + 1e-30) << "dense K=" << K << " t=" << t << " r=" << r;
            }
    }
}

}  // namespace
