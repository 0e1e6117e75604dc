// Paged attention kernel vs the CPU scalar attend_paged: two sequences in one step (a decode token far into its
// sequence and a prefill chunk), shuffled block ids, a layer that is not the first of its group, sinks, fp32 and bf16
// caches, full causal and the 128-token sliding window.
// The tensor-core prefill kernel (attention_prefill.cu) vs the CPU reference and vs the CUDA-core kernel: chunked
// prefill (chunks of 1..300 tokens at non-zero positions, earlier context in the cache), several sequences of
// different lengths in one launch (query tiles straddle them), GQA groups 8, 4, 3 and 16, block sizes 8, 16 and 32.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>

#include "common/error.h"
#include "cpu/attention.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

namespace {

// The tensor-core kernel rounds q and the softmax weights p to bf16 (K and V are bf16 in the cache already). Against a
// reference on the same bf16 q (same rounding), only p's rounding remains: |sum_j dp_j v_j| / l <= 2^-8 max|v| < 3.9e-3
// (bf16 unit roundoff, |v| <= 1), hence kTcTolerance; q's own rounding adds about 1e-3 against the fp32-q reference
// and the CUDA-core kernel (1.7e-3 at most in a host emulation of the kernel on these inputs): kTcExactTolerance.
constexpr float kTcTolerance = 4e-3f, kTcExactTolerance = 5e-3f;

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
    // The tensor-core prefill plan runs the CUDA-core kernel on the fp32 cache (unsupported there) and the tensor-core
    // one on bf16 (q and the softmax weights rounded to bf16: kTcExactTolerance).
    std::vector<ms::cuda::AttentionPlan> plans = {{8, 1}, {1, 2}, {1, 3}, {1, 7}, {1, 32}, {8, 1, true},
                                                  ms::cuda::plan_attention(T, nkv, 40), ms::cuda::plan_attention(1, nkv, 1)};
    for (const auto &plan : plans) {
        DeviceVec<float> o2(want.size()), scratch(std::max<size_t>(1, ms::cuda::attention_scratch_floats(T, nh, hd, plan)));
        const bool tc = plan.tensor_cores && ms::cuda::prefill_attention_supported(nh, nkv, hd, kv);
        // Twice on the same scratch: the split merge's counters must be back at zero after each launch.
        for (int rep = 0; rep < 2; ++rep) {
            ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                                      o2.get(), plan, scratch.get(), nullptr);
            EXPECT_LT(max_scaled_diff(o2.host(), want), tc ? kTcExactTolerance : 1e-5f)
                << "bf16=" << c.bf16 << " window=" << c.window << " query_tile=" << plan.query_tile
                << " splits=" << plan.splits << " tensor_cores=" << plan.tensor_cores << " rep=" << rep;
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

namespace {

struct Chunk {
    int start, n;  // this step's tokens of one sequence: positions start .. start + n - 1 (earlier ones are cached)
};
struct PrefillCase {
    int nh, nkv, bs, window;
    std::vector<Chunk> chunks;
};

std::string describe(const PrefillCase &c) {
    std::string d = "nh=" + std::to_string(c.nh) + " nkv=" + std::to_string(c.nkv) + " bs=" + std::to_string(c.bs) +
                    " window=" + std::to_string(c.window) + " chunks=";
    for (const auto &ch : c.chunks) d += std::to_string(ch.start) + "+" + std::to_string(ch.n) + " ";
    return d;
}

void run_prefill_case(const PrefillCase &c, uint32_t seed) {
    SCOPED_TRACE(describe(c));
    const int nh = c.nh, nkv = c.nkv, hd = 64, G = nh / nkv, KVD = nkv * hd, QKV = (nh + 2 * nkv) * hd;
    const int bs = c.bs, layers = 2, layer = 1;
    const long long block_stride = (long long)layers * bs * KVD, layer_off = (long long)layer * bs * KVD;
    std::vector<int32_t> pos, seq;
    std::vector<int> blocks_of;
    int n_blocks = 3;  // a few never referenced
    for (size_t i = 0; i < c.chunks.size(); ++i) {
        for (int p = c.chunks[i].start; p < c.chunks[i].start + c.chunks[i].n; ++p)
            pos.push_back(p), seq.push_back(int(i));
        blocks_of.push_back((c.chunks[i].start + c.chunks[i].n + bs - 1) / bs);
        n_blocks += blocks_of.back();
    }
    const int T = int(pos.size());
    std::vector<int32_t> perm(n_blocks);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), std::mt19937(seed));
    std::vector<int32_t> tables, table_off;
    for (size_t i = 0; i < c.chunks.size(); ++i) {
        const int at = int(tables.size());
        table_off.push_back(at);
        tables.insert(tables.end(), perm.begin() + at, perm.begin() + at + blocks_of[i]);
    }

    const size_t cache_elems = size_t(n_blocks) * block_stride;
    const auto kb = random_bf16(cache_elems, seed + 1), vb = random_bf16(cache_elems, seed + 2);
    const auto qkv = random_floats(size_t(T) * QKV, seed + 3, -2.f, 2.f);
    const auto sinks = random_floats(nh, seed + 4, -1.f, 3.f);
    std::vector<float> qkv_q16(qkv);  // q as the tensor cores see it
    for (auto &x : qkv_q16) x = ms::bf16_to_f32(ms::f32_to_bf16(x));
    const float scale = 0.125f;

    auto reference = [&](const std::vector<float> &q) {
        std::vector<float> r(size_t(T) * nh * hd);
        for (int t = 0; t < T; ++t)
            for (int kh = 0; kh < nkv; ++kh) {
                ms::PagedKvView view;
                view.k = kb.data() + layer_off + kh * hd;
                view.v = vb.data() + layer_off + kh * hd;
                view.bf16 = true;
                view.block_size = bs;
                view.block_stride = block_stride;
                view.row_stride = KVD;
                view.block_table = tables.data() + table_off[seq[t]];
                view.n_blocks = blocks_of[seq[t]];
                const int first = c.window > 0 ? std::max(0, pos[t] - c.window + 1) : 0;
                ms::attend_paged(ms::Simd::Scalar, &q[size_t(t) * QKV + kh * G * hd], G, hd, scale, &sinks[kh * G],
                                 view, first, pos[t], &r[size_t(t) * nh * hd + kh * G * hd]);
            }
        return r;
    };
    const auto want = reference(qkv), want_q16 = reference(qkv_q16);

    DeviceVec<float> dq(qkv), ds(sinks);
    DeviceVec<uint16_t> dkb(kb), dvb(vb);
    DeviceVec<int32_t> dpos(pos), dseq(seq), dtables(tables), doff(table_off);
    ms::cuda::PagedKv kv;
    kv.k = dkb.get();
    kv.v = dvb.get();
    kv.bf16 = true;
    kv.block_size = bs;
    kv.block_stride = block_stride;
    kv.layer_off = layer_off;
    kv.tables = dtables.get();
    kv.table_off = doff.get();
    ASSERT_TRUE(ms::cuda::prefill_attention_supported(nh, nkv, hd, kv));

    // Tensor-core kernel, through the dispatch and directly; twice (the output is fully rewritten: bitwise equal).
    DeviceVec<float> o_tc(want.size()), o_direct(want.size()), o_old(want.size());
    const ms::cuda::AttentionPlan tc_plan{8, 1, true}, old_plan{8, 1, false};
    ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                              o_tc.get(), tc_plan, nullptr, nullptr);
    const auto got = o_tc.host();
    EXPECT_LT(max_scaled_diff(got, want_q16), kTcTolerance) << "vs the CPU on bf16 q";
    EXPECT_LT(max_scaled_diff(got, want), kTcExactTolerance) << "vs the CPU on fp32 q";
    ms::cuda::paged_attention_prefill(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                                      o_direct.get(), nullptr);
    const auto again = o_direct.host();
    EXPECT_EQ(std::memcmp(again.data(), got.data(), got.size() * sizeof(float)), 0) << "second launch differs";

