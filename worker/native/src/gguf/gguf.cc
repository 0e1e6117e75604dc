#include "gguf/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace ms::gguf {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint64_t kMaxStringBytes = 1u << 24;  // a key or value string longer than 16 MiB is not a real model's

[[noreturn]] void fail(const std::string &file, const std::string &what, ms_status status = MS_ERR_FORMAT) {
    throw Error(status, file + ": " + what);
}

// Bounds-checked little-endian cursor over the file image.
class Cursor {
  public:
    Cursor(const uint8_t *data, size_t size, const std::string &file) : p_(data), size_(size), file_(file) {}
    size_t pos() const { return pos_; }
    size_t left() const { return size_ - pos_; }
    template <class T> T read(const char *what) {
        if (left() < sizeof(T)) fail(file_, std::string("truncated while reading ") + what + " at byte " + std::to_string(pos_));
        T v;
        std::memcpy(&v, p_ + pos_, sizeof(T));
        pos_ += sizeof(T);
        return v;
    }
    std::string string(const std::string &what) {
        const uint64_t n = read<uint64_t>(what.c_str());
        if (n > kMaxStringBytes || n > left())
            fail(file_, what + ": string length " + std::to_string(n) + " exceeds the " + std::to_string(left()) +
                            " bytes left in the file");
        std::string s(reinterpret_cast<const char *>(p_ + pos_), size_t(n));
        pos_ += size_t(n);
        return s;
    }

  private:
    const uint8_t *p_;
    size_t size_;
    size_t pos_ = 0;
    const std::string &file_;
};

size_t scalar_size(ValueType t) {
    switch (t) {
        case ValueType::U8: case ValueType::I8: case ValueType::Bool: return 1;
        case ValueType::U16: case ValueType::I16: return 2;
        case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
        case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
        case ValueType::String: return 8;  // at least its length
        case ValueType::Array: return 12;  // at least its type and count
    }
    return 0;
}

bool known_value_type(uint32_t t) { return t <= uint32_t(ValueType::F64); }

// Reads one scalar (non-array) of type t into v's scalar fields.
void read_scalar(Cursor &c, ValueType t, Value &v, const std::string &what, const std::string &file) {
    switch (t) {
        case ValueType::U8: v.u = c.read<uint8_t>(what.c_str()); break;
        case ValueType::I8: v.i = c.read<int8_t>(what.c_str()); break;
        case ValueType::U16: v.u = c.read<uint16_t>(what.c_str()); break;
        case ValueType::I16: v.i = c.read<int16_t>(what.c_str()); break;
        case ValueType::U32: v.u = c.read<uint32_t>(what.c_str()); break;
        case ValueType::I32: v.i = c.read<int32_t>(what.c_str()); break;
        case ValueType::U64: v.u = c.read<uint64_t>(what.c_str()); break;
        case ValueType::I64: v.i = c.read<int64_t>(what.c_str()); break;
        case ValueType::F32: v.f = c.read<float>(what.c_str()); break;
        case ValueType::F64: v.f = c.read<double>(what.c_str()); break;
        case ValueType::Bool: {
            uint8_t b = c.read<uint8_t>(what.c_str());
            if (b > 1) fail(file, what + ": bool value " + std::to_string(b) + " is neither 0 nor 1");
            v.u = b;
            break;
        }
        case ValueType::String: v.str = c.string(what); break;
        case ValueType::Array: fail(file, what + ": nested arrays are not supported", MS_ERR_UNSUPPORTED);
    }
}

Value read_value(Cursor &c, uint32_t raw_type, const std::string &key, const std::string &file) {
    const std::string what = "metadata \"" + key + "\"";
    if (!known_value_type(raw_type)) fail(file, what + ": unknown value type " + std::to_string(raw_type));
    Value v;
    v.type = ValueType(raw_type);
    if (v.type != ValueType::Array) {
        read_scalar(c, v.type, v, what, file);
        return v;
    }
    const uint32_t et = c.read<uint32_t>("array element type");
    if (!known_value_type(et)) fail(file, what + ": unknown array element type " + std::to_string(et));
    v.elem_type = ValueType(et);
    if (v.elem_type == ValueType::Array) fail(file, what + ": nested arrays are not supported", MS_ERR_UNSUPPORTED);
    v.count = c.read<uint64_t>("array count");
    if (v.count > c.left() / scalar_size(v.elem_type))
        fail(file, what + ": array count " + std::to_string(v.count) + " exceeds the bytes left in the file");
    const size_t n = size_t(v.count);
    if (v.elem_type == ValueType::String) v.strs.reserve(n);
    else if (v.elem_type == ValueType::F32 || v.elem_type == ValueType::F64) v.floats.reserve(n);
    else v.ints.reserve(n);
    for (size_t k = 0; k < n; ++k) {
        Value e;
        read_scalar(c, v.elem_type, e, what + "[" + std::to_string(k) + "]", file);
        switch (v.elem_type) {
            case ValueType::String: v.strs.push_back(std::move(e.str)); break;
            case ValueType::F32: case ValueType::F64: v.floats.push_back(e.f); break;
            case ValueType::U8: case ValueType::U16: case ValueType::U32: case ValueType::U64: case ValueType::Bool:
                if (e.u > uint64_t(std::numeric_limits<int64_t>::max()))
                    fail(file, what + "[" + std::to_string(k) + "]: value does not fit in int64");
                v.ints.push_back(int64_t(e.u));
                break;
            default: v.ints.push_back(e.i); break;
        }
    }
    return v;
}

