// GGUF matrix kernels (src/cuda/gguf) vs the CPU, every weight type, both kernel paths (GEMV with 1, 2, 4 and 8 warps
// per row and the automatic choice; tiled), at T = 1, 2, 3, 7, 8, 33, 130 and N = 1, 5, 576, 1537 (no multiple of a
// tile) with K from 96 (3 blocks, less than one GEMV chunk) to 2080 (a last chunk of one block).
//
// Two references per case:
// 1. Exact: double-precision sums of the CPU's scalar dequantization (ms::dequantize_row) times the fp32 activations,
//    which is what the CUDA kernels compute up to fp32 rounding. Bound: |y - ref| <= 2 K 2^-24 sum_k |w_k x_k| (twice
//    the worst case of a length-K fp32 dot product; for Q4_1 the magnitudes are of d q and m separately, since the
//    kernel adds d sum q x and m sum x). On random data the errors are far smaller; the largest ratio is printed.
// 2. The CPU engine's scalar kernel (ms::matmul_rows, Simd::Scalar). Float types: the same bound twice over. Quantized
//    types: the CPU multiplies int8-quantized activations (per 32-block, scale fp16(amax / 127)), so the bound adds
//    that quantization's error: sum_k |w_k| amax_b(k) (1/254 + 2^-11), and for Q4_1 the fp16 rounding of the block
//    sums the min term uses: sum_b |m_b| 32 amax_b 2^-10.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "common/error.h"
#include "cpu/quant_matmul.h"
#include "cuda/gguf/gguf_matmul.cuh"
#include "cuda_test_util.h"

using namespace ms_cuda_test;
using ms::WeightType;

