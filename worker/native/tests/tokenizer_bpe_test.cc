// The byte-level BPE tokenizer on hand-made vocabularies: the GPT-2 pre-tokenizer rules (with digits split first as
// SmolLM2 declares), merge order, byte fallback, special tokens with and without parse_special, UTF-8 repair, and
// decoding back to the exact bytes. tests/llama_reference_test.cc compares the real vocabulary with llama.cpp.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "common/error.h"
#include "gguf/gguf.h"
#include "gguf_writer.h"
#include "model_test_util.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/unicode_class.h"

namespace {

using ms::BpeTokenizer;
using Words = std::vector<std::string>;

// Every single byte (in the GPT-2 alphabet) plus `extra` tokens, and the given merges.
BpeTokenizer make(const std::vector<std::string> &extra, const std::vector<std::string> &merges,
                  BpeTokenizer::PreSplit pre = BpeTokenizer::PreSplit::DigitsThenGpt2) {
    std::vector<std::string> tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    std::vector<int> types = {3, 3, 3};
    int extra_cp = 0;
    for (int b = 0; b < 256; ++b) {
        uint32_t cp = ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174)) ? uint32_t(b) : uint32_t(256 + extra_cp++);
        std::string s;
        ms::append_utf8(cp, s);
        tokens.push_back(s);
        types.push_back(1);
    }
    for (const auto &e : extra) {
        tokens.push_back(e);
        types.push_back(1);
    }
    return BpeTokenizer(tokens, types, merges, pre, 1, 2, "test");
}

TEST(TokenizerPreSplit, Gpt2RulesWithDigitsFirst) {
    const BpeTokenizer t = make({}, {});
    EXPECT_EQ(t.pre_split("Hello world"), (Words{"Hello", " world"}));
    EXPECT_EQ(t.pre_split("I'm we'll they've it's he'd you're"),
              (Words{"I", "'m", " we", "'ll", " they", "'ve", " it", "'s", " he", "'d", " you", "'re"}));
    EXPECT_EQ(t.pre_split("DON'T"), (Words{"DON", "'", "T"}));  // contractions are case-sensitive
    EXPECT_EQ(t.pre_split("a  b"), (Words{"a", " ", " b"}));     // \s+(?!\S) leaves one space for the word
    EXPECT_EQ(t.pre_split("x   "), (Words{"x", "   "}));         // trailing whitespace stays together
    EXPECT_EQ(t.pre_split("\n\nx"), (Words{"\n", "\n", "x"}));
    EXPECT_EQ(t.pre_split("abc123"), (Words{"abc", "1", "2", "3"}));
    EXPECT_EQ(t.pre_split(" 42"), (Words{" ", "4", "2"}));  // the digit split runs first, so the space stands alone
    EXPECT_EQ(t.pre_split("hi!! ?!"), (Words{"hi", "!!", " ?!"}));
    EXPECT_EQ(t.pre_split("naïve café"), (Words{"naïve", " café"}));
    EXPECT_EQ(t.pre_split("日本語 テスト"), (Words{"日本語", " テスト"}));
    EXPECT_EQ(t.pre_split("½ ①"), (Words{"½", " ", "①"}));  // No numbers split one by one too
    EXPECT_EQ(t.pre_split("🙂🙃 x"), (Words{"🙂🙃", " x"}));
    EXPECT_EQ(t.pre_split(""), Words{});
    const BpeTokenizer plain = make({}, {}, BpeTokenizer::PreSplit::Gpt2);
    EXPECT_EQ(plain.pre_split("abc123 45"), (Words{"abc", "123", " 45"}));
}

TEST(TokenizerPreSplit, InvalidUtf8BecomesReplacementCharacters) {
    const BpeTokenizer t = make({}, {});
    EXPECT_EQ(t.pre_split("a\x80z"), (Words{"a", "\xef\xbf\xbd", "z"}));
    EXPECT_EQ(ms::utf8_to_cps("\xe6\x97"), (std::vector<uint32_t>{0xfffd, 0xfffd}));
    EXPECT_EQ(ms::utf8_to_cps("\xf0\x9f\x99\x82"), (std::vector<uint32_t>{0x1f642}));
}

TEST(TokenizerBpe, MergesApplyLowestRankFirst) {
    const BpeTokenizer abc = make({"ab", "bc", "abc"}, {"a b", "b c", "ab c"});
    const int ab = abc.find_token("ab"), bc = abc.find_token("bc"), abc_id = abc.find_token("abc");
    EXPECT_EQ(abc.encode("abc", false), (std::vector<int32_t>{abc_id}));
    const BpeTokenizer other = make({"ab", "bc"}, {"b c", "a b"});
    EXPECT_EQ(other.encode("abc", false), (std::vector<int32_t>{other.find_token("a"), other.find_token("bc")}));
    (void)ab;
    (void)bc;
    // Ties in rank go to the leftmost pair: "aaa" with only "a a" merges to "aa" + "a".
    const BpeTokenizer aa = make({"aa"}, {"a a"});
    EXPECT_EQ(aa.encode("aaa", false), (std::vector<int32_t>{aa.find_token("aa"), aa.find_token("a")}));
    // A space is the byte alphabet's "Ġ" (U+0120).
    const BpeTokenizer sp = make({"Ġx"}, {"Ġ x"});
    EXPECT_EQ(sp.encode(" x", false), (std::vector<int32_t>{sp.find_token("Ġx")}));
}

