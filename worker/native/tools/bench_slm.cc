// Prefill and decode throughput of a GGUF llama-family model on the CPU, for `make bench-slm` (hack/slm/bench.py runs
// llama.cpp on the same prompt tokens and threads in the same run and prints the ratio):
//   bench_slm MODEL.gguf --threads N --tokens "id id id ..." [--decode N] [--reps N]
// Prefill: the whole prompt in one step; decode: N greedy tokens one step each after it. Best of --reps runs.
// Prints one line: prefill_tokens=... prefill_tok_s=... decode_tokens=... decode_tok_s=...
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "common/error.h"
#include "llama/llama_session.h"

int main(int argc, char **argv) {
    std::string path, tokens_text;
    int threads = 2, n_decode = 64, reps = 3;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
        else if (a == "--tokens" && i + 1 < argc) tokens_text = argv[++i];
        else if (a == "--decode" && i + 1 < argc) n_decode = std::atoi(argv[++i]);
        else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
        else path = a;
    }
    std::vector<int32_t> prompt;
    std::istringstream in(tokens_text);
    for (int32_t t; in >> t;) prompt.push_back(t);
    if (path.empty() || prompt.empty() || n_decode < 1 || reps < 1) {
        std::fprintf(stderr, "usage: bench_slm MODEL.gguf --threads N --tokens \"ids\" [--decode N] [--reps N]\n");
        return 2;
    }
    try {
        ms_model_params p;
        ms_model_params_default(&p);
        p.n_threads = threads;
        auto model = ms::LlamaModel::load(p, path);
        using clock = std::chrono::steady_clock;
        double best_prefill = 1e30, best_decode = 1e30;
        for (int r = 0; r < reps + 1; ++r) {  // the first run warms caches and is not counted
            ms::LlamaSession s(*model, int(prompt.size()) + n_decode + 1);
            auto t0 = clock::now();
            const std::vector<float> *l = &s.feed(prompt.data(), int(prompt.size()));
            int32_t tok = ms::argmax(l->data(), model->vocab_size());
            auto t1 = clock::now();
            for (int i = 0; i < n_decode; ++i) {
                l = &s.feed(&tok, 1);
                tok = ms::argmax(l->data(), model->vocab_size());
            }
            auto t2 = clock::now();
            if (r == 0) continue;
            best_prefill = std::min(best_prefill, std::chrono::duration<double>(t1 - t0).count());
            best_decode = std::min(best_decode, std::chrono::duration<double>(t2 - t1).count());
        }
        std::printf("prefill_tokens=%zu prefill_tok_s=%.2f decode_tokens=%d decode_tok_s=%.2f simd=%s threads=%d\n",
                    prompt.size(), double(prompt.size()) / best_prefill, n_decode, n_decode / best_decode,
                    ms::simd_name(model->simd()), threads);
    } catch (const ms::Error &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
