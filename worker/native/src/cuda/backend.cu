// The CUDA side of runtime/cuda_backend.h (built with ENGINE_CUDA).
#include "cuda/device_model.cuh"
#include "cuda/executor.cuh"
#include "runtime/cuda_backend.h"

namespace ms {

bool cuda_backend_built() { return true; }

std::shared_ptr<cuda::DeviceModel> cuda_upload_model(const Model &model, ms_progress_fn progress, void *progress_user) {
    return std::shared_ptr<cuda::DeviceModel>(cuda::DeviceModel::upload(model, progress, progress_user));
}

std::string cuda_device_name(const cuda::DeviceModel &model) { return model.device_name(); }

std::unique_ptr<Executor> make_cuda_executor(std::shared_ptr<cuda::DeviceModel> model) {
    return std::make_unique<cuda::CudaExecutor>(std::move(model), cuda::executor_options_from_env());
}

std::shared_ptr<cuda::DeviceModel> cuda_synthesize_model(const ModelConfig &config, uint64_t seed,
                                                         ms_progress_fn progress, void *progress_user) {
    std::shared_ptr<cuda::DeviceModel> dm(cuda::DeviceModel::synthesize(config, seed));
    if (progress) progress(progress_user, dm->bytes(), dm->bytes());
    return dm;
}

const ModelConfig &cuda_model_config(const cuda::DeviceModel &model) { return model.config(); }

uint64_t cuda_model_bytes(const cuda::DeviceModel &model) { return model.bytes(); }

}  // namespace ms
