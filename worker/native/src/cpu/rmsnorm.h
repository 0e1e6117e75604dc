// RMSNorm in fp32: out[i] = x[i] / sqrt(mean(x^2) + eps) * w[i] (plain gain, no 1 + w). out may alias x.
#pragma once

#include "cpu/simd.h"

namespace ms {

void rmsnorm(Simd s, const float *x, const float *w, int n, float eps, float *out);

}  // namespace ms
