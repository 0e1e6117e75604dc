// The CUDA backend as the CPU-only core sees it. Built with ENGINE_CUDA these are defined in src/cuda/backend.cu;
// otherwise runtime/backend_select.cc defines them to report that CUDA is not in this build. Nothing here needs
// the CUDA headers, so the core, the addon and the tests compile the same way with or without CUDA.
#pragma once

#include <memory>
#include <string>

#include "engine.h"
#include "runtime/executor.h"

namespace ms {

class Model;
namespace cuda {
class DeviceModel;
}

bool cuda_backend_built();

// "cpu" or "cuda" for ms_model_params.backend: "auto" (or null) takes MODELSERVE_DEVICE (cpu|cuda), else "cpu".
// Throws MS_ERR_INVALID_ARGUMENT naming the field or the variable for anything else.
std::string resolve_backend(const char *requested);

// Uploads the model's weights (bf16 and MXFP4 as stored) to the current GPU. Throws MS_ERR_UNSUPPORTED when the build
// has no CUDA backend or no GPU is visible, MS_ERR_OUT_OF_MEMORY when the weights do not fit. `progress` gets the
// bytes on the device so far (cuda/loader.cuh), from the calling thread.
std::shared_ptr<cuda::DeviceModel> cuda_upload_model(const Model &model, ms_progress_fn progress = nullptr,
                                                     void *progress_user = nullptr);
std::string cuda_device_name(const cuda::DeviceModel &model);

// An executor running the model on the GPU; the engine's KV pool gets device memory from it.
std::unique_ptr<Executor> make_cuda_executor(std::shared_ptr<cuda::DeviceModel> model);

}  // namespace ms
