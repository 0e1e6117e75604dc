// gguf_matmul: argument checks, the choice of kernel path, and the dispatch to the per-type launchers.
#include "cuda/gguf/gguf_matmul.cuh"

#include <cstdlib>
#include <cstring>
#include <string>

#include "common/error.h"

namespace ms::cuda {

namespace {

// MODELSERVE_CUDA_GGUF_PATH=gemv|tiled: what GgufPath::Auto means (read once); unset, empty or auto: by T. Any other
// value is an error naming the variable (common/env.h's policy).
GgufPath forced_path() {
    static const GgufPath p = [] {
        const char *e = std::getenv("MODELSERVE_CUDA_GGUF_PATH");
        if (!e || !*e || std::strcmp(e, "auto") == 0) return GgufPath::Auto;
        if (std::strcmp(e, "gemv") == 0) return GgufPath::Gemv;
        if (std::strcmp(e, "tiled") == 0) return GgufPath::Tiled;
        throw Error(MS_ERR_INVALID_ARGUMENT,
                    std::string("MODELSERVE_CUDA_GGUF_PATH must be gemv, tiled or auto, got \"") + e + "\"");
    }();
    return p;
}

bool aligned(const void *p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; }

}  // namespace

void gguf_matmul(WeightType type, const GgufMatmulArgs &a, GgufPath path, cudaStream_t s, int warps_per_row) {
    const std::string what = std::string("gguf_matmul (") + weight_type_name(type) + ")";
    if (a.T < 0 || a.N < 0 || a.K < 0 || a.K % 32 != 0)
        throw Error(MS_ERR_INVALID_ARGUMENT, what + ": K must be a multiple of 32, T and N >= 0");
    if (a.T == 0 || a.N == 0) return;
    if (!a.x || !a.w || !a.y || !aligned(a.x, 16) || !aligned(a.w, 16) || !aligned(a.y, 4))
        throw Error(MS_ERR_INVALID_ARGUMENT, what + ": x and w must be 16-byte aligned, y 4-byte aligned");
    if (warps_per_row != 0 && warps_per_row != 1 && warps_per_row != 2 && warps_per_row != 4 && warps_per_row != 8)
        throw Error(MS_ERR_INVALID_ARGUMENT, what + ": warps_per_row must be 0, 1, 2, 4 or 8");
    if (path == GgufPath::Auto) path = forced_path();
    if (path == GgufPath::Auto) path = a.T <= 8 ? GgufPath::Gemv : GgufPath::Tiled;
    const bool gemv = path == GgufPath::Gemv;
    switch (type) {
        case WeightType::Q4_0: return gemv ? gguf_gemv_q4_0(a, warps_per_row, s) : gguf_tiled_q4_0(a, s);
        case WeightType::Q4_1: return gemv ? gguf_gemv_q4_1(a, warps_per_row, s) : gguf_tiled_q4_1(a, s);
        case WeightType::Q8_0: return gemv ? gguf_gemv_q8_0(a, warps_per_row, s) : gguf_tiled_q8_0(a, s);
        case WeightType::F32: return gemv ? gguf_gemv_f32(a, warps_per_row, s) : gguf_tiled_f32(a, s);
        case WeightType::F16: return gemv ? gguf_gemv_f16(a, warps_per_row, s) : gguf_tiled_f16(a, s);
        case WeightType::BF16: return gemv ? gguf_gemv_bf16(a, warps_per_row, s) : gguf_tiled_bf16(a, s);
    }
    throw Error(MS_ERR_UNSUPPORTED, what + ": unknown weight type");
}

}  // namespace ms::cuda
