#include "cuda/device_model.cuh"

#include <cmath>
#include <cstring>
#include <deque>
#include <type_traits>

#include "cpu/bf16.h"
#include "cpu/rope.h"
#include "cuda/cuda_check.cuh"
#include "cuda/kernels.cuh"

namespace ms::cuda {

int require_device() {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess || n == 0)
        throw Error(MS_ERR_UNSUPPORTED, std::string("backend \"cuda\" was requested but no CUDA device is usable: ") +
                                            (err != cudaSuccess ? cudaGetErrorString(err) : "no devices"));
    int dev = 0;
    MS_CUDA(cudaGetDevice(&dev));
    return dev;
}

DeviceModel::~DeviceModel() {
    cudaSetDevice(device_);
    for (void *p : allocations_) cudaFree(p);
}

template <class T> T *DeviceModel::alloc(size_t count) {
    void *p = nullptr;
    const size_t bytes = count * sizeof(T);
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess)
        throw Error(MS_ERR_OUT_OF_MEMORY, "CUDA: cannot allocate " + std::to_string(bytes) + " bytes of weights after " +
                                              std::to_string(bytes_) + " (" + cudaGetErrorString(err) + ")");
    allocations_.push_back(p);
    bytes_ += bytes;
    return static_cast<T *>(p);
}

