#include "cpu/rope.h"

#include "cpu/x86_intrinsics.h"

#include <algorithm>
#include <cmath>

namespace ms {

Rope make_rope(const RopeParams &p) {
    Rope r;
    r.head_dim = p.head_dim;
    const int half = p.head_dim / 2;
    const double d = p.head_dim;
    r.inv_freq.resize(half);
    if (p.factor <= 1.0) {
        for (int i = 0; i < half; ++i) r.inv_freq[i] = float(1.0 / std::pow(p.theta, 2.0 * i / d));
        return r;
    }
    const double pi = 3.14159265358979323846;
    auto correction_dim = [&](double rotations) {
        return d * std::log(p.original_max_pos / (rotations * 2 * pi)) / (2 * std::log(p.theta));
    };
    double low = std::max(correction_dim(p.beta_fast), 0.0);
    double high = std::min(correction_dim(p.beta_slow), d - 1);
    if (high == low) high += 0.001;
    for (int i = 0; i < half; ++i) {
        double pos_freq = std::pow(p.theta, 2.0 * i / d);
        double extrap = 1.0 / pos_freq, interp = 1.0 / (p.factor * pos_freq);
        double ramp = std::clamp((i - low) / (high - low), 0.0, 1.0);
        double mask = 1.0 - ramp;
        r.inv_freq[i] = float(interp * (1.0 - mask) + extrap * mask);
    }
    r.concentration = float(0.1 * std::log(p.factor) + 1.0);
    return r;
}

void rope_cos_sin(const Rope &r, int pos, float *cos_sin) {
    const int half = r.head_dim / 2;
    for (int i = 0; i < half; ++i) {
        float angle = float(pos) * r.inv_freq[i];  // fp32 product, as reference implementations compute it
        cos_sin[2 * i] = float(std::cos(double(angle))) * r.concentration;
        cos_sin[2 * i + 1] = float(std::sin(double(angle))) * r.concentration;
    }
}

namespace {

void apply_scalar(const float *cs, float *x, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    for (int h = 0; h < n_heads; ++h) {
        float *v = x + h * head_dim;
        for (int i = 0; i < half; ++i) {
            float a = v[i], b = v[i + half], c = cs[2 * i], s = cs[2 * i + 1];
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

__attribute__((target("avx2,fma"))) void apply_avx2(const float *cs, float *x, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    if (half % 8 != 0) return apply_scalar(cs, x, n_heads, head_dim);
    const __m256i even = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm256_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15);
    for (int h = 0; h < n_heads; ++h) {
        float *v = x + h * head_dim;
        for (int i = 0; i < half; i += 8) {
            __m256 c = _mm256_i32gather_ps(cs + 2 * i, even, 4), s = _mm256_i32gather_ps(cs + 2 * i, odd, 4);
            __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + half);
            _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
            _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(b, c), _mm256_mul_ps(a, s)));
        }
    }
}

}  // namespace

void rope_apply(Simd s, const Rope &r, const float *cos_sin, float *x, int n_heads) {
    // One AVX2 path serves AVX-512 machines too: rotation is a small share of a step.
    if (s != Simd::Scalar) apply_avx2(cos_sin, x, n_heads, r.head_dim);
    else apply_scalar(cos_sin, x, n_heads, r.head_dim);
}

}  // namespace ms
