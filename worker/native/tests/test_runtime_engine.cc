// The engine's step thread over the fake executor: concurrent submits, per-step event batches, seeded sampling
// independent of batch composition, cancellation under load, queue bound, shutdown, forward failures.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/error.h"
#include "runtime/serving_engine.h"
#include "runtime_fake_executor.h"

namespace ms {
namespace {

using testing::FakeExecutor;

// Collects events per request; wait() blocks until `n` requests have finished.
struct Collector {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, std::vector<int32_t>> tokens;
    std::map<uint64_t, int> finish;
    std::map<uint64_t, std::string> messages;
    int callbacks = 0;
    bool duplicate_in_batch = false;

    static void on_events(void *user, const ms_event *ev, int n) {
        auto *c = static_cast<Collector *>(user);
        std::lock_guard<std::mutex> lk(c->mu);
        ++c->callbacks;
        std::map<uint64_t, int> seen;
        for (int i = 0; i < n; ++i) {
            if (++seen[ev[i].id] > 1) c->duplicate_in_batch = true;
            if (ev[i].token >= 0) c->tokens[ev[i].id].push_back(ev[i].token);
            if (ev[i].finish_reason != MS_FINISH_NONE) {
                c->finish[ev[i].id] = ev[i].finish_reason;
                if (ev[i].message) c->messages[ev[i].id] = ev[i].message;
            }
        }
        c->cv.notify_all();
    }
    void wait(size_t n) {
        std::unique_lock<std::mutex> lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(60), [&] { return finish.size() >= n; })) << "requests did not finish";
    }
    size_t n_tokens(uint64_t id) {
        std::lock_guard<std::mutex> lk(mu);
        return tokens[id].size();
    }
};

// Resumes a paused fake executor on scope exit, so a failed assertion cannot leave the engine thread held.
struct ResumeOnExit {
    FakeExecutor &exec;
    ~ResumeOnExit() { exec.resume(); }
};

ms_engine_params params(uint64_t blocks, int block_size, int budget, int seqs, int window_bytes_unused = 0) {
    ms_engine_params p{};
    p.max_context = 4096;
    p.max_batched_tokens = budget;
    p.max_seqs = seqs;
    p.max_waiting = 0;
    p.kv_block_size = block_size;
    // Fake: 2 groups of 1 layer, kv_dim 2, fp32: 2 * 1 * bs * 2 * 4 bytes per block per group.
    p.kv_memory_bytes = blocks * 2 * (2ull * block_size * 2 * 4);
    p.kv_dtype_bf16 = 0;
    p.enable_prefix_caching = 1;
    return p;
}

std::vector<int32_t> prompt_of(int n, int salt) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = (i * 17 + salt * 5 + 3) % 64;
    return p;
}

ms_request request(const std::vector<int32_t> &prompt, int max_tokens) {
    ms_request r{};
    r.prompt = prompt.data();
    r.n_prompt = static_cast<int>(prompt.size());
    r.max_tokens = max_tokens;
    r.top_p = 1.f;
    return r;
}

TEST(RuntimeEngine, ConcurrentSubmitsMatchReferenceAndBatchPerStep) {
    FakeExecutor exec(64, 16);
    Collector col;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 12; ++i) prompts.push_back(prompt_of(5 + i * 7, i));
    std::map<uint64_t, int> which;
    std::mutex which_mu;
    {
        Engine engine(exec, params(128, 8, 48, 8), &Collector::on_events, &col);
        std::vector<std::thread> threads;
        for (int t = 0; t < 3; ++t) {
            threads.emplace_back([&, t] {
                for (int i = t; i < 12; i += 3) {
                    const uint64_t id = engine.submit(request(prompts[i], 20));
                    std::lock_guard<std::mutex> lk(which_mu);
                    which[id] = i;
                }
            });
        }
        for (auto &th : threads) th.join();
        col.wait(12);
        const ms_engine_stats st = engine.stats();
        EXPECT_EQ(st.kv_blocks_used, 0);
        EXPECT_EQ(st.running, 0);
        EXPECT_EQ(st.generation_tokens, 12u * 20);
        EXPECT_LE(static_cast<uint64_t>(col.callbacks), st.steps);
    }
    EXPECT_FALSE(col.duplicate_in_batch);
    for (const auto &[id, i] : which) {
        EXPECT_EQ(col.tokens[id], exec.reference_greedy(prompts[i], 20)) << "request " << i;
        EXPECT_EQ(col.finish[id], MS_FINISH_LENGTH);
    }
}

