// Checkpoint validation: every malformed input is an ms::Error naming the file and (where one is involved) the
// tensor, never a crash. Also a fuzz-style sweep of random and mutated headers (the libFuzzer target in
// fuzz/fuzz_safetensors_header.cc runs the same entry point for longer).
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

#include "common/error.h"
#include "cpu/simd.h"
#include "io/safetensors.h"
#include "model_test_util.h"

using ms_test::TempDir;

namespace {

std::string read_file(const std::string &p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void write_file(const std::string &p, const std::string &s) {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << s;
}

// A safetensors image from a header text and a data size.
std::string image(const std::string &header, size_t data_bytes) {
    std::string s(8, '\0');
    uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) s[i] = char(n >> (8 * i));
    return s + header + std::string(data_bytes, '\x11');
}

struct Failure {
    ms_status status = MS_OK;
    std::string message;
};

Failure load_failure(const std::string &dir) {
    Failure f;
    try {
        ms_test::load_model(dir, 1);
    } catch (const ms::Error &e) {
        f.status = e.status();
        f.message = e.what();
    }
    return f;
}

class Loader : public ::testing::Test {
  protected:
    void SetUp() override {
        ms::SyntheticSpec spec = ms::synthetic_preset("tiny");
        spec.layers = 2;
        ms::write_synthetic_checkpoint(spec, dir_.sub("one"));
        spec.shards = 3;
        ms::write_synthetic_checkpoint(spec, dir_.sub("three"));
        file_ = dir_.sub("one") + "/model.safetensors";
        original_ = read_file(file_);
    }
    // Replaces the header of the single-shard checkpoint, keeping its data.
    void set_header(const std::string &header) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(original_[i]);
        write_file(file_, image(header, 0) + original_.substr(8 + n));
    }
    std::string header() const {
        uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(original_[i]);
        return original_.substr(8, n);
    }
    TempDir dir_;
    std::string file_, original_;
};

TEST_F(Loader, LoadsSingleAndShardedCheckpoints) {
    auto one = ms_test::load_model(dir_.sub("one"), 1);
    auto three = ms_test::load_model(dir_.sub("three"), 1);
    EXPECT_EQ(one->config().num_hidden_layers, 2);
    EXPECT_EQ(one->weight_bytes(), three->weight_bytes());
    ms::KvSpec spec = one->kv_spec();
    EXPECT_EQ(spec.layer_group[0], ms::kSlidingGroup);
    EXPECT_EQ(spec.layer_group[1], ms::kFullGroup);
    EXPECT_EQ(spec.sliding_window, 128);
    EXPECT_EQ(one->kv_block_bytes(ms::kFullGroup, 16, true), size_t(2 * 1 * 16 * 32 * 2));
}

TEST_F(Loader, TruncatedFile) {
    write_file(file_, original_.substr(0, original_.size() - 100));
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(file_), std::string::npos) << f.message;
    EXPECT_NE(f.message.find("tensor '"), std::string::npos) << f.message;
    EXPECT_NE(f.message.find("run past the end"), std::string::npos) << f.message;
}

TEST_F(Loader, TooShortAndBadHeaderLength) {
    write_file(file_, "abc");
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(file_ + ": file is 3 bytes"), std::string::npos) << f.message;
    std::string bad = original_;
    bad[5] = '\x7f';  // header length in the petabytes
    write_file(file_, bad);
    f = load_failure(dir_.sub("one"));
    EXPECT_NE(f.message.find(file_ + ": header length"), std::string::npos) << f.message;
    bad = original_;
    bad[3] = '\x01';  // 16 MiB more than the file holds
    write_file(file_, bad);
    f = load_failure(dir_.sub("one"));
    EXPECT_NE(f.message.find("runs past the end of the file"), std::string::npos) << f.message;
}

TEST_F(Loader, BadJsonHeader) {
    std::string h = header();
    const size_t colon = h.find(':');
    h[colon] = '#';
    set_header(h);
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(file_ + " (safetensors header): invalid JSON at byte " + std::to_string(colon)), std::string::npos)
        << f.message;
}

