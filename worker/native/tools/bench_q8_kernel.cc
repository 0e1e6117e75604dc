// bench_q8_kernel: the MXFP4 expert kernel with fp32 activations (matmul_mxfp4_rows, the default) against the same
// product with int8 activations (matmul_mxfp4_q8_rows, the q8 mode), one thread, on the same random weights and
// inputs, alternating the two back to back so that a loaded, shared machine slows both alike. For each token count
// it prints the median time per call set and the multiply-add rate of each kernel and the median of the per-round
// ratios; q8 is shown without and with its activation quantization (q8_quantize_panel), which the model runs once
// per expert input. The last columns are the dense bf16 kernel (fp32 activations, matmul_bf16_rows: the attention and
// unembedding projections in the fp32 and q8 modes) and its int8 x int8 counterpart (matmul_q8_dense_rows: the same
// projections in the q8all mode) on a rows x K matrix, and their ratio.
//   bench_q8_kernel [--rows 2048] [--k 1024] [--experts 8] [--rounds 9] [--tokens 1,2,4,8,16,32,64]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/matmul_bf16.h"
#include "cpu/matmul_mxfp4.h"
#include "cpu/matmul_mxfp4_q8.h"
#include "cpu/matmul_q8_dense.h"
#include "cpu/simd.h"
#include "kernel_bench.h"

using ms_tools::median;
using ms_tools::now_s;

int main(int argc, char **argv) {
    const ms_tools::KernelBenchOptions opt = ms_tools::parse_kernel_bench_options(argc, argv, {2048, 1024, 8, 9, {1, 2, 4, 8, 16, 32, 64}});
    const int rows = opt.rows, K = opt.K, experts = opt.experts, rounds = opt.rounds;
    const ms::Simd s = ms::active_simd();
    std::string load;
    if (FILE *f = std::fopen("/proc/loadavg", "r")) {
        char buf[64] = {0};
        if (std::fgets(buf, sizeof buf, f)) load = buf;
        std::fclose(f);
        if (!load.empty() && load.back() == '\n') load.pop_back();
    }
    std::printf("SIMD %s, q8 kernel %s; %d experts x %d rows x K %d (%.1f MB of MXFP4), 1 thread; loadavg %s\n",
                ms::simd_name(s), s == ms::Simd::Avx512 && ms::q8_vnni_available() ? "AVX-512 VNNI" : (s == ms::Simd::Scalar ? "scalar" : "AVX2"),
                experts, rows, K, experts * double(rows) * K * (0.5 + 1.0 / 32) / 1e6, load.c_str());
    std::mt19937 rng(1);
    std::vector<uint8_t> blocks(size_t(experts) * rows * K / 2), scales(size_t(experts) * rows * K / 32);
    for (auto &b : blocks) b = uint8_t(rng());
    for (auto &e : scales) e = uint8_t(118 + rng() % 8);
    std::vector<float> bias(rows, 0.25f);
    std::vector<uint16_t> dense(size_t(rows) * K);
    for (auto &v : dense) v = uint16_t(0x3c00 + rng() % 0x400);  // bf16 values in [2^-7, 2^-6) with random signs
    for (auto &v : dense) v |= uint16_t(rng() & 0x8000);
    ms::Q8DenseWeights dense8;
    ms::q8_quantize_dense_bf16(dense.data(), rows, K, dense8);
    const std::vector<int> &counts = opt.tokens;
    std::printf("%6s %12s %12s %12s %14s %14s %12s %12s %12s\n", "tokens", "fp32 GMAC/s", "q8 GMAC/s", "q8+quant", "q8/fp32",
                "q8+quant/fp32", "dense fp32", "dense q8", "dense q8/fp32");
    for (int T : counts) {
        std::normal_distribution<float> nd(0, 1);
        ms::AlignedVector<float> x(size_t(T) * K), xs(size_t(T) * K), y(size_t(T) * rows);
        for (auto &v : x) v = nd(rng);
        const int np = (T + 7) / 8;
        ms::AlignedVector<int8_t> qs(size_t(np) * ms::q8_panel_qs_bytes(K));
        ms::AlignedVector<float> d(size_t(np) * ms::q8_panel_blocks(K));
        ms::AlignedVector<int32_t> sum(size_t(np) * ms::q8_panel_blocks(K));
        ms::Q8Panels P{qs.data(), d.data(), sum.data(), K};
        auto quantize = [&] {
            for (int p = 0; p < np; ++p) {
                const float *r[8];
                const int n = std::min(8, T - 8 * p);
                for (int j = 0; j < n; ++j) r[j] = x.data() + size_t(8 * p + j) * K;
                ms::q8_quantize_panel(s, r, n, P, p);
            }
        };
        quantize();
        for (int t = 0; t < T; ++t) ms::mxfp4_split_activations(x.data() + size_t(t) * K, K, xs.data() + size_t(t) * K);
        auto run_fp32 = [&] {
            for (int e = 0; e < experts; ++e)
                ms::matmul_mxfp4_rows(s, xs.data(), T, K, blocks.data() + size_t(e) * rows * K / 2, scales.data() + size_t(e) * rows * K / 32,
                                      bias.data(), K, 0, rows, y.data(), rows);
        };
        auto run_q8 = [&] {
            for (int e = 0; e < experts; ++e)
                ms::matmul_mxfp4_q8_rows(s, P, 0, T, blocks.data() + size_t(e) * rows * K / 2, scales.data() + size_t(e) * rows * K / 32,
                                         bias.data(), K, 0, rows, y.data(), rows);
        };
        auto run_dense = [&] { ms::matmul_bf16_rows(s, x.data(), T, K, dense.data(), bias.data(), K, 0, rows, y.data(), rows); };
        auto run_dense8 = [&] { ms::matmul_q8_dense_rows(s, P, 0, T, dense8, bias.data(), 0, rows, y.data(), rows); };
        // Enough repetitions for ~20 ms per measurement at the fp32 rate.
        double t0 = now_s();
        run_fp32();
        const int reps = std::max(1, int(0.02 / std::max(1e-6, now_s() - t0)));
        std::vector<double> tf, tq, tqq, ratio, ratio_q, td, td8, ratio_d;
        for (int r = 0; r < rounds; ++r) {
            t0 = now_s();
            for (int i = 0; i < reps; ++i) run_fp32();
            const double a = (now_s() - t0) / reps;
            t0 = now_s();
            for (int i = 0; i < reps; ++i) run_q8();
            const double b = (now_s() - t0) / reps;
            t0 = now_s();
            for (int i = 0; i < reps; ++i) {
                quantize();
                run_q8();
            }
            const double c = (now_s() - t0) / reps;
            t0 = now_s();
            for (int i = 0; i < reps * experts; ++i) run_dense();
            td.push_back((now_s() - t0) / (reps * experts));
            t0 = now_s();
            for (int i = 0; i < reps * experts; ++i) run_dense8();
            td8.push_back((now_s() - t0) / (reps * experts));
            ratio_d.push_back(td.back() / td8.back());
            tf.push_back(a);
            tq.push_back(b);
            tqq.push_back(c);
            ratio.push_back(a / b);
            ratio_q.push_back(a / c);
        }
        const double macs = double(T) * rows * K * experts;
        std::printf("%6d %12.2f %12.2f %12.2f %13.2fx %13.2fx %12.2f %12.2f %11.2fx\n", T, macs / median(tf) / 1e9,
                    macs / median(tq) / 1e9, macs / median(tqq) / 1e9, median(ratio), median(ratio_q),
                    macs / experts / median(td) / 1e9, macs / experts / median(td8) / 1e9, median(ratio_d));
    }
    return 0;
}
