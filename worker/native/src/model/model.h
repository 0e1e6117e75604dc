// The gpt-oss model on the CPU: configuration, weights (mapped from the checkpoint, never copied except small
// vectors) and the batched forward pass over the runtime's paged KV cache.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/rope.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"
#include "engine.h"
#include "io/safetensors.h"
#include "model/forward.h"

namespace ms {

struct ModelConfig {
    std::string architecture = "gpt_oss";
    int num_hidden_layers = 0;
    int num_local_experts = 0;
    int num_experts_per_tok = 4;
    int hidden_size = 0;
    int intermediate_size = 0;
    int num_attention_heads = 0;
    int num_key_value_heads = 0;
    int head_dim = 0;
    int vocab_size = 0;
    int sliding_window = 0;
    std::vector<std::string> layer_types;  // "sliding_attention" | "full_attention" per layer
    double rms_norm_eps = 1e-5;
    double rope_theta = 150000;
    std::string rope_type;  // "yarn" or "" (plain)
    double rope_factor = 1, rope_original_max_position_embeddings = 4096, rope_beta_fast = 32, rope_beta_slow = 1;
    double swiglu_limit = 7.0;
    double swiglu_alpha = 1.702;
    int max_position_embeddings = 0;
    std::vector<int> eos_token_ids;
    std::string quant_method;  // "mxfp4"

    // Parses and validates a Hugging Face config.json; errors name `source` and the field.
    static ModelConfig parse(const std::string &json_text, const std::string &source);
    bool is_sliding(int layer) const { return layer_types[layer] == "sliding_attention"; }
    // What every backend derives from the config alike: the RoPE/YaRN parameters and the KV layout by layer group.
    RopeParams rope_params() const;
    KvSpec kv_spec() const;
};

// Dense bf16 matrix [rows][cols] in the mapping, with an fp32 copy of its bias (may be empty).
struct DenseWeight {
    const uint16_t *w = nullptr;
    std::vector<float> bias;
    int rows = 0, cols = 0;
    const float *bias_ptr() const { return bias.empty() ? nullptr : bias.data(); }
};

// All experts of one projection: MXFP4 blocks [E][rows][cols/32][16], scales [E][rows][cols/32], fp32 bias [E][rows].
struct ExpertWeight {
    const uint8_t *blocks = nullptr;
    const uint8_t *scales = nullptr;
    std::vector<float> bias;
    int rows = 0, cols = 0;
    const uint8_t *expert_blocks(int e) const { return blocks + int64_t(e) * rows * (cols / 2); }
    const uint8_t *expert_scales(int e) const { return scales + int64_t(e) * rows * (cols / 32); }
    const float *expert_bias(int e) const { return bias.data() + int64_t(e) * rows; }
};

struct LayerWeights {
    std::vector<float> attn_norm, mlp_norm, sinks;
    DenseWeight q, k, v, o, router;
    ExpertWeight gate_up, down;
};

class Model {
  public:
    // prefault = false leaves the mapping untouched (the CUDA loader reads it with many threads instead).
    static std::unique_ptr<Model> load(const ms_model_params &params, bool prefault = true);
    ~Model();