bool known_tensor_type(uint32_t t) {
    switch (TensorType(t)) {
        case TensorType::F32: case TensorType::F16: case TensorType::Q4_0: case TensorType::Q4_1: case TensorType::Q8_0:
        case TensorType::BF16: return true;
    }
    return false;
}

}  // namespace

const char *value_type_name(ValueType t) {
    static const char *names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
    return uint32_t(t) <= 12 ? names[uint32_t(t)] : "?";
}

const char *tensor_type_name(TensorType t) {
    switch (t) {
        case TensorType::F32: return "F32";
        case TensorType::F16: return "F16";
        case TensorType::Q4_0: return "Q4_0";
        case TensorType::Q4_1: return "Q4_1";
        case TensorType::Q8_0: return "Q8_0";
        case TensorType::BF16: return "BF16";
    }
    return "?";
}

int tensor_block_elems(TensorType t) {
    switch (t) {
        case TensorType::Q4_0: case TensorType::Q4_1: case TensorType::Q8_0: return 32;
        default: return 1;
    }
}

int tensor_block_bytes(TensorType t) {
    switch (t) {
        case TensorType::F32: return 4;
        case TensorType::F16: case TensorType::BF16: return 2;
        case TensorType::Q4_0: return 18;  // fp16 scale + 16 bytes of nibbles
        case TensorType::Q4_1: return 20;  // fp16 scale + fp16 min + 16 bytes of nibbles
        case TensorType::Q8_0: return 34;  // fp16 scale + 32 int8
    }
    return 0;
}

bool Value::is_integer() const {
    switch (type) {
        case ValueType::U8: case ValueType::I8: case ValueType::U16: case ValueType::I16: case ValueType::U32:
        case ValueType::I32: case ValueType::U64: case ValueType::I64: return true;
        default: return false;
    }
}

int64_t TensorInfo::numel() const {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return n;
}

