// YaRN RoPE + KV write kernel vs the CPU (make_rope / rope_cos_sin / rope_apply scalar): rotated q and k in place,
// and k, v stored at the right paged slots (fp32 exactly as rotated; bf16 as round-to-nearest of the same).
#include "cpu/rope.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

namespace {
void run(bool bf16) {
    const int nh = 8, nkv = 2, hd = 64, KVD = nkv * hd, QKV = (nh + 2 * nkv) * hd, bs = 16, layers = 3, layer = 2;
    const int n_blocks = 8;
    ms::RopeParams rp;
    rp.head_dim = hd;
    rp.theta = 150000;
    rp.factor = 32;
    const ms::Rope rope = ms::make_rope(rp);
    const std::vector<int32_t> pos = {0, 5, 17, 60, 127, 4000}, seq = {0, 0, 0, 1, 1, 1};
    const int T = int(pos.size());
    // seq 0 uses blocks 3,1 ; seq 1 uses blocks 7,6,5,4,2,0 for its first 6 blocks... position 4000 -> block 250:
    // give seq 1 a table of 251 entries that maps block i to (i % 4) + 4.
    std::vector<int32_t> tables = {3, 1};
    std::vector<int32_t> table_off = {0, 2};
    for (int i = 0; i < 251; ++i) tables.push_back(4 + i % 4);
    const auto qkv = random_floats(size_t(T) * QKV, 21, -3.f, 3.f);

    std::vector<float> want(qkv);
    const long long block_stride = (long long)layers * bs * KVD, layer_off = (long long)layer * bs * KVD;
    std::vector<float> want_k(size_t(n_blocks) * block_stride, 0.f), want_v(want_k);
    for (int t = 0; t < T; ++t) {
        std::vector<float> cs(hd);
        ms::rope_cos_sin(rope, pos[t], cs.data());
        float *row = &want[size_t(t) * QKV];
        ms::rope_apply(ms::Simd::Scalar, rope, cs.data(), row, nh);
        ms::rope_apply(ms::Simd::Scalar, rope, cs.data(), row + nh * hd, nkv);
        const int block = tables[table_off[seq[t]] + pos[t] / bs];
        const long long off = block * block_stride + layer_off + (long long)(pos[t] % bs) * KVD;
        for (int j = 0; j < KVD; ++j) {
            float k = row[nh * hd + j], v = row[nh * hd + KVD + j];
            if (bf16) k = ms::bf16_to_f32(ms::f32_to_bf16(k)), v = ms::bf16_to_f32(ms::f32_to_bf16(v));
            want_k[off + j] = k;
            want_v[off + j] = v;
        }
    }

    DeviceVec<float> dq(qkv), dfreq(rope.inv_freq), cs(size_t(T) * hd);
    DeviceVec<int32_t> dpos(pos), dseq(seq), dtables(tables), doff(table_off);
    const size_t cache = size_t(n_blocks) * block_stride;
    DeviceVec<float> kf(cache), vf(cache);
    DeviceVec<uint16_t> kb(cache), vb(cache);
    ms::cuda::PagedKv kv;
    kv.k = bf16 ? static_cast<void *>(kb.get()) : static_cast<void *>(kf.get());
    kv.v = bf16 ? static_cast<void *>(vb.get()) : static_cast<void *>(vf.get());
    kv.bf16 = bf16;
    kv.block_size = bs;
    kv.block_stride = block_stride;
    kv.layer_off = layer_off;
    kv.tables = dtables.get();
    kv.table_off = doff.get();
    ms::cuda::rope_cos_sin(dpos.get(), T, dfreq.get(), rope.concentration, hd, cs.get(), nullptr);
    ms::cuda::rope_and_kv_write(dq.get(), T, nh, nkv, hd, cs.get(), dpos.get(), dseq.get(), kv, nullptr);
    EXPECT_LT(max_scaled_diff(dq.host(), want), 1e-5f);
    std::vector<float> got_k, got_v;
    if (bf16) {
        for (uint16_t h : kb.host()) got_k.push_back(ms::bf16_to_f32(h));
        for (uint16_t h : vb.host()) got_v.push_back(ms::bf16_to_f32(h));
    } else {
        got_k = kf.host();
        got_v = vf.host();
    }
    // bf16: one unit in the last place where the fp32 inputs differ in their last bits (2^-8 relative).
    EXPECT_LT(max_scaled_diff(got_k, want_k), bf16 ? 8e-3f : 1e-5f);
    EXPECT_LT(max_scaled_diff(got_v, want_v), bf16 ? 8e-3f : 1e-5f);
}
}  // namespace

TEST(CudaRopeKv, Fp32Cache) {
    SKIP_WITHOUT_GPU();
    run(false);
}
TEST(CudaRopeKv, Bf16Cache) {
    SKIP_WITHOUT_GPU();
    run(true);
}
