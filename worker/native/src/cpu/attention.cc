#include "cpu/attention.h"

#include "cpu/x86_intrinsics.h"

#include <cmath>
#include <string>

#include "common/error.h"
#include "cpu/avx2_reduce.h"
#include "cpu/bf16.h"

namespace ms {

namespace {

constexpr int kMaxHeadsPerGroup = 64;
constexpr int kMaxHeadDim = 256;
constexpr int kMaxBlock = 256;

struct ScalarOps {
    static float dot(const float *q, const float *k, int n) {
        float s = 0;
        for (int i = 0; i < n; ++i) s += q[i] * k[i];
        return s;
    }
    static float dot(const float *q, const uint16_t *k, int n) {
        float s = 0;
        for (int i = 0; i < n; ++i) s += q[i] * bf16_to_f32(k[i]);
        return s;
    }
    static void scale(float *acc, float c, int n) {
        for (int i = 0; i < n; ++i) acc[i] *= c;
    }
    static void axpy(float *acc, float e, const float *v, int n) {
        for (int i = 0; i < n; ++i) acc[i] += e * v[i];
    }
    static void axpy(float *acc, float e, const uint16_t *v, int n) {
        for (int i = 0; i < n; ++i) acc[i] += e * bf16_to_f32(v[i]);
    }
    template <class T> static void dot4(const float *q, const T *k, int64_t stride, int n, float *out) {
        for (int j = 0; j < 4; ++j) out[j] = dot(q, k + j * stride, n);
    }
    template <class T> static void axpy4(float *acc, const float *e, const T *v, int64_t stride, int n) {
        for (int j = 0; j < 4; ++j) axpy(acc, e[j], v + j * stride, n);
    }
};

#define MS_AVX512 __attribute__((target("avx512f")))
struct Avx512Ops {
    MS_AVX512 static inline __m512 load(const float *p) { return _mm512_loadu_ps(p); }
    MS_AVX512 static inline __m512 load(const uint16_t *p) {
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p))), 16));
    }
    template <class T> MS_AVX512 static inline float dot(const float *q, const T *k, int n) {
        __m512 acc = _mm512_setzero_ps();
        for (int i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load(k + i), acc);
        return _mm512_reduce_add_ps(acc);
    }
    MS_AVX512 static inline void scale(float *acc, float c, int n) {
        __m512 cv = _mm512_set1_ps(c);
        for (int i = 0; i < n; i += 16) _mm512_storeu_ps(acc + i, _mm512_mul_ps(_mm512_loadu_ps(acc + i), cv));
    }
    template <class T> MS_AVX512 static inline void axpy(float *acc, float e, const T *v, int n) {
        __m512 ev = _mm512_set1_ps(e);
        for (int i = 0; i < n; i += 16) _mm512_storeu_ps(acc + i, _mm512_fmadd_ps(ev, load(v + i), _mm512_loadu_ps(acc + i)));
    }
    // Four keys' dots (rows `stride` apart), each summed in the same order as dot(): the same results, four chains.
    template <class T> MS_AVX512 static inline void dot4(const float *q, const T *k, int64_t stride, int n, float *out) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < n; i += 16) {
            const __m512 qv = _mm512_loadu_ps(q + i);
            a0 = _mm512_fmadd_ps(qv, load(k + i), a0);
            a1 = _mm512_fmadd_ps(qv, load(k + stride + i), a1);
            a2 = _mm512_fmadd_ps(qv, load(k + 2 * stride + i), a2);
            a3 = _mm512_fmadd_ps(qv, load(k + 3 * stride + i), a3);
        }
        out[0] = _mm512_reduce_add_ps(a0);
        out[1] = _mm512_reduce_add_ps(a1);
        out[2] = _mm512_reduce_add_ps(a2);
        out[3] = _mm512_reduce_add_ps(a3);
    }
    // Four axpy() in a row with acc kept in a register between them: the same fma sequence per element.
    template <class T> MS_AVX512 static inline void axpy4(float *acc, const float *e, const T *v, int64_t stride, int n) {
        const __m512 e0 = _mm512_set1_ps(e[0]), e1 = _mm512_set1_ps(e[1]), e2 = _mm512_set1_ps(e[2]), e3 = _mm512_set1_ps(e[3]);
        for (int i = 0; i < n; i += 16) {
            __m512 a = _mm512_loadu_ps(acc + i);
            a = _mm512_fmadd_ps(e0, load(v + i), a);
            a = _mm512_fmadd_ps(e1, load(v + stride + i), a);
            a = _mm512_fmadd_ps(e2, load(v + 2 * stride + i), a);
            a = _mm512_fmadd_ps(e3, load(v + 3 * stride + i), a);
            _mm512_storeu_ps(acc + i, a);
        }
    }
};

