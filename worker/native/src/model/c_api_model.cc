// The ms_model_* half of the C API (engine.h).
#include <cstring>
#include <vector>

#include "common/error.h"
#include "llama/c_api_llama.h"
#include "model/model_handle.h"
#include "runtime/cuda_backend.h"

using ms::Error;

namespace {
constexpr uint64_t kSyntheticSeed = 42;  // the seed of bench_cuda's synthetic weights
}

extern "C" {

void ms_model_params_default(ms_model_params *params) {
    if (!params) return;
    std::memset(params, 0, sizeof(*params));
    params->backend = "auto";
}

ms_status ms_model_load(const ms_model_params *params, ms_model **out) {
    return ms::guard([&] {
        if (!params || !out) throw Error(MS_ERR_INVALID_ARGUMENT, "ms_model_load: params and out must not be null");
        *out = nullptr;
        auto handle = std::make_unique<ms_model>();
        // "synthetic:NAME": random weights of a known shape generated on the GPU (no host model, no file).
        if (std::string name; ms::synthetic_model_name(params->path, &name)) {
            const ms::ModelConfig config = ms::synthetic_model_config(name);
            if (ms::resolve_backend(params->backend) != "cuda")
                throw Error(MS_ERR_UNSUPPORTED, std::string(params->path) +
                                                    ": synthetic weights are generated on the GPU; load it with "
                                                    "backend \"cuda\" (or MODELSERVE_DEVICE=cuda with \"auto\")");
            handle->device = ms::cuda_synthesize_model(config, kSyntheticSeed, params->progress, params->progress_user);
            *out = handle.release();
            return;
        }
        // A .gguf file, or a directory holding one, is a llama-family model (llama/llama_model.h).
        const std::string gguf_path = params->path ? ms::resolve_gguf_path(params->path) : "";
        if (!gguf_path.empty()) {
            handle->llama = ms::LlamaModel::load(*params, gguf_path);
            *out = handle.release();
            return;
        }
        const std::string backend = ms::resolve_backend(params->backend);
        ms_model_params host = *params;
        host.backend = "cpu";  // the host model always loads; "cuda" then uploads its weights
        if (backend == "cuda") {
            // No single-threaded prefault of the mapping: the loader reads it with several threads and reports
            // progress as bytes reach the GPU.
            handle->model = ms::Model::load(host, false);
            handle->device = ms::cuda_upload_model(*handle->model, params->progress, params->progress_user);
        } else {
            handle->model = ms::Model::load(host);
        }
        *out = handle.release();
    });
}

void ms_model_free(ms_model *model) { delete model; }

ms_status ms_model_get_info(const ms_model *model, ms_model_info *out) {
    return ms::guard([&] {
        if (!model || !out) throw Error(MS_ERR_INVALID_ARGUMENT, "ms_model_get_info: model and out must not be null");
        if (model->llama) return ms::llama_model_info(*model->llama, out);
        const ms::Model *m = model->model.get();  // null for a synthetic model: it lives on the GPU only
        const ms::ModelConfig &c = m ? m->config() : ms::cuda_model_config(*model->device);
        std::memset(out, 0, sizeof(*out));
        std::strncpy(out->architecture, c.architecture.c_str(), sizeof(out->architecture) - 1);
        std::strncpy(out->backend, model->device ? "cuda" : "cpu", sizeof(out->backend) - 1);
        std::strncpy(out->simd, ms::simd_name(m ? m->simd() : ms::active_simd()), sizeof(out->simd) - 1);
        out->n_layers = c.num_hidden_layers;
        out->n_experts = c.num_local_experts;
        out->n_experts_per_tok = c.num_experts_per_tok;
        out->hidden_size = c.hidden_size;
        out->intermediate_size = c.intermediate_size;
        out->n_heads = c.num_attention_heads;
        out->n_kv_heads = c.num_key_value_heads;
        out->head_dim = c.head_dim;
        out->vocab_size = c.vocab_size;
        out->sliding_window = c.sliding_window;
        out->max_position_embeddings = c.max_position_embeddings;
        out->eos_token_id = c.eos_token_ids.empty() ? -1 : c.eos_token_ids[0];
        out->bos_token_id = -1;  // harmony prompts have no BOS
        out->add_bos_token = 0;
        out->weight_bytes = m ? m->weight_bytes() : ms::cuda_model_bytes(*model->device);
    });
}

ms_status ms_model_eval(ms_model *model, const int32_t *tokens, int n_tokens, float *logits) {
    return ms::guard([&] {
        if (!model || !tokens || !logits || n_tokens <= 0)
            throw Error(MS_ERR_INVALID_ARGUMENT, "ms_model_eval: model, tokens and logits must be set and n_tokens > 0");
        if (model->llama) return ms::llama_model_eval(*model->llama, tokens, n_tokens, logits);
        if (!model->model)
            throw Error(MS_ERR_UNSUPPORTED, "ms_model_eval: a synthetic model has no host weights (serve it instead)");
        ms::Model &m = *model->model;
        const ms::KvSpec spec = m.kv_spec();
        // A private contiguous cache: block i of each group holds positions [16 i, 16 i + 16).
        const int bs = 16, n_blocks = (n_tokens + bs - 1) / bs;
        ms::KvStorage kv;
        kv.block_size = bs;
        kv.kv_dim = spec.kv_dim;
        std::vector<float> store[ms::kNumKvGroups][2];
        std::vector<int32_t> table(n_blocks);
        for (int i = 0; i < n_blocks; ++i) table[i] = i;
        ms::ForwardSeq seq;
        seq.tokens = tokens;
        seq.n_tokens = n_tokens;
        seq.start_pos = 0;
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            kv.layers_in_group[g] = spec.layers_in_group[g];
            if (spec.layers_in_group[g] == 0) continue;
            kv.num_blocks[g] = n_blocks;
            const size_t elems = size_t(n_blocks) * spec.layers_in_group[g] * bs * spec.kv_dim;
            store[g][0].assign(elems, 0.0f);
            store[g][1].assign(elems, 0.0f);
            kv.k[g] = store[g][0].data();
            kv.v[g] = store[g][1].data();
            seq.block_table[g] = table.data();
            seq.n_blocks[g] = n_blocks;
        }
        m.forward_all_logits(&seq, 1, kv, logits);
    });
}

}  // extern "C"