std::string dims_string(const std::vector<int64_t> &dims) {
    std::string s = "[";
    for (size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
    return s + "]";
}

Contents parse(const uint8_t *data, size_t size, const std::string &file) {
    Cursor c(data, size, file);
    Contents out;
    if (c.read<uint32_t>("magic") != kMagic) fail(file, "not a GGUF file (bad magic)");
    out.version = c.read<uint32_t>("version");
    if (out.version != 2 && out.version != 3)
        fail(file, "GGUF version " + std::to_string(out.version) + " is not supported (2 or 3)", MS_ERR_UNSUPPORTED);
    const uint64_t n_tensors = c.read<uint64_t>("tensor count");
    const uint64_t n_kv = c.read<uint64_t>("metadata count");
    // Each metadata entry takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8.
    if (n_kv > c.left() / 13) fail(file, "metadata count " + std::to_string(n_kv) + " exceeds what the file can hold");
    if (n_tensors > c.left() / 32) fail(file, "tensor count " + std::to_string(n_tensors) + " exceeds what the file can hold");

    for (uint64_t k = 0; k < n_kv; ++k) {
        std::string key = c.string("metadata key " + std::to_string(k));
        if (key.empty()) fail(file, "metadata key " + std::to_string(k) + " is empty");
        const uint32_t t = c.read<uint32_t>("metadata value type");
        Value v = read_value(c, t, key, file);
        if (out.kv.count(key)) fail(file, "metadata key \"" + key + "\" appears twice");
        out.keys.push_back(key);
        out.kv.emplace(std::move(key), std::move(v));
    }
    auto align_it = out.kv.find("general.alignment");
    if (align_it != out.kv.end()) {
        const Value &a = align_it->second;
        if (a.type != ValueType::U32) fail(file, "metadata \"general.alignment\" must be u32, got " + std::string(value_type_name(a.type)));
        if (a.u == 0 || (a.u & (a.u - 1)) != 0 || a.u > 65536)
            fail(file, "metadata \"general.alignment\" = " + std::to_string(a.u) + " is not a power of two <= 65536");
        out.alignment = uint32_t(a.u);
    }

    std::map<std::string, size_t> seen;
    for (uint64_t k = 0; k < n_tensors; ++k) {
        TensorInfo ti;
        ti.name = c.string("tensor name " + std::to_string(k));
        const std::string what = "tensor \"" + ti.name + "\"";
        if (ti.name.empty()) fail(file, "tensor " + std::to_string(k) + " has an empty name");
        if (seen.count(ti.name)) fail(file, what + " appears twice");
        const uint32_t n_dims = c.read<uint32_t>("tensor n_dims");
        if (n_dims < 1 || n_dims > 4) fail(file, what + ": n_dims " + std::to_string(n_dims) + " is not in 1..4");
        int64_t numel = 1;
        for (uint32_t d = 0; d < n_dims; ++d) {
            const uint64_t dim = c.read<uint64_t>("tensor dim");
            if (dim == 0 || dim > uint64_t(std::numeric_limits<int64_t>::max()) / uint64_t(numel))
                fail(file, what + ": dim " + std::to_string(d) + " = " + std::to_string(dim) + " is zero or overflows");
            numel *= int64_t(dim);
            ti.dims.push_back(int64_t(dim));
        }
        const uint32_t type = c.read<uint32_t>("tensor type");
        if (!known_tensor_type(type))
            fail(file, what + ": ggml type " + std::to_string(type) + " is not supported (F32, F16, BF16, Q4_0, Q4_1, Q8_0)",
                 MS_ERR_UNSUPPORTED);
        ti.type = TensorType(type);
        const int be = tensor_block_elems(ti.type);
        if (ti.dims[0] % be != 0)
            fail(file, what + ": innermost dim " + std::to_string(ti.dims[0]) + " is not a multiple of the " +
                           tensor_type_name(ti.type) + " block size " + std::to_string(be));
        ti.offset = c.read<uint64_t>("tensor offset");
        if (ti.offset % out.alignment != 0)
            fail(file, what + ": offset " + std::to_string(ti.offset) + " is not a multiple of the alignment " +
                           std::to_string(out.alignment));
        const uint64_t blocks = uint64_t(numel / be);
        if (blocks > std::numeric_limits<uint64_t>::max() / uint64_t(tensor_block_bytes(ti.type)))
            fail(file, what + ": byte size overflows");
        ti.nbytes = blocks * uint64_t(tensor_block_bytes(ti.type));
        seen.emplace(ti.name, out.tensors.size());
        out.tensors.push_back(std::move(ti));
    }

    const uint64_t a = out.alignment;
    out.data_offset = (uint64_t(c.pos()) + a - 1) / a * a;
    if (out.data_offset > size && !out.tensors.empty()) fail(file, "the data section starts past the end of the file");
    const uint64_t data_size = out.data_offset <= size ? size - out.data_offset : 0;
    // Every tensor inside the data section, and no two overlapping (checked in offset order).
    std::vector<size_t> order(out.tensors.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return out.tensors[x].offset < out.tensors[y].offset; });
    uint64_t prev_end = 0;
    const TensorInfo *prev = nullptr;
    for (size_t idx : order) {
        TensorInfo &ti = out.tensors[idx];
        if (ti.offset > data_size || ti.nbytes > data_size - ti.offset)
            fail(file, "tensor \"" + ti.name + "\": bytes [" + std::to_string(ti.offset) + ", +" + std::to_string(ti.nbytes) +
                           ") lie outside the data section of " + std::to_string(data_size) + " bytes");
        if (prev && ti.offset < prev_end)
            fail(file, "tensor \"" + ti.name + "\" overlaps tensor \"" + prev->name + "\"");
        ti.data = data + out.data_offset + ti.offset;
        prev_end = ti.offset + ti.nbytes;
        prev = &ti;
    }
    return out;
}

std::unique_ptr<File> File::open(const std::string &path) {
    auto f = std::unique_ptr<File>(new File());
    f->map_ = std::make_unique<MappedFile>(path);
    f->c_ = parse(f->map_->data(), f->map_->size(), path);
    for (size_t i = 0; i < f->c_.tensors.size(); ++i) f->by_name_.emplace(f->c_.tensors[i].name, i);
    return f;
}

