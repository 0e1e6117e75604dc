// The optimised paged, batched forward pass against the naive reference in model_test_util.h, on synthetic
// checkpoints: whole-prompt eval, chunked prefill interleaved across sequences in shared steps, decode, shuffled
// block tables, freed sliding-window blocks, and bf16 KV.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

#include "common/error.h"
#include "model/model_handle.h"
#include "model_test_util.h"

using ms_test::TempDir;

namespace {

float max_abs_diff(const float *a, const float *b, size_t n) {
    float d = 0;
    for (size_t i = 0; i < n; ++i) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

std::vector<int32_t> random_tokens(int n, int vocab, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<int32_t> t(n);
    for (auto &x : t) x = int32_t(rng() % uint32_t(vocab));
    return t;
}

// A miniature block manager: per-sequence block tables over a shuffled pool of block ids.
struct PagedRun {
    const ms::Model &model;
    ms::KvStorage kv;
    std::vector<float> k32[ms::kNumKvGroups], v32[ms::kNumKvGroups];
    std::vector<uint16_t> k16[ms::kNumKvGroups], v16[ms::kNumKvGroups];
    std::vector<int32_t> free_ids[ms::kNumKvGroups];

    PagedRun(const ms::Model &m, int block_size, int blocks, bool bf16, uint32_t seed) : model(m) {
        ms::KvSpec spec = m.kv_spec();
        kv.block_size = block_size;
        kv.kv_dim = spec.kv_dim;
        kv.bf16 = bf16;
        std::mt19937 rng(seed);
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            kv.layers_in_group[g] = spec.layers_in_group[g];
            if (!spec.layers_in_group[g]) continue;
            kv.num_blocks[g] = blocks;
            size_t n = size_t(blocks) * spec.layers_in_group[g] * block_size * spec.kv_dim;
            if (bf16) {
                k16[g].assign(n, 0x7fc0);  // NaN: reading an unwritten slot would poison the result
                v16[g].assign(n, 0x7fc0);
                kv.k[g] = k16[g].data();
                kv.v[g] = v16[g].data();
            } else {
                k32[g].assign(n, NAN);
                v32[g].assign(n, NAN);
                kv.k[g] = k32[g].data();
                kv.v[g] = v32[g].data();
            }
            free_ids[g].resize(blocks);
            std::iota(free_ids[g].begin(), free_ids[g].end(), 0);
            std::shuffle(free_ids[g].begin(), free_ids[g].end(), rng);
        }
    }
};

struct Seq {
    std::vector<int32_t> tokens;
    int done = 0;  // positions already in the cache
    std::vector<int32_t> table[ms::kNumKvGroups];
};

void ensure_blocks(PagedRun &run, Seq &s, int upto) {
    for (int g = 0; g < ms::kNumKvGroups; ++g) {
        if (!run.kv.layers_in_group[g]) continue;
        while (int(s.table[g].size()) * run.kv.block_size < upto) {
            ASSERT_FALSE(run.free_ids[g].empty());
            s.table[g].push_back(run.free_ids[g].back());
            run.free_ids[g].pop_back();
        }
    }
}

// Frees (sets to -1, and poisons) sliding-group blocks wholly before the window of the next chunk.
void free_out_of_window(PagedRun &run, Seq &s, int window) {
    const int g = ms::kSlidingGroup;
    if (!run.kv.layers_in_group[g]) return;
    const int bs = run.kv.block_size;
    const int oldest_needed = s.done - window + 1;
    for (int b = 0; b < int(s.table[g].size()); ++b) {
        if ((b + 1) * bs <= oldest_needed && s.table[g][b] >= 0) {
            run.free_ids[g].insert(run.free_ids[g].begin(), s.table[g][b]);
            s.table[g][b] = -1;
        }
    }
}

class SelfCheck : public ::testing::Test {
  protected:
    static void SetUpTestSuite() {
        dir_ = new TempDir();
        ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
        spec.seed = 7;
        spec.sliding_window = 8;  // small window so short sequences exercise it
        ms::write_synthetic_checkpoint(spec, dir_->sub("w8"));
    }
    static void TearDownTestSuite() {
        delete dir_;
        dir_ = nullptr;
    }
    static TempDir *dir_;
};
TempDir *SelfCheck::dir_ = nullptr;

TEST_F(SelfCheck, EvalMatchesNaiveReference) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    const int V = model->vocab_size();
    auto tokens = random_tokens(24, V, 3);
    ms_model handle{std::move(model)};
    std::vector<float> logits(tokens.size() * V);
    ASSERT_EQ(ms_model_eval(&handle, tokens.data(), int(tokens.size()), logits.data()), MS_OK) << ms_last_error();
    ms_test::NaiveGptOss naive(*handle.model);
    std::vector<float> ref = naive.run(tokens);
    float spread = *std::max_element(ref.begin(), ref.end()) - *std::min_element(ref.begin(), ref.end());
    EXPECT_GT(spread, 1.0f) << "synthetic logits should not be flat";
    // fp32 everywhere; the reference sums in double. 1e-3 absolute on logits of magnitude ~1-10.
    EXPECT_LT(max_abs_diff(logits.data(), ref.data(), logits.size()), 1e-3f);
    for (float f : logits) ASSERT_TRUE(std::isfinite(f));
}

