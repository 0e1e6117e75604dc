// One request inside the engine: its tokens (prompt, then generated), how much of them has KV in the cache, its
// blocks and its sampling state.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/block_manager.h"
#include "runtime/sampler.h"

namespace ms {

struct Sequence {
    uint64_t id = 0;
    std::vector<int32_t> tokens;  // prompt + generated; after a preemption the generated part is recomputed as prompt
    int n_prompt = 0;             // length of the submitted prompt
    int n_computed = 0;           // tokens[0, n_computed) have KV in the cache
    int n_generated = 0;
    int max_tokens = 1;
    std::vector<int32_t> stop_ids;
    SamplingParams sampling;
    Rng rng;
    SeqBlocks blocks;
    bool running = false;          // in the scheduler's running set
    bool prefix_attached = false;  // the prefix cache was consulted for the current admission
    bool first_admission = true;
    int n_cached_prompt = 0;       // prompt tokens the first admission found in the prefix cache
    uint64_t scheduled_step = 0;   // last step that gave it tokens (to keep it from being preempted in that step)

    int remaining() const { return static_cast<int>(tokens.size()) - n_computed; }
};

}  // namespace ms
