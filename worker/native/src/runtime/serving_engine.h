// The serving engine: a paged KV pool, a scheduler and a sampler driven by a step loop on its own thread. submit,
// cancel and stats may be called from any thread (the event callback included); events of one step are delivered
// in one callback on the engine thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "engine.h"
#include "runtime/block_manager.h"
#include "runtime/executor.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"

namespace ms {

// KV storage allocated for a KvSpec and a budget; freed with the object.
class KvPool {
  public:
    KvPool(const Executor &exec, int block_size, bool bf16, uint64_t budget_bytes);
    ~KvPool();
    KvPool(const KvPool &) = delete;
    KvPool &operator=(const KvPool &) = delete;
    KvStorage &storage() { return kv_; }
    int num_blocks(int g) const { return kv_.num_blocks[g]; }

  private:
    void release();
    KvStorage kv_;
    const Executor *exec_ = nullptr;
    bool device_ = false;  // the executor's device memory (freed through it), not host memory
};

class Engine {
  public:
    // Validates params, allocates the KV pool and starts the step thread. Throws ms::Error.
    Engine(Executor &exec, const ms_engine_params &params, ms_event_fn on_events, void *user);
    // Stops the thread; requests still in flight get MS_FINISH_CANCELLED events first.
    ~Engine();
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    uint64_t submit(const ms_request &request);  // throws ms::Error
    void cancel(uint64_t id);                    // throws ms::Error(MS_ERR_NOT_FOUND) for an unknown id
    ms_engine_stats stats();
    const ms_engine_params &params() const { return params_; }

  private:
    void loop();
    void run_step();  // engine thread, without the lock
    void emit_finish(uint64_t id, int token, int reason, const char *message);
    void finish(uint64_t id);
    void deliver();
    void cancel_everything();
    void fail_everything(const std::string &message);

    Executor &exec_;
    ms_engine_params params_;
    ms_event_fn on_events_;
    void *user_;
    int vocab_;

    std::unique_ptr<KvPool> pool_;
    std::unique_ptr<BlockManager> blocks_;
    std::unique_ptr<Scheduler> scheduler_;
    Sampler sampler_;

    // Shared with API callers, under mu_.
    std::mutex mu_;
    std::condition_variable cv_;
    bool stop_ = false;
    uint64_t next_id_ = 1;
    std::vector<std::unique_ptr<Sequence>> incoming_;
    std::vector<uint64_t> cancels_;
    std::unordered_set<uint64_t> live_;  // submitted and not yet finished
    ms_engine_stats snapshot_{};
    int waiting_in_scheduler_ = 0;

    // Engine thread only; kept across steps so a step does not allocate.
    std::vector<std::unique_ptr<Sequence>> taken_;
    std::vector<uint64_t> cancels_taken_;
    std::vector<ForwardSeq> fwd_;
    std::vector<float> logits_;
    // Device sampling (when the executor can): per want_logits row, the mode/seed handed to forward_sample and the
    // tokens it returns; logits_ then holds the kHost rows only, compacted.
    bool device_sampling_ = false;
    std::vector<DeviceSampling> sample_rows_;
    std::vector<int32_t> device_tokens_;
    std::vector<ms_event> events_;
    std::vector<uint64_t> finished_;
    std::string error_message_;
    uint64_t generation_tokens_ = 0;
    uint64_t steps_ = 0;

    std::thread thread_;
};

}  // namespace ms
