// Micro-benchmark of the CUDA MoE block at gpt-oss shapes (default: 20b, H = I = 2880, 32 experts, top-4, 24 layers).
// Weights are random (generated on the GPU) and distinct per layer, so nothing is served from L2 across layers.
// Decode: one CUDA graph per batch size running all layers; the bytes counted are the weights actually touched
// (router + every distinct chosen expert of each layer, read back once before timing). Figures are reported against
// the nominal 3.0 TB/s and against a device-to-device copy measured in the same run (read + write counted).
// Usage: bench_cuda_moe [--layers N] [--experts E] [--iters N]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "cli_args.h"
#include "cuda/moe/moe.cuh"
#include "cuda/moe/moe_internal.cuh"

namespace {

void check(cudaError_t e, const char *what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "bench_cuda_moe: %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return uint32_t(x);
}

__global__ void fill_bytes(uint8_t *p, size_t n, uint64_t seed, int lo, int span) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = uint8_t(lo + mix(seed * 0x9e3779b97f4a7c15ull + i) % span);
}

__global__ void fill_bf16(uint16_t *p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const float u = (mix(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f) * 2.f - 1.f;
    p[i] = uint16_t(__float_as_uint(u * amp) >> 16);
  }
}

__global__ void fill_f32(float *p, size_t n, uint64_t seed, float amp) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = ((mix(seed * 0x9e3779b97f4a7c15ull + i) >> 8) * (1.0f / 16777216.0f) * 2.f - 1.f) * amp;
}

template <typename T>
T *alloc(size_t n) {
  T *p = nullptr;
  check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
  return p;
}

ms::cuda::MoeLayer random_layer(int E, int H, int I, uint64_t seed) {
  ms::cuda::MoeLayer l{};
  auto bytes = [&](size_t n, int lo, int span) {
    uint8_t *p = alloc<uint8_t>(n);
    fill_bytes<<<1024, 256>>>(p, n, seed++, lo, span);
    return p;
  };
  auto bf16 = [&](size_t n, float amp) {
    uint16_t *p = alloc<uint16_t>(n);
    fill_bf16<<<1024, 256>>>(p, n, seed++, amp);
    return p;
  };
  l.router_w = bf16(size_t(E) * H, 0.03f);
  l.router_b = bf16(E, 0.1f);
  l.gate_up_blocks = bytes(size_t(E) * 2 * I * H / 2, 0, 256);
  l.gate_up_scales = bytes(size_t(E) * 2 * I * H / 32, 118, 5);
  l.gate_up_bias = bf16(size_t(E) * 2 * I, 0.1f);
  l.down_blocks = bytes(size_t(E) * H * I / 2, 0, 256);
  l.down_scales = bytes(size_t(E) * H * I / 32, 118, 5);
  l.down_bias = bf16(size_t(E) * H, 0.1f);
  l.n_experts = E;
  l.top_k = 4;
  l.hidden = H;
  l.inter = I;
  l.swiglu_limit = 7.f;
  l.swiglu_alpha = 1.702f;
  return l;
}

double expert_bytes(const ms::cuda::MoeLayer &l) {
  const double H = l.hidden, I = l.inter;
  return 2 * I * (H / 32 * 17 + 2) + H * (I / 32 * 17 + 2);
}

double router_bytes(const ms::cuda::MoeLayer &l) { return double(l.n_experts) * (l.hidden + 1) * 2; }

float time_ms(cudaStream_t s, int iters, const std::function<void()> &fn) {
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  fn();  // warm-up
  check(cudaStreamSynchronize(s), "warm-up");
  cudaEventRecord(a, s);
  for (int i = 0; i < iters; ++i) fn();
  cudaEventRecord(b, s);
  check(cudaEventSynchronize(b), "timing");
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return ms / iters;
}

}  // namespace

