// residual[t] += sum_j weight[t][j] * dn[slot_of[t][j]], the choices added in order j = 0..k-1 (as the CPU path).
// With a next-layer norm: one block holds the whole updated row, so it also writes RMSNorm(row) * gain (sum of squares
// reduced in a fixed order: deterministic). With MODELSERVE_MOE_COMBINE_TAIL=1 decode steps (<= 8 tokens) run the
// same function in the down kernel's last block instead (moe_mxfp4_decode.cu).
#include "cuda/moe/moe_combine.cuh"

namespace ms::cuda::moe {
namespace {

__global__ void __launch_bounds__(kCombineThreads) combine_kernel(const CombineArgs a) {
  pdl_wait();
  pdl_trigger();
  combine_token(a, blockIdx.x);
}

}  // namespace

CombineArgs combine_args(const MoeLayer &l, float *residual, const Workspace &w, const MoeNextNorm &next_norm) {
  return CombineArgs{w.dn, w.slot_of, w.topk_w, l.hidden, l.top_k, residual, next_norm.gain, next_norm.eps,
                     next_norm.out};
}

void launch_combine(const MoeLayer &l, int n_tokens, float *residual, const Workspace &w, cudaStream_t stream,
                    const MoeNextNorm &next_norm) {
  launch_pdl(combine_kernel, dim3(n_tokens), dim3(kCombineThreads), 0, stream, combine_args(l, residual, w, next_norm));
}

}  // namespace ms::cuda::moe
