// A small JSON reader for checkpoint metadata: config.json, the safetensors header and the shard index. Inputs come
// from disk and may be hostile, so parsing is bounded (nesting depth, sizes) and every failure is an ms::Error naming
// the document and the byte offset.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace ms {

class Json {
  public:
    enum class Type { Null, Bool, Number, String, Array, Object };

    Json() = default;
    static Json parse(const char *data, size_t size, const std::string &what);
    static Json parse(const std::string &text, const std::string &what) { return parse(text.data(), text.size(), what); }

    Type type() const { return type_; }
    bool is_null() const { return type_ == Type::Null; }
    bool is_bool() const { return type_ == Type::Bool; }
    bool is_number() const { return type_ == Type::Number; }
    bool is_string() const { return type_ == Type::String; }
    bool is_array() const { return type_ == Type::Array; }
    bool is_object() const { return type_ == Type::Object; }

    bool as_bool() const { return bool_; }
    double as_number() const { return number_; }
    // True when the number is an integer that a double represents exactly (|n| <= 2^53).
    bool is_integer() const;
    const std::string &as_string() const { return string_; }
    const std::vector<Json> &items() const { return items_; }
    // Object members in document order (duplicate keys are rejected by the parser).
    const std::vector<std::pair<std::string, Json>> &members() const { return members_; }
    // Member lookup; nullptr when absent or when this is not an object.
    const Json *find(const std::string &key) const;

  private:
    friend class JsonParser;
    Type type_ = Type::Null;
    bool bool_ = false;
    double number_ = 0;
    std::string string_;
    std::vector<Json> items_;
    std::vector<std::pair<std::string, Json>> members_;
    std::map<std::string, size_t> index_;
};

}  // namespace ms
