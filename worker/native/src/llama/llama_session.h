// One sequence over a LlamaModel with a private contiguous KV cache (block i holds positions [16 i, 16 i + 16)):
// feed tokens, read the last position's logits. For tests, tools and benchmarks; serving goes through the engine.
#pragma once

#include <vector>

#include "llama/llama_model.h"

namespace ms {

class LlamaSession {
  public:
    LlamaSession(LlamaModel &model, int max_tokens, bool bf16_kv = false);
    // Appends tokens (a prefill chunk or one decode token) and returns the logits of the last one (vocab floats).
    const std::vector<float> &feed(const int32_t *tokens, int n);
    int position() const { return pos_; }
    // Greedy continuation: the argmax token after each step, n_new tokens (stops early at eos when stop_at_eos).
    std::vector<int32_t> greedy(const std::vector<int32_t> &prompt, int n_new, bool stop_at_eos);

  private:
    LlamaModel &model_;
    KvStorage kv_;
    std::vector<uint8_t> k_, v_;
    std::vector<int32_t> table_;
    std::vector<float> logits_;
    int pos_ = 0, max_tokens_;
};

int32_t argmax(const float *v, int n);

}  // namespace ms
