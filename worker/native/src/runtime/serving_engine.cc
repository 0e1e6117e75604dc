#include "runtime/serving_engine.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "common/thread_priority.h"

namespace ms {

namespace {
void *alloc_kv(size_t bytes) {
    if (bytes == 0) return nullptr;
    const size_t rounded = (bytes + 63) / 64 * 64;
    void *p = std::aligned_alloc(64, rounded);
    if (!p) throw Error(MS_ERR_OUT_OF_MEMORY, "cannot allocate " + std::to_string(rounded) + " bytes of KV cache");
    return p;
}

void require(bool ok, const std::string &message) {
    if (!ok) throw Error(MS_ERR_INVALID_ARGUMENT, message);
}
}  // namespace

KvPool::KvPool(const Executor &exec, int block_size, bool bf16, uint64_t budget_bytes) {
    const KvSpec &spec = exec.kv_spec();
    kv_.block_size = block_size;
    kv_.kv_dim = spec.kv_dim;
    kv_.bf16 = bf16;
    size_t per_block[kNumKvGroups];
    size_t sum = 0;
    for (int g = 0; g < kNumKvGroups; ++g) {
        kv_.layers_in_group[g] = spec.layers_in_group[g];
        per_block[g] = spec.layers_in_group[g] > 0 ? exec.kv_block_bytes(g, block_size, bf16) : 0;
        sum += per_block[g];
    }
    if (sum == 0) throw Error(MS_ERR_INTERNAL, "the model reports no KV layers");
    // The same number of blocks in each group, so each group's share of the budget is proportional to its block size.
    // A sequence never holds more sliding blocks than full ones, so capacity is decided by the full group and the
    // sliding group's spare blocks keep prefix-cache entries alive.
    if (exec.kv_memory_limit() > 0) budget_bytes = std::min<uint64_t>(budget_bytes, exec.kv_memory_limit());
    const uint64_t n = budget_bytes / sum;
    if (n < 1)
        throw Error(MS_ERR_OUT_OF_MEMORY, "kv_memory_bytes " + std::to_string(budget_bytes) +
                                              " holds no KV block (one block of every group takes " + std::to_string(sum) +
                                              " bytes)");
    if (n > (1u << 30)) throw Error(MS_ERR_INVALID_ARGUMENT, "kv_memory_bytes gives more than 2^30 blocks");
    exec_ = &exec;
    // Device memory from the executor when it owns KV (probed with the first allocation), host memory otherwise.
    auto alloc = [&](size_t bytes) {
        if (void *p = exec.alloc_kv_memory(bytes)) {
            device_ = true;
            return p;
        }
        return alloc_kv(bytes);
    };
    try {
        for (int g = 0; g < kNumKvGroups; ++g) {
            if (per_block[g] == 0) continue;
            kv_.num_blocks[g] = static_cast<int>(n);
            kv_.k[g] = alloc(n * per_block[g] / 2);
            kv_.v[g] = alloc(n * per_block[g] / 2);
        }
    } catch (...) {
        release();
        throw;
    }
}

void KvPool::release() {
    for (int g = 0; g < kNumKvGroups; ++g) {
        if (device_) {
            if (kv_.k[g]) exec_->free_kv_memory(kv_.k[g]);
            if (kv_.v[g]) exec_->free_kv_memory(kv_.v[g]);
        } else {
            std::free(kv_.k[g]);
            std::free(kv_.v[g]);
        }
        kv_.k[g] = kv_.v[g] = nullptr;
    }
}

KvPool::~KvPool() { release(); }

Engine::Engine(Executor &exec, const ms_engine_params &p, ms_event_fn on_events, void *user)
    : exec_(exec), params_(p), on_events_(on_events), user_(user), vocab_(exec.vocab_size()) {
    require(on_events != nullptr, "on_events callback is null");
    require(p.max_context >= 2, "max_context must be at least 2");
    require(exec.max_positions() == 0 || p.max_context <= exec.max_positions(),
            "max_context " + std::to_string(p.max_context) + " exceeds the model's max_position_embeddings " +
                std::to_string(exec.max_positions()));
    require(p.max_batched_tokens >= 1, "max_batched_tokens must be at least 1");
    require(p.max_seqs >= 1, "max_seqs must be at least 1");
    require(p.max_waiting >= 0, "max_waiting must be >= 0");
    require(p.kv_block_size >= 1 && p.kv_block_size <= 4096, "kv_block_size must be in [1, 4096]");
    require(p.kv_memory_bytes > 0, "kv_memory_bytes must be positive");

    pool_ = std::make_unique<KvPool>(exec, p.kv_block_size, p.kv_dtype_bf16 != 0, p.kv_memory_bytes);
    BlockManager::Config bc;
    bc.block_size = p.kv_block_size;
    for (int g = 0; g < kNumKvGroups; ++g) bc.num_blocks[g] = pool_->num_blocks(g);
    bc.sliding_window = exec.kv_spec().sliding_window;
    bc.prefix_caching = p.enable_prefix_caching != 0;
    blocks_ = std::make_unique<BlockManager>(bc);
    SchedulerConfig sc;
    sc.max_batched_tokens = p.max_batched_tokens;
    sc.max_seqs = p.max_seqs;
    sc.max_context = p.max_context;
    scheduler_ = std::make_unique<Scheduler>(sc, *blocks_);

    fwd_.reserve(p.max_seqs);
    logits_.assign(static_cast<size_t>(p.max_seqs) * vocab_, 0.f);
    device_sampling_ = exec.can_sample_on_device();
    sample_rows_.reserve(p.max_seqs);
    device_tokens_.assign(p.max_seqs, -1);
    events_.reserve(static_cast<size_t>(p.max_seqs) * 2);
    finished_.reserve(p.max_seqs);
    snapshot_.kv_blocks_total = pool_->num_blocks(kFullGroup);
    compute_thread_nice();  // validated here (throws), applied by the thread itself
    thread_ = std::thread([this] {
        lower_compute_thread_priority();
        loop();
    });
}

Engine::~Engine() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
}