TEST(TokenizerBpe, SpecialTokensOnlyWhenAsked) {
    const BpeTokenizer t = make({}, {});
    const std::vector<int32_t> with = t.encode("<|im_start|>a<|im_end|>", true);
    EXPECT_EQ(with, (std::vector<int32_t>{1, t.find_token("a"), 2}));
    const std::vector<int32_t> without = t.encode("<|im_start|>", false);
    EXPECT_EQ(without.size(), 12u);  // plain text: < | i m _ s t a r t | >, one byte token each (no merges)
    EXPECT_EQ(t.decode(with.data(), int(with.size()), true), "<|im_start|>a<|im_end|>");
    EXPECT_EQ(t.decode(with.data(), int(with.size()), false), "a");
}

TEST(TokenizerBpe, DecodeGivesBackTheBytes) {
    const BpeTokenizer t = make({"Ġx"}, {"Ġ x"});
    const std::vector<std::string> texts = {"hello world", " x\n\t\r", "naïve 日本 🙂", std::string("\0\x01 z", 4)};
    for (const std::string &s : texts) {
        const std::vector<int32_t> ids = t.encode(s, false);
        EXPECT_EQ(t.decode(ids.data(), int(ids.size()), false), s);
    }
}

// A GGUF holding only tokenizer metadata; `extra` adds keys (add_bos_token, bos id) before it is read back.
std::unique_ptr<BpeTokenizer> from_gguf(const ms_test::TempDir &dir, const std::function<void(ms_test::GgufWriter &)> &extra) {
    ms_test::GgufWriter w;
    w.kv_str("tokenizer.ggml.model", "gpt2");
    w.kv_str("tokenizer.ggml.pre", "smollm");
    w.kv_str_array("tokenizer.ggml.tokens", {"<|endoftext|>", "a", "b"});
    w.kv_str_array("tokenizer.ggml.merges", {});
    extra(w);
    const std::string path = dir.path + "/tok.gguf";
    std::ofstream(path, std::ios::binary) << w.image();
    return BpeTokenizer::from_gguf(*ms::gguf::File::open(path));
}

std::string error_of(const std::function<void()> &fn) {
    try {
        fn();
    } catch (const ms::Error &e) {
        return e.what();
    }
    return "";
}

TEST(TokenizerBpe, AddBosTokenFromMetadata) {
    ms_test::TempDir dir;
    auto with_bos = from_gguf(dir, [](ms_test::GgufWriter &w) {
        w.kv_u32("tokenizer.ggml.bos_token_id", 0);
        w.kv_bool("tokenizer.ggml.add_bos_token", true);
    });
    EXPECT_TRUE(with_bos->add_bos());
    EXPECT_EQ(with_bos->bos_id(), 0);
    auto told_not = from_gguf(dir, [](ms_test::GgufWriter &w) {
        w.kv_u32("tokenizer.ggml.bos_token_id", 0);
        w.kv_bool("tokenizer.ggml.add_bos_token", false);
    });
    EXPECT_FALSE(told_not->add_bos());
    // Absent: no BOS (GPT-2-style byte-level BPE, as SmolLM2 declares explicitly).
    EXPECT_FALSE(from_gguf(dir, [](ms_test::GgufWriter &w) { w.kv_u32("tokenizer.ggml.bos_token_id", 0); })->add_bos());
}

TEST(TokenizerBpe, AddBosTokenErrorsNameTheKey) {
    ms_test::TempDir dir;
    const std::string no_id = error_of([&] {
        from_gguf(dir, [](ms_test::GgufWriter &w) { w.kv_bool("tokenizer.ggml.add_bos_token", true); });
    });
    EXPECT_NE(no_id.find("\"tokenizer.ggml.add_bos_token\" is true but there is no \"tokenizer.ggml.bos_token_id\""),
              std::string::npos)
        << no_id;
    const std::string not_bool = error_of([&] {
        from_gguf(dir, [](ms_test::GgufWriter &w) { w.kv_u32("tokenizer.ggml.add_bos_token", 1); });
    });
    EXPECT_NE(not_bool.find("tokenizer.ggml.add_bos_token"), std::string::npos) << not_bool;
    EXPECT_NE(not_bool.find("bool"), std::string::npos) << not_bool;
}

TEST(TokenizerBpe, BadMetadataIsAnError) {
    EXPECT_THROW(BpeTokenizer({"a"}, {1, 1}, {}, BpeTokenizer::PreSplit::Gpt2, -1, -1, "f.gguf"), ms::Error);
    EXPECT_THROW(BpeTokenizer({"a", "b"}, {}, {"ab"}, BpeTokenizer::PreSplit::Gpt2, -1, -1, "f.gguf"), ms::Error);
    EXPECT_THROW(BpeTokenizer({"a"}, {}, {}, BpeTokenizer::PreSplit::Gpt2, 5, -1, "f.gguf"), ms::Error);
    try {
        BpeTokenizer({"a", "b"}, {}, {"a b", "xy"}, BpeTokenizer::PreSplit::Gpt2, -1, -1, "f.gguf");
    } catch (const ms::Error &e) {
        EXPECT_NE(std::string(e.what()).find("f.gguf: metadata \"tokenizer.ggml.merges\"[1]"), std::string::npos) << e.what();
    }
}

}  // namespace
