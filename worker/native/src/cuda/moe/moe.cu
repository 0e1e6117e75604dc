// moe_forward: validates the layer description, carves the workspace and launches the MoE kernels (router + top-k
// [+ grouping], group when not fused, gate_up + SwiGLU, down, combine).
#include <algorithm>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "cuda/debug_skip.cuh"
#include "common/env.h"
#include "cuda/moe/moe.cuh"
#include "cuda/moe/moe_combine.cuh"
#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda {
namespace moe {
namespace {

constexpr size_t kAlign = 256;

// MODELSERVE_MOE_COMBINE_TAIL=1: the combine in the decode down kernel's last block. Off by default: measured once on
// an H100 (-0.04 ms per 20b token) but not yet shown correct there (docs/benchmarks/cuda.md, session 9).
bool combine_tail_switch() {
  static const bool on = env_switch("MODELSERVE_MOE_COMBINE_TAIL", false);
  return on;
}

size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

bool aligned16(const void *p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

void validate(const MoeLayer &l, int n_tokens) {
  auto fail = [](const std::string &what) { throw std::invalid_argument("moe_forward: " + what); };
  if (l.n_experts < 1 || l.n_experts > 256) fail("n_experts must be in [1, 256], got " + std::to_string(l.n_experts));
  if (l.top_k < 1 || l.top_k > 8 || l.top_k > l.n_experts)
    fail("top_k must be in [1, min(8, n_experts)], got " + std::to_string(l.top_k));
  if (l.hidden <= 0 || l.hidden % 32) fail("hidden must be a positive multiple of 32, got " + std::to_string(l.hidden));
  if (l.inter <= 0 || l.inter % 32) fail("inter must be a positive multiple of 32, got " + std::to_string(l.inter));
  // Shared memory: the prefill kernel stages 64 fp16 token rows of 512 columns plus 8 warps x (3 stages of 32 rows'
  // blocks + 32 rows of scales); the decode kernel 16 rows x K/2 bytes plus up to 8 token rows of K.
  if (l.hidden > 6144 || l.inter > 6144) fail("hidden and inter must be <= 6144");
  if (n_tokens < 0) fail("n_tokens must be >= 0, got " + std::to_string(n_tokens));
  // Every weight must be present; those read with 16-byte vector loads or cp.async must be 16-byte aligned.
  const struct {
    const char *name;
    const void *p;
    bool vector;
  } weights[] = {{"router_w", l.router_w, true},          {"router_b", l.router_b, false},
                 {"gate_up_blocks", l.gate_up_blocks, true}, {"gate_up_scales", l.gate_up_scales, true},
                 {"gate_up_bias", l.gate_up_bias, false},    {"down_blocks", l.down_blocks, true},
                 {"down_scales", l.down_scales, true},       {"down_bias", l.down_bias, false}};
  for (const auto &w : weights) {
    if (!w.p) fail(std::string(w.name) + " is null");
    if (w.vector && !aligned16(w.p)) fail(std::string(w.name) + " must be 16-byte aligned");
  }
}

}  // namespace

// Upper bound of sum_e ceil(count_e / tile) over counts summing to n_pairs: an active expert's tiles are at most
// 1 + (count - 1) / tile, and the bound grows with the number of active experts, at most min(E, n_pairs).
int max_tiles(int n_pairs, int n_experts, int token_tile) {
  const int active = std::min(n_experts, n_pairs);
  return active + (n_pairs - active) / token_tile;
}

Workspace carve_workspace(const MoeLayer &l, int max_tokens, void *base) {
  const size_t pairs = size_t(max_tokens) * l.top_k;
  char *p = static_cast<char *>(base);
  size_t off = 0;
  auto take = [&](size_t bytes) {
    char *r = p ? p + off : nullptr;
    off += align_up(bytes);
    return r;
  };
  Workspace w{};
  w.topk_ids = reinterpret_cast<int *>(take(pairs * sizeof(int)));
  w.topk_w = reinterpret_cast<float *>(take(pairs * sizeof(float)));
  w.slot_token = reinterpret_cast<int *>(take(pairs * sizeof(int)));
  w.slot_of = reinterpret_cast<int *>(take(pairs * sizeof(int)));
  w.expert_off = reinterpret_cast<int *>(take((l.n_experts + 1) * sizeof(int)));
  w.tiles = reinterpret_cast<Tile *>(take(max_tiles(int(pairs), l.n_experts, kMinTokenTile) * sizeof(Tile)));
  w.n_tiles = reinterpret_cast<int *>(take(sizeof(int)));
  w.tail_counter = reinterpret_cast<int *>(take(sizeof(int)));
  w.xh = reinterpret_cast<uint16_t *>(take(size_t(max_tokens) * l.hidden * sizeof(uint16_t)));
  w.act = reinterpret_cast<uint16_t *>(take(pairs * l.inter * sizeof(uint16_t)));
  w.dn = reinterpret_cast<float *>(take(pairs * l.hidden * sizeof(float)));
  w.bytes = off;
  return w;
}

}  // namespace moe

size_t moe_workspace_bytes(const MoeLayer &l, int max_tokens) {
  moe::validate(l, max_tokens);
  // Kernel set-up (shared-memory opt-in, occupancy) happens here, outside any graph capture.
  moe::prepare_decode(l.hidden, l.inter, max_tokens);
  moe::prepare_prefill();
  moe::prepare_router();
  return moe::carve_workspace(l, max_tokens, nullptr).bytes;
}

void moe_forward(const MoeLayer &l, const float *x, int n_tokens, float *residual, void *workspace,
                 cudaStream_t stream, const MoeNextNorm &next_norm, const MoeInputNorm &in_norm,
                 const MoeL2Prefetch &l2) {
  using namespace moe;
  validate(l, n_tokens);
  if (n_tokens == 0) return;
  if (!aligned16(x) || !aligned16(residual) || !aligned16(workspace))
    throw std::invalid_argument("moe_forward: x, residual and workspace must be 16-byte aligned");
  for (const L2Range *r : {&l2.fetch[0], &l2.fetch[1], &l2.release[0], &l2.release[1]})
    if (r->bytes && !r->ptr) throw std::invalid_argument("moe_forward: an L2 hint range has bytes but no pointer");
  // Carving for n_tokens needs no more bytes than for the max_tokens the workspace was sized for (sizes are monotone).
  const Workspace w = carve_workspace(l, n_tokens, workspace);
  const int tile = choose_token_tile(n_tokens, l.top_k, l.n_experts);
  if (!debug_skip(SkipStage::kRouter, n_tokens)) {
    if (!launch_router_topk(l, x, n_tokens, tile, w, stream, in_norm, l2)) launch_group(l, n_tokens, tile, w, stream);
  }
  if (!debug_skip(SkipStage::kGateUp, n_tokens)) launch_gate_up_swiglu(l, n_tokens, tile, w, stream, l2.any());
  // Decode with MODELSERVE_MOE_COMBINE_TAIL=1: the down kernel's last block runs the combine (one launch less).
  const bool skip_combine = debug_skip(SkipStage::kCombine, n_tokens);
  const CombineArgs tail = combine_args(l, residual, w, next_norm);
  bool combined = false;
  if (!debug_skip(SkipStage::kDown, n_tokens))
    combined = launch_down(l, n_tokens, tile, w, stream, l2.any(), combine_tail_switch() && !skip_combine ? &tail : nullptr);
  if (!combined && !skip_combine) launch_combine(l, n_tokens, residual, w, stream, next_norm);
}

}  // namespace ms::cuda
