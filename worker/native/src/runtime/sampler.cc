#include "runtime/sampler.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <random>

namespace ms {

uint64_t Rng::next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }

uint64_t fresh_seed() {
    static std::atomic<uint64_t> counter{0};
    static const uint64_t base = [] {
        std::random_device rd;
        return (static_cast<uint64_t>(rd()) << 32) ^ rd() ^
               static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }();
    Rng r(base + counter.fetch_add(1) * 0x2545f4914f6cdd1dULL);
    return r.next();
}

void Sampler::sample(const float *logits, int vocab, const SamplingParams &params, Rng &rng, Sample &out) {
    sample(logits, vocab, params, TokenHistory{}, rng, out);
}

void Sampler::apply_penalties(const float *logits, int vocab, const SamplingParams &params, const TokenHistory &history,
                              float *out) {
    if (out != logits) std::copy(logits, logits + vocab, out);
    if (seen_count_.size() < static_cast<size_t>(vocab)) seen_count_.assign(vocab, 0);
    touched_.clear();
    // Generated tokens are counted (count >= 1); prompt-only tokens are marked -1 (seen, but count 0).
    for (int i = history.n_prompt; i < history.n_tokens; ++i) {
        const int32_t t = history.tokens[i];
        if (t < 0 || t >= vocab) continue;
        if (seen_count_[t] == 0) touched_.push_back(t);
        ++seen_count_[t];
    }
    if (params.repetition_penalty != 1.f) {
        for (int i = 0; i < std::min(history.n_prompt, history.n_tokens); ++i) {
            const int32_t t = history.tokens[i];
            if (t < 0 || t >= vocab || seen_count_[t] != 0) continue;
            seen_count_[t] = -1;
            touched_.push_back(t);
        }
    }
    const float rep = params.repetition_penalty;
    for (int32_t t : touched_) {
        float l = out[t];
        if (rep != 1.f) l = l > 0.f ? l / rep : l * rep;
        const int32_t count = seen_count_[t];
        if (count > 0) l -= static_cast<float>(count) * params.frequency_penalty + params.presence_penalty;
        out[t] = l;
        seen_count_[t] = 0;
    }
}

void Sampler::sample(const float *logits, int vocab, const SamplingParams &params, const TokenHistory &history, Rng &rng,
                     Sample &out) {
    const float *row = logits;
    if (params.has_penalties() && history.n_tokens > 0) {
        penalised_.resize(vocab);
        apply_penalties(logits, vocab, params, history, penalised_.data());
        row = penalised_.data();
    }
    out.token = pick(row, vocab, params, rng);
    out.n_top = 0;
    out.logprob = 0.f;
    if (params.logprobs > 0) fill_logprobs(logits, vocab, std::min(params.logprobs, MS_MAX_LOGPROBS), out);
}

int32_t Sampler::pick(const float *logits, int vocab, const SamplingParams &params, Rng &rng) {
    // Greedy: the first index of the largest logit.
    int32_t best = 0;
    for (int i = 1; i < vocab; ++i)
        if (logits[i] > logits[best]) best = i;
    if (params.temperature <= 0.f) return best;

    idx_.resize(vocab);
    for (int i = 0; i < vocab; ++i) idx_[i] = i;
    int n = vocab;
    if (params.top_k > 0 && params.top_k < n) {
        // Top-k on the logits (same order as the probabilities), so only k exponentials are needed.
        auto by_logit = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
        std::nth_element(idx_.begin(), idx_.begin() + params.top_k, idx_.end(), by_logit);
        n = params.top_k;
    }
    // Unnormalized probabilities of the candidates, the largest at 1.
    probs_.resize(vocab);
    const float m = logits[best];
    const float inv_t = 1.f / params.temperature;
    if (n == vocab) {
        for (int i = 0; i < vocab; ++i) probs_[i] = std::exp((logits[i] - m) * inv_t);
    } else {
        for (int i = 0; i < n; ++i) probs_[idx_[i]] = std::exp((logits[idx_[i]] - m) * inv_t);
    }
    const float *p = probs_.data();
    // Higher probability first, lower index on ties: a strict order, so the result is deterministic.
    auto before = [p](int32_t a, int32_t b) { return p[a] > p[b] || (p[a] == p[b] && a < b); };

    if (params.top_p > 0.f && params.top_p < 1.f) {
        double total = 0;
        for (int i = 0; i < n; ++i) total += p[idx_[i]];
        const double target = params.top_p * total;
        // Sort only as much of the head as the nucleus needs, growing it until the mass is reached.
        int sorted = 0;
        for (int k = std::min(n, 64);; k = std::min(n, k * 4)) {
            if (k < n) std::nth_element(idx_.begin() + sorted, idx_.begin() + k, idx_.begin() + n, before);
            std::sort(idx_.begin() + sorted, idx_.begin() + k, before);
            double cum = 0;
            int cut = -1;
            for (int i = 0; i < k; ++i) {
                cum += p[idx_[i]];
                if (cum >= target) {
                    cut = i + 1;
                    break;
                }
            }
            sorted = k;
            if (cut > 0) {
                n = cut;
                break;
            }
            if (k == n) break;  // rounding: keep everything
        }
    }
    if (params.min_p > 0.f) {
        // p_max is 1 before normalization (top-k and top-p never drop the most likely token).
        const float threshold = params.min_p;
        int kept = 0;
        for (int i = 0; i < n; ++i)
            if (p[idx_[i]] >= threshold) idx_[kept++] = idx_[i];
        n = kept;
    }
    double total = 0;
    for (int i = 0; i < n; ++i) total += p[idx_[i]];
    const double u = rng.uniform() * total;
    double cum = 0;
    for (int i = 0; i < n; ++i) {
        cum += p[idx_[i]];
        if (u < cum) return idx_[i];
    }
    return idx_[n - 1];
}

void Sampler::fill_logprobs(const float *logits, int vocab, int n_top, Sample &out) {
    float m = logits[0];
    for (int i = 1; i < vocab; ++i) m = std::max(m, logits[i]);
    double s = 0;
    for (int i = 0; i < vocab; ++i) s += std::exp(static_cast<double>(logits[i] - m));
    const float lse = m + static_cast<float>(std::log(s));
    out.logprob = logits[out.token] - lse;
    n_top = std::min(n_top, vocab);
    idx_.resize(vocab);
    for (int i = 0; i < vocab; ++i) idx_[i] = i;
    auto before = [logits](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
    std::partial_sort(idx_.begin(), idx_.begin() + n_top, idx_.end(), before);
    for (int i = 0; i < n_top; ++i) {
        out.top_ids[i] = idx_[i];
        out.top_logprobs[i] = logits[idx_[i]] - lse;
    }
    out.n_top = n_top;
}

}  // namespace ms
