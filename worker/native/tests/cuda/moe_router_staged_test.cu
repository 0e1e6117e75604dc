// The staged router kernel (x, the gain and the first expert row in shared memory / registers; moe_router.cu) against
// the global-memory one on the same inputs: both do the same arithmetic in the same order, so every output must be
// bitwise equal — the top-k ids and weights, the fp16 copy of (normed) x and, where the router also groups (one
// cluster: <= 8 tokens), the slots, expert offsets and tile list. The global-memory kernel is itself checked against
// the CPU engine (moe_test.cu, moe_norm_l2_test.cu). Shapes: the 20b/120b router (E 32 / 128, H 2880), a small one and
// the largest hidden the staged kernel takes (3072); 1, 3, 8 tokens (decode: one cluster, grouped) and 9, 20 (several
// clusters, grouped by the group kernel); with and without the input norm and the L2 hint clusters.
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/moe/moe_internal.cuh"
#include "moe_reference.h"

namespace ms::cuda::test {
namespace {

// Everything the router (and its grouping) writes, read back.
struct RouterOut {
  std::vector<int> ids, slot_token, slot_of, expert_off, tiles;
  std::vector<float> wts;
  std::vector<uint16_t> xh;
  int n_tiles = 0;
};

RouterOut route(const DeviceMoe &dm, size_t gate_up_bytes, const float *x, int T, const float *gain, bool hints,
                void *ws, moe::RouterVariant variant) {
  const MoeLayer &l = dm.layer;
  const moe::Workspace w = moe::carve_workspace(l, T, ws);
  check_cuda(cudaMemset(ws, 0xff, w.bytes), "memset");  // whatever a kernel leaves unwritten shows as a difference
  MoeL2Prefetch l2{};
  if (hints) l2.fetch[0] = L2Range{l.gate_up_blocks, gate_up_bytes};  // a range inside an allocation
  const int tile = moe::kMinTokenTile;
  if (!moe::launch_router_topk(l, x, T, tile, w, nullptr, MoeInputNorm{gain, 1e-5f}, l2, variant))
    moe::launch_group(l, T, tile, w, nullptr);
  check_cuda(cudaDeviceSynchronize(), "router");
  check_cuda(cudaGetLastError(), "router launch");
  const int P = T * l.top_k;
  RouterOut o;
  o.ids = download(w.topk_ids, P);
  o.wts = download(w.topk_w, P);
  o.xh = download(w.xh, size_t(T) * l.hidden);
  o.slot_token = download(w.slot_token, P);
  o.slot_of = download(w.slot_of, P);
  o.expert_off = download(w.expert_off, l.n_experts + 1);
  o.n_tiles = download(w.n_tiles, 1)[0];
  const std::vector<moe::Tile> tiles = download(w.tiles, size_t(std::max(0, o.n_tiles)));
  for (const moe::Tile &t : tiles) o.tiles.insert(o.tiles.end(), {t.expert, t.first_slot, t.count});
  return o;
}

bool bitwise_equal(const std::vector<float> &a, const std::vector<float> &b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

TEST(MoeRouterStaged, BitwiseEqualToTheGlobalMemoryKernel) {
  if (!device_present()) GTEST_SKIP() << "no CUDA device";
  struct Shape {
    int E, K, H;
  };
  int compared = 0;
  for (const Shape s : {Shape{32, 4, 2880}, Shape{128, 4, 2880}, Shape{40, 4, 64}, Shape{64, 8, 3072}}) {
    const HostMoe m = random_moe(90 + s.E + s.H, s.E, s.K, s.H, 32);
    DeviceMoe dm(m);
    std::vector<float> gain_h = random_f32(91, s.H, 0.25f);
    for (float &g : gain_h) g += 1.f;
    float *gain = to_device(gain_h);
    for (const int T : {1, 3, 8, 9, 20}) {
      const std::vector<float> x_h = random_f32(92 + T, size_t(T) * s.H, 1.0f);
      float *x = to_device(x_h);
      void *ws = nullptr;
      check_cuda(cudaMalloc(&ws, moe_workspace_bytes(dm.layer, T)), "cudaMalloc");
      for (const bool norm : {false, true})
        for (const bool hints : {false, true}) {
          SCOPED_TRACE("E " + std::to_string(s.E) + " H " + std::to_string(s.H) + " T " + std::to_string(T) +
                       (norm ? " norm" : "") + (hints ? " hints" : ""));
          const float *g = norm ? gain : nullptr;
          const RouterOut a = route(dm, m.gate_up_blocks.size(), x, T, g, hints, ws, moe::RouterVariant::kGlobal);
          const RouterOut b = route(dm, m.gate_up_blocks.size(), x, T, g, hints, ws, moe::RouterVariant::kStaged);
          EXPECT_EQ(a.ids, b.ids);
          EXPECT_TRUE(bitwise_equal(a.wts, b.wts));
          EXPECT_EQ(a.xh, b.xh);
          EXPECT_EQ(a.n_tiles, b.n_tiles);
          EXPECT_EQ(a.tiles, b.tiles);
          EXPECT_EQ(a.slot_token, b.slot_token);
          EXPECT_EQ(a.slot_of, b.slot_of);
          EXPECT_EQ(a.expert_off, b.expert_off);
          EXPECT_EQ(a.expert_off.back(), T * s.K);  // the grouping ran and placed every pair
          ++compared;
        }
      cudaFree(ws);
      cudaFree(x);
    }
    cudaFree(gain);
  }
  EXPECT_EQ(compared, 4 * 5 * 4);
}

}  // namespace ms::cuda::test
