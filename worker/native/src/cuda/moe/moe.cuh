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

// x: [n_tokens][hidden] fp32, the RMS-normed MLP input. residual: [n_tokens][hidden] fp32; the MoE output is ADDED
// to it. Asynchronous on `stream`, no host synchronisation, no allocation (graph-capturable). n_tokens must not exceed
// the max_tokens the workspace was sized for. Throws std::invalid_argument (naming the field) on a bad layer
// description or a pointer that is not 16-byte aligned. Every kernel is launched with programmatic dependent launch.
// Optionally (next_norm.gain set) the last kernel also writes next_norm.out[t][:] = RMSNorm(residual[t]) * gain (eps
// next_norm.eps), the next layer's attention input, saving the executor one kernel per layer.
struct MoeNextNorm {
  const float *gain = nullptr;
  float eps = 0.f;
  float *out = nullptr;
};
void moe_forward(const MoeLayer &l, const float *x, int n_tokens, float *residual, void *workspace,
                 cudaStream_t stream, const MoeNextNorm &next_norm = MoeNextNorm{});

}  // namespace ms::cuda
