// Byte-level BPE as GGUF describes it (tokenizer.ggml.model = "gpt2"): a pre-tokenizer splits text into words (the
// GPT-2 rules; with tokenizer.ggml.pre = "smollm" and the like, every digit is first split off on its own), each word's
// bytes are mapped to printable code points (the GPT-2 byte alphabet), merged by rank from tokenizer.ggml.merges
// (lowest rank first, leftmost on ties), and looked up in tokenizer.ggml.tokens; a piece with no token falls back to
// its single bytes. Control tokens (token_type 3) are matched verbatim in the text only when parse_special is set;
// user-defined tokens (4) always. Decoding maps a normal token's code points back to bytes; control tokens decode to
// their text when asked to.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "gguf/gguf.h"

namespace ms {

class BpeTokenizer {
  public:
    enum class PreSplit { Gpt2, DigitsThenGpt2 };
    enum TokenType : int { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

    // Throws ms::Error naming the file and the key when the metadata is missing, of the wrong type or inconsistent.
    static std::unique_ptr<BpeTokenizer> from_gguf(const gguf::File &f);
    // For tests: a tokenizer from explicit parts.
    BpeTokenizer(std::vector<std::string> tokens, std::vector<int> types, const std::vector<std::string> &merges,
                 PreSplit pre, int bos, int eos, const std::string &source);

    std::vector<int32_t> encode(const std::string &text, bool parse_special) const;
    // The bytes of one token; control/unknown tokens give their text only when `special` is set.
    std::string token_bytes(int32_t id, bool special) const;
    std::string decode(const int32_t *ids, int n, bool special) const;

    int vocab_size() const { return int(tokens_.size()); }
    int bos_id() const { return bos_; }
    // Whether a prompt starts with bos_id() (tokenizer.ggml.add_bos_token; absent = no, as for GPT-2-style BPE).
    bool add_bos() const { return add_bos_; }
    int eos_id() const { return eos_; }
    int token_type(int32_t id) const { return types_[size_t(id)]; }
    const std::string &token_text(int32_t id) const { return tokens_[size_t(id)]; }
    int find_token(const std::string &text) const;  // -1 when absent

    // The pre-tokenizer alone (for tests): the words of `text`, as UTF-8.
    std::vector<std::string> pre_split(const std::string &text) const;

  private:
    void bpe_word(const std::string &word, std::vector<int32_t> &out) const;
    void encode_plain(const std::string &text, std::vector<int32_t> &out) const;

    std::vector<std::string> tokens_;
    std::vector<int> types_;
    std::unordered_map<std::string, int32_t> by_text_;
    std::unordered_map<std::string, int> merge_rank_;  // "left right" -> rank
    std::vector<int32_t> specials_;  // control and user-defined tokens, longest text first
    PreSplit pre_ = PreSplit::Gpt2;
    int bos_ = -1, eos_ = -1;
    bool add_bos_ = false;
    std::string byte_char_[256];  // byte -> its code point in the GPT-2 byte alphabet, as UTF-8
    std::unordered_map<uint32_t, uint8_t> char_byte_;
};

}  // namespace ms
