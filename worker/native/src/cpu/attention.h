// Paged attention for one token and one KV head with its group of query heads (GQA), with attention sinks.
// Each query head g has a learned sink logit: it is an extra softmax column with a zero value vector, so it joins the
// running maximum and the denominator but adds nothing to the output. Keys/values are read from fixed-size blocks
// through a block table; positions [first, last] are attended (the caller applies causality and the sliding window).
#pragma once

#include <cstdint>

#include "cpu/simd.h"

namespace ms {

struct PagedKvView {
    const void *k = nullptr;  // element (block b, position-in-block i): k + b * block_stride + i * row_stride
    const void *v = nullptr;
    bool bf16 = false;        // elements are bf16 bit patterns, else fp32
    int block_size = 16;
    int64_t block_stride = 0;  // elements
    int64_t row_stride = 0;    // elements
    const int32_t *block_table = nullptr;
    int n_blocks = 0;
};

// q: [n_q_heads][head_dim] (already scaled or not: `scale` multiplies q·k), sinks: [n_q_heads],
// out: [n_q_heads][head_dim]. Throws ms::Error(MS_ERR_INTERNAL) if a needed block is missing (-1 or past the table).
void attend_paged(Simd s, const float *q, int n_q_heads, int head_dim, float scale, const float *sinks,
                  const PagedKvView &kv, int first, int last, float *out);

}  // namespace ms