template <class T> T *DeviceModel::upload_array(const T *host, size_t count) {
    T *d = alloc<T>(count);
    MS_CUDA(cudaMemcpy(d, host, count * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}

void DeviceModel::init_common(const ModelConfig &c) {
    device_ = require_device();
    MS_CUDA(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    MS_CUDA(cudaGetDeviceProperties(&prop, device_));
    device_name_ = prop.name;
    cfg_ = c;
    if (c.hidden_size % 32 != 0 || c.intermediate_size % 32 != 0 || (c.num_attention_heads * c.head_dim) % 8 != 0)
        throw Error(MS_ERR_UNSUPPORTED, "CUDA backend: hidden_size and intermediate_size must be multiples of 32");
    if (c.head_dim > 128 || c.head_dim % 2 != 0 || c.num_attention_heads % c.num_key_value_heads != 0 ||
        c.num_attention_heads / c.num_key_value_heads > 32)
        throw Error(MS_ERR_UNSUPPORTED, "CUDA backend: head_dim must be even and <= 128, at most 32 query heads per kv head");
    spec_ = c.kv_spec();
    const Rope rope = make_rope(c.rope_params());
    inv_freq = upload_array(rope.inv_freq.data(), rope.inv_freq.size());
    rope_concentration = rope.concentration;
}

namespace {
std::vector<uint16_t> to_bf16(const std::vector<float> &v) {  // exact: these came from bf16
    std::vector<uint16_t> out(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        uint32_t u;
        std::memcpy(&u, &v[i], 4);
        out[i] = uint16_t(u >> 16);
    }
    return out;
}
MoeLayer moe_shape(const ModelConfig &c) {
    MoeLayer m{};
    m.n_experts = c.num_local_experts;
    m.top_k = c.num_experts_per_tok;
    m.hidden = c.hidden_size;
    m.inter = c.intermediate_size;
    m.swiglu_limit = float(c.swiglu_limit);
    m.swiglu_alpha = float(c.swiglu_alpha);
    return m;
}
}  // namespace

std::unique_ptr<DeviceModel> DeviceModel::upload(const Model &model, ms_progress_fn progress, void *progress_user) {
    auto dm = std::unique_ptr<DeviceModel>(new DeviceModel());
    const ModelConfig &c = model.config();
    dm->init_common(c);
    const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts, I = c.intermediate_size;
    const int64_t QD = int64_t(c.num_attention_heads) * c.head_dim, KVD = int64_t(c.num_key_value_heads) * c.head_dim;
    // Every tensor is allocated first and its copy planned; the loader then moves all of them at once. `mapped`:
    // bytes as stored in the checkpoint's mapping; the rest are the host model's small fp32 vectors or converted
    // copies kept alive in `keep` until the load is done.
    std::vector<UploadSegment> plan;
    std::deque<std::vector<uint16_t>> keep16;
    std::deque<std::vector<float>> keep32;
    auto put = [&](auto *dst, const auto *src, size_t count, bool mapped) {
        plan.push_back({src, dst, count * sizeof(*src), mapped});
        return dst;
    };
    auto mapped = [&](const auto *src, size_t count) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(src)>>;
        return put(dm->alloc<T>(count), src, count, true);
    };
    auto host = [&](const auto *src, size_t count) {
        using T = std::remove_cv_t<std::remove_pointer_t<decltype(src)>>;
        return put(dm->alloc<T>(count), src, count, false);
    };
    auto host_bf16 = [&](const std::vector<float> &v) { return host(keep16.emplace_back(to_bf16(v)).data(), v.size()); };
    dm->embed = mapped(model.embed(), size_t(V * H));
    dm->lm_head = mapped(model.lm_head().w, size_t(V * H));
    dm->final_norm = host(model.final_norm(), size_t(H));
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        const LayerWeights &L = model.layer(l);
        DeviceLayer d;
        d.attn_norm = host(L.attn_norm.data(), L.attn_norm.size());
        d.mlp_norm = host(L.mlp_norm.data(), L.mlp_norm.size());
        d.sinks = host(L.sinks.data(), L.sinks.size());
        d.qkv_w = dm->alloc<uint16_t>(size_t((QD + 2 * KVD) * H));
        put(d.qkv_w, L.q.w, size_t(QD * H), true);
        put(d.qkv_w + QD * H, L.k.w, size_t(KVD * H), true);
        put(d.qkv_w + (QD + KVD) * H, L.v.w, size_t(KVD * H), true);
        std::vector<float> &qkv_b = keep32.emplace_back(L.q.bias);
        qkv_b.insert(qkv_b.end(), L.k.bias.begin(), L.k.bias.end());
        qkv_b.insert(qkv_b.end(), L.v.bias.begin(), L.v.bias.end());
        d.qkv_b = host(qkv_b.data(), qkv_b.size());
        d.o_w = mapped(L.o.w, size_t(H * QD));
        d.o_b = host(L.o.bias.data(), L.o.bias.size());
        MoeLayer m = moe_shape(c);
        m.router_w = mapped(L.router.w, size_t(E * H));
        m.router_b = host_bf16(L.router.bias);
        m.gate_up_blocks = mapped(L.gate_up.blocks, size_t(E * 2 * I * H / 2));
        m.gate_up_scales = mapped(L.gate_up.scales, size_t(E * 2 * I * H / 32));
        m.gate_up_bias = host_bf16(L.gate_up.bias);
        m.down_blocks = mapped(L.down.blocks, size_t(E * H * I / 2));
        m.down_scales = mapped(L.down.scales, size_t(E * H * I / 32));
        m.down_bias = host_bf16(L.down.bias);
        d.moe = m;
        dm->layers.push_back(d);
    }
    dm->load_stats_ = upload_segments(plan, dm->device_, loader_options_from_env(), progress, progress_user);
    return dm;
}

std::unique_ptr<DeviceModel> DeviceModel::synthesize(const ModelConfig &c, uint64_t seed) {
    auto dm = std::unique_ptr<DeviceModel>(new DeviceModel());
    dm->init_common(c);
    const int64_t H = c.hidden_size, V = c.vocab_size, E = c.num_local_experts, I = c.intermediate_size;
    const int64_t QD = int64_t(c.num_attention_heads) * c.head_dim, KVD = int64_t(c.num_key_value_heads) * c.head_dim;
    const cudaStream_t s = nullptr;
    uint64_t next = seed * 1000003ull;
    auto bf16 = [&](int64_t n, float scale) {
        uint16_t *p = dm->alloc<uint16_t>(size_t(n));
        fill_bf16_uniform(p, n, scale, ++next, s);
        return p;
    };
    auto f32 = [&](int64_t n, float offset, float scale) {
        float *p = dm->alloc<float>(size_t(n));
        fill_f32_uniform(p, n, offset, scale, ++next, s);
        return p;
    };
    auto u8 = [&](int64_t n, int lo, int hi) {
        uint8_t *p = dm->alloc<uint8_t>(size_t(n));
        fill_u8_uniform(p, n, lo, hi, ++next, s);
        return p;
    };
    const float dense_scale = 1.0f / std::sqrt(float(H));
    dm->embed = bf16(V * H, 1.0f);
    dm->lm_head = bf16(V * H, dense_scale);
    dm->final_norm = f32(H, 1.0f, 0.0f);
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        DeviceLayer d;
        d.attn_norm = f32(H, 1.0f, 0.0f);
        d.mlp_norm = f32(H, 1.0f, 0.0f);
        d.sinks = f32(c.num_attention_heads, 0.0f, 1.0f);
        d.qkv_w = bf16((QD + 2 * KVD) * H, dense_scale);
        d.qkv_b = f32(QD + 2 * KVD, 0.0f, 0.02f);
        d.o_w = bf16(H * QD, 1.0f / std::sqrt(float(QD)));
        d.o_b = f32(H, 0.0f, 0.02f);
        MoeLayer m = moe_shape(c);
        m.router_w = bf16(E * H, dense_scale);
        m.router_b = bf16(E, 0.1f);
        m.gate_up_blocks = u8(E * 2 * I * H / 2, 0, 255);
        m.gate_up_scales = u8(E * 2 * I * H / 32, 119, 121);
        m.gate_up_bias = bf16(E * 2 * I, 0.02f);
        m.down_blocks = u8(E * H * I / 2, 0, 255);
        m.down_scales = u8(E * H * I / 32, 119, 121);
        m.down_bias = bf16(E * H, 0.02f);
        d.moe = m;
        dm->layers.push_back(d);
    }
    MS_CUDA(cudaDeviceSynchronize());
    return dm;
}

}  // namespace ms::cuda
