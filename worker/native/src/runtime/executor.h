// The runtime's view of a model: what the KV cache must look like and how to compute one step. The engine runs over
// this interface so the scheduler and block manager can be tested against a small deterministic fake executor, and
// the real engine adapts ms::Model (model_executor.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "model/forward.h"

namespace ms {

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
};

}  // namespace ms
