#include "cuda/debug_skip.cuh"

#include <cstdlib>
#include <sstream>
#include <string>

#include "common/error.h"

namespace ms::cuda {
namespace {

unsigned parse_skip_mask() {
    const char *v = std::getenv("MODELSERVE_CUDA_DEBUG_SKIP");
    if (!v || !*v) return 0;
    static const char *names[] = {"qkv", "rope", "attn", "o", "router", "gate_up", "down", "combine", "lm_head"};
    unsigned mask = 0;
    std::stringstream in(v);
    std::string item;
    while (std::getline(in, item, ',')) {
        bool known = false;
        for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); ++i)
            if (item == names[i]) mask |= 1u << i, known = true;
        if (!known)
            throw Error(MS_ERR_INVALID_ARGUMENT, "MODELSERVE_CUDA_DEBUG_SKIP: unknown stage \"" + item +
                                                     "\" (qkv rope attn o router gate_up down combine lm_head)");
    }
    return mask;
}

}  // namespace

bool debug_skip(SkipStage stage, int n_tokens) {
    static const unsigned mask = parse_skip_mask();
    return n_tokens <= 8 && (mask >> unsigned(stage) & 1u);
}

}  // namespace ms::cuda
