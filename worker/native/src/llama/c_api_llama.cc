#include "llama/c_api_llama.h"

#include <cstring>
#include <vector>

#include "common/error.h"
#include "model/model_handle.h"

namespace ms {

void llama_model_info(const LlamaModel &m, ms_model_info *out) {
    const LlamaConfig &c = m.config();
    std::memset(out, 0, sizeof(*out));
    std::strncpy(out->architecture, c.architecture.c_str(), sizeof(out->architecture) - 1);
    std::strncpy(out->backend, "cpu", sizeof(out->backend) - 1);
    std::strncpy(out->simd, simd_name(m.simd()), sizeof(out->simd) - 1);
    out->n_layers = c.n_layers;
    out->hidden_size = c.hidden;
    out->intermediate_size = c.ffn;
    out->n_heads = c.n_heads;
    out->n_kv_heads = c.n_kv_heads;
    out->head_dim = c.head_dim;
    out->vocab_size = c.vocab;
    out->max_position_embeddings = c.context;
    out->eos_token_id = c.eos_token_id;
    out->bos_token_id = c.bos_token_id;
    out->add_bos_token = c.add_bos ? 1 : 0;
    out->weight_bytes = m.weight_bytes();
}

void llama_model_eval(LlamaModel &m, const int32_t *tokens, int n_tokens, float *logits) {
    const KvSpec spec = m.kv_spec();
    const int bs = 16, n_blocks = (n_tokens + bs - 1) / bs;
    KvStorage kv;
    kv.block_size = bs;
    kv.kv_dim = spec.kv_dim;
    kv.layers_in_group[kFullGroup] = spec.layers_in_group[kFullGroup];
    kv.num_blocks[kFullGroup] = n_blocks;
    const size_t elems = size_t(n_blocks) * spec.layers_in_group[kFullGroup] * bs * spec.kv_dim;
    std::vector<float> k(elems, 0.0f), v(elems, 0.0f);
    kv.k[kFullGroup] = k.data();
    kv.v[kFullGroup] = v.data();
    std::vector<int32_t> table(n_blocks);
    for (int i = 0; i < n_blocks; ++i) table[i] = i;
    ForwardSeq seq;
    seq.tokens = tokens;
    seq.n_tokens = n_tokens;
    seq.block_table[kFullGroup] = table.data();
    seq.n_blocks[kFullGroup] = n_blocks;
    m.forward_all_logits(&seq, 1, kv, logits);
}

}  // namespace ms

namespace {
const ms::BpeTokenizer &tokenizer_of(const ms_model *model, const char *fn) {
    if (!model) throw ms::Error(MS_ERR_INVALID_ARGUMENT, std::string(fn) + ": model is null");
    if (!model->llama)
        throw ms::Error(MS_ERR_UNSUPPORTED, std::string(fn) + ": this model's checkpoint carries no tokenizer (GGUF models do)");
    return model->llama->tokenizer();
}
}  // namespace

extern "C" ms_status ms_model_tokenize(const ms_model *model, const char *text, size_t len, int parse_special, int32_t *out,
                                       int cap, int *n_out) {
    return ms::guard([&] {
        const ms::BpeTokenizer &t = tokenizer_of(model, "ms_model_tokenize");
        if ((!text && len > 0) || !n_out || cap < 0 || (cap > 0 && !out))
            throw ms::Error(MS_ERR_INVALID_ARGUMENT, "ms_model_tokenize: text, out or n_out is null, or cap < 0");
        const std::vector<int32_t> ids = t.encode(std::string(text ? text : "", len), parse_special != 0);
        const size_t n = std::min(ids.size(), size_t(cap));
        if (n) std::memcpy(out, ids.data(), n * sizeof(int32_t));
        *n_out = int(ids.size());
    });
}

extern "C" ms_status ms_model_token_bytes(const ms_model *model, int32_t token, int special, char *out, size_t cap,
                                          size_t *n_out) {
    return ms::guard([&] {
        const ms::BpeTokenizer &t = tokenizer_of(model, "ms_model_token_bytes");
        if (!n_out || (cap > 0 && !out)) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "ms_model_token_bytes: out or n_out is null");
        if (token < 0 || token >= t.vocab_size())
            throw ms::Error(MS_ERR_INVALID_ARGUMENT, "ms_model_token_bytes: token " + std::to_string(token) + " is outside the vocabulary");
        const std::string b = t.token_bytes(token, special != 0);
        if (cap) std::memcpy(out, b.data(), std::min(cap, b.size()));
        *n_out = b.size();
    });
}

extern "C" ms_status ms_model_chat_template(const ms_model *model, const char **out) {
    return ms::guard([&] {
        if (!model || !out) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "ms_model_chat_template: model or out is null");
        *out = model->llama ? model->llama->config().chat_template.c_str() : "";
    });
}
