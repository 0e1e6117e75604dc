// The N-API addon: a thin layer over the C API (include/engine.h). Loading runs on a worker thread (AsyncWorker) with
// progress through a thread-safe function; each engine step's events reach JavaScript in one call through another
// thread-safe function. No engine logic lives here.
#include <napi.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "engine.h"

namespace {

Napi::Error status_error(Napi::Env env, ms_status status, const std::string &message) {
    Napi::Error err = Napi::Error::New(env, message);
    err.Set("code", Napi::String::New(env, ms_status_name(status)));
    return err;
}

// A JS number as an integer in [lo, hi]; anything else (NaN, fractions, out of range) is refused by name, never cast.
int64_t checked_int(Napi::Env env, double v, const char *field, double lo, double hi) {
    if (!(v >= lo && v <= hi) || v != std::floor(v))
        throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(field) + " must be an integer in [" +
                                                             std::to_string(static_cast<int64_t>(lo)) + ", " +
                                                             std::to_string(static_cast<int64_t>(hi)) + "]");
    return static_cast<int64_t>(v);
}

constexpr double kIntMax = 2147483647.0;
constexpr double kSafeMax = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

// One engine event, copied off the engine thread.
struct EventCopy {
    uint64_t id;
    int32_t token;
    float logprob;
    int n_top;
    int32_t top_ids[MS_MAX_LOGPROBS];
    float top_logprobs[MS_MAX_LOGPROBS];
    int finish_reason;
    int n_prompt_cached;
    std::string message;
};
using EventBatch = std::vector<EventCopy>;

const char *finish_name(int reason) {
    switch (reason) {
    case MS_FINISH_STOP: return "stop";
    case MS_FINISH_LENGTH: return "length";
    case MS_FINISH_CANCELLED: return "cancelled";
    case MS_FINISH_ERROR: return "error";
    default: return nullptr;
    }
}

// Converts a batch to [{id, token, logprob?, topLogprobs?, finishReason?, cachedPromptTokens?, message?}, ...].
void call_js_events(Napi::Env env, Napi::Function fn, EventBatch *batch) {
    std::unique_ptr<EventBatch> owned(batch);
    if (env == nullptr || fn.IsEmpty()) return;  // the engine is being torn down
    Napi::Array arr = Napi::Array::New(env, owned->size());
    for (size_t i = 0; i < owned->size(); ++i) {
        const EventCopy &e = (*owned)[i];
        Napi::Object o = Napi::Object::New(env);
        o.Set("id", Napi::Number::New(env, static_cast<double>(e.id)));
        o.Set("token", Napi::Number::New(env, e.token));
        if (e.n_top > 0) {
            Napi::Array top = Napi::Array::New(env, e.n_top);
            for (int k = 0; k < e.n_top; ++k) {
                Napi::Object t = Napi::Object::New(env);
                t.Set("token", Napi::Number::New(env, e.top_ids[k]));
                t.Set("logprob", Napi::Number::New(env, e.top_logprobs[k]));
                top.Set(k, t);
            }
            o.Set("topLogprobs", top);
            o.Set("logprob", Napi::Number::New(env, e.logprob));
        }
        if (const char *f = finish_name(e.finish_reason)) o.Set("finishReason", Napi::String::New(env, f));
        if (e.n_prompt_cached > 0) o.Set("cachedPromptTokens", Napi::Number::New(env, e.n_prompt_cached));
        if (!e.message.empty()) o.Set("message", Napi::String::New(env, e.message));
        arr.Set(i, o);
    }
    fn.Call({arr});
}

// State shared by the engine thread's callback and the JS object.
struct Shared {
    Napi::ThreadSafeFunction events;
};

void on_engine_events(void *user, const ms_event *events, int n) {
    auto *shared = static_cast<Shared *>(user);
    auto *batch = new EventBatch(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) {
        const ms_event &s = events[i];
        EventCopy &d = (*batch)[i];
        d.id = s.id;
        d.token = s.token;
        d.logprob = s.logprob;
        d.n_top = s.n_top;
        for (int k = 0; k < s.n_top; ++k) {
            d.top_ids[k] = s.top_ids[k];
            d.top_logprobs[k] = s.top_logprobs[k];
        }
        d.finish_reason = s.finish_reason;
        d.n_prompt_cached = s.n_prompt_cached;
        if (s.message) d.message = s.message;
    }
    if (shared->events.NonBlockingCall(batch, call_js_events) != napi_ok) delete batch;
}

