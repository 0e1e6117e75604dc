// bench_forward: times the CPU forward pass on a synthetic checkpoint and relates it to physical limits measured in
// the same run: decode steps at batch 1..32 (each sequence with a prefilled context) against the memory-bandwidth
// floor (bytes of weights a step must read / measured read bandwidth), and prefill throughput.
//   bench_forward [--preset mid] [--out DIR] [--threads N] [--context 128] [--steps 16] [--bf16-kv]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/matmul_bf16.h"
#include "cpu/thread_pool.h"
#include "io/mapped_file.h"
#include "model/model.h"
#include "model/synthetic_checkpoint.h"

namespace {

double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Read bandwidth of this machine with `threads` threads: sums a buffer far larger than the caches (best of 5).
double measure_read_bandwidth(ms::ThreadPool &pool, size_t bytes) {
    std::vector<uint64_t> buf(bytes / 8);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = i;
    double best = 0;
    std::vector<uint64_t> partial(1024);
    for (int rep = 0; rep < 5; ++rep) {
        const double t0 = now_s();
        const int64_t chunks = 256;
        pool.parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
            for (int64_t c = b; c < e; ++c) {
                const uint64_t *p = buf.data() + c * (buf.size() / chunks);
                uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
                for (size_t i = 0; i < buf.size() / chunks; i += 4) {
                    s0 += p[i];
                    s1 += p[i + 1];
                    s2 += p[i + 2];
                    s3 += p[i + 3];
                }
                partial[c] = s0 + s1 + s2 + s3;
            }
        });
        best = std::max(best, double(bytes) / (now_s() - t0));
    }
    volatile uint64_t sink = partial[0];
    (void)sink;
    return best;
}

// fp32 FMA throughput of one thread in the widened bf16 kernel on an L2-resident problem (64 rows x 1024, 32 tokens):
// the compute ceiling the forward pass's large-batch steps run into.
double measure_kernel_flops(ms::Simd simd) {
    const int N = 64, K = 1024, T = 32;
    std::vector<uint16_t> w(size_t(N) * K, 0x3c00);
    std::vector<float> x(size_t(T) * K, 0.5f), y(size_t(T) * N);
    double best = 0;
    for (int rep = 0; rep < 5; ++rep) {
        const double t0 = now_s();
        const int iters = 50;
        for (int i = 0; i < iters; ++i) ms::matmul_bf16_rows(simd, x.data(), T, K, w.data(), nullptr, K, 0, N, y.data(), N);
        best = std::max(best, 2.0 * N * K * T * iters / (now_s() - t0));
    }
    return best;
}

struct Kv {
    ms::KvStorage kv;
    std::vector<uint8_t> mem[ms::kNumKvGroups][2];
};

}  // namespace

