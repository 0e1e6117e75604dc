// The opt-in q8 activation mode (int8 MXFP4 expert inputs, cpu/matmul_mxfp4_q8.h) at model level, on the
// checkpoints of the transformers reference vectors (regenerated locally, byte-identical to the ones the vectors were
// made from): logits within a stated distance of the fp32 mode and of transformers, greedy choices equal wherever the
// reference's top-2 margin is clear, the same through the paged decode path (one token per step), and steps below
// the mode's threshold running exactly the fp32 path.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <numeric>
#include <tuple>

#include "common/error.h"
#include "cpu/matmul_f16dot.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "model/model_handle.h"
#include "model_test_util.h"

namespace {

// Distance of q8 logits (spread ~18 on these random-weight checkpoints) from the fp32 mode's. Each expert input is
// rounded to int8 per 32-block (|error| <= half a step, max|x| / 254: about 4x the noise of bf16 rounding), which
// through the layers moves logits by a few hundredths on average; where a token's router scores are near a tie the
// noise can also swap one of its experts, which moves that position's logits by up to a few units. Observed on the
// AVX2 development machine (2026-12-06; scalar and SIMD kernels give identical results): max 0.52 / 2.32 / 2.23 and
// mean 0.039 / 0.052 / 0.036 for tiny-1shard / tiny-window-3shards / wide-2shards; the same inputs with fp32
// experts fed int8-rounded activations (fake quantization) gave 0.50 / 1.93 / 1.27 and 0.039 / 0.052 / 0.036, so
// the error is the rounding, not the kernel. Bounds: max 3.0, mean 0.08.
// Greedy tokens: the reference continuation must be reproduced (teacher-forced and through the paged decode) at every
// step whose reference top-2 margin exceeds kQ8GreedyMargin (one step of tiny-window-3shards with margin 0.16 flips),
// and the argmax must equal fp32's at every position whose fp32 margin exceeds kQ8PositionMargin (the largest fp32
// margin seen flipping was 0.99, at a prompt position with an expert swap).
constexpr float kQ8MaxTolerance = 3.0f;
constexpr float kQ8MeanTolerance = 0.08f;
// q8all (the dense projections on int8 too, their weights rounded to int8 per 32-block): observed max 0.78 / 2.42 /
// 2.45, mean 0.049 / 0.051 / 0.063; the greedy criteria below hold unchanged.
constexpr float kQ8DenseMaxTolerance = 4.0f;
constexpr float kQ8DenseMeanTolerance = 0.12f;
constexpr float kQ8GreedyMargin = 0.25f;
constexpr float kQ8PositionMargin = 1.5f;

std::vector<int32_t> ints(const ms::Json &a) {
    std::vector<int32_t> v;
    for (const auto &x : a.items()) v.push_back(int32_t(x.as_number()));
    return v;
}

int argmax(const float *row, int V) { return int(std::max_element(row, row + V) - row); }

// (vector name, dense projections on int8 too: the q8all mode)
class Q8Vectors : public ::testing::TestWithParam<std::tuple<const char *, bool>> {};

TEST_P(Q8Vectors, LogitsNearFp32AndGreedyTokensMatch) {
    const char *name = std::get<0>(GetParam());
    const bool dense = std::get<1>(GetParam());
    const float max_tol = dense ? kQ8DenseMaxTolerance : kQ8MaxTolerance, mean_tol = dense ? kQ8DenseMeanTolerance : kQ8MeanTolerance;
    const std::string path = std::string(ENGINE_TESTDATA_DIR) + "/reference/" + name + ".json";
    const ms::Json doc = ms::Json::parse(ms::read_text_file(path), path);
    ms_test::TempDir tmp;
    std::vector<std::string> args;
    for (const auto &a : doc.find("make_checkpoint_args")->items()) args.push_back(a.as_string());
    const std::string dir = tmp.sub("ckpt");
    ms::write_synthetic_checkpoint(ms::synthetic_spec_from_args(args), dir);

    ms_model fp32{ms_test::load_model(dir, 2)};
    ms_model q8{ms_test::load_model(dir, 2)};
    fp32.model->set_q8_activations(false);
    ASSERT_TRUE(q8.model->set_q8_activations(true, 1, dense));  // every step, however small, runs int8 experts
    ASSERT_EQ(q8.model->q8_dense(), dense);
    const int V = q8.model->vocab_size();
    const std::vector<int32_t> prompt = ints(*doc.find("prompt")), generated = ints(*doc.find("generated"));
    std::vector<float> margins;
    for (const auto &m : doc.find("greedy_margins")->items()) margins.push_back(float(m.as_number()));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), generated.begin(), generated.end() - 1);

    std::vector<float> l32(seq.size() * size_t(V)), l8(l32.size());
    ASSERT_EQ(ms_model_eval(&fp32, seq.data(), int(seq.size()), l32.data()), MS_OK) << ms_last_error();
    ASSERT_EQ(ms_model_eval(&q8, seq.data(), int(seq.size()), l8.data()), MS_OK) << ms_last_error();

    // Every logit at every position, against the fp32 mode.
    float worst = 0;
    double sum = 0;
    for (size_t i = 0; i < l8.size(); ++i) {
        ASSERT_TRUE(std::isfinite(l8[i]));
        const float d = std::fabs(l8[i] - l32[i]);
        worst = std::max(worst, d);
        sum += d;
    }
    const double mean = sum / double(l8.size());
    EXPECT_GT(worst, 0.0f) << "q8 mode did not change anything: is it running?";
    EXPECT_LT(worst, max_tol) << "max |q8 - fp32 logit|";
    EXPECT_LT(mean, mean_tol) << "mean |q8 - fp32 logit|";

    // Against transformers on the logits the vectors hold (top-20 and probes).
    float worst_ref = 0;
    const auto &positions = doc.find("positions")->items();
    const std::vector<int32_t> probes = ints(*doc.find("probe_ids"));
    for (size_t p = 0; p < seq.size(); ++p) {
        const float *row = l8.data() + p * V;
        const auto &top_ids = positions[p].find("top_ids")->items(), &top_logits = positions[p].find("top_logits")->items();
        for (size_t i = 0; i < top_ids.size(); ++i)
            worst_ref = std::max(worst_ref, std::fabs(row[int(top_ids[i].as_number())] - float(top_logits[i].as_number())));
        const auto &probe_logits = positions[p].find("probe_logits")->items();
        for (size_t i = 0; i < probes.size(); ++i)
            worst_ref = std::max(worst_ref, std::fabs(row[probes[i]] - float(probe_logits[i].as_number())));
    }
    EXPECT_LT(worst_ref, max_tol) << "max |q8 logit - transformers|";
    const int agree_ref = [&] {
        int n = 0;
        for (size_t i = 0; i < generated.size(); ++i) n += argmax(l8.data() + (prompt.size() - 1 + i) * V, V) == generated[i];
        return n;
    }();

    // Greedy choices (teacher-forced) against the reference continuation, and against the fp32 mode at every
    // position where fp32's top-2 margin is clear.
    int checked = 0, agree = 0, compared = 0;
    float worst_margin = 0;  // largest fp32 top-2 margin at a position where q8 picks another token
    for (size_t i = 0; i < generated.size(); ++i) {
        if (margins[i] <= kQ8GreedyMargin) continue;
        EXPECT_EQ(argmax(l8.data() + (prompt.size() - 1 + i) * V, V), generated[i]) << "greedy step " << i;
        ++checked;
    }
    EXPECT_GT(checked, int(generated.size()) / 2);
    for (size_t p = 0; p < seq.size(); ++p) {
        std::vector<float> row(l32.begin() + p * V, l32.begin() + (p + 1) * V);
        std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
        const bool same = argmax(l8.data() + p * V, V) == argmax(l32.data() + p * V, V);
        if (!same) worst_margin = std::max(worst_margin, row[0] - row[1]);
        if (row[0] - row[1] <= kQ8PositionMargin) continue;
        ++compared;
        agree += same;
    }
    EXPECT_EQ(agree, compared) << "positions where q8 and fp32 pick different tokens despite a clear fp32 margin";
    std::printf("[ q8%s ] %s: %zu positions x %d logits: max |q8 - fp32| %.3e, mean %.3e; max |q8 - transformers| %.3e; "
                "greedy equal at %d/%zu reference steps (all with margin > %.2f: %d) and %d/%d positions with fp32 margin > "
                "%.2f; largest fp32 margin where the argmax differs %.3f\n",
                dense ? "all" : "", name, seq.size(), V, worst, mean, worst_ref, agree_ref, generated.size(), kQ8GreedyMargin, checked, agree,
                compared, kQ8PositionMargin, worst_margin);

    // The serving path: prefill in chunks of 64, then one decode token per step (T = 1) through a paged cache.
    ms::Model &m = *q8.model;
    const ms::KvSpec spec = m.kv_spec();
    const int bs = 16;
    const int n_blocks = int(seq.size() + 1) / bs + 2;
    ms::KvStorage kv;
    kv.block_size = bs;
    kv.kv_dim = spec.kv_dim;
    std::vector<float> store[ms::kNumKvGroups][2];
    std::vector<int32_t> table[ms::kNumKvGroups];
    for (int g = 0; g < ms::kNumKvGroups; ++g) {
        kv.layers_in_group[g] = spec.layers_in_group[g];
        if (!spec.layers_in_group[g]) continue;
        kv.num_blocks[g] = n_blocks;
        const size_t n = size_t(n_blocks) * spec.layers_in_group[g] * bs * spec.kv_dim;
        store[g][0].assign(n, NAN);
        store[g][1].assign(n, NAN);
        kv.k[g] = store[g][0].data();
        kv.v[g] = store[g][1].data();
        for (int b = 0; b < n_blocks; ++b) table[g].push_back(n_blocks - 1 - b);
    }
    std::vector<int32_t> tokens = prompt;
    std::vector<float> row(V);
    int pos = 0, decoded = 0;
    for (size_t step = 0; step < generated.size(); ++step) {
        for (int chunk = 0; pos < int(tokens.size()); pos += chunk) {
            chunk = std::min<int>(step == 0 ? 64 : 1, int(tokens.size()) - pos);
            ms::ForwardSeq f;
            f.tokens = tokens.data() + pos;
            f.n_tokens = chunk;
            f.start_pos = pos;
            f.want_logits = pos + chunk == int(tokens.size());
            for (int g = 0; g < ms::kNumKvGroups; ++g) {
                f.block_table[g] = table[g].data();
                f.n_blocks[g] = (pos + chunk + bs - 1) / bs;
            }
            m.forward(&f, 1, kv, row.data());
        }
        const int next = argmax(row.data(), V);
        if (next != generated[step] && margins[step] <= kQ8GreedyMargin) break;  // a near-tie went the other way:
                                                                                // past here continuations may differ
        ASSERT_EQ(next, generated[step]) << "paged q8 greedy decode diverged at step " << step;
        tokens.push_back(next);
        ++decoded;
    }
    EXPECT_GT(decoded, 0);
}

