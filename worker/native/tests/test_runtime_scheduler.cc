// Scheduler over the fake executor, single-threaded: token budget, decodes first, chunked prefill, preemption under a
// tiny KV pool (every request still completes with the tokens it gets alone), prefix-cache reuse, capacity errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <vector>

#include "common/error.h"
#include "runtime/scheduler.h"
#include "runtime/serving_engine.h"
#include "runtime_fake_executor.h"

namespace ms {
namespace {

using testing::FakeExecutor;

// Drives a Scheduler step by step the way the engine does, greedy, checking invariants after every step.
struct Harness {
    Harness(int kv_blocks, int block_size, int window, SchedulerConfig sc, bool caching = true)
        : exec(64, window) {
        const size_t per_block = exec.kv_block_bytes(0, block_size, false) + exec.kv_block_bytes(1, block_size, false);
        pool = std::make_unique<KvPool>(exec, block_size, false, per_block * kv_blocks);
        BlockManager::Config bc;
        bc.block_size = block_size;
        bc.num_blocks[0] = pool->num_blocks(0);
        bc.num_blocks[1] = pool->num_blocks(1);
        bc.sliding_window = window;
        bc.prefix_caching = caching;
        bm = std::make_unique<BlockManager>(bc);
        sched = std::make_unique<Scheduler>(sc, *bm);
        cfg = sc;
        logits.resize(static_cast<size_t>(sc.max_seqs) * 64);
    }

    uint64_t submit(std::vector<int32_t> prompt, int max_tokens) {
        sched->check_fits(static_cast<int>(prompt.size()), max_tokens);
        auto s = std::make_unique<Sequence>();
        s->id = next_id++;
        s->tokens = std::move(prompt);
        s->n_prompt = static_cast<int>(s->tokens.size());
        s->max_tokens = max_tokens;
        const uint64_t id = s->id;
        sched->add(std::move(s));
        return id;
    }

    struct Ran {
        uint64_t id;
        int start, n;
    };
    // One step; returns what it ran (ids, not pointers: finished sequences are gone afterwards).
    std::vector<Ran> step() {
        const std::vector<ScheduledChunk> ran = sched->schedule();
        std::vector<Ran> result;
        for (const auto &c : ran) result.push_back({c.seq->id, c.start, c.n});
        if (ran.empty()) return result;
        std::vector<ForwardSeq> fwd;
        for (const auto &c : ran) {
            ForwardSeq f;
            f.tokens = c.seq->tokens.data() + c.start;
            f.n_tokens = c.n;
            f.start_pos = c.start;
            for (int g = 0; g < kNumKvGroups; ++g) {
                f.block_table[g] = c.seq->blocks.table[g].data();
                f.n_blocks[g] = static_cast<int>(c.seq->blocks.table[g].size());
            }
            f.want_logits = c.want_logits;
            fwd.push_back(f);
        }
        exec.forward(fwd.data(), static_cast<int>(fwd.size()), pool->storage(), logits.data());
        sched->commit();
        std::vector<uint64_t> done;
        int row = 0;
        for (const auto &c : ran) {
            if (!c.want_logits) continue;
            Sample smp;
            Rng rng(0);
            sampler.sample(&logits[static_cast<size_t>(row++) * 64], 64, SamplingParams{}, rng, smp);
            c.seq->tokens.push_back(smp.token);
            ++c.seq->n_generated;
            if (c.seq->n_generated == 1) cached[c.seq->id] = c.seq->n_cached_prompt;
            out[c.seq->id].push_back(smp.token);
            if (c.seq->n_generated >= c.seq->max_tokens) done.push_back(c.seq->id);
        }
        for (uint64_t id : done) sched->remove(id);
        sched->check_invariants();
        return result;
    }

    void run_all(int max_steps = 100000) {
        for (int i = 0; i < max_steps && sched->has_work(); ++i) step();
        ASSERT_FALSE(sched->has_work()) << "did not finish";
    }

