// The CUDA executor: ms::Executor over a DeviceModel. One step = one upload of the step's token/position/block-table
// data, the whole forward pass on one stream, and one download (logits, or the greedy token ids). The runtime's
// block manager stays on the host and decides block tables; K/V live in device memory handed out by this executor.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "cuda/device_model.cuh"
#include "cuda/kernels.cuh"
#include "runtime/executor.h"

namespace ms::cuda {

struct ExecutorOptions {
    // fp32 activations in every projection (the GEMV path at any batch) instead of bf16 tensor cores for batches
    // above 8 tokens: for checks against fp32 references. MODELSERVE_CUDA_EXACT=1 sets it.
    bool exact_matmul = false;
    // Share of the GPU's memory for weights + activations + KV; what is left of it after the weights and the step
    // workspace reserve becomes the KV limit. MODELSERVE_GPU_MEMORY_FRACTION overrides it.
    double memory_fraction = 0.9;
    size_t workspace_reserve_bytes = size_t(2) << 30;
    // Decode steps (one token per sequence) replayed from a CUDA graph captured once per batch size: a step is then
    // one graph launch instead of ~15 kernel launches per layer. MODELSERVE_CUDA_GRAPHS=0 turns it off.
    bool cuda_graphs = true;
    // Time each stage with CUDA events (off the graph path); read with profile().
    bool profile = false;
    // forward_sample (the serving engine's path): greedy and plain-temperature rows sampled on the GPU, only token ids
    // and the logits of the other rows come back. MODELSERVE_CUDA_DEVICE_SAMPLING=0 (executor_options_from_env) turns
    // it off: can_sample_on_device() false, the engine copies every row's logits and samples on the CPU.
    bool device_sampling = true;
    // The RMSNorm in front of each MoE done inside the MoE's router kernel (one kernel less per layer). false turns it
    // off whatever MODELSERVE_CUDA_MOE_NORM_FUSED says; =0 there turns it off for every executor (A/B runs).
    bool moe_norm_fused = true;
    // Steps of up to 8 tokens pull the next layer's qkv weights into L2 during the MoE. Off: measured slower on an H100
    // (executor.cu). MODELSERVE_CUDA_L2_PREFETCH=1/0, when set, overrides this for every executor (A/B runs).
    bool l2_prefetch = false;
};

// Milliseconds spent per stage, summed over profiled steps.
struct StageProfile {
    static constexpr int kStages = 6;
    static const char *name(int i);
    double ms[kStages] = {0, 0, 0, 0, 0, 0};
    int steps = 0;
};

ExecutorOptions executor_options_from_env();

class CudaExecutor : public Executor {
  public:
    CudaExecutor(std::shared_ptr<DeviceModel> model, const ExecutorOptions &options);
    ~CudaExecutor() override;

    const KvSpec &kv_spec() const override { return model_->kv_spec(); }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const override;
    int vocab_size() const override { return model_->config().vocab_size; }
    int eos_token_id() const override {
        const auto &ids = model_->config().eos_token_ids;
        return ids.empty() ? -1 : ids.front();
    }
    int max_positions() const override { return model_->config().max_position_embeddings; }
    void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) override;
    bool can_sample_on_device() const override { return opt_.device_sampling; }
    // One fused sampling kernel over the logits on the device (part of the captured decode graph), then one D2H copy
    // of the R token ids plus D2H copies of the kHost rows' logits only. Works whatever opt_.device_sampling says.
    void forward_sample(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, const DeviceSampling *rows,
                        int32_t *tokens_out, float *host_logits) override;

    void *alloc_kv_memory(size_t bytes) const override;
    void free_kv_memory(void *p) const override;
    uint64_t kv_memory_limit() const override { return kv_limit_; }

    // As forward, but the greedy token of each want_logits seq is chosen on the GPU; only ids come back.
    void forward_greedy(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, int32_t *ids);
    // Logits of every token of every seq ([total tokens][vocab]); for tests.
    void forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits);
    const DeviceModel &model() const { return *model_; }
    const StageProfile &profile() const { return profile_; }
    void reset_profile() { profile_ = StageProfile(); }
    cudaStream_t stream() const { return stream_; }

  private:
    enum class Output { Logits, Greedy, AllLogits, Sample };
    void run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, Output what, void *host_out,
             const DeviceSampling *sampling = nullptr, float *host_logits = nullptr);
    void validate(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const;
    void ensure_workspace(int tokens, int rows);
    // Enqueues the forward pass of T tokens (rows R get logits; Greedy adds the argmax, Sample the sampling kernel
    // with its per-row parameters at d_step_ + 3T + R) on the stream: kernels only, no host copies, so it can be
    // captured as a graph.
    void enqueue(int T, int R, int n_seqs, const KvStorage &kv, Output what, size_t off_at, size_t tables_at);
    void drop_graphs();

    struct GraphKey {
        int T;
        int out;  // Output
        bool bf16;
        int block_size;
        const void *kv[4];
        bool operator<(const GraphKey &o) const;
    };
    std::vector<std::pair<GraphKey, cudaGraphExec_t>> graphs_;
    StageProfile profile_;
    std::vector<cudaEvent_t> events_;
    std::vector<int> profile_marks_;  // stage of the interval ending at events_[i]

    std::shared_ptr<DeviceModel> model_;
    ExecutorOptions opt_;
    cudaStream_t stream_ = nullptr;
    uint64_t kv_limit_ = 0;

    // Step staging: pinned host ints -> one device buffer. Layout: tokens[T] pos[T] seq[T] rows[R]
    // (Sample only: sampling params[R][4]) table_off[2][n_seqs] tables[...]. Every offset depends on (T, R, output)
    // only, so a captured decode graph reads the next step's values from the same addresses.
    std::vector<int32_t> host_scratch_;
    int32_t *pinned_ = nullptr;
    size_t pinned_cap_ = 0;
    int32_t *d_step_ = nullptr;
    size_t d_step_cap_ = 0;

    // Activations, grown on demand (no allocation in steady state).
    int cap_tokens_ = 0, cap_rows_ = 0;
    float *x_ = nullptr, *h_ = nullptr, *qkv_ = nullptr, *attn_ = nullptr, *cs_ = nullptr, *fin_ = nullptr,
          *logits_ = nullptr;
    uint16_t *xb_ = nullptr;
    int32_t *ids_ = nullptr;
    void *moe_ws_ = nullptr;
    // Attention plan of the current step and the split-key partials it needs; split-K partials of the small GEMMs.
    AttentionPlan attn_plan_;
    float *attn_part_ = nullptr;
    size_t attn_part_cap_ = 0;
    float *mm_split_ = nullptr;
    float *sample_part_ = nullptr;  // sample_scratch_floats(cap_rows_): chunk partials of the sampling kernel
};

}  // namespace ms::cuda
