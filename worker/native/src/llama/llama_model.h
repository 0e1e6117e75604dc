// Dense llama-family models from one GGUF file (SmolLM2 and its relatives) on the CPU: RMSNorm, RoPE in llama.cpp's
// "normal" mode (adjacent pairs: the GGUF converter permutes q/k so that this equals the Hugging Face layout),
// grouped-query attention over the runtime's paged KV cache, SwiGLU MLP, tied embeddings when the file has no
// output.weight. Weights stay in the file's mapping; quantized matrices meet Q8-quantized activations as llama.cpp's
// CPU backend does, so results follow it closely (bit for bit with MS_LLAMA_NUMERICS=llamacpp, llama_ggml_ops.h).
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/quant_matmul.h"
#include "cpu/simd.h"
#include "cpu/thread_pool.h"
#include "engine.h"
#include "gguf/gguf.h"
#include "llama/llama_ggml_ops.h"
#include "model/forward.h"
#include "tokenizer/bpe_tokenizer.h"

namespace ms {

struct LlamaConfig {
    std::string architecture = "llama";
    std::string name;
    int n_layers = 0, hidden = 0, ffn = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0, vocab = 0, context = 0;
    int rope_dims = 0;
    float rope_theta = 10000, rms_eps = 1e-5f;
    int bos_token_id = -1, eos_token_id = -1;
    bool add_bos = false;
    bool tied_embeddings = false;
    std::string chat_template;
};

struct LlamaMatrix {
    WeightType type = WeightType::F32;
    const uint8_t *data = nullptr;
    int rows = 0, cols = 0;
};

struct LlamaLayer {
    std::vector<float> attn_norm, ffn_norm;
    LlamaMatrix q, k, v, o, gate, up, down;
};

// The GGUF file `path` names: the path itself when it ends in ".gguf", the only *.gguf inside it when it is a
// directory holding one (more than one is an error), else "" (not a GGUF model).
std::string resolve_gguf_path(const std::string &path);

class LlamaModel {
  public:
    static std::unique_ptr<LlamaModel> load(const ms_model_params &params, const std::string &gguf_path);
    ~LlamaModel();

    const LlamaConfig &config() const { return cfg_; }
    const BpeTokenizer &tokenizer() const { return *tok_; }
    KvSpec kv_spec() const { return spec_; }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const;
    int vocab_size() const { return cfg_.vocab; }
    Simd simd() const { return simd_; }
    int n_threads() const { return pool_->size(); }
    uint64_t weight_bytes() const { return file_->data_bytes(); }
    // Whether the forward reproduces llama.cpp's CPU arithmetic bit for bit (MS_LLAMA_NUMERICS=llamacpp at load; see
    // llama_ggml_ops.h) instead of the engine's own kernels.
    bool llamacpp_numerics() const { return llamacpp_numerics_; }

    // As ms::Model::forward: one step over the paged KV cache, a row of logits per seq that wants them.
    void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits);
    void forward_all_logits(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits);

  private:
    LlamaModel() = default;
    void run(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits, bool all_positions);
    void validate_step(const ForwardSeq *seqs, int n_seqs, const KvStorage &kv) const;
    void attention(int l, const ForwardSeq *seqs, int n_seqs, KvStorage &kv, int T);
    void mlp(int l, int T);
    // out[t][r] = M x[t] for t < T over all rows of M (activations quantized into the Q8 workspace first).
    void matmul(const LlamaMatrix *const *mats, float *const *outs, int n_mats, const float *x, int T);

    LlamaConfig cfg_;
    std::unique_ptr<gguf::File> file_;
    std::unique_ptr<BpeTokenizer> tok_;
    std::unique_ptr<ThreadPool> pool_;
    Simd simd_ = Simd::Scalar;
    bool llamacpp_numerics_ = false;
    ggml_ops::GgmlBuild ggml_build_ = ggml_ops::GgmlBuild::Avx512;
    // MS_LLAMA_DUMP=DIR (read at load, for debugging the numerics against hack/slm/dump_llama_cpp.cc): each forward
    // writes its intermediate tensors, named as llama.cpp's graph names them, to DIR/<step>/<name>-<layer>.f32.
    std::string dump_dir_;
    int dump_step_ = 0;
    void dump(const char *name, int layer, const float *x, int64_t n) const;
    KvSpec spec_;
    LlamaMatrix embed_, output_;
    std::vector<float> output_norm_;
    std::vector<LlamaLayer> layers_;
    float no_sinks_[64];

    std::mutex mu_;
    struct Workspace;
    std::unique_ptr<Workspace> ws_;
};

}  // namespace ms
