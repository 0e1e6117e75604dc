// Stand-alone grouping kernel for batches the router spreads over several blocks (see moe_group.cuh).
#include "cuda/moe/moe_group.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kGroupThreads = 1024;

__global__ void __launch_bounds__(kGroupThreads)
    group_kernel(const int *__restrict__ ids, int n_pairs, int n_experts, int k, int token_tile, GroupOut o) {
  extern __shared__ int sh[];  // count[E], off[E+1]
  pdl_wait();
  pdl_trigger();
  group_pairs(ids, n_pairs, n_experts, k, token_tile, sh, sh + n_experts, o);
}

}  // namespace

void launch_group(const MoeLayer &l, int n_tokens, int token_tile, const Workspace &w, cudaStream_t stream) {
  const size_t smem = size_t(2 * l.n_experts + 1) * sizeof(int);
  launch_pdl(group_kernel, dim3(1), dim3(kGroupThreads), smem, stream, static_cast<const int *>(w.topk_ids),
             n_tokens * l.top_k, l.n_experts, l.top_k, token_tile, group_out(w));
}

}  // namespace ms::cuda::moe
