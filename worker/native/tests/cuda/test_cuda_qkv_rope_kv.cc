// The fused decode-step q/k/v projection + RoPE + KV write (qkv_rope_kv.cu) against the two kernels it replaces
// (matmul_bf16's GEMV, then rope_and_kv_write) on the same inputs: the projected-and-rotated rows and both caches
// must be bitwise equal, at every batch size it takes, with and without a bias, for fp32 and bf16 caches. The two
// unfused kernels are themselves checked against the CPU (test_cuda_matmul.cc, test_cuda_rope_kv.cc).
#include <cstring>

#include "cpu/rope.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

namespace {

void run(int T, bool bf16, bool with_bias) {
    SCOPED_TRACE("T " + std::to_string(T) + (bf16 ? " bf16" : " fp32") + (with_bias ? " bias" : " no bias"));
    // gpt-oss-like head shape (64 query heads of 64 over 8 kv heads), a smaller hidden size.
    const int nh = 16, nkv = 4, hd = 64, K = 512, KVD = nkv * hd, QKV = (nh + 2 * nkv) * hd, bs = 16, layers = 2;
    const int n_blocks = 12;
    ASSERT_TRUE(ms::cuda::qkv_rope_kv_fusable(T, K, hd));
    ms::RopeParams rp;
    rp.head_dim = hd;
    rp.theta = 150000;
    rp.factor = 32;
    const ms::Rope rope = ms::make_rope(rp);
    std::vector<int32_t> pos, seq;  // tokens of up to 3 sequences at scattered positions
    for (int t = 0; t < T; ++t) {
        seq.push_back(t % 3);
        pos.push_back(7 + 29 * t + (t % 3) * 3);
    }
    std::vector<int32_t> tables, table_off;
    for (int s = 0; s < 3; ++s) {
        table_off.push_back(int32_t(tables.size()));
        for (int b = 0; b < 16; ++b) tables.push_back((b * 5 + s * 7) % n_blocks);
    }
    const auto x = random_floats(size_t(T) * K, 31 + T, -2.f, 2.f);
    const auto w = random_bf16(size_t(QKV) * K, 32, 0.08f);
    const auto bias = random_floats(QKV, 33, -0.5f, 0.5f);

    DeviceVec<float> dx(x), db(bias), dfreq(rope.inv_freq), cs(size_t(T) * hd);
    DeviceVec<uint16_t> dw(w);
    DeviceVec<int32_t> dpos(pos), dseq(seq), dtables(tables), doff(table_off);
    ms::cuda::rope_cos_sin(dpos.get(), T, dfreq.get(), rope.concentration, hd, cs.get(), nullptr);
    const long long block_stride = (long long)layers * bs * KVD;
    const size_t cache = size_t(n_blocks) * block_stride;
    struct Out {
        DeviceVec<float> qkv, k, v;
        Out(size_t q, size_t c) : qkv(q), k(c), v(c) {}
    } plain(size_t(T) * QKV, cache), fused(size_t(T) * QKV, cache);  // fp32-sized caches: bf16 fits
    auto paged = [&](Out &o) {
        ms::cuda::PagedKv kv;
        kv.k = o.k.get();
        kv.v = o.v.get();
        kv.bf16 = bf16;
        kv.block_size = bs;
        kv.block_stride = block_stride;
        kv.layer_off = (long long)bs * KVD;  // the second layer of the group
        kv.tables = dtables.get();
        kv.table_off = doff.get();
        return kv;
    };
    const float *b = with_bias ? db.get() : nullptr;
    ms::cuda::matmul_bf16(dx.get(), T, K, dw.get(), b, QKV, plain.qkv.get(), false, false, nullptr, nullptr);
    ms::cuda::rope_and_kv_write(plain.qkv.get(), T, nh, nkv, hd, cs.get(), dpos.get(), dseq.get(), paged(plain), nullptr);
    ms::cuda::qkv_rope_kv(dx.get(), T, K, dw.get(), b, nh, nkv, hd, cs.get(), dpos.get(), dseq.get(), paged(fused),
                          fused.qkv.get(), nullptr);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    auto bits_equal = [](const std::vector<float> &a, const std::vector<float> &c) {
        return a.size() == c.size() && std::memcmp(a.data(), c.data(), a.size() * sizeof(float)) == 0;
    };
    const auto pq = plain.qkv.host(), fq = fused.qkv.host();
    EXPECT_TRUE(bits_equal(pq, fq)) << "qkv max scaled diff " << max_scaled_diff(fq, pq);
    EXPECT_TRUE(bits_equal(plain.k.host(), fused.k.host())) << "k cache differs";
    EXPECT_TRUE(bits_equal(plain.v.host(), fused.v.host())) << "v cache differs";
    // The check can fail: the rotation and the cache writes happened (not all zero where tokens were written).
    const auto kc = fused.k.host();
    size_t nonzero = 0;
    for (float f : kc) nonzero += f != 0.f;
    EXPECT_GE(nonzero, size_t(T) * KVD / 2);
}

}  // namespace

TEST(CudaQkvRopeKv, FusedEqualsGemvThenRopeBitwise) {
    SKIP_WITHOUT_GPU();
    for (int T : {1, 2, 3, 8})
        for (bool bf16 : {false, true}) run(T, bf16, true);
    run(1, false, false);
    run(5, true, false);
}

TEST(CudaQkvRopeKv, NotFusableShapesAreRefused) {
    EXPECT_FALSE(ms::cuda::qkv_rope_kv_fusable(9, 512, 64));  // prefill chunks: GEMM + rope kernel
    EXPECT_FALSE(ms::cuda::qkv_rope_kv_fusable(0, 512, 64));
    EXPECT_FALSE(ms::cuda::qkv_rope_kv_fusable(1, 500, 64));  // K not a multiple of 8
    EXPECT_FALSE(ms::cuda::qkv_rope_kv_fusable(1, 512, 36));  // half a head not a multiple of 4
}
