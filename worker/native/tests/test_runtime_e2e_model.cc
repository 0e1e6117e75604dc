// End to end through the C API on generated `tiny` checkpoints: batched generation equals one-at-a-time generation,
// a prefix-cache hit gives identical tokens, preemption under a tiny KV pool changes nothing, sliding-window release
// with a short window, and the engine's greedy tokens agree with the model's own reference path (ms_model_eval).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine.h"
#include "model/synthetic_checkpoint.h"

namespace {

struct ScratchDir {
    std::string path;
    ScratchDir() {
        char tmpl[] = "/tmp/ms_runtime_e2e_XXXXXX";
        const char *p = mkdtemp(tmpl);
        path = p ? p : "";
    }
    ~ScratchDir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

struct Events {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, std::vector<int32_t>> tokens;
    std::map<uint64_t, int> finish, cached;

    static void on(void *user, const ms_event *ev, int n) {
        auto *self = static_cast<Events *>(user);
        std::lock_guard<std::mutex> lk(self->mu);
        for (int i = 0; i < n; ++i) {
            if (ev[i].token >= 0) {
                if (self->tokens[ev[i].id].empty()) self->cached[ev[i].id] = ev[i].n_prompt_cached;
                self->tokens[ev[i].id].push_back(ev[i].token);
            }
            if (ev[i].finish_reason != MS_FINISH_NONE) self->finish[ev[i].id] = ev[i].finish_reason;
        }
        self->cv.notify_all();
    }
    bool wait_done(const std::vector<uint64_t> &ids) {
        std::unique_lock<std::mutex> lk(mu);
        return cv.wait_for(lk, std::chrono::seconds(120), [&] {
            for (uint64_t id : ids)
                if (!finish.count(id)) return false;
            return true;
        });
    }
};

class RuntimeE2E : public ::testing::Test {
  protected:
    static std::map<int, ms_model *> &models() {
        static std::map<int, ms_model *> m;
        return m;
    }
    static void TearDownTestSuite() {
        for (auto &kv : models()) ms_model_free(kv.second);
        models().clear();
    }
    // One checkpoint per window size for the whole suite.
    static ms_model *model(int window) {
        static ScratchDir dir;
        auto it = models().find(window);
        if (it != models().end()) return it->second;
        ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
        spec.sliding_window = window;
        spec.seed = 7;
        const std::string out = dir.path + "/tiny_w" + std::to_string(window);
        ms::write_synthetic_checkpoint(spec, out);
        ms_model_params p;
        ms_model_params_default(&p);
        p.path = out.c_str();
        p.backend = "cpu";
        p.n_threads = 2;
        ms_model *m = nullptr;
        EXPECT_EQ(ms_model_load(&p, &m), MS_OK) << ms_last_error();
        models()[window] = m;
        return m;
    }

    static ms_engine_params params(int kv_blocks_of_16 = 512, int max_seqs = 16, int budget = 128) {
        ms_engine_params p;
        ms_engine_params_default(&p);
        p.max_context = 512;
        p.max_seqs = max_seqs;
        p.max_batched_tokens = budget;
        p.kv_block_size = 16;
        p.kv_dtype_bf16 = 0;
        // tiny: 4 layers (2 per group), kv_dim 2 * 16 = 32, fp32: 2 * 2 * 16 * 32 * 4 bytes per block per group.
        p.kv_memory_bytes = static_cast<uint64_t>(kv_blocks_of_16) * 2 * (2 * 2 * 16 * 32 * 4);
        return p;
    }

    static std::vector<int32_t> prompt(int n, int salt) {
        std::vector<int32_t> p(n);
        for (int i = 0; i < n; ++i) p[i] = (i * 31 + salt * 101 + 5) % 1024;
        return p;
    }

