// Horizontal reductions of AVX-512 registers shared by the 16-bit-activation kernels (matmul_bf16dot, matmul_f16dot).
// Each sum's order depends only on its own register's lanes, so a row's result is the same whichever rows share the
// call (batch invariance). Compiled with a target attribute, so it inlines into any AVX-512 F + DQ caller.
#pragma once

#include "cpu/x86_intrinsics.h"

namespace ms {

// Sums of the 16 lanes of a, b, c, d as [a, b, c, d].
__attribute__((target("avx512f,avx512dq"), always_inline)) inline __m128 hsum4_avx512(__m512 a, __m512 b, __m512 c,
                                                                                      __m512 d) {
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 u = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
    const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(u), _mm512_extractf32x8_ps(u, 1));
    return _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
}

}  // namespace ms
