// residual[t] += sum_j weight[t][j] * dn[slot_of[t][j]], the choices added in order j = 0..k-1 (as the CPU path).
// With a next-layer norm: one block holds the whole updated row, so it also writes RMSNorm(row) * gain (sum of squares
// reduced in a fixed order: deterministic).
#include "cuda/moe/moe_internal.cuh"

namespace ms::cuda::moe {
namespace {

constexpr int kCombineThreads = 256;

__global__ void __launch_bounds__(kCombineThreads)
    combine_kernel(const float *__restrict__ dn, const int *__restrict__ slot_of, const float *__restrict__ wts,
                   int hidden, int k, float *__restrict__ residual, const float *__restrict__ gain, float eps,
                   float *__restrict__ normed) {
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
  if (!gain) return;
  __shared__ float partial[kCombineThreads / 32];
  float ss = 0.f;
  for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) {  // this thread's own writes: visible to it
    const float4 r = res[c];
    ss += r.x * r.x + r.y * r.y + r.z * r.z + r.w * r.w;
  }
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  if ((threadIdx.x & 31) == 0) partial[threadIdx.x >> 5] = ss;
  __syncthreads();
  float total = 0.f;
  for (int i = 0; i < kCombineThreads / 32; ++i) total += partial[i];
  const float inv = rsqrtf(total / float(hidden) + eps);
  float4 *dst = reinterpret_cast<float4 *>(normed + size_t(t) * hidden);
  for (int c = threadIdx.x; c < hidden / 4; c += blockDim.x) {
    const float4 r = res[c];
    const float *g = gain + 4 * c;  // scalar reads: no alignment asked of the gain vector
    dst[c] = make_float4(r.x * inv * g[0], r.y * inv * g[1], r.z * inv * g[2], r.w * inv * g[3]);
  }
}

}  // namespace

void launch_combine(const MoeLayer &l, int n_tokens, float *residual, const Workspace &w, cudaStream_t stream,
                    const MoeNextNorm &next_norm) {
  launch_pdl(combine_kernel, dim3(n_tokens), dim3(kCombineThreads), 0, stream, w.dn, w.slot_of, w.topk_w, l.hidden,
             l.top_k, residual, next_norm.gain, next_norm.eps, next_norm.out);
}

}  // namespace ms::cuda::moe