int main(int argc, char **argv) {
    std::string preset = "mid", out = "/tmp/ms-bench-mid";
    int threads = 0, context = 128, steps = 16;
    bool bf16_kv = false;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
        if (a == "--preset") preset = next();
        else if (a == "--out") out = next();
        else if (a == "--threads") threads = std::atoi(next().c_str());
        else if (a == "--context") context = std::atoi(next().c_str());
        else if (a == "--steps") steps = std::atoi(next().c_str());
        else if (a == "--bf16-kv") bf16_kv = true;
        else {
            std::fprintf(stderr, "usage: bench_forward [--preset mid] [--out DIR] [--threads N] [--context N] [--steps N] [--bf16-kv]\n");
            return 2;
        }
    }
    try {
        if (!ms::file_exists(out + "/config.json")) {
            ms::SyntheticSpec spec = ms::synthetic_preset(preset);
            const double t0 = now_s();
            ms::write_synthetic_checkpoint(spec, out);
            std::printf("generated %s checkpoint in %s (%.1f s)\n", preset.c_str(), out.c_str(), now_s() - t0);
        }
        ms_model_params p;
        ms_model_params_default(&p);
        p.path = out.c_str();
        p.n_threads = threads;
        auto model = ms::Model::load(p);
        const ms::ModelConfig &c = model->config();
        const int V = c.vocab_size, H = c.hidden_size, I = c.intermediate_size;
        std::printf("model: %d layers, hidden %d, %d experts (top %d), vocab %d, %.0f MB of weights; %d threads, %s kernels\n",
                    c.num_hidden_layers, H, c.num_local_experts, c.num_experts_per_tok, V, model->weight_bytes() / 1e6,
                    model->n_threads(), ms::simd_name(model->simd()));

        // Bytes a decode step must read: dense bf16 matrices, the unembedding, and each activated expert once.
        const double dense_bytes = 2.0 * c.num_hidden_layers *
                                       (double(H) * c.num_attention_heads * c.head_dim * 2 +
                                        2.0 * H * c.num_key_value_heads * c.head_dim + double(c.num_local_experts) * H) +
                                   2.0 * V * H;
        const double expert_bytes = (2.0 * I * H + double(H) * I) * (0.5 + 1.0 / 32);

        ms::ThreadPool pool(model->n_threads());
        const double bw = measure_read_bandwidth(pool, size_t(1) << 30);
        const double flops1 = measure_kernel_flops(model->simd());
        std::printf("measured read bandwidth: %.1f GB/s (%d threads, 1 GiB buffer); fp32 kernel: %.1f GFLOP/s per thread\n\n",
                    bw / 1e9, model->n_threads(), flops1 / 1e9);
        // FLOPs per token: dense projections and router, the token's experts, the unembedding.
        const double flops_per_token =
            2.0 * c.num_hidden_layers *
                (double(H) * c.num_attention_heads * c.head_dim * 2 + 2.0 * H * c.num_key_value_heads * c.head_dim +
                 double(c.num_local_experts) * H + c.num_experts_per_tok * 3.0 * H * I) +
            2.0 * V * H;

        const int max_batch = 32, bs = 16;
        const int max_pos = context + steps + 8;
        const int blocks_per_seq = (max_pos + bs - 1) / bs;
        ms::KvSpec spec = model->kv_spec();
        Kv kv;
        kv.kv.block_size = bs;
        kv.kv.kv_dim = spec.kv_dim;
        kv.kv.bf16 = bf16_kv;
        for (int g = 0; g < ms::kNumKvGroups; ++g) {
            kv.kv.layers_in_group[g] = spec.layers_in_group[g];
            if (!spec.layers_in_group[g]) continue;
            kv.kv.num_blocks[g] = blocks_per_seq * max_batch;
            const size_t bytes = model->kv_block_bytes(g, bs, bf16_kv) / 2 * kv.kv.num_blocks[g];
            kv.mem[g][0].assign(bytes, 0);
            kv.mem[g][1].assign(bytes, 0);
            kv.kv.k[g] = kv.mem[g][0].data();
            kv.kv.v[g] = kv.mem[g][1].data();
        }
        std::vector<std::vector<int32_t>> tables(max_batch), tokens(max_batch);
        for (int s = 0; s < max_batch; ++s) {
            for (int b = 0; b < blocks_per_seq; ++b) tables[s].push_back(s * blocks_per_seq + b);
            for (int t = 0; t < max_pos; ++t) tokens[s].push_back(int32_t((s * 7919 + t * 104729) % V));
        }
        auto make_seq = [&](int s, int start, int n, bool logits) {
            ms::ForwardSeq f;
            f.tokens = tokens[s].data() + start;
            f.n_tokens = n;
            f.start_pos = start;
            f.want_logits = logits;
            for (int g = 0; g < ms::kNumKvGroups; ++g) {
                f.block_table[g] = tables[s].data();
                f.n_blocks[g] = blocks_per_seq;
            }
            return f;
        };
        std::vector<float> logits(size_t(max_batch) * V);

        // Prefill every sequence's context (also the prefill measurement: one sequence at a time).
        double prefill_s = 0;
        for (int s = 0; s < max_batch; ++s) {
            ms::ForwardSeq f = make_seq(s, 0, context, true);
            const double t0 = now_s();
            model->forward(&f, 1, kv.kv, logits.data());
            prefill_s += now_s() - t0;
        }
        std::printf("prefill: %d x %d tokens, %.1f tok/s\n\n", max_batch, context, max_batch * context / prefill_s);

        std::printf("%6s %10s %10s %12s %14s %12s %14s %12s\n", "batch", "ms/step", "tok/s", "vs batch 1", "bw floor ms",
                    "of bw floor", "fma floor ms", "of fma floor");
        double tps1 = 0;
        for (int batch : {1, 2, 4, 8, 16, 32}) {
            // Activated experts: run the router's choice through one step to count distinct experts per layer would
            // need internals; bound it instead: min(E, 4 * batch) per layer (exact at batch 1).
            const int active = std::min(c.num_local_experts, c.num_experts_per_tok * batch);
            const double floor_bytes = dense_bytes + double(c.num_hidden_layers) * active * expert_bytes;
            double best = 1e9;
            for (int rep = 0; rep < 2; ++rep) {
                const double t0 = now_s();
                for (int st = 0; st < steps; ++st) {
                    std::vector<ms::ForwardSeq> fs;
                    for (int s = 0; s < batch; ++s) fs.push_back(make_seq(s, context + st, 1, true));
                    model->forward(fs.data(), batch, kv.kv, logits.data());
                }
                best = std::min(best, (now_s() - t0) / steps);
            }
            const double tps = batch / best;
            if (batch == 1) tps1 = tps;
            const double fma_floor = flops_per_token * batch / (flops1 * model->n_threads());
            std::printf("%6d %10.2f %10.1f %11.2fx %14.2f %11.0f%% %14.2f %11.0f%%\n", batch, best * 1e3, tps, tps / tps1,
                        floor_bytes / bw * 1e3, 100.0 * (floor_bytes / bw) / best, fma_floor * 1e3, 100.0 * fma_floor / best);
        }
        std::printf("\n(bw floor = weight bytes a step must read / measured read bandwidth; at batch > 1 the expert count is\n"
                    " the upper bound min(experts, 4 x batch), so 'of bw floor' is an upper estimate there.\n"
                    " fma floor = the step's multiply-adds at the fp32 kernel's measured rate on every thread)\n");
        return 0;
    } catch (const ms::Error &e) {
        std::fprintf(stderr, "bench_forward: %s\n", e.what());
        return 1;
    }
}
