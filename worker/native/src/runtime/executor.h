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

    // Where the KV cache lives. A host executor keeps the defaults (the pool allocates host memory). A device
    // executor (CUDA) hands out device memory here, so the runtime's block manager still decides block tables on the
    // host while K/V stay on the device; it also caps the budget by what its memory fraction leaves free.
    virtual void *alloc_kv_memory(size_t bytes) const { return nullptr; }  // nullptr: use host memory
    virtual void free_kv_memory(void *p) const {}
    virtual uint64_t kv_memory_limit() const { return 0; }  // bytes; 0 = no limit of its own
};

}  // namespace ms
