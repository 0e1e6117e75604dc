#include "cpu/router.h"

#include <cmath>

namespace ms {

void router_topk_softmax(const float *logits, int n_experts, int k, int *ids, float *weights) {
    for (int j = 0; j < k; ++j) {
        int best = -1;
        for (int e = 0; e < n_experts; ++e) {
            bool taken = false;
            for (int i = 0; i < j; ++i) taken |= ids[i] == e;
            if (!taken && (best < 0 || logits[e] > logits[best])) best = e;
        }
        ids[j] = best;
    }
    float mx = logits[ids[0]], sum = 0;
    for (int j = 0; j < k; ++j) {
        weights[j] = std::exp(logits[ids[j]] - mx);
        sum += weights[j];
    }
    for (int j = 0; j < k; ++j) weights[j] /= sum;
}

}  // namespace ms