TEST_F(Loader, MissingTensor) {
    std::string h = header();
    size_t at = h.find("\"model.layers.1.self_attn.sinks\"");
    ASSERT_NE(at, std::string::npos);
    h.replace(at, 32, "\"model.layers.1.self_attn.sunks\"");
    set_header(h);
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(dir_.sub("one")), std::string::npos) << f.message;
    EXPECT_NE(f.message.find("tensor 'model.layers.1.self_attn.sinks' is missing"), std::string::npos) << f.message;
}

TEST_F(Loader, WrongShape) {
    std::string h = header();
    const std::string key = "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[64]";
    size_t at = h.find(key);
    ASSERT_NE(at, std::string::npos);
    h.replace(at, key.size(), "\"model.norm.weight\":{\"dtype\":\"BF16\",\"shape\":[2,32]");
    set_header(h);
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(file_ + ": tensor 'model.norm.weight' has shape [2, 32], expected [64]"), std::string::npos)
        << f.message;
}

TEST_F(Loader, WrongDtype) {
    std::string h = header();
    const std::string key = "\"model.norm.weight\":{\"dtype\":\"BF16\"";
    size_t at = h.find(key);
    ASSERT_NE(at, std::string::npos);
    h.replace(at, key.size(), "\"model.norm.weight\":{\"dtype\":\"F16\" ");
    set_header(h);
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(file_ + ": tensor 'model.norm.weight' has dtype F16, expected BF16"), std::string::npos) << f.message;
    h.replace(at, key.size(), "\"model.norm.weight\":{\"dtype\":\"I64\" ");
    set_header(h);
    f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_UNSUPPORTED);
    EXPECT_NE(f.message.find("tensor 'model.norm.weight': unsupported dtype I64"), std::string::npos) << f.message;
}

TEST_F(Loader, OffsetsOutOfRangeOrOverlapping) {
    const std::string data(64, '\0');
    const std::string path = dir_.sub("x.safetensors");
    auto err = [&](const std::string &header, size_t data_bytes) {
        std::string img = image(header, data_bytes);
        try {
            ms::parse_safetensors(reinterpret_cast<const uint8_t *>(img.data()), img.size(), path);
        } catch (const ms::Error &e) {
            return std::string(e.what());
        }
        return std::string();
    };
    EXPECT_NE(err(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[60,68]}})", 64).find(path + ": tensor 'a': data_offsets [60, 68) run past"),
              std::string::npos);
    EXPECT_NE(err(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[8,4]}})", 64).find("tensor 'a': data_offsets must be"), std::string::npos);
    EXPECT_NE(err(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 64).find("tensor 'a': holds 8 bytes but F32 [3] needs 12"),
              std::string::npos);
    EXPECT_NE(err(R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[8],"data_offsets":[4,12]}})", 64)
                  .find("tensor 'b': data overlaps tensor 'a'"),
              std::string::npos);
    EXPECT_NE(err(R"({"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,8]}})", 64).find("tensor 'a': shape entries"), std::string::npos);
    EXPECT_NE(err(R"({"a":{"dtype":"U8","shape":[1099511627776,1099511627776],"data_offsets":[0,8]}})", 64).find("tensor 'a'"),
              std::string::npos);
    EXPECT_NE(err(R"({"a":[]})", 64).find("tensor 'a': entry is not an object"), std::string::npos);
    EXPECT_NE(err(R"([1])", 0).find("header is not a JSON object"), std::string::npos);
    EXPECT_EQ(err(R"({"__metadata__":{"k":"v"},"a":{"dtype":"U8","shape":[2,4],"data_offsets":[0,8]}})", 8), "");
}

TEST_F(Loader, MissingShard) {
    std::remove((dir_.sub("three") + "/model-00002-of-00003.safetensors").c_str());
    Failure f = load_failure(dir_.sub("three"));
    EXPECT_EQ(f.status, MS_ERR_IO);
    EXPECT_NE(f.message.find("model-00002-of-00003.safetensors (holding tensor 'model.layers."), std::string::npos) << f.message;
    EXPECT_NE(f.message.find("model.safetensors.index.json"), std::string::npos) << f.message;
}