class EngineWrap;

// --- loading --------------------------------------------------------------------------------------------------

struct LoadOptions {
    std::string path, backend;
    int threads = 0;
    ms_engine_params engine{};
};

struct Progress {
    uint64_t done, total;
};

class LoadWorker : public Napi::AsyncWorker {
  public:
    LoadWorker(Napi::Env env, LoadOptions opts, std::unique_ptr<Shared> shared, Napi::Function on_progress)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), opts_(std::move(opts)),
          shared_(std::move(shared)) {
        if (!on_progress.IsEmpty()) {
            progress_ = Napi::ThreadSafeFunction::New(env, on_progress, "modelserve.loadProgress", 0, 1);
            has_progress_ = true;
        }
    }
    Napi::Promise promise() { return deferred_.Promise(); }

    void Execute() override {
        ms_model_params mp;
        ms_model_params_default(&mp);
        mp.path = opts_.path.c_str();
        mp.backend = opts_.backend.empty() ? nullptr : opts_.backend.c_str();
        mp.n_threads = opts_.threads;
        if (has_progress_) {
            mp.progress = &LoadWorker::on_progress;
            mp.progress_user = this;
        }
        status_ = ms_model_load(&mp, &model_);
        if (status_ != MS_OK) {
            message_ = ms_last_error();
            return;
        }
        status_ = ms_engine_create(model_, &opts_.engine, on_engine_events, shared_.get(), &engine_);
        if (status_ != MS_OK) {
            message_ = ms_last_error();
            ms_model_free(model_);
            model_ = nullptr;
        }
    }

    // Execute never calls SetError, so OnOK always runs; it settles by the ms_status.
    void OnOK() override;

  private:
    static void on_progress(void *user, uint64_t done, uint64_t total) {
        auto *self = static_cast<LoadWorker *>(user);
        // At most ~100 calls: one per percent, and the last.
        const uint64_t pct = total ? done * 100 / total : 100;
        if (pct == self->last_pct_ && done != total) return;
        self->last_pct_ = pct;
        auto *p = new Progress{done, total};
        auto status = self->progress_.NonBlockingCall(p, [](Napi::Env env, Napi::Function fn, Progress *data) {
            std::unique_ptr<Progress> owned(data);
            if (env != nullptr && !fn.IsEmpty())
                fn.Call({Napi::Number::New(env, static_cast<double>(owned->done)),
                         Napi::Number::New(env, static_cast<double>(owned->total))});
        });
        if (status != napi_ok) delete p;
    }

    Napi::Promise::Deferred deferred_;
    LoadOptions opts_;
    std::unique_ptr<Shared> shared_;
    Napi::ThreadSafeFunction progress_;
    bool has_progress_ = false;
    uint64_t last_pct_ = ~0ull;
    ms_status status_ = MS_OK;
    std::string message_;
    ms_model *model_ = nullptr;
    ms_engine *engine_ = nullptr;
};

