// The (value, index) maximum with the lowest index winning ties (as std::max_element), reduced over a warp and a
// block: the argmax of greedy sampling (argmax.cu) and of Gumbel-max sampling (sample.cu).
#pragma once

#include <cuda_runtime.h>

#include <cmath>

namespace ms::cuda {

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

__device__ __forceinline__ void warp_best(float &bv, int &bi) {
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
}

// Every thread of the block calls it with its own best; the block's best is then valid in every lane of warp 0
// (an empty candidate is (-inf, INT_MAX)). Uses 256 bytes of shared memory and one __syncthreads.
__device__ __forceinline__ void block_best(float &bv, int &bi) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    warp_best(bv, bi);
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
        bv = lane < (blockDim.x >> 5) ? sv[lane] : -INFINITY;
        bi = lane < (blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        warp_best(bv, bi);
    }
}

}  // namespace ms::cuda
