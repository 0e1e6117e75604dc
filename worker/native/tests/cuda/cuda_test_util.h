// Helpers for the CUDA tests: skip without a GPU, device buffers, random inputs, comparisons with the CPU reference.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "cpu/bf16.h"
#include "model/forward.h"

namespace ms_cuda_test {

inline bool have_gpu() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
    if (!::ms_cuda_test::have_gpu()) GTEST_SKIP() << "no CUDA device"

// A device copy of a host vector; copies back with host().
template <class T> class DeviceVec {
  public:
    explicit DeviceVec(size_t n) : n_(n) {
        EXPECT_EQ(cudaMalloc(&p_, n * sizeof(T) + 16), cudaSuccess);
        EXPECT_EQ(cudaMemset(p_, 0, n * sizeof(T) + 16), cudaSuccess);
    }
    explicit DeviceVec(const std::vector<T> &h) : DeviceVec(h.size()) {
        EXPECT_EQ(cudaMemcpy(p_, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    }
    ~DeviceVec() { cudaFree(p_); }
    DeviceVec(const DeviceVec &) = delete;
    DeviceVec &operator=(const DeviceVec &) = delete;
    T *get() const { return static_cast<T *>(p_); }
    std::vector<T> host() const {
        std::vector<T> h(n_);
        EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
        return h;
    }

  private:
    void *p_ = nullptr;
    size_t n_;
};

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.f, float hi = 1.f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto &x : v) x = d(rng);
    return v;
}

inline std::vector<uint16_t> random_bf16(size_t n, uint32_t seed, float scale = 1.f) {
    std::vector<float> f = random_floats(n, seed, -scale, scale);
    std::vector<uint16_t> v(n);
    for (size_t i = 0; i < n; ++i) v[i] = ms::f32_to_bf16(f[i]);
    return v;
}

// max |a - b| / (1 + |b|): absolute for small values, relative for large ones.
inline float max_scaled_diff(const std::vector<float> &a, const std::vector<float> &b) {
    EXPECT_EQ(a.size(), b.size());
    float worst = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
        const float d = std::fabs(a[i] - b[i]) / (1.f + std::fabs(b[i]));
        if (!(d <= worst)) worst = d;  // NaN counts as worst
    }
    return worst;
}

// Device KV for `n_blocks` blocks per group (fp32-sized buffers, so bf16 fits too), owned by the test.
struct DeviceKv {
    ms::KvStorage kv;
    std::vector<std::unique_ptr<DeviceVec<float>>> bufs;
    DeviceKv(const ms::KvSpec &spec, int n_blocks, int bs) {
        kv.block_size = bs;
        kv.kv_dim = spec.kv_dim;
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            kv.layers_in_group[g] = spec.layers_in_group[g];
            if (!spec.layers_in_group[g]) continue;
            kv.num_blocks[g] = n_blocks;
            const size_t n = size_t(n_blocks) * spec.layers_in_group[g] * bs * spec.kv_dim;
            bufs.push_back(std::make_unique<DeviceVec<float>>(n));
            kv.k[g] = bufs.back()->get();
            bufs.push_back(std::make_unique<DeviceVec<float>>(n));
            kv.v[g] = bufs.back()->get();
        }
    }
};

}  // namespace ms_cuda_test
