// The offline serving benchmark's driver and accounting (tools/serve_bench.h, behind bench_cuda_serve) on the CPU:
// a generated tiny checkpoint through the real engine (every request gets exactly `output` tokens, also when a small
// KV pool forces preemptions), the accounting check catching broken runs, percentiles, and a run cut short by its
// deadline.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "../tools/serve_bench.h"
#include "model/model.h"
#include "model/synthetic_checkpoint.h"
#include "runtime/model_executor.h"
#include "runtime_fake_executor.h"

namespace {

using ms_tools::ServeBenchOptions;
using ms_tools::ServeBenchResult;

class ServeBench : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        char tmpl[] = "/tmp/ms_serve_bench_XXXXXX";
        const char *p = mkdtemp(tmpl);
        ASSERT_NE(p, nullptr);
        dir() = p;
        ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
        spec.seed = 11;
        ms::write_synthetic_checkpoint(spec, dir() + "/tiny");
        ms_model_params mp;
        ms_model_params_default(&mp);
        const std::string path = dir() + "/tiny";
        mp.path = path.c_str();
        mp.backend = "cpu";
        mp.n_threads = 2;
        model() = ms::Model::load(mp);
    }
    static void TearDownTestSuite() {
        model().reset();
        std::error_code ec;
        std::filesystem::remove_all(dir(), ec);
    }
    static std::string &dir() {
        static std::string d;
        return d;
    }
    static std::unique_ptr<ms::Model> &model() {
        static std::unique_ptr<ms::Model> m;
        return m;
    }
    static ServeBenchOptions small() {
        ServeBenchOptions o;
        o.requests = 10;
        o.prompt = 40;
        o.output = 7;
        o.max_seqs = 4;
        o.max_batched_tokens = 64;
        o.seed = 3;
        return o;
    }
    // One run shared by the tests that only read it.
    static const ServeBenchResult &base_run() {
        static ServeBenchResult r = [] {
            ms::ModelExecutor exec(*model());
            return ms_tools::run_serve_bench(exec, small(), nullptr);
        }();
        return r;
    }
};

TEST_F(ServeBench, EveryRequestGetsExactlyOutputTokens) {
    const ServeBenchResult &r = base_run();
    EXPECT_TRUE(ms_tools::check_accounting(r).empty()) << ms_tools::check_accounting(r).front();
    ASSERT_EQ(r.requests.size(), 10u);
    for (const auto &t : r.requests) {
        EXPECT_EQ(t.token_s.size(), 7u);
        EXPECT_EQ(t.finish_reason, MS_FINISH_LENGTH);
        EXPECT_EQ(t.finish_events, 1);
    }
    EXPECT_FALSE(r.partial);
    EXPECT_EQ(r.stats.generation_tokens, 70u);
    EXPECT_EQ(r.stats.prompt_tokens + r.stats.prefix_cache_hits, 400u);
    EXPECT_EQ(r.stats.preemptions, 0u);
    // Ten requests at once with room for four: the engine ran four at a time, never more, within the token budget.
    EXPECT_EQ(r.peak_running, 4);
    EXPECT_LE(r.max_step_seqs, 4);
    EXPECT_LE(r.max_step_tokens, 64);
    EXPECT_GE(r.peak_waiting, 1);
    // The executor computed every prompt and every generated token but each request's last.
    EXPECT_EQ(r.tokens_computed, 10u * (40 + 7 - 1));

    const ms_tools::Throughput t = ms_tools::throughput(r);
    EXPECT_EQ(t.input_tokens, 400);
    EXPECT_EQ(t.output_tokens, 70);
    EXPECT_GT(r.wall_s, 0);
    EXPECT_DOUBLE_EQ(t.total_tok_s, 470 / r.wall_s);
    EXPECT_DOUBLE_EQ(t.req_s, 10 / r.wall_s);

    const ms_tools::Latencies l = ms_tools::latencies(r);
    EXPECT_EQ(l.ttft.size(), 10u);
    EXPECT_EQ(l.tpot.size(), 10u);
    EXPECT_EQ(l.itl.size(), 60u);
    for (double v : l.ttft) EXPECT_GE(v, 0);
    for (double v : l.itl) EXPECT_GE(v, 0);
    // The last request waited for earlier ones: its first token came no sooner than the first request's.
    EXPECT_GE(r.requests.back().token_s.front(), r.requests.front().token_s.front());

    const std::string report = ms_tools::format_report(r, "tiny");
    EXPECT_NE(report.find("| tiny | 10 x (40 + 7) | 4 / 64 |"), std::string::npos) << report;
    EXPECT_NE(report.find("vs vLLM published 16.5k"), std::string::npos);
}

