// residual[t] += sum_j weight[t][j] * dn[slot_of[t][j]], the choices added in order j = 0..k-1 (as the CPU path).
#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kCombineThreads = 256;

__global__ void __launch_bounds__(kCombineThreads)
    combine_kernel(const float *__restrict__ dn, const int *__restrict__ slot_of, const float *__restrict__ wts,
                   int hidden, int k, float *__restrict__ residual) {
  pdl_wait();
  pdl_trigger();
  const int t = blockIdx.x;
  float4 *res = reinterpret_cast<float4 *>(residual + size_t(t) * hidden);
  for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) {
    float4 r = res[c];
    for (int j = 0; j < k; ++j) {
      const float w = wts[t * k + j];
      const float4 d = reinterpret_cast<const float4 *>(dn + size_t(slot_of[t * k + j]) * hidden)[c];
      r.x += w * d.x;
      r.y += w * d.y;
      r.z += w * d.z;
      r.w += w * d.w;
    }
    res[c] = r;
  }
}

}  // namespace

void launch_combine(const MoeLayer &l, int n_tokens, float *residual, const Workspace &w, cudaStream_t stream) {
  launch_pdl(combine_kernel, dim3(n_tokens), dim3(kCombineThreads), 0, stream, w.dn, w.slot_of, w.topk_w, l.hidden,
             l.top_k, residual);
}

}  // namespace ms::cuda::moe
