#include "cpu/rmsnorm.h"

#include "cpu/x86_intrinsics.h"

#include <cmath>

#include "cpu/avx2_reduce.h"

namespace ms {

namespace {

void rmsnorm_scalar(const float *x, const float *w, int n, float eps, float *out) {
    float ss = 0;
    for (int i = 0; i < n; ++i) ss += x[i] * x[i];
    float inv = 1.0f / std::sqrt(ss / float(n) + eps);
    for (int i = 0; i < n; ++i) out[i] = x[i] * inv * w[i];
}

__attribute__((target("avx2,fma"))) void rmsnorm_avx2(const float *x, const float *w, int n, float eps, float *out) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum_avx2(acc);
    for (int j = i; j < n; ++j) ss += x[j] * x[j];
    float inv = 1.0f / std::sqrt(ss / float(n) + eps);
    __m256 iv = _mm256_set1_ps(inv);
    i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), iv), _mm256_loadu_ps(w + i)));
    for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

__attribute__((target("avx512f"))) void rmsnorm_avx512(const float *x, const float *w, int n, float eps, float *out) {
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        acc = _mm512_fmadd_ps(v, v, acc);
    }
    float ss = _mm512_reduce_add_ps(acc);
    for (int j = i; j < n; ++j) ss += x[j] * x[j];
    float inv = 1.0f / std::sqrt(ss / float(n) + eps);
    __m512 iv = _mm512_set1_ps(inv);
    i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(x + i), iv), _mm512_loadu_ps(w + i)));
    for (; i < n; ++i) out[i] = x[i] * inv * w[i];
}

}  // namespace

void rmsnorm(Simd s, const float *x, const float *w, int n, float eps, float *out) {
    if (s == Simd::Avx512) rmsnorm_avx512(x, w, n, eps, out);
    else if (s == Simd::Avx2) rmsnorm_avx2(x, w, n, eps, out);
    else rmsnorm_scalar(x, w, n, eps, out);
}

}  // namespace ms
