#include "io/safetensors.h"

#include <dirent.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "io/json.h"

namespace ms {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the format's own limit
constexpr int kMaxRank = 8;

[[noreturn]] void format_error(const std::string &file, const std::string &tensor, const std::string &msg) {
    std::string where = file;
    if (!tensor.empty()) where += ": tensor '" + tensor + "'";
    throw Error(MS_ERR_FORMAT, where + ": " + msg);
}

bool parse_dtype(const std::string &s, Dtype *out) {
    if (s == "BF16") *out = Dtype::BF16;
    else if (s == "F16") *out = Dtype::F16;
    else if (s == "F32") *out = Dtype::F32;
    else if (s == "U8") *out = Dtype::U8;
    else return false;
    return true;
}

uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

}  // namespace

const char *dtype_name(Dtype d) {
    switch (d) {
        case Dtype::BF16: return "BF16";
        case Dtype::F16: return "F16";
        case Dtype::F32: return "F32";
        case Dtype::U8: return "U8";
    }
    return "?";
}

size_t dtype_size(Dtype d) {
    switch (d) {
        case Dtype::BF16:
        case Dtype::F16: return 2;
        case Dtype::F32: return 4;
        case Dtype::U8: return 1;
    }
    return 1;
}

int64_t TensorView::numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
}

