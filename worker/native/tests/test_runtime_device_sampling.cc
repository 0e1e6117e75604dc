// The engine over an executor that samples on the device (the fake's forward_sample): which rows go to the device,
// how the host rows' logits are compacted, that every kind of request in a mixed batch still gets its tokens and
// events right, and that a request's tokens never depend on what else is in the batch.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/serving_engine.h"
#include "runtime_fake_executor.h"

namespace ms {
namespace {

using testing::FakeExecutor;

struct Events {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, std::vector<ms_event>> by_id;
    std::map<uint64_t, int> finish;

    static void on_events(void *user, const ms_event *ev, int n) {
        auto *c = static_cast<Events *>(user);
        std::lock_guard<std::mutex> lk(c->mu);
        for (int i = 0; i < n; ++i) {
            if (ev[i].token >= 0) c->by_id[ev[i].id].push_back(ev[i]);
            if (ev[i].finish_reason != MS_FINISH_NONE) c->finish[ev[i].id] = ev[i].finish_reason;
        }
        c->cv.notify_all();
    }
    void wait(size_t n) {
        std::unique_lock<std::mutex> lk(mu);
        ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(60), [&] { return finish.size() >= n; })) << "requests did not finish";
    }
    std::vector<int32_t> tokens(uint64_t id) {
        std::lock_guard<std::mutex> lk(mu);
        std::vector<int32_t> t;
        for (const ms_event &e : by_id[id]) t.push_back(e.token);
        return t;
    }
};

ms_engine_params params(int seqs) {
    ms_engine_params p{};
    p.max_context = 4096;
    p.max_batched_tokens = 64;
    p.max_seqs = seqs;
    p.kv_block_size = 8;
    p.kv_memory_bytes = 512ull * 2 * (2ull * 8 * 2 * 4);
    p.enable_prefix_caching = 1;
    return p;
}

std::vector<int32_t> prompt_of(int n, int salt) {
    std::vector<int32_t> p(n);
    for (int i = 0; i < n; ++i) p[i] = (i * 13 + salt * 7 + 1) % 64;
    return p;
}

// The request kinds of a mixed batch.
enum Kind { kGreedy, kTemp, kTopP, kTopK, kMinP, kLogprobs, kGreedyLogprobs, kPenalties, kKinds };

ms_request make(const std::vector<int32_t> &prompt, int max_tokens, Kind kind, uint64_t seed) {
    ms_request r{};
    r.prompt = prompt.data();
    r.n_prompt = static_cast<int>(prompt.size());
    r.max_tokens = max_tokens;
    r.top_p = 1.f;
    r.has_seed = 1;
    r.seed = seed;
    switch (kind) {
        case kGreedy: break;
        case kTemp: r.temperature = 0.8f; break;
        case kTopP: r.temperature = 1.f, r.top_p = 0.7f; break;
        case kTopK: r.temperature = 1.2f, r.top_k = 5; break;
        case kMinP: r.temperature = 1.f, r.min_p = 0.2f; break;
        case kLogprobs: r.temperature = 0.7f, r.logprobs = 3; break;
        case kGreedyLogprobs: r.logprobs = 2; break;
        case kPenalties: r.temperature = 0.9f, r.frequency_penalty = 0.5f, r.repetition_penalty = 1.3f; break;
        default: break;
    }
    return r;
}

bool device_kind(Kind k) { return k == kGreedy || k == kTemp; }

// Runs one request of each kind in `kinds` (prompts by index) and returns each one's events.
std::vector<std::vector<ms_event>> run(FakeExecutor &exec, const std::vector<Kind> &kinds, int max_tokens) {
    Events ev;
    std::vector<std::vector<int32_t>> prompts;
    for (size_t i = 0; i < kinds.size(); ++i) prompts.push_back(prompt_of(6 + static_cast<int>(i) * 3, static_cast<int>(i)));
    std::vector<uint64_t> ids;
    {
        Engine engine(exec, params(16), &Events::on_events, &ev);
        // Every request is queued before the engine's steps go on (a step taken meanwhile is held), so they share
        // steps whatever the machine's scheduling: on two busy cores the first requests could otherwise finish
        // before the later ones were submitted, and no step would mix device and host rows.
        exec.pause();
        for (size_t i = 0; i < kinds.size(); ++i) ids.push_back(engine.submit(make(prompts[i], max_tokens, kinds[i], 1000 + i)));
        exec.resume();
        ev.wait(kinds.size());
    }
    std::vector<std::vector<ms_event>> out;
    for (uint64_t id : ids) out.push_back(ev.by_id[id]);
    return out;
}

