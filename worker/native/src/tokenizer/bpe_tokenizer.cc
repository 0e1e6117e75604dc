#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <queue>

#include "common/error.h"
#include "tokenizer/unicode_class.h"

namespace ms {

namespace {

// The GPT-2 byte alphabet: printable bytes map to themselves, the others to 256, 257, ... in byte order.
uint32_t byte_to_cp(int b, int &next_extra) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) return uint32_t(b);
    return uint32_t(256 + next_extra++);
}

bool is_letter(uint32_t cp) { return cp_class(cp) == CpClass::Letter; }
bool is_number(uint32_t cp) { return cp_class(cp) == CpClass::Number; }

// The GPT-2 split over cps[b, e): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+,
// appending word boundaries (end offsets) to `ends`. Unassigned code points match no class and become one-code-point
// words; the look-ahead of \s+(?!\S) sees only this span (text ends where the span ends).
void split_gpt2(const std::vector<uint32_t> &cps, size_t b, size_t e, std::vector<size_t> &ends) {
    const uint32_t kNone = 0xffffffffu;
    auto at = [&](size_t i) { return i < e ? cps[i] : kNone; };
    auto letter = [&](size_t i) { return i < e && is_letter(cps[i]); };
    auto number = [&](size_t i) { return i < e && is_number(cps[i]); };
    auto space = [&](size_t i) { return i < e && cp_is_whitespace(cps[i]); };
    // "Other": assigned, not whitespace, letter or number.
    auto other = [&](size_t i) {
        return i < e && !cp_is_whitespace(cps[i]) && cp_class(cps[i]) == CpClass::Other;
    };
    size_t pos = b;
    while (pos < e) {
        const uint32_t c = cps[pos];
        if (c == '\'' && pos + 1 < e) {
            const uint32_t n1 = cps[pos + 1];
            if (n1 == 's' || n1 == 't' || n1 == 'm' || n1 == 'd') {
                pos += 2;
                ends.push_back(pos);
                continue;
            }
            const uint32_t n2 = at(pos + 2);
            if ((n1 == 'r' && n2 == 'e') || (n1 == 'v' && n2 == 'e') || (n1 == 'l' && n2 == 'l')) {
                pos += 3;
                ends.push_back(pos);
                continue;
            }
        }
        const size_t p2 = c == ' ' ? pos + 1 : pos;  // the optional leading space
        if (letter(p2)) {
            pos = p2;
            while (letter(pos)) ++pos;
            ends.push_back(pos);
            continue;
        }
        if (number(p2)) {
            pos = p2;
            while (number(pos)) ++pos;
            ends.push_back(pos);
            continue;
        }
        if (other(p2)) {
            pos = p2;
            while (other(pos)) ++pos;
            ends.push_back(pos);
            continue;
        }
        size_t nws = 0;
        while (space(pos + nws)) ++nws;
        if (nws > 1 && pos + nws < e) {  // \s+(?!\S): leave the last space to prefix the next word
            pos += nws - 1;
            ends.push_back(pos);
            continue;
        }
        if (nws > 0) {
            pos += nws;
            ends.push_back(pos);
            continue;
        }
        ends.push_back(++pos);  // matched nothing (an unassigned code point): a word of its own
    }
}

}  // namespace

BpeTokenizer::BpeTokenizer(std::vector<std::string> tokens, std::vector<int> types, const std::vector<std::string> &merges,
                           PreSplit pre, int bos, int eos, const std::string &source)
    : tokens_(std::move(tokens)), types_(std::move(types)), pre_(pre), bos_(bos), eos_(eos) {
    if (tokens_.empty()) throw Error(MS_ERR_FORMAT, source + ": the tokenizer has no tokens");
    if (types_.empty()) types_.assign(tokens_.size(), kNormal);
    if (types_.size() != tokens_.size())
        throw Error(MS_ERR_FORMAT, source + ": metadata \"tokenizer.ggml.token_type\" has " + std::to_string(types_.size()) +
                                       " entries for " + std::to_string(tokens_.size()) + " tokens");
    const int n = int(tokens_.size());
    if (bos_ >= n || eos_ >= n) throw Error(MS_ERR_FORMAT, source + ": bos/eos token id is outside the vocabulary");
    by_text_.reserve(tokens_.size());
    for (int i = 0; i < n; ++i) by_text_.emplace(tokens_[i], i);  // the first id wins for duplicate texts
    merge_rank_.reserve(merges.size());
    for (size_t r = 0; r < merges.size(); ++r) {
        const std::string &m = merges[r];
        const size_t sp = m.find(' ', 1);
        if (sp == std::string::npos || sp == 0 || sp + 1 >= m.size())
            throw Error(MS_ERR_FORMAT, source + ": metadata \"tokenizer.ggml.merges\"[" + std::to_string(r) + "] = \"" + m +
                                           "\" is not two symbols separated by a space");
        merge_rank_.emplace(m, int(r));
    }
    for (int i = 0; i < n; ++i)
        if ((types_[i] == kControl || types_[i] == kUserDefined || types_[i] == kUnknown) && !tokens_[i].empty())
            specials_.push_back(i);
    std::stable_sort(specials_.begin(), specials_.end(),
                     [&](int32_t a, int32_t b) { return tokens_[a].size() > tokens_[b].size(); });
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
        const uint32_t cp = byte_to_cp(b, extra);
        append_utf8(cp, byte_char_[b]);
        char_byte_[cp] = uint8_t(b);
    }
}

