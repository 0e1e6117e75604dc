#include "cpu/swiglu.h"

#include <algorithm>
#include <cmath>

namespace ms {

void swiglu_interleaved(const float *gate_up, int n_out, float limit, float alpha, float *out) {
    for (int i = 0; i < n_out; ++i) {
        float g = std::min(gate_up[2 * i], limit);
        float u = std::clamp(gate_up[2 * i + 1], -limit, limit);
        float glu = g / (1.0f + std::exp(-alpha * g));
        out[i] = glu * (u + 1.0f);
    }
}

}  // namespace ms
