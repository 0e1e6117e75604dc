// bf16 projections vs the CPU scalar matmul: the fp32-activation GEMV at every batch size 1..9 (fp32 sums in another
// order: tight bound), and the tensor-core GEMM (activations rounded to bf16: a bound from that rounding), both with
// bias and with accumulation into the output.
#include "cpu/matmul_bf16.h"
#include "cuda/kernels.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;

namespace {
std::vector<float> cpu_matmul(const std::vector<float> &x, int T, int K, const std::vector<uint16_t> &w,
                              const std::vector<float> &bias, int N) {
    std::vector<float> y(size_t(T) * N);
    ms::matmul_bf16_rows(ms::Simd::Scalar, x.data(), T, K, w.data(), bias.data(), K, 0, N, y.data(), N);
    return y;
}
}  // namespace

TEST(CudaMatmul, GemvMatchesCpuAtEveryBatchSize) {
    SKIP_WITHOUT_GPU();
    const int K = 2880, N = 333;
    const auto w = random_bf16(size_t(N) * K, 3, 0.05f);
    const auto bias = random_floats(N, 4);
    DeviceVec<uint16_t> dw(w);
    DeviceVec<float> db(bias);
    for (int T : {1, 2, 3, 5, 8, 9}) {
        const auto x = random_floats(size_t(T) * K, 10 + T);
        const auto want = cpu_matmul(x, T, K, w, bias, N);
        DeviceVec<float> dx(x), out(size_t(T) * N);
        ms::cuda::gemv_bf16(dx.get(), T, K, dw.get(), db.get(), N, out.get(), false, nullptr);
        EXPECT_LT(max_scaled_diff(out.host(), want), 2e-5f) << "T=" << T;
        // Accumulating a second time doubles the result.
        ms::cuda::gemv_bf16(dx.get(), T, K, dw.get(), db.get(), N, out.get(), true, nullptr);
        std::vector<float> twice(want);
        for (auto &v : twice) v *= 2;
        EXPECT_LT(max_scaled_diff(out.host(), twice), 4e-5f) << "T=" << T;
    }
}

TEST(CudaMatmul, TensorCoreGemmMatchesCpuWithinBf16Rounding) {
    SKIP_WITHOUT_GPU();
    const int T = 77, K = 4096, N = 250;  // tails in every dimension of the 64x64x32 tiles
    const auto w = random_bf16(size_t(N) * K, 5, 0.05f);
    const auto bias = random_floats(N, 6);
    const auto x = random_floats(size_t(T) * K, 7);
    const auto want = cpu_matmul(x, T, K, w, bias, N);
    DeviceVec<uint16_t> dw(w), scratch(size_t(T) * K);
    DeviceVec<float> db(bias), dx(x), out(size_t(T) * N);
    ms::cuda::matmul_bf16(dx.get(), T, K, dw.get(), db.get(), N, out.get(), false, false, scratch.get(), nullptr);
    // |sum| of 4096 products of |x|<=1, |w|<=0.05, with each x rounded by <= 2^-9 relative: error << 0.05.
    EXPECT_LT(max_scaled_diff(out.host(), want), 2e-2f);
    // The exact flag routes the same call to the fp32 path.
    ms::cuda::matmul_bf16(dx.get(), T, K, dw.get(), db.get(), N, out.get(), false, true, scratch.get(), nullptr);
    EXPECT_LT(max_scaled_diff(out.host(), want), 2e-5f);
    // Accumulate on the tensor-core path: out (exact result) + gemm result = 2 * want.
    ms::cuda::matmul_bf16(dx.get(), T, K, dw.get(), db.get(), N, out.get(), true, false, scratch.get(), nullptr);
    std::vector<float> twice(want);
    for (auto &v : twice) v *= 2;
    EXPECT_LT(max_scaled_diff(out.host(), twice), 4e-2f);
}

TEST(CudaMatmul, TensorCoreGemmSplitKMatchesCpuWithinBf16Rounding) {
    SKIP_WITHOUT_GPU();
    // Small grids split K over several blocks (partials added in a fixed order by a second kernel); K = 2888 leaves
    // a partial last 32-deep step, T = 9 and N = 70 partial tiles.
    struct Shape {
        int T, K, N;
    };
    for (const Shape sh : {Shape{40, 4096, 250}, Shape{77, 2888, 130}, Shape{9, 200, 70}, Shape{64, 2880, 333}}) {
        const auto w = random_bf16(size_t(sh.N) * sh.K, 21, 0.05f);
        const auto bias = random_floats(sh.N, 22);
        const auto x = random_floats(size_t(sh.T) * sh.K, 23);
        const auto want = cpu_matmul(x, sh.T, sh.K, w, bias, sh.N);
        DeviceVec<uint16_t> dw(w), scratch(size_t(sh.T) * sh.K);
        DeviceVec<float> db(bias), dx(x), out(size_t(sh.T) * sh.N), split(ms::cuda::gemm_split_scratch_floats());
        ms::cuda::matmul_bf16(dx.get(), sh.T, sh.K, dw.get(), db.get(), sh.N, out.get(), false, false, scratch.get(),
                              split.get(), nullptr);
        EXPECT_LT(max_scaled_diff(out.host(), want), 2e-2f) << "T=" << sh.T << " K=" << sh.K << " N=" << sh.N;
        ms::cuda::matmul_bf16(dx.get(), sh.T, sh.K, dw.get(), db.get(), sh.N, out.get(), true, false, scratch.get(),
                              split.get(), nullptr);
        std::vector<float> twice(want);
        for (auto &v : twice) v *= 2;
        EXPECT_LT(max_scaled_diff(out.host(), twice), 4e-2f) << "T=" << sh.T << " K=" << sh.K << " N=" << sh.N;
    }
}
