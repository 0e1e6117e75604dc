// GGUF float weights (F32, F16, BF16) with fp32 activations: the GEMV (decode) and tiled (prefill) kernels of
// gguf_kernels.cuh for these formats (no scale; F16 converted exactly, BF16 by a shift).
#include "cuda/gguf/gguf_kernels.cuh"

namespace ms::cuda {

void gguf_gemv_f32(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s) {
    gguf_detail::launch_gemv<ms::gguf::FmtF32>(a, warps_per_row, s);
}
void gguf_tiled_f32(const GgufMatmulArgs &a, cudaStream_t s) { gguf_detail::launch_tiled<ms::gguf::FmtF32>(a, s); }

void gguf_gemv_f16(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s) {
    gguf_detail::launch_gemv<ms::gguf::FmtF16>(a, warps_per_row, s);
}
void gguf_tiled_f16(const GgufMatmulArgs &a, cudaStream_t s) { gguf_detail::launch_tiled<ms::gguf::FmtF16>(a, s); }

void gguf_gemv_bf16(const GgufMatmulArgs &a, int warps_per_row, cudaStream_t s) {
    gguf_detail::launch_gemv<ms::gguf::FmtBF16>(a, warps_per_row, s);
}
void gguf_tiled_bf16(const GgufMatmulArgs &a, cudaStream_t s) { gguf_detail::launch_tiled<ms::gguf::FmtBF16>(a, s); }

}  // namespace ms::cuda
