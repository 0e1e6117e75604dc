// MoE routing: the k largest raw router logits (ties: lower expert index first), then a softmax over those k only.
// Scalar only: k * n_experts comparisons per token.
#pragma once

namespace ms {

void router_topk_softmax(const float *logits, int n_experts, int k, int *ids, float *weights);

}  // namespace ms
