// Host-side helpers for the CUDA MoE tests: a random MoE layer in checkpoint layout, its copy on the device, and the
// CPU engine's MoE math (router_topk_softmax, matmul_mxfp4_rows, swiglu_interleaved) composed into one reference.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/bf16.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/router.h"
#include "cpu/simd.h"
#include "cpu/swiglu.h"
#include "cuda/moe/moe.cuh"

namespace ms::cuda::test {

inline void check_cuda(cudaError_t e, const char *what) {
  if (e != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(e));
}

struct HostMoe {
  int E = 0, K = 0, H = 0, I = 0;
  float limit = 7.0f, alpha = 1.702f;
  std::vector<uint16_t> router_w, router_b, gate_up_bias, down_bias;
  std::vector<uint8_t> gate_up_blocks, gate_up_scales, down_blocks, down_scales;
};

inline std::vector<uint16_t> random_bf16(std::mt19937 &rng, size_t n, float amp) {
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<uint16_t> v(n);
  for (auto &x : v) x = f32_to_bf16(u(rng));
  return v;
}

inline std::vector<uint8_t> random_bytes(std::mt19937 &rng, size_t n, int lo, int hi) {
  std::vector<uint8_t> v(n);
  if (lo == 0 && hi == 255) {  // four bytes per draw: the 20b-shape layers hold hundreds of MB of blocks
    for (size_t i = 0; i < n; i += 4) {
      const uint32_t r = rng();
      for (size_t j = 0; j < 4 && i + j < n; ++j) v[i + j] = uint8_t(r >> (8 * j));
    }
    return v;
  }
  std::uniform_int_distribution<int> u(lo, hi);
  for (auto &x : v) x = uint8_t(u(rng));
  return v;
}

// Scales 2^(120-127)..2^(125-127) keep gate pre-activations around the clamp limit, so both clamps are exercised.
inline HostMoe random_moe(uint32_t seed, int E, int K, int H, int I) {
  std::mt19937 rng(seed);
  HostMoe m;
  m.E = E;
  m.K = K;
  m.H = H;
  m.I = I;
  m.router_w = random_bf16(rng, size_t(E) * H, 1.0f / std::sqrt(float(H)) * 1.7f);
  m.router_b = random_bf16(rng, E, 0.2f);
  m.gate_up_blocks = random_bytes(rng, size_t(E) * 2 * I * H / 2, 0, 255);
  m.gate_up_scales = random_bytes(rng, size_t(E) * 2 * I * H / 32, 120, 125);
  m.gate_up_bias = random_bf16(rng, size_t(E) * 2 * I, 0.5f);
  m.down_blocks = random_bytes(rng, size_t(E) * H * I / 2, 0, 255);
  m.down_scales = random_bytes(rng, size_t(E) * H * I / 32, 117, 122);
  m.down_bias = random_bf16(rng, size_t(E) * H, 0.5f);
  return m;
}

inline std::vector<float> random_f32(uint32_t seed, size_t n, float amp) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, amp);
  std::vector<float> v(n);
  for (auto &x : v) x = d(rng);
  return v;
}

template <typename T>
T *to_device(const std::vector<T> &v) {
  T *p = nullptr;
  check_cuda(cudaMalloc(&p, v.size() * sizeof(T)), "cudaMalloc");
  check_cuda(cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  return p;
}

template <typename T>
std::vector<T> download(const T *p, size_t n) {
  std::vector<T> v(n);
  check_cuda(cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost), "D2H");
  return v;
}

inline bool device_present() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct DeviceMoe {
  MoeLayer layer{};
  std::vector<void *> owned;
  explicit DeviceMoe(const HostMoe &m) {
    auto up = [&](const auto &v) {
      auto *p = to_device(v);
      owned.push_back(p);
      return p;
    };
    layer.router_w = up(m.router_w);
    layer.router_b = up(m.router_b);
    layer.gate_up_blocks = up(m.gate_up_blocks);
    layer.gate_up_scales = up(m.gate_up_scales);
    layer.gate_up_bias = up(m.gate_up_bias);
    layer.down_blocks = up(m.down_blocks);
    layer.down_scales = up(m.down_scales);
    layer.down_bias = up(m.down_bias);
    layer.n_experts = m.E;
    layer.top_k = m.K;
    layer.hidden = m.H;
    layer.inter = m.I;
    layer.swiglu_limit = m.limit;
    layer.swiglu_alpha = m.alpha;
  }
  ~DeviceMoe() {
    for (void *p : owned) cudaFree(p);
  }
  DeviceMoe(const DeviceMoe &) = delete;
  DeviceMoe &operator=(const DeviceMoe &) = delete;
};

