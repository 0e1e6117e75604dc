// The gpt-oss-20b / -120b shapes of the CUDA benchmarks (bench_cuda, bench_cuda_serve): their config and random
// weights of that config generated on the GPU (no checkpoint file). Header-only, for tools/*.cu.
#pragma once

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>

#include "common/error.h"
#include "cuda/device_model.cuh"
#include "runtime/cuda_backend.h"

namespace ms_tools {

// The config of the gpt-oss shape "20b" or "120b": the runtime's synthetic model source (ms_model_params.path
// "synthetic:gpt-oss-20b") holds the one copy of it. Throws MS_ERR_INVALID_ARGUMENT for anything else.
inline ms::ModelConfig gpt_oss_shape_config(const std::string &shape) {
    if (shape != "20b" && shape != "120b")
        throw ms::Error(MS_ERR_INVALID_ARGUMENT, "shape must be 20b or 120b, got \"" + shape + "\"");
    return ms::synthetic_model_config("gpt-oss-" + shape);
}

// Random weights of the shape, generated on the current GPU; prints what was made and how long it took.
inline std::shared_ptr<ms::cuda::DeviceModel> synthesize_shape(const std::string &shape, uint64_t seed = 42) {
    const ms::ModelConfig cfg = gpt_oss_shape_config(shape);
    const auto t0 = std::chrono::steady_clock::now();
    auto dm = std::shared_ptr<ms::cuda::DeviceModel>(ms::cuda::DeviceModel::synthesize(cfg, seed));
    std::printf("[%s] synthetic weights: %.2f GB generated on %s in %.1f s\n", shape.c_str(), dm->bytes() / 1e9,
                dm->device_name().c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return dm;
}

}  // namespace ms_tools
