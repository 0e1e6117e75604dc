// Kernel ablation for timing studies: MODELSERVE_CUDA_DEBUG_SKIP=stage[,stage...] leaves those kernels out of every
// forward pass, so that a benchmark shows what each one costs in the graph-replayed step (launch gaps and PDL overlap
// included), which no per-kernel profiler on the GPU machine shows. The outputs are then WRONG: the skipped kernels'
// buffers keep what an earlier step or layer left there. Never set outside a benchmark.
//   stages: qkv rope attn o router gate_up down combine lm_head
#pragma once

namespace ms::cuda {

enum class SkipStage { kQkv, kRope, kAttn, kO, kRouter, kGateUp, kDown, kCombine, kLmHead };

// Whether `stage` is left out of a step of `n_tokens` tokens. Only decode-sized steps (<= 8 tokens) skip: a prefill
// runs in full first, so that every buffer a skipped kernel would have written holds valid indices (the MoE tile list
// above all). Read once; an unknown stage name throws Error(MS_ERR_INVALID_ARGUMENT) naming the variable.
bool debug_skip(SkipStage stage, int n_tokens);

}  // namespace ms::cuda