uint64_t Engine::submit(const ms_request &r) {
    require(r.prompt != nullptr && r.n_prompt >= 1, "prompt must hold at least one token");
    require(r.max_tokens >= 1, "max_tokens must be at least 1");
    for (int i = 0; i < r.n_prompt; ++i)
        if (r.prompt[i] < 0 || r.prompt[i] >= vocab_)  // the message is built only for the bad token
            require(false, "prompt token " + std::to_string(i) + " (" + std::to_string(r.prompt[i]) +
                               ") is outside the vocabulary [0, " + std::to_string(vocab_) + ")");
    require(std::isfinite(r.temperature) && r.temperature >= 0.f, "temperature must be a finite number >= 0");
    require(r.top_p > 0.f && r.top_p <= 1.f, "top_p must be in (0, 1]");
    require(r.top_k >= 0, "top_k must be >= 0");
    require(r.min_p >= 0.f && r.min_p < 1.f, "min_p must be in [0, 1)");
    require(r.logprobs >= 0 && r.logprobs <= MS_MAX_LOGPROBS, "logprobs must be in [0, 20]");
    require(std::isfinite(r.frequency_penalty) && r.frequency_penalty >= -2.f && r.frequency_penalty <= 2.f,
            "frequency_penalty must be in [-2, 2]");
    require(std::isfinite(r.presence_penalty) && r.presence_penalty >= -2.f && r.presence_penalty <= 2.f,
            "presence_penalty must be in [-2, 2]");
    require(std::isfinite(r.repetition_penalty) && r.repetition_penalty >= 0.f,
            "repetition_penalty must be a finite number > 0 (0 = off)");
    require(r.n_stop_token_ids >= 0 && (r.n_stop_token_ids == 0 || r.stop_token_ids != nullptr),
            "stop_token_ids is null but n_stop_token_ids > 0");
    scheduler_->check_fits(r.n_prompt, r.max_tokens);  // reads constants only

    auto seq = std::make_unique<Sequence>();
    seq->tokens.reserve(static_cast<size_t>(r.n_prompt) + r.max_tokens);
    seq->tokens.assign(r.prompt, r.prompt + r.n_prompt);
    seq->n_prompt = r.n_prompt;
    seq->max_tokens = r.max_tokens;
    if (r.n_stop_token_ids > 0) seq->stop_ids.assign(r.stop_token_ids, r.stop_token_ids + r.n_stop_token_ids);
    seq->sampling.temperature = r.temperature;
    seq->sampling.top_p = r.top_p;
    seq->sampling.top_k = r.top_k;
    seq->sampling.min_p = r.min_p;
    seq->sampling.logprobs = r.logprobs;
    seq->sampling.frequency_penalty = r.frequency_penalty;
    seq->sampling.presence_penalty = r.presence_penalty;
    seq->sampling.repetition_penalty = r.repetition_penalty == 0.f ? 1.f : r.repetition_penalty;
    seq->rng = Rng(r.has_seed ? r.seed : fresh_seed());

    uint64_t id;
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw Error(MS_ERR_CLOSED, "the engine is shutting down");
        if (params_.max_waiting > 0 &&
            waiting_in_scheduler_ + static_cast<int>(incoming_.size()) >= params_.max_waiting)
            throw Error(MS_ERR_CAPACITY, "the engine's queue is full (max_waiting " + std::to_string(params_.max_waiting) + ")");
        id = next_id_++;
        seq->id = id;
        incoming_.push_back(std::move(seq));
        live_.insert(id);
    }
    cv_.notify_one();
    return id;
}

