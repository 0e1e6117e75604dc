#include "io/json.h"

#include <cmath>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace ms {

namespace {
constexpr int kMaxDepth = 64;
}

class JsonParser {
  public:
    JsonParser(const char *data, size_t size, const std::string &what) : p_(data), begin_(data), end_(data + size), what_(what) {}

    Json run() {
        Json v = value(0);
        skip_ws();
        if (p_ != end_) fail("unexpected trailing characters");
        return v;
    }

  private:
    const char *p_;
    const char *begin_;
    const char *end_;
    const std::string &what_;

    [[noreturn]] void fail(const std::string &msg) const {
        throw Error(MS_ERR_FORMAT, what_ + ": invalid JSON at byte " + std::to_string(p_ - begin_) + ": " + msg);
    }
    void skip_ws() {
        while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
    }
    char peek() {
        if (p_ >= end_) fail("unexpected end of input");
        return *p_;
    }
    void expect_word(const char *w) {
        size_t n = std::strlen(w);
        if (size_t(end_ - p_) < n || std::memcmp(p_, w, n) != 0) fail(std::string("expected '") + w + "'");
        p_ += n;
    }

    Json value(int depth) {
        if (depth > kMaxDepth) fail("nesting deeper than 64");
        skip_ws();
        Json v;
        char c = peek();
        if (c == '{') {
            v.type_ = Json::Type::Object;
            ++p_;
            skip_ws();
            if (peek() == '}') {
                ++p_;
                return v;
            }
            for (;;) {
                skip_ws();
                if (peek() != '"') fail("expected a string key");
                std::string key = string();
                skip_ws();
                if (peek() != ':') fail("expected ':'");
                ++p_;
                Json member = value(depth + 1);
                if (!v.index_.emplace(key, v.members_.size()).second) fail("duplicate key \"" + key + "\"");
                v.members_.emplace_back(std::move(key), std::move(member));
                skip_ws();
                char d = peek();
                ++p_;
                if (d == '}') break;
                if (d != ',') fail("expected ',' or '}'");
            }
        } else if (c == '[') {
            v.type_ = Json::Type::Array;
            ++p_;
            skip_ws();
            if (peek() == ']') {
                ++p_;
                return v;
            }
            for (;;) {
                v.items_.push_back(value(depth + 1));
                skip_ws();
                char d = peek();
                ++p_;
                if (d == ']') break;
                if (d != ',') fail("expected ',' or ']'");
            }
        } else if (c == '"') {
            v.type_ = Json::Type::String;
            v.string_ = string();
        } else if (c == 't') {
            expect_word("true");
            v.type_ = Json::Type::Bool;
            v.bool_ = true;
        } else if (c == 'f') {
            expect_word("false");
            v.type_ = Json::Type::Bool;
        } else if (c == 'n') {
            expect_word("null");
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            v.type_ = Json::Type::Number;
            v.number_ = number();
        } else {
            fail(std::string("unexpected character '") + c + "'");
        }
        return v;
    }

    double number() {
        const char *start = p_;
        if (p_ < end_ && *p_ == '-') ++p_;
        auto digits = [&] {
            const char *d = p_;
            while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
            if (p_ == d) fail("expected digits");
        };
        if (p_ < end_ && *p_ == '0') {
            ++p_;
        } else {
            digits();
        }
        if (p_ < end_ && *p_ == '.') {
            ++p_;
            digits();
        }
        if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
            ++p_;
            if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
            digits();
        }
        if (p_ - start > 64) fail("number too long");
        std::string text(start, p_);
        double d = std::strtod(text.c_str(), nullptr);
        if (!std::isfinite(d)) fail("number out of range");
        return d;
    }

    static void put_utf8(std::string &out, uint32_t cp) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xC0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            out += char(0xE0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        } else {
            out += char(0xF0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3F));
            out += char(0x80 | ((cp >> 6) & 0x3F));
            out += char(0x80 | (cp & 0x3F));
        }
    }

    uint32_t hex4() {
        if (end_ - p_ < 4) fail("truncated \\u escape");
        uint32_t v = 0;
        for (int i = 0; i < 4; ++i) {
            char c = *p_++;
            v <<= 4;
            if (c >= '0' && c <= '9') v |= uint32_t(c - '0');
            else if (c >= 'a' && c <= 'f') v |= uint32_t(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F') v |= uint32_t(c - 'A' + 10);
            else fail("bad \\u escape");
        }
        return v;
    }

    std::string string() {
        ++p_;  // opening quote
        std::string out;
        for (;;) {
            if (p_ >= end_) fail("unterminated string");
            char c = *p_++;
            if (c == '"') return out;
            if (static_cast<unsigned char>(c) < 0x20) fail("control character in string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (p_ >= end_) fail("unterminated escape");
            char e = *p_++;
            switch (e) {
                case '"': out += '"'; break;
                case '\\': out += '\\'; break;
                case '/': out += '/'; break;
                case 'b': out += '\b'; break;
                case 'f': out += '\f'; break;
                case 'n': out += '\n'; break;
                case 'r': out += '\r'; break;
                case 't': out += '\t'; break;
                case 'u': {
                    uint32_t cp = hex4();
                    if (cp >= 0xD800 && cp < 0xDC00) {
                        if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("lone surrogate");
                        p_ += 2;
                        uint32_t lo = hex4();
                        if (lo < 0xDC00 || lo >= 0xE000) fail("bad surrogate pair");
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                    } else if (cp >= 0xDC00 && cp < 0xE000) {
                        fail("lone surrogate");
                    }
                    put_utf8(out, cp);
                    break;
                }
                default: fail("bad escape");
            }
        }
    }
};

Json Json::parse(const char *data, size_t size, const std::string &what) { return JsonParser(data, size, what).run(); }

bool Json::is_integer() const {
    return type_ == Type::Number && std::floor(number_) == number_ && std::fabs(number_) <= 9007199254740992.0;
}

const Json *Json::find(const std::string &key) const {
    if (type_ != Type::Object) return nullptr;
    auto it = index_.find(key);
    return it == index_.end() ? nullptr : &members_[it->second].second;
}

}  // namespace ms
