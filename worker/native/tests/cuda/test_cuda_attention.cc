// Paged attention kernel vs the CPU scalar attend_paged: two sequences in one step (a decode token far into its
// sequence and a prefill chunk), shuffled block ids, a layer that is not the first of its group, sinks, fp32 and bf16
// caches, full causal and the 128-token sliding window.
#include <algorithm>
#include <numeric>

#include "cpu/attention.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

namespace {

struct Case {
    bool bf16;
    int window;
};

void run_case(const Case &c) {
    const int nh = 8, nkv = 2, hd = 64, G = nh / nkv, KVD = nkv * hd, QKV = (nh + 2 * nkv) * hd;
    const int bs = 16, layers = 2, layer = 1, n_blocks = 40;
    const long long block_stride = (long long)layers * bs * KVD, layer_off = (long long)layer * bs * KVD;
    // Sequence 0: one decode token at position 300 (needs 19 blocks); sequence 1: 40 prefill tokens at 100..139.
    std::vector<int32_t> pos, seq;
    pos.push_back(300);
    seq.push_back(0);
    for (int p = 100; p < 140; ++p) pos.push_back(p), seq.push_back(1);
    const int T = int(pos.size());
    std::vector<int32_t> perm(n_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(9));
    std::vector<int32_t> table0(perm.begin(), perm.begin() + 19), table1(perm.begin() + 19, perm.begin() + 28);
    std::vector<int32_t> tables(table0), table_off = {0, int32_t(table0.size())};
    tables.insert(tables.end(), table1.begin(), table1.end());

    const size_t cache_elems = size_t(n_blocks) * block_stride;
    const auto kf = random_floats(cache_elems, 11), vf = random_floats(cache_elems, 12);
    std::vector<uint16_t> kb(cache_elems), vb(cache_elems);
    for (size_t i = 0; i < cache_elems; ++i) kb[i] = ms::f32_to_bf16(kf[i]), vb[i] = ms::f32_to_bf16(vf[i]);
    const auto qkv = random_floats(size_t(T) * QKV, 13, -2.f, 2.f);
    const auto sinks = random_floats(nh, 14, -1.f, 3.f);
    const float scale = 0.125f;

    std::vector<float> want(size_t(T) * nh * hd);
    for (int t = 0; t < T; ++t)
        for (int kh = 0; kh < nkv; ++kh) {
            ms::PagedKvView view;
            const size_t esize = c.bf16 ? 2 : 4;
            const char *kbase = c.bf16 ? reinterpret_cast<const char *>(kb.data()) : reinterpret_cast<const char *>(kf.data());
            const char *vbase = c.bf16 ? reinterpret_cast<const char *>(vb.data()) : reinterpret_cast<const char *>(vf.data());
            view.k = kbase + (layer_off + kh * hd) * esize;
            view.v = vbase + (layer_off + kh * hd) * esize;
            view.bf16 = c.bf16;
            view.block_size = bs;
            view.block_stride = block_stride;
            view.row_stride = KVD;
            view.block_table = seq[t] == 0 ? table0.data() : table1.data();
            view.n_blocks = seq[t] == 0 ? int(table0.size()) : int(table1.size());
            const int first = c.window > 0 ? std::max(0, pos[t] - c.window + 1) : 0;
            ms::attend_paged(ms::Simd::Scalar, &qkv[size_t(t) * QKV + kh * G * hd], G, hd, scale, &sinks[kh * G], view,
                             first, pos[t], &want[size_t(t) * nh * hd + kh * G * hd]);
        }

    DeviceVec<float> dq(qkv), ds(sinks), out(want.size()), dkf(kf), dvf(vf);
    DeviceVec<uint16_t> dkb(kb), dvb(vb);
    DeviceVec<int32_t> dpos(pos), dseq(seq), dtables(tables), doff(table_off);
    ms::cuda::PagedKv kv;
    kv.k = c.bf16 ? static_cast<void *>(dkb.get()) : static_cast<void *>(dkf.get());
    kv.v = c.bf16 ? static_cast<void *>(dvb.get()) : static_cast<void *>(dvf.get());
    kv.bf16 = c.bf16;
    kv.block_size = bs;
    kv.block_stride = block_stride;
    kv.layer_off = layer_off;
    kv.tables = dtables.get();
    kv.table_off = doff.get();
    ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv, out.get(),
                              nullptr);
    EXPECT_LT(max_scaled_diff(out.host(), want), 1e-5f) << "bf16=" << c.bf16 << " window=" << c.window;
    // Every launch plan: query tiles of 8 (the 40-token chunk spans tiles shared with the decode token's sequence
    // boundary), and the key range split over 2..32 blocks (flash-decoding; more splits than 32-key tiles leaves
    // some empty), plus what plan_attention picks for this batch.
    std::vector<ms::cuda::AttentionPlan> plans = {{8, 1}, {1, 2}, {1, 3}, {1, 7}, {1, 32},
                                                  ms::cuda::plan_attention(T, nkv, 40), ms::cuda::plan_attention(1, nkv, 1)};
    for (const auto &plan : plans) {
        DeviceVec<float> o2(want.size()), scratch(std::max<size_t>(1, ms::cuda::attention_scratch_floats(T, nh, hd, plan)));
        // Twice on the same scratch: the split merge's counters must be back at zero after each launch.
        for (int rep = 0; rep < 2; ++rep) {
            ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                                      o2.get(), plan, scratch.get(), nullptr);
            EXPECT_LT(max_scaled_diff(o2.host(), want), 1e-5f) << "bf16=" << c.bf16 << " window=" << c.window
                                                                << " query_tile=" << plan.query_tile
                                                                << " splits=" << plan.splits << " rep=" << rep;
        }
    }
}

}  // namespace

TEST(CudaAttention, MatchesCpuFullCausalFp32) {
    SKIP_WITHOUT_GPU();
    run_case({false, 0});
}
TEST(CudaAttention, MatchesCpuSlidingWindowBf16) {
    SKIP_WITHOUT_GPU();
    run_case({true, 128});
}
TEST(CudaAttention, MatchesCpuSlidingWindowFp32) {
    SKIP_WITHOUT_GPU();
    run_case({false, 128});
}
