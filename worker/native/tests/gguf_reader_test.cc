// GGUF validation: a valid file's metadata and tensors come back exactly; every malformed input is an ms::Error
// naming the file and (where one is involved) the key or tensor, never a crash; truncations and random mutations of
// a valid image never crash (fuzz/fuzz_gguf.cc runs the same entry point for longer under ASan).
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf_writer.h"
#include "model_test_util.h"

using ms_test::GgufWriter;

namespace {

struct Failure {
    ms_status status = MS_OK;
    std::string message;
};

Failure parse_fails(const std::string &img) {
    try {
        ms::gguf::parse(reinterpret_cast<const uint8_t *>(img.data()), img.size(), "test.gguf");
    } catch (const ms::Error &e) {
        return {e.status(), e.what()};
    }
    return {};
}

GgufWriter valid_writer() {
    GgufWriter w;
    w.kv_str("general.architecture", "llama");
    w.kv_u32("llama.block_count", 2);
    w.kv_f32("llama.rope.freq_base", 100000.0f);
    w.kv_bool("tokenizer.ggml.add_bos_token", false);
    w.kv_str_array("tokenizer.ggml.tokens", {"a", "b", "<|im_end|>"});
    w.kv_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
    w.kv_u64("big", 1ull << 40);
    w.kv_f64("double", 0.25);
    w.kv_u8("small", 200);
    w.kv_i16("neg", -5);
    w.kv_i64("i64", -1);
    w.tensor("token_embd.weight", {64, 3}, 8, 2 * 3 * 34);  // Q8_0: 2 blocks per row
    w.tensor("blk.0.attn_q.weight", {64, 64}, 3, 2 * 64 * 20);  // Q4_1
    w.tensor("output_norm.weight", {64}, 0, 64 * 4);  // F32
    w.tensor("half", {8, 2}, 1, 32);  // F16
    w.tensor("q40", {32}, 2, 18);  // Q4_0
    w.tensor("bf", {4}, 30, 8);  // BF16
    return w;
}

TEST(GgufReader, ValidFileRoundTrips) {
    const std::string img = valid_writer().image();
    const auto c = ms::gguf::parse(reinterpret_cast<const uint8_t *>(img.data()), img.size(), "test.gguf");
    EXPECT_EQ(c.version, 3u);
    EXPECT_EQ(c.alignment, 32u);
    ASSERT_EQ(c.keys.size(), 11u);
    EXPECT_EQ(c.kv.at("general.architecture").str, "llama");
    EXPECT_EQ(c.kv.at("llama.block_count").u, 2u);
    EXPECT_EQ(c.kv.at("llama.rope.freq_base").f, 100000.0);
    EXPECT_EQ(c.kv.at("tokenizer.ggml.tokens").strs, (std::vector<std::string>{"a", "b", "<|im_end|>"}));
    EXPECT_EQ(c.kv.at("tokenizer.ggml.token_type").ints, (std::vector<int64_t>{1, 1, 3}));
    EXPECT_EQ(c.kv.at("big").u, 1ull << 40);
    EXPECT_EQ(c.kv.at("neg").i, -5);
    ASSERT_EQ(c.tensors.size(), 6u);
    const auto &q = c.tensors[1];
    EXPECT_EQ(q.name, "blk.0.attn_q.weight");
    EXPECT_EQ(q.dims, (std::vector<int64_t>{64, 64}));
    EXPECT_EQ(q.type, ms::gguf::TensorType::Q4_1);
    EXPECT_EQ(q.nbytes, uint64_t(2 * 64 * 20));
    EXPECT_EQ(q.offset % 32, 0u);
    EXPECT_EQ(q.data, reinterpret_cast<const uint8_t *>(img.data()) + c.data_offset + q.offset);
    EXPECT_EQ(c.data_offset % 32, 0u);
}

TEST(GgufReader, FileAccessorsNameFileKeyAndTensor) {
    ms_test::TempDir dir;
    const std::string path = dir.path + "/m.gguf";
    {
        std::ofstream out(path, std::ios::binary);
        out << valid_writer().image();
    }
    auto f = ms::gguf::File::open(path);
    EXPECT_EQ(f->get_uint("llama.block_count"), 2u);
    EXPECT_EQ(f->get_uint("small"), 200u);
    EXPECT_EQ(f->get_uint("missing", 7), 7u);
    EXPECT_FLOAT_EQ(float(f->get_float("llama.rope.freq_base")), 100000.0f);
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 3u);
    auto expect_error = [&](auto fn, const std::string &needle) {
        try {
            fn();
            ADD_FAILURE() << "no error for " << needle;
        } catch (const ms::Error &e) {
            EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
            EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
        }
    };
    expect_error([&] { f->get_uint("nope"); }, "\"nope\" is missing");
    expect_error([&] { f->get_uint("general.architecture"); }, "must be an integer, got string");
    expect_error([&] { f->get_uint("neg"); }, "must not be negative");
    expect_error([&] { f->get_string("llama.block_count"); }, "must be a string");
    expect_error([&] { f->get_string_array("tokenizer.ggml.token_type"); }, "array of strings, got array of i32");
    using TT = ms::gguf::TensorType;
    EXPECT_EQ(f->require("output_norm.weight", {TT::F32}, {64}).nbytes, 256u);
    expect_error([&] { f->require("absent.weight", {TT::F32}, {64}); }, "tensor \"absent.weight\" is missing");
    expect_error([&] { f->require("output_norm.weight", {TT::F32}, {32}); }, "\"output_norm.weight\" has dims [64], expected [32]");
    expect_error([&] { f->require("output_norm.weight", {TT::Q4_1, TT::Q8_0}, {64}); }, "has type F32, expected Q4_1|Q8_0");
}

