// CUDA backend benchmark on synthetic weights generated on the GPU (no checkpoint file): gpt-oss-20b and -120b
// shapes. Measures, in one run: the device-to-device copy bandwidth (the physical limit the floor is computed from),
// batch-1 decode tok/s, aggregate decode tok/s at 64 sequences, and 1,024-token prefill ms; prints each against the
// bandwidth floor (weight bytes read per decode step / measured bandwidth) and the naive transformers peer's figures
// from the GPU machine's README (measured there, same GPU model).
//
//   bench_cuda [--shape 20b|120b|all] [--decode-steps N] [--context N] [--only-batch1] [--out results.md]
//
// The timed batch-1 decode loop runs between cudaProfilerStart and cudaProfilerStop, so that `nsys profile
// --capture-range=cudaProfilerApi` or `ncu --profile-from-start off` see exactly those steps (graph-replayed, as
// served); --only-batch1 skips the 64-sequence and prefill measurements.
#include <cuda_runtime.h>
#if __has_include(<cuda_profiler_api.h>)
#include <cuda_profiler_api.h>
#else  // PyPI's CUDA runtime wheel ships libcudart without this header; both functions are in the library
extern "C" cudaError_t cudaProfilerStart(void);
extern "C" cudaError_t cudaProfilerStop(void);
#endif

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "cuda/cuda_check.cuh"
#include "cuda/device_model.cuh"
#include "cuda/executor.cuh"
#include "cli_args.h"
#include "synthetic_shape.cuh"

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// The naive peer: transformers GptOssForCausalLM, 20b shape, random bf16 weights, on the GPU machine (README).
constexpr double kPeerDecodeB1 = 18, kPeerDecodeB32 = 222, kPeerPrefill1024Ms = 127;

// Bytes one batch-1 decode step must read: bf16 attention projections and router, top_k MXFP4 experts (blocks,
// scales, bf16 biases) per layer, and the bf16 unembedding.
double decode_bytes(const ms::ModelConfig &c) {
    const double H = c.hidden_size, I = c.intermediate_size, E = c.num_local_experts, K = c.num_experts_per_tok;
    const double QD = double(c.num_attention_heads) * c.head_dim, KVD = double(c.num_key_value_heads) * c.head_dim;
    const double attn = ((QD + 2 * KVD) * H + H * QD) * 2 + (QD + 2 * KVD + H) * 2 + E * H * 2;
    const double expert = 2 * I * H * (0.5 + 1.0 / 32) + H * I * (0.5 + 1.0 / 32) + (2 * I + H) * 2;
    return c.num_hidden_layers * (attn + K * expert) + double(c.vocab_size) * H * 2;
}

double measure_copy_bandwidth() {  // bytes read + written per second, as the README's 3.0 TB/s
    const size_t n = size_t(1) << 30;
    void *a = nullptr, *b = nullptr;
    MS_CUDA(cudaMalloc(&a, n));
    MS_CUDA(cudaMalloc(&b, n));
    MS_CUDA(cudaMemset(a, 1, n));
    MS_CUDA(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    MS_CUDA(cudaDeviceSynchronize());
    const int reps = 10;
    const auto t0 = Clock::now();
    for (int i = 0; i < reps; ++i) MS_CUDA(cudaMemcpy(b, a, n, cudaMemcpyDeviceToDevice));
    MS_CUDA(cudaDeviceSynchronize());
    const double s = seconds_since(t0);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * n * reps / s;
}

// Device KV for `n_seqs` sequences of up to `ctx` positions each; sequence i owns a contiguous range of blocks.
struct Kv {
    ms::KvStorage kv;
    const ms::cuda::CudaExecutor &ex;
    int per_seq = 0;
    std::vector<int32_t> table;  // all blocks 0..n-1: sequence i uses table.data() + i * per_seq
    Kv(const ms::cuda::CudaExecutor &e, int n_seqs, int ctx, int bs) : ex(e) {
        const ms::KvSpec &spec = e.kv_spec();
        per_seq = (ctx + bs - 1) / bs;
        const int n = per_seq * n_seqs;
        kv.block_size = bs;
        kv.kv_dim = spec.kv_dim;
        kv.bf16 = true;
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            kv.layers_in_group[g] = spec.layers_in_group[g];
            if (!spec.layers_in_group[g]) continue;
            kv.num_blocks[g] = n;
            kv.k[g] = e.alloc_kv_memory(e.kv_block_bytes(g, bs, true) / 2 * n);
            kv.v[g] = e.alloc_kv_memory(e.kv_block_bytes(g, bs, true) / 2 * n);
        }
        table.resize(n);
        std::iota(table.begin(), table.end(), 0);
    }
    ~Kv() {
        for (int g = 0; g < ms::kNumKvGroups; ++g)
            if (kv.k[g]) ex.free_kv_memory(kv.k[g]), ex.free_kv_memory(kv.v[g]);
    }
    ms::ForwardSeq seq(int i, const int32_t *tokens, int n_tokens, int start) const {
        ms::ForwardSeq f;
        f.tokens = tokens;
        f.n_tokens = n_tokens;
        f.start_pos = start;
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            f.block_table[g] = table.data() + size_t(i) * per_seq;
            f.n_blocks[g] = per_seq;
        }
        return f;
    }
};

