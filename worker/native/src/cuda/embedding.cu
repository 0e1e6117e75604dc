// Token embedding lookup: one block per token, bf16 row -> fp32.
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"

namespace ms::cuda {

namespace {
__global__ void embedding_kernel(const uint16_t *embed, const int32_t *tokens, int hidden, float *x) {
    const int t = blockIdx.x;
    const uint16_t *row = embed + (long long)tokens[t] * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) x[(long long)t * hidden + i] = __uint_as_float(uint32_t(row[i]) << 16);
}
}  // namespace

void embedding(const uint16_t *embed, const int32_t *tokens, int n_tokens, int hidden, float *x, cudaStream_t s) {
    if (n_tokens <= 0) return;
    embedding_kernel<<<n_tokens, 256, 0, s>>>(embed, tokens, hidden, x);
    check_launch("embedding");
}

}  // namespace ms::cuda
