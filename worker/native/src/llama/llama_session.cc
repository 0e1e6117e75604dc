#include "llama/llama_session.h"

#include "common/error.h"

namespace ms {

int32_t argmax(const float *v, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; ++i)
        if (v[i] > v[best]) best = i;
    return best;
}

LlamaSession::LlamaSession(LlamaModel &model, int max_tokens, bool bf16_kv) : model_(model), max_tokens_(max_tokens) {
    const KvSpec spec = model.kv_spec();
    const int bs = 16, n_blocks = (max_tokens + bs - 1) / bs;
    kv_.block_size = bs;
    kv_.kv_dim = spec.kv_dim;
    kv_.bf16 = bf16_kv;
    kv_.layers_in_group[kFullGroup] = spec.layers_in_group[kFullGroup];
    kv_.num_blocks[kFullGroup] = n_blocks;
    const size_t bytes = size_t(n_blocks) * spec.layers_in_group[kFullGroup] * bs * spec.kv_dim * (bf16_kv ? 2 : 4);
    k_.assign(bytes, 0);
    v_.assign(bytes, 0);
    kv_.k[kFullGroup] = k_.data();
    kv_.v[kFullGroup] = v_.data();
    table_.resize(n_blocks);
    for (int i = 0; i < n_blocks; ++i) table_[i] = i;
    logits_.resize(model.vocab_size());
}

const std::vector<float> &LlamaSession::feed(const int32_t *tokens, int n) {
    if (n <= 0 || pos_ + n > max_tokens_)
        throw Error(MS_ERR_CAPACITY, "LlamaSession: " + std::to_string(pos_ + n) + " tokens exceed the session's " +
                                         std::to_string(max_tokens_));
    ForwardSeq s;
    s.tokens = tokens;
    s.n_tokens = n;
    s.start_pos = pos_;
    s.block_table[kFullGroup] = table_.data();
    s.n_blocks[kFullGroup] = int(table_.size());
    model_.forward(&s, 1, kv_, logits_.data());
    pos_ += n;
    return logits_;
}

std::vector<int32_t> LlamaSession::greedy(const std::vector<int32_t> &prompt, int n_new, bool stop_at_eos) {
    std::vector<int32_t> out;
    const std::vector<float> *l = &feed(prompt.data(), int(prompt.size()));
    for (int i = 0; i < n_new; ++i) {
        int32_t t = argmax(l->data(), model_.vocab_size());
        out.push_back(t);
        if ((stop_at_eos && t == model_.config().eos_token_id) || i + 1 == n_new) break;
        l = &feed(&t, 1);
    }
    return out;
}

}  // namespace ms