    // The CUDA-core kernel (MODELSERVE_CUDA_PREFILL_ATTN=0; the tensor-core one is the default) on the same batch.
    ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                              o_old.get(), old_plan, nullptr, nullptr);
    const auto old = o_old.host();
    EXPECT_LT(max_scaled_diff(old, want), 1e-5f) << "CUDA-core kernel vs the CPU";
    EXPECT_LT(max_scaled_diff(got, old), kTcExactTolerance) << "tensor-core vs CUDA-core kernel";

    // What plan_attention picks for this step (either kernel, by MODELSERVE_CUDA_PREFILL_ATTN).
    int max_n = 0;
    for (const auto &ch : c.chunks) max_n = std::max(max_n, ch.n);
    const auto plan = ms::cuda::plan_attention(T, nkv, max_n);
    DeviceVec<float> o_plan(want.size()),
        scratch(std::max<size_t>(1, ms::cuda::attention_scratch_floats(T, nh, hd, plan)));
    ms::cuda::paged_attention(dq.get(), T, nh, nkv, hd, ds.get(), scale, c.window, dpos.get(), dseq.get(), kv,
                              o_plan.get(), plan, scratch.get(), nullptr);
    if (plan.tensor_cores)
        EXPECT_LT(max_scaled_diff(o_plan.host(), want_q16), kTcTolerance) << "planned";
    else
        EXPECT_LT(max_scaled_diff(o_plan.host(), want), 1e-5f) << "planned";
}

