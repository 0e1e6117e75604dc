#include "cpu/swiglu.h"

#include <algorithm>
#include <cmath>

#include "cpu/simd.h"

#if defined(__x86_64__)
#include "cpu/x86_intrinsics.h"
#endif

namespace ms {

void swiglu_interleaved_scalar(const float *gate_up, int n_out, float limit, float alpha, float *out) {
    for (int i = 0; i < n_out; ++i) {
        float g = std::min(gate_up[2 * i], limit);
        float u = std::clamp(gate_up[2 * i + 1], -limit, limit);
        float glu = g / (1.0f + std::exp(-alpha * g));
        out[i] = glu * (u + 1.0f);
    }
}

#if defined(__x86_64__)
namespace {

#define MS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-ln2/2, ln2/2] (ln 2 split in a high part with
// few significant bits, so n * ln2_hi is exact for |n| < 2^11, and the rest). exp(r) by Taylor to r^7: the
// truncation error is below r^8/8! < 5e-9 relative, well under the rounding of the Horner steps. vscalefps applies
// 2^n with one rounding, overflowing to inf and underflowing through the subnormals to 0. x is clamped to
// [-110, 100] first (beyond that exp is 0 or inf anyway), which keeps r small; NaN passes through the clamps.
MS_AVX512 inline __m512 exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_min_ps(_mm512_set1_ps(100.0f), x));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);  // ln2_hi: 16 significant bits
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);  // ln 2 - ln2_hi
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

// 16 outputs from the 32 interleaved inputs at in.
MS_AVX512 inline void swiglu16(const float *in, __m512 limit, __m512 neg_alpha, float *out) {
    const __m512 a = _mm512_loadu_ps(in), b = _mm512_loadu_ps(in + 16);
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512 gate = _mm512_permutex2var_ps(a, even, b);
    const __m512 lin = _mm512_permutex2var_ps(a, _mm512_add_epi32(even, _mm512_set1_epi32(1)), b);
    // min_ps/max_ps return their second operand when either is NaN: the same as std::min(g, limit) and
    // std::clamp(u, -limit, limit) (a NaN input stays NaN).
    const __m512 g = _mm512_min_ps(limit, gate);
    const __m512 u = _mm512_min_ps(limit, _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), limit), lin));
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 glu = _mm512_div_ps(g, _mm512_add_ps(one, exp_ps(_mm512_mul_ps(neg_alpha, g))));
    _mm512_storeu_ps(out, _mm512_mul_ps(glu, _mm512_add_ps(u, one)));
}

MS_AVX512 void swiglu_avx512(const float *gate_up, int n_out, float limit, float alpha, float *out) {
    const __m512 lim = _mm512_set1_ps(limit), neg_alpha = _mm512_set1_ps(-alpha);
    int i = 0;
    for (; i + 16 <= n_out; i += 16) swiglu16(gate_up + 2 * i, lim, neg_alpha, out + i);
    if (i < n_out) {  // the tail through a zero-padded copy (each lane is computed on its own)
        const int left = n_out - i;
        float tmp_in[32] = {}, tmp_out[16];
        for (int j = 0; j < 2 * left; ++j) tmp_in[j] = gate_up[2 * i + j];
        swiglu16(tmp_in, lim, neg_alpha, tmp_out);
        for (int j = 0; j < left; ++j) out[i + j] = tmp_out[j];
    }
}

}  // namespace
#endif

void swiglu_interleaved(const float *gate_up, int n_out, float limit, float alpha, float *out) {
#if defined(__x86_64__)
    if (active_simd() == Simd::Avx512) return swiglu_avx512(gate_up, n_out, limit, alpha, out);
#endif
    swiglu_interleaved_scalar(gate_up, n_out, limit, alpha, out);
}

}  // namespace ms
