// Builds GGUF images in memory for the reader tests and the fuzz corpus: metadata of every value type, tensor infos
// with explicit offsets (so tests can place them wrongly on purpose), alignment padding and data.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace ms_test {

class GgufWriter {
  public:
    explicit GgufWriter(uint32_t version = 3) : version_(version) {}

    template <class T> void raw(std::string &s, T v) const { s.append(reinterpret_cast<const char *>(&v), sizeof(T)); }
    void str(std::string &s, const std::string &v) const {
        raw<uint64_t>(s, v.size());
        s += v;
    }
    // Metadata entries (type codes as in the GGUF spec).
    void kv_u32(const std::string &k, uint32_t v) { entry(k, 4, [&](std::string &s) { raw(s, v); }); }
    void kv_i32(const std::string &k, int32_t v) { entry(k, 5, [&](std::string &s) { raw(s, v); }); }
    void kv_f32(const std::string &k, float v) { entry(k, 6, [&](std::string &s) { raw(s, v); }); }
    void kv_bool(const std::string &k, bool v) { entry(k, 7, [&](std::string &s) { raw<uint8_t>(s, v); }); }
    void kv_str(const std::string &k, const std::string &v) { entry(k, 8, [&](std::string &s) { str(s, v); }); }
    void kv_u64(const std::string &k, uint64_t v) { entry(k, 10, [&](std::string &s) { raw(s, v); }); }
    void kv_f64(const std::string &k, double v) { entry(k, 12, [&](std::string &s) { raw(s, v); }); }
    void kv_u8(const std::string &k, uint8_t v) { entry(k, 0, [&](std::string &s) { raw(s, v); }); }
    void kv_i16(const std::string &k, int16_t v) { entry(k, 3, [&](std::string &s) { raw(s, v); }); }
    void kv_i64(const std::string &k, int64_t v) { entry(k, 11, [&](std::string &s) { raw(s, v); }); }
    void kv_str_array(const std::string &k, const std::vector<std::string> &v) {
        entry(k, 9, [&](std::string &s) {
            raw<uint32_t>(s, 8);
            raw<uint64_t>(s, v.size());
            for (const auto &x : v) str(s, x);
        });
    }
    void kv_i32_array(const std::string &k, const std::vector<int32_t> &v) {
        entry(k, 9, [&](std::string &s) {
            raw<uint32_t>(s, 5);
            raw<uint64_t>(s, v.size());
            for (int32_t x : v) raw(s, x);
        });
    }
    // A raw entry: the caller writes the value type and value bytes.
    void kv_raw(const std::string &k, const std::string &type_and_value) {
        str(kv_, k);
        kv_ += type_and_value;
        ++n_kv_;
    }

    // A tensor info; offset = -1 places it after the previous one (aligned) and appends `nbytes` data bytes.
    void tensor(const std::string &name, const std::vector<uint64_t> &dims, uint32_t type, uint64_t nbytes,
                int64_t offset = -1) {
        str(infos_, name);
        raw<uint32_t>(infos_, uint32_t(dims.size()));
        for (uint64_t d : dims) raw(infos_, d);
        raw(infos_, type);
        uint64_t off = offset >= 0 ? uint64_t(offset) : (data_.size() + alignment - 1) / alignment * alignment;
        raw(infos_, off);
        if (offset < 0) {
            data_.resize(off, '\0');
            for (uint64_t i = 0; i < nbytes; ++i) data_ += char(0x30 + (i % 64));
        }
        ++n_tensors_;
    }

    std::string image() const {
        std::string s;
        raw<uint32_t>(s, 0x46554747);
        raw<uint32_t>(s, version_);
        raw<uint64_t>(s, n_tensors_);
        raw<uint64_t>(s, n_kv_);
        s += kv_;
        s += infos_;
        s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
        return s + data_;
    }

    uint64_t alignment = 32;

  private:
    template <class F> void entry(const std::string &k, uint32_t type, F &&value) {
        str(kv_, k);
        raw(kv_, type);
        value(kv_);
        ++n_kv_;
    }
    uint32_t version_;
    std::string kv_, infos_, data_;
    uint64_t n_kv_ = 0, n_tensors_ = 0;
};

}  // namespace ms_test
