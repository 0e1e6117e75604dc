// Offline serving throughput through the real serving engine (ms::Engine: paged KV pool, scheduler, sampler, step
// thread) on the CUDA executor: N requests of P random prompt tokens and exactly O generated tokens each, all
// submitted at once (issue 10: 20b, 1,000 x 1,024 in / 256 out, reported next to vLLM's published 16.5k total tok/s
// on one H100, whose workload is ShareGPT). Weights are the synthetic gpt-oss shapes generated on the GPU
// (synthetic_shape.cuh, as bench_cuda), or a checkpoint directory on the GPU or the CPU (--backend cpu: a smoke test
// of the request accounting without a GPU). The run itself and its accounting check are tools/serve_bench.h; the tool
// exits non-zero when any request did not get exactly O tokens or the engine's counters disagree with the events.
//
//   bench_cuda_serve [--shape 20b|120b | --checkpoint DIR [--backend cuda|cpu] [--threads N]]
//                    [--requests 1000] [--prompt 1024] [--output 256] [--seed 1] [--temperature 1]
//                    [--max-seqs 256] [--max-batched-tokens 8192] [--gpu-memory-fraction 0.9] [--kv-gib G]
//                    [--block-size 16] [--no-prefix-caching] [--max-seconds S] [--out FILE.md]
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "common/error.h"
#include "cuda/device_model.cuh"
#include "cuda/executor.cuh"
#include "model/model.h"
#include "runtime/model_executor.h"
#include "cli_args.h"
#include "serve_bench.h"
#include "synthetic_shape.cuh"

namespace {

[[noreturn]] void usage() {
    std::fprintf(stderr,
                 "usage: bench_cuda_serve [--shape 20b|120b | --checkpoint DIR [--backend cuda|cpu] [--threads N]]\n"
                 "         [--requests 1000] [--prompt 1024] [--output 256] [--seed 1] [--temperature 1]\n"
                 "         [--max-seqs 256] [--max-batched-tokens 8192] [--gpu-memory-fraction 0.9] [--kv-gib G]\n"
                 "         [--block-size 16] [--no-prefix-caching] [--max-seconds S] [--out FILE.md]\n");
    std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
    std::string shape, checkpoint, backend = "cuda", out;
    int threads = 0;
    double memory_fraction = 0.9, kv_gib = 0;
    ms_tools::ServeBenchOptions o;
    for (ms_tools::CliArgs args(argc, argv); args.next();) {
        const std::string a = args.name();
        if (a == "--shape") shape = args.value();
        else if (a == "--checkpoint") checkpoint = args.value();
        else if (a == "--backend") backend = args.value();
        else if (a == "--threads") threads = args.int_value();
        else if (a == "--requests") o.requests = args.int_value();
        else if (a == "--prompt") o.prompt = args.int_value();
        else if (a == "--output") o.output = args.int_value();
        else if (a == "--seed") o.seed = args.u64_value();
        else if (a == "--temperature") o.temperature = float(args.double_value());
        else if (a == "--max-seqs") o.max_seqs = args.int_value();
        else if (a == "--max-batched-tokens") o.max_batched_tokens = args.int_value();
        else if (a == "--gpu-memory-fraction") memory_fraction = args.double_value();
        else if (a == "--kv-gib") kv_gib = args.double_value();
        else if (a == "--block-size") o.kv_block_size = args.int_value();
        else if (a == "--no-prefix-caching") o.prefix_caching = false;
        else if (a == "--max-seconds") o.max_seconds = args.double_value();
        else if (a == "--out") out = args.value();
        else usage();
    }
    if (shape.empty() == checkpoint.empty()) {
        std::fprintf(stderr, "give exactly one of --shape 20b|120b and --checkpoint DIR\n");
        usage();
    }
    if (backend != "cuda" && backend != "cpu") usage();
    if (!shape.empty() && backend != "cuda") {
        std::fprintf(stderr, "--shape generates weights on the GPU: --backend cpu needs --checkpoint\n");
        return 2;
    }
    if (kv_gib > 0) o.kv_memory_bytes = uint64_t(kv_gib * double(1ull << 30));
    if (!(memory_fraction > 0 && memory_fraction < 1)) {
        std::fprintf(stderr, "--gpu-memory-fraction must be in (0, 1)\n");
        return 2;
    }

    try {
        std::unique_ptr<ms::Model> host_model;  // checkpoint runs (outlives its executor)
        std::unique_ptr<ms::Executor> exec;
        std::string what;
        if (backend == "cuda") {
            ms::cuda::require_device();
            std::shared_ptr<ms::cuda::DeviceModel> dm;
            if (!shape.empty()) {
                dm = ms_tools::synthesize_shape(shape, 42);
                what = shape + " (synthetic)";
            } else {
                ms_model_params mp;
                ms_model_params_default(&mp);
                mp.path = checkpoint.c_str();
                mp.backend = "cpu";  // the host copy the upload reads from
                mp.n_threads = threads;
                host_model = ms::Model::load(mp, false);
                dm = std::shared_ptr<ms::cuda::DeviceModel>(ms::cuda::DeviceModel::upload(*host_model));
                what = checkpoint;
            }
            ms::cuda::ExecutorOptions eo = ms::cuda::executor_options_from_env();
            eo.memory_fraction = memory_fraction;
            exec = std::make_unique<ms::cuda::CudaExecutor>(dm, eo);
            what += " on " + dm->device_name();
            std::printf("KV limit after weights (GPU memory fraction %.2f): %.2f GB\n", memory_fraction,
                        exec->kv_memory_limit() / 1e9);
        } else {
            ms_model_params mp;
            ms_model_params_default(&mp);
            mp.path = checkpoint.c_str();
            mp.backend = "cpu";
            mp.n_threads = threads;
            host_model = ms::Model::load(mp);
            exec = std::make_unique<ms::ModelExecutor>(*host_model);
            what = checkpoint + " on the CPU";
        }

        const ms_tools::ServeBenchResult r = ms_tools::run_serve_bench(*exec, o, stdout);
        const std::string report = ms_tools::format_report(r, what);
        std::printf("\n%s", report.c_str());
        if (!out.empty()) std::ofstream(out) << report.substr(report.find("| model"));
        const std::vector<std::string> bad = ms_tools::check_accounting(r);
        for (const std::string &b : bad) std::fprintf(stderr, "accounting: %s\n", b.c_str());
        if (!bad.empty()) return 1;
        std::printf("accounting: %d requests, each finished by length with %d tokens%s; engine counters agree\n",
                    o.requests, o.output, r.partial ? " (or cancelled at the deadline with fewer)" : "");
        return r.partial ? 3 : 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "bench_cuda_serve: %s\n", e.what());
        return 1;
    }
}
