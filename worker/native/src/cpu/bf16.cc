#include "cpu/bf16.h"

#include "cpu/x86_intrinsics.h"

namespace ms {

namespace {

void bf16_to_f32_scalar(const uint16_t *in, float *out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}
void f32_to_bf16_scalar(const float *in, uint16_t *out, int64_t n) {
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

__attribute__((target("avx2,fma"))) void bf16_to_f32_avx2(const uint16_t *in, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(in + i)));
        _mm256_storeu_ps(out + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

// Round to nearest even in integer arithmetic; NaNs are handled by the scalar tail semantics via a blend.
__attribute__((target("avx2,fma"))) void f32_to_bf16_avx2(const float *in, uint16_t *out, int64_t n) {
    int64_t i = 0;
    const __m256i bias = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1);
    const __m256i absmask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i qnan = _mm256_set1_epi32(0x00400000);
    for (; i + 8 <= n; i += 8) {
        __m256i u = _mm256_castps_si256(_mm256_loadu_ps(in + i));
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
        __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(bias, lsb));
        __m256i isnan = _mm256_cmpgt_epi32(_mm256_and_si256(u, absmask), inf);
        r = _mm256_blendv_epi8(r, _mm256_or_si256(u, qnan), isnan);
        r = _mm256_srli_epi32(r, 16);
        __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out + i), packed);
    }
    for (; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

__attribute__((target("avx512f"))) void bf16_to_f32_avx512(const uint16_t *in, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(in + i)));
        _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
    }
    for (; i < n; ++i) out[i] = bf16_to_f32(in[i]);
}

__attribute__((target("avx512f"))) void f32_to_bf16_avx512(const float *in, uint16_t *out, int64_t n) {
    int64_t i = 0;
    const __m512i bias = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1);
    const __m512i absmask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i qnan = _mm512_set1_epi32(0x00400000);
    for (; i + 16 <= n; i += 16) {
        __m512i u = _mm512_castps_si512(_mm512_loadu_ps(in + i));
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
        __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(bias, lsb));
        __mmask16 isnan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, absmask), inf);
        r = _mm512_mask_mov_epi32(r, isnan, _mm512_or_si512(u, qnan));
        r = _mm512_srli_epi32(r, 16);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i), _mm512_cvtepi32_epi16(r));
    }
    for (; i < n; ++i) out[i] = f32_to_bf16(in[i]);
}

}  // namespace

void bf16_to_f32_n(Simd s, const uint16_t *in, float *out, int64_t n) {
    if (s == Simd::Avx512) bf16_to_f32_avx512(in, out, n);
    else if (s == Simd::Avx2) bf16_to_f32_avx2(in, out, n);
    else bf16_to_f32_scalar(in, out, n);
}

void f32_to_bf16_n(Simd s, const float *in, uint16_t *out, int64_t n) {
    if (s == Simd::Avx512) f32_to_bf16_avx512(in, out, n);
    else if (s == Simd::Avx2) f32_to_bf16_avx2(in, out, n);
    else f32_to_bf16_scalar(in, out, n);
}

}  // namespace ms