TEST_F(Loader, IndexAndShardDisagree) {
    const std::string index = dir_.sub("three") + "/model.safetensors.index.json";
    std::string text = read_file(index);
    const std::string from = "\"model.norm.weight\": \"model-00001", to = "\"model.norm.weight\": \"model-00003";
    size_t at = text.find(from);
    ASSERT_NE(at, std::string::npos);
    text.replace(at, from.size(), to);
    write_file(index, text);
    Failure f = load_failure(dir_.sub("three"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find("tensor 'model.norm.weight' is not listed for this shard"), std::string::npos) << f.message;
}

TEST_F(Loader, ConfigErrorsNameTheField) {
    const std::string cfg = dir_.sub("one") + "/config.json";
    std::string text = read_file(cfg);
    size_t at = text.find("\"hidden_size\": 64");
    ASSERT_NE(at, std::string::npos);
    write_file(cfg, text.substr(0, at) + "\"hidden_size\": 65" + text.substr(at + 17));
    Failure f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_FORMAT);
    EXPECT_NE(f.message.find(cfg + ": field \"hidden_size\" must be a multiple of 32"), std::string::npos) << f.message;
    write_file(cfg, text.substr(0, at) + "\"hidden_sizes\": 64" + text.substr(at + 17));
    f = load_failure(dir_.sub("one"));
    EXPECT_NE(f.message.find("field \"hidden_size\" is missing"), std::string::npos) << f.message;
    std::remove(cfg.c_str());
    f = load_failure(dir_.sub("one"));
    EXPECT_EQ(f.status, MS_ERR_IO);
    EXPECT_NE(f.message.find(cfg + ": cannot open"), std::string::npos) << f.message;
}

TEST_F(Loader, CApiReportsTheMessage) {
    write_file(file_, original_.substr(0, 20));
    ms_model_params p;
    ms_model_params_default(&p);
    const std::string dir = dir_.sub("one");
    p.path = dir.c_str();
    ms_model *m = reinterpret_cast<ms_model *>(0x1);
    EXPECT_EQ(ms_model_load(&p, &m), MS_ERR_FORMAT);
    EXPECT_EQ(m, nullptr);
    EXPECT_NE(std::string(ms_last_error()).find(file_), std::string::npos);
    p.backend = "tpu";
    EXPECT_EQ(ms_model_load(&p, &m), MS_ERR_INVALID_ARGUMENT);
    EXPECT_EQ(ms_model_load(nullptr, &m), MS_ERR_INVALID_ARGUMENT);
}

TEST_F(Loader, CApiInfoAndProgress) {
    ms_model_params p;
    ms_model_params_default(&p);
    const std::string dir = dir_.sub("three");
    p.path = dir.c_str();
    p.n_threads = 1;
    struct Progress {
        uint64_t last_done = 0, total = 0;
        int calls = 0;
    } prog;
    p.progress = [](void *u, uint64_t done, uint64_t total) {
        auto *pr = static_cast<Progress *>(u);
        pr->last_done = done;
        pr->total = total;
        ++pr->calls;
    };
    p.progress_user = &prog;
    ms_model *m = nullptr;
    ASSERT_EQ(ms_model_load(&p, &m), MS_OK) << ms_last_error();
    ms_model_info info;
    ASSERT_EQ(ms_model_get_info(m, &info), MS_OK);
    EXPECT_STREQ(info.architecture, "gpt_oss");
    EXPECT_STREQ(info.backend, "cpu");
    EXPECT_STREQ(info.simd, ms::simd_name(ms::active_simd()));
    EXPECT_EQ(info.n_layers, 2);
    EXPECT_EQ(info.n_experts, 8);
    EXPECT_EQ(info.n_experts_per_tok, 4);
    EXPECT_EQ(info.hidden_size, 64);
    EXPECT_EQ(info.n_heads, 4);
    EXPECT_EQ(info.n_kv_heads, 2);
    EXPECT_EQ(info.head_dim, 16);
    EXPECT_EQ(info.vocab_size, 1024);
    EXPECT_EQ(info.sliding_window, 128);
    EXPECT_EQ(info.eos_token_id, 1022);
    EXPECT_GT(info.weight_bytes, 100000u);
    EXPECT_GE(prog.calls, 1);
    EXPECT_EQ(prog.last_done, prog.total);
    std::vector<int32_t> toks = {1, 2, 3};
    std::vector<float> logits(3 * 1024);
    EXPECT_EQ(ms_model_eval(m, toks.data(), 3, logits.data()), MS_OK);
    toks[2] = 5000;
    EXPECT_EQ(ms_model_eval(m, toks.data(), 3, logits.data()), MS_ERR_INVALID_ARGUMENT);
    EXPECT_NE(std::string(ms_last_error()).find("token 5000 is outside the vocabulary"), std::string::npos);
    EXPECT_EQ(ms_model_eval(m, toks.data(), 0, logits.data()), MS_ERR_INVALID_ARGUMENT);
    ms_model_free(m);
}

