// rmsnorm kernel vs the CPU scalar reference, with and without a row gather.
#include "cpu/rmsnorm.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

TEST(CudaRmsnorm, MatchesCpuScalar) {
    SKIP_WITHOUT_GPU();
    const int rows = 7, width = 2880;
    const auto x = random_floats(size_t(rows) * width, 1, -30.f, 30.f), gain = random_floats(width, 2, 0.5f, 1.5f);
    const std::vector<int32_t> gather = {6, 0, 3};
    std::vector<float> want(size_t(rows) * width), want_g(gather.size() * width);
    for (int r = 0; r < rows; ++r) ms::rmsnorm(ms::Simd::Scalar, &x[size_t(r) * width], gain.data(), width, 1e-5f, &want[size_t(r) * width]);
    for (size_t i = 0; i < gather.size(); ++i) std::copy_n(&want[size_t(gather[i]) * width], width, &want_g[i * width]);
    DeviceVec<float> dx(x), dg(gain), out(x.size()), out_g(want_g.size());
    DeviceVec<int32_t> drows(gather);
    ms::cuda::rmsnorm(dx.get(), nullptr, rows, width, dg.get(), 1e-5f, out.get(), nullptr);
    ms::cuda::rmsnorm(dx.get(), drows.get(), int(gather.size()), width, dg.get(), 1e-5f, out_g.get(), nullptr);
    EXPECT_LT(max_scaled_diff(out.host(), want), 1e-5f);
    EXPECT_LT(max_scaled_diff(out_g.host(), want_g), 1e-5f);
}