    FakeExecutor exec;
    std::unique_ptr<KvPool> pool;
    std::unique_ptr<BlockManager> bm;
    std::unique_ptr<Scheduler> sched;
    SchedulerConfig cfg;
    Sampler sampler;
    std::vector<float> logits;
    uint64_t next_id = 1;
    std::map<uint64_t, std::vector<int32_t>> out;
    std::map<uint64_t, int> cached;
};

std::vector<int32_t> prompt_of(int n, int salt) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = (i * 13 + salt * 7 + 1) % 64;
    return p;
}

SchedulerConfig sconf(int budget, int seqs, int ctx = 1024) {
    SchedulerConfig c;
    c.max_batched_tokens = budget;
    c.max_seqs = seqs;
    c.max_context = ctx;
    return c;
}

TEST(RuntimeScheduler, ChunkedPrefillThenDecodeMatchesReference) {
    Harness h(64, 8, 16, sconf(32, 4));
    const auto prompt = prompt_of(100, 1);
    const uint64_t id = h.submit(prompt, 10);
    std::vector<int> sizes;
    for (int i = 0; i < 4; ++i) sizes.push_back(h.step().at(0).n);
    EXPECT_EQ(sizes, (std::vector<int>{32, 32, 32, 4}));
    h.run_all();
    EXPECT_EQ(h.out[id], h.exec.reference_greedy(prompt, 10));
    EXPECT_EQ(h.bm->stats(kFullGroup).used, 0);
    EXPECT_EQ(h.bm->stats(kSlidingGroup).used, 0);
}

TEST(RuntimeScheduler, BudgetAndSeqLimitsHoldAndDecodesGoFirst) {
    Harness h(512, 8, 16, sconf(40, 6));
    std::vector<std::pair<uint64_t, std::vector<int32_t>>> reqs;
    for (int i = 0; i < 14; ++i) {
        auto p = prompt_of(10 + 9 * i, i);
        reqs.push_back({h.submit(p, 5 + i % 7), p});
    }
    int steps = 0;
    bool mixed_step_seen = false;
    while (h.sched->has_work()) {
        // Sequences that are decoding before the step must all get their token when any prefill chunk runs.
        std::vector<uint64_t> decoders;
        for (const Sequence *s : h.sched->sequences())
            if (s->running && s->remaining() == 1) decoders.push_back(s->id);
        const auto ran = h.step();
        int tokens = 0;
        bool prefill_seen = false;
        std::vector<uint64_t> decoded;
        for (const auto &c : ran) {
            tokens += c.n;
            if (c.n == 1 && !prefill_seen) decoded.push_back(c.id);
            if (c.n > 1) prefill_seen = true;
            EXPECT_FALSE(c.n == 1 && prefill_seen && std::count(decoders.begin(), decoders.end(), c.id))
                << "a decode was placed after a prefill chunk";
        }
        EXPECT_LE(tokens, 40);
        EXPECT_LE(static_cast<int>(ran.size()), 6);
        EXPECT_LE(h.sched->n_running(), 6);
        if (prefill_seen) {
            for (uint64_t d : decoders) EXPECT_TRUE(std::count(decoded.begin(), decoded.end(), d)) << "decode skipped";
            if (!decoders.empty()) mixed_step_seen = true;
        }
        ASSERT_LT(++steps, 10000);
    }
    EXPECT_TRUE(mixed_step_seen);  // the workload did mix decodes and prefill chunks
    for (size_t i = 0; i < reqs.size(); ++i)
        EXPECT_EQ(h.out[reqs[i].first], h.exec.reference_greedy(reqs[i].second, 5 + i % 7)) << "request " << i;
}

TEST(RuntimeScheduler, PreemptionUnderATinyPoolKeepsEveryRequestsTokens) {
    // 40 blocks of 4 tokens for 16 requests of up to ~70 positions each: far too few to run them all at once.
    Harness h(40, 4, 8, sconf(64, 16));
    std::vector<std::pair<uint64_t, std::vector<int32_t>>> reqs;
    for (int i = 0; i < 16; ++i) {
        auto p = prompt_of(12 + (i * 5) % 30, i);
        reqs.push_back({h.submit(p, 40), p});
    }
    h.run_all();
    EXPECT_GT(h.sched->counters().preemptions, 0u);
    for (size_t i = 0; i < reqs.size(); ++i)
        EXPECT_EQ(h.out[reqs[i].first], h.exec.reference_greedy(reqs[i].second, 40)) << "request " << i;
    EXPECT_EQ(h.bm->stats(kFullGroup).used, 0);
    EXPECT_EQ(h.bm->stats(kSlidingGroup).used, 0);
    h.bm->check_invariants();
}

TEST(RuntimeScheduler, PreemptionWithoutPrefixCaching) {
    Harness h(30, 4, 8, sconf(16, 8), false);
    std::vector<std::pair<uint64_t, std::vector<int32_t>>> reqs;
    for (int i = 0; i < 10; ++i) {
        auto p = prompt_of(10 + i * 3, i + 100);
        reqs.push_back({h.submit(p, 30), p});
    }
    h.run_all();
    EXPECT_GT(h.sched->counters().preemptions, 0u);
    for (size_t i = 0; i < reqs.size(); ++i)
        EXPECT_EQ(h.out[reqs[i].first], h.exec.reference_greedy(reqs[i].second, 30)) << "request " << i;
    EXPECT_EQ(h.bm->stats(kFullGroup).used + h.bm->stats(kFullGroup).cached_free, 0);
}

TEST(RuntimeScheduler, PrefixCacheHitGivesTheSameTokensAndSkipsCompute) {
    Harness h(256, 8, 16, sconf(64, 4));
    const auto prompt = prompt_of(61, 3);
    const uint64_t a = h.submit(prompt, 8);
    h.run_all();
    const long computed_before = h.exec.tokens_computed;
    const uint64_t b = h.submit(prompt, 8);
    h.run_all();
    EXPECT_EQ(h.cached[a], 0);
    EXPECT_EQ(h.cached[b], 56);  // 7 full blocks of 8
    EXPECT_EQ(h.out[a], h.out[b]);
    EXPECT_EQ(h.exec.tokens_computed - computed_before, 61 - 56 + 7);
    EXPECT_EQ(h.sched->counters().prefix_cache_hits, 56u);
    EXPECT_EQ(h.sched->counters().prefix_cache_queries, 122u);
    // A prompt sharing only the first 20 tokens hits 2 blocks.
    auto other = prompt;
    other[20] = (other[20] + 1) % 64;
    const uint64_t c = h.submit(other, 4);
    h.run_all();
    EXPECT_EQ(h.cached[c], 16);
    EXPECT_EQ(h.out[c], h.exec.reference_greedy(other, 4));
}

TEST(RuntimeScheduler, SlidingWindowPrefixHitMatchesReference) {
    // Window 8 with blocks of 4: the hit keeps only the last window's sliding blocks.
    Harness h(128, 4, 8, sconf(16, 2));
    const auto prompt = prompt_of(50, 9);
    const uint64_t a = h.submit(prompt, 6);
    h.run_all();
    auto longer = prompt;
    longer.insert(longer.end(), h.out[a].begin(), h.out[a].end());
    longer.push_back(5);
    const uint64_t b = h.submit(longer, 6);
    h.run_all();
    EXPECT_GE(h.cached[b], 48);
    EXPECT_EQ(h.out[b], h.exec.reference_greedy(longer, 6));
}

TEST(RuntimeScheduler, CapacityIsCheckedAtSubmit) {
    Harness h(10, 4, 8, sconf(16, 4, 64));
    try {
        h.submit(prompt_of(60, 1), 10);  // 70 > max_context 64
        FAIL() << "expected MS_ERR_CAPACITY";
    } catch (const Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_CAPACITY);
        EXPECT_NE(std::string(e.what()).find("max_context"), std::string::npos);
    }
    try {
        h.submit(prompt_of(40, 1), 10);  // 49 positions = 13 blocks of 4 > 10
        FAIL() << "expected MS_ERR_CAPACITY";
    } catch (const Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_CAPACITY);
        EXPECT_NE(std::string(e.what()).find("KV blocks"), std::string::npos);
    }
    // Exactly the pool: 40 positions = 10 blocks.
    const auto p = prompt_of(31, 2);
    const uint64_t id = h.submit(p, 10);
    h.run_all();
    EXPECT_EQ(h.out[id], h.exec.reference_greedy(p, 10));
}

TEST(RuntimeScheduler, RemovingARunningSequenceFreesItsBlocks) {
    Harness h(64, 4, 8, sconf(8, 4));
    const uint64_t a = h.submit(prompt_of(30, 1), 20);
    const uint64_t b = h.submit(prompt_of(30, 2), 20);
    for (int i = 0; i < 6; ++i) h.step();
    EXPECT_GT(h.bm->stats(kFullGroup).used, 0);
    ASSERT_NE(h.sched->remove(a), nullptr);
    ASSERT_NE(h.sched->remove(b), nullptr);
    EXPECT_EQ(h.sched->remove(b), nullptr);
    EXPECT_EQ(h.bm->stats(kFullGroup).used, 0);
    EXPECT_EQ(h.bm->stats(kSlidingGroup).used, 0);
    EXPECT_FALSE(h.sched->has_work());
    h.sched->check_invariants();
}

}  // namespace
}  // namespace ms
