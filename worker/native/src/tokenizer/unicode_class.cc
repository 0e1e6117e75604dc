#include "tokenizer/unicode_class.h"

namespace ms {

CpClass cp_class(uint32_t cp) {
    int lo = 0, hi = kUnicodeRangeCount - 1;
    while (lo < hi) {  // last range whose start <= cp
        const int mid = (lo + hi + 1) / 2;
        if (kUnicodeRanges[mid].start <= cp) lo = mid;
        else hi = mid - 1;
    }
    return cp < 0x110000 ? CpClass(kUnicodeRanges[lo].cls) : CpClass::Unassigned;
}

bool cp_is_whitespace(uint32_t cp) {
    return (cp >= 0x09 && cp <= 0x0d) || cp == 0x20 || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

std::vector<uint32_t> utf8_to_cps(const std::string &s) {
    std::vector<uint32_t> out;
    out.reserve(s.size());
    const size_t n = s.size();
    auto cont = [&](size_t i) { return i < n && (uint8_t(s[i]) & 0xc0) == 0x80; };
    for (size_t i = 0; i < n;) {
        const uint8_t c = uint8_t(s[i]);
        if (c < 0x80) {
            out.push_back(c);
            i += 1;
        } else if ((c & 0xe0) == 0xc0 && cont(i + 1)) {
            out.push_back(uint32_t(c & 0x1f) << 6 | (uint8_t(s[i + 1]) & 0x3f));
            i += 2;
        } else if ((c & 0xf0) == 0xe0 && cont(i + 1) && cont(i + 2)) {
            out.push_back(uint32_t(c & 0x0f) << 12 | uint32_t(uint8_t(s[i + 1]) & 0x3f) << 6 | (uint8_t(s[i + 2]) & 0x3f));
            i += 3;
        } else if ((c & 0xf8) == 0xf0 && cont(i + 1) && cont(i + 2) && cont(i + 3)) {
            out.push_back(uint32_t(c & 0x07) << 18 | uint32_t(uint8_t(s[i + 1]) & 0x3f) << 12 |
                          uint32_t(uint8_t(s[i + 2]) & 0x3f) << 6 | (uint8_t(s[i + 3]) & 0x3f));
            i += 4;
        } else {  // an invalid byte: one replacement character, then resynchronise on the next byte
            out.push_back(0xfffd);
            i += 1;
        }
    }
    return out;
}

void append_utf8(uint32_t cp, std::string &out) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xc0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += char(0xe0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    } else {
        out += char(0xf0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3f));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    }
}

}  // namespace ms
