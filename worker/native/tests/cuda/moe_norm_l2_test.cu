// The MoE's two decode-step options against the plain path, on the GPU: the input norm done by the router kernel
// (MoeInputNorm, what the executor does unless MODELSERVE_CUDA_MOE_NORM_FUSED=0) against the stand-alone rmsnorm
// kernel followed by moe_forward and against the CPU engine; and the L2 hints (MoeL2Prefetch, what the executor passes
// unless MODELSERVE_CUDA_L2_PREFETCH=0), which must leave every result bitwise unchanged.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cpu/rmsnorm.h"
#include "cuda/kernels.cuh"
#include "moe_reference.h"

namespace ms::cuda::test {
namespace {

// Device allocations of one test, freed together.
struct DeviceArena {
  std::vector<void *> owned;
  template <typename T>
  T *copy(const std::vector<T> &v) {
    T *p = to_device(v);
    owned.push_back(p);
    return p;
  }
  template <typename T>
  T *alloc(size_t n) {
    void *p = nullptr;
    check_cuda(cudaMalloc(&p, n * sizeof(T) + 16), "cudaMalloc");
    owned.push_back(p);
    return static_cast<T *>(p);
  }
  ~DeviceArena() {
    for (void *p : owned) cudaFree(p);
  }
};

// Norm gains around 1 (as trained ones are), none near 0.
std::vector<float> random_gain(uint32_t seed, int n) {
  std::vector<float> g = random_f32(seed, n, 0.25f);
  for (float &v : g) v = 1.f + std::max(-0.75f, std::min(0.75f, v));
  return g;
}

constexpr float kEps = 1e-5f;
constexpr float kTieGap = 1e-4f;

}  // namespace

// Fused input norm vs rmsnorm kernel + moe_forward, both adding into the residual stream in place as the executor
// does (with the fused norm the MoE's input and residual are the same buffer), at decode sizes (one router cluster,
// which also groups), 20 tokens (three router clusters, then the group kernel) and 130 (17 clusters, mid tile of 16).
//
// Tolerances. Fused vs unfused: the router kernel sums the squares in rmsnorm.cu's order and scales as it does, so
// the two are expected to be bitwise equal; all the compiler may change is how the sum of squares is contracted
// (fma), which moves 1/rms by a few ulp (~1e-7 relative). That moves an fp16 copy of an input element by one fp16 ulp
// (2^-11) only where it sits that close to a rounding boundary, a change of ~1e-7 of the output per such element;
// 1e-4 of the largest |MoE output| leaves a wide margin, while a norm applied wrongly (no gain, no 1/rms: inputs off by
// tens of percent to 4x) misses it by orders of magnitude. Against the CPU engine (fp32 throughout), the 2e-3 of the
// largest |MoE output| of the other MoE tests (the fp16 activations). Tokens whose router logits are within 1e-4 of a
// tie are skipped: either choice is right, and a few-ulp difference may pick the other.
TEST(MoeInputNorm, FusedNormMatchesRmsNormKernelThenMoe) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  const int E = 32, K = 4, H = 2880, I = 512;
  const HostMoe m = random_moe(61, E, K, H, I);
  const DeviceMoe dm(m);
  const std::vector<float> gain = random_gain(62, H);
  void *ws = nullptr;
  check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, 130)), "cudaMalloc");
  for (const int T : {1, 3, 8, 20, 130}) {
    SCOPED_TRACE(std::to_string(T) + " tokens");
    DeviceArena d;
    // The residual stream with an RMS of 4: the norm scales it by ~1/4, so skipping it cannot go unnoticed.
    const std::vector<float> x = random_f32(70 + T, size_t(T) * H, 4.0f);
    float *d_gain = d.copy(gain);

    float *res_unfused = d.copy(x), *h = d.alloc<float>(size_t(T) * H);
    ms::cuda::rmsnorm(res_unfused, nullptr, T, H, d_gain, kEps, h, nullptr);
    moe_forward(dm.layer, h, T, res_unfused, ws, nullptr);
    check_cuda(cudaDeviceSynchronize(), "rmsnorm + moe_forward");
    const std::vector<float> unfused = download(res_unfused, size_t(T) * H);

    float *res_fused = d.copy(x);
    moe_forward(dm.layer, res_fused, T, res_fused, ws, nullptr, MoeNextNorm{}, MoeInputNorm{d_gain, kEps});
    check_cuda(cudaDeviceSynchronize(), "moe_forward with the input norm");
    const std::vector<float> fused = download(res_fused, size_t(T) * H);

    std::vector<float> xn(size_t(T) * H);
    for (int t = 0; t < T; ++t) ms::rmsnorm(Simd::Scalar, &x[size_t(t) * H], gain.data(), H, kEps, &xn[size_t(t) * H]);
    const Reference ref = cpu_reference(m, xn, T);
    float scale = 0.f;
    for (float v : ref.moe_out) scale = std::max(scale, std::fabs(v));
    ASSERT_GT(scale, 0.f);
    int skipped = 0;
    long differing = 0;
    double worst_gpu = 0, worst_cpu = 0;
    for (int t = 0; t < T; ++t) {
      if (near_tie(ref, t, E, K, kTieGap)) {
        ++skipped;
        continue;
      }
      for (int i = 0; i < H; ++i) {
        const size_t at = size_t(t) * H + i;
        differing += std::memcmp(&fused[at], &unfused[at], sizeof(float)) != 0;
        const double err_gpu = std::fabs(double(fused[at]) - unfused[at]);
        const double err_cpu = std::fabs(double(fused[at]) - (double(x[at]) + ref.moe_out[at]));
        worst_gpu = std::max(worst_gpu, err_gpu);
        worst_cpu = std::max(worst_cpu, err_cpu);
        ASSERT_LE(err_gpu, 1e-4 * scale) << "token " << t << " column " << i << ": fused " << fused[at]
                                         << ", rmsnorm kernel then MoE " << unfused[at];
        ASSERT_LE(err_cpu, 2e-3 * scale) << "token " << t << " column " << i << ": fused " << fused[at]
                                         << ", CPU engine " << x[at] + ref.moe_out[at];
      }
    }
    EXPECT_LE(skipped, std::max(1, T / 10)) << "too many near-tie tokens to be a fair test";
    std::printf("    [T %d] fused vs unfused: max |diff| / max |moe out| = %.2e, %ld values not bitwise equal; vs CPU "
                "%.2e; %d near-tie tokens skipped\n",
                T, worst_gpu / scale, differing, worst_cpu / scale, skipped);
  }
  cudaFree(ws);
}

