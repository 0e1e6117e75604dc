// Continuous batching. Each step: running sequences that decode (one token each) first, then running sequences that
// are part-way through their prompt, then waiting sequences in arrival order, all under a budget of
// `max_batched_tokens` tokens and `max_seqs` running sequences; prompts are split into chunks to fit the budget.
// When the KV pool runs dry, the most recently admitted running sequence is preempted: its blocks are freed and it
// goes back to the front of the queue with its generated tokens as part of its prompt, to be recomputed (mostly from
// the prefix cache) later. A request is refused at submit only when it could never fit.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "runtime/block_manager.h"
#include "runtime/sequence.h"

namespace ms {

struct SchedulerConfig {
    int max_batched_tokens = 2048;
    int max_seqs = 64;
    int max_context = 4096;
};

struct ScheduledChunk {
    Sequence *seq = nullptr;
    int start = 0;  // first position computed
    int n = 0;      // tokens computed
    bool want_logits = false;  // the chunk reaches the end of the sequence's tokens: sample from its last position
};

struct SchedulerCounters {
    uint64_t prefix_cache_queries = 0;
    uint64_t prefix_cache_hits = 0;
    uint64_t preemptions = 0;
    uint64_t prompt_tokens = 0;  // prompt positions computed (not served from the cache), recomputation included
};

class Scheduler {
  public:
    Scheduler(const SchedulerConfig &config, BlockManager &blocks);

    // Throws ms::Error(MS_ERR_CAPACITY) when a request of this size could never run.
    void check_fits(int n_prompt, int max_tokens) const;
    void add(std::unique_ptr<Sequence> seq);

    // Plans a step. The chunks stay valid until the next call to schedule() or remove().
    const std::vector<ScheduledChunk> &schedule();
    // The planned chunks were computed: advance the sequences and update their blocks.
    void commit();
    // Takes a sequence out (finished, cancelled or failed) and frees its blocks; nullptr when the id is unknown.
    std::unique_ptr<Sequence> remove(uint64_t id);

    bool has_work() const { return !running_.empty() || !waiting_.empty(); }
    int n_running() const { return static_cast<int>(running_.size()); }
    int n_waiting() const { return static_cast<int>(waiting_.size()); }
    const SchedulerCounters &counters() const { return counters_; }
    const BlockManager &blocks() const { return bm_; }
    // Every sequence held (running, then waiting).
    std::vector<const Sequence *> sequences() const;
    // Checks the block manager's invariants against every held sequence's tables.
    void check_invariants() const;

  private:
    // Allocates blocks for `seq` to compute `n` tokens, preempting newer unscheduled running sequences if needed.
    // Returns the tokens that fit (possibly fewer than n when `shrink`), or 0; sets `self_preempted` when `seq` had to
    // go.
    int reserve(Sequence *seq, int n, bool shrink, bool may_preempt_self, bool &self_preempted);
    bool preempt_one(const Sequence *keep, bool may_take_keep);
    void preempt(size_t running_index);
    int largest_fitting(const Sequence *seq, int n) const;

    SchedulerConfig cfg_;
    BlockManager &bm_;
    std::vector<std::unique_ptr<Sequence>> running_;  // admission order
    std::deque<std::unique_ptr<Sequence>> waiting_;
    std::vector<ScheduledChunk> chunks_;
    std::vector<Sequence *> snapshot_;
    uint64_t step_ = 0;
    bool preempted_this_step_ = false;
    SchedulerCounters counters_;
};

}  // namespace ms