TEST(GgufReader, MalformedFilesAreClearErrors) {
    struct Case {
        const char *name;
        std::string image;
        ms_status status;
        const char *needle;
    };
    std::vector<Case> cases;
    auto add = [&](const char *name, std::string img, ms_status st, const char *needle) { cases.push_back({name, std::move(img), st, needle}); };
    {
        std::string img = valid_writer().image();
        img[0] = 'X';
        add("magic", img, MS_ERR_FORMAT, "bad magic");
    }
    add("version 1", GgufWriter(1).image(), MS_ERR_UNSUPPORTED, "GGUF version 1");
    {
        GgufWriter w;
        std::string v;
        w.raw<uint32_t>(v, 8);
        w.raw<uint64_t>(v, 1ull << 40);
        w.kv_raw("huge.string", v);
        add("string length", w.image(), MS_ERR_FORMAT, "metadata \"huge.string\": string length");
    }
    {
        GgufWriter w;
        std::string v;
        w.raw<uint32_t>(v, 9);
        w.raw<uint32_t>(v, 4);
        w.raw<uint64_t>(v, 1ull << 50);
        w.kv_raw("huge.array", v);
        add("array count", w.image(), MS_ERR_FORMAT, "\"huge.array\": array count");
    }
    {
        GgufWriter w;
        std::string v;
        w.raw<uint32_t>(v, 9);
        w.raw<uint32_t>(v, 9);
        w.raw<uint64_t>(v, 1);
        v += std::string(16, '\0');
        w.kv_raw("nested", v);
        add("nested array", w.image(), MS_ERR_UNSUPPORTED, "nested arrays");
    }
    {
        GgufWriter w;
        std::string v;
        w.raw<uint32_t>(v, 13);
        w.raw<uint32_t>(v, 0);
        w.kv_raw("odd.type", v);
        add("value type", w.image(), MS_ERR_FORMAT, "\"odd.type\": unknown value type 13");
    }
    {
        GgufWriter w;
        std::string v;
        w.raw<uint32_t>(v, 7);
        w.raw<uint8_t>(v, 2);
        w.kv_raw("flag", v);
        add("bool", w.image(), MS_ERR_FORMAT, "\"flag\": bool value 2");
    }
    {
        GgufWriter w;
        w.kv_u32("dup", 1);
        w.kv_u32("dup", 2);
        add("duplicate key", w.image(), MS_ERR_FORMAT, "\"dup\" appears twice");
    }
    {
        GgufWriter w;
        w.kv_u64("general.alignment", 32);
        add("alignment type", w.image(), MS_ERR_FORMAT, "\"general.alignment\" must be u32");
    }
    {
        GgufWriter w;
        w.kv_u32("general.alignment", 24);
        add("alignment value", w.image(), MS_ERR_FORMAT, "not a power of two");
    }
    {
        GgufWriter w;
        w.tensor("t", {32}, 0, 128);
        w.tensor("t", {32}, 0, 128);
        add("duplicate tensor", w.image(), MS_ERR_FORMAT, "tensor \"t\" appears twice");
    }
    {
        GgufWriter w;
        w.tensor("five", {1, 1, 1, 1, 1}, 0, 4);
        add("n_dims", w.image(), MS_ERR_FORMAT, "tensor \"five\": n_dims 5");
    }
    {
        GgufWriter w;
        w.tensor("zero", {32, 0}, 0, 0);
        add("zero dim", w.image(), MS_ERR_FORMAT, "tensor \"zero\": dim 1 = 0");
    }
    {
        GgufWriter w;
        w.tensor("overflow", {1ull << 40, 1ull << 40}, 0, 0, 0);
        add("dim overflow", w.image(), MS_ERR_FORMAT, "tensor \"overflow\": dim 1");
    }
    {
        GgufWriter w;
        w.tensor("q4k", {256}, 12, 144);
        add("unsupported type", w.image(), MS_ERR_UNSUPPORTED, "tensor \"q4k\": ggml type 12 is not supported");
    }
    {
        GgufWriter w;
        w.tensor("ragged", {48}, 3, 40);
        add("block multiple", w.image(), MS_ERR_FORMAT, "tensor \"ragged\": innermost dim 48 is not a multiple of the Q4_1 block size 32");
    }
    {
        GgufWriter w;
        w.tensor("a", {32}, 0, 128);
        w.tensor("misaligned", {8}, 0, 32, 136);
        add("misaligned offset", w.image(), MS_ERR_FORMAT, "tensor \"misaligned\": offset 136 is not a multiple of the alignment 32");
    }
    {
        GgufWriter w;
        w.tensor("a", {32}, 0, 128);
        w.tensor("beyond", {64}, 0, 0, 128);
        add("out of bounds", w.image(), MS_ERR_FORMAT, "tensor \"beyond\": bytes [128, +256) lie outside the data section");
    }
    {
        GgufWriter w;
        w.tensor("a", {64}, 0, 256);
        w.tensor("b", {32}, 0, 0, 128);
        add("overlap", w.image(), MS_ERR_FORMAT, "overlaps tensor");
    }
    {
        GgufWriter w;
        w.kv_u32("n", 1);
        std::string img = w.image();
        img[8] = 100;  // claims 100 tensors
        add("tensor count", img, MS_ERR_FORMAT, "tensor count 100 exceeds");
    }
    for (const Case &c : cases) {
        const Failure f = parse_fails(c.image);
        EXPECT_EQ(f.status, c.status) << c.name << ": " << f.message;
        EXPECT_NE(f.message.find("test.gguf: "), std::string::npos) << c.name << ": " << f.message;
        EXPECT_NE(f.message.find(c.needle), std::string::npos) << c.name << ": " << f.message;
    }
}

TEST(GgufReader, EveryTruncationIsAnErrorNeverACrash) {
    const std::string img = valid_writer().image();
    for (size_t n = 0; n < img.size(); ++n) {
        const Failure f = parse_fails(img.substr(0, n));
        ASSERT_EQ(f.status, MS_ERR_FORMAT) << "prefix " << n << ": " << f.message;
    }
}

TEST(GgufReader, RandomMutationsNeverCrash) {
    const std::string img = valid_writer().image();
    std::mt19937 rng(3);
    int errors = 0;
    for (int i = 0; i < 20000; ++i) {
        std::string m = img;
        const int flips = 1 + int(rng() % 4);
        for (int j = 0; j < flips; ++j) m[rng() % m.size()] = char(rng());
        const Failure f = parse_fails(m);
        if (f.status != MS_OK) {
            ++errors;
            EXPECT_TRUE(f.status == MS_ERR_FORMAT || f.status == MS_ERR_UNSUPPORTED) << f.message;
        }
    }
    EXPECT_GT(errors, 100);  // most mutations of the header are caught
}

}  // namespace