TEST(RuntimeDeviceSampling, ClassifiesRows) {
    SamplingParams p;
    EXPECT_TRUE(p.device_sampleable());  // greedy
    p.top_p = 0.5f;
    p.top_k = 3;
    EXPECT_TRUE(p.device_sampleable());  // greedy ignores truncation
    p.temperature = 0.7f;
    EXPECT_FALSE(p.device_sampleable());
    p.top_p = 1.f;
    EXPECT_FALSE(p.device_sampleable());
    p.top_k = 0;
    EXPECT_TRUE(p.device_sampleable());
    p.min_p = 0.1f;
    EXPECT_FALSE(p.device_sampleable());
    p.min_p = 0.f;
    p.logprobs = 1;
    EXPECT_FALSE(p.device_sampleable());
    p.logprobs = 0;
    p.presence_penalty = 0.1f;
    EXPECT_FALSE(p.device_sampleable());
    p.presence_penalty = 0.f;
    p.repetition_penalty = 1.1f;
    EXPECT_FALSE(p.device_sampleable());
    p.repetition_penalty = 1.f;
    p.temperature = 0.f;
    p.frequency_penalty = -0.5f;
    EXPECT_FALSE(p.device_sampleable());
}

TEST(RuntimeDeviceSampling, MixedBatchMatchesHostPathAndDeviceContract) {
    const std::vector<Kind> kinds = {kGreedy, kTemp, kTopP, kTopK, kMinP, kLogprobs, kGreedyLogprobs, kPenalties,
                                     kTemp, kGreedy, kPenalties, kTopP};
    const int max_tokens = 12;
    FakeExecutor dev(64, 16);
    dev.set_device_sampling(true);
    const auto got = run(dev, kinds, max_tokens);
    FakeExecutor host(64, 16);  // today's path: every row on the CPU sampler
    const auto want = run(host, kinds, max_tokens);
    EXPECT_GT(dev.device_rows.load(), 0);
    EXPECT_GT(dev.host_rows.load(), 0);
    EXPECT_GT(dev.mixed_steps.load(), 0);
    EXPECT_EQ(host.host_rows.load() + host.device_rows.load(), 0);

    for (size_t i = 0; i < kinds.size(); ++i) {
        const Kind k = kinds[i];
        ASSERT_EQ(got[i].size(), static_cast<size_t>(max_tokens)) << "request " << i;
        std::vector<int32_t> tokens;
        for (const ms_event &e : got[i]) tokens.push_back(e.token);
        const std::vector<int32_t> prompt = prompt_of(6 + static_cast<int>(i) * 3, static_cast<int>(i));
        if (k == kGreedy) {
            EXPECT_EQ(tokens, dev.reference_greedy(prompt, max_tokens)) << "request " << i;
        } else if (k == kTemp) {
            // The device contract: one seed per step from the request's own Rng, Gumbel-max at its temperature.
            Rng rng(1000 + i);
            std::vector<int32_t> seq = prompt;
            std::vector<float> l(64);
            for (int t = 0; t < max_tokens; ++t) {
                dev.reference_logits(seq.data(), static_cast<int>(seq.size()), l.data());
                DeviceSampling d;
                d.mode = DeviceSampling::kTemperature;
                d.temperature = 0.8f;
                d.seed = rng.next();
                seq.push_back(dev.sample_row(l.data(), d));
            }
            EXPECT_EQ(tokens, std::vector<int32_t>(seq.begin() + prompt.size(), seq.end())) << "request " << i;
        } else {
            // Host rows: exactly what the CPU path gives (same logits, same Rng use).
            ASSERT_EQ(want[i].size(), got[i].size());
            for (size_t t = 0; t < got[i].size(); ++t) {
                EXPECT_EQ(got[i][t].token, want[i][t].token) << "request " << i << " token " << t;
                EXPECT_EQ(got[i][t].logprob, want[i][t].logprob) << "request " << i << " token " << t;
                ASSERT_EQ(got[i][t].n_top, want[i][t].n_top) << "request " << i << " token " << t;
                for (int j = 0; j < got[i][t].n_top; ++j) {
                    EXPECT_EQ(got[i][t].top_ids[j], want[i][t].top_ids[j]);
                    EXPECT_EQ(got[i][t].top_logprobs[j], want[i][t].top_logprobs[j]);
                }
            }
        }
        for (const ms_event &e : got[i]) {
            EXPECT_GE(e.token, 0);
            EXPECT_LT(e.token, 64);
            if (k == kLogprobs || k == kGreedyLogprobs) {
                EXPECT_EQ(e.n_top, k == kLogprobs ? 3 : 2);
                EXPECT_LT(e.logprob, 0.f);
            } else {
                EXPECT_EQ(e.n_top, 0);
                EXPECT_EQ(e.logprob, 0.f);
            }
        }
        EXPECT_EQ(got[i].back().finish_reason, MS_FINISH_LENGTH);
        if (device_kind(k)) EXPECT_EQ(got[i].front().n_prompt_cached, want[i].front().n_prompt_cached);
    }
    // Greedy rows give the same tokens on either path.
    for (size_t i = 0; i < kinds.size(); ++i) {
        if (kinds[i] != kGreedy) continue;
        for (size_t t = 0; t < got[i].size(); ++t) EXPECT_EQ(got[i][t].token, want[i][t].token);
    }
}