std::unique_ptr<BpeTokenizer> BpeTokenizer::from_gguf(const gguf::File &f) {
    const std::string model = f.get_string("tokenizer.ggml.model");
    if (model != "gpt2")
        throw Error(MS_ERR_UNSUPPORTED, f.path() + ": metadata \"tokenizer.ggml.model\" = \"" + model +
                                            "\" is not supported (byte-level BPE, \"gpt2\")");
    const std::string pre = f.get_string("tokenizer.ggml.pre", "default");
    PreSplit split;
    // Pre-tokenizer names whose rules are "each digit alone, then the GPT-2 split" (as llama.cpp groups them).
    static const char *digits_then_gpt2[] = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"};
    static const char *gpt2[] = {"gpt-2", "gpt2", "default", "mpt", "olmo", "jais", "trillion"};
    if (std::find_if(std::begin(digits_then_gpt2), std::end(digits_then_gpt2), [&](const char *s) { return pre == s; }) !=
        std::end(digits_then_gpt2))
        split = PreSplit::DigitsThenGpt2;
    else if (std::find_if(std::begin(gpt2), std::end(gpt2), [&](const char *s) { return pre == s; }) != std::end(gpt2))
        split = PreSplit::Gpt2;
    else
        throw Error(MS_ERR_UNSUPPORTED, f.path() + ": metadata \"tokenizer.ggml.pre\" = \"" + pre + "\" is not supported");
    std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
    std::vector<int> types;
    if (f.find("tokenizer.ggml.token_type")) {
        for (int64_t t : f.get_int_array("tokenizer.ggml.token_type")) types.push_back(int(t));
    }
    const std::vector<std::string> &merges = f.get_string_array("tokenizer.ggml.merges");
    const uint64_t n = tokens.size();
    auto id = [&](const char *key) {
        if (!f.find(key)) return -1;
        const uint64_t v = f.get_uint(key);
        if (v >= n) throw Error(MS_ERR_FORMAT, f.path() + ": metadata \"" + std::string(key) + "\" = " + std::to_string(v) + " is outside the vocabulary");
        return int(v);
    };
    const int bos = id("tokenizer.ggml.bos_token_id"), eos = id("tokenizer.ggml.eos_token_id");
    auto tok = std::make_unique<BpeTokenizer>(std::move(tokens), std::move(types), merges, split, bos, eos, f.path());
    tok->add_bos_ = f.get_bool("tokenizer.ggml.add_bos_token", false);
    if (tok->add_bos_ && bos < 0)
        throw Error(MS_ERR_FORMAT, f.path() + ": metadata \"tokenizer.ggml.add_bos_token\" is true but there is no "
                                              "\"tokenizer.ggml.bos_token_id\"");
    return tok;
}

int BpeTokenizer::find_token(const std::string &text) const {
    auto it = by_text_.find(text);
    return it == by_text_.end() ? -1 : it->second;
}

std::vector<std::string> BpeTokenizer::pre_split(const std::string &text) const {
    const std::vector<uint32_t> cps = utf8_to_cps(text);
    std::vector<size_t> spans = {0};  // boundaries
    if (pre_ == PreSplit::DigitsThenGpt2) {
        // \p{N}: every number code point is a word; the runs between them are words too.
        for (size_t i = 0; i < cps.size(); ++i)
            if (is_number(cps[i])) {
                if (spans.back() != i) spans.push_back(i);
                spans.push_back(i + 1);
            }
        if (spans.back() != cps.size()) spans.push_back(cps.size());
    } else {
        spans.push_back(cps.size());
    }
    std::vector<size_t> ends;
    for (size_t s = 0; s + 1 < spans.size(); ++s) split_gpt2(cps, spans[s], spans[s + 1], ends);
    std::vector<std::string> words;
    size_t start = 0;
    for (size_t end : ends) {
        std::string w;
        for (size_t i = start; i < end; ++i) append_utf8(cps[i], w);
        words.push_back(std::move(w));
        start = end;
    }
    return words;
}