TEST(RuntimeEngine, SeededSamplingDoesNotDependOnTheBatch) {
    const auto prompt = prompt_of(20, 1);
    auto run = [&](int companions) {
        FakeExecutor exec(64, 16);
        Collector col;
        Engine engine(exec, params(256, 8, 64, 16), &Collector::on_events, &col);
        std::vector<std::vector<int32_t>> others;
        for (int i = 0; i < companions; ++i) others.push_back(prompt_of(10 + i, 50 + i));
        for (auto &o : others) {
            ms_request r = request(o, 15);
            r.temperature = 0.9f;
            engine.submit(r);
        }
        ms_request r = request(prompt, 30);
        r.temperature = 1.0f;
        r.top_p = 0.9f;
        r.has_seed = 1;
        r.seed = 1234;
        const uint64_t id = engine.submit(r);
        col.wait(companions + 1);
        return col.tokens[id];
    };
    const auto alone = run(0);
    EXPECT_EQ(alone.size(), 30u);
    EXPECT_EQ(alone, run(7));
    EXPECT_EQ(alone, run(3));
}

TEST(RuntimeEngine, StopTokenEndsTheRequest) {
    FakeExecutor exec(64, 16);
    const auto prompt = prompt_of(9, 4);
    const auto ref = exec.reference_greedy(prompt, 10);
    Collector col;
    Engine engine(exec, params(64, 8, 32, 4), &Collector::on_events, &col);
    ms_request r = request(prompt, 10);
    const int32_t stop = ref[3];
    r.stop_token_ids = &stop;
    r.n_stop_token_ids = 1;
    const uint64_t id = engine.submit(r);
    col.wait(1);
    const size_t first = std::find(ref.begin(), ref.end(), stop) - ref.begin();
    EXPECT_EQ(col.tokens[id], std::vector<int32_t>(ref.begin(), ref.begin() + first + 1));
    EXPECT_EQ(col.finish[id], MS_FINISH_STOP);
}

TEST(RuntimeEngine, CancellationUnderLoadFreesEveryBlock) {
    FakeExecutor exec(64, 16);
    Collector col;
    Engine engine(exec, params(60, 4, 32, 12), &Collector::on_events, &col);
    std::vector<uint64_t> ids;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 20; ++i) prompts.push_back(prompt_of(10 + i, i));
    // Hold the engine inside its fourth step, when the first requests are streaming (prefill takes a step or two),
    // and cancel every other request. A request may still finish in the step in flight; every other one must end
    // cancelled, and the rest must produce their full, correct output. The step is chosen by count, not by polling
    // the output, so a slow test thread cannot let the engine run ahead and finish the requests it meant to cancel.
    exec.pause_at_forward(4);
    for (int i = 0; i < 20; ++i) ids.push_back(engine.submit(request(prompts[i], 200)));
    std::map<uint64_t, int> finished_before;
    {
        ResumeOnExit resume{exec};
        exec.wait_in_forward();
        EXPECT_GE(col.n_tokens(ids[0]), 1) << "the first request streams before the cancellations";
        {
            std::lock_guard<std::mutex> lk(col.mu);
            finished_before = col.finish;
        }
        for (int i = 0; i < 20; i += 2) {
            try {
                engine.cancel(ids[i]);
            } catch (const Error &e) {
                EXPECT_EQ(e.status(), MS_ERR_NOT_FOUND);
                EXPECT_TRUE(finished_before.count(ids[i]));
            }
        }
    }
    col.wait(20);
    const ms_engine_stats st = engine.stats();
    EXPECT_EQ(st.kv_blocks_used, 0);
    EXPECT_EQ(st.running + st.waiting, 0);
    int cancelled = 0;
    for (int i = 0; i < 20; ++i) {
        if (col.finish[ids[i]] == MS_FINISH_CANCELLED) {
            ++cancelled;
            EXPECT_EQ(i % 2, 0);
        } else {
            EXPECT_EQ(col.finish[ids[i]], MS_FINISH_LENGTH);
            EXPECT_EQ(col.tokens[ids[i]], exec.reference_greedy(prompts[i], 200)) << "request " << i;
        }
    }
    // Most even requests were still queued when cancelled (about one fits the pool at a time).
    EXPECT_GE(cancelled, 5);
    EXPECT_THROW(engine.cancel(ids[1]), Error);  // finished: not found
}

