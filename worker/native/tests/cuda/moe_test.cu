// CUDA MoE kernels against the CPU engine's MoE math on fresh random inputs (GPU-only: needs a CUDA device).
//
// Tolerances: the GPU feeds the tensor cores fp16 activations (x and the SwiGLU output; relative rounding 2^-11) with
// exact weights and fp32 accumulation, so each output may differ from the all-fp32 CPU path by a few 1e-4 of the
// output's magnitude; the checks allow 2e-3 of the largest |MoE output| of the batch. Tokens whose router logits are
// within 1e-4 of a tie are skipped (either expert is a correct choice) and there must be few of them.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "cuda/moe/moe.cuh"
#include "cuda/moe/moe_internal.cuh"
#include "cpu/rmsnorm.h"
#include "moe_reference.h"

namespace ms::cuda::test {
namespace {

constexpr float kTieGap = 1e-4f;

struct DeviceBuffer {
  void *p = nullptr;
  explicit DeviceBuffer(size_t bytes) { check_cuda(cudaMalloc(&p, bytes ? bytes : 1), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer &) = delete;
  DeviceBuffer &operator=(const DeviceBuffer &) = delete;
  template <typename T>
  T *as() const {
    return static_cast<T *>(p);
  }
};

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_DEVICE() \
  if (!have_device()) GTEST_SKIP() << "no CUDA device"

}  // namespace

struct Case {
  int E, K, H, I, T;
  uint32_t seed;
};

void PrintTo(const Case &c, std::ostream *os) {
  *os << "E" << c.E << "_K" << c.K << "_H" << c.H << "_I" << c.I << "_T" << c.T;
}

class MoeForward : public ::testing::TestWithParam<Case> {};

TEST_P(MoeForward, MatchesCpuEngine) {
  REQUIRE_DEVICE();
  const Case c = GetParam();
  const HostMoe m = random_moe(c.seed, c.E, c.K, c.H, c.I);
  const std::vector<float> x = random_f32(c.seed + 1, size_t(c.T) * c.H, 1.0f);
  const std::vector<float> residual = random_f32(c.seed + 2, size_t(c.T) * c.H, 1.0f);
  const Reference ref = cpu_reference(m, x, c.T);
  // The random scales are chosen so that both clamps of the SwiGLU are exercised; make sure they were.
  EXPECT_GT(ref.gates_over_limit, 0);
  EXPECT_GT(ref.linears_clamped, 0);

  DeviceMoe dm(m);
  // A workspace sized for more tokens than used, as the executor does (one workspace for every batch size).
  DeviceBuffer ws(moe_workspace_bytes(dm.layer, c.T + 17));
  float *dx = to_device(x), *dres = to_device(residual);
  moe_forward(dm.layer, dx, c.T, dres, ws.p, nullptr);
  check_cuda(cudaDeviceSynchronize(), "moe_forward");
  std::vector<float> got(size_t(c.T) * c.H);
  check_cuda(cudaMemcpy(got.data(), dres, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");

  float scale = 0.f;
  for (float v : ref.moe_out) scale = std::max(scale, std::fabs(v));
  ASSERT_GT(scale, 0.f);
  const float tol = 2e-3f * scale;
  int skipped = 0;
  double worst = 0;
  for (int t = 0; t < c.T; ++t) {
    if (near_tie(ref, t, c.E, c.K, kTieGap)) {
      ++skipped;
      continue;
    }
    for (int h = 0; h < c.H; ++h) {
      const size_t i = size_t(t) * c.H + h;
      const double err = std::fabs(double(got[i]) - (double(residual[i]) + ref.moe_out[i]));
      worst = std::max(worst, err);
      ASSERT_LE(err, tol) << "token " << t << " hidden " << h << ": got " << got[i] << ", want "
                          << residual[i] + ref.moe_out[i];
    }
  }
  EXPECT_LE(skipped, std::max(1, c.T / 10)) << "too many near-tie tokens to be a fair test";
  RecordProperty("max_abs_err_over_scale", std::to_string(worst / scale));
  std::printf("    [%s] max |err| / max |moe out| = %.2e (tolerance 2e-3), %d near-tie tokens skipped\n",
              ::testing::PrintToString(c).c_str(), worst / scale, skipped);
  cudaFree(dx);
  cudaFree(dres);
}

// Token counts cover the decode tile (8) with one and several tiles per expert, the mid-batch tile (16: T = 31 at
// E = 8, 700 at E = 128 and 130 at the 20b shape) and the prefill tile (64: T = 300 at E = 8, 200 at E = 32) with
// partial tiles; E = 128 exercises more experts than a warp has lanes in the router; the 20b shape runs at decode and
// at a mid-size batch.
INSTANTIATE_TEST_SUITE_P(Shapes, MoeForward,
                         ::testing::Values(Case{8, 2, 128, 96, 1, 11}, Case{8, 2, 128, 96, 5, 12},
                                           Case{8, 2, 128, 96, 31, 13}, Case{8, 2, 128, 96, 300, 14},
                                           Case{128, 4, 256, 64, 9, 15}, Case{128, 4, 256, 64, 700, 16},
                                           Case{32, 4, 2880, 2880, 1, 17}, Case{32, 4, 2880, 2880, 7, 18},
                                           Case{32, 4, 2880, 2880, 130, 19}, Case{32, 4, 512, 256, 200, 20}),
                         [](const ::testing::TestParamInfo<Case> &info) {
                           return ::testing::PrintToString(info.param);
                         });

TEST(MoeRouter, TopkAndWeightsMatchCpu) {
  REQUIRE_DEVICE();
  for (const int E : {32, 128}) {
    const int K = 4, H = 2880, T = 200;
    const HostMoe m = random_moe(40 + E, E, K, H, 32);
    const std::vector<float> x = random_f32(41, size_t(T) * H, 1.0f);
    std::vector<float> logits(size_t(T) * E);
    std::vector<int> ids(size_t(T) * K);
    std::vector<float> wts(size_t(T) * K);
    const std::vector<float> rb = bf16_vec_to_f32(m.router_b, 0, E);
    matmul_bf16_rows(Simd::Scalar, x.data(), T, H, m.router_w.data(), rb.data(), H, 0, E, logits.data(), E);
    for (int t = 0; t < T; ++t)
      router_topk_softmax(&logits[size_t(t) * E], E, K, &ids[size_t(t) * K], &wts[size_t(t) * K]);
    Reference ref;
    ref.logits = logits;

    DeviceMoe dm(m);
    DeviceBuffer ws(moe_workspace_bytes(dm.layer, T));
    const moe::Workspace w = moe::carve_workspace(dm.layer, T, ws.p);
    float *dx = to_device(x);
    moe::launch_router_topk(dm.layer, dx, T, moe::kMinTokenTile, w, nullptr);
    check_cuda(cudaDeviceSynchronize(), "router");
    std::vector<int> gids(ids.size());
    std::vector<float> gw(wts.size());
    check_cuda(cudaMemcpy(gids.data(), w.topk_ids, gids.size() * sizeof(int), cudaMemcpyDeviceToHost), "D2H");
    check_cuda(cudaMemcpy(gw.data(), w.topk_w, gw.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
    int compared = 0;
    for (int t = 0; t < T; ++t) {
      if (near_tie(ref, t, E, K, kTieGap)) continue;
      ++compared;
      for (int j = 0; j < K; ++j) {
        ASSERT_EQ(gids[t * K + j], ids[t * K + j]) << "E " << E << " token " << t << " choice " << j;
        ASSERT_NEAR(gw[t * K + j], wts[t * K + j], 2e-6f) << "E " << E << " token " << t << " choice " << j;
      }
    }
    EXPECT_GE(compared, T * 9 / 10);
    cudaFree(dx);
  }
}

TEST(MoeRouter, EqualLogitsPickLowerExpertIndexFirst) {
  REQUIRE_DEVICE();
  // All-zero router weights and a bias with repeated values: the order is decided by the tie rule alone.
  const int E = 40, K = 4, H = 64, T = 3;
  HostMoe m = random_moe(7, E, K, H, 32);
  std::fill(m.router_w.begin(), m.router_w.end(), uint16_t(0));
  for (int e = 0; e < E; ++e) m.router_b[e] = f32_to_bf16(e % 3 == 1 ? 1.0f : 0.0f);  // experts 1, 4, 7, 10, ...
  const std::vector<float> x = random_f32(8, size_t(T) * H, 1.0f);
  DeviceMoe dm(m);
  DeviceBuffer ws(moe_workspace_bytes(dm.layer, T));
  const moe::Workspace w = moe::carve_workspace(dm.layer, T, ws.p);
  float *dx = to_device(x);
  moe::launch_router_topk(dm.layer, dx, T, moe::kMinTokenTile, w, nullptr);
  check_cuda(cudaDeviceSynchronize(), "router");
  std::vector<int> gids(size_t(T) * K);
  std::vector<float> gw(size_t(T) * K);
  check_cuda(cudaMemcpy(gids.data(), w.topk_ids, gids.size() * sizeof(int), cudaMemcpyDeviceToHost), "D2H");
  check_cuda(cudaMemcpy(gw.data(), w.topk_w, gw.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < K; ++j) {
      EXPECT_EQ(gids[t * K + j], 1 + 3 * j);
      EXPECT_FLOAT_EQ(gw[t * K + j], 0.25f);
    }
  cudaFree(dx);
}

TEST(MoeForwardDeterminism, RepeatedRunsAreBitwiseEqual) {
  REQUIRE_DEVICE();
  const int E = 32, K = 4, H = 512, I = 256, T = 96;
  const HostMoe m = random_moe(21, E, K, H, I);
  const std::vector<float> x = random_f32(22, size_t(T) * H, 1.0f);
  DeviceMoe dm(m);
  DeviceBuffer ws(moe_workspace_bytes(dm.layer, T));
  std::vector<float> first;
  for (int run = 0; run < 3; ++run) {
    std::vector<float> zero(size_t(T) * H, 0.f), got(zero.size());
    float *dx = to_device(x), *dres = to_device(zero);
    moe_forward(dm.layer, dx, T, dres, ws.p, nullptr);
    check_cuda(cudaMemcpy(got.data(), dres, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
    if (run == 0) first = got;
    else ASSERT_EQ(0, std::memcmp(first.data(), got.data(), got.size() * sizeof(float))) << "run " << run;
    cudaFree(dx);
    cudaFree(dres);
  }
}

// The combine kernel's optional next-layer RMSNorm: the residual is what it is without it (bitwise), and the normed
// rows match the CPU scalar rmsnorm of that residual.
TEST(MoeForwardNextNorm, WritesRmsNormOfTheUpdatedResidual) {
  REQUIRE_DEVICE();
  const int E = 32, K = 4, H = 512, I = 256, T = 9;
  const HostMoe m = random_moe(31, E, K, H, I);
  const std::vector<float> x = random_f32(32, size_t(T) * H, 1.0f);
  const std::vector<float> residual = random_f32(33, size_t(T) * H, 1.0f);
  const std::vector<float> gain = random_f32(34, H, 1.0f);
  const float eps = 1e-5f;
  DeviceMoe dm(m);
  DeviceBuffer ws(moe_workspace_bytes(dm.layer, T));
  float *dx = to_device(x), *dres = to_device(residual), *dres2 = to_device(residual), *dgain = to_device(gain);
  DeviceBuffer normed(size_t(T) * H * sizeof(float));
  moe_forward(dm.layer, dx, T, dres, ws.p, nullptr);
  moe_forward(dm.layer, dx, T, dres2, ws.p, nullptr, MoeNextNorm{dgain, eps, normed.as<float>()});
  check_cuda(cudaDeviceSynchronize(), "moe_forward");
  std::vector<float> r1(size_t(T) * H), r2(r1.size()), got(r1.size()), want(r1.size());
  check_cuda(cudaMemcpy(r1.data(), dres, r1.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  check_cuda(cudaMemcpy(r2.data(), dres2, r2.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  check_cuda(cudaMemcpy(got.data(), normed.p, got.size() * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  ASSERT_EQ(0, std::memcmp(r1.data(), r2.data(), r1.size() * sizeof(float)));
  for (int t = 0; t < T; ++t) ms::rmsnorm(Simd::Scalar, &r2[size_t(t) * H], gain.data(), H, eps, &want[size_t(t) * H]);
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(double(got[i]) - want[i]) / (1.0 + std::fabs(want[i])));
  EXPECT_LT(worst, 1e-5);
  for (float *p : {dx, dres, dres2, dgain}) cudaFree(p);
}

TEST(MoeForwardValidation, BadShapesAreRejectedWithTheFieldName) {
  MoeLayer l{};
  l.n_experts = 32;
  l.top_k = 4;
  l.hidden = 2880;
  l.inter = 100;  // not a multiple of 32
  try {
    moe_workspace_bytes(l, 8);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("inter"), std::string::npos) << e.what();
  }
  l.inter = 2880;
  l.top_k = 9;
  EXPECT_THROW(moe_workspace_bytes(l, 8), std::invalid_argument);
  l.top_k = 4;
  try {  // null weight pointers
    moe_workspace_bytes(l, 8);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument &e) {
    EXPECT_NE(std::string(e.what()).find("router_w is null"), std::string::npos) << e.what();
  }
}

}  // namespace ms::cuda::test
