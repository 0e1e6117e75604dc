// Inputs the kernel tests share: Gaussian vectors, and random MXFP4 matrices with their exact dequantisation in
// natural element order (element 2j is the low nibble of byte j, as the bf16 and fp16 activation kernels read them).
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "cpu/matmul_mxfp4.h"

namespace ms_test {

inline std::vector<float> randn(size_t n, std::mt19937 &rng, float scale = 1.0f) {
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

struct Mxfp4Natural {
    std::vector<uint8_t> blocks, scales;
    std::vector<float> dense;  // [N][K], natural order
};

// N x K random E2M1 nibbles; block i (row i / (K / 32)) gets the E8M0 exponent scale_of(i).
inline Mxfp4Natural random_mxfp4_natural(int N, int K, std::mt19937 &rng, const std::function<uint8_t(size_t)> &scale_of) {
    Mxfp4Natural c;
    c.blocks.resize(size_t(N) * K / 2);
    c.scales.resize(size_t(N) * K / 32);
    for (auto &b : c.blocks) b = uint8_t(rng());
    for (size_t i = 0; i < c.scales.size(); ++i) c.scales[i] = scale_of(i);
    c.dense.resize(size_t(N) * K);
    for (int r = 0; r < N; ++r)
        for (int k = 0; k < K; ++k) {
            const uint8_t byte = c.blocks[size_t(r) * K / 2 + k / 2];
            const int nib = (k % 2 == 0) ? (byte & 15) : (byte >> 4);
            c.dense[size_t(r) * K + k] = ms::kE2M1[nib] * std::ldexp(1.0f, int(c.scales[size_t(r) * K / 32 + k / 32]) - 127);
        }
    return c;
}

}  // namespace ms_test
