// GGUF Q8_0 (34-byte blocks: fp16 d, 32 int8; weight d q) matrix products:
// the GEMV (decode) and tiled (prefill) kernels of gguf_kernels.cuh for this format.
#include "cuda/gguf/gguf_kernels.cuh"

namespace ms::cuda {

void gguf_gemv_q8_0(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s) {
    gguf_detail::launch_gemv<ms::gguf::FmtQ8_0>(a, warps_per_row, s);
}

void gguf_tiled_q8_0(const GgufMatmulArgs &a, cudaStream_t s) { gguf_detail::launch_tiled<ms::gguf::FmtQ8_0>(a, s); }

}  // namespace ms::cuda
