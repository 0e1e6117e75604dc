// make_checkpoint: writes a deterministic synthetic gpt-oss checkpoint (Hugging Face layout) for tests, benchmarks
// and reference vectors. The generator itself lives in src/model/synthetic_checkpoint.cc.
#include <cstdio>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/synthetic_checkpoint.h"

int main(int argc, char **argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    for (const auto &a : args)
        if (a == "--help" || a == "-h") args.clear();
    if (args.empty()) {
        std::fprintf(stderr,
                     "usage: make_checkpoint --preset tiny|tiny-harmony|mid [--seed N] --out DIR [--layers N] [--hidden N]\n"
                     "       [--intermediate N] [--heads N] [--kv-heads N] [--head-dim N] [--experts N]\n"
                     "       [--experts-per-tok N] [--vocab N] [--window N] [--shards N]\n");
        return 2;
    }
    try {
        std::string out;
        ms::SyntheticSpec s = ms::synthetic_spec_from_args(args, &out);
        if (out.empty()) throw ms::Error(MS_ERR_INVALID_ARGUMENT, "--out DIR is required");
        ms::write_synthetic_checkpoint(s, out);
        std::printf("%s: seed %llu, %d layers, hidden %d, %d experts, vocab %d, %d shard(s)\n", out.c_str(),
                    (unsigned long long)s.seed, s.layers, s.hidden, s.experts, s.vocab, s.shards);
        return 0;
    } catch (const ms::Error &e) {
        std::fprintf(stderr, "make_checkpoint: %s\n", e.what());
        return 1;
    }
}
