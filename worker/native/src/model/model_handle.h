// The C handle behind ms_model: a thin owner of the C++ Model so the runtime can reach it.
#pragma once

#include <memory>

#include "llama/llama_model.h"
#include "model/model.h"

namespace ms::cuda {
class DeviceModel;
}

struct ms_model {
    std::unique_ptr<ms::Model> model;
    // Set when the model runs on the GPU (backend "cuda"): its weights uploaded once; engines over this model use
    // the CUDA executor. The host model stays loaded (configuration, ms_model_eval).
    std::shared_ptr<ms::cuda::DeviceModel> device;
    // Set instead of `model` for a GGUF llama-family model (CPU only; see llama/llama_model.h).
    std::unique_ptr<ms::LlamaModel> llama;
};