uint64_t File::data_bytes() const {
    uint64_t n = 0;
    for (const TensorInfo &t : c_.tensors) n += t.nbytes;
    return n;
}

const Value *File::find(const std::string &key) const {
    auto it = c_.kv.find(key);
    return it == c_.kv.end() ? nullptr : &it->second;
}

namespace {
const Value &need(const File &f, const std::string &key) {
    const Value *v = f.find(key);
    if (!v) fail(f.path(), "metadata \"" + key + "\" is missing");
    return *v;
}
[[noreturn]] void wrong_type(const File &f, const std::string &key, const char *want, const Value &v) {
    std::string got = value_type_name(v.type);
    if (v.type == ValueType::Array) got += std::string(" of ") + value_type_name(v.elem_type);
    fail(f.path(), "metadata \"" + key + "\" must be " + want + ", got " + got);
}
}  // namespace

uint64_t File::get_uint(const std::string &key) const {
    const Value &v = need(*this, key);
    if (!v.is_integer()) wrong_type(*this, key, "an integer", v);
    switch (v.type) {
        case ValueType::I8: case ValueType::I16: case ValueType::I32: case ValueType::I64:
            if (v.i < 0) fail(path(), "metadata \"" + key + "\" = " + std::to_string(v.i) + " must not be negative");
            return uint64_t(v.i);
        default: return v.u;
    }
}

uint64_t File::get_uint(const std::string &key, uint64_t fallback) const { return find(key) ? get_uint(key) : fallback; }

bool File::get_bool(const std::string &key, bool fallback) const {
    if (!find(key)) return fallback;
    const Value &v = need(*this, key);
    if (v.type != ValueType::Bool) wrong_type(*this, key, "a bool", v);
    return v.u != 0;
}

double File::get_float(const std::string &key) const {
    const Value &v = need(*this, key);
    if (v.type != ValueType::F32 && v.type != ValueType::F64) wrong_type(*this, key, "a float", v);
    return v.f;
}

double File::get_float(const std::string &key, double fallback) const { return find(key) ? get_float(key) : fallback; }

const std::string &File::get_string(const std::string &key) const {
    const Value &v = need(*this, key);
    if (v.type != ValueType::String) wrong_type(*this, key, "a string", v);
    return v.str;
}

std::string File::get_string(const std::string &key, const std::string &fallback) const {
    return find(key) ? get_string(key) : fallback;
}

const std::vector<std::string> &File::get_string_array(const std::string &key) const {
    const Value &v = need(*this, key);
    if (v.type != ValueType::Array || v.elem_type != ValueType::String) wrong_type(*this, key, "an array of strings", v);
    return v.strs;
}

const std::vector<int64_t> &File::get_int_array(const std::string &key) const {
    const Value &v = need(*this, key);
    if (v.type != ValueType::Array || v.elem_type == ValueType::String || v.elem_type == ValueType::F32 ||
        v.elem_type == ValueType::F64)
        wrong_type(*this, key, "an array of integers", v);
    return v.ints;
}

const TensorInfo *File::find_tensor(const std::string &name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : &c_.tensors[it->second];
}

const TensorInfo &File::require(const std::string &name, const std::vector<TensorType> &types,
                                const std::vector<int64_t> &dims) const {
    const TensorInfo *t = find_tensor(name);
    if (!t) fail(path(), "tensor \"" + name + "\" is missing");
    if (std::find(types.begin(), types.end(), t->type) == types.end()) {
        std::string want;
        for (size_t i = 0; i < types.size(); ++i) want += (i ? "|" : "") + std::string(tensor_type_name(types[i]));
        fail(path(), "tensor \"" + name + "\" has type " + tensor_type_name(t->type) + ", expected " + want, MS_ERR_UNSUPPORTED);
    }
    if (t->dims != dims)
        fail(path(), "tensor \"" + name + "\" has dims " + dims_string(t->dims) + ", expected " + dims_string(dims));
    return *t;
}

void File::prefault(void (*progress)(void *, uint64_t, uint64_t), void *user) const {
    const uint64_t total = data_bytes();
    uint64_t done = 0;
    volatile uint8_t sink = 0;
    for (const TensorInfo &t : c_.tensors) {
        for (uint64_t off = 0; off < t.nbytes; off += 4096) sink = sink + t.data[off];
        done += t.nbytes;
        if (progress) progress(user, done, total);
    }
    (void)sink;
}

}  // namespace ms::gguf