// Random and mutated headers through the same entry point as the libFuzzer target: errors, never crashes.
TEST_F(Loader, FuzzedHeadersNeverCrash) {
    std::mt19937 rng(12345);
    const std::string base = header();
    const std::string data_tail(256, '\x22');
    int rejected = 0;
    const char *tokens[] = {"{", "}", "[", "]", ",", ":", "\"", "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"U8\"", "\"BF16\"",
                            "\"F32\"", "0", "-1", "18446744073709551615", "1e308", "\\u0000", "null", "true"};
    for (int iter = 0; iter < 400; ++iter) {
        std::string h;
        if (iter % 4 == 0) {
            for (int i = 0, n = 1 + int(rng() % 40); i < n; ++i) h += tokens[rng() % (sizeof(tokens) / sizeof(*tokens))];
        } else {
            h = base.substr(0, std::min<size_t>(base.size(), 400 + rng() % 600));
            for (int m = 0, n = 1 + int(rng() % 8); m < n; ++m) {
                size_t at = rng() % h.size();
                switch (rng() % 3) {
                    case 0: h[at] = char(rng()); break;
                    case 1: h.erase(at, 1 + rng() % 5); break;
                    default: h.insert(at, tokens[rng() % (sizeof(tokens) / sizeof(*tokens))]); break;
                }
                if (h.empty()) h = "{";
            }
        }
        std::string img = image(h, rng() % 2 ? data_tail.size() : 0);
        if (iter % 7 == 0) img.resize(rng() % img.size());  // truncations, including inside the length
        try {
            ms::parse_safetensors(reinterpret_cast<const uint8_t *>(img.data()), img.size(), "fuzz.safetensors");
        } catch (const ms::Error &e) {
            ASSERT_NE(std::string(e.what()).find("fuzz.safetensors"), std::string::npos) << e.what();
            ++rejected;
        }
    }
    EXPECT_GT(rejected, 300);
}

// The fuzzer's seed corpus replays here too, so CI exercises the same inputs without clang.
TEST(LoaderFuzzCorpus, SeedsParseOrFailCleanly) {
    const std::string dir = std::string(ENGINE_TESTDATA_DIR) + "/../fuzz/corpus/safetensors_header";
    int files = 0, accepted = 0;
    for (const auto &entry : std::filesystem::directory_iterator(dir)) {
        const std::string bytes = read_file(entry.path().string());
        ++files;
        try {
            auto tensors = ms::parse_safetensors(reinterpret_cast<const uint8_t *>(bytes.data()), bytes.size(), entry.path().string());
            for (const auto &t : tensors)
                ASSERT_LE(t.data + t.nbytes, reinterpret_cast<const uint8_t *>(bytes.data()) + bytes.size());
            ++accepted;
        } catch (const ms::Error &e) {
            EXPECT_NE(std::string(e.what()).find(entry.path().string()), std::string::npos);
        }
    }
    EXPECT_GE(files, 4);
    EXPECT_GE(accepted, 3);  // valid_two_tensors, valid_empty, f32_scalar
}

}  // namespace
