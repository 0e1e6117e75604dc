#include "runtime/scheduler.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace ms {

Scheduler::Scheduler(const SchedulerConfig &config, BlockManager &blocks) : cfg_(config), bm_(blocks) {
    if (cfg_.max_batched_tokens <= 0) throw Error(MS_ERR_INVALID_ARGUMENT, "max_batched_tokens must be positive");
    if (cfg_.max_seqs <= 0) throw Error(MS_ERR_INVALID_ARGUMENT, "max_seqs must be positive");
    if (cfg_.max_context <= 1) throw Error(MS_ERR_INVALID_ARGUMENT, "max_context must be at least 2");
    running_.reserve(cfg_.max_seqs);
    snapshot_.reserve(cfg_.max_seqs);
    chunks_.reserve(cfg_.max_seqs);
}

void Scheduler::check_fits(int n_prompt, int max_tokens) const {
    if (n_prompt + static_cast<int64_t>(max_tokens) > cfg_.max_context)
        throw Error(MS_ERR_CAPACITY, "prompt (" + std::to_string(n_prompt) + " tokens) + max_tokens (" +
                                         std::to_string(max_tokens) + ") exceeds max_context " +
                                         std::to_string(cfg_.max_context));
    // The last generated token is never computed, so KV is needed for n_prompt + max_tokens - 1 positions.
    const int positions = n_prompt + max_tokens - 1;
    for (int g = 0; g < kNumKvGroups; ++g) {
        const int need = bm_.peak_blocks(positions, cfg_.max_batched_tokens, g);
        const int total = bm_.total_blocks(g);
        if (need > total)
            throw Error(MS_ERR_CAPACITY, "the request needs " + std::to_string(need) + " KV blocks of group " +
                                             std::to_string(g) + " but the pool holds " + std::to_string(total) +
                                             " (raise kv_memory_bytes or lower max_tokens)");
    }
}

void Scheduler::add(std::unique_ptr<Sequence> seq) { waiting_.push_back(std::move(seq)); }

void Scheduler::preempt(size_t i) {
    std::unique_ptr<Sequence> seq = std::move(running_[i]);
    running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
    bm_.release(seq->blocks);
    seq->n_computed = 0;
    seq->prefix_attached = false;
    seq->running = false;
    ++counters_.preemptions;
    preempted_this_step_ = true;
    waiting_.push_front(std::move(seq));
}

bool Scheduler::preempt_one(const Sequence *keep, bool may_take_keep) {
    // The most recently admitted running sequence that has no tokens in this step.
    for (size_t i = running_.size(); i-- > 0;) {
        Sequence *s = running_[i].get();
        if (s == keep) {
            if (!may_take_keep) continue;
        } else if (s->scheduled_step == step_) {
            continue;
        }
        preempt(i);
        return true;
    }
    return false;
}

int Scheduler::largest_fitting(const Sequence *seq, int n) const {
    int lo = 0, hi = n;  // the largest m in [0, n] whose blocks are available
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        bool ok = true;
        for (int g = 0; g < kNumKvGroups && ok; ++g)
            ok = bm_.blocks_to_allocate(seq->blocks, seq->n_computed, seq->n_computed + mid, g) <= bm_.available(g);
        if (ok) lo = mid; else hi = mid - 1;
    }
    return lo;
}

int Scheduler::reserve(Sequence *seq, int n, bool shrink, bool may_preempt_self, bool &self_preempted) {
    self_preempted = false;
    for (;;) {
        if (bm_.allocate(seq->blocks, seq->n_computed, seq->n_computed + n)) return n;
        if (shrink) {
            const int m = largest_fitting(seq, n);
            if (m > 0 && bm_.allocate(seq->blocks, seq->n_computed, seq->n_computed + m)) return m;
        }
        const bool is_last_candidate = !preempt_one(seq, false);
        if (is_last_candidate) {
            if (may_preempt_self && preempt_one(seq, true)) self_preempted = true;
            return 0;
        }
    }
}

