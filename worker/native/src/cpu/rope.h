// Rotary position embedding with YaRN scaling, NeoX ("half-split") layout: element i pairs with i + head_dim/2.
// YaRN (gpt-oss): frequency i blends interpolation 1/(factor * base^(2i/d)) and extrapolation 1/base^(2i/d) by
// mask = 1 - clamp((i - low)/(high - low), 0, 1) (mask 1 = extrapolation), with fractional low/high bounds from
// beta_fast/beta_slow; cos and sin are multiplied by the concentration 0.1 * ln(factor) + 1.
#pragma once

#include <vector>

#include "cpu/simd.h"

namespace ms {

struct RopeParams {
    int head_dim = 64;
    double theta = 150000;
    double factor = 1;  // <= 1: plain RoPE
    double original_max_pos = 4096;
    double beta_fast = 32, beta_slow = 1;
};

struct Rope {
    std::vector<float> inv_freq;  // head_dim / 2
    float concentration = 1;
    int head_dim = 0;
};

Rope make_rope(const RopeParams &p);
// cos_sin[2*i] = cos(pos * inv_freq[i]) * concentration, cos_sin[2*i+1] = the sine, for i < head_dim/2.
void rope_cos_sin(const Rope &r, int pos, float *cos_sin);
// Rotates n_heads vectors of head_dim laid out back to back, in place.
void rope_apply(Simd s, const Rope &r, const float *cos_sin, float *x, int n_heads);

}  // namespace ms