struct Row {
    std::string shape, metric, value, floor_ratio, peer_ratio;
};

void run_shape(const std::string &shape, int decode_steps, int prompt_len, double bw, bool only_batch1,
               std::vector<Row> &rows) {
    auto dm = ms_tools::synthesize_shape(shape, 42);
    const ms::ModelConfig &cfg = dm->config();
    ms::cuda::CudaExecutor ex(dm, ms::cuda::ExecutorOptions());
    ms::cuda::ExecutorOptions popt;
    popt.profile = true;  // a second executor on the same weights: per-stage times (no graphs), not the timed runs
    ms::cuda::CudaExecutor prof(dm, popt);
    auto print_profile = [&](const char *what) {
        const ms::cuda::StageProfile &p = prof.profile();
        std::printf("[%s] %s, per step (profiled, no graph):", shape.c_str(), what);
        for (int i = 0; i < ms::cuda::StageProfile::kStages; ++i)
            std::printf(" %s %.3f ms%s", ms::cuda::StageProfile::name(i), p.ms[i] / std::max(1, p.steps),
                        i + 1 < ms::cuda::StageProfile::kStages ? "," : "\n");
        prof.reset_profile();
    };
    const double kv_per_token = double(ex.kv_block_bytes(0, 16, true) + ex.kv_block_bytes(1, 16, true)) / 16;
    std::printf("[%s] KV budget after weights (memory fraction 0.9): %.2f GB = %.0fk tokens of bf16 KV (both groups)\n",
                shape.c_str(), ex.kv_memory_limit() / 1e9, ex.kv_memory_limit() / kv_per_token / 1e3);
    const double floor_tps = bw / decode_bytes(cfg);
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> tok(0, cfg.vocab_size - 1);

    // Batch-1 decode after a prompt.
    {
        const int ctx = prompt_len + decode_steps + 16;
        Kv kv(ex, 1, ctx, 16);
        std::vector<int32_t> prompt(prompt_len);
        for (auto &t : prompt) t = tok(rng);
        int32_t next = 0;
        ms::ForwardSeq f = kv.seq(0, prompt.data(), prompt_len, 0);
        ex.forward_greedy(&f, 1, kv.kv, &next);
        const int warm = 4;
        double t = 0;
        for (int s = 0; s < decode_steps + warm; ++s) {
            const int32_t in = next;
            f = kv.seq(0, &in, 1, prompt_len + s);
            if (s == warm) MS_CUDA(cudaProfilerStart());
            const auto t0 = Clock::now();
            ex.forward_greedy(&f, 1, kv.kv, &next);
            if (s >= warm) t += seconds_since(t0);
        }
        MS_CUDA(cudaProfilerStop());
        for (int s = 0; s < 8; ++s) {
            const int32_t in = next;
            f = kv.seq(0, &in, 1, prompt_len + decode_steps + warm + s);
            if (f.start_pos + 1 > kv.per_seq * 16) break;
            prof.forward_greedy(&f, 1, kv.kv, &next);
        }
        print_profile("decode batch 1");
        const double tps = decode_steps / t;
        char v[64], fr[64], pr[64];
        std::snprintf(v, sizeof v, "%.1f tok/s (%.3f ms/token)", tps, 1e3 / tps);
        std::snprintf(fr, sizeof fr, "%.1f %% of %.0f tok/s", 100 * tps / floor_tps, floor_tps);
        std::snprintf(pr, sizeof pr, shape == "20b" ? "%.1fx (18 tok/s)" : "-", tps / kPeerDecodeB1);
        rows.push_back({shape, "decode, batch 1, context " + std::to_string(prompt_len), v, fr, pr});
    }
    if (only_batch1) return;
    // Aggregate decode at 64 sequences.
    {
        const int n = 64, ctx = prompt_len + decode_steps + 8;
        Kv kv(ex, n, ctx, 16);
        std::vector<std::vector<int32_t>> prompts(n, std::vector<int32_t>(prompt_len));
        for (auto &p : prompts)
            for (auto &t : p) t = tok(rng);
        std::vector<ms::ForwardSeq> fs;
        std::vector<int32_t> next(n), in(n);
        for (int i = 0; i < n; i += 8) {  // prefill 8 sequences per step
            fs.clear();
            for (int j = i; j < i + 8; ++j) fs.push_back(kv.seq(j, prompts[j].data(), prompt_len, 0));
            ex.forward_greedy(fs.data(), int(fs.size()), kv.kv, next.data() + i);
        }
        const int warm = 2;
        double t = 0;
        for (int s = 0; s < decode_steps + warm; ++s) {
            in = next;
            fs.clear();
            for (int j = 0; j < n; ++j) fs.push_back(kv.seq(j, &in[j], 1, prompt_len + s));
            const auto t0 = Clock::now();
            ex.forward_greedy(fs.data(), n, kv.kv, next.data());
            if (s >= warm) t += seconds_since(t0);
        }
        {
            in = next;
            fs.clear();
            for (int j = 0; j < n; ++j) fs.push_back(kv.seq(j, &in[j], 1, prompt_len + decode_steps + warm));
            prof.forward_greedy(fs.data(), n, kv.kv, next.data());
            print_profile("decode 64 sequences");
        }
        const double tps = double(n) * decode_steps / t;
        char v[64], fr[64], pr[64];
        std::snprintf(v, sizeof v, "%.0f tok/s (%.2f ms/step)", tps, 1e3 * t / decode_steps);
        std::snprintf(fr, sizeof fr, "%.1fx batch-1 floor", tps / floor_tps);
        std::snprintf(pr, sizeof pr, shape == "20b" ? "%.1fx (222 tok/s at 32)" : "-", tps / kPeerDecodeB32);
        rows.push_back({shape, "decode, 64 sequences, context " + std::to_string(prompt_len), v, fr, pr});
    }
    // 1,024-token prefill of one sequence.
    {
        const int len = 1024;
        Kv kv(ex, 1, len, 16);
        std::vector<int32_t> prompt(len);
        for (auto &t : prompt) t = tok(rng);
        int32_t next = 0;
        ms::ForwardSeq f = kv.seq(0, prompt.data(), len, 0);
        ex.forward_greedy(&f, 1, kv.kv, &next);  // warm-up (workspace growth)
        const int reps = 5;
        const auto t0 = Clock::now();
        for (int r = 0; r < reps; ++r) ex.forward_greedy(&f, 1, kv.kv, &next);
        const double ms = 1e3 * seconds_since(t0) / reps;
        prof.forward_greedy(&f, 1, kv.kv, &next);
        print_profile("prefill 1,024");
        char v[64], pr[64];
        std::snprintf(v, sizeof v, "%.1f ms (%.0f tok/s)", ms, len / ms * 1e3);
        std::snprintf(pr, sizeof pr, shape == "20b" ? "%.1fx faster (127 ms)" : "-", kPeerPrefill1024Ms / ms);
        rows.push_back({shape, "prefill 1,024 tokens", v, "-", pr});
    }
}

}  // namespace