void Engine::cancel(uint64_t id) {
    {
        std::lock_guard<std::mutex> lk(mu_);
        if (stop_) throw Error(MS_ERR_CLOSED, "the engine is shutting down");
        if (!live_.count(id)) throw Error(MS_ERR_NOT_FOUND, "no request " + std::to_string(id) + " in flight");
        cancels_.push_back(id);
    }
    cv_.notify_one();
}

ms_engine_stats Engine::stats() {
    std::lock_guard<std::mutex> lk(mu_);
    ms_engine_stats s = snapshot_;
    s.waiting += static_cast<int>(incoming_.size());
    return s;
}

void Engine::emit_finish(uint64_t id, int token, int reason, const char *message) {
    ms_event e{};
    e.id = id;
    e.token = token;
    e.finish_reason = reason;
    e.message = message;
    events_.push_back(e);
    finished_.push_back(id);
}

void Engine::deliver() {
    {
        // Publish the state first, so whoever sees a request's last event also sees its blocks freed in stats().
        std::lock_guard<std::mutex> lk(mu_);
        for (uint64_t id : finished_) live_.erase(id);
        finished_.clear();
        const SchedulerCounters &c = scheduler_->counters();
        const BlockGroupStats kv = blocks_->stats(kFullGroup);
        snapshot_.running = scheduler_->n_running();
        snapshot_.waiting = scheduler_->n_waiting();
        waiting_in_scheduler_ = snapshot_.waiting;
        snapshot_.kv_blocks_used = kv.used;
        snapshot_.kv_blocks_total = kv.total;
        snapshot_.prefix_cache_queries = c.prefix_cache_queries;
        snapshot_.prefix_cache_hits = c.prefix_cache_hits;
        snapshot_.preemptions = c.preemptions;
        snapshot_.prompt_tokens = c.prompt_tokens;
        snapshot_.generation_tokens = generation_tokens_;
        snapshot_.steps = steps_;
    }
    if (!events_.empty()) on_events_(user_, events_.data(), static_cast<int>(events_.size()));
    events_.clear();
}

