// The decode router in one block (moe_router_block.cu, MODELSERVE_MOE_ROUTER_BLOCK=1) against the cluster router of
// moe_router.cu on the same tokens, with and without the input norm: the fp16 copy of the (normed) tokens must be
// bitwise equal (same norm order, same products), the expert ids equal and the weights within 2e-6 wherever the
// logits are not within 1e-4 of a tie (the logits are summed in another order: a few ulp), and the grouping the same
// (tile list, slots). Also the tie rule on all-equal logits.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "cpu/matmul_bf16.h"
#include "cpu/router.h"
#include "cuda/moe/moe_internal.cuh"
#include "moe_reference.h"

namespace ms::cuda::test {
namespace {

struct Routed {
  std::vector<uint16_t> xh;
  std::vector<int> ids, slot_token, slot_of, off;
  std::vector<float> wts;
  std::vector<moe::Tile> tiles;
};

Routed read_back(const moe::Workspace &w, int T, int H, int E, int K) {
  Routed r;
  r.xh = download(w.xh, size_t(T) * H);
  r.ids = download(w.topk_ids, size_t(T) * K);
  r.wts = download(w.topk_w, size_t(T) * K);
  r.slot_token = download(w.slot_token, size_t(T) * K);
  r.slot_of = download(w.slot_of, size_t(T) * K);
  r.off = download(w.expert_off, E + 1);
  r.tiles = download(w.tiles, size_t(download(w.n_tiles, 1)[0]));
  return r;
}

}  // namespace

TEST(MoeRouterBlock, MatchesTheClusterRouter) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  for (const int E : {32, 128}) {
    const int K = 4, H = 2880;
    const HostMoe m = random_moe(140 + E, E, K, H, 32);
    const DeviceMoe dm(m);
    std::vector<float> gain = random_f32(141, H, 0.5f);
    for (float &g : gain) g += 1.f;
    float *d_gain = to_device(gain);
    void *ws = nullptr;
    check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, 8)), "cudaMalloc");
    for (const int T : {1, 2, 5, 8})
      for (const bool norm : {false, true}) {
        SCOPED_TRACE("E " + std::to_string(E) + ", " + std::to_string(T) + " tokens, norm " + (norm ? "on" : "off"));
        const std::vector<float> x = random_f32(150 + T, size_t(T) * H, 2.0f);
        float *dx = to_device(x);
        const moe::Workspace w = moe::carve_workspace(dm.layer, T, ws);
        const MoeInputNorm in = norm ? MoeInputNorm{d_gain, 1e-5f} : MoeInputNorm{};
        ASSERT_TRUE(moe::launch_router_topk(dm.layer, dx, T, 8, w, nullptr, in));
        check_cuda(cudaDeviceSynchronize(), "cluster router");
        const Routed want = read_back(w, T, H, E, K);
        check_cuda(cudaMemset(ws, 0xff, moe::carve_workspace(dm.layer, T, nullptr).bytes), "poison");
        ASSERT_TRUE(moe::block_router_applies(T, MoeL2Prefetch{}));
        moe::launch_router_block(dm.layer, dx, T, 8, w, nullptr, in);
        check_cuda(cudaDeviceSynchronize(), "block router");
        const Routed got = read_back(w, T, H, E, K);
        EXPECT_EQ(0, std::memcmp(want.xh.data(), got.xh.data(), want.xh.size() * 2)) << "fp16 tokens differ";
        // Near-ties from the CPU's logits of the same (normed, as the kernels compute it) tokens.
        std::vector<float> xn(x);
        if (norm)
          for (int t = 0; t < T; ++t) {
            double ss = 0;
            for (int i = 0; i < H; ++i) ss += double(x[size_t(t) * H + i]) * x[size_t(t) * H + i];
            const float inv = float(1.0 / std::sqrt(ss / H + 1e-5));
            for (int i = 0; i < H; ++i) xn[size_t(t) * H + i] = x[size_t(t) * H + i] * inv * gain[i];
          }
        Reference ref;
        ref.logits.resize(size_t(T) * E);
        const std::vector<float> rb = bf16_vec_to_f32(m.router_b, 0, E);
        matmul_bf16_rows(Simd::Scalar, xn.data(), T, H, m.router_w.data(), rb.data(), H, 0, E, ref.logits.data(), E);
        bool any_tie = false;
        for (int t = 0; t < T; ++t) {
          if (near_tie(ref, t, E, K, 1e-4f)) {
            any_tie = true;
            continue;
          }
          for (int j = 0; j < K; ++j) {
            EXPECT_EQ(got.ids[t * K + j], want.ids[t * K + j]) << "token " << t << " choice " << j;
            EXPECT_NEAR(got.wts[t * K + j], want.wts[t * K + j], 2e-6f) << "token " << t << " choice " << j;
          }
        }
        if (!any_tie) {  // same choices: the same grouping
          EXPECT_EQ(got.slot_token, want.slot_token);
          EXPECT_EQ(got.slot_of, want.slot_of);
          EXPECT_EQ(got.off, want.off);
          ASSERT_EQ(got.tiles.size(), want.tiles.size());
          for (size_t i = 0; i < got.tiles.size(); ++i) {
            EXPECT_EQ(got.tiles[i].expert, want.tiles[i].expert);
            EXPECT_EQ(got.tiles[i].first_slot, want.tiles[i].first_slot);
            EXPECT_EQ(got.tiles[i].count, want.tiles[i].count);
          }
        }
        cudaFree(dx);
      }
    cudaFree(ws);
    cudaFree(d_gain);
  }
}

TEST(MoeRouterBlock, EqualLogitsPickLowerExpertIndexFirst) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  const int E = 40, K = 4, H = 64, T = 3;
  HostMoe m = random_moe(7, E, K, H, 32);
  std::fill(m.router_w.begin(), m.router_w.end(), uint16_t(0));
  for (int e = 0; e < E; ++e) m.router_b[e] = f32_to_bf16(e % 3 == 1 ? 1.0f : 0.0f);  // experts 1, 4, 7, 10, ...
  const DeviceMoe dm(m);
  void *ws = nullptr;
  check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, T)), "cudaMalloc");
  const moe::Workspace w = moe::carve_workspace(dm.layer, T, ws);
  float *dx = to_device(random_f32(8, size_t(T) * H, 1.0f));
  moe::launch_router_block(dm.layer, dx, T, 8, w, nullptr, MoeInputNorm{});
  const std::vector<int> ids = download(w.topk_ids, size_t(T) * K);
  const std::vector<float> wts = download(w.topk_w, size_t(T) * K);
  for (int t = 0; t < T; ++t)
    for (int j = 0; j < K; ++j) {
      EXPECT_EQ(ids[t * K + j], 1 + 3 * j);
      EXPECT_FLOAT_EQ(wts[t * K + j], 0.25f);
    }
  EXPECT_EQ(download(w.n_tiles, 1)[0], K);  // every token chose the same 4: 4 tiles of 3 slots
  cudaFree(dx);
  cudaFree(ws);
}

}  // namespace ms::cuda::test