void run_interleaved(const ms::Model &model, bool bf16, float tol, bool free_sliding) {
    const int V = model.vocab_size();
    const int window = model.config().sliding_window;
    PagedRun run(model, 4, 64, bf16, 11);
    std::vector<Seq> seqs(3);
    seqs[0].tokens = random_tokens(21, V, 21);
    seqs[1].tokens = random_tokens(13, V, 22);
    seqs[2].tokens = random_tokens(30, V, 23);
    // Expected: each sequence alone through the naive reference.
    ms_test::NaiveGptOss naive(model, bf16);
    std::vector<std::vector<float>> ref;
    for (auto &s : seqs) ref.push_back(naive.run(s.tokens));
    std::mt19937 rng(5);
    int steps = 0;
    for (;;) {
        std::vector<ms::ForwardSeq> batch;
        std::vector<int> which;
        for (int i = 0; i < 3; ++i) {
            Seq &s = seqs[i];
            if (s.done >= int(s.tokens.size())) continue;
            if (rng() % 4 == 0) continue;  // sits this step out
            int n = 1 + int(rng() % 7);
            n = std::min(n, int(s.tokens.size()) - s.done);
            if (free_sliding) free_out_of_window(run, s, window);
            ensure_blocks(run, s, s.done + n);
            ms::ForwardSeq f;
            f.tokens = s.tokens.data() + s.done;
            f.n_tokens = n;
            f.start_pos = s.done;
            for (int g = 0; g < ms::kNumKvGroups; ++g) {
                f.block_table[g] = s.table[g].data();
                f.n_blocks[g] = int(s.table[g].size());
            }
            f.want_logits = rng() % 3 != 0;
            batch.push_back(f);
            which.push_back(i);
        }
        if (batch.empty()) {
            bool all_done = true;
            for (auto &s : seqs) all_done &= s.done >= int(s.tokens.size());
            if (all_done) break;
            continue;
        }
        int n_logits = 0;
        for (auto &f : batch) n_logits += f.want_logits;
        std::vector<float> logits(size_t(n_logits) * V);
        const_cast<ms::Model &>(model).forward(batch.data(), int(batch.size()), run.kv, logits.data());
        int row = 0;
        for (size_t b = 0; b < batch.size(); ++b) {
            Seq &s = seqs[which[b]];
            const int last = s.done + batch[b].n_tokens - 1;
            if (batch[b].want_logits) {
                float d = max_abs_diff(logits.data() + int64_t(row) * V, ref[which[b]].data() + int64_t(last) * V, V);
                EXPECT_LT(d, tol) << "seq " << which[b] << " position " << last << " step " << steps;
                ++row;
            }
            s.done += batch[b].n_tokens;
        }
        ++steps;
    }
    EXPECT_GT(steps, 5);
}