std::string shape_string(const std::vector<int64_t> &shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

std::vector<TensorView> parse_safetensors(const uint8_t *data, size_t size, const std::string &file) {
    if (size < 8) format_error(file, "", "file is " + std::to_string(size) + " bytes, too short for a safetensors header");
    uint64_t header_len = read_u64_le(data);
    if (header_len > kMaxHeaderBytes) format_error(file, "", "header length " + std::to_string(header_len) + " exceeds 100 MiB");
    if (header_len > size - 8)
        format_error(file, "", "header length " + std::to_string(header_len) + " runs past the end of the file (" +
                                   std::to_string(size) + " bytes): truncated?");
    Json header = Json::parse(reinterpret_cast<const char *>(data + 8), size_t(header_len), file + " (safetensors header)");
    if (!header.is_object()) format_error(file, "", "header is not a JSON object");
    const uint8_t *base = data + 8 + header_len;
    uint64_t data_size = size - 8 - header_len;

    std::vector<TensorView> out;
    for (const auto &[name, entry] : header.members()) {
        if (name == "__metadata__") {
            if (!entry.is_object()) format_error(file, "", "__metadata__ is not an object");
            continue;
        }
        if (!entry.is_object()) format_error(file, name, "entry is not an object");
        TensorView t;
        t.name = name;
        t.file = file;
        const Json *dt = entry.find("dtype");
        if (!dt || !dt->is_string()) format_error(file, name, "missing dtype");
        if (!parse_dtype(dt->as_string(), &t.dtype))
            throw Error(MS_ERR_UNSUPPORTED, file + ": tensor '" + name + "': unsupported dtype " + dt->as_string() +
                                                " (supported: BF16, F16, F32, U8)");
        const Json *shape = entry.find("shape");
        if (!shape || !shape->is_array()) format_error(file, name, "missing shape");
        if (shape->items().size() > size_t(kMaxRank)) format_error(file, name, "rank above 8");
        uint64_t numel = 1;
        for (const Json &d : shape->items()) {
            if (!d.is_integer() || d.as_number() < 0 || d.as_number() > double(1ull << 40))
                format_error(file, name, "shape entries must be integers in [0, 2^40]");
            uint64_t dim = uint64_t(d.as_number());
            t.shape.push_back(int64_t(dim));
            if (dim != 0 && numel > (1ull << 50) / dim) format_error(file, name, "shape too large");
            numel *= dim;
        }
        const Json *offs = entry.find("data_offsets");
        if (!offs || !offs->is_array() || offs->items().size() != 2) format_error(file, name, "data_offsets must be [begin, end]");
        const Json &b = offs->items()[0], &e = offs->items()[1];
        if (!b.is_integer() || !e.is_integer() || b.as_number() < 0 || e.as_number() < b.as_number())
            format_error(file, name, "data_offsets must be integers with 0 <= begin <= end");
        uint64_t begin = uint64_t(b.as_number()), end = uint64_t(e.as_number());
        if (end > data_size)
            format_error(file, name, "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                                         ") run past the end of the data (" + std::to_string(data_size) + " bytes)");
        t.nbytes = end - begin;
        if (t.nbytes != numel * dtype_size(t.dtype))
            format_error(file, name, "holds " + std::to_string(t.nbytes) + " bytes but " + dtype_name(t.dtype) + " " +
                                         shape_string(t.shape) + " needs " + std::to_string(numel * dtype_size(t.dtype)));
        t.data = base + begin;
        out.push_back(std::move(t));
    }
    // No two tensors may share bytes.
    std::vector<const TensorView *> by_offset;
    for (const auto &t : out)
        if (t.nbytes) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(), [](auto *a, auto *b) { return a->data < b->data; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
        if (by_offset[i - 1]->data + by_offset[i - 1]->nbytes > by_offset[i]->data)
            format_error(file, by_offset[i]->name, "data overlaps tensor '" + by_offset[i - 1]->name + "'");
    }
    return out;
}

std::unique_ptr<Checkpoint> Checkpoint::open(const std::string &dir) {
    auto ck = std::unique_ptr<Checkpoint>(new Checkpoint());
    ck->dir_ = dir;
    std::string index_path = dir + "/model.safetensors.index.json";
    std::map<std::string, std::string> weight_map;  // tensor -> shard file name
    std::vector<std::string> shards;
    if (file_exists(index_path)) {
        ck->index_path_ = index_path;
        Json index = Json::parse(read_text_file(index_path), index_path);
        const Json *wm = index.find("weight_map");
        if (!wm || !wm->is_object()) throw Error(MS_ERR_FORMAT, index_path + ": missing \"weight_map\" object");
        for (const auto &[name, shard] : wm->members()) {
            if (!shard.is_string()) throw Error(MS_ERR_FORMAT, index_path + ": tensor '" + name + "': shard is not a string");
            const std::string &s = shard.as_string();
            if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..")
                throw Error(MS_ERR_FORMAT, index_path + ": tensor '" + name + "': bad shard name \"" + s + "\"");
            weight_map[name] = s;
            if (std::find(shards.begin(), shards.end(), s) == shards.end()) shards.push_back(s);
        }
        for (const auto &s : shards) {
            if (!file_exists(dir + "/" + s)) {
                std::string example;
                for (const auto &[n, f] : weight_map)
                    if (f == s) {
                        example = n;
                        break;
                    }
                throw Error(MS_ERR_IO, index_path + ": shard " + dir + "/" + s + " (holding tensor '" + example + "') is missing");
            }
        }
    } else {
        DIR *d = opendir(dir.c_str());
        if (!d) throw Error(MS_ERR_IO, dir + ": cannot open checkpoint directory");
        while (struct dirent *e = readdir(d)) {
            std::string n = e->d_name;
            if (n.size() > 12 && n.compare(n.size() - 12, 12, ".safetensors") == 0) shards.push_back(n);
        }
        closedir(d);
        std::sort(shards.begin(), shards.end());
        if (shards.empty()) throw Error(MS_ERR_IO, dir + ": no *.safetensors file and no model.safetensors.index.json");
    }
    for (const auto &s : shards) {
        std::string path = dir + "/" + s;
        ck->files_.push_back(std::make_unique<MappedFile>(path));
        const MappedFile &f = *ck->files_.back();
        for (auto &t : parse_safetensors(f.data(), f.size(), path)) {
            if (!weight_map.empty()) {
                auto it = weight_map.find(t.name);
                if (it == weight_map.end() || it->second != s)
                    throw Error(MS_ERR_FORMAT, path + ": tensor '" + t.name + "' is not listed for this shard in " + index_path);
            }
            if (ck->tensors_.count(t.name))
                throw Error(MS_ERR_FORMAT, path + ": tensor '" + t.name + "' also appears in " + ck->tensors_[t.name].file);
            std::string name = t.name;
            ck->tensors_.emplace(name, std::move(t));
        }
    }
    for (const auto &[name, shard] : weight_map)
        if (!ck->tensors_.count(name))
            throw Error(MS_ERR_FORMAT, dir + "/" + shard + ": tensor '" + name + "' listed in " + index_path + " is not in the shard");
    return ck;
}

const TensorView *Checkpoint::find(const std::string &name) const {
    auto it = tensors_.find(name);
    return it == tensors_.end() ? nullptr : &it->second;
}

const TensorView &Checkpoint::require(const std::string &name, Dtype dtype, const std::vector<int64_t> &shape) const {
    const TensorView *t = find(name);
    if (!t) {
        std::string where = index_path_.empty() ? dir_ : index_path_;
        throw Error(MS_ERR_FORMAT, where + ": tensor '" + name + "' is missing from the checkpoint");
    }
    if (t->dtype != dtype)
        throw Error(MS_ERR_FORMAT, t->file + ": tensor '" + name + "' has dtype " + dtype_name(t->dtype) + ", expected " + dtype_name(dtype));
    if (t->shape != shape)
        throw Error(MS_ERR_FORMAT, t->file + ": tensor '" + name + "' has shape " + shape_string(t->shape) + ", expected " +
                                       shape_string(shape));
    if (reinterpret_cast<uintptr_t>(t->data) % dtype_size(dtype) != 0)
        throw Error(MS_ERR_FORMAT, t->file + ": tensor '" + name + "' data is not aligned to its element size");
    return *t;
}

uint64_t Checkpoint::data_bytes() const {
    uint64_t n = 0;
    for (const auto &[_, t] : tensors_) n += t.nbytes;
    return n;
}

void Checkpoint::prefault(void (*progress)(void *, uint64_t, uint64_t), void *user) const {
    uint64_t total = 0, done = 0;
    for (const auto &f : files_) total += f->size();
    volatile uint8_t sink = 0;
    const uint64_t report_every = 64ull << 20;
    uint64_t next_report = report_every;
    for (const auto &f : files_) {
        for (size_t off = 0; off < f->size(); off += 4096) {
            sink = sink + f->data()[off];
            done += std::min<uint64_t>(4096, f->size() - off);
            if (progress && done >= next_report) {
                progress(user, done, total);
                next_report += report_every;
            }
        }
    }
    if (progress) progress(user, total, total);
}

}  // namespace ms