INSTANTIATE_TEST_SUITE_P(Vectors, Q8Vectors,
                         ::testing::Combine(::testing::Values("tiny-1shard", "tiny-window-3shards", "wide-2shards"),
                                            ::testing::Bool()));

TEST(Q8Mode, StepsBelowTheThresholdRunTheFp32Path) {
    ms_test::TempDir tmp;
    ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
    spec.seed = 5;
    ms::write_synthetic_checkpoint(spec, tmp.sub("ckpt"));
    ms_model fp32{ms_test::load_model(tmp.sub("ckpt"), 2)};
    ms_model q8{ms_test::load_model(tmp.sub("ckpt"), 2)};
    const int V = fp32.model->vocab_size();
    std::vector<int32_t> tokens(12);
    for (int i = 0; i < 12; ++i) tokens[i] = (i * 37 + 11) % V;
    std::vector<float> a(tokens.size() * V), b(a.size());
    ASSERT_EQ(ms_model_eval(&fp32, tokens.data(), int(tokens.size()), a.data()), MS_OK);
    q8.model->set_q8_activations(true, 13);  // one step of 12 tokens: below the threshold
    ASSERT_EQ(ms_model_eval(&q8, tokens.data(), int(tokens.size()), b.data()), MS_OK);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
    q8.model->set_q8_activations(true, 12);  // at the threshold: int8 experts
    ASSERT_EQ(ms_model_eval(&q8, tokens.data(), int(tokens.size()), b.data()), MS_OK);
    EXPECT_NE(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(Q8Mode, UnknownActivationSettingsAreNamedErrorsNotSilentFp32) {
    ms_test::TempDir tmp;
    ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
    spec.seed = 6;
    ms::write_synthetic_checkpoint(spec, tmp.sub("ckpt"));
    const auto expect_rejected = [&](const char *act, const char *min, const char *needle) {
        setenv("MS_ACTIVATIONS", act, 1);
        if (min) setenv("MS_Q8_MIN_TOKENS", min, 1);
        try {
            ms_test::load_model(tmp.sub("ckpt"), 1);
            ADD_FAILURE() << "MS_ACTIVATIONS=" << act << " loaded";
        } catch (const ms::Error &e) {
            EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
        unsetenv("MS_ACTIVATIONS");
        unsetenv("MS_Q8_MIN_TOKENS");
    };
    expect_rejected("int8", nullptr, "MS_ACTIVATIONS must be fp32, fp16, q8 or q8all");
    expect_rejected("q8", "eight", "MS_Q8_MIN_TOKENS must be an integer");
    expect_rejected("q8", "-3", "MS_Q8_MIN_TOKENS must be an integer");
    setenv("MS_F16_MIN_TOKENS", "many", 1);
    expect_rejected("fp16", nullptr, "MS_F16_MIN_TOKENS must be an integer");
    unsetenv("MS_F16_MIN_TOKENS");
    // What the environment selects, as loaded (ms_test::load_model would turn fp16 off again).
    const auto load_as_configured = [&] {
        ms_model_params p;
        ms_model_params_default(&p);
        const std::string dir = tmp.sub("ckpt");
        p.path = dir.c_str();
        p.n_threads = 1;
        return ms::Model::load(p);
    };
    const bool can_f16 = ms::f16_dot_supported() && ms::active_simd() == ms::Simd::Avx512;
    // Unset: fp16 on every step where the CPU can run it, else fp32.
    {
        auto m = load_as_configured();
        EXPECT_EQ(m->f16_activations(), can_f16);
        EXPECT_EQ(m->f16_min_tokens(), 1);
        EXPECT_FALSE(m->q8_activations());
    }
    setenv("MS_ACTIVATIONS", "fp32", 1);
    EXPECT_FALSE(load_as_configured()->f16_activations());
    // fp16 asked for by name, with a threshold.
    setenv("MS_ACTIVATIONS", "fp16", 1);
    setenv("MS_F16_MIN_TOKENS", "6", 1);
    {
        auto m = load_as_configured();
        EXPECT_EQ(m->f16_activations(), can_f16);
        EXPECT_EQ(m->f16_min_tokens(), 6);
    }
    unsetenv("MS_F16_MIN_TOKENS");
    // q8 replaces the fp16 default.
    setenv("MS_ACTIVATIONS", "q8", 1);
    {
        auto m = load_as_configured();
        EXPECT_FALSE(m->f16_activations());
        EXPECT_TRUE(m->q8_activations());
    }
    unsetenv("MS_ACTIVATIONS");
}

}  // namespace
