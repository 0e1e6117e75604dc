// RMSNorm in fp32: one block per row; the mean of squares is reduced in the block, then each element is scaled.
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"
#include "cuda/pdl.cuh"

namespace ms::cuda {

namespace {
__global__ void rmsnorm_kernel(const float *x, const int32_t *rows, int width, const float *gain, float eps, float *out) {
    pdl_trigger();  // the next kernel may start pulling its weights into L2 (it waits before reading `out`)
    pdl_wait();
    const int r = blockIdx.x;
    const float *xr = x + (long long)(rows ? rows[r] : r) * width;
    float ss = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += xr[i] * xr[i];
    __shared__ float partial[32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? partial[threadIdx.x] : 0.f;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        if (threadIdx.x == 0) partial[0] = v;
    }
    __syncthreads();
    const float inv = rsqrtf(partial[0] / float(width) + eps);
    float *o = out + (long long)r * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = xr[i] * inv * gain[i];
}
}  // namespace

void rmsnorm(const float *x, const int32_t *rows, int n_rows, int width, const float *gain, float eps, float *out,
             cudaStream_t s) {
    if (n_rows <= 0) return;
    launch_maybe_pdl(rmsnorm_kernel, dim3(n_rows), dim3(256), 0, s, x, rows, width, gain, eps, out);
    check_launch("rmsnorm");
}

}  // namespace ms::cuda
