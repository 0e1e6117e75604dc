// safetensors reader: a file is an 8-byte little-endian header length N, N bytes of JSON
// ({name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}), then the data; offsets are relative to
// the data. A checkpoint is one file or several shards listed by model.safetensors.index.json. Everything is
// validated before a byte of tensor data is used; failures name the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/mapped_file.h"

namespace ms {

enum class Dtype { BF16, F16, F32, U8 };
const char *dtype_name(Dtype d);
size_t dtype_size(Dtype d);

struct TensorView {
    std::string name;
    std::string file;  // path of the shard holding it
    Dtype dtype = Dtype::U8;
    std::vector<int64_t> shape;
    const uint8_t *data = nullptr;  // inside the shard's mapping
    uint64_t nbytes = 0;
    int64_t numel() const;
};

std::string shape_string(const std::vector<int64_t> &shape);

// Parses and validates the image of one safetensors file (`data` = the whole file). `file` names it in errors.
// Throws ms::Error(MS_ERR_FORMAT or MS_ERR_UNSUPPORTED). Safe on arbitrary bytes (fuzzed).
std::vector<TensorView> parse_safetensors(const uint8_t *data, size_t size, const std::string &file);

class Checkpoint {
  public:
    // Opens `dir`: the shards named by model.safetensors.index.json when present, else every *.safetensors file.
    static std::unique_ptr<Checkpoint> open(const std::string &dir);

    const std::string &dir() const { return dir_; }
    const TensorView *find(const std::string &name) const;
    // The tensor with that dtype and shape, or ms::Error(MS_ERR_FORMAT) naming the file and the tensor.
    const TensorView &require(const std::string &name, Dtype dtype, const std::vector<int64_t> &shape) const;
    const std::map<std::string, TensorView> &tensors() const { return tensors_; }
    uint64_t data_bytes() const;
    // Reads every mapped page once (so the first step does not page-fault), reporting progress.
    void prefault(void (*progress)(void *, uint64_t, uint64_t), void *user) const;

  private:
    std::string dir_;
    std::vector<std::unique_ptr<MappedFile>> files_;
    std::map<std::string, TensorView> tensors_;
    std::string index_path_;  // "" when there is no index
};

}  // namespace ms
