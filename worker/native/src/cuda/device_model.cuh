// gpt-oss weights resident on one GPU: uploaded once from the mapped checkpoint (bf16 and MXFP4 bytes as stored; the
// small fp32 vectors the CPU model keeps are uploaded as fp32, biases the MoE reads as bf16), or generated on the
// device for a given config (synthetic weights for benchmarks of shapes no file is at hand for).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/loader.cuh"
#include "cuda/moe/moe.cuh"
#include "model/forward.h"
#include "model/model.h"

namespace ms::cuda {

struct DeviceLayer {
    float *attn_norm = nullptr, *mlp_norm = nullptr, *sinks = nullptr;
    uint16_t *qkv_w = nullptr;  // q, k and v rows stacked: [(nh + 2 nkv) * hd][hidden]
    float *qkv_b = nullptr;
    uint16_t *o_w = nullptr;  // [hidden][nh * hd]
    float *o_b = nullptr;
    MoeLayer moe{};
};

class DeviceModel {
  public:
    // Through the pipelined loader (cuda/loader.cuh): progress in bytes of weights on the device.
    static std::unique_ptr<DeviceModel> upload(const Model &model, ms_progress_fn progress = nullptr,
                                               void *progress_user = nullptr);
    // Random weights of `config`'s shapes, generated on the device (norm gains 1, small projections, MXFP4 scales
    // around 2^-6 so activations stay in range through every layer).
    static std::unique_ptr<DeviceModel> synthesize(const ModelConfig &config, uint64_t seed);
    ~DeviceModel();
    DeviceModel(const DeviceModel &) = delete;
    DeviceModel &operator=(const DeviceModel &) = delete;

    const ModelConfig &config() const { return cfg_; }
    const KvSpec &kv_spec() const { return spec_; }
    int device() const { return device_; }
    const std::string &device_name() const { return device_name_; }
    uint64_t bytes() const { return bytes_; }
    // How the weights got there (upload only).
    const LoaderStats &load_stats() const { return load_stats_; }

    const uint16_t *embed = nullptr, *lm_head = nullptr;
    const float *final_norm = nullptr, *inv_freq = nullptr;
    float rope_concentration = 1.f;
    std::vector<DeviceLayer> layers;

  private:
    DeviceModel() = default;
    void init_common(const ModelConfig &c);
    template <class T> T *alloc(size_t count);
    template <class T> T *upload_array(const T *host, size_t count);

    ModelConfig cfg_;
    KvSpec spec_;
    int device_ = 0;
    std::string device_name_;
    uint64_t bytes_ = 0;
    std::vector<void *> allocations_;
    LoaderStats load_stats_;
};

// Throws MS_ERR_UNSUPPORTED naming the reason when no usable GPU is visible.
int require_device();

}  // namespace ms::cuda
