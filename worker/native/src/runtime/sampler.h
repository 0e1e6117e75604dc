// Token sampling from one row of logits: greedy, temperature, top-k, top-p, min-p with a per-request RNG (so a
// request's tokens depend on its seed and inputs only, never on what else shares the batch), plus top-N logprobs.
#pragma once

#include <cstdint>
#include <vector>

#include "engine.h"

namespace ms {

struct SamplingParams {
    float temperature = 0.f;  // 0 = greedy
    float top_p = 1.f;        // 1 = off
    int top_k = 0;            // 0 = off
    float min_p = 0.f;        // 0 = off; keeps tokens with p >= min_p * p_max
    int logprobs = 0;         // top-N alternatives to report (<= MS_MAX_LOGPROBS)
};

// splitmix64: small, fast, the same sequence on every platform.
class Rng {
  public:
    explicit Rng(uint64_t seed = 0) : state_(seed) {}
    uint64_t next();
    double uniform();  // [0, 1)
  private:
    uint64_t state_;
};

// A seed for a request that did not ask for one: distinct per call, different across processes.
uint64_t fresh_seed();

struct Sample {
    int32_t token = -1;
    float logprob = 0.f;  // log-softmax of the raw logits at `token` (when logprobs were asked for)
    int n_top = 0;
    int32_t top_ids[MS_MAX_LOGPROBS];
    float top_logprobs[MS_MAX_LOGPROBS];
};

// Holds scratch buffers so sampling does not allocate per token; one per thread.
class Sampler {
  public:
    void sample(const float *logits, int vocab, const SamplingParams &params, Rng &rng, Sample &out);

  private:
    int32_t pick(const float *logits, int vocab, const SamplingParams &params, Rng &rng);
    void fill_logprobs(const float *logits, int vocab, int n_top, Sample &out);

    std::vector<float> probs_;
    std::vector<int32_t> idx_;
};

}  // namespace ms
