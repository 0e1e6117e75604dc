// MXFP4 mixture-of-experts for the CUDA backend (gpt-oss MLP block).
// Public interface called by the CUDA executor; the kernels live next to this file.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

namespace ms::cuda {

struct MoeLayer {  // device pointers for one layer, laid out as in the HF checkpoint
  const uint16_t *router_w;
  const uint16_t *router_b;  // bf16 [E][H], bf16 [E]
  const uint8_t *gate_up_blocks;
  const uint8_t *gate_up_scales;
  const uint16_t *gate_up_bias;  // [E][2I][H/32][16], [E][2I][H/32] (e8m0), bf16 [E][2I]
  const uint8_t *down_blocks;
  const uint8_t *down_scales;
  const uint16_t *down_bias;  // [E][H][I/32][16], [E][H][I/32], bf16 [E][H]
  int n_experts, top_k, hidden, inter;
  float swiglu_limit, swiglu_alpha;
};

// Scratch bytes moe_forward needs for up to max_tokens tokens (allocate once, reuse for every layer). Also sets the
// kernels up for this layer shape (shared-memory opt-in, occupancy): call it before capturing CUDA graphs.
size_t moe_workspace_bytes(const MoeLayer &l, int max_tokens);

// x: [n_tokens][hidden] fp32, the RMS-normed MLP input (or, with in_norm, the residual stream it is normed from).
// residual: [n_tokens][hidden] fp32; the MoE output is ADDED to it (it may be x itself). Asynchronous on `stream`, no
// host synchronisation, no allocation (graph-capturable). n_tokens must not exceed the max_tokens the workspace was
// sized for. Throws std::invalid_argument (naming the field) on a bad layer description or a pointer that is not
// 16-byte aligned. Every kernel is launched with programmatic dependent launch.
// Optionally (next_norm.gain set) the last kernel also writes next_norm.out[t][:] = RMSNorm(residual[t]) * gain (eps
// next_norm.eps), the next layer's attention input, saving the executor one kernel per layer.
struct MoeNextNorm {
  const float *gain = nullptr;
  float eps = 0.f;
  float *out = nullptr;
};
// Optionally (gain set) x is the un-normed residual stream and the router kernel applies the RMSNorm in front of the
// MoE itself, as rmsnorm.cu computes it (x * inv_rms * gain, same eps, same summation order of the squares): the
// router logits and the fp16 copy the expert matmuls read are taken from the normed rows. Saves the executor one
// kernel per layer.
struct MoeInputNorm {
  const float *gain = nullptr;
  float eps = 0.f;
};
// Optional L2 hints for small batches (decode), where the MoE leaves DRAM idle much of the time: while the MoE runs,
// `fetch` ranges (the next layer's qkv weights and bias) are pulled into L2 (evict_last priority with `keep`, else
// normal) so that the next projection reads them from L2, the `release` ranges (this layer's qkv, fetched with keep by
// the previous MoE and read since) go back to normal priority so that kept lines do not pile up, and the expert
// weights, each read once per step, are streamed with L2 evict_first so that they do not push the fetched lines out.
// Results are bitwise the same with or without hints: they only change what L2 keeps. Ranges are device memory from
// cudaMalloc (hints go to whole 128-byte lines).
struct L2Range {
  const void *ptr = nullptr;
  size_t bytes = 0;
};
struct MoeL2Prefetch {
  L2Range fetch[2];
  L2Range release[2];
  bool keep = true;
  bool any() const {
    return fetch[0].bytes || fetch[1].bytes || release[0].bytes || release[1].bytes;
  }
};
void moe_forward(const MoeLayer &l, const float *x, int n_tokens, float *residual, void *workspace,
                 cudaStream_t stream, const MoeNextNorm &next_norm = MoeNextNorm{},
                 const MoeInputNorm &in_norm = MoeInputNorm{}, const MoeL2Prefetch &l2 = MoeL2Prefetch{});

}  // namespace ms::cuda
