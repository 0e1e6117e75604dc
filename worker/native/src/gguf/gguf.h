// GGUF reader (versions 2 and 3). A file is: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the
// metadata (key string, u32 value type, value; arrays carry an element type and a u64 count), the tensor infos
// (name, u32 n_dims, u64 dims innermost first, u32 ggml type, u64 offset), padding to `general.alignment` (default
// 32), then the tensor data; offsets are relative to the data section and aligned. Everything is validated before a
// byte of tensor data is used (counts against the bytes left, string and array lengths, dtypes, dims, block
// multiples, offsets, sizes, overlaps); failures name the file and the key or tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace ms::gguf {

enum class ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8, Array = 9, U64 = 10, I64 = 11,
    F64 = 12
};
const char *value_type_name(ValueType t);

// ggml tensor types this reader accepts (others are rejected with MS_ERR_UNSUPPORTED naming the tensor).
enum class TensorType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, BF16 = 30 };
const char *tensor_type_name(TensorType t);
int tensor_block_elems(TensorType t);  // elements per block (1 for float types, 32 for the quantized ones)
int tensor_block_bytes(TensorType t);  // bytes per block

// One metadata value. Scalars keep their integer/float form; arrays keep their elements in the matching vector.
struct Value {
    ValueType type = ValueType::U8;
    ValueType elem_type = ValueType::U8;  // for arrays
    uint64_t u = 0;                       // unsigned integers and bool
    int64_t i = 0;                        // signed integers
    double f = 0;                         // floats
    std::string str;
    std::vector<std::string> strs;  // array of strings
    std::vector<int64_t> ints;      // array of integers (any width; u64 above INT64_MAX rejected) or bools
    std::vector<double> floats;     // array of f32/f64
    uint64_t count = 0;             // array element count
    bool is_integer() const;
};

struct TensorInfo {
    std::string name;
    std::vector<int64_t> dims;  // innermost (contiguous) first, as in the file
    TensorType type = TensorType::F32;
    uint64_t offset = 0;  // relative to the data section
    uint64_t nbytes = 0;
    const uint8_t *data = nullptr;
    int64_t numel() const;
};

struct Contents {
    uint32_t version = 0;
    uint32_t alignment = 32;
    uint64_t data_offset = 0;  // of the data section, from the start of the file
    std::vector<std::string> keys;  // in file order
    std::map<std::string, Value> kv;
    std::vector<TensorInfo> tensors;  // in file order
};

// Parses and validates the image of a GGUF file (`data` = the whole file). `file` names it in errors.
// Throws ms::Error(MS_ERR_FORMAT or MS_ERR_UNSUPPORTED). Safe on arbitrary bytes (fuzzed).
Contents parse(const uint8_t *data, size_t size, const std::string &file);

std::string dims_string(const std::vector<int64_t> &dims);

class File {
  public:
    // Maps and parses `path`. Throws MS_ERR_IO when it cannot be read, MS_ERR_FORMAT/UNSUPPORTED when malformed.
    static std::unique_ptr<File> open(const std::string &path);

    const std::string &path() const { return map_->path(); }
    const Contents &contents() const { return c_; }
    uint64_t data_bytes() const;

    const Value *find(const std::string &key) const;
    // Typed metadata; errors name the file and the key (missing, or of another type).
    uint64_t get_uint(const std::string &key) const;  // any unsigned or non-negative signed integer
    uint64_t get_uint(const std::string &key, uint64_t fallback) const;
    bool get_bool(const std::string &key, bool fallback) const;  // a bool value; absent = fallback
    double get_float(const std::string &key) const;  // f32 or f64
    double get_float(const std::string &key, double fallback) const;
    const std::string &get_string(const std::string &key) const;
    std::string get_string(const std::string &key, const std::string &fallback) const;
    const std::vector<std::string> &get_string_array(const std::string &key) const;
    const std::vector<int64_t> &get_int_array(const std::string &key) const;

    const TensorInfo *find_tensor(const std::string &name) const;
    // The tensor of that type and dims (innermost first), or ms::Error(MS_ERR_FORMAT) naming the file and tensor.
    const TensorInfo &require(const std::string &name, const std::vector<TensorType> &types,
                              const std::vector<int64_t> &dims) const;
    // Reads every mapped page once so the first step does not page-fault, reporting progress.
    void prefault(void (*progress)(void *, uint64_t, uint64_t), void *user) const;

  private:
    std::unique_ptr<MappedFile> map_;
    Contents c_;
    std::map<std::string, size_t> by_name_;
};

}  // namespace ms::gguf
