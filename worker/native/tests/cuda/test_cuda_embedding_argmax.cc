// The embedding gather (exact bf16 -> fp32) and greedy argmax (first maximum on ties, as std::max_element).
#include <algorithm>

#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

TEST(CudaEmbedding, GathersRowsExactly) {
    SKIP_WITHOUT_GPU();
    const int V = 1000, H = 96;
    const auto table = random_bf16(size_t(V) * H, 31);
    const std::vector<int32_t> tokens = {999, 0, 17, 17, 512};
    DeviceVec<uint16_t> dt(table);
    DeviceVec<int32_t> dtok(tokens);
    DeviceVec<float> out(tokens.size() * H);
    ms::cuda::embedding(dt.get(), dtok.get(), int(tokens.size()), H, out.get(), nullptr);
    const auto got = out.host();
    for (size_t t = 0; t < tokens.size(); ++t)
        for (int i = 0; i < H; ++i) ASSERT_EQ(got[t * H + i], ms::bf16_to_f32(table[size_t(tokens[t]) * H + i]));
}

TEST(CudaArgmax, FirstMaximumOfEachRow) {
    SKIP_WITHOUT_GPU();
    const int V = 201088, R = 4;
    auto logits = random_floats(size_t(R) * V, 32, -10.f, 10.f);
    logits[size_t(1) * V + 5] = 50.f;  // a tie: the lower index wins
    logits[size_t(1) * V + 70000] = 50.f;
    logits[size_t(2) * V + V - 1] = 99.f;  // the last element
    DeviceVec<float> dl(logits);
    DeviceVec<int32_t> ids(R);
    ms::cuda::argmax_rows(dl.get(), R, V, ids.get(), nullptr);
    const auto got = ids.host();
    for (int r = 0; r < R; ++r) {
        const float *row = &logits[size_t(r) * V];
        EXPECT_EQ(got[r], int(std::max_element(row, row + V) - row)) << "row " << r;
    }
}