namespace {

constexpr double kU = 1.0 / 16777216.0;  // 2^-24, fp32 unit roundoff

void put16(uint8_t *p, uint16_t v) { std::memcpy(p, &v, 2); }

// N rows of K weights in the GGUF layout of t: quantized blocks with random codes over their whole range and scales
// of order 0.01 .. 0.06 (Q4_1: min about -8 d, so the weights are centred; Q8_0: d / 16); float types N(0, 0.05^2).
std::vector<uint8_t> random_weights(WeightType t, int N, int K, uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_int_distribution<int> byte(0, 255);
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<uint8_t> w(size_t(N) * rb);
    for (auto &b : w) b = uint8_t(byte(rng));
    for (int r = 0; r < N; ++r) {
        uint8_t *row = w.data() + r * rb;
        for (int b = 0; b < K / 32 && ms::weight_type_quantized(t); ++b) {
            const float d = 0.01f + 0.05f * std::fabs(nd(rng));
            if (t == WeightType::Q4_0) put16(row + b * 18, ms::f32_to_fp16(d));
            if (t == WeightType::Q8_0) put16(row + b * 34, ms::f32_to_fp16(d / 16));
            if (t == WeightType::Q4_1) {
                put16(row + b * 20, ms::f32_to_fp16(d));
                put16(row + b * 20 + 2, ms::f32_to_fp16(-8 * d + 0.1f * d * nd(rng)));
            }
        }
        for (int k = 0; k < K && !ms::weight_type_quantized(t); ++k) {
            const float f = 0.05f * nd(rng);
            if (t == WeightType::F32) std::memcpy(row + 4 * k, &f, 4);
            if (t == WeightType::F16) put16(row + 2 * k, ms::f32_to_fp16(f));
            if (t == WeightType::BF16) put16(row + 2 * k, ms::f32_to_bf16(f));
        }
    }
    return w;
}

float q4_1_min(const uint8_t *row, int b) {
    uint16_t h;
    std::memcpy(&h, row + b * 20 + 2, 2);
    return ms::fp16_to_f32(h);
}

struct Reference {
    std::vector<double> exact, mag;  // [T][N]: sum w x, sum of the kernel's term magnitudes
    std::vector<float> cpu;          // ms::matmul_rows at Simd::Scalar
    std::vector<double> cpu_bound;   // |cpu - exact| bound
};

Reference reference(WeightType t, const std::vector<uint8_t> &w, int N, int K, const std::vector<float> &x, int T) {
    Reference ref;
    ref.exact.assign(size_t(T) * N, 0.0);
    ref.mag.assign(ref.exact.size(), 0.0);
    ref.cpu_bound.assign(ref.exact.size(), 0.0);
    ref.cpu.assign(ref.exact.size(), NAN);
    const int nb = K / 32;
    const bool quant = ms::weight_type_quantized(t);
    // The CPU's int8 activations (quantized kernels only read them).
    std::vector<int8_t> qs(size_t(T) * K);
    std::vector<float> qd(size_t(T) * nb), qsum_s(size_t(T) * nb);
    std::vector<int32_t> qsum(size_t(T) * nb);
    ms::Q8Rows q8{qs.data(), qd.data(), qsum_s.data(), qsum.data(), K};
    if (quant) ms::quantize_rows_q8(ms::Simd::Scalar, x.data(), K, 0, T, q8);
    ms::matmul_rows(ms::Simd::Scalar, t, w.data(), K, x.data(), K, &q8, T, 0, N, ref.cpu.data(), N);
    std::vector<float> amax(size_t(T) * nb, 0.f);
    for (int tt = 0; tt < T; ++tt)
        for (int k = 0; k < K; ++k) {
            float &a = amax[size_t(tt) * nb + k / 32];
            a = std::max(a, std::fabs(x[size_t(tt) * K + k]));
        }
    const int64_t rb = ms::weight_row_bytes(t, K);
    std::vector<float> wf(K), wmag(K);
    std::vector<double> wabs_block(nb);
    for (int n = 0; n < N; ++n) {
        const uint8_t *row = w.data() + n * rb;
        ms::dequantize_row(t, row, K, wf.data());
        std::fill(wabs_block.begin(), wabs_block.end(), 0.0);
        for (int k = 0; k < K; ++k) {
            wabs_block[k / 32] += std::fabs(double(wf[k]));
            if (t == WeightType::Q4_1) {
                const double m = q4_1_min(row, k / 32);
                wmag[k] = float(std::fabs(double(wf[k]) - m) + std::fabs(m));
            } else {
                wmag[k] = std::fabs(wf[k]);
            }
        }
        for (int tt = 0; tt < T; ++tt) {
            const float *xr = x.data() + size_t(tt) * K;
            double acc = 0, mag = 0, qerr = 0;
            for (int k = 0; k < K; ++k) {
                acc += double(wf[k]) * xr[k];
                mag += double(wmag[k]) * std::fabs(xr[k]);
            }
            for (int b = 0; b < nb && quant; ++b)
                qerr += wabs_block[b] * amax[size_t(tt) * nb + b] * (1.0 / 254 + 1.0 / 2048);
            if (t == WeightType::Q4_1)
                for (int b = 0; b < nb; ++b)
                    qerr += std::fabs(double(q4_1_min(row, b))) * 32 * amax[size_t(tt) * nb + b] / 1024;
            const size_t i = size_t(tt) * N + n;
            ref.exact[i] = acc;
            ref.mag[i] = mag;
            // The CPU's own fp32 rounding (at most the same bound as ours), plus the activation quantization.
            ref.cpu_bound[i] = 2 * K * kU * 1.01 * (mag + qerr) + (quant ? 1.01 * qerr : 0.0);
        }
    }
    return ref;
}

struct PathRun {
    ms::cuda::GgufPath path;
    int warps_per_row;
    const char *name;
};

class CudaGgufMatmul : public ::testing::TestWithParam<WeightType> {};

TEST_P(CudaGgufMatmul, BothPathsMatchTheCpuAtEveryShape) {
    SKIP_WITHOUT_GPU();
    const WeightType t = GetParam();
    const int Ts[] = {1, 2, 3, 7, 8, 33, 130}, Ns[] = {1, 5, 576, 1537}, Ks[] = {96, 576, 1536, 2080};
    using ms::cuda::GgufPath;
    const PathRun runs[] = {{GgufPath::Gemv, 0, "gemv auto"},        {GgufPath::Gemv, 1, "gemv 1 warp/row"},
                            {GgufPath::Gemv, 2, "gemv 2 warps/row"}, {GgufPath::Gemv, 4, "gemv 4 warps/row"},
                            {GgufPath::Gemv, 8, "gemv 8 warps/row"}, {GgufPath::Tiled, 0, "tiled"},
                            {GgufPath::Auto, 0, "auto"}};
    double worst_exact = 0, worst_cpu = 0;
    int ci = 0;
    for (int N : Ns) {
        for (int T : Ts) {
            const int K = Ks[ci % 4];
            const uint32_t seed = uint32_t(1000 * int(t) + ci++);
            const std::vector<uint8_t> w = random_weights(t, N, K, seed);
            std::vector<float> x = random_floats(size_t(T) * K, seed + 7, -2.f, 2.f);
            for (int k = 0; k < 32; ++k) x[k] = 0.f;  // an all-zero activation block (CPU scale 0)
            const Reference ref = reference(t, w, N, K, x, T);
            DeviceVec<uint8_t> dw(w);
            DeviceVec<float> dx(x), dy(size_t(T) * N);
            for (const PathRun &run : runs) {
                ASSERT_EQ(cudaMemset(dy.get(), 0xff, size_t(T) * N * sizeof(float)), cudaSuccess);  // NaN: unwritten
                ms::cuda::GgufMatmulArgs a;
                a.x = dx.get(), a.T = T, a.K = K, a.w = dw.get(), a.N = N, a.y = dy.get();
                ms::cuda::gguf_matmul(t, a, run.path, nullptr, run.warps_per_row);
                const std::vector<float> y = dy.host();
                for (size_t i = 0; i < y.size(); ++i) {
                    const double tol = 2 * K * kU * ref.mag[i] + 1e-30;
                    const double err = std::fabs(double(y[i]) - ref.exact[i]);
                    ASSERT_LE(err, tol) << ms::weight_type_name(t) << " " << run.name << " T=" << T << " N=" << N
                                        << " K=" << K << " token " << i / N << " row " << i % N << ": " << y[i]
                                        << " vs " << ref.exact[i];
                    worst_exact = std::max(worst_exact, err / (ref.mag[i] + 1e-30));
                    const double cerr = std::fabs(double(y[i]) - double(ref.cpu[i]));
                    ASSERT_LE(cerr, tol + ref.cpu_bound[i])
                        << ms::weight_type_name(t) << " " << run.name << " vs CPU T=" << T << " N=" << N << " K=" << K
                        << " i=" << i;
                    worst_cpu = std::max(worst_cpu, cerr / (ref.mag[i] + 1e-30));
                }
            }
        }
    }
    std::printf("[ %s ] max |cuda - exact| / sum|w x| = %.3g; max |cuda - cpu scalar| / sum|w x| = %.3g\n",
                ms::weight_type_name(t), worst_exact, worst_cpu);
}

// accumulate adds the product to y on both paths.
TEST_P(CudaGgufMatmul, AccumulateAddsToTheOutput) {
    SKIP_WITHOUT_GPU();
    const WeightType t = GetParam();
    const int N = 333, K = 1056;
    const std::vector<uint8_t> w = random_weights(t, N, K, 77);
    for (int T : {3, 70}) {
        const std::vector<float> x = random_floats(size_t(T) * K, 78 + T);
        const std::vector<float> y0 = random_floats(size_t(T) * N, 90 + T, -5.f, 5.f);
        const Reference ref = reference(t, w, N, K, x, T);
        DeviceVec<uint8_t> dw(w);
        DeviceVec<float> dx(x);
        for (auto path : {ms::cuda::GgufPath::Gemv, ms::cuda::GgufPath::Tiled}) {
            DeviceVec<float> dy(y0);
            ms::cuda::GgufMatmulArgs a;
            a.x = dx.get(), a.T = T, a.K = K, a.w = dw.get(), a.N = N, a.y = dy.get(), a.accumulate = true;
            ms::cuda::gguf_matmul(t, a, path, nullptr);
            const std::vector<float> y = dy.host();
            for (size_t i = 0; i < y.size(); ++i)
                ASSERT_NEAR(y[i], y0[i] + ref.exact[i],
                            2 * K * kU * ref.mag[i] + 2 * kU * (std::fabs(y0[i]) + std::fabs(ref.exact[i])))
                    << ms::weight_type_name(t) << " T=" << T << " path " << int(path) << " i=" << i;
        }
    }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaGgufMatmul,
                         ::testing::Values(WeightType::Q4_0, WeightType::Q4_1, WeightType::Q8_0, WeightType::F32,
                                           WeightType::F16, WeightType::BF16),
                         [](const ::testing::TestParamInfo<WeightType> &i) {
                             return std::string(ms::weight_type_name(i.param));
                         });

// Argument checks happen before anything touches the device (no GPU needed).
TEST(CudaGgufMatmulArgs, RejectsBadShapesAndAlignment) {
    ms::cuda::GgufMatmulArgs a;
    alignas(16) static float buf[64];
    a.x = buf, a.T = 1, a.K = 48, a.w = reinterpret_cast<const uint8_t *>(buf), a.N = 1, a.y = buf;
    try {
        ms::cuda::gguf_matmul(WeightType::Q4_0, a, ms::cuda::GgufPath::Auto, nullptr);
        FAIL() << "K = 48 accepted";
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
    }
    a.K = 32;
    a.w = reinterpret_cast<const uint8_t *>(buf) + 2;
    try {
        ms::cuda::gguf_matmul(WeightType::Q4_0, a, ms::cuda::GgufPath::Auto, nullptr);
        FAIL() << "misaligned weights accepted";
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
    }
    a.w = reinterpret_cast<const uint8_t *>(buf);
    try {
        ms::cuda::gguf_matmul(WeightType::Q4_0, a, ms::cuda::GgufPath::Gemv, nullptr, 3);
        FAIL() << "3 warps per row accepted";
    } catch (const ms::Error &e) {
        EXPECT_EQ(e.status(), MS_ERR_INVALID_ARGUMENT);
    }
}

}  // namespace
