// Sampler: greedy, seeded reproducibility, top-k / top-p / min-p support sets and frequencies, logprobs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "runtime/sampler.h"

namespace ms {
namespace {

// Logits whose softmax at temperature 1 is exactly `probs`.
std::vector<float> logits_of(const std::vector<double> &probs) {
    std::vector<float> l;
    for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
    return l;
}

std::vector<int> draw(const std::vector<float> &logits, const SamplingParams &p, uint64_t seed, int n) {
    Sampler s;
    Rng rng(seed);
    Sample out;
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < n; ++i) {
        s.sample(logits.data(), static_cast<int>(logits.size()), p, rng, out);
        ++counts[out.token];
    }
    return counts;
}

TEST(RuntimeSampler, GreedyTakesTheFirstLargestLogit) {
    const std::vector<float> l{0.5f, 3.f, -1.f, 3.f, 2.f};
    Sampler s;
    Rng rng(1);
    Sample out;
    s.sample(l.data(), 5, SamplingParams{}, rng, out);
    EXPECT_EQ(out.token, 1);
    SamplingParams k1;
    k1.temperature = 5.f;
    k1.top_k = 1;  // top-1 at any temperature is greedy
    for (int i = 0; i < 50; ++i) {
        s.sample(l.data(), 5, k1, rng, out);
        EXPECT_EQ(out.token, 1);
    }
}

TEST(RuntimeSampler, SameSeedSameTokensDifferentSeedDifferentTokens) {
    std::vector<float> l(1000);
    for (size_t i = 0; i < l.size(); ++i) l[i] = static_cast<float>(std::sin(i * 0.37) * 2);
    SamplingParams p;
    p.temperature = 1.f;
    p.top_p = 0.95f;
    auto run = [&](uint64_t seed) {
        Sampler s;
        Rng rng(seed);
        Sample out;
        std::vector<int> toks;
        for (int i = 0; i < 64; ++i) {
            s.sample(l.data(), 1000, p, rng, out);
            toks.push_back(out.token);
        }
        return toks;
    };
    EXPECT_EQ(run(42), run(42));
    EXPECT_NE(run(42), run(43));
}

TEST(RuntimeSampler, TemperatureOneFollowsTheDistribution) {
    const std::vector<double> probs{0.5, 0.3, 0.15, 0.05};
    SamplingParams p;
    p.temperature = 1.f;
    const int n = 20000;
    const auto c = draw(logits_of(probs), p, 7, n);
    for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(c[i] / double(n), probs[i], 0.015) << i;
}

TEST(RuntimeSampler, TopKKeepsTheKMostLikely) {
    const std::vector<double> probs{0.1, 0.3, 0.05, 0.25, 0.2, 0.1};
    SamplingParams p;
    p.temperature = 1.f;
    p.top_k = 3;  // tokens 1, 3, 4; renormalized 0.4, 0.333, 0.267
    const int n = 20000;
    const auto c = draw(logits_of(probs), p, 11, n);
    EXPECT_EQ(c[0] + c[2] + c[5], 0);
    EXPECT_NEAR(c[1] / double(n), 0.3 / 0.75, 0.015);
    EXPECT_NEAR(c[3] / double(n), 0.25 / 0.75, 0.015);
    EXPECT_NEAR(c[4] / double(n), 0.2 / 0.75, 0.015);
}

TEST(RuntimeSampler, TopPKeepsTheSmallestSetReachingP) {
    const std::vector<double> probs{0.15, 0.5, 0.05, 0.3};
    SamplingParams p;
    p.temperature = 1.f;
    p.top_p = 0.7f;  // 0.5, then 0.8 >= 0.7: {1, 3}
    auto c = draw(logits_of(probs), p, 3, 5000);
    EXPECT_EQ(c[0] + c[2], 0);
    EXPECT_GT(c[1], 0);
    EXPECT_GT(c[3], 0);
    p.top_p = 0.85f;  // 0.8 < 0.85, 0.95 >= 0.85: {1, 3, 0}
    c = draw(logits_of(probs), p, 3, 5000);
    EXPECT_EQ(c[2], 0);
    EXPECT_GT(c[0], 0);
}

TEST(RuntimeSampler, TopPOverALargeFlatVocabulary) {
    // Many candidates (more than the first partial sort takes): the nucleus must be exact.
    const int v = 1200;
    std::vector<float> l(v);
    for (int i = 0; i < v; ++i) l[(i * 7919) % v] = -0.004f * i;  // rank i at a scattered index
    SamplingParams p;
    p.temperature = 1.f;
    p.top_p = 0.5f;
    double total = 0;
    for (int i = 0; i < v; ++i) total += std::exp(-0.004 * i);
    int nucleus = 0;
    for (double cum = 0; cum < 0.5 * total; ++nucleus) cum += std::exp(-0.004 * nucleus);
    ASSERT_GT(nucleus, 64);
    std::set<int> allowed;
    for (int i = 0; i < nucleus; ++i) allowed.insert((i * 7919) % v);
    const auto c = draw(l, p, 5, 4000);
    int outside = 0, seen = 0;
    for (int t = 0; t < v; ++t) {
        if (c[t] && !allowed.count(t)) ++outside;
        if (c[t]) ++seen;
    }
    EXPECT_EQ(outside, 0);
    EXPECT_GT(seen, nucleus * 9 / 10);  // nearly all of the nucleus shows up
}

TEST(RuntimeSampler, MinPDropsTokensBelowAFractionOfTheMax) {
    const std::vector<double> probs{0.5, 0.3, 0.15, 0.05};
    SamplingParams p;
    p.temperature = 1.f;
    p.min_p = 0.35f;  // threshold 0.175: {0, 1}
    const auto c = draw(logits_of(probs), p, 9, 10000);
    EXPECT_EQ(c[2] + c[3], 0);
    EXPECT_NEAR(c[0] / 10000.0, 0.5 / 0.8, 0.02);
}

TEST(RuntimeSampler, LogprobsAreTheLogSoftmaxOfRawLogits) {
    const std::vector<float> l{1.f, 4.f, 2.f, -3.f, 3.5f};
    double z = 0;
    for (float x : l) z += std::exp(double(x));
    SamplingParams p;
    p.temperature = 0.3f;  // sampling temperature must not change the reported logprobs
    p.logprobs = 3;
    Sampler s;
    Rng rng(1);
    Sample out;
    s.sample(l.data(), 5, p, rng, out);
    EXPECT_NEAR(out.logprob, l[out.token] - std::log(z), 1e-5);
    ASSERT_EQ(out.n_top, 3);
    EXPECT_EQ(out.top_ids[0], 1);
    EXPECT_EQ(out.top_ids[1], 4);
    EXPECT_EQ(out.top_ids[2], 2);
    for (int i = 0; i < 3; ++i) EXPECT_NEAR(out.top_logprobs[i], l[out.top_ids[i]] - std::log(z), 1e-5);
    p.logprobs = 20;  // more than the vocabulary: clipped
    s.sample(l.data(), 5, p, rng, out);
    EXPECT_EQ(out.n_top, 5);
}

}  // namespace
}  // namespace ms
