// Token sampling from one row of logits: penalties on tokens already seen, then greedy, temperature, top-k, top-p,
// min-p with a per-request RNG (so a request's tokens depend on its seed and inputs only, never on what else shares
// the batch), plus top-N logprobs (of the raw logits, before penalties, as vLLM reports them by default).
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
    // OpenAI semantics, over generated tokens only: logit[j] -= count[j] * frequency + (count[j] > 0) * presence.
    float frequency_penalty = 0.f;  // 0 = off, [-2, 2]
    float presence_penalty = 0.f;   // 0 = off, [-2, 2]
    // vLLM semantics, over prompt and generated tokens: a seen token's logit is divided by it when positive,
    // multiplied by it otherwise (> 1 discourages repeats).
    float repetition_penalty = 1.f;  // 1 = off, > 0
    bool has_penalties() const { return frequency_penalty != 0.f || presence_penalty != 0.f || repetition_penalty != 1.f; }
    // Whether an executor that samples where the logits are (DeviceSampling in executor.h) can pick this row's token
    // exactly: greedy, or plain temperature sampling (no top-p/top-k/min-p truncation); never with logprobs or
    // penalties (those need the whole row on the host).
    bool device_sampleable() const {
        if (logprobs > 0 || has_penalties()) return false;
        return temperature <= 0.f || (top_p >= 1.f && top_k == 0 && min_p <= 0.f);
    }
};

// The tokens penalties look at: tokens[0, n_prompt) are the prompt, tokens[n_prompt, n_tokens) were generated.
struct TokenHistory {
    const int32_t *tokens = nullptr;
    int n_tokens = 0;
    int n_prompt = 0;
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
    // With penalties: `history` is needed when params.has_penalties() (ignored otherwise).
    void sample(const float *logits, int vocab, const SamplingParams &params, const TokenHistory &history, Rng &rng,
                Sample &out);
    // Writes the penalised copy of `logits` into `out` (vocab entries); exposed for tests.
    void apply_penalties(const float *logits, int vocab, const SamplingParams &params, const TokenHistory &history,
                         float *out);

  private:
    int32_t pick(const float *logits, int vocab, const SamplingParams &params, Rng &rng);
    void fill_logprobs(const float *logits, int vocab, int n_top, Sample &out);

    std::vector<float> probs_;
    std::vector<int32_t> idx_;
    std::vector<float> penalised_;
    std::vector<int32_t> seen_count_;  // per vocab id, all zero between calls (only touched ids are reset)
    std::vector<int32_t> touched_;
};

}  // namespace ms
