// The runtime's view of a model: what the KV cache must look like and how to compute one step. The engine runs over
// this interface so the scheduler and block manager can be tested against a small deterministic fake executor, and
// the real engine adapts ms::Model (model_executor.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "model/forward.h"

namespace ms {

// How the executor should pick the token of one logits row in forward_sample (one entry per want_logits seq).
// kHost: the executor copies the row's logits back and the engine samples it on the CPU (top-p/top-k/min-p,
// logprobs, penalties). kGreedy: argmax, the lowest index on ties (the CPU sampler's greedy pick). kTemperature: an
// exact draw from softmax(logits / temperature) by the Gumbel-max trick, argmax_i(logits_i / T + G_i) with G_i =
// -log(E_i), E_i ~ Exp(1) from a counter-based hash of (seed, i): the token depends only on the logits, T and seed.
// Device and host sampling of one request with the same seed give different (equally distributed) token streams.
struct DeviceSampling {
    enum Mode : int32_t { kHost = 0, kGreedy = 1, kTemperature = 2 };
    int32_t mode = kHost;
    float temperature = 0.f;  // kTemperature: > 0
    uint64_t seed = 0;        // kTemperature: drawn by the engine from the request's own Rng, one per step
};

class Executor {
  public:
    virtual ~Executor() = default;
    virtual const KvSpec &kv_spec() const = 0;
    // Bytes of one KV block of `group` (0 when the model has no layer in that group).
    virtual size_t kv_block_bytes(int group, int block_size, bool bf16) const = 0;
    virtual int vocab_size() const = 0;
    virtual int eos_token_id() const = 0;
    // Longest sequence the model supports (positions), or 0 for no limit of its own.
    virtual int max_positions() const = 0;
    // Computes one step. Writes one row of vocab_size logits per entry of `seqs` that has want_logits, in order
    // (row j for the j-th such entry).
    virtual void forward(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, float *logits) = 0;

    // Optional: sampling where the logits are (a device executor), so a step returns token ids instead of full rows.
    // When can_sample_on_device(), forward_sample computes the step like forward and, for the j-th want_logits seq,
    // writes tokens_out[j] (the token for rows[j].mode kGreedy / kTemperature, -1 for kHost) and copies the logits
    // of the kHost rows only, compacted in order, into host_logits (row k = the k-th kHost row).
    virtual bool can_sample_on_device() const { return false; }
    virtual void forward_sample(const ForwardSeq *seqs, int n_seqs, KvStorage &kv, const DeviceSampling *rows,
                                int32_t *tokens_out, float *host_logits) {
        throw std::logic_error("this executor does not sample on the device");
    }

    // Where the KV cache lives. A host executor keeps the defaults (the pool allocates host memory). A device
    // executor (CUDA) hands out device memory here, so the runtime's block manager still decides block tables on the
    // host while K/V stay on the device; it also caps the budget by what its memory fraction leaves free.
    virtual void *alloc_kv_memory(size_t bytes) const { return nullptr; }  // nullptr: use host memory
    virtual void free_kv_memory(void *p) const {}
    virtual uint64_t kv_memory_limit() const { return 0; }  // bytes; 0 = no limit of its own
};

}  // namespace ms