TEST(RuntimeEngine, QueueBoundRejectsWithCapacity) {
    FakeExecutor exec(64, 16);
    Collector col;
    ms_engine_params p = params(64, 8, 64, 1);
    p.max_waiting = 2;
    Engine engine(exec, p, &Collector::on_events, &col);
    ResumeOnExit resume{exec};
    exec.pause();
    const auto prompt = prompt_of(8, 1);
    engine.submit(request(prompt, 50));
    exec.wait_in_forward();  // the first request is running; the next two wait
    engine.submit(request(prompt, 5));
    engine.submit(request(prompt, 5));
    try {
        engine.submit(request(prompt, 5));
        FAIL() << "expected MS_ERR_CAPACITY";
    } catch (const Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_CAPACITY);
        EXPECT_NE(std::string(e.what()).find("max_waiting"), std::string::npos);
    }
    EXPECT_EQ(engine.stats().waiting, 2);
    exec.resume();
    col.wait(3);
}

TEST(RuntimeEngine, InvalidRequestsAreRefusedWithTheirField) {
    FakeExecutor exec(64, 16);
    Collector col;
    Engine engine(exec, params(16, 8, 32, 4), &Collector::on_events, &col);
    std::vector<int32_t> bad{1, 2, 64};
    auto expect = [&](const ms_request &r, ms_status status, const char *needle) {
        try {
            engine.submit(r);
            ADD_FAILURE() << "accepted a bad request (" << needle << ")";
        } catch (const Error &e) {
            EXPECT_EQ(e.status(), status) << e.what();
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect(request(bad, 4), MS_ERR_INVALID_ARGUMENT, "prompt token 2");
    std::vector<int32_t> ok{1, 2, 3};
    ms_request r = request(ok, 0);
    expect(r, MS_ERR_INVALID_ARGUMENT, "max_tokens");
    r = request(ok, 4);
    r.top_p = 0.f;
    expect(r, MS_ERR_INVALID_ARGUMENT, "top_p");
    r = request(ok, 4);
    r.logprobs = 21;
    expect(r, MS_ERR_INVALID_ARGUMENT, "logprobs");
    r = request(ok, 4);
    r.temperature = -1.f;
    expect(r, MS_ERR_INVALID_ARGUMENT, "temperature");
    expect(request(ok, 200), MS_ERR_CAPACITY, "KV blocks");  // 16 blocks of 8 = 128 positions
    EXPECT_THROW(engine.cancel(999), Error);
}

TEST(RuntimeEngine, ForwardFailureFailsTheStepsRequestsOnly) {
    FakeExecutor exec(64, 16);
    Collector col;
    Engine engine(exec, params(64, 8, 32, 4), &Collector::on_events, &col);
    ResumeOnExit resume{exec};
    exec.pause();
    const auto prompt = prompt_of(8, 2);
    const uint64_t a = engine.submit(request(prompt, 5));
    exec.wait_in_forward();
    exec.fail_next = true;
    exec.resume();
    col.wait(1);
    EXPECT_EQ(col.finish[a], MS_FINISH_ERROR);
    EXPECT_NE(col.messages[a].find("injected failure"), std::string::npos);
    const uint64_t b = engine.submit(request(prompt, 5));
    col.wait(2);
    EXPECT_EQ(col.finish[b], MS_FINISH_LENGTH);
    EXPECT_EQ(col.tokens[b], exec.reference_greedy(prompt, 5));
    EXPECT_EQ(engine.stats().kv_blocks_used, 0);
}

TEST(RuntimeEngine, ShutdownCancelsWhatIsInFlight) {
    FakeExecutor exec(64, 16);
    Collector col;
    std::vector<uint64_t> ids;
    auto engine = std::make_unique<Engine>(exec, params(2048, 8, 32, 2), &Collector::on_events, &col);
    const auto prompt = prompt_of(8, 3);
    // Hold the engine inside its first step (two requests running, three waiting), start the shutdown, then let the
    // step finish: the loop sees the stop next. Pausing before submitting keeps any request from running to its
    // max_tokens first, which a fast fake step could do on a loaded machine.
    exec.pause();
    for (int i = 0; i < 5; ++i) ids.push_back(engine->submit(request(prompt, 3000)));
    exec.wait_in_forward();
    std::thread stopper([&] { engine.reset(); });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    exec.resume();
    stopper.join();
    ASSERT_EQ(col.finish.size(), 5u);
    for (uint64_t id : ids) EXPECT_EQ(col.finish[id], MS_FINISH_CANCELLED);
}

TEST(RuntimeEngine, KvBudgetTooSmallIsAnError) {
    FakeExecutor exec(64, 16);
    Collector col;
    ms_engine_params p = params(1, 8, 32, 2);
    p.kv_memory_bytes = 10;
    try {
        Engine engine(exec, p, &Collector::on_events, &col);
        FAIL() << "expected MS_ERR_OUT_OF_MEMORY";
    } catch (const Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_OUT_OF_MEMORY);
        EXPECT_NE(std::string(e.what()).find("kv_memory_bytes"), std::string::npos);
    }
}

}  // namespace
}  // namespace ms
