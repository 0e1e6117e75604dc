// Sampler penalties: OpenAI frequency/presence over generated tokens, vLLM repetition over prompt and generated
// tokens, exact logit arithmetic, their effect on greedy choices, raw logprobs, and the engine wiring (a seq's history
// reaches the sampler; out-of-range values are refused naming the field).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <map>
#include <mutex>
#include <vector>

#include "common/error.h"
#include "runtime/sampler.h"
#include "runtime/serving_engine.h"
#include "runtime_fake_executor.h"

namespace ms {
namespace {

std::vector<float> penalised(const std::vector<float> &logits, const SamplingParams &p, const std::vector<int32_t> &tokens,
                             int n_prompt) {
    Sampler s;
    std::vector<float> out(logits.size());
    s.apply_penalties(logits.data(), static_cast<int>(logits.size()), p, {tokens.data(), static_cast<int>(tokens.size()), n_prompt},
                      out.data());
    return out;
}

TEST(RuntimeSamplerPenalties, FrequencyAndPresenceCountGeneratedTokensOnly) {
    const std::vector<float> l{1.f, 2.f, 3.f, -1.f, 0.5f, 4.f};
    // Prompt {0, 1, 5}; generated 2, 2, 3, 1, 2.
    const std::vector<int32_t> toks{0, 1, 5, 2, 2, 3, 1, 2};
    SamplingParams p;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    const auto out = penalised(l, p, toks, 3);
    EXPECT_FLOAT_EQ(out[0], 1.f);                     // prompt only
    EXPECT_FLOAT_EQ(out[1], 2.f - 1 * 0.5f - 0.25f);  // generated once (also in the prompt: not counted twice)
    EXPECT_FLOAT_EQ(out[2], 3.f - 3 * 0.5f - 0.25f);  // generated three times
    EXPECT_FLOAT_EQ(out[3], -1.f - 0.5f - 0.25f);
    EXPECT_FLOAT_EQ(out[4], 0.5f);  // never seen
    EXPECT_FLOAT_EQ(out[5], 4.f);   // prompt only
}

TEST(RuntimeSamplerPenalties, NegativePenaltiesRaiseRepeatedTokens) {
    const std::vector<float> l{1.f, 1.f, 1.f};
    SamplingParams p;
    p.frequency_penalty = -2.f;
    p.presence_penalty = -1.f;
    const auto out = penalised(l, p, {0, 1, 1}, 1);
    EXPECT_FLOAT_EQ(out[0], 1.f);
    EXPECT_FLOAT_EQ(out[1], 1.f + 2 * 2.f + 1.f);
    EXPECT_FLOAT_EQ(out[2], 1.f);
}

TEST(RuntimeSamplerPenalties, RepetitionDividesPositiveAndMultipliesNegativeLogitsOfPromptAndOutput) {
    const std::vector<float> l{3.f, -2.f, 4.f, -1.f, 5.f};
    SamplingParams p;
    p.repetition_penalty = 2.f;
    const auto out = penalised(l, p, {0, 1, 2, 2}, 2);  // prompt {0, 1}, generated {2, 2}
    EXPECT_FLOAT_EQ(out[0], 1.5f);
    EXPECT_FLOAT_EQ(out[1], -4.f);
    EXPECT_FLOAT_EQ(out[2], 2.f);  // once per token, however often it occurs
    EXPECT_FLOAT_EQ(out[3], -1.f);
    EXPECT_FLOAT_EQ(out[4], 5.f);
    // Below 1 it favours seen tokens; combined with frequency it is applied first (vLLM's order).
    p.repetition_penalty = 0.5f;
    p.frequency_penalty = 1.f;
    const auto fav = penalised(l, p, {0, 1, 2, 2}, 2);
    EXPECT_FLOAT_EQ(fav[0], 6.f);
    EXPECT_FLOAT_EQ(fav[1], -1.f);
    EXPECT_FLOAT_EQ(fav[2], 8.f - 2.f);
}

TEST(RuntimeSamplerPenalties, ScratchStateDoesNotLeakBetweenCalls) {
    Sampler s;
    const std::vector<float> l(8, 1.f);
    std::vector<float> out(8);
    SamplingParams p;
    p.frequency_penalty = 1.f;
    p.repetition_penalty = 2.f;
    const std::vector<int32_t> a{1, 2, 3, 3, 4};
    s.apply_penalties(l.data(), 8, p, {a.data(), 5, 2}, out.data());
    const std::vector<int32_t> b{5, 6};
    s.apply_penalties(l.data(), 8, p, {b.data(), 2, 1}, out.data());
    for (int v : {0, 1, 2, 3, 4, 7}) EXPECT_FLOAT_EQ(out[v], 1.f) << v;
    EXPECT_FLOAT_EQ(out[5], 0.5f);
    EXPECT_FLOAT_EQ(out[6], 0.5f - 1.f);
}

TEST(RuntimeSamplerPenalties, GreedyAvoidsThePenalisedTokenAndLogprobsStayRaw) {
    const std::vector<float> l{0.f, 3.f, 2.5f, 1.f};
    const std::vector<int32_t> hist{0, 1};  // prompt {0}, generated {1}
    Sampler s;
    Rng rng(1);
    Sample out;
    SamplingParams p;
    p.logprobs = 2;
    s.sample(l.data(), 4, p, {hist.data(), 2, 1}, rng, out);
    EXPECT_EQ(out.token, 1);  // no penalty: the largest logit
    p.presence_penalty = 1.f;
    s.sample(l.data(), 4, p, {hist.data(), 2, 1}, rng, out);
    EXPECT_EQ(out.token, 2);
    ASSERT_EQ(out.n_top, 2);
    EXPECT_EQ(out.top_ids[0], 1);  // the raw distribution's top, as vLLM reports by default
    double lse = 0;
    for (float x : l) lse += std::exp(double(x));
    EXPECT_NEAR(out.logprob, 2.5 - std::log(lse), 1e-5);
    // With a temperature, a strong penalty removes the token from any realistic draw.
    p.temperature = 0.5f;
    p.presence_penalty = 2.f;
    p.frequency_penalty = 2.f;
    int hits = 0;
    for (int i = 0; i < 2000; ++i) {
        s.sample(l.data(), 4, p, {hist.data(), 2, 1}, rng, out);
        hits += out.token == 1;
    }
    EXPECT_LT(hits, 2000 / 20);  // exp(-8) relative weight: expected ~0.4 hits of 2000
}

// Engine wiring: with the fake model, greedy decoding under penalties equals a cache-free reference that applies the
// same penalties to the history, and out-of-range values are refused with their name.
struct Collected {
    std::mutex mu;
    std::condition_variable cv;
    std::map<uint64_t, std::vector<int32_t>> tokens;
    int finished = 0;
    static void on_events(void *user, const ms_event *ev, int n) {
        auto *c = static_cast<Collected *>(user);
        std::lock_guard<std::mutex> lk(c->mu);
        for (int i = 0; i < n; ++i) {
            if (ev[i].token >= 0) c->tokens[ev[i].id].push_back(ev[i].token);
            if (ev[i].finish_reason != MS_FINISH_NONE) ++c->finished;
        }
        c->cv.notify_all();
    }
};

ms_engine_params engine_params() {
    ms_engine_params p{};
    p.max_context = 1024;
    p.max_batched_tokens = 64;
    p.max_seqs = 4;
    p.kv_block_size = 8;
    p.kv_memory_bytes = 256 * 2 * (2ull * 8 * 2 * 4);
    p.enable_prefix_caching = 1;
    return p;
}

TEST(RuntimeSamplerPenalties, EngineAppliesPenaltiesToEachSequencesHistory) {
    const int vocab = 12;  // small: without penalties greedy repeats quickly
    testing::FakeExecutor exec(vocab, 16);
    Collected col;
    const std::vector<int32_t> prompt{3, 7, 1, 9};
    const int n = 24;
    struct Case {
        float freq, pres, rep;
    };
    const std::vector<Case> cases{{0.f, 0.f, 1.f}, {1.5f, 0.f, 1.f}, {0.f, 2.f, 1.f}, {0.f, 0.f, 1.8f}, {-0.5f, 0.5f, 1.3f}};
    std::vector<uint64_t> ids;
    {
        Engine engine(exec, engine_params(), &Collected::on_events, &col);
        for (const Case &c : cases) {
            ms_request r{};
            r.prompt = prompt.data();
            r.n_prompt = static_cast<int>(prompt.size());
            r.max_tokens = n;
            r.top_p = 1.f;
            r.frequency_penalty = c.freq;
            r.presence_penalty = c.pres;
            r.repetition_penalty = c.rep;
            ids.push_back(engine.submit(r));
        }
        std::unique_lock<std::mutex> lk(col.mu);
        ASSERT_TRUE(col.cv.wait_for(lk, std::chrono::seconds(60), [&] { return col.finished >= int(cases.size()); }));
    }
    std::vector<std::vector<int32_t>> got;
    for (size_t i = 0; i < cases.size(); ++i) {
        SamplingParams p;
        p.frequency_penalty = cases[i].freq;
        p.presence_penalty = cases[i].pres;
        p.repetition_penalty = cases[i].rep;
        std::vector<int32_t> toks = prompt;
        std::vector<float> l(vocab), pl(vocab);
        Sampler s;
        for (int k = 0; k < n; ++k) {
            exec.reference_logits(toks.data(), static_cast<int>(toks.size()), l.data());
            s.apply_penalties(l.data(), vocab, p, {toks.data(), static_cast<int>(toks.size()), static_cast<int>(prompt.size())},
                              pl.data());
            int best = 0;
            for (int v = 1; v < vocab; ++v)
                if (pl[v] > pl[best]) best = v;
            toks.push_back(best);
        }
        const std::vector<int32_t> expected(toks.begin() + static_cast<long>(prompt.size()), toks.end());
        EXPECT_EQ(col.tokens[ids[i]], expected) << "case " << i;
        got.push_back(expected);
    }
    // The penalties change the continuation (otherwise the comparison above would not test the wiring).
    for (size_t i = 1; i < got.size(); ++i) EXPECT_NE(got[i], got[0]) << "case " << i;
}

TEST(RuntimeSamplerPenalties, EngineRefusesOutOfRangePenaltiesNamingTheField) {
    testing::FakeExecutor exec(16, 16);
    Collected col;
    Engine engine(exec, engine_params(), &Collected::on_events, &col);
    const std::vector<int32_t> prompt{1, 2, 3};
    auto expect_refused = [&](float freq, float pres, float rep, const char *field) {
        ms_request r{};
        r.prompt = prompt.data();
        r.n_prompt = 3;
        r.max_tokens = 2;
        r.top_p = 1.f;
        r.frequency_penalty = freq;
        r.presence_penalty = pres;
        r.repetition_penalty = rep;
        try {
            engine.submit(r);
            ADD_FAILURE() << "accepted " << field;
        } catch (const Error &e) {
            EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
            EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
        }
    };
    expect_refused(2.5f, 0.f, 1.f, "frequency_penalty");
    expect_refused(0.f, -2.01f, 1.f, "presence_penalty");
    expect_refused(0.f, 0.f, -1.f, "repetition_penalty");
    expect_refused(0.f, 0.f, NAN, "repetition_penalty");
}

}  // namespace
}  // namespace ms
