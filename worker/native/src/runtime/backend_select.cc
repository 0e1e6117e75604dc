// Backend selection, and the CUDA entry points of a CPU-only build (MS_WITH_CUDA undefined): asking for CUDA there
// is a clear error.
#include "runtime/cuda_backend.h"

#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "model/model.h"

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

namespace {
constexpr const char *kSyntheticPrefix = "synthetic:";

// The published gpt-oss shapes (their config.json, without the weights): 24 layers x 32 experts, 36 x 128.
std::string gpt_oss_config_json(int layers, int experts) {
    return R"({"model_type":"gpt_oss","num_hidden_layers":)" + std::to_string(layers) + R"(,"num_local_experts":)" +
           std::to_string(experts) +
           R"(,"num_experts_per_tok":4,"hidden_size":2880,"intermediate_size":2880,"num_attention_heads":64,)"
           R"("num_key_value_heads":8,"head_dim":64,"vocab_size":201088,"sliding_window":128,"rms_norm_eps":1e-5,)"
           R"("rope_theta":150000,"rope_scaling":{"rope_type":"yarn","factor":32,"original_max_position_embeddings":4096,)"
           R"("beta_fast":32,"beta_slow":1},"swiglu_limit":7.0,"max_position_embeddings":131072,"eos_token_id":200002,)"
           R"("quantization_config":{"quant_method":"mxfp4"}})";
}
}  // namespace

bool synthetic_model_name(const char *path, std::string *name) {
    const size_t n = std::strlen(kSyntheticPrefix);
    if (!path || std::strncmp(path, kSyntheticPrefix, n) != 0) return false;
    if (name) *name = path + n;
    return true;
}

ModelConfig synthetic_model_config(const std::string &name) {
    int layers = 0, experts = 0;
    if (name == "gpt-oss-20b") layers = 24, experts = 32;
    else if (name == "gpt-oss-120b") layers = 36, experts = 128;
    else
        throw Error(MS_ERR_INVALID_ARGUMENT, std::string("unknown synthetic model \"") + kSyntheticPrefix + name +
                                                 "\": known are synthetic:gpt-oss-20b and synthetic:gpt-oss-120b");
    return ModelConfig::parse(gpt_oss_config_json(layers, experts), kSyntheticPrefix + name);
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

std::shared_ptr<cuda::DeviceModel> cuda_synthesize_model(const ModelConfig &, uint64_t, ms_progress_fn, void *) {
    throw Error(MS_ERR_UNSUPPORTED,
                "a synthetic model needs backend \"cuda\" (its weights are generated on the GPU) but this engine was "
                "built without CUDA (configure with -DENGINE_CUDA=ON)");
}

const ModelConfig &cuda_model_config(const cuda::DeviceModel &) {
    throw Error(MS_ERR_INTERNAL, "cuda_model_config without CUDA");
}

uint64_t cuda_model_bytes(const cuda::DeviceModel &) { return 0; }
#endif

}  // namespace ms
