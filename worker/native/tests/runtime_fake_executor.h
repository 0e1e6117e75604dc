// A small deterministic stand-in for the model, for runtime tests. Its logits are a pseudo-random function of the
// token history the KV cache holds, read back through the block tables: K stores (position, token) per position, and
// the logits of position p hash every (position, token) of the full group's positions [0, p] and the sliding group's
// window [p - window + 1, p]. A block-table mistake either trips the position check (an exception) or changes the
// tokens, so scheduler and cache bugs show up as wrong generations. `reference_logits` computes the same function
// straight from a token list, without any cache.
#pragma once

#include <cstdint>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/executor.h"

namespace ms::testing {

class FakeExecutor : public Executor {
  public:
    FakeExecutor(int vocab, int sliding_window, int n_full_layers = 1, int n_sliding_layers = 1) : vocab_(vocab) {
        spec_.kv_dim = 2;
        spec_.sliding_window = n_sliding_layers > 0 ? sliding_window : 0;
        for (int l = 0; l < n_full_layers + n_sliding_layers; ++l) {
            const int g = (l < n_sliding_layers) ? kSlidingGroup : kFullGroup;
            spec_.layer_group.push_back(g);
            spec_.layer_index_in_group.push_back(spec_.layers_in_group[g]++);
        }
    }

    const KvSpec &kv_spec() const override { return spec_; }
    size_t kv_block_bytes(int group, int block_size, bool bf16) const override {
        return spec_.block_bytes(group, block_size, bf16);
    }
    int vocab_size() const override { return vocab_; }
    int eos_token_id() const override { return 0; }
    int max_positions() const override { return 0; }

    void forward(const ForwardSeq *seqs, int n, KvStorage &kv, float *logits) override {
        if (kv.bf16) throw std::runtime_error("fake executor stores fp32 only");
        {
            std::unique_lock<std::mutex> lk(gate_mu_);
            if (pause_at_forward_ > 0 && ++forwards_seen_ == pause_at_forward_) paused_ = true;
            in_forward = true;
            gate_cv_.notify_all();
            gate_cv_.wait(lk, [&] { return !paused_; });
            in_forward = false;
        }
        if (fail_next.exchange(false)) throw std::runtime_error("injected failure");
        ++steps;
        int row = 0;
        for (int i = 0; i < n; ++i) {
            const ForwardSeq &s = seqs[i];
            tokens_computed += s.n_tokens;
            for (int t = 0; t < s.n_tokens; ++t) {
                const int pos = s.start_pos + t;
                for (int g = 0; g < kNumKvGroups; ++g) {
                    if (spec_.layers_in_group[g] == 0) continue;
                    float *k = slot(kv, s, g, pos);
                    k[0] = static_cast<float>(pos);
                    k[1] = static_cast<float>(s.tokens[t]);
                }
            }
            if (!s.want_logits) continue;
            const int p = s.start_pos + s.n_tokens - 1;
            uint64_t h = 0x1234;
            for (int q = 0; q <= p; ++q) h = mix(h, read(kv, s, kFullGroup, q));
            if (spec_.layers_in_group[kSlidingGroup] > 0) {
                for (int q = std::max(0, p - spec_.sliding_window + 1); q <= p; ++q)
                    h = mix(h ^ 0x55, read(kv, s, kSlidingGroup, q));
            }
            fill(h, logits + static_cast<size_t>(row++) * vocab_);
        }
    }

    // Device sampling stand-in (off unless set_device_sampling(true)): forward_sample computes the logits like
    // forward, picks kGreedy / kTemperature rows itself (sample_row below) and copies only the kHost rows, compacted,
    // into host_logits, as a device executor does. Device rows' slots past the host rows are poisoned with NaN so an
    // engine that reads the wrong row notices.
    void set_device_sampling(bool on) { device_sampling_ = on; }
    bool can_sample_on_device() const override { return device_sampling_; }
    void forward_sample(const ForwardSeq *seqs, int n, KvStorage &kv, const DeviceSampling *rows, int32_t *tokens_out,
                        float *host_logits) override {
        if (!device_sampling_) throw std::runtime_error("forward_sample called while device sampling is off");
        int R = 0;
        for (int i = 0; i < n; ++i) R += seqs[i].want_logits ? 1 : 0;
        all_rows_.resize(static_cast<size_t>(R) * vocab_);
        forward(seqs, n, kv, all_rows_.data());
        int k = 0, host = 0;
        for (int r = 0; r < R; ++r) host += rows[r].mode == DeviceSampling::kHost ? 1 : 0;
        for (int r = 0; r < R; ++r) {
            const float *l = all_rows_.data() + static_cast<size_t>(r) * vocab_;
            if (rows[r].mode == DeviceSampling::kHost) {
                std::copy(l, l + vocab_, host_logits + static_cast<size_t>(k++) * vocab_);
                tokens_out[r] = -1;
                ++host_rows;
            } else {
                tokens_out[r] = sample_row(l, rows[r]);
                ++device_rows;
            }
        }
        std::fill(host_logits + static_cast<size_t>(host) * vocab_, host_logits + static_cast<size_t>(R) * vocab_, NAN);
        if (host > 0 && host < R) ++mixed_steps;
    }
    // The device's pick for one row: argmax (lowest index on ties) or Gumbel-max over (seed, index) at temperature T.
    int32_t sample_row(const float *l, const DeviceSampling &d) const {
        int32_t best = 0;
        double bv = -INFINITY;
        for (int v = 0; v < vocab_; ++v) {
            double key = l[v];
            if (d.mode == DeviceSampling::kTemperature) {
                uint64_t z = d.seed + static_cast<uint64_t>(v + 1) * 0x9e3779b97f4a7c15ULL;
                z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
                z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
                z ^= z >> 31;
                const double u = (static_cast<double>(z >> 11) + 0.5) / 9007199254740992.0;
                key = key / d.temperature - std::log(-std::log1p(-u));
            }
            if (key > bv) bv = key, best = v;
        }
        return best;
    }
    std::atomic<long> host_rows{0}, device_rows{0}, mixed_steps{0};

