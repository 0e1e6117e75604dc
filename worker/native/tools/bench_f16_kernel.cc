// bench_f16_kernel: the MXFP4 expert and dense bf16 kernels with fp32 activations (matmul_mxfp4_rows,
// matmul_bf16_rows: the default) against the same products on fp16 activations (cpu/matmul_f16dot.h: the fp16 mode),
// one thread, same random weights and inputs, the two alternating back to back so that a shared machine slows both
// alike. Several experts (or dense matrices) are cycled so the weights come from DRAM as in a model step. Prints, per
// token count, the median multiply-add rate of each kernel and the median of the per-round ratios; the fp16 side
// includes converting its activations (f32_to_f16_row_scaled), which the model does once per matmul input. Dense
// matrices twice: fp16 converting the bf16 rows on every call, and on rows converted once (the model in fp16 mode).
//   bench_f16_kernel [--rows 2880] [--k 2880] [--experts 8] [--rounds 7] [--tokens 4,8,16,32]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_f16dot.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/simd.h"
#include "kernel_bench.h"

using ms_tools::median;
using ms_tools::now_s;

int main(int argc, char **argv) {
    const ms_tools::KernelBenchOptions opt = ms_tools::parse_kernel_bench_options(argc, argv, {2880, 2880, 8, 7, {4, 8, 16, 32}});
    const int rows = opt.rows, K = opt.K, experts = opt.experts, rounds = opt.rounds;
    if (!ms::f16_dot_supported() || !ms::simd_supported(ms::Simd::Avx512)) {
        std::printf("this CPU has no AVX512-FP16: nothing to compare\n");
        return 0;
    }
    const ms::Simd s = ms::Simd::Avx512;
    std::printf("%d matrices x %d rows x K %d (MXFP4 %.1f MB, bf16 %.1f MB), 1 thread\n", experts, rows, K,
                experts * double(rows) * K * (0.5 + 1.0 / 32) / 1e6, experts * double(rows) * K * 2 / 1e6);
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint8_t> blocks(size_t(experts) * rows * K / 2), scales(size_t(experts) * rows * K / 32);
    for (auto &b : blocks) b = uint8_t(rng());
    for (auto &e : scales) e = uint8_t(118 + rng() % 8);
    std::vector<uint16_t> dense(size_t(experts) * rows * K);
    for (auto &w : dense) w = uint16_t(0x3c00 + rng() % 0x800) ^ (rng() & 0x8000);  // bf16 in +-[2^-7, 2^-6)
    std::vector<float> bias(rows, 0.5f);
    // The dense matrices converted once, as the model does in fp16 mode (f16_dense_convert): kind 2 below.
    const int64_t ld16 = ms::f16_dense_stride(K);
    ms::AlignedVector<uint16_t> dense16(size_t(experts) * rows * ld16);
    std::vector<float> factor16(size_t(experts) * rows);
    for (int e = 0; e < experts; ++e)
        ms::f16_dense_convert(s, dense.data() + size_t(e) * rows * K, K, 0, rows, dense16.data() + size_t(e) * rows * ld16,
                              factor16.data() + size_t(e) * rows);

    const std::vector<int> &tok = opt.tokens;
    std::printf("| tokens | kernel | fp32 GMAC/s | fp16 GMAC/s | fp16 / fp32 |\n|---:|---|---:|---:|---:|\n");
    for (int T : tok) {
        ms::AlignedVector<float> x(size_t(T) * K), xs(size_t(T) * K), y(size_t(T) * rows), xscale(T);
        ms::AlignedVector<uint16_t> xh(size_t(T) * K);
        for (auto &v : x) v = nd(rng);
        for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + size_t(t) * K, K, xs.data() + size_t(t) * K);
        const double macs = double(experts) * rows * K * T;
        // kind 0: MXFP4; 1: dense bf16, fp16 side converting per call; 2: the same, fp16 side on converted rows.
        for (int dense_kind = 0; dense_kind < 3; ++dense_kind) {
            std::vector<double> r32, r16, ratio;
            for (int round = 0; round < rounds; ++round) {
                double t0 = now_s();
                for (int e = 0; e < experts; ++e) {
                    if (dense_kind) ms::matmul_bf16_rows(s, x.data(), T, K, dense.data() + size_t(e) * rows * K, bias.data(), K, 0, rows, y.data(), rows);
                    else
                        ms::matmul_mxfp4_rows(s, xs.data(), T, K, blocks.data() + size_t(e) * rows * K / 2, scales.data() + size_t(e) * rows * K / 32,
                                              bias.data(), K, 0, rows, y.data(), rows);
                }
                const double a = now_s() - t0;
                t0 = now_s();
                for (int e = 0; e < experts; ++e) {
                    for (int t = 0; t < T; ++t)
                        ms::f32_to_f16_row_scaled(s, x.data() + size_t(t) * K, K, xh.data() + size_t(t) * K, &xscale[t]);
                    if (dense_kind == 2)
                        ms::matmul_f16w_f16x_rows(s, xh.data(), xscale.data(), T, K, dense16.data() + size_t(e) * rows * ld16,
                                                  factor16.data() + size_t(e) * rows, bias.data(), K, 0, rows, y.data(), rows);
                    else if (dense_kind)
                        ms::matmul_bf16_f16x_rows(s, xh.data(), xscale.data(), T, K, dense.data() + size_t(e) * rows * K, bias.data(), K, 0, rows,
                                                  y.data(), rows);
                    else
                        ms::matmul_mxfp4_f16x_rows(s, xh.data(), xscale.data(), T, K, blocks.data() + size_t(e) * rows * K / 2,
                                                   scales.data() + size_t(e) * rows * K / 32, bias.data(), K, 0, rows, y.data(), rows);
                }
                const double b = now_s() - t0;
                if (round == 0) continue;  // warm-up
                r32.push_back(macs / a / 1e9);
                r16.push_back(macs / b / 1e9);
                ratio.push_back(a / b);
            }
            std::printf("| %d | %s | %.2f | %.2f | %.2fx |\n", T, dense_kind == 2 ? "dense, converted once" : dense_kind ? "dense bf16" : "MXFP4", median(r32), median(r16), median(ratio));
            std::fflush(stdout);
        }
    }
    return 0;
}