TEST_F(ServeBench, SmallKvPoolPreemptsAndStillAccountsExactly) {
    ms::ModelExecutor exec(*model());
    ServeBenchOptions o = small();
    o.prompt = 30;   // 2 blocks of 16 at admission,
    o.output = 20;   // 4 blocks by the end: three admitted sequences outgrow a 6-block pool
    o.requests = 6;
    size_t per_block = 0;
    for (int g = 0; g < ms::kNumKvGroups; ++g)
        if (exec.kv_spec().layers_in_group[g]) per_block += exec.kv_block_bytes(g, o.kv_block_size, o.kv_bf16);
    o.kv_memory_bytes = 6 * per_block;
    const ServeBenchResult r = ms_tools::run_serve_bench(exec, o, nullptr);
    const auto bad = ms_tools::check_accounting(r);
    EXPECT_TRUE(bad.empty()) << bad.front();
    EXPECT_EQ(r.kv_pool_tokens, 6u * 16);
    EXPECT_GT(r.stats.preemptions, 0u);
    EXPECT_GT(r.stats.prompt_tokens + r.stats.prefix_cache_hits, 0u);
    for (const auto &t : r.requests) EXPECT_EQ(t.token_s.size(), 20u);
    EXPECT_EQ(r.stats.generation_tokens, 120u);
}

TEST_F(ServeBench, AccountingCatchesBrokenRuns) {
    const ServeBenchResult good = base_run();
    ASSERT_TRUE(ms_tools::check_accounting(good).empty());
    auto broken = [&](auto edit) {
        ServeBenchResult r = good;
        edit(r);
        return ms_tools::check_accounting(r);
    };
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.requests[3].token_s.pop_back(); }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.requests[0].finish_reason = MS_FINISH_STOP; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.requests[5].finish_events = 2; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.requests[1].bad_tokens = 1; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.requests.pop_back(); }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.stats.generation_tokens += 1; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.stats.prompt_tokens -= 1; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.stats.kv_blocks_used = 1; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.steps += 1; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.max_step_tokens = 65; }).empty());
    EXPECT_FALSE(broken([](ServeBenchResult &r) { r.peak_running = 5; }).empty());
    // A request with one token too many and another with one too few: the total is right, each request is not.
    EXPECT_FALSE(broken([](ServeBenchResult &r) {
                     r.requests[2].token_s.push_back(r.requests[2].token_s.back());
                     r.requests[4].token_s.pop_back();
                 }).empty());
    // Cancelled requests pass only in a run marked partial.
    EXPECT_FALSE(broken([](ServeBenchResult &r) {
                     r.requests[0].finish_reason = MS_FINISH_CANCELLED;
                     r.requests[0].token_s.pop_back();
                     r.stats.generation_tokens -= 1;
                 }).empty());
}

TEST(ServeBenchPercentile, LinearBetweenClosestRanks) {
    EXPECT_DOUBLE_EQ(ms_tools::percentile({4, 1, 3, 2}, 50), 2.5);
    EXPECT_DOUBLE_EQ(ms_tools::percentile({4, 1, 3, 2}, 0), 1);
    EXPECT_DOUBLE_EQ(ms_tools::percentile({4, 1, 3, 2}, 100), 4);
    EXPECT_NEAR(ms_tools::percentile({4, 1, 3, 2}, 99), 3.97, 1e-12);
    EXPECT_DOUBLE_EQ(ms_tools::percentile({7}, 99), 7);
    EXPECT_TRUE(std::isnan(ms_tools::percentile({}, 50)));
}

// The fake executor, 10 ms a step: 200 tokens per request cannot finish in 0.3 s, so the run is cut short.
class SlowFake : public ms::testing::FakeExecutor {
  public:
    SlowFake() : FakeExecutor(512, 64) {}
    void forward(const ms::ForwardSeq *seqs, int n, ms::KvStorage &kv, float *logits) override {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        FakeExecutor::forward(seqs, n, kv, logits);
    }
};

TEST(ServeBenchDeadline, CancelsWhatIsLeftAndReportsAPartialRun) {
    SlowFake exec;
    ServeBenchOptions o;
    o.requests = 6;
    o.prompt = 8;
    o.output = 200;
    o.max_seqs = 4;
    o.max_batched_tokens = 64;
    o.kv_bf16 = false;  // the fake stores fp32
    o.max_seconds = 0.3;
    const ServeBenchResult r = ms_tools::run_serve_bench(exec, o, nullptr);
    EXPECT_TRUE(r.partial);
    const auto bad = ms_tools::check_accounting(r);
    EXPECT_TRUE(bad.empty()) << bad.front();
    uint64_t tokens = 0;
    for (const auto &t : r.requests) {
        EXPECT_EQ(t.finish_reason, MS_FINISH_CANCELLED);
        EXPECT_LT(t.token_s.size(), 200u);
        tokens += t.token_s.size();
    }
    EXPECT_GT(tokens, 0u);
    EXPECT_GE(r.wall_s, 0.3);
    const ms_tools::Throughput t = ms_tools::throughput(r);
    EXPECT_EQ(t.requests_done, 0);
    EXPECT_EQ(t.output_tokens, double(tokens));
    EXPECT_EQ(t.input_tokens, double(r.stats.prompt_tokens + r.stats.prefix_cache_hits));
    EXPECT_NE(ms_tools::format_report(r, "fake").find("PARTIAL"), std::string::npos);
}

}  // namespace