void Engine::loop() {
    for (;;) {
        {
            std::unique_lock<std::mutex> lk(mu_);
            cv_.wait(lk, [&] { return stop_ || !incoming_.empty() || !cancels_.empty() || scheduler_->has_work(); });
            if (stop_) break;
            taken_.swap(incoming_);
            cancels_taken_.swap(cancels_);
            waiting_in_scheduler_ += static_cast<int>(taken_.size());  // still waiting until the next snapshot
        }
        for (auto &s : taken_) scheduler_->add(std::move(s));
        taken_.clear();
        for (uint64_t id : cancels_taken_) {
            std::unique_ptr<Sequence> s = scheduler_->remove(id);  // frees its blocks before the next step
            if (s) emit_finish(s->id, -1, MS_FINISH_CANCELLED, nullptr);
        }
        cancels_taken_.clear();
        try {
            run_step();
        } catch (const std::exception &e) {
            // A bug in the runtime itself (a broken invariant, an allocation failure): fail what is in flight rather
            // than take the process down, and keep serving.
            fail_everything(std::string("internal engine error: ") + e.what());
        }
        deliver();
    }
    cancel_everything();
    deliver();
}

void Engine::cancel_everything() {
    {
        std::lock_guard<std::mutex> lk(mu_);
        taken_.swap(incoming_);
    }
    for (auto &s : taken_) scheduler_->add(std::move(s));
    taken_.clear();
    for (const Sequence *s : scheduler_->sequences()) finished_.push_back(s->id);
    std::vector<uint64_t> ids;
    ids.swap(finished_);
    for (uint64_t id : ids) {
        std::unique_ptr<Sequence> s = scheduler_->remove(id);
        if (s) emit_finish(s->id, -1, MS_FINISH_CANCELLED, nullptr);
    }
}

void Engine::fail_everything(const std::string &message) {
    error_message_ = message;
    std::vector<uint64_t> ids;
    for (const Sequence *s : scheduler_->sequences()) ids.push_back(s->id);
    for (uint64_t id : ids) {
        try {
            scheduler_->remove(id);
        } catch (const std::exception &) {
            // Its blocks could not be returned; it still gets its final event.
        }
        emit_finish(id, -1, MS_FINISH_ERROR, error_message_.c_str());
    }
}

