// The pipelined weight loader (cuda/loader.cuh): bytes on the device equal the bytes in the file, for raw segments
// (mapped file and heap, odd sizes and offsets, many small chunks, one or two staging buffers per thread) and for a
// whole checkpoint uploaded through DeviceModel::upload (every tensor compared with the file read independently of
// the mapping).
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "common/error.h"
#include "cuda/device_model.cuh"
#include "cuda/loader.cuh"
#include "cuda_test_util.h"
#include "io/safetensors.h"
#include "model/synthetic_checkpoint.h"
#include "model_test_util.h"

using namespace ms_cuda_test;

namespace {

std::vector<uint8_t> device_bytes(const void *dev, size_t n) {
    std::vector<uint8_t> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), dev, n, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<uint8_t> v(n);
    for (auto &b : v) b = uint8_t(rng());
    return v;
}

struct Progress {
    std::vector<std::pair<uint64_t, uint64_t>> calls;
    static void fn(void *user, uint64_t done, uint64_t total) {
        static_cast<Progress *>(user)->calls.emplace_back(done, total);
    }
};

}  // namespace

TEST(CudaLoader, SegmentsArriveByteExactWithProgress) {
    SKIP_WITHOUT_GPU();
    ms_test::TempDir tmp;
    const std::string path = tmp.sub("blob.bin");
    const size_t file_size = (size_t(5) << 20) + 1234;
    const std::vector<uint8_t> content = random_bytes(file_size, 7);
    {
        std::ofstream f(path, std::ios::binary);
        f.write(reinterpret_cast<const char *>(content.data()), std::streamsize(content.size()));
    }
    const int fd = ::open(path.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    void *map = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    ASSERT_NE(map, MAP_FAILED);
    const auto *mapped = static_cast<const uint8_t *>(map);
    const std::vector<uint8_t> heap = random_bytes(300001, 9);

    // Odd sizes at odd offsets, out of address order, one empty; destinations packed at odd offsets too.
    struct Piece {
        const uint8_t *src;
        size_t bytes;
        bool mapped;
    };
    const std::vector<Piece> pieces = {
        {mapped + 4097, (size_t(2) << 20) + 3, true}, {heap.data() + 1, 1, false},      {mapped + 1, 4095, true},
        {heap.data() + 5, 299990, false},            {mapped + (3 << 20), 0, true},    {mapped + (size_t(2) << 20) + 4100, file_size - (size_t(2) << 20) - 4100, true},
    };
    size_t dev_total = 0;
    for (const auto &p : pieces) dev_total += p.bytes + 3;
    uint8_t *dev = nullptr;
    ASSERT_EQ(cudaMalloc(&dev, dev_total), cudaSuccess);
    for (int buffers : {1, 2}) {
        ASSERT_EQ(cudaMemset(dev, 0xA5, dev_total), cudaSuccess);
        std::vector<ms::cuda::UploadSegment> segs;
        size_t off = 1;
        uint64_t want_total = 0;
        for (const auto &p : pieces) {
            segs.push_back({p.src, dev + off, p.bytes, p.mapped});
            off += p.bytes + 2;
            want_total += p.bytes;
        }
        ms::cuda::LoaderOptions opt;
        opt.threads = 3;
        opt.chunk_bytes = 4096;
        opt.buffers_per_thread = buffers;
        Progress progress;
        const ms::cuda::LoaderStats st = ms::cuda::upload_segments(segs, 0, opt, &Progress::fn, &progress);
        EXPECT_EQ(st.bytes, want_total);
        EXPECT_GT(st.chunks, want_total / 4096);
        EXPECT_EQ(st.threads, 3);
        for (const auto &s : segs) {
            const auto got = device_bytes(s.dst, s.bytes);
            EXPECT_EQ(0, std::memcmp(got.data(), s.src, s.bytes)) << "segment of " << s.bytes << " bytes differs";
        }
        // The gaps between destinations were not written.
        const auto all = device_bytes(dev, dev_total);
        EXPECT_EQ(all[0], 0xA5);
        off = 1;
        for (const auto &p : pieces) {
            off += p.bytes;
            EXPECT_EQ(all[off], 0xA5);
            EXPECT_EQ(all[off + 1], 0xA5);
            off += 2;
        }
        ASSERT_FALSE(progress.calls.empty());
        for (size_t i = 1; i < progress.calls.size(); ++i) EXPECT_GE(progress.calls[i].first, progress.calls[i - 1].first);
        EXPECT_EQ(progress.calls.back(), std::make_pair(want_total, want_total));
    }
    cudaFree(dev);
    munmap(map, file_size);
}

TEST(CudaLoader, BadEnvironmentIsAClearError) {
    setenv("MODELSERVE_LOAD_THREADS", "0", 1);
    try {
        (void)ms::cuda::loader_options_from_env();
        ADD_FAILURE() << "MODELSERVE_LOAD_THREADS=0 was accepted";
    } catch (const ms::Error &e) {
        EXPECT_NE(std::string(e.what()).find("MODELSERVE_LOAD_THREADS"), std::string::npos) << e.what();
    }
    unsetenv("MODELSERVE_LOAD_THREADS");
    setenv("MODELSERVE_LOAD_CHUNK_MB", "3", 1);
    EXPECT_EQ(ms::cuda::loader_options_from_env().chunk_bytes, size_t(3) << 20);
    unsetenv("MODELSERVE_LOAD_CHUNK_MB");
}

// Every tensor of a sharded checkpoint, uploaded by DeviceModel::upload in 1 MiB chunks on 3 threads, compared with
// the file's bytes read with ifstream (not through the engine's mapping): bf16 and MXFP4 tensors byte for byte, the
// vectors the device keeps as fp32 by value (bf16 widens exactly), biases the MoE reads as bf16 byte for byte.
TEST(CudaLoader, DeviceModelHoldsTheCheckpointBytes) {
    SKIP_WITHOUT_GPU();
    ms_test::TempDir tmp;
    const std::string dir = tmp.sub("ckpt");
    ms::write_synthetic_checkpoint(
        ms::synthetic_spec_from_args({"--preset", "tiny-harmony", "--seed", "3", "--layers", "3", "--shards", "2"}), dir);
    setenv("MODELSERVE_LOAD_THREADS", "3", 1);
    setenv("MODELSERVE_LOAD_CHUNK_MB", "1", 1);
    auto host = ms_test::load_model(dir);
    Progress progress;
    auto dm = ms::cuda::DeviceModel::upload(*host, &Progress::fn, &progress);
    unsetenv("MODELSERVE_LOAD_THREADS");
    unsetenv("MODELSERVE_LOAD_CHUNK_MB");
    EXPECT_EQ(dm->load_stats().threads, 3);
    EXPECT_EQ(dm->load_stats().chunk_bytes, size_t(1) << 20);
    ASSERT_FALSE(progress.calls.empty());
    EXPECT_EQ(progress.calls.back().first, progress.calls.back().second);
    EXPECT_EQ(progress.calls.back().first, dm->load_stats().bytes);

    // The files, read independently.
    std::vector<std::vector<uint8_t>> images;
    std::map<std::string, ms::TensorView> file;
    for (const char *name : {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}) {
        std::ifstream f(dir + "/" + name, std::ios::binary);
        images.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
        for (const auto &t : ms::parse_safetensors(images.back().data(), images.back().size(), name)) file[t.name] = t;
    }
    int compared = 0;
    auto same = [&](const void *dev, const std::string &name, size_t offset = 0) {
        const auto it = file.find(name);
        ASSERT_NE(it, file.end()) << name;
        const ms::TensorView &t = it->second;
        const auto got = device_bytes(static_cast<const uint8_t *>(dev) + offset, t.nbytes);
        EXPECT_EQ(0, std::memcmp(got.data(), t.data, t.nbytes)) << name;
        ++compared;
    };
    auto widened = [&](const float *dev, const std::string &name, size_t offset = 0) {
        const ms::TensorView &t = file.at(name);
        const size_t n = t.nbytes / 2;
        const auto got = device_bytes(dev + offset, n * 4);
        for (size_t i = 0; i < n; ++i) {
            uint16_t b;
            std::memcpy(&b, t.data + 2 * i, 2);
            uint32_t want = uint32_t(b) << 16, have;
            std::memcpy(&have, got.data() + 4 * i, 4);
            ASSERT_EQ(have, want) << name << "[" << i << "]";
        }
        ++compared;
    };
    const ms::ModelConfig &c = dm->config();
    const size_t H = c.hidden_size, QD = size_t(c.num_attention_heads) * c.head_dim,
                 KVD = size_t(c.num_key_value_heads) * c.head_dim;
    same(dm->embed, "model.embed_tokens.weight");
    same(dm->lm_head, "lm_head.weight");
    widened(dm->final_norm, "model.norm.weight");
    for (int l = 0; l < c.num_hidden_layers; ++l) {
        const std::string p = "model.layers." + std::to_string(l) + ".";
        const ms::cuda::DeviceLayer &d = dm->layers[l];
        widened(d.attn_norm, p + "input_layernorm.weight");
        widened(d.mlp_norm, p + "post_attention_layernorm.weight");
        widened(d.sinks, p + "self_attn.sinks");
        same(d.qkv_w, p + "self_attn.q_proj.weight");
        same(d.qkv_w, p + "self_attn.k_proj.weight", QD * H * 2);
        same(d.qkv_w, p + "self_attn.v_proj.weight", (QD + KVD) * H * 2);
        widened(d.qkv_b, p + "self_attn.q_proj.bias");
        widened(d.qkv_b, p + "self_attn.k_proj.bias", QD);
        widened(d.qkv_b, p + "self_attn.v_proj.bias", QD + KVD);
        same(d.o_w, p + "self_attn.o_proj.weight");
        widened(d.o_b, p + "self_attn.o_proj.bias");
        same(d.moe.router_w, p + "mlp.router.weight");
        same(d.moe.router_b, p + "mlp.router.bias");
        same(d.moe.gate_up_blocks, p + "mlp.experts.gate_up_proj_blocks");
        same(d.moe.gate_up_scales, p + "mlp.experts.gate_up_proj_scales");
        same(d.moe.gate_up_bias, p + "mlp.experts.gate_up_proj_bias");
        same(d.moe.down_blocks, p + "mlp.experts.down_proj_blocks");
        same(d.moe.down_scales, p + "mlp.experts.down_proj_scales");
        same(d.moe.down_bias, p + "mlp.experts.down_proj_bias");
    }
    EXPECT_EQ(compared, int(file.size())) << "every tensor of the file was compared";
}