    // The logits after tokens[0, n) computed without a cache.
    void reference_logits(const int32_t *tokens, int n, float *out) const {
        const int p = n - 1;
        uint64_t h = 0x1234;
        for (int q = 0; q <= p; ++q) h = mix(h, static_cast<uint64_t>(tokens[q]));
        if (spec_.layers_in_group[kSlidingGroup] > 0)
            for (int q = std::max(0, p - spec_.sliding_window + 1); q <= p; ++q) h = mix(h ^ 0x55, static_cast<uint64_t>(tokens[q]));
        fill(h, out);
    }

    // Greedy continuation of `prompt` for `n` tokens without a cache.
    std::vector<int32_t> reference_greedy(std::vector<int32_t> tokens, int n) const {
        std::vector<float> l(vocab_);
        std::vector<int32_t> out;
        for (int i = 0; i < n; ++i) {
            reference_logits(tokens.data(), static_cast<int>(tokens.size()), l.data());
            int best = 0;
            for (int v = 1; v < vocab_; ++v)
                if (l[v] > l[best]) best = v;
            out.push_back(best);
            tokens.push_back(best);
        }
        return out;
    }

    // Test controls: pause() holds the next forward until resume(); wait_in_forward() returns once one is held.
    void pause() {
        std::lock_guard<std::mutex> lk(gate_mu_);
        paused_ = true;
    }
    // Holds the n-th forward from now on (1 = the next one), at a step count rather than a wall-clock moment, so a
    // test's view of the engine does not depend on how the machine schedules its threads.
    void pause_at_forward(int n) {
        std::lock_guard<std::mutex> lk(gate_mu_);
        pause_at_forward_ = n;
        forwards_seen_ = 0;
    }
    void resume() {
        std::lock_guard<std::mutex> lk(gate_mu_);
        paused_ = false;
        gate_cv_.notify_all();
    }
    void wait_in_forward() {
        std::unique_lock<std::mutex> lk(gate_mu_);
        gate_cv_.wait(lk, [&] { return in_forward; });
    }

    std::atomic<int> steps{0};
    std::atomic<long> tokens_computed{0};
    std::atomic<bool> fail_next{false};

  private:
    static uint64_t mix(uint64_t h, uint64_t x) {
        h ^= x + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
        h *= 0xff51afd7ed558ccdULL;
        return h ^ (h >> 29);
    }
    void fill(uint64_t h, float *out) const {
        for (int v = 0; v < vocab_; ++v) {
            const uint64_t r = mix(h, static_cast<uint64_t>(v) + 77);
            out[v] = static_cast<float>(static_cast<double>(r >> 11) / 9007199254740992.0 * 10.0 - 5.0);
        }
    }
    float *slot(KvStorage &kv, const ForwardSeq &s, int g, int pos) const {
        const int bi = pos / kv.block_size;
        if (bi >= s.n_blocks[g]) throw std::runtime_error("position " + std::to_string(pos) + " beyond the block table of group " + std::to_string(g));
        const int32_t b = s.block_table[g][bi];
        if (b < 0 || b >= kv.num_blocks[g]) throw std::runtime_error("bad block id " + std::to_string(b) + " for position " + std::to_string(pos) + " in group " + std::to_string(g));
        float *base = static_cast<float *>(kv.k[g]);
        return base + ((static_cast<size_t>(b) * kv.layers_in_group[g]) * kv.block_size + pos % kv.block_size) * kv.kv_dim;
    }
    uint64_t read(KvStorage &kv, const ForwardSeq &s, int g, int pos) const {
        const float *k = slot(kv, s, g, pos);
        if (k[0] != static_cast<float>(pos))
            throw std::runtime_error("KV of group " + std::to_string(g) + " at position " + std::to_string(pos) + " holds position " + std::to_string(k[0]));
        return static_cast<uint64_t>(k[1]);
    }

    int vocab_;
    KvSpec spec_;
    bool device_sampling_ = false;
    std::vector<float> all_rows_;
    std::mutex gate_mu_;
    std::condition_variable gate_cv_;
    bool paused_ = false;
    bool in_forward = false;
    int pause_at_forward_ = 0;
    int forwards_seen_ = 0;
};

}  // namespace ms::testing
