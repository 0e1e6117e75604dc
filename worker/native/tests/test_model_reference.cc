// The CPU forward pass against reference vectors from transformers' GptOssForCausalLM (hack/gpu/make-test-vectors.sh:
// fp32, TF32 off, MXFP4 dequantized exactly). The test regenerates each synthetic checkpoint locally with the same
// make_checkpoint options, checks it is byte-identical to the one the vectors were made from, then compares logits
// at every position (top-20 and 64 probe ids) and the greedy continuation.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <numeric>

#include "common/error.h"
#include "io/json.h"
#include "io/mapped_file.h"
#include "model/model_handle.h"
#include "model_test_util.h"

namespace {

// Absolute tolerance on logits (spread ~18): fp32 on both sides, different summation orders. Observed with AVX-512
// kernels: at most 1.2e-5; the bound leaves room for other kernel sets and compilers.
constexpr float kLogitTolerance = 2e-4f;

std::string fnv1a64_file(const std::string &path) {
    ms::MappedFile f(path);
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < f.size(); ++i) h = (h ^ f.data()[i]) * 0x100000001b3ull;
    char buf[17];
    std::snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)h);
    return buf;
}

std::vector<int32_t> ints(const ms::Json &a) {
    std::vector<int32_t> v;
    for (const auto &x : a.items()) v.push_back(int32_t(x.as_number()));
    return v;
}

class Reference : public ::testing::TestWithParam<const char *> {};

TEST_P(Reference, LogitsAndGreedyMatchTransformers) {
    const std::string path = std::string(ENGINE_TESTDATA_DIR) + "/reference/" + GetParam() + ".json";
    const ms::Json doc = ms::Json::parse(ms::read_text_file(path), path);
    ms_test::TempDir tmp;
    std::vector<std::string> args;
    for (const auto &a : doc.find("make_checkpoint_args")->items()) args.push_back(a.as_string());
    const std::string dir = tmp.sub("ckpt");
    ms::write_synthetic_checkpoint(ms::synthetic_spec_from_args(args), dir);
    for (const auto &[file, hash] : doc.find("files_fnv1a64")->members())
        ASSERT_EQ(fnv1a64_file(dir + "/" + file), hash.as_string()) << file << ": the generator no longer reproduces the checkpoint";

    auto model = ms_test::load_model(dir);
    const int V = model->vocab_size();
    const std::vector<int32_t> prompt = ints(*doc.find("prompt")), generated = ints(*doc.find("generated"));
    const std::vector<int32_t> probes = ints(*doc.find("probe_ids"));
    std::vector<float> margins;
    for (const auto &m : doc.find("greedy_margins")->items()) margins.push_back(float(m.as_number()));
    std::vector<int32_t> seq = prompt;
    seq.insert(seq.end(), generated.begin(), generated.end() - 1);
    const auto &positions = doc.find("positions")->items();
    ASSERT_EQ(positions.size(), seq.size());

    ms_model handle{std::move(model)};
    std::vector<float> logits(seq.size() * size_t(V));
    ASSERT_EQ(ms_model_eval(&handle, seq.data(), int(seq.size()), logits.data()), MS_OK) << ms_last_error();

    float worst = 0;
    for (size_t p = 0; p < seq.size(); ++p) {
        const float *row = logits.data() + p * V;
        const auto &pos = positions[p];
        const auto &top_ids = pos.find("top_ids")->items(), &top_logits = pos.find("top_logits")->items();
        for (size_t i = 0; i < top_ids.size(); ++i)
            worst = std::max(worst, std::fabs(row[int(top_ids[i].as_number())] - float(top_logits[i].as_number())));
        const auto &probe_logits = pos.find("probe_logits")->items();
        for (size_t i = 0; i < probes.size(); ++i)
            worst = std::max(worst, std::fabs(row[probes[i]] - float(probe_logits[i].as_number())));
    }
    EXPECT_LT(worst, kLogitTolerance) << "max |logit - reference| over all positions";
    std::printf("[ reference ] %s: %zu positions, max |logit diff| %.2e\n", GetParam(), seq.size(), worst);

    // Greedy choices at each continuation step (teacher-forced), where the reference's top-2 margin is clear.
    int checked = 0;
    for (size_t i = 0; i < generated.size(); ++i) {
        if (margins[i] <= 2 * kLogitTolerance) continue;
        const float *row = logits.data() + (prompt.size() - 1 + i) * V;
        EXPECT_EQ(int(std::max_element(row, row + V) - row), generated[i]) << "greedy step " << i;
        ++checked;
    }
    EXPECT_GT(checked, int(generated.size()) / 2);

    // The serving path: prefill in chunks of 64, then greedy decode one token per step through the paged cache
    // (block size 16, shuffled block ids, sliding-window blocks freed once out of the window, bf16 off).
    ms::Model &m = *handle.model;
    const ms::KvSpec spec = m.kv_spec();
    const int bs = 16;
    int n_blocks = int(seq.size() + 1) / bs + 2;
    while (std::gcd(n_blocks, 7) != 1) ++n_blocks;  // so b -> (7b + 3) mod n is a permutation
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
        for (int b = 0; b < n_blocks; ++b) table[g].push_back((b * 7 + 3) % n_blocks);  
    }
    std::vector<int32_t> tokens = prompt;
    std::vector<float> row(V);
    int pos = 0;
    for (size_t step = 0; step < generated.size(); ++step) {
        int chunk = 0;
        for (; pos < int(tokens.size()); pos += chunk) {
            chunk = std::min<int>(step == 0 ? 64 : 1, int(tokens.size()) - pos);
            ms::ForwardSeq f;
            f.tokens = tokens.data() + pos;
            f.n_tokens = chunk;
            f.start_pos = pos;
            f.want_logits = pos + chunk == int(tokens.size());
            const int needed_blocks = (pos + chunk + bs - 1) / bs;
            std::vector<int32_t> sliding_view;
            for (int g = 0; g < ms::kNumKvGroups; ++g) {
                f.block_table[g] = table[g].data();
                f.n_blocks[g] = needed_blocks;
            }
            if (spec.layers_in_group[ms::kSlidingGroup]) {
                sliding_view.assign(table[ms::kSlidingGroup].begin(), table[ms::kSlidingGroup].begin() + needed_blocks);
                for (int b = 0; b < needed_blocks; ++b)
                    if ((b + 1) * bs <= pos - spec.sliding_window + 1) sliding_view[b] = -1;  // freed by the runtime
                f.block_table[ms::kSlidingGroup] = sliding_view.data();
            }
            m.forward(&f, 1, kv, row.data());
        }
        const int next = int(std::max_element(row.begin(), row.end()) - row.begin());
        if (margins[step] > 2 * kLogitTolerance) {
            ASSERT_EQ(next, generated[step]) << "paged greedy decode diverged at step " << step;
        } else {
            break;  // a near-tie: past here the continuations may legitimately differ
        }
        tokens.push_back(next);
    }
}

INSTANTIATE_TEST_SUITE_P(Vectors, Reference, ::testing::Values("tiny-1shard", "tiny-window-3shards", "wide-2shards"));

}  // namespace