const std::vector<ScheduledChunk> &Scheduler::schedule() {
    ++step_;
    chunks_.clear();
    preempted_this_step_ = false;
    int budget = cfg_.max_batched_tokens;

    auto add_chunk = [&](Sequence *s, int n) {
        s->scheduled_step = step_;
        ScheduledChunk c;
        c.seq = s;
        c.start = s->n_computed;
        c.n = n;
        c.want_logits = s->n_computed + n == static_cast<int>(s->tokens.size());
        chunks_.push_back(c);
        budget -= n;
        const int prompt_part = std::min(c.start + n, s->n_prompt) - std::min(c.start, s->n_prompt);
        counters_.prompt_tokens += static_cast<uint64_t>(prompt_part);
    };

    // Preemption removes entries from running_, so walk a snapshot and skip what left.
    snapshot_.clear();
    for (const auto &s : running_) snapshot_.push_back(s.get());
    // 1. Decodes: one token each, oldest first. A decode that cannot get a block preempts newer sequences, itself last.
    for (Sequence *s : snapshot_) {
        if (budget == 0) break;
        if (!s->running || s->remaining() != 1) continue;
        bool self_preempted = false;
        if (reserve(s, 1, false, true, self_preempted) == 1) add_chunk(s, 1);
    }
    // 2. Running sequences part-way through their prompt (or a recomputation), in admission order.
    for (Sequence *s : snapshot_) {
        if (budget == 0) break;
        if (!s->running || s->scheduled_step == step_ || s->remaining() <= 1) continue;
        bool self_preempted = false;
        const int n = reserve(s, std::min(s->remaining(), budget), true, false, self_preempted);
        if (n > 0) add_chunk(s, n);
    }
    // 3. New (or preempted) sequences, first come first served; none after a preemption, which means memory is short.
    while (!preempted_this_step_ && budget > 0 && static_cast<int>(running_.size()) < cfg_.max_seqs &&
           !waiting_.empty()) {
        Sequence *s = waiting_.front().get();
        if (!s->prefix_attached) {
            const int cached = bm_.attach_cached_prefix(s->tokens.data(), static_cast<int>(s->tokens.size()), s->blocks);
            s->n_computed = cached;
            s->prefix_attached = true;
            if (s->first_admission) {
                s->n_cached_prompt = cached;
                counters_.prefix_cache_queries += static_cast<uint64_t>(s->tokens.size());
                counters_.prefix_cache_hits += static_cast<uint64_t>(cached);
            }
        }
        const int want = std::min(s->remaining(), budget);
        int n = 0;
        if (bm_.allocate(s->blocks, s->n_computed, s->n_computed + want)) {
            n = want;
        } else {
            n = largest_fitting(s, want);
            if (n > 0 && !bm_.allocate(s->blocks, s->n_computed, s->n_computed + n)) n = 0;
        }
        if (n == 0) {
            // Not now: give back what the prefix lookup attached so that waiting holds no memory.
            bm_.release(s->blocks);
            s->n_computed = 0;
            s->prefix_attached = false;
            break;
        }
        s->first_admission = false;
        s->running = true;
        running_.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
        add_chunk(s, n);
    }
    return chunks_;
}

void Scheduler::commit() {
    for (const ScheduledChunk &c : chunks_) {
        Sequence *s = c.seq;
        s->n_computed = c.start + c.n;
        bm_.commit(s->blocks, s->tokens.data(), s->n_computed);
    }
}

std::unique_ptr<Sequence> Scheduler::remove(uint64_t id) {
    std::unique_ptr<Sequence> out;
    for (size_t i = 0; i < running_.size(); ++i) {
        if (running_[i]->id == id) {
            out = std::move(running_[i]);
            running_.erase(running_.begin() + static_cast<std::ptrdiff_t>(i));
            break;
        }
    }
    if (!out) {
        for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
            if ((*it)->id == id) {
                out = std::move(*it);
                waiting_.erase(it);
                break;
            }
        }
    }
    if (!out) return out;
    out->running = false;
    bm_.release(out->blocks);
    // Drop it from the current plan so a later commit() does not touch it.
    chunks_.erase(std::remove_if(chunks_.begin(), chunks_.end(), [&](const ScheduledChunk &c) { return c.seq == out.get(); }),
                  chunks_.end());
    return out;
}

std::vector<const Sequence *> Scheduler::sequences() const {
    std::vector<const Sequence *> out;
    for (const auto &s : running_) out.push_back(s.get());
    for (const auto &s : waiting_) out.push_back(s.get());
    return out;
}

void Scheduler::check_invariants() const {
    std::vector<const SeqBlocks *> tables;
    for (const Sequence *s : sequences()) tables.push_back(&s->blocks);
    bm_.check_invariants(&tables);
}

}  // namespace ms
