// The combine run by the decode down kernel's last block (MatmulArgs::tail, what moe_forward does at decode with
// MODELSERVE_MOE_COMBINE_TAIL=1) against the stand-alone combine kernel after the same down kernel: the updated
// residual stream and the next layer's normed input must be bitwise equal (same function, same block size, same
// order). Run twice in a row on the same workspace, so that a counter left non-zero by the first launch (the second
// would then skip its combine or run it early) shows.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cuda/moe/moe_combine.cuh"
#include "moe_reference.h"

namespace ms::cuda::test {
namespace {

bool bits_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(MoeCombineTail, LastDownBlockCombinesAsTheCombineKernel) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  const int E = 32, K = 4, H = 2880, I = 512;
  const HostMoe m = random_moe(81, E, K, H, I);
  const DeviceMoe dm(m);
  void *ws = nullptr;
  check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, 8)), "cudaMalloc");
  const std::vector<float> gain = random_f32(82, H, 0.5f);
  float *d_gain = to_device(gain);
  for (const int T : {1, 2, 5, 8}) {
    SCOPED_TRACE(std::to_string(T) + " tokens");
    const int tile = moe::choose_token_tile(T, K, E);
    ASSERT_EQ(tile, 8);  // the decode kernel's token tile
    const moe::Workspace w = moe::carve_workspace(dm.layer, T, ws);
    const std::vector<float> x = random_f32(90 + T, size_t(T) * H, 1.0f), res0 = random_f32(95 + T, size_t(T) * H, 3.0f);
    float *dx = to_device(x), *plain_res = to_device(res0), *tail_res = to_device(res0);
    float *plain_norm = to_device(std::vector<float>(size_t(T) * H, 0.f));
    float *tail_norm = to_device(std::vector<float>(size_t(T) * H, 0.f));
    for (int round = 0; round < 2; ++round) {
      SCOPED_TRACE("round " + std::to_string(round));
      ASSERT_TRUE(moe::launch_router_topk(dm.layer, dx, T, tile, w, nullptr));  // one cluster: it also groups
      moe::launch_gate_up_swiglu(dm.layer, T, tile, w, nullptr);
      EXPECT_FALSE(moe::launch_down(dm.layer, T, tile, w, nullptr));
      moe::launch_combine(dm.layer, T, plain_res, w, nullptr, MoeNextNorm{d_gain, 1e-5f, plain_norm});
      const moe::CombineArgs tail = moe::combine_args(dm.layer, tail_res, w, MoeNextNorm{d_gain, 1e-5f, tail_norm});
      EXPECT_TRUE(moe::launch_down(dm.layer, T, tile, w, nullptr, false, &tail));
      check_cuda(cudaDeviceSynchronize(), "router, gate_up, down, combine");
      const auto pr = download(plain_res, size_t(T) * H), tr = download(tail_res, size_t(T) * H);
      EXPECT_TRUE(bits_equal(pr, tr)) << "residual differs";
      EXPECT_TRUE(bits_equal(download(plain_norm, size_t(T) * H), download(tail_norm, size_t(T) * H)))
          << "next norm differs";
      EXPECT_FALSE(bits_equal(pr, res0)) << "the combine added nothing";
      EXPECT_EQ(download(w.tail_counter, 1)[0], 0) << "the counter must be left at zero";
    }
    for (float *p : {dx, plain_res, tail_res, plain_norm, tail_norm}) cudaFree(p);
  }
  cudaFree(d_gain);
  cudaFree(ws);
}

}  // namespace ms::cuda::test