void Engine::run_step() {
    if (!scheduler_->has_work()) return;
    const std::vector<ScheduledChunk> &chunks = scheduler_->schedule();
    {
        std::lock_guard<std::mutex> lk(mu_);
        waiting_in_scheduler_ = scheduler_->n_waiting();  // admitted ones no longer count against max_waiting
    }
    if (chunks.empty()) {
        // Cannot happen when check_fits holds (a lone sequence always fits); fail the head of the queue rather than spin.
        const std::vector<const Sequence *> all = scheduler_->sequences();
        error_message_ = "the scheduler could not place this request (internal error)";
        std::unique_ptr<Sequence> s = scheduler_->remove(all.back()->id);
        emit_finish(s->id, -1, MS_FINISH_ERROR, error_message_.c_str());
        return;
    }
    ++steps_;
    fwd_.clear();
    for (const ScheduledChunk &c : chunks) {
        ForwardSeq f;
        f.tokens = c.seq->tokens.data() + c.start;
        f.n_tokens = c.n;
        f.start_pos = c.start;
        for (int g = 0; g < kNumKvGroups; ++g) {
            f.block_table[g] = c.seq->blocks.table[g].data();
            f.n_blocks[g] = static_cast<int>(c.seq->blocks.table[g].size());
        }
        f.want_logits = c.want_logits;
        fwd_.push_back(f);
    }
    if (device_sampling_) {
        // One entry per want_logits seq, in order. A temperature row draws its seed from the request's own Rng (one
        // per step), so its tokens depend on its seed and inputs only, never on the batch.
        sample_rows_.clear();
        for (const ScheduledChunk &c : chunks) {
            if (!c.want_logits) continue;
            Sequence &s = *c.seq;
            DeviceSampling d;
            if (s.sampling.device_sampleable()) {
                if (s.sampling.temperature <= 0.f) {
                    d.mode = DeviceSampling::kGreedy;
                } else {
                    d.mode = DeviceSampling::kTemperature;
                    d.temperature = s.sampling.temperature;
                    d.seed = s.rng.next();
                }
            }
            sample_rows_.push_back(d);
        }
    }
    try {
        if (device_sampling_)
            exec_.forward_sample(fwd_.data(), static_cast<int>(fwd_.size()), pool_->storage(), sample_rows_.data(),
                                 device_tokens_.data(), logits_.data());
        else
            exec_.forward(fwd_.data(), static_cast<int>(fwd_.size()), pool_->storage(), logits_.data());
    } catch (const std::exception &e) {
        error_message_ = std::string("forward pass failed: ") + e.what();
        for (const ScheduledChunk &c : chunks) finished_.push_back(c.seq->id);
        std::vector<uint64_t> ids(finished_);
        finished_.clear();
        for (uint64_t id : ids) {
            std::unique_ptr<Sequence> s = scheduler_->remove(id);
            if (s) emit_finish(s->id, -1, MS_FINISH_ERROR, error_message_.c_str());
        }
        return;
    }
    scheduler_->commit();

    const size_t first_finished = finished_.size();
    Sample sample;
    size_t row = 0;       // index into logits_ (host-sampled rows)
    size_t want_row = 0;  // index over want_logits seqs (sample_rows_ / device_tokens_)
    for (size_t i = 0; i < chunks.size(); ++i) {
        const ScheduledChunk &c = chunks[i];
        if (!c.want_logits) continue;
        Sequence &s = *c.seq;
        const size_t j = want_row++;
        if (device_sampling_ && sample_rows_[j].mode != DeviceSampling::kHost) {
            const int32_t t = device_tokens_[j];
            if (t < 0 || t >= vocab_)
                throw Error(MS_ERR_INTERNAL, "device sampling returned token " + std::to_string(t) + " outside [0, " +
                                                 std::to_string(vocab_) + ")");
            sample.token = t;
            sample.logprob = 0.f;
            sample.n_top = 0;
        } else {
            const TokenHistory history{s.tokens.data(), static_cast<int>(s.tokens.size()), s.n_prompt};
            sampler_.sample(&logits_[row++ * static_cast<size_t>(vocab_)], vocab_, s.sampling, history, s.rng, sample);
        }
        s.tokens.push_back(sample.token);
        ++s.n_generated;
        ++generation_tokens_;
        ms_event e{};
        e.id = s.id;
        e.token = sample.token;
        e.logprob = sample.logprob;
        e.n_top = sample.n_top;
        std::memcpy(e.top_ids, sample.top_ids, sizeof(int32_t) * sample.n_top);
        std::memcpy(e.top_logprobs, sample.top_logprobs, sizeof(float) * sample.n_top);
        e.finish_reason = MS_FINISH_NONE;
        e.n_prompt_cached = s.n_generated == 1 ? s.n_cached_prompt : 0;
        e.message = nullptr;
        if (std::find(s.stop_ids.begin(), s.stop_ids.end(), sample.token) != s.stop_ids.end())
            e.finish_reason = MS_FINISH_STOP;
        else if (s.n_generated >= s.max_tokens || static_cast<int>(s.tokens.size()) >= params_.max_context)
            e.finish_reason = MS_FINISH_LENGTH;
        events_.push_back(e);
        if (e.finish_reason != MS_FINISH_NONE) finished_.push_back(s.id);
    }
    // Removing edits the plan; do it after the loop over it.
    for (size_t i = first_finished; i < finished_.size(); ++i) scheduler_->remove(finished_[i]);
}

}  // namespace ms
