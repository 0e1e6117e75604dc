// What the single-kernel benchmarks (bench_q8_kernel, bench_f16_kernel) share: their options (matrix shape, how many
// experts are cycled so that weights come from DRAM as in a model step, rounds, token counts), a clock and a median.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cli_args.h"

namespace ms_tools {

struct KernelBenchOptions {
    int rows, K, experts, rounds;
    std::vector<int> tokens;
};

// Parses --rows --k --experts --rounds --tokens (a comma-separated list) over the given defaults; a bad option or
// a K that is not a multiple of 32 (the MXFP4 block) exits with status 2 and the option named.
inline KernelBenchOptions parse_kernel_bench_options(int argc, char **argv, KernelBenchOptions o) {
    CliArgs args(argc, argv);
    while (args.next()) {
        const std::string a = args.name();
        if (a == "--rows") o.rows = args.int_value();
        else if (a == "--k") o.K = args.int_value();
        else if (a == "--experts") o.experts = args.int_value();
        else if (a == "--rounds") o.rounds = args.int_value();
        else if (a == "--tokens") {
            const std::string list = args.value();
            o.tokens.clear();
            for (size_t p = 0; p < list.size();) {
                const size_t q = std::min(list.find(',', p), list.size());
                o.tokens.push_back(std::atoi(list.substr(p, q - p).c_str()));
                if (o.tokens.back() <= 0) args.fail("wants positive token counts separated by commas");
                p = q + 1;
            }
        } else args.fail("unknown option");
    }
    if (o.rows <= 0 || o.experts <= 0 || o.rounds <= 0 || o.K <= 0 || o.K % 32) {
        std::fprintf(stderr, "--rows, --experts and --rounds must be positive, --k a positive multiple of 32 (one MXFP4 block)\n");
        std::exit(2);
    }
    return o;
}

inline double now_s() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

inline double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace ms_tools
