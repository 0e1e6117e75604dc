// The real executor: ms::Model behind the runtime's Executor interface.
#pragma once

#include "model/model.h"
#include "runtime/executor.h"

namespace ms {

class ModelExecutor : public Executor {
  public:
    explicit ModelExecutor(Model &model) : model_(model), spec_(model.kv_spec()) {}
    const KvSpec &kv_spec() const override { return spec_; }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const override {
        return model_.kv_block_bytes(group, block_size, bf16);
    }
    int vocab_size() const override { return model_.vocab_size(); }
    int eos_token_id() const override {
        const auto &ids = model_.config().eos_token_ids;
        return ids.empty() ? -1 : ids.front();
    }
    int max_positions() const override { return model_.config().max_position_embeddings; }
    void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) override {
        model_.forward(seqs, n_seqs, kv, logits);
    }

  private:
    Model &model_;
    KvSpec spec_;
};

}  // namespace ms
