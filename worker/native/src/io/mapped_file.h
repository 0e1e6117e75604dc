// A read-only memory mapping of a whole file (checkpoint shards are mapped, never copied).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ms {

class MappedFile {
  public:
    // Throws ms::Error(MS_ERR_IO) naming the path when the file cannot be opened or mapped.
    explicit MappedFile(const std::string &path);
    ~MappedFile();
    MappedFile(const MappedFile &) = delete;
    MappedFile &operator=(const MappedFile &) = delete;

    const uint8_t *data() const { return data_; }
    size_t size() const { return size_; }
    const std::string &path() const { return path_; }

  private:
    std::string path_;
    const uint8_t *data_ = nullptr;
    size_t size_ = 0;
};

// Reads a whole (small) text file such as config.json. Throws MS_ERR_IO naming the path.
std::string read_text_file(const std::string &path);
bool file_exists(const std::string &path);

}  // namespace ms