// L2 hints change only what L2 keeps: the residual and the next-layer norm must be bitwise the same as without them,
// at batch 1-2 (the persistent, double-buffered decode kernel, whose weight loads become evict_first), 3 and 8 (one
// row group per block), 20 (three router clusters, hints from the first row of the grid only), with and without the
// fused input norm, and
// for each kind of hint: fetch kept (evict_last) + release, fetch at normal priority, release only. The ranges start
// off a line boundary and end mid-line, as a bias vector may.
TEST(MoeL2Hints, ResultsAreBitwiseEqualWithAndWithoutHints) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  const int E = 32, K = 4, H = 2880, I = 2880;
  const HostMoe m = random_moe(81, E, K, H, I);
  const DeviceMoe dm(m);
  DeviceArena d;
  const std::vector<float> gain = random_gain(82, H);
  float *d_gain = d.copy(gain);
  // Stand-ins for the next layer's qkv weight (29.5 MB: the 20b shape) and bias, and this layer's.
  const size_t w_bytes = size_t(5120) * H * 2, b_bytes = 5120 * 4;
  char *next = d.alloc<char>(w_bytes + b_bytes + 256), *cur = d.alloc<char>(w_bytes + b_bytes + 256);
  check_cuda(cudaMemset(next, 1, w_bytes + b_bytes + 256), "memset");
  check_cuda(cudaMemset(cur, 2, w_bytes + b_bytes + 256), "memset");
  MoeL2Prefetch kept;
  kept.fetch[0] = L2Range{next, w_bytes};
  kept.fetch[1] = L2Range{next + w_bytes + 4, b_bytes - 6};
  kept.release[0] = L2Range{cur, w_bytes};
  kept.release[1] = L2Range{cur + w_bytes + 4, b_bytes - 6};
  MoeL2Prefetch normal = kept;
  normal.keep = false;
  MoeL2Prefetch release_only;
  release_only.release[0] = kept.release[0];
  const struct {
    const char *name;
    MoeL2Prefetch hints;
  } variants[] = {{"kept fetch + release", kept}, {"normal-priority fetch", normal}, {"release only", release_only}};

  void *ws = nullptr;
  check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, 20)), "cudaMalloc");
  for (const int T : {1, 2, 3, 8, 20}) {
    const std::vector<float> x = random_f32(90 + T, size_t(T) * H, 1.0f);
    const std::vector<float> residual = random_f32(110 + T, size_t(T) * H, 1.0f);
    float *d_x = d.copy(x);
    for (const bool fused_norm : {false, true}) {
      // The residual after the MoE and the next layer's normed input, both as bytes.
      auto run = [&](const MoeL2Prefetch &hints) {
        DeviceArena r;
        float *res = r.copy(residual), *normed = r.alloc<float>(size_t(T) * H);
        moe_forward(dm.layer, d_x, T, res, ws, nullptr, MoeNextNorm{d_gain, kEps, normed},
                    fused_norm ? MoeInputNorm{d_gain, kEps} : MoeInputNorm{}, hints);
        check_cuda(cudaDeviceSynchronize(), "moe_forward");
        check_cuda(cudaGetLastError(), "moe_forward launch");
        std::vector<float> out = download(res, size_t(T) * H), nn = download(normed, size_t(T) * H);
        out.insert(out.end(), nn.begin(), nn.end());
        return out;
      };
      const std::vector<float> plain = run(MoeL2Prefetch{});
      for (const auto &v : variants) {
        const std::vector<float> got = run(v.hints);
        ASSERT_EQ(0, std::memcmp(plain.data(), got.data(), plain.size() * sizeof(float)))
            << v.name << ", " << T << " tokens, input norm " << (fused_norm ? "fused" : "off");
      }
    }
  }
  // A range with bytes but no pointer is a caller's bug, reported before anything is launched.
  MoeL2Prefetch bad;
  bad.fetch[1] = L2Range{nullptr, 128};
  float *res = d.alloc<float>(H);
  EXPECT_THROW(moe_forward(dm.layer, res, 1, res, ws, nullptr, MoeNextNorm{}, MoeInputNorm{}, bad), std::invalid_argument);
  cudaFree(ws);
}

}  // namespace ms::cuda::test