    static uint64_t submit(ms_engine *e, const std::vector<int32_t> &p, int max_tokens) {
        ms_request r{};
        r.prompt = p.data();
        r.n_prompt = static_cast<int>(p.size());
        r.max_tokens = max_tokens;
        r.top_p = 1.f;
        uint64_t id = 0;
        EXPECT_EQ(ms_engine_submit(e, &r, &id), MS_OK) << ms_last_error();
        return id;
    }

    // Greedy tokens of each prompt, run one request at a time.
    static std::vector<std::vector<int32_t>> one_at_a_time(ms_model *m, const std::vector<std::vector<int32_t>> &prompts,
                                                           int max_tokens) {
        Events ev;
        ms_engine *e = nullptr;
        ms_engine_params p = params();
        p.enable_prefix_caching = 0;
        EXPECT_EQ(ms_engine_create(m, &p, &Events::on, &ev, &e), MS_OK) << ms_last_error();
        std::vector<std::vector<int32_t>> out;
        for (const auto &pr : prompts) {
            const uint64_t id = submit(e, pr, max_tokens);
            EXPECT_TRUE(ev.wait_done({id}));
            std::lock_guard<std::mutex> lk(ev.mu);
            out.push_back(ev.tokens[id]);
        }
        ms_engine_free(e);
        return out;
    }
};

TEST_F(RuntimeE2E, BatchedGenerationEqualsOneAtATime) {
    ms_model *m = model(128);
    ASSERT_NE(m, nullptr);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) prompts.push_back(prompt(5 + 23 * i, i));
    const auto alone = one_at_a_time(m, prompts, 24);

    Events ev;
    ms_engine *e = nullptr;
    ms_engine_params p = params(512, 8, 64);  // a small budget: prompts are chunked and mixed with decodes
    ASSERT_EQ(ms_engine_create(m, &p, &Events::on, &ev, &e), MS_OK) << ms_last_error();
    std::vector<uint64_t> ids;
    for (const auto &pr : prompts) ids.push_back(submit(e, pr, 24));
    ASSERT_TRUE(ev.wait_done(ids));
    for (size_t i = 0; i < ids.size(); ++i) {
        EXPECT_EQ(ev.tokens[ids[i]], alone[i]) << "request " << i;
        EXPECT_EQ(ev.finish[ids[i]], MS_FINISH_LENGTH);
    }
    ms_engine_stats st{};
    ASSERT_EQ(ms_engine_get_stats(e, &st), MS_OK);
    EXPECT_EQ(st.kv_blocks_used, 0);
    EXPECT_EQ(st.generation_tokens, 8u * 24);
    ms_engine_free(e);
}

TEST_F(RuntimeE2E, GreedyTokensAgreeWithTheModelReferencePath) {
    ms_model *m = model(128);
    ASSERT_NE(m, nullptr);
    const auto pr = prompt(40, 3);
    const auto engine_tokens = one_at_a_time(m, {pr}, 12)[0];
    // Recompute every step from scratch with ms_model_eval and take the argmax of the last position.
    std::vector<int32_t> seq = pr;
    std::vector<int32_t> ref;
    for (int i = 0; i < 12; ++i) {
        std::vector<float> logits(seq.size() * 1024);
        ASSERT_EQ(ms_model_eval(m, seq.data(), static_cast<int>(seq.size()), logits.data()), MS_OK) << ms_last_error();
        const float *last = &logits[(seq.size() - 1) * 1024];
        const int32_t best = static_cast<int32_t>(std::max_element(last, last + 1024) - last);
        ref.push_back(best);
        seq.push_back(best);
    }
    EXPECT_EQ(engine_tokens, ref);
}

TEST_F(RuntimeE2E, PrefixCacheHitGivesIdenticalTokens) {
    ms_model *m = model(128);
    ASSERT_NE(m, nullptr);
    Events ev;
    ms_engine *e = nullptr;
    ms_engine_params p = params();
    ASSERT_EQ(ms_engine_create(m, &p, &Events::on, &ev, &e), MS_OK) << ms_last_error();
    const auto pr = prompt(70, 9);
    const uint64_t a = submit(e, pr, 16);
    ASSERT_TRUE(ev.wait_done({a}));
    const uint64_t b = submit(e, pr, 16);
    ASSERT_TRUE(ev.wait_done({b}));
    EXPECT_EQ(ev.cached[a], 0);
    EXPECT_EQ(ev.cached[b], 64);
    EXPECT_EQ(ev.tokens[a], ev.tokens[b]);
    ms_engine_stats st{};
    ASSERT_EQ(ms_engine_get_stats(e, &st), MS_OK);
    EXPECT_EQ(st.prefix_cache_hits, 64u);
    EXPECT_EQ(st.prompt_tokens, 70u + 6u);
    ms_engine_free(e);
}

TEST_F(RuntimeE2E, ShortSlidingWindowPrefixHitAndPreemption) {
    // Window 16 (one block): prompts longer than the window release sliding blocks; a hit needs the last window only.
    ms_model *m = model(16);
    ASSERT_NE(m, nullptr);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 6; ++i) prompts.push_back(prompt(40 + 9 * i, 20 + i));
    const auto alone = one_at_a_time(m, prompts, 20);