    const ModelConfig &config() const { return cfg_; }
    KvSpec kv_spec() const;
    size_t kv_block_bytes(int group, int block_size, bool bf16) const;
    int vocab_size() const { return cfg_.vocab_size; }
    Simd simd() const { return simd_; }
    // Matmul inputs are rounded to bf16 and multiplied with vdpbf16ps (cpu/matmul_bf16dot.h; off unless
    // bf16_dot_enabled() at load time).
    bool bf16_activations() const { return bf16_act_; }
    // Turns that on (only where the CPU can) or off; returns the effective setting. For tests and benchmarks that
    // compare the two; not while a forward pass runs on another thread.
    bool set_bf16_activations(bool on);
    // Opt-in "q8" activations: in steps of at least q8_min_tokens() tokens the MXFP4 expert matmuls take their inputs
    // quantized to int8 per 32-block and run on integer multiply-adds (cpu/matmul_mxfp4_q8.h); smaller steps and the
    // bf16 dense projections stay fp32. min_tokens <= 0 picks the threshold for this CPU: 1 (every step) where the
    // AVX2 kernel runs, which beats the fp32 AVX2 MXFP4 kernel even for one token; 8 on the AVX-512 VNNI path, whose
    // 8-token panels are mostly empty in small steps while the fp32 AVX-512 kernel is fast there. On with
    // MS_ACTIVATIONS=q8 at load (MS_Q8_MIN_TOKENS=N sets the threshold). bf16 activations, where on, take precedence.
    // dense = true (MS_ACTIVATIONS=q8all) also runs the attention q/k/v/o and unembedding projections on int8 x int8
    // (cpu/matmul_q8_dense.h) in steps of at least max(q8_min_tokens(), kQ8DenseMinTokens) tokens, with int8 copies
    // of those weights made here (about 1.1 bytes per weight more memory; the router stays fp32): that kernel is
    // about 1.5x the fp32 one from 8 tokens on but half its speed for one token. Same caveats as set_bf16_activations; returns the effective setting.
    static constexpr int kQ8AutoMinTokens = 0;
    static constexpr int kQ8DenseMinTokens = 8;
    bool q8_activations() const { return q8_act_; }
    int q8_min_tokens() const { return q8_min_tokens_; }
    bool q8_dense() const { return q8_act_ && q8_dense_; }
    bool set_q8_activations(bool on, int min_tokens = kQ8AutoMinTokens, bool dense = false);
    // "fp16" activations, the default where the CPU has AVX512-FP16 and the model runs the AVX-512 kernels
    // (MS_ACTIVATIONS=fp32 turns them off; MS_F16_MIN_TOKENS=N sets the threshold): in steps of at least
    // f16_min_tokens() tokens the attention q/k/v/o projections, the MXFP4 experts and the unembedding take their
    // inputs rounded to fp16 (each token's row scaled by a power of two first) and run on vfmadd231ph
    // (cpu/matmul_f16dot.h); the router stays fp32, so rounding never picks the experts. A matmul whose inputs hold inf
    // or NaN runs in fp32 instead. bf16 activations, where on, take precedence, and fp16 takes precedence over q8.
    // min_tokens <= 0: kF16DefaultMinTokens = 1, every step: then batching never changes a token's result (the
    // kernels accumulate each (row, token) in the same order whatever the token count), and batch-1 decode, which is
    // bound by memory bandwidth, runs at the same speed as on fp32 (mid preset, session 8: 0.96-1.17x); batched steps
    // and prefill are compute-bound and run 1.4-1.8x faster (docs/benchmarks/engine.md).
    // Same caveats as set_bf16_activations; returns the effective setting.
    // Turning fp16 on converts the attention projections and the unembedding once into the kernels' scaled fp16
    // (f16_dense_convert; bit for bit what converting them on every call gave, which cost ~25 % of those matmuls):
    // heap memory of the size of those bf16 weights plus row padding (32 elements a row; mid preset 112 MB,
    // gpt-oss-20b ~2.45 GB). The bf16 originals stay mapped but fp16 steps no longer read them (only a step that
    // falls back to fp32 does), so their page-cache pages can be reclaimed. f16_dense_bytes() says how much was made.
    static constexpr int kF16DefaultMinTokens = 1;
    bool f16_activations() const { return f16_act_; }
    int f16_min_tokens() const { return f16_min_tokens_; }
    bool set_f16_activations(bool on, int min_tokens = 0);
    // Matmul calls (one projection or one expert projection of a layer, or the unembedding, per step) that ran on
    // fp16 activations since load: lets tests and benchmarks see that the fp16 path really ran.
    uint64_t f16_matmuls() const { return f16_matmuls_; }
    size_t f16_dense_bytes() const;  // not while set_f16_activations runs
    int n_threads() const { return pool_->size(); }
    uint64_t weight_bytes() const { return ckpt_->data_bytes(); }

    // Runs one step: each seq's chunk is written into `kv` per its block tables and attended; one row of
    // vocab_size logits is written per seq with want_logits, in seq order. Thread-safe (serialised inside).
    void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits);
    // As forward, but writes logits for every token of every seq ([total tokens][vocab]); for tests and eval.
    void forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits);

    const LayerWeights &layer(int i) const { return layers_[i]; }
    const uint16_t *embed() const { return embed_; }
    const float *final_norm() const { return final_norm_.data(); }
    const DenseWeight &lm_head() const { return lm_head_; }
    const Rope &rope() const { return rope_; }

  private:
    Model() = default;
    void run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits, bool all_positions);
    void validate_step(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const;
    void attention_layer(int l, const ForwardSeq *seqs, int n_seqs, KvStorage &kv);
    void moe_layer(int l, int n_tok);

    ModelConfig cfg_;
    std::unique_ptr<Checkpoint> ckpt_;
    std::unique_ptr<ThreadPool> pool_;
    Simd simd_ = Simd::Scalar;
    bool bf16_act_ = false;
    bool q8_act_ = false;
    int q8_min_tokens_ = 1;
    bool q8_dense_ = false;
    bool f16_act_ = false;
    int f16_min_tokens_ = kF16DefaultMinTokens;
    uint64_t f16_matmuls_ = 0;
    bool use_f16(int n_tok) const { return f16_act_ && !bf16_act_ && n_tok >= f16_min_tokens_; }
    struct F16Dense;  // fp16 copies of the dense projections and the unembedding (fp16 mode), made when it is set
    std::unique_ptr<F16Dense> f16d_;
    struct Q8Dense;  // int8 copies of the dense projections (q8 dense mode), made on first use
    std::unique_ptr<Q8Dense> q8d_;
    Rope rope_;
    KvSpec spec_;
    const uint16_t *embed_ = nullptr;
    std::vector<float> final_norm_;
    DenseWeight lm_head_;
    std::vector<LayerWeights> layers_;

    // Step workspace: grown on demand, reused across steps (no allocation in steady state).
    std::mutex mu_;
    struct Workspace;
    std::unique_ptr<Workspace> ws_;
};

}  // namespace ms