#define MS_AVX2 __attribute__((target("avx2,fma")))
struct Avx2Ops {
    MS_AVX2 static inline __m256 load(const float *p) { return _mm256_loadu_ps(p); }
    MS_AVX2 static inline __m256 load(const uint16_t *p) {
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))), 16));
    }
    template <class T> MS_AVX2 static inline float dot(const float *q, const T *k, int n) {
        __m256 acc = _mm256_setzero_ps();
        for (int i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + i), load(k + i), acc);
        return hsum_avx2(acc);
    }
    MS_AVX2 static inline void scale(float *acc, float c, int n) {
        __m256 cv = _mm256_set1_ps(c);
        for (int i = 0; i < n; i += 8) _mm256_storeu_ps(acc + i, _mm256_mul_ps(_mm256_loadu_ps(acc + i), cv));
    }
    template <class T> MS_AVX2 static inline void axpy(float *acc, float e, const T *v, int n) {
        __m256 ev = _mm256_set1_ps(e);
        for (int i = 0; i < n; i += 8) _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(ev, load(v + i), _mm256_loadu_ps(acc + i)));
    }
    // Four keys' dots (rows `stride` apart), each summed in the same order as dot(): the same results, four chains.
    template <class T> MS_AVX2 static inline void dot4(const float *q, const T *k, int64_t stride, int n, float *out) {
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < n; i += 8) {
            const __m256 qv = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(qv, load(k + i), a0);
            a1 = _mm256_fmadd_ps(qv, load(k + stride + i), a1);
            a2 = _mm256_fmadd_ps(qv, load(k + 2 * stride + i), a2);
            a3 = _mm256_fmadd_ps(qv, load(k + 3 * stride + i), a3);
        }
        out[0] = hsum_avx2(a0);
        out[1] = hsum_avx2(a1);
        out[2] = hsum_avx2(a2);
        out[3] = hsum_avx2(a3);
    }
    // Four axpy() in a row with acc kept in a register between them: the same fma sequence per element.
    template <class T> MS_AVX2 static inline void axpy4(float *acc, const float *e, const T *v, int64_t stride, int n) {
        const __m256 e0 = _mm256_set1_ps(e[0]), e1 = _mm256_set1_ps(e[1]), e2 = _mm256_set1_ps(e[2]), e3 = _mm256_set1_ps(e[3]);
        for (int i = 0; i < n; i += 8) {
            __m256 a = _mm256_loadu_ps(acc + i);
            a = _mm256_fmadd_ps(e0, load(v + i), a);
            a = _mm256_fmadd_ps(e1, load(v + stride + i), a);
            a = _mm256_fmadd_ps(e2, load(v + 2 * stride + i), a);
            a = _mm256_fmadd_ps(e3, load(v + 3 * stride + i), a);
            _mm256_storeu_ps(acc + i, a);
        }
    }
};

