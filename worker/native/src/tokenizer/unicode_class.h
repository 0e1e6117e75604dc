// Code point classes for the byte-level BPE pre-tokenizer (the GPT-2 split rules): letters (\p{L}), numbers
// (\p{N}), whitespace (\s) and everything else that is assigned; unassigned code points belong to no class.
// UTF-8 decoding replaces invalid sequences by U+FFFD, as llama.cpp does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ms {

enum class CpClass : uint8_t { Unassigned = 0, Letter = 1, Number = 2, Other = 3 };

struct UnicodeRange {
    uint32_t start;
    uint8_t cls;  // CpClass of [start, next range's start)
};
extern const UnicodeRange kUnicodeRanges[];
extern const int kUnicodeRangeCount;

CpClass cp_class(uint32_t cp);
bool cp_is_whitespace(uint32_t cp);  // the Unicode White_Space property

std::vector<uint32_t> utf8_to_cps(const std::string &s);
void append_utf8(uint32_t cp, std::string &out);

}  // namespace ms