void BpeTokenizer::bpe_word(const std::string &word, std::vector<int32_t> &out) const {
    // Symbols: the word's bytes in the GPT-2 alphabet, one code point each, as a linked list.
    struct Sym {
        std::string text;
        int prev, next;
    };
    std::vector<Sym> syms;
    syms.reserve(word.size());
    for (size_t i = 0; i < word.size(); ++i)
        syms.push_back({byte_char_[uint8_t(word[i])], int(i) - 1, i + 1 < word.size() ? int(i) + 1 : -1});
    struct Bigram {
        int left, right, rank;
        std::string text;
    };
    auto worse = [](const Bigram &a, const Bigram &b) { return a.rank > b.rank || (a.rank == b.rank && a.left > b.left); };
    std::priority_queue<Bigram, std::vector<Bigram>, decltype(worse)> queue(worse);
    auto add = [&](int l, int r) {
        if (l < 0 || r < 0) return;
        auto it = merge_rank_.find(syms[l].text + " " + syms[r].text);
        if (it == merge_rank_.end()) return;
        queue.push({l, r, it->second, syms[l].text + syms[r].text});
    };
    for (size_t i = 1; i < syms.size(); ++i) add(int(i) - 1, int(i));
    while (!queue.empty()) {
        Bigram bg = queue.top();
        queue.pop();
        Sym &l = syms[bg.left], &r = syms[bg.right];
        // Skip pairs made stale by an earlier merge (a side merged away or grown).
        if (l.text.empty() || r.text.empty() || l.next != bg.right || l.text.size() + r.text.size() != bg.text.size() ||
            l.text + r.text != bg.text)
            continue;
        l.text = bg.text;
        r.text.clear();
        l.next = r.next;
        if (r.next >= 0) syms[r.next].prev = bg.left;
        add(l.prev, bg.left);
        add(bg.left, l.next);
    }
    for (int i = syms.empty() ? -1 : 0; i >= 0; i = syms[i].next) {
        const int id = find_token(syms[i].text);
        if (id >= 0) {
            out.push_back(id);
            continue;
        }
        for (char ch : syms[i].text) {  // no token for the piece: its single bytes, where they exist
            const int b = find_token(std::string(1, ch));
            if (b >= 0) out.push_back(b);
        }
    }
}

void BpeTokenizer::encode_plain(const std::string &text, std::vector<int32_t> &out) const {
    for (const std::string &w : pre_split(text)) bpe_word(w, out);
}

std::vector<int32_t> BpeTokenizer::encode(const std::string &text, bool parse_special) const {
    // Fragments: raw text or a special token id, split longest special first (as llama.cpp partitions).
    struct Frag {
        int32_t id;  // -1 = raw text [off, off + len)
        size_t off, len;
    };
    std::vector<Frag> frags = {{-1, 0, text.size()}};
    for (int32_t sid : specials_) {
        if (!parse_special && (types_[sid] == kControl || types_[sid] == kUnknown)) continue;
        const std::string &st = tokens_[sid];
        std::vector<Frag> next;
        for (const Frag &f : frags) {
            if (f.id >= 0) {
                next.push_back(f);
                continue;
            }
            size_t pos = f.off;
            const size_t end = f.off + f.len;
            while (pos < end) {
                const size_t hit = text.find(st, pos);
                if (hit == std::string::npos || hit + st.size() > end) break;
                if (hit > pos) next.push_back({-1, pos, hit - pos});
                next.push_back({sid, hit, st.size()});
                pos = hit + st.size();
            }
            if (pos < end) next.push_back({-1, pos, end - pos});
        }
        frags.swap(next);
    }
    std::vector<int32_t> out;
    for (const Frag &f : frags) {
        if (f.id >= 0) out.push_back(f.id);
        else if (f.len > 0) encode_plain(text.substr(f.off, f.len), out);
    }
    return out;
}

std::string BpeTokenizer::token_bytes(int32_t id, bool special) const {
    if (id < 0 || id >= vocab_size()) return "";
    const int type = types_[size_t(id)];
    if (type == kControl || type == kUnknown) return special ? tokens_[size_t(id)] : "";
    if (type == kUserDefined) return tokens_[size_t(id)];
    std::string out;
    for (uint32_t cp : utf8_to_cps(tokens_[size_t(id)])) {
        auto it = char_byte_.find(cp);
        if (it != char_byte_.end()) out += char(it->second);
        else append_utf8(cp, out);
    }
    return out;
}

std::string BpeTokenizer::decode(const int32_t *ids, int n, bool special) const {
    std::string out;
    for (int i = 0; i < n; ++i) out += token_bytes(ids[i], special);
    return out;
}

}  // namespace ms