TEST(RuntimeDeviceSampling, TokensDoNotDependOnTheBatch) {
    // A device-sampled temperature request and a host-sampled top-p request, alone and among companions of every
    // kind (which change the row positions on both sides of the split every step).
    const std::vector<int32_t> prompt = prompt_of(17, 40);
    auto one = [&](Kind kind, int companions) {
        FakeExecutor exec(64, 16);
        exec.set_device_sampling(true);
        Events ev;
        std::vector<std::vector<int32_t>> others;
        for (int i = 0; i < companions; ++i) others.push_back(prompt_of(5 + i, 60 + i));
        Engine engine(exec, params(16), &Events::on_events, &ev);
        for (int i = 0; i < companions; ++i) engine.submit(make(others[i], 9 + i, static_cast<Kind>(i % kKinds), 7 + i));
        const uint64_t id = engine.submit(make(prompt, 25, kind, 424242));
        ev.wait(companions + 1);
        return ev.tokens(id);
    };
    for (Kind kind : {kTemp, kTopP, kGreedy, kPenalties}) {
        const auto alone = one(kind, 0);
        ASSERT_EQ(alone.size(), 25u);
        EXPECT_EQ(alone, one(kind, 5)) << "kind " << kind;
        EXPECT_EQ(alone, one(kind, 11)) << "kind " << kind;
    }
}

TEST(RuntimeDeviceSampling, SeedsChangeTemperatureSamples) {
    // Not a constant: different seeds give different token streams, the same seed the same stream.
    const std::vector<int32_t> prompt = prompt_of(9, 3);
    auto one = [&](uint64_t seed) {
        FakeExecutor exec(64, 16);
        exec.set_device_sampling(true);
        Events ev;
        Engine engine(exec, params(4), &Events::on_events, &ev);
        const uint64_t id = engine.submit(make(prompt, 20, kTemp, seed));
        ev.wait(1);
        return ev.tokens(id);
    };
    EXPECT_EQ(one(5), one(5));
    EXPECT_NE(one(5), one(6));
}

}  // namespace
}  // namespace ms
