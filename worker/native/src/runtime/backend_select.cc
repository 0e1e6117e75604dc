// Backend selection, and the CUDA entry points of a CPU-only build (MS_WITH_CUDA undefined): asking for CUDA there
// is a clear error.
#include "runtime/cuda_backend.h"

#include <cstdlib>

#include "common/error.h"

namespace ms {

std::string resolve_backend(const char *requested) {
    std::string b = requested ? requested : "auto";
    std::string source = "ms_model_params.backend";
    if (b == "auto") {
        const char *env = std::getenv("MODELSERVE_DEVICE");
        b = env && *env ? env : "cpu";
        source = "MODELSERVE_DEVICE";
    }
    if (b != "cpu" && b != "cuda")
        throw Error(MS_ERR_INVALID_ARGUMENT, source + " must be \"cpu\", \"cuda\" or \"auto\", got \"" + b + "\"");
    return b;
}

#ifndef MS_WITH_CUDA
bool cuda_backend_built() { return false; }

std::shared_ptr<cuda::DeviceModel> cuda_upload_model(const Model &, ms_progress_fn, void *) {
    throw Error(MS_ERR_UNSUPPORTED,
                "backend \"cuda\" was requested but this engine was built without CUDA (configure with -DENGINE_CUDA=ON)");
}

std::string cuda_device_name(const cuda::DeviceModel &) { return ""; }

std::unique_ptr<Executor> make_cuda_executor(std::shared_ptr<cuda::DeviceModel>) {
    throw Error(MS_ERR_UNSUPPORTED, "this engine was built without CUDA");
}
#endif

}  // namespace ms
