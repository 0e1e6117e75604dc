// Horizontal reductions of one AVX2 register, in one fixed order (upper half onto lower, then pairs, then the last
// two lanes) so that every kernel that reduces this way gets the same bits. The kernels compile their SIMD code with
// target attributes rather than -mavx2; these carry "avx2" so they inline into any AVX2 or AVX-512 caller.
#pragma once

#include <immintrin.h>

namespace ms {

__attribute__((target("avx2"), always_inline)) inline float hsum_avx2(__m256 v) {
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return _mm_cvtss_f32(s4);
}

__attribute__((target("avx2"), always_inline)) inline float hmax_avx2(__m256 v) {
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    return _mm_cvtss_f32(m4);
}

}  // namespace ms