// Sequences of very different lengths in one step, in an order that makes query tiles straddle them: a long chunk
// from position 0, chunks continuing earlier context, decode tokens (chunks of 1) and chunks around the tile sizes.
const std::vector<Chunk> kMixedChunks = {{40, 300}, {517, 1}, {100, 37}, {0, 1}, {250, 64},
                                         {3, 129}, {130, 16}, {0, 15}, {61, 2}, {700, 9}};

}  // namespace

TEST(CudaAttention, PrefillTensorCoresFullCausalGroup8) {
    SKIP_WITHOUT_GPU();
    run_prefill_case({16, 2, 16, 0, kMixedChunks}, 21);
}
TEST(CudaAttention, PrefillTensorCoresSlidingGroup8) {
    SKIP_WITHOUT_GPU();
    run_prefill_case({16, 2, 16, 128, kMixedChunks}, 22);
    run_prefill_case({16, 2, 32, 128, kMixedChunks}, 23);
    run_prefill_case({8, 1, 8, 128, {{0, 300}, {129, 127}, {1000, 1}}}, 24);  // one kv head, blocks of 8
}
TEST(CudaAttention, PrefillTensorCoresOtherGroups) {
    SKIP_WITHOUT_GPU();
    run_prefill_case({8, 2, 16, 0, kMixedChunks}, 31);    // G = 4: 32 tokens per tile
    run_prefill_case({6, 2, 32, 128, kMixedChunks}, 32);  // G = 3: 42 tokens per tile, 2 rows of padding
    run_prefill_case({32, 2, 16, 128, kMixedChunks}, 33); // G = 16: 8 tokens per tile, a token per warp
    run_prefill_case({4, 4, 16, 0, {{5, 260}, {300, 1}, {0, 131}}}, 34);  // G = 1: 128 tokens per tile
}
TEST(CudaAttention, PrefillTensorCoresRandomChunks) {
    SKIP_WITHOUT_GPU();
    for (uint32_t seed = 0; seed < 4; ++seed) {
        std::mt19937 rng(100 + seed);
        std::vector<Chunk> chunks(1 + rng() % 5);
        for (auto &ch : chunks) ch = {int(rng() % 600), 1 + int(rng() % 300)};
        run_prefill_case({16, 2, seed % 2 ? 32 : 16, seed % 2 ? 0 : 128, chunks}, 40 + seed);
    }
}
TEST(CudaAttention, PrefillTensorCoresRejectsOtherHeadDims) {
    SKIP_WITHOUT_GPU();
    ms::cuda::PagedKv kv;
    kv.bf16 = true;
    EXPECT_FALSE(ms::cuda::prefill_attention_supported(8, 2, 128, kv));
    EXPECT_THROW(ms::cuda::paged_attention_prefill(nullptr, 4, 8, 2, 128, nullptr, 1.f, 0, nullptr, nullptr, kv,
                                                   nullptr, nullptr),
                 ms::Error);
    kv.bf16 = false;  // fp32 cache
    EXPECT_FALSE(ms::cuda::prefill_attention_supported(8, 2, 64, kv));
    kv.bf16 = true;
    EXPECT_TRUE(ms::cuda::prefill_attention_supported(8, 2, 64, kv));
}