int main(int argc, char **argv) {
  int L = 24, E = 32, iters = 20;
  const int H = 2880, I = 2880;
  for (ms_tools::CliArgs args(argc, argv); args.next();) {
    const std::string a = args.name();
    if (a == "--layers") L = args.int_value();
    else if (a == "--experts") E = args.int_value();
    else if (a == "--iters") iters = args.int_value();
    else {
      std::fprintf(stderr, "bench_cuda_moe: unknown option %s\n", a.c_str());
      return 2;
    }
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaStream_t stream;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream");

  // Device-to-device copy bandwidth, measured here as the physical reference.
  const size_t copy_bytes = size_t(1) << 30;
  uint8_t *src = alloc<uint8_t>(copy_bytes), *dst = alloc<uint8_t>(copy_bytes);
  check(cudaMemset(src, 1, copy_bytes), "memset");
  const float copy_ms =
      time_ms(stream, 10, [&] { cudaMemcpyAsync(dst, src, copy_bytes, cudaMemcpyDeviceToDevice, stream); });
  const double copy_gbs = 2.0 * copy_bytes / (copy_ms * 1e-3) / 1e9;
  cudaFree(src);
  cudaFree(dst);

  std::vector<ms::cuda::MoeLayer> layers;
  for (int l = 0; l < L; ++l) layers.push_back(random_layer(E, H, I, 1000 + 37 * l));
  const int max_t = 1024;
  float *x = alloc<float>(size_t(max_t) * H), *res = alloc<float>(size_t(max_t) * H);
  fill_f32<<<1024, 256>>>(x, size_t(max_t) * H, 7, 1.7f);
  check(cudaMemset(res, 0, size_t(max_t) * H * sizeof(float)), "memset");
  const size_t ws_bytes = ms::cuda::moe_workspace_bytes(layers[0], max_t);
  void *ws = alloc<uint8_t>(ws_bytes);
  check(cudaDeviceSynchronize(), "init");

  std::printf("bench_cuda_moe: %s, %d SMs; MoE block at H=%d I=%d E=%d top-4, %d layers, random MXFP4 weights\n",
              prop.name, prop.multiProcessorCount, H, I, E, L);
  std::printf("device-to-device copy (read+write): %.0f GB/s\n", copy_gbs);
  std::printf("%-8s %4s %10s %12s %10s %10s %10s %12s\n", "tokens", "tile", "us/step", "GB touched", "GB/s",
              "vs 3.0TB/s", "vs copy", "us/layer");

  namespace m = ms::cuda::moe;
  const int runs[] = {1, 8, 64, 1024};
  for (const int T : runs) {
    auto forward = [&](const ms::cuda::MoeLayer &l) {
      ms::cuda::moe_forward(l, x, T, res, ws, stream, ms::cuda::MoeNextNorm{});
    };
    // Bytes touched: router + distinct experts per layer (routing read back once, outside the timing).
    double bytes = 0;
    for (int l = 0; l < L; ++l) {
      forward(layers[l]);
      const auto w = ms::cuda::moe::carve_workspace(layers[l], T, ws);
      std::vector<int> ids(size_t(T) * 4);
      check(cudaMemcpyAsync(ids.data(), w.topk_ids, ids.size() * sizeof(int), cudaMemcpyDeviceToHost, stream), "ids");
      check(cudaStreamSynchronize(stream), "ids");
      const std::set<int> distinct(ids.begin(), ids.end());
      bytes += router_bytes(layers[l]) + distinct.size() * expert_bytes(layers[l]);
    }
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "capture");
    for (int l = 0; l < L; ++l) forward(layers[l]);
    check(cudaStreamEndCapture(stream, &graph), "end capture");
    check(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
    const float ms = time_ms(stream, T >= 1024 ? 5 : iters, [&] { cudaGraphLaunch(exec, stream); });
    const double gbs = bytes / (ms * 1e-3) / 1e9;
    std::printf("%-8d %4d %10.1f %12.3f %10.0f %9.1f%% %9.1f%% %12.2f\n", T, m::choose_token_tile(T, 4, E), ms * 1e3, bytes / 1e9, gbs, 100 * gbs / 3000,
                100 * gbs / copy_gbs, ms * 1e3 / L);
    if (T == 1024) {
      const double flops = double(L) * T * 4 * (2.0 * 2 * I * H + 2.0 * H * I);
      std::printf("prefill %d tokens: %.2f ms for %d MoE layers (%.0f TFLOP/s on the expert matmuls)\n", T, ms, L,
                  flops / (ms * 1e-3) / 1e12);
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }

  // Where the time goes: each stage alone over all layers (same routing as a full forward leaves behind). The matmul
  // stages also show the weight bandwidth (distinct experts of that routing x bytes per expert / time).
  std::printf("\nstage breakdown, us per layer (each stage alone, stream launches, no graph; at <= 8 tokens the\n"
              "router kernel also groups and moe_forward skips the group kernel)\n"
              "%-8s %4s %8s %8s %8s %8s %8s %9s %9s\n",
              "tokens", "tile", "router", "group", "gate_up", "down", "combine", "gu TB/s", "dn TB/s");
  for (const int T : runs) {
    const int tile = m::choose_token_tile(T, 4, E);
    ms::cuda::moe_forward(layers[0], x, T, res, ws, stream, ms::cuda::MoeNextNorm{});
    const auto w = m::carve_workspace(layers[0], T, ws);
    std::vector<int> ids(size_t(T) * 4);
    check(cudaMemcpyAsync(ids.data(), w.topk_ids, ids.size() * sizeof(int), cudaMemcpyDeviceToHost, stream), "ids");
    check(cudaStreamSynchronize(stream), "ids");
    const double n_distinct = double(std::set<int>(ids.begin(), ids.end()).size());
    const double gu_bytes = n_distinct * 2.0 * I * (H / 32 * 17 + 2), dn_bytes = n_distinct * H * (I / 32 * 17 + 2);
    const int reps = T >= 1024 ? 3 : iters;
    auto per_layer = [&](const std::function<void(const ms::cuda::MoeLayer &)> &stage) {
      return 1e3 * time_ms(stream, reps, [&] {
               for (int l = 0; l < L; ++l) stage(layers[l]);
             }) / L;
    };
    const double r = per_layer([&](const auto &l) { m::launch_router_topk(l, x, T, tile, w, stream); });
    const double g = per_layer([&](const auto &l) { m::launch_group(l, T, tile, w, stream); });
    const double gu = per_layer([&](const auto &l) { m::launch_gate_up_swiglu(l, T, tile, w, stream); });
    const double d = per_layer([&](const auto &l) { m::launch_down(l, T, tile, w, stream); });
    const double c = per_layer([&](const auto &l) { m::launch_combine(l, T, res, w, stream); });
    std::printf("%-8d %4d %8.2f %8.2f %8.2f %8.2f %8.2f %9.2f %9.2f\n", T, tile, r, g, gu, d, c,
                gu_bytes / (gu * 1e-6) / 1e12, dn_bytes / (d * 1e-6) / 1e12);
  }
  check(cudaDeviceSynchronize(), "end");
  return 0;
}
