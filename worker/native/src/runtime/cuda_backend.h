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
struct ModelConfig;
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

// The synthetic model source: ms_model_params.path "synthetic:NAME" (engine.h) is a model of a known shape with
// random weights generated on the GPU, no checkpoint read. True, with NAME in *name, when `path` has that form.
bool synthetic_model_name(const char *path, std::string *name);
// The gpt-oss config of a synthetic NAME ("gpt-oss-20b", "gpt-oss-120b"); MS_ERR_INVALID_ARGUMENT naming the known
// ones for anything else.
ModelConfig synthetic_model_config(const std::string &name);
// Generates the weights of `config` on the current GPU (cuda::DeviceModel::synthesize); reports the bytes once, when
// done, through `progress`. MS_ERR_UNSUPPORTED when the build has no CUDA backend or no GPU is visible.
std::shared_ptr<cuda::DeviceModel> cuda_synthesize_model(const ModelConfig &config, uint64_t seed,
                                                         ms_progress_fn progress = nullptr,
                                                         void *progress_user = nullptr);
// What the C API reports for a model that lives only on the GPU (a synthetic one has no host Model).
const ModelConfig &cuda_model_config(const cuda::DeviceModel &model);
uint64_t cuda_model_bytes(const cuda::DeviceModel &model);

}  // namespace ms
