// Shared between the MoE kernels: the workspace layout and the launch functions moe.cu strings together.
// Pipeline per layer (all on one stream, no host synchronisation):
//   router_topk   x -> (expert id, weight) x top_k per token, and x as fp16 (xh)
//   group         (token, expert) pairs -> slots grouped by expert + a list of tiles (expert, first slot, count);
//                 fused into router_topk when one cluster routes every token (<= 8 tokens)
//   mxfp4 matmul  gate_up for every tile, clamped SwiGLU in the epilogue -> act[slot][inter] (fp16)
//                 (moe_mxfp4_decode.cu for token tiles of 8, moe_mxfp4_matmul.cu for tiles of 64)
//   mxfp4 matmul  down for every tile, bias in the epilogue -> dn[slot][hidden]
//   combine       residual[t] += sum_j weight[t][j] * dn[slot_of[t][j]]
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include <cuda_runtime.h>

#include "cuda/moe/moe.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda::moe {

// One unit of matmul work: `count` consecutive slots (tokens routed to `expert`) starting at `first_slot`.
struct Tile {
  int expert, first_slot, count, pad;
};

// Device scratch carved out of the caller's workspace. Sized for max_tokens tokens and the smallest token tile (8).
struct Workspace {
  int *topk_ids;     // [T][K]
  float *topk_w;     // [T][K]
  int *slot_token;   // [T*K] token of each slot
  int *slot_of;      // [T][K] slot of each (token, choice)
  int *expert_off;   // [E+1]
  Tile *tiles;       // [max_tiles]
  int *n_tiles;      // [1]
  int *tail_counter; // [1] finished blocks of the decode down kernel (moe_mxfp4_decode.cu); zeroed by the grouping
  uint16_t *xh;      // [T][hidden]   x in fp16 (the gate_up matmul's input precision), written by the router
  uint16_t *act;     // [T*K][inter]  SwiGLU output, fp16 (the down matmul's input precision)
  float *dn;         // [T*K][hidden] down projection + bias
  size_t bytes;      // total used
};

constexpr int kMinTokenTile = 8;
int max_tiles(int n_pairs, int n_experts, int token_tile);
Workspace carve_workspace(const MoeLayer &l, int max_tokens, void *base);

// Launchers (moe_router.cu, moe_group.cu, moe_mxfp4_matmul.cu, moe_combine.cu).
// Returns true when the router kernel also did the grouping (every token in one block), so launch_group is not needed.
// in_norm and l2 as in moe_forward: the router kernel norms x itself, and extra clusters of it issue the L2 hints.
// variant: which router kernel (kDefault: the staged one when MODELSERVE_MOE_ROUTER_STAGED=1; either falls back to the
// global-memory one past its hidden size); both give bitwise the same results.
enum class RouterVariant { kDefault, kGlobal, kStaged };
bool launch_router_topk(const MoeLayer &l, const float *x, int n_tokens, int token_tile, const Workspace &w,
                        cudaStream_t stream, const MoeInputNorm &in_norm = MoeInputNorm{},
                        const MoeL2Prefetch &l2 = MoeL2Prefetch{}, RouterVariant variant = RouterVariant::kDefault);
void launch_group(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream);
// evict_first: the decode kernel (token tile 8) streams the expert weights with an L2 evict_first policy.
void launch_gate_up_swiglu(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream,
                           bool evict_first = false);
// With `tail` (decode steps only: <= 8 tokens, token tile 8) the down kernel's last block also runs the combine
// (moe_combine.cuh); returns whether it did, else the caller launches launch_combine.
struct CombineArgs;
bool launch_down(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream,
                 bool evict_first = false, const CombineArgs *tail = nullptr);
CombineArgs combine_args(const MoeLayer &l, float *residual, const Workspace &w, const MoeNextNorm &next_norm);
void launch_combine(const MoeLayer &l, int n_tokens, float *residual, const Workspace &w, cudaStream_t stream,
                    const MoeNextNorm &next_norm = MoeNextNorm{});

// One-time host set-up of every kernel shape a layer can launch with up to max_tokens tokens (shared-memory opt-in,
// occupancy): done by moe_workspace_bytes so that graph capture sees launches only.
void prepare_decode(int hidden, int inter, int max_tokens);
void prepare_prefill();
void prepare_router();

// Token tile the matmul kernels use for a batch of n_tokens (8 for decode, larger for prefill).
int choose_token_tile(int n_tokens, int top_k, int n_experts);


// Programmatic dependent launch: every MoE kernel is launched with it, so the next kernel's blocks can be resident
// (and do work that needs no predecessor output) while the current one drains. pdl_wait() blocks until the previous
// kernel has completed and its writes are visible; pdl_trigger() lets the next kernel launch. Each kernel triggers
// only after its own wait, so a kernel that starts early may rely on everything two launches back being complete.
// (pdl_wait / pdl_trigger come from cuda/pdl.cuh.) The MoE kernels always launch with PDL.
template <typename... KArgs, typename... Args>
void launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args &&...args) {
  launch_with_pdl(true, kernel, grid, block, smem, stream, std::forward<Args>(args)...);
}

__device__ __forceinline__ float bf16_to_float(uint16_t h) { return __uint_as_float(uint32_t(h) << 16); }

}  // namespace ms::cuda::moe
