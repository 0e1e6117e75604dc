// LlamaModel behind the runtime's Executor interface, so a GGUF model is served by the same scheduler, paged KV
// cache and step loop as gpt-oss.
#pragma once

#include "llama/llama_model.h"
#include "runtime/executor.h"

namespace ms {

class LlamaExecutor : public Executor {
  public:
    explicit LlamaExecutor(LlamaModel &model) : model_(model), spec_(model.kv_spec()) {}
    const KvSpec &kv_spec() const override { return spec_; }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const override {
        return model_.kv_block_bytes(group, block_size, bf16);
    }
    int vocab_size() const override { return model_.vocab_size(); }
    int eos_token_id() const override { return model_.config().eos_token_id; }
    int max_positions() const override { return model_.config().context; }
    void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) override {
        model_.forward(seqs, n_seqs, kv, logits);
    }

  private:
    LlamaModel &model_;
    KvSpec spec_;
};

}  // namespace ms
