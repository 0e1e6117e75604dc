// ms_engine_*: the C API over ms::Engine and the model executor. Nothing throws across this boundary.
#include <memory>

#include "common/error.h"
#include "engine.h"
#include "model/model_handle.h"
#include "runtime/serving_engine.h"
#include "runtime/cuda_backend.h"
#include "runtime/model_executor.h"
#include "llama/llama_executor.h"

struct ms_engine {
    std::unique_ptr<ms::Executor> executor;  // ModelExecutor (CPU) or the CUDA executor
    std::unique_ptr<ms::Engine> engine;  // declared last: stopped before the executor goes
};

extern "C" void ms_engine_params_default(ms_engine_params *p) {
    if (!p) return;
    p->max_context = 4096;
    p->max_batched_tokens = 2048;
    p->max_seqs = 64;
    p->max_waiting = 0;
    p->kv_block_size = 16;
    p->kv_memory_bytes = 1ull << 30;
    p->kv_dtype_bf16 = 1;
    p->enable_prefix_caching = 1;
}

extern "C" ms_status ms_engine_create(ms_model *model, const ms_engine_params *params, ms_event_fn on_events, void *user,
                                      ms_engine **out) {
    return ms::guard([&] {
        if (!out) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "out is null");
        *out = nullptr;
        if (!model || (!model->model && !model->llama && !model->device)) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "model is null");
        if (!params) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "params is null");
        auto e = std::make_unique<ms_engine>();
        if (model->llama) e->executor = std::make_unique<ms::LlamaExecutor>(*model->llama);
        else if (model->device) e->executor = ms::make_cuda_executor(model->device);
        else e->executor = std::make_unique<ms::ModelExecutor>(*model->model);
        e->engine = std::make_unique<ms::Engine>(*e->executor, *params, on_events, user);
        *out = e.release();
    });
}

extern "C" ms_status ms_engine_submit(ms_engine *engine, const ms_request *request, uint64_t *id_out) {
    return ms::guard([&] {
        if (!engine || !request || !id_out) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "engine, request or id_out is null");
        *id_out = engine->engine->submit(*request);
    });
}

extern "C" ms_status ms_engine_cancel(ms_engine *engine, uint64_t id) {
    return ms::guard([&] {
        if (!engine) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "engine is null");
        engine->engine->cancel(id);
    });
}

extern "C" ms_status ms_engine_get_stats(ms_engine *engine, ms_engine_stats *out) {
    return ms::guard([&] {
        if (!engine || !out) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "engine or out is null");
        *out = engine->engine->stats();
    });
}

extern "C" void ms_engine_free(ms_engine *engine) { delete engine; }