    Events ev;
    ms_engine *e = nullptr;
    ms_engine_params p = params(20, 6, 48);  // 20 blocks of 16: the six requests need ~30 together
    ASSERT_EQ(ms_engine_create(m, &p, &Events::on, &ev, &e), MS_OK) << ms_last_error();
    std::vector<uint64_t> ids;
    for (const auto &pr : prompts) ids.push_back(submit(e, pr, 20));
    ASSERT_TRUE(ev.wait_done(ids));
    for (size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(ev.tokens[ids[i]], alone[i]) << "request " << i;
    ms_engine_stats st{};
    ASSERT_EQ(ms_engine_get_stats(e, &st), MS_OK);
    EXPECT_GT(st.preemptions, 0u);
    EXPECT_EQ(st.kv_blocks_used, 0);
    // The first prompt again: served from the cache (sliding blocks of its last window included).
    const uint64_t again = submit(e, prompts[0], 20);
    ASSERT_TRUE(ev.wait_done({again}));
    EXPECT_EQ(ev.tokens[again], alone[0]);
    ms_engine_free(e);
}

TEST_F(RuntimeE2E, CapacityAndArgumentErrorsThroughTheCApi) {
    ms_model *m = model(128);
    ASSERT_NE(m, nullptr);
    Events ev;
    ms_engine *e = nullptr;
    ms_engine_params p = params(8);  // 8 blocks of 16 = 128 positions
    ASSERT_EQ(ms_engine_create(m, &p, &Events::on, &ev, &e), MS_OK) << ms_last_error();
    const auto pr = prompt(100, 1);
    ms_request r{};
    r.prompt = pr.data();
    r.n_prompt = 100;
    r.max_tokens = 100;
    r.top_p = 1.f;
    uint64_t id = 0;
    EXPECT_EQ(ms_engine_submit(e, &r, &id), MS_ERR_CAPACITY);
    EXPECT_NE(std::string(ms_last_error()).find("KV blocks"), std::string::npos);
    r.max_tokens = 1000;
    EXPECT_EQ(ms_engine_submit(e, &r, &id), MS_ERR_CAPACITY);
    EXPECT_NE(std::string(ms_last_error()).find("max_context"), std::string::npos);
    std::vector<int32_t> bad{1, 2, 5000};
    r.prompt = bad.data();
    r.n_prompt = 3;
    r.max_tokens = 4;
    EXPECT_EQ(ms_engine_submit(e, &r, &id), MS_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(ms_engine_cancel(e, 12345), MS_ERR_NOT_FOUND);
    ms_engine_free(e);
    ms_engine_params big = params();
    big.max_context = 1 << 30;
    EXPECT_EQ(ms_engine_create(m, &big, &Events::on, &ev, &e), MS_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(ms_last_error()).find("max_position_embeddings"), std::string::npos);
}

}  // namespace
