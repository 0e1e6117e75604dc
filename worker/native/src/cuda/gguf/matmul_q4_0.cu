// GGUF Q4_0 (18-byte blocks: fp16 d, 16 bytes of nibbles; weight d (q - 8)) matrix products:
// the GEMV (decode) and tiled (prefill) kernels of gguf_kernels.cuh for this format.
#include "cuda/gguf/gguf_kernels.cuh"

namespace ms::cuda {

void gguf_gemv_q4_0(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s) {
    gguf_detail::launch_gemv<ms::gguf::FmtQ4_0>(a, warps_per_row, s);
}

void gguf_tiled_q4_0(const GgufMatmulArgs &a, cudaStream_t s) { gguf_detail::launch_tiled<ms::gguf::FmtQ4_0>(a, s); }

}  // namespace ms::cuda