// Online softmax over blocks: per head a running max m (starting at the sink), denominator l (starting at
// exp(sink - m) = 1) and unnormalised output acc.
template <class Ops, class T>
__attribute__((always_inline)) inline void attend_impl(const float *q, int G, int hd, float scale, const float *sinks,
                                                       const PagedKvView &kv, int first, int last, float *out) {
    float m[kMaxHeadsPerGroup], l[kMaxHeadsPerGroup], sc[kMaxBlock];
    for (int g = 0; g < G; ++g) {
        m[g] = sinks[g];
        l[g] = 1.0f;
        for (int i = 0; i < hd; ++i) out[g * hd + i] = 0.0f;
    }
    const T *kbase = static_cast<const T *>(kv.k), *vbase = static_cast<const T *>(kv.v);
    const int bs = kv.block_size;
    for (int bi = first / bs; bi <= last / bs; ++bi) {
        int32_t blk = bi < kv.n_blocks ? kv.block_table[bi] : -1;
        if (blk < 0) throw Error(MS_ERR_INTERNAL, "attention: KV block " + std::to_string(bi) + " is not mapped");
        const int p0 = bi * bs > first ? bi * bs : first;
        const int p1 = bi * bs + bs - 1 < last ? bi * bs + bs - 1 : last;
        const T *kb = kbase + int64_t(blk) * kv.block_stride, *vb = vbase + int64_t(blk) * kv.block_stride;
        for (int g = 0; g < G; ++g) {
            const float *qg = q + g * hd;
            float mx = m[g];
            // Keys four at a time (independent dot chains; each dot is summed as Ops::dot sums it).
            int p = p0;
            for (; p + 4 <= p1 + 1; p += 4) Ops::dot4(qg, kb + int64_t(p - bi * bs) * kv.row_stride, kv.row_stride, hd, sc + (p - p0));
            for (; p <= p1; ++p) sc[p - p0] = Ops::dot(qg, kb + int64_t(p - bi * bs) * kv.row_stride, hd);
            for (p = p0; p <= p1; ++p) {
                const float s = sc[p - p0] * scale;
                sc[p - p0] = s;
                if (s > mx) mx = s;
            }
            float *acc = out + g * hd;
            if (mx > m[g]) {
                float corr = std::exp(m[g] - mx);
                l[g] *= corr;
                Ops::scale(acc, corr, hd);
                m[g] = mx;
            }
            for (p = p0; p <= p1; ++p) {
                const float e = std::exp(sc[p - p0] - mx);
                sc[p - p0] = e;
                l[g] += e;
            }
            // Values four at a time: the accumulator stays in registers across the four (the same fma order).
            for (p = p0; p + 4 <= p1 + 1; p += 4) Ops::axpy4(acc, sc + (p - p0), vb + int64_t(p - bi * bs) * kv.row_stride, kv.row_stride, hd);
            for (; p <= p1; ++p) Ops::axpy(acc, sc[p - p0], vb + int64_t(p - bi * bs) * kv.row_stride, hd);
        }
    }
    for (int g = 0; g < G; ++g) Ops::scale(out + g * hd, 1.0f / l[g], hd);
}

void attend_scalar(const float *q, int G, int hd, float scale, const float *sinks, const PagedKvView &kv, int first,
                   int last, float *out) {
    if (kv.bf16) attend_impl<ScalarOps, uint16_t>(q, G, hd, scale, sinks, kv, first, last, out);
    else attend_impl<ScalarOps, float>(q, G, hd, scale, sinks, kv, first, last, out);
}

MS_AVX2 void attend_avx2(const float *q, int G, int hd, float scale, const float *sinks, const PagedKvView &kv, int first,
                         int last, float *out) {
    if (kv.bf16) attend_impl<Avx2Ops, uint16_t>(q, G, hd, scale, sinks, kv, first, last, out);
    else attend_impl<Avx2Ops, float>(q, G, hd, scale, sinks, kv, first, last, out);
}

MS_AVX512 void attend_avx512(const float *q, int G, int hd, float scale, const float *sinks, const PagedKvView &kv,
                             int first, int last, float *out) {
    if (kv.bf16) attend_impl<Avx512Ops, uint16_t>(q, G, hd, scale, sinks, kv, first, last, out);
    else attend_impl<Avx512Ops, float>(q, G, hd, scale, sinks, kv, first, last, out);
}

}  // namespace

void attend_paged(Simd s, const float *q, int n_q_heads, int head_dim, float scale, const float *sinks,
                  const PagedKvView &kv, int first, int last, float *out) {
    if (n_q_heads > kMaxHeadsPerGroup || head_dim > kMaxHeadDim || kv.block_size > kMaxBlock || kv.block_size <= 0)
        throw Error(MS_ERR_UNSUPPORTED, "attention: heads per group <= 64, head_dim <= 256 and block size <= 256 supported");
    if (s == Simd::Avx512 && head_dim % 16 == 0) attend_avx512(q, n_q_heads, head_dim, scale, sinks, kv, first, last, out);
    else if (s != Simd::Scalar && head_dim % 8 == 0) attend_avx2(q, n_q_heads, head_dim, scale, sinks, kv, first, last, out);
    else attend_scalar(q, n_q_heads, head_dim, scale, sinks, kv, first, last, out);
}

}  // namespace ms
