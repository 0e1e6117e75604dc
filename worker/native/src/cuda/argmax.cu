// Greedy sampling on the device: argmax of each logits row (lowest index wins ties, as std::max_element), so a step
// returns token ids (4 bytes per sequence) instead of a vocabulary-wide row of logits.
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__global__ void argmax_kernel(const float *logits, int V, int32_t *ids) {
    pdl_wait();
    pdl_trigger();
    const float *row = logits + (long long)blockIdx.x * V;
    float bv = -INFINITY;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < V; i += blockDim.x)
        if (better(row[i], i, bv, bi)) bv = row[i], bi = i;
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __shared__ float sv[32];
    __shared__ int si[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        bv = lane < (blockDim.x >> 5) ? sv[lane] : -INFINITY;
        bi = lane < (blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
        }
        if (lane == 0) ids[blockIdx.x] = bi == 0x7fffffff ? 0 : bi;
    }
}
}  // namespace

void argmax_rows(const float *logits, int n_rows, int V, int32_t *ids, cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_maybe_pdl(argmax_kernel, dim3(n_rows), dim3(1024), 0, s, logits, V, ids);
    check_launch("argmax_rows");
}

}  // namespace ms::cuda