// --- the engine object ------------------------------------------------------------------------------------------

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
  public:
    static Napi::FunctionReference constructor;

    static void Init(Napi::Env env, Napi::Object exports) {
        Napi::Function fn = DefineClass(env, "NativeEngine",
                                        {InstanceMethod("submit", &EngineWrap::Submit),
                                         InstanceMethod("cancel", &EngineWrap::Cancel),
                                         InstanceMethod("stats", &EngineWrap::Stats),
                                         InstanceMethod("info", &EngineWrap::Info),
                                         InstanceMethod("evalLogits", &EngineWrap::EvalLogits),
                                         InstanceMethod("tokenize", &EngineWrap::Tokenize),
                                         InstanceMethod("tokenBytes", &EngineWrap::TokenBytes),
                                         InstanceMethod("chatTemplate", &EngineWrap::ChatTemplate),
                                         InstanceMethod("close", &EngineWrap::Close)});
        constructor = Napi::Persistent(fn);
        constructor.SuppressDestruct();
        exports.Set("NativeEngine", fn);
    }

    explicit EngineWrap(const Napi::CallbackInfo &info) : Napi::ObjectWrap<EngineWrap>(info) {}
    ~EngineWrap() override { teardown(); }

    void adopt(ms_model *model, ms_engine *engine, std::unique_ptr<Shared> shared) {
        model_ = model;
        engine_ = engine;
        shared_ = std::move(shared);
    }

    // Frees the engine (joining its thread, which delivers the final events) and the model; releases the TSFN.
    void teardown() {
        if (engine_) ms_engine_free(engine_);
        engine_ = nullptr;
        if (model_) ms_model_free(model_);
        model_ = nullptr;
        if (shared_) {
            shared_->events.Release();
            // The Shared object must live until the TSFN is finalized; its finalizer deletes it.
            shared_.release();
        }
    }

  private:
    void require_open(Napi::Env env) const {
        if (!engine_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
    }

    Napi::Value Submit(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        require_open(env);
        if (info.Length() < 1 || !info[0].IsObject()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, "submit(request): request must be an object");
        Napi::Object r = info[0].As<Napi::Object>();
        std::vector<int32_t> prompt = int_array(env, r.Get("prompt"), "prompt");
        std::vector<int32_t> stops;
        if (r.Has("stopTokenIds") && !r.Get("stopTokenIds").IsUndefined()) stops = int_array(env, r.Get("stopTokenIds"), "stopTokenIds");
        ms_request req{};
        req.prompt = prompt.data();
        req.n_prompt = static_cast<int>(prompt.size());
        req.max_tokens = static_cast<int>(checked_int(env, number(env, r, "maxTokens", -1), "maxTokens", 1, kIntMax));
        req.temperature = static_cast<float>(number(env, r, "temperature", 0));
        req.top_p = static_cast<float>(number(env, r, "topP", 1));
        req.top_k = static_cast<int>(checked_int(env, number(env, r, "topK", 0), "topK", 0, kIntMax));
        req.min_p = static_cast<float>(number(env, r, "minP", 0));
        req.logprobs = static_cast<int>(checked_int(env, number(env, r, "logprobs", 0), "logprobs", 0, MS_MAX_LOGPROBS));
        req.frequency_penalty = static_cast<float>(number(env, r, "frequencyPenalty", 0));
        req.presence_penalty = static_cast<float>(number(env, r, "presencePenalty", 0));
        req.repetition_penalty = static_cast<float>(number(env, r, "repetitionPenalty", 1));
        Napi::Value seed = r.Get("seed");
        if (!seed.IsUndefined() && !seed.IsNull()) {
            if (!seed.IsNumber()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, "seed must be a number");
            req.seed = static_cast<uint64_t>(checked_int(env, seed.As<Napi::Number>().DoubleValue(), "seed", -kSafeMax, kSafeMax));
            req.has_seed = 1;
        }
        req.stop_token_ids = stops.data();
        req.n_stop_token_ids = static_cast<int>(stops.size());
        uint64_t id = 0;
        const ms_status st = ms_engine_submit(engine_, &req, &id);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        return Napi::Number::New(env, static_cast<double>(id));
    }

    Napi::Value Cancel(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        require_open(env);
        if (info.Length() < 1 || !info[0].IsNumber()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, "cancel(id): id must be a number");
        const int64_t id = checked_int(env, info[0].As<Napi::Number>().DoubleValue(), "id", 0, kSafeMax);
        const ms_status st = ms_engine_cancel(engine_, static_cast<uint64_t>(id));
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        return env.Undefined();
    }

    Napi::Value Stats(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        require_open(env);
        ms_engine_stats s{};
        const ms_status st = ms_engine_get_stats(engine_, &s);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        Napi::Object o = Napi::Object::New(env);
        o.Set("running", s.running);
        o.Set("waiting", s.waiting);
        o.Set("kvBlocksUsed", s.kv_blocks_used);
        o.Set("kvBlocksTotal", s.kv_blocks_total);
        o.Set("prefixCacheQueries", static_cast<double>(s.prefix_cache_queries));
        o.Set("prefixCacheHits", static_cast<double>(s.prefix_cache_hits));
        o.Set("preemptions", static_cast<double>(s.preemptions));
        o.Set("promptTokens", static_cast<double>(s.prompt_tokens));
        o.Set("generationTokens", static_cast<double>(s.generation_tokens));
        o.Set("steps", static_cast<double>(s.steps));
        return o;
    }

    Napi::Value Info(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        if (!model_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
        ms_model_info mi{};
        const ms_status st = ms_model_get_info(model_, &mi);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        Napi::Object o = Napi::Object::New(env);
        o.Set("architecture", Napi::String::New(env, mi.architecture));
        o.Set("backend", Napi::String::New(env, mi.backend));
        o.Set("simd", Napi::String::New(env, mi.simd));
        o.Set("nLayers", mi.n_layers);
        o.Set("nExperts", mi.n_experts);
        o.Set("nExpertsPerTok", mi.n_experts_per_tok);
        o.Set("hiddenSize", mi.hidden_size);
        o.Set("nHeads", mi.n_heads);
        o.Set("nKvHeads", mi.n_kv_heads);
        o.Set("headDim", mi.head_dim);
        o.Set("vocabSize", mi.vocab_size);
        o.Set("slidingWindow", mi.sliding_window);
        o.Set("maxPositionEmbeddings", mi.max_position_embeddings);
        o.Set("eosTokenId", mi.eos_token_id);
        o.Set("bosTokenId", mi.bos_token_id);
        o.Set("addBosToken", mi.add_bos_token != 0);
        o.Set("weightBytes", static_cast<double>(mi.weight_bytes));
        return o;
    }

    Napi::Value EvalLogits(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        if (!model_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
        std::vector<int32_t> tokens = int_array(env, info.Length() ? info[0] : env.Undefined(), "tokens");
        ms_model_info mi{};
        ms_status st = ms_model_get_info(model_, &mi);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        Napi::Float32Array out = Napi::Float32Array::New(env, tokens.size() * static_cast<size_t>(mi.vocab_size));
        st = ms_model_eval(model_, tokens.data(), static_cast<int>(tokens.size()), out.Data());
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        return out;
    }

    // tokenize(text, parseSpecial) -> Int32Array: the model's own tokenizer (ms_model_tokenize; GGUF models only).
    Napi::Value Tokenize(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        if (!model_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
        if (info.Length() < 1 || !info[0].IsString())
            throw status_error(env, MS_ERR_INVALID_ARGUMENT, "tokenize(text, parseSpecial): text must be a string");
        const std::string text = info[0].As<Napi::String>().Utf8Value();
        const int special = info.Length() > 1 && info[1].ToBoolean().Value() ? 1 : 0;
        std::vector<int32_t> ids(text.size() + 8);
        int n = 0;
        ms_status st = ms_model_tokenize(model_, text.data(), text.size(), special, ids.data(), int(ids.size()), &n);
        if (st == MS_OK && size_t(n) > ids.size()) {
            ids.resize(size_t(n));
            st = ms_model_tokenize(model_, text.data(), text.size(), special, ids.data(), int(ids.size()), &n);
        }
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        Napi::Int32Array out = Napi::Int32Array::New(env, size_t(n));
        if (n) std::copy(ids.begin(), ids.begin() + n, out.Data());
        return out;
    }

    // tokenBytes(id, special) -> Buffer: one token's bytes (ms_model_token_bytes; special: control tokens' text).
    Napi::Value TokenBytes(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        if (!model_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
        if (info.Length() < 1 || !info[0].IsNumber())
            throw status_error(env, MS_ERR_INVALID_ARGUMENT, "tokenBytes(id, special): id must be a number");
        const int32_t id = static_cast<int32_t>(checked_int(env, info[0].As<Napi::Number>().DoubleValue(), "id", 0, kIntMax));
        const int special = info.Length() > 1 && info[1].ToBoolean().Value() ? 1 : 0;
        char buf[256];
        size_t n = 0;
        ms_status st = ms_model_token_bytes(model_, id, special, buf, sizeof(buf), &n);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        if (n <= sizeof(buf)) return Napi::Buffer<char>::Copy(env, buf, n);
        std::string big(n, '\0');
        st = ms_model_token_bytes(model_, id, special, big.data(), big.size(), &n);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        return Napi::Buffer<char>::Copy(env, big.data(), n);
    }

    // chatTemplate() -> string: the template from the model file's metadata ("" when it has none).
    Napi::Value ChatTemplate(const Napi::CallbackInfo &info) {
        Napi::Env env = info.Env();
        if (!model_) throw status_error(env, MS_ERR_CLOSED, "the engine is closed");
        const char *tmpl = nullptr;
        const ms_status st = ms_model_chat_template(model_, &tmpl);
        if (st != MS_OK) throw status_error(env, st, ms_last_error());
        return Napi::String::New(env, tmpl ? tmpl : "");
    }

    Napi::Value Close(const Napi::CallbackInfo &info);

    static std::vector<int32_t> int_array(Napi::Env env, Napi::Value v, const char *field) {
        std::vector<int32_t> out;
        if (v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_int32_array) {
            Napi::Int32Array a = v.As<Napi::Int32Array>();
            out.assign(a.Data(), a.Data() + a.ElementLength());
            return out;
        }
        if (!v.IsArray()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(field) + " must be an array of token ids");
        Napi::Array a = v.As<Napi::Array>();
        out.reserve(a.Length());
        for (uint32_t i = 0; i < a.Length(); ++i) {
            Napi::Value e = a.Get(i);
            if (!e.IsNumber()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(field) + "[" + std::to_string(i) + "] is not a number");
            const std::string name = std::string(field) + "[" + std::to_string(i) + "]";
            out.push_back(static_cast<int32_t>(checked_int(env, e.As<Napi::Number>().DoubleValue(), name.c_str(), -kIntMax - 1, kIntMax)));
        }
        return out;
    }

    static double number(Napi::Env env, Napi::Object o, const char *key, double fallback) {
        Napi::Value v = o.Get(key);
        if (v.IsUndefined() || v.IsNull()) {
            if (fallback < 0) throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(key) + " is required");
            return fallback;
        }
        if (!v.IsNumber()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(key) + " must be a number");
        return v.As<Napi::Number>().DoubleValue();
    }

    ms_model *model_ = nullptr;
    ms_engine *engine_ = nullptr;
    std::unique_ptr<Shared> shared_;
};

Napi::FunctionReference EngineWrap::constructor;

// Frees the engine off the JS thread: joining the step thread can take a step's time, and the final (cancelled)
// events still flow through the thread-safe function, which is released only afterwards.
class CloseWorker : public Napi::AsyncWorker {
  public:
    CloseWorker(Napi::Env env, ms_model *model, ms_engine *engine, Shared *shared)
        : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(model), engine_(engine),
          shared_(shared) {}
    Napi::Promise promise() { return deferred_.Promise(); }
    void Execute() override {
        if (engine_) ms_engine_free(engine_);
        if (model_) ms_model_free(model_);
    }
    void OnOK() override {
        if (shared_) shared_->events.Release();  // its finalizer deletes `shared_`
        deferred_.Resolve(Env().Undefined());
    }

  private:
    Napi::Promise::Deferred deferred_;
    ms_model *model_;
    ms_engine *engine_;
    Shared *shared_;
};

Napi::Value EngineWrap::Close(const Napi::CallbackInfo &info) {
    // Detach on the JS thread, so later calls see a closed engine instead of racing the worker.
    auto *worker = new CloseWorker(info.Env(), model_, engine_, shared_.release());
    model_ = nullptr;
    engine_ = nullptr;
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
}

// What a load produced, settled on the JS thread after the last progress call (the progress TSFN is FIFO, so the
// promise never resolves before a progress event it caused).
struct LoadResult {
    Napi::Promise::Deferred deferred;
    ms_status status;
    std::string message;
    ms_model *model;
    ms_engine *engine;
    std::unique_ptr<Shared> shared;
};

void settle(Napi::Env env, LoadResult *raw) {
    std::unique_ptr<LoadResult> r(raw);
    if (env == nullptr) {  // the environment is going away: free what was loaded
        if (r->engine) ms_engine_free(r->engine);
        if (r->model) ms_model_free(r->model);
        return;
    }
    Napi::HandleScope scope(env);
    if (r->status != MS_OK) {
        if (r->shared) {
            r->shared->events.Release();
            r->shared.release();  // deleted by the TSFN finalizer
        }
        r->deferred.Reject(status_error(env, r->status, r->message).Value());
        return;
    }
    Napi::Object obj = EngineWrap::constructor.New({});
    EngineWrap::Unwrap(obj)->adopt(r->model, r->engine, std::move(r->shared));
    r->deferred.Resolve(obj);
}

void LoadWorker::OnOK() {
    auto *r = new LoadResult{deferred_, status_, message_, model_, engine_, std::move(shared_)};
    model_ = nullptr;
    engine_ = nullptr;
    if (!has_progress_) {
        settle(Env(), r);
        return;
    }
    const napi_status st =
        progress_.NonBlockingCall(r, [](Napi::Env env, Napi::Function, LoadResult *data) { settle(env, data); });
    progress_.Release();
    if (st != napi_ok) settle(Env(), r);
}

// loadModel(options, onEvents, onProgress?) -> Promise<NativeEngine>
Napi::Value LoadModel(const Napi::CallbackInfo &info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction())
        throw status_error(env, MS_ERR_INVALID_ARGUMENT, "loadModel(options, onEvents[, onProgress])");
    Napi::Object o = info[0].As<Napi::Object>();
    LoadOptions opts;
    Napi::Value path = o.Get("modelPath");
    if (!path.IsString()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, "modelPath must be a string");
    opts.path = path.As<Napi::String>().Utf8Value();
    if (o.Get("backend").IsString()) opts.backend = o.Get("backend").As<Napi::String>().Utf8Value();
    auto num = [&](const char *key, double fallback, double hi = kIntMax) {
        Napi::Value v = o.Get(key);
        if (v.IsUndefined() || v.IsNull()) return static_cast<int64_t>(fallback);
        if (!v.IsNumber()) throw status_error(env, MS_ERR_INVALID_ARGUMENT, std::string(key) + " must be a number");
        return checked_int(env, v.As<Napi::Number>().DoubleValue(), key, 0, hi);
    };
    ms_engine_params_default(&opts.engine);
    opts.threads = static_cast<int>(num("threads", 0));
    opts.engine.max_context = static_cast<int>(num("maxContext", opts.engine.max_context));
    opts.engine.max_batched_tokens = static_cast<int>(num("maxBatchedTokens", opts.engine.max_batched_tokens));
    opts.engine.max_seqs = static_cast<int>(num("maxSeqs", opts.engine.max_seqs));
    opts.engine.max_waiting = static_cast<int>(num("maxWaiting", opts.engine.max_waiting));
    opts.engine.kv_block_size = static_cast<int>(num("kvBlockSize", opts.engine.kv_block_size));
    opts.engine.kv_memory_bytes = static_cast<uint64_t>(num("kvMemoryBytes", static_cast<double>(opts.engine.kv_memory_bytes), kSafeMax));
    opts.engine.kv_dtype_bf16 = static_cast<int>(num("kvDtypeBf16", opts.engine.kv_dtype_bf16));
    opts.engine.enable_prefix_caching = static_cast<int>(num("enablePrefixCaching", opts.engine.enable_prefix_caching));

    auto shared = std::make_unique<Shared>();
    Shared *raw = shared.get();
    shared->events = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "modelserve.events", 0, 1, raw,
                                                   [](Napi::Env, Shared *s) { delete s; });
    Napi::Function on_progress = info.Length() > 2 && info[2].IsFunction() ? info[2].As<Napi::Function>() : Napi::Function();
    auto *worker = new LoadWorker(env, std::move(opts), std::move(shared), on_progress);
    Napi::Promise p = worker->promise();
    worker->Queue();
    return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
    EngineWrap::Init(env, exports);
    exports.Set("loadModel", Napi::Function::New(env, LoadModel));
    return exports;
}

}  // namespace

NODE_API_MODULE(modelserve_engine, Init)