TEST_F(SelfCheck, PagedInterleavedChunksMatchReferenceFp32) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    run_interleaved(*model, false, 1e-3f, false);
}

TEST_F(SelfCheck, FreedSlidingBlocksAreNeverRead) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    run_interleaved(*model, false, 1e-3f, true);
}

TEST_F(SelfCheck, PagedBf16KvMatchesBf16Reference) {
    auto model = ms_test::load_model(dir_->sub("w8"), 1);
    // The reference rounds its K/V to bf16 the same way, so the fp32 tolerance holds.
    run_interleaved(*model, true, 1e-3f, true);
}

// The same decode token alone and inside a batch gives bit-identical logits (fixed accumulation order).
void expect_batching_does_not_change_results(ms::Model *model) {
    const int V = model->vocab_size();
    auto prompt = random_tokens(10, V, 9);
    std::vector<float> alone(V), batched(size_t(3) * V);
    for (int variant = 0; variant < 2; ++variant) {
        PagedRun run(*model, 4, 64, false, 3);
        std::vector<Seq> seqs(3);
        for (int i = 0; i < 3; ++i) seqs[i].tokens = i == 0 ? prompt : random_tokens(10, V, 100 + i);
        int n = variant == 0 ? 1 : 3;
        std::vector<ms::ForwardSeq> batch;
        for (int i = 0; i < n; ++i) {
            ensure_blocks(run, seqs[i], 10);
            ms::ForwardSeq f;
            f.tokens = seqs[i].tokens.data();
            f.n_tokens = 10;
            for (int g = 0; g < ms::kNumKvGroups; ++g) {
                f.block_table[g] = seqs[i].table[g].data();
                f.n_blocks[g] = int(seqs[i].table[g].size());
            }
            batch.push_back(f);
        }
        model->forward(batch.data(), n, run.kv, variant == 0 ? alone.data() : batched.data());
    }
    EXPECT_EQ(0.0f, max_abs_diff(alone.data(), batched.data(), V));
}

TEST_F(SelfCheck, BatchingDoesNotChangeResults) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    expect_batching_does_not_change_results(model.get());
}

// q8 activations in every step (threshold 1): each token's int8 inputs and integer sums are its own, so batching
// still changes nothing.
TEST_F(SelfCheck, Q8BatchingDoesNotChangeResults) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    ASSERT_TRUE(model->set_q8_activations(true, 1));
    expect_batching_does_not_change_results(model.get());
}

// The paged, interleaved, chunked run with q8 activations in every step, against the fp32 naive reference: within
// the q8 mode's logit tolerance (test_model_q8.cc).
TEST_F(SelfCheck, Q8PagedInterleavedChunksStayNearReference) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    ASSERT_TRUE(model->set_q8_activations(true, 1));
    run_interleaved(*model, false, 0.5f, true);
}

TEST_F(SelfCheck, RejectsBadSteps) {
    auto model = ms_test::load_model(dir_->sub("w8"));
    PagedRun run(*model, 4, 8, false, 1);
    std::vector<int32_t> toks = {1, 2, 3};
    std::vector<int32_t> table = {0};
    ms::ForwardSeq f;
    f.tokens = toks.data();
    f.n_tokens = 3;
    for (int g = 0; g < ms::kNumKvGroups; ++g) {
        f.block_table[g] = table.data();
        f.n_blocks[g] = 1;
    }
    std::vector<float> logits(model->vocab_size());
    toks[1] = model->vocab_size();
    try {
        model->forward(&f, 1, run.kv, logits.data());
        FAIL() << "token outside the vocabulary accepted";
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
        EXPECT_NE(std::string(e.what()).find("outside the vocabulary"), std::string::npos);
    }
    toks[1] = 2;
    f.start_pos = 2;  // positions 2..4 need 2 blocks of 4
    EXPECT_THROW(model->forward(&f, 1, run.kv, logits.data()), ms::Error);
}

}  // namespace
