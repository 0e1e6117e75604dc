// Deterministic pseudo-random fills on the device (a counter-based hash of seed and index), so synthetic weights of
// a 120b-shaped model are generated in place in seconds without a host copy.
#include <cuda_bf16.h>

#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"

namespace ms::cuda {

namespace {
__device__ __forceinline__ uint64_t mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ float unit(uint64_t seed, long long i) {  // uniform in [-1, 1)
    return float(mix(seed * 0x9e3779b97f4a7c15ull + uint64_t(i)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}
__global__ void fill_bf16_kernel(uint16_t *p, long long n, float scale, uint64_t seed) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = __bfloat16_as_ushort(__float2bfloat16_rn(unit(seed, i) * scale));
}
__global__ void fill_f32_kernel(float *p, long long n, float offset, float scale, uint64_t seed) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = offset + unit(seed, i) * scale;
}
__global__ void fill_u8_kernel(uint8_t *p, long long n, int lo, int hi, uint64_t seed) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        p[i] = uint8_t(lo + int(mix(seed * 0x9e3779b97f4a7c15ull + uint64_t(i)) % uint64_t(hi - lo + 1)));
}
int grid_for(long long n) { return int(n / 256 + 1 < 8192 ? n / 256 + 1 : 8192); }
}  // namespace

void fill_bf16_uniform(uint16_t *p, long long n, float scale, uint64_t seed, cudaStream_t s) {
    fill_bf16_kernel<<<grid_for(n), 256, 0, s>>>(p, n, scale, seed);
    check_launch("fill_bf16_uniform");
}
void fill_f32_uniform(float *p, long long n, float offset, float scale, uint64_t seed, cudaStream_t s) {
    fill_f32_kernel<<<grid_for(n), 256, 0, s>>>(p, n, offset, scale, seed);
    check_launch("fill_f32_uniform");
}
void fill_u8_uniform(uint8_t *p, long long n, int lo, int hi, uint64_t seed, cudaStream_t s) {
    fill_u8_kernel<<<grid_for(n), 256, 0, s>>>(p, n, lo, hi, seed);
    check_launch("fill_u8_uniform");
}

}  // namespace ms::cuda