inline std::vector<float> bf16_vec_to_f32(const std::vector<uint16_t> &v, size_t off, size_t n) {
  std::vector<float> r(n);
  for (size_t i = 0; i < n; ++i) r[i] = bf16_to_f32(v[off + i]);
  return r;
}

struct Reference {
  std::vector<float> logits;   // [T][E]
  std::vector<int> ids;        // [T][K]
  std::vector<float> weights;  // [T][K]
  std::vector<float> moe_out;  // [T][H], the MoE output alone (not yet added to the residual)
  long gates_over_limit = 0, linears_clamped = 0;
};

// The CPU engine's MoE block (model.cc) for T tokens, one token at a time.
inline Reference cpu_reference(const HostMoe &m, const std::vector<float> &x, int T) {
  const Simd simd = active_simd();
  const int E = m.E, K = m.K, H = m.H, I = m.I;
  Reference r;
  r.logits.resize(size_t(T) * E);
  r.ids.resize(size_t(T) * K);
  r.weights.resize(size_t(T) * K);
  r.moe_out.assign(size_t(T) * H, 0.f);
  const std::vector<float> rb = bf16_vec_to_f32(m.router_b, 0, E);
  matmul_bf16_rows(simd, x.data(), T, H, m.router_w.data(), rb.data(), H, 0, E, r.logits.data(), E);
  std::vector<float> xs(H), gu(2 * I), act(I), acts(I), dn(H);
  for (int t = 0; t < T; ++t) {
    router_topk_softmax(&r.logits[size_t(t) * E], E, K, &r.ids[size_t(t) * K], &r.weights[size_t(t) * K]);
    mxfp4_split_activations(&x[size_t(t) * H], H, xs.data());
    for (int j = 0; j < K; ++j) {
      const int e = r.ids[size_t(t) * K + j];
      const std::vector<float> gub = bf16_vec_to_f32(m.gate_up_bias, size_t(e) * 2 * I, 2 * I);
      matmul_mxfp4_rows(simd, xs.data(), 1, H, &m.gate_up_blocks[size_t(e) * 2 * I * H / 2],
                        &m.gate_up_scales[size_t(e) * 2 * I * H / 32], gub.data(), H, 0, 2 * I, gu.data(), 2 * I);
      for (int i = 0; i < I; ++i) {
        r.gates_over_limit += gu[2 * i] > m.limit;
        r.linears_clamped += std::fabs(gu[2 * i + 1]) > m.limit;
      }
      swiglu_interleaved(gu.data(), I, m.limit, m.alpha, act.data());
      mxfp4_split_activations(act.data(), I, acts.data());
      const std::vector<float> db = bf16_vec_to_f32(m.down_bias, size_t(e) * H, H);
      matmul_mxfp4_rows(simd, acts.data(), 1, I, &m.down_blocks[size_t(e) * H * I / 2],
                        &m.down_scales[size_t(e) * H * I / 32], db.data(), I, 0, H, dn.data(), H);
      const float w = r.weights[size_t(t) * K + j];
      for (int h = 0; h < H; ++h) r.moe_out[size_t(t) * H + h] += w * dn[h];
    }
  }
  return r;
}

// True when the k-th and (k+1)-th largest logits of token t are within `gap`: the choice of experts is then decided
// by rounding, and the GPU (different summation order) may legitimately pick the other expert.
inline bool near_tie(const Reference &r, int t, int E, int K, float gap) {
  std::vector<float> l(r.logits.begin() + size_t(t) * E, r.logits.begin() + size_t(t + 1) * E);
  std::sort(l.begin(), l.end(), std::greater<float>());
  for (int j = 0; j < K && j + 1 < E; ++j)
    if (l[j] - l[j + 1] < gap) return true;
  return false;
}

}  // namespace ms::cuda::test