int main(int argc, char **argv) {
    std::string shape = "all", out;
    int decode_steps = 64, context = 128;
    bool only_batch1 = false;
    for (ms_tools::CliArgs args(argc, argv); args.next();) {
        const std::string a = args.name();
        if (a == "--shape") shape = args.value();
        else if (a == "--decode-steps") decode_steps = args.int_value();
        else if (a == "--context") context = args.int_value();
        else if (a == "--out") out = args.value();
        else if (a == "--only-batch1") only_batch1 = true;
        else {
            std::fprintf(stderr,
                         "usage: bench_cuda [--shape 20b|120b|all] [--decode-steps N] [--context N] [--only-batch1] "
                         "[--out F]\n");
            return 2;
        }
    }
    if (shape != "20b" && shape != "120b" && shape != "all") {
        std::fprintf(stderr, "--shape must be 20b, 120b or all\n");
        return 2;
    }
    try {
        ms::cuda::require_device();
        const double bw = measure_copy_bandwidth();
        std::printf("device-to-device copy: %.2f TB/s (read + write)\n", bw / 1e12);
        std::vector<Row> rows;
        for (const std::string s : {"20b", "120b"})
            if (shape == "all" || shape == s) run_shape(s, decode_steps, context, bw, only_batch1, rows);
        std::ostringstream t;
        t << "| shape | measurement | result | vs bandwidth floor (" << std::fixed;
        t.precision(2);
        t << bw / 1e12 << " TB/s) | vs naive transformers peer |\n|---|---|---|---|---|\n";
        for (const Row &r : rows)
            t << "| " << r.shape << " | " << r.metric << " | " << r.value << " | " << r.floor_ratio << " | " << r.peer_ratio << " |\n";
        std::printf("\n%s", t.str().c_str());
        if (!out.empty()) std::ofstream(out) << t.str();
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench_cuda: %s\n", e.what());
        return 1;
    }
    return 0;
}
