// Greedy sampling on the device: argmax of each logits row (lowest index wins ties, as std::max_element), so a step
// returns token ids (4 bytes per sequence) instead of a vocabulary-wide row of logits.
#include "cuda/best_index.cuh"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {
__global__ void argmax_kernel(const float *logits, int V, int32_t *ids) {
    pdl_wait();
    pdl_trigger();
    const float *row = logits + (long long)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (better(row[i], i, bv, bi)) bv = row[i], bi = i;
    block_best(bv, bi);
    if (threadIdx.x == 0) ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
}
}  // namespace

void argmax_rows(const float *logits, int n_rows, int V, int32_t *ids, cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_maybe_pdl(argmax_kernel, dim3(n_rows), dim3(1024), 0, s, logits, V, ids);
    check_launch("argmax_rows");
}

}  // namespace ms::cuda
