#include "llama/llama_ggml_ops.h"

#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "cpu/bf16.h"
#include "cpu/quant_types.h"

namespace ms {
namespace ggml_ops {

namespace {

inline uint32_t bits_of(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float float_of(uint32_t u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline uint16_t load_u16(const uint8_t *p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
}

// ggml's hsum_float_8 (and tinyBLAS's hsum): the upper 128-bit half added to the lower, then lanes 0+2 and 1+3, then
// those two.
inline float hsum8(const float *a) {
    const float l0 = a[4] + a[0], l1 = a[5] + a[1], l2 = a[6] + a[2], l3 = a[7] + a[3];
    return (l0 + l2) + (l1 + l3);
}

// _mm512_reduce_add_ps as GCC 12 defines it: the 256-bit halves added, then as hsum8.
inline float reduce_add16(const float *a) {
    float t[8];
    for (int l = 0; l < 8; ++l) t[l] = a[8 + l] + a[l];
    return hsum8(t);
}

// The horizontal sum of one W-lane register: tinyBLAS's hsum, soft_max's per-group sum.
template <int W> inline float hsum_w(const float *a) { return W == 8 ? hsum8(a) : reduce_add16(a); }

// GGML_F32x16_REDUCE: x0+x2, x1+x3, their sum, then _mm512_reduce_add_ps.
inline float reduce_4x16(const float *x /* [4][16] */) {
    float v[16];
    for (int l = 0; l < 16; ++l) v[l] = (x[l] + x[32 + l]) + (x[16 + l] + x[48 + l]);
    return reduce_add16(v);
}

// GGML_F32x8_REDUCE over ggml_vec_dot_f32's four 8-lane accumulators: x0+x2, x1+x3, then their sum, then the halves
// added and two hadds (lanes 0+1 and 2+3, then those).
inline float reduce_4x8(const float *x /* [4][8] */) {
    float v[8];
    for (int l = 0; l < 8; ++l) v[l] = (x[l] + x[16 + l]) + (x[8 + l] + x[24 + l]);
    const float t0 = v[0] + v[4], t1 = v[1] + v[5], t2 = v[2] + v[6], t3 = v[3] + v[7];
    return (t0 + t1) + (t2 + t3);
}

// ---- exp and SwiGLU ------------------------------------------------------------------------------------------------

constexpr float kShift = 0x1.8p23f, kLog2e = 0x1.715476p+0f, kLn2Hi = 0x1.62e4p-1f, kLn2Lo = 0x1.7f7d1cp-20f;
constexpr float kC1 = 0x1.ffffecp-1f, kC2 = 0x1.fffdb6p-2f, kC3 = 0x1.555e66p-3f, kC4 = 0x1.573e2ep-5f,
                kC5 = 0x1.0e4020p-7f;

template <int W> inline float expf_w(float x) { return W == 8 ? expf_lane(x) : expf_lane512(x); }

__attribute__((target("avx2,fma"))) inline __m256 expf_avx2(__m256 x) {
    const __m256 shift = _mm256_set1_ps(kShift);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(z), 23);
    const __m256 k = _mm256_castsi256_ps(_mm256_add_epi32(e, _mm256_castps_si256(_mm256_set1_ps(1.0f))));
    const __m256 an = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), n);
    const __m256 big = _mm256_cmp_ps(an, _mm256_set1_ps(126.0f), _CMP_GT_OQ);
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kC5), b, _mm256_set1_ps(kC4)), u,
                                      _mm256_fmadd_ps(_mm256_set1_ps(kC3), b, _mm256_set1_ps(kC2)));
    const __m256 j = _mm256_fmadd_ps(hi, u, _mm256_mul_ps(_mm256_set1_ps(kC1), b));
    const __m256 normal = _mm256_fmadd_ps(j, k, k);
    if (!_mm256_movemask_ps(big)) return normal;
    // |n| > 126: 2^n split into two factors so that neither over/underflows on its own; |n| > 192 saturates.
    const __m256i g = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(n, _mm256_setzero_ps(), _CMP_LE_OQ)),
                                       _mm256_set1_epi32(int(0x82000000u)));
    const __m256 s1 = _mm256_castsi256_ps(_mm256_add_epi32(g, _mm256_set1_epi32(0x7f000000)));
    const __m256 s2 = _mm256_castsi256_ps(_mm256_sub_epi32(e, g));
    const __m256 huge = _mm256_cmp_ps(an, _mm256_set1_ps(192.0f), _CMP_GT_OQ);
    const __m256 scaled = _mm256_mul_ps(_mm256_fmadd_ps(s2, j, s2), s1);
    const __m256 mid = _mm256_blendv_ps(normal, scaled, big);
    return _mm256_blendv_ps(mid, _mm256_mul_ps(s1, s1), huge);
}

// The AVX-512 build's expf (8 lanes of it on AVX2): the same reduction, the polynomial's last step fma(C1, b, 1), then
// vscalefps (j * 2^n, rounded once). Where every lane's n is a normal exponent, 2^n is a float and j * 2^n is that
// one rounding; other groups go lane by lane through expf_lane512 (ldexpf rounds once too).
__attribute__((target("avx2,fma"))) inline __m256 expf512_avx2(__m256 x) {
    const __m256 shift = _mm256_set1_ps(kShift);
    const __m256 z = _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), shift);
    const __m256 n = _mm256_sub_ps(z, shift);
    const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(n, _mm256_set1_ps(-126.0f), _CMP_GE_OQ),
                                          _mm256_cmp_ps(n, _mm256_set1_ps(127.0f), _CMP_LE_OQ));
    if (_mm256_movemask_ps(in_range) != 0xff) {
        alignas(32) float v[8];
        _mm256_store_ps(v, x);
        for (float &e : v) e = expf_lane512(e);
        return _mm256_load_ps(v);
    }
    const __m256 b = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x));
    const __m256 u = _mm256_mul_ps(b, b);
    const __m256 hi = _mm256_fmadd_ps(_mm256_fmadd_ps(_mm256_set1_ps(kC5), b, _mm256_set1_ps(kC4)), u,
                                      _mm256_fmadd_ps(_mm256_set1_ps(kC3), b, _mm256_set1_ps(kC2)));
    const __m256 j = _mm256_fmadd_ps(hi, u, _mm256_fmadd_ps(_mm256_set1_ps(kC1), b, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(j, _mm256_castsi256_ps(e));
}

template <int W>
__attribute__((target("avx2,fma"))) void swiglu_avx2(const float *x, const float *g, float *out, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    for (int i = 0; i < n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 nx = _mm256_sub_ps(_mm256_setzero_ps(), v);
        const __m256 e = W == 8 ? expf_avx2(nx) : expf512_avx2(nx);
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(g + i)));
    }
}

// ---- quantized dot products ------------------------------------------------------------------------------------------

// Element e of a 4-bit block's 16 packed bytes: low nibbles are elements 0..15, high nibbles 16..31.
inline int nibble(const uint8_t *qs, int e) { return e < 16 ? (qs[e] & 15) : (qs[e - 16] >> 4); }

float dot_q4_1_scalar(const uint8_t *w, const int8_t *qa, const float *da, const float *sa, int nb) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0}, summs = 0;
    for (int b = 0; b < nb; ++b) {
        const uint8_t *blk = w + int64_t(b) * 20;
        const float d = fp16_to_f32(load_u16(blk)) * da[b];
        summs = std::fma(fp16_to_f32(load_u16(blk + 2)), sa[b], summs);
        const int8_t *a = qa + int64_t(b) * 32;
        for (int l = 0; l < 8; ++l) {
            int s = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) s += nibble(blk + 4, e) * a[e];
            acc[l] = std::fma(d, float(s), acc[l]);
        }
    }
    return hsum8(acc) + summs;
}

float dot_q8_0_scalar(const uint8_t *w, const int8_t *qa, const float *da, int nb) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int b = 0; b < nb; ++b) {
        const uint8_t *blk = w + int64_t(b) * 34;
        const float d = fp16_to_f32(load_u16(blk)) * da[b];
        const int8_t *q = reinterpret_cast<const int8_t *>(blk + 2), *a = qa + int64_t(b) * 32;
        for (int l = 0; l < 8; ++l) {
            int s = 0;
            for (int e = 4 * l; e < 4 * l + 4; ++e) s += int(q[e]) * a[e];
            acc[l] = std::fma(d, float(s), acc[l]);
        }
    }
    return hsum8(acc);
}

__attribute__((target("avx2,fma,f16c"))) inline float hsum8_avx2(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// R weight rows (rb bytes apart) against NT activation rows (tokens tk0..): the int8 products are exact in either
// instruction sequence (maddubs + madd, or VNNI's vpdpbusd), the float work per block and (row, token) is ggml's: one
// fma of (d_w * d_a) into each of 8 lanes, and one scalar fma of m_w * s_a. The macro stamps out the kernel for two
// targets (AVX2, and AVX-512 VL + VNNI with its 32 vector registers), differing only in the int8 dot product.
#define MS_GGML_Q4_1_TILE(NAME, TARGET, INT_DOT)                                                                         \
    template <int R, int NT>                                                                                           \
    __attribute__((target(TARGET))) void NAME(const uint8_t *w, int64_t rb, int nb, const Q8Rows &xq, int tk0,      \
                                              float *y, int64_t ldy) {                                              \
        const int K = xq.K;                                                                                            \
        __m256 acc[R][NT];                                                                                             \
        float summs[R][NT];                                                                                            \
        for (int r = 0; r < R; ++r)                                                                                    \
            for (int t = 0; t < NT; ++t) {                                                                             \
                acc[r][t] = _mm256_setzero_ps();                                                                       \
                summs[r][t] = 0;                                                                                       \
            }                                                                                                          \
        const __m256i low4 = _mm256_set1_epi8(0x0f);                                                                   \
        const __m256i ones = _mm256_set1_epi16(1);                                                                     \
        (void)ones;                                                                                                    \
        for (int b = 0; b < nb; ++b) {                                                                                 \
            __m256i qx[R];                                                                                             \
            float d0[R], m0[R];                                                                                        \
            for (int r = 0; r < R; ++r) {                                                                              \
                const uint8_t *blk = w + r * rb + int64_t(b) * 20;                                                     \
                d0[r] = _cvtsh_ss(load_u16(blk));                                                                      \
                m0[r] = _cvtsh_ss(load_u16(blk + 2));                                                                  \
                const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i *>(blk + 4));                       \
                qx[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(raw, 4), raw), low4);                         \
            }                                                                                                          \
            for (int t = 0; t < NT; ++t) {                                                                             \
                const int64_t i = int64_t(tk0 + t) * (K / 32) + b;                                                     \
                const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(xq.qs + i * 32));              \
                const float d1 = xq.d[i], s1 = xq.s[i];                                                                \
                for (int r = 0; r < R; ++r) {                                                                          \
                    summs[r][t] = std::fma(m0[r], s1, summs[r][t]);                                                    \
                    const __m256i s = INT_DOT(qx[r], a);                                                               \
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d0[r] * d1), _mm256_cvtepi32_ps(s), acc[r][t]);         \
                }                                                                                                      \
            }                                                                                                          \
        }                                                                                                              \
        for (int r = 0; r < R; ++r)                                                                                    \
            for (int t = 0; t < NT; ++t) y[int64_t(tk0 + t) * ldy + r] = hsum8_avx2(acc[r][t]) + summs[r][t];         \
    }

#define MS_GGML_DOT_MADDUBS(x, a) _mm256_madd_epi16(_mm256_maddubs_epi16(x, a), ones)
#define MS_GGML_DOT_VNNI(x, a) _mm256_dpbusd_epi32(_mm256_setzero_si256(), x, a)
MS_GGML_Q4_1_TILE(q4_1_tile_avx2, "avx2,fma,f16c", MS_GGML_DOT_MADDUBS)
MS_GGML_Q4_1_TILE(q4_1_tile_vnni, "avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512vnni", MS_GGML_DOT_VNNI)
#undef MS_GGML_Q4_1_TILE
#undef MS_GGML_DOT_MADDUBS
#undef MS_GGML_DOT_VNNI

// All rows [r0, r1) x tokens [0, n_tok) in tiles of R x NT, smaller tiles at the edges.
template <int R, int NT, class Tile>
void q4_1_tiled(Tile tile_rn, const uint8_t *w, int64_t rb, int nb, const Q8Rows &xq, int n_tok, int r0, int r1,
                float *y, int64_t ldy) {
    int t = 0;
    for (; t + NT <= n_tok; t += NT) {
        int r = r0;
        for (; r + R <= r1; r += R) tile_rn(R, NT, w + r * rb, rb, nb, xq, t, y + r, ldy);
        for (; r < r1; ++r) tile_rn(1, NT, w + r * rb, rb, nb, xq, t, y + r, ldy);
    }
    for (; t < n_tok; ++t) {
        int r = r0;
        for (; r + R <= r1; r += R) tile_rn(R, 1, w + r * rb, rb, nb, xq, t, y + r, ldy);
        for (; r < r1; ++r) tile_rn(1, 1, w + r * rb, rb, nb, xq, t, y + r, ldy);
    }
}

#define MS_GGML_TILE_DISPATCH(KERNEL, R, NT)                                                                           \
    [](int rr, int nn, const uint8_t *w, int64_t rb, int nb, const Q8Rows &xq, int t, float *y, int64_t ldy) {        \
        if (rr == R && nn == NT) KERNEL<R, NT>(w, rb, nb, xq, t, y, ldy);                                             \
        else if (rr == R) KERNEL<R, 1>(w, rb, nb, xq, t, y, ldy);                                                      \
        else if (nn == NT) KERNEL<1, NT>(w, rb, nb, xq, t, y, ldy);                                                    \
        else KERNEL<1, 1>(w, rb, nb, xq, t, y, ldy);                                                                   \
    }

template <int R>
__attribute__((target("avx2,fma,f16c"))) void q8_0_rows_avx2(const uint8_t *w, int64_t rb, int nb, const int8_t *qa,
                                                             const float *da, float *y, int64_t ystride) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    const __m256i ones = _mm256_set1_epi16(1);
    for (int b = 0; b < nb; ++b) {
        const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qa + int64_t(b) * 32));
        const float d1 = da[b];
        for (int r = 0; r < R; ++r) {
            const uint8_t *blk = w + r * rb + int64_t(b) * 34;
            const float d0 = _cvtsh_ss(load_u16(blk));
            const __m256i qx = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(blk + 2));
            // |w| * sign(w) a: an unsigned-by-signed byte product (maddubs) with the exact signed result.
            const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(qx, qx), _mm256_sign_epi8(a, qx)), ones);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d0 * d1), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
    for (int r = 0; r < R; ++r) y[r * ystride] = hsum8_avx2(acc[r]);
}

// ---- attention -------------------------------------------------------------------------------------------------------

// ggml_vec_dot_f32 for n % (4 W) == 0: element i goes to accumulator (i / W) % 4, lane i % W, by fma.
template <int W> __attribute__((always_inline)) inline float dot_f32(const float *x, const float *y, int n) {
    float acc[4 * W];
    for (int l = 0; l < 4 * W; ++l) acc[l] = 0;
    for (int i = 0; i < n; i += 4 * W)
        for (int l = 0; l < 4 * W; ++l) acc[l] = std::fma(x[i + l], y[i + l], acc[l]);
    return W == 8 ? reduce_4x8(acc) : reduce_4x16(acc);
}

struct RowReader {
    const PagedKvView &kv;
    int hd;
    float *tmp;
    const float *row(const void *base, int j) const {
        const int64_t off = int64_t(kv.block_table[j / kv.block_size]) * kv.block_stride + int64_t(j % kv.block_size) * kv.row_stride;
        if (!kv.bf16) return static_cast<const float *>(base) + off;
        const uint16_t *src = static_cast<const uint16_t *>(base) + off;
        for (int d = 0; d < hd; ++d) tmp[d] = bf16_to_f32(src[d]);
        return tmp;
    }
};

struct AttnScratch {
    std::vector<float> p, acc;
    float row[256];
};

template <int W>
__attribute__((always_inline)) inline void attend_impl(const float *q, int n_q_heads, int hd, float scale,
                                                       const PagedKvView &kv, int last, bool batched, float *out,
                                                       void (*exp_group)(const float *, float, float *)) {
    thread_local AttnScratch sc;
    const int n = last + 1, nw = (n + W - 1) / W * W;
    if (sc.p.size() < size_t(nw)) sc.p.resize(size_t(nw));
    const int lanes = batched ? W : 4 * W;
    if (sc.acc.size() < size_t(lanes) * hd) sc.acc.resize(size_t(lanes) * hd);
    float *p = sc.p.data(), *acc = sc.acc.data();
    const RowReader rd{kv, hd, sc.row};
    for (int g = 0; g < n_q_heads; ++g) {
        const float *qg = q + int64_t(g) * hd;
        // kq, then soft_max_ext: x * scale (+ a zero mask), the row max, exp per group of 8 from position 0.
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
            p[j] = dot_f32<W>(rd.row(kv.k, j), qg, hd) * scale;
            mx = std::max(mx, p[j]);
        }
        for (int j = n; j < nw; ++j) p[j] = -INFINITY;  // masked cells: exp gives exactly 0
        double sum = 0;
        for (int j = 0; j < nw; j += W) {
            for (int h = 0; h < W; h += 8) exp_group(p + j + h, mx, p + j + h);
            sum += double(hsum_w<W>(p + j));
        }
        const float inv = float(1.0 / sum);
        for (int j = 0; j < n; ++j) p[j] *= inv;
        // kqv: ggml_vec_dot_f32 (4 x 8 accumulators) for a one-token ubatch, tinyBLAS (one 8-lane accumulator) else.
        std::memset(acc, 0, sizeof(float) * size_t(lanes) * hd);
        for (int j = 0; j < n; ++j) {
            const float *v = rd.row(kv.v, j), pj = p[j];
            float *a = acc + int64_t(j & (lanes - 1)) * hd;
            for (int d = 0; d < hd; ++d) a[d] = std::fma(v[d], pj, a[d]);
        }
        float *o = out + int64_t(g) * hd;
        float col[64];
        for (int d = 0; d < hd; ++d) {
            for (int l = 0; l < lanes; ++l) col[l] = acc[int64_t(l) * hd + d];
            o[d] = batched ? hsum_w<W>(col) : W == 8 ? reduce_4x8(col) : reduce_4x16(col);
        }
    }
}

template <int W> void exp_group_scalar(const float *x, float mx, float *out) {
    for (int l = 0; l < 8; ++l) out[l] = expf_w<W>(x[l] - mx);
}

template <int W> __attribute__((target("avx2,fma"))) void exp_group_avx2(const float *x, float mx, float *out) {
    const __m256 v = _mm256_sub_ps(_mm256_loadu_ps(x), _mm256_set1_ps(mx));
    _mm256_storeu_ps(out, W == 8 ? expf_avx2(v) : expf512_avx2(v));
}

template <int W>
void attend_scalar(const float *q, int n_q_heads, int hd, float scale, const PagedKvView &kv, int last, bool batched,
                   float *out) {
    attend_impl<W>(q, n_q_heads, hd, scale, kv, last, batched, out, exp_group_scalar<W>);
}

template <int W>
__attribute__((target("avx2,fma"))) void attend_generic_avx2(const float *q, int n_q_heads, int hd, float scale,
                                                             const PagedKvView &kv, int last, bool batched, float *out) {
    attend_impl<W>(q, n_q_heads, hd, scale, kv, last, batched, out, exp_group_avx2<W>);
}

// ---- the same attention in AVX2 intrinsics (fp32 cache): the same operations in the same order, vectorised --------

__attribute__((target("avx2,fma"))) inline float hsum8_ps(__m256 v) {
    __m128 r = _mm_add_ps(_mm256_extractf128_ps(v, 1), _mm256_castps256_ps128(v));
    r = _mm_add_ps(r, _mm_movehl_ps(r, r));
    r = _mm_add_ss(r, _mm_movehdup_ps(r));
    return _mm_cvtss_f32(r);
}

// ggml_vec_dot_f32 with W-lane registers: 4 W accumulator lanes in W / 2 ymm, then GGML_F32x8/x16_REDUCE.
template <int W> __attribute__((target("avx2,fma"))) inline float dot_f32_avx2(const float *x, const float *y, int n) {
    constexpr int R = W / 2;
    __m256 a[R];
    for (int i = 0; i < R; ++i) a[i] = _mm256_setzero_ps();
    for (int b = 0; b < n; b += 4 * W)
        for (int i = 0; i < R; ++i) a[i] = _mm256_fmadd_ps(_mm256_loadu_ps(x + b + 8 * i), _mm256_loadu_ps(y + b + 8 * i), a[i]);
    if (W == 8) {
        const __m256 v = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[1], a[3 % R]));
        const __m128 t0 = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        const __m128 t1 = _mm_hadd_ps(t0, t0);
        return _mm_cvtss_f32(_mm_hadd_ps(t1, t1));
    }
    // 16-lane registers x_k = (a[2k], a[2k+1]): v = (x0 + x2) + (x1 + x3), then the halves added, then hsum8.
    const __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[4 % R]), _mm256_add_ps(a[2 % R], a[6 % R]));
    const __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[5 % R]), _mm256_add_ps(a[3 % R], a[7 % R]));
    return hsum8_ps(_mm256_add_ps(hi, lo));
}

// out[d..d+8) from the per-lane partial sums lanes[l * hd + d] (L lanes): tinyBLAS's hsum (L = W) or
// GGML_F32x{8,16}_REDUCE (L = 4 W), one vector of 8 dimensions at a time.
// hsum8 of the 8 lanes x[0..8), for 8 dimensions at once.
__attribute__((target("avx2,fma"))) inline __m256 hsum8_lanes(const __m256 *x) {
    const __m256 l0 = _mm256_add_ps(x[4], x[0]), l1 = _mm256_add_ps(x[5], x[1]), l2 = _mm256_add_ps(x[6], x[2]),
                 l3 = _mm256_add_ps(x[7], x[3]);
    return _mm256_add_ps(_mm256_add_ps(l0, l2), _mm256_add_ps(l1, l3));
}

template <int W>
__attribute__((target("avx2,fma"))) inline __m256 reduce_lanes_avx2(const float *lanes, int hd, int d, bool batched) {
#define at(l) _mm256_loadu_ps(lanes + int64_t(l) * hd + d)
#define hsum8v hsum8_lanes
    __m256 v[16];
    if (batched) {
        if (W == 8) {
            for (int l = 0; l < 8; ++l) v[l] = at(l);
            return hsum8v(v);
        }
        for (int l = 0; l < 8; ++l) v[l] = _mm256_add_ps(at(8 + l), at(l));
        return hsum8v(v);
    }
    if (W == 8) {
        for (int l = 0; l < 8; ++l) v[l] = _mm256_add_ps(_mm256_add_ps(at(l), at(16 + l)), _mm256_add_ps(at(8 + l), at(24 + l)));
        const __m256 t0 = _mm256_add_ps(v[0], v[4]), t1 = _mm256_add_ps(v[1], v[5]), t2 = _mm256_add_ps(v[2], v[6]),
                     t3 = _mm256_add_ps(v[3], v[7]);
        return _mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3));
    }
    for (int l = 0; l < 16; ++l) v[l] = _mm256_add_ps(_mm256_add_ps(at(l), at(32 + l)), _mm256_add_ps(at(16 + l), at(48 + l)));
    for (int l = 0; l < 8; ++l) v[l] = _mm256_add_ps(v[8 + l], v[l]);
    return hsum8v(v);
#undef at
#undef hsum8v
}

template <int W>
__attribute__((target("avx2,fma"))) void attend_avx2(const float *q, int n_q_heads, int hd, float scale,
                                                     const PagedKvView &kv, int last, bool batched, float *out) {
    if (kv.bf16) return attend_generic_avx2<W>(q, n_q_heads, hd, scale, kv, last, batched, out);
    thread_local std::vector<float> p_buf, lane_buf;
    thread_local std::vector<const float *> k_rows, v_rows;
    const int n = last + 1, nw = (n + W - 1) / W * W, L = batched ? W : 4 * W;
    if (p_buf.size() < size_t(nw)) p_buf.resize(size_t(nw));
    if (lane_buf.size() < size_t(L) * hd) lane_buf.resize(size_t(L) * hd);
    if (k_rows.size() < size_t(n)) {
        k_rows.resize(size_t(n));
        v_rows.resize(size_t(n));
    }
    for (int j = 0; j < n; ++j) {
        const int64_t off = int64_t(kv.block_table[j / kv.block_size]) * kv.block_stride + int64_t(j % kv.block_size) * kv.row_stride;
        k_rows[size_t(j)] = static_cast<const float *>(kv.k) + off;
        v_rows[size_t(j)] = static_cast<const float *>(kv.v) + off;
    }
    float *p = p_buf.data(), *lanes = lane_buf.data();
    for (int g = 0; g < n_q_heads; ++g) {
        const float *qg = q + int64_t(g) * hd;
        float mx = -INFINITY;
        for (int j = 0; j < n; ++j) {
            p[j] = dot_f32_avx2<W>(k_rows[size_t(j)], qg, hd) * scale;
            mx = std::max(mx, p[j]);
        }
        for (int j = n; j < nw; ++j) p[j] = -INFINITY;
        double sum = 0;
        for (int j = 0; j < nw; j += W) {
            for (int h = 0; h < W; h += 8) exp_group_avx2<W>(p + j + h, mx, p + j + h);
            sum += double(hsum_w<W>(p + j));
        }
        const float inv = float(1.0 / sum);
        for (int j = 0; j < n; ++j) p[j] *= inv;
        // Lane l's chain: positions l, l + L, l + 2L, ... in order, 32 dimensions (4 ymm) at a time in registers.
        for (int d0 = 0; d0 < hd; d0 += 32)
            for (int l = 0; l < L; ++l) {
                __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
                for (int j = l; j < n; j += L) {
                    const float *v = v_rows[size_t(j)] + d0;
                    const __m256 pj = _mm256_set1_ps(p[j]);
                    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(v), pj, a0);
                    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 8), pj, a1);
                    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 16), pj, a2);
                    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(v + 24), pj, a3);
                }
                float *dst = lanes + int64_t(l) * hd + d0;
                _mm256_storeu_ps(dst, a0);
                _mm256_storeu_ps(dst + 8, a1);
                _mm256_storeu_ps(dst + 16, a2);
                _mm256_storeu_ps(dst + 24, a3);
            }
        float *o = out + int64_t(g) * hd;
        for (int d = 0; d < hd; d += 8) _mm256_storeu_ps(o + d, reduce_lanes_avx2<W>(lanes, hd, d, batched));
    }
}

}  // namespace

float expf_lane(float x) {
    const float z = std::fma(x, kLog2e, kShift);
    const float n = z - kShift;
    const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
    const uint32_t e = bits_of(z) << 23;
    const float k = float_of(e + bits_of(1.0f));
    const float u = b * b;
    const float j = std::fma(std::fma(std::fma(kC5, b, kC4), u, std::fma(kC3, b, kC2)), u, kC1 * b);
    if (!(std::fabs(n) > 126.0f)) return std::fma(j, k, k);
    const uint32_t g = n <= 0.0f ? 0x82000000u : 0u;
    const float s1 = float_of(g + 0x7f000000u), s2 = float_of(e - g);
    if (std::fabs(n) > 192.0f) return s1 * s1;
    return std::fma(s2, j, s2) * s1;
}

float expf_lane512(float x) {
    const float z = std::fma(x, kLog2e, kShift);
    const float n = z - kShift;
    if (std::fabs(n) > 192.0f) return n <= 0.0f ? 0.0f : INFINITY;
    const float b = std::fma(-n, kLn2Lo, std::fma(-n, kLn2Hi, x));
    const float u = b * b;
    const float j = std::fma(std::fma(std::fma(kC5, b, kC4), u, std::fma(kC3, b, kC2)), u, std::fma(kC1, b, 1.0f));
    return std::ldexp(j, int(n));
}

void swiglu_row(Simd s, GgmlBuild build, const float *x, const float *g, float *out, int n) {
    const int w = build == GgmlBuild::Avx2 ? 8 : 16, nw = n / w * w;
    if (s != Simd::Scalar && w == 8) swiglu_avx2<8>(x, g, out, nw);
    else if (s != Simd::Scalar) swiglu_avx2<16>(x, g, out, nw);
    else if (w == 8)
        for (int i = 0; i < nw; ++i) out[i] = x[i] / (1.0f + expf_lane(0.0f - x[i])) * g[i];
    else
        for (int i = 0; i < nw; ++i) out[i] = x[i] / (1.0f + expf_lane512(0.0f - x[i])) * g[i];
    for (int i = nw; i < n; ++i) out[i] = x[i] / (1.0f + std::exp(-x[i])) * g[i];
}

void rope_cache(int pos, float theta_base, int rope_dims, float *cos_sin) {
    const float theta_scale = std::pow(theta_base, -2.0f / float(rope_dims));
    float theta = float(pos);
    for (int i = 0; i < rope_dims; i += 2) {
        sincosf(theta, &cos_sin[i + 1], &cos_sin[i]);
        theta *= theta_scale;
    }
}

void rope_pairs(const float *cos_sin, float *x, int n_heads, int head_dim, int rope_dims) {
    for (int h = 0; h < n_heads; ++h) {
        float *v = x + int64_t(h) * head_dim;
        for (int i = 0; i < rope_dims; i += 2) {
            const float c = cos_sin[i], s = cos_sin[i + 1], a = v[i], b = v[i + 1];
            v[i] = std::fma(a, c, -(b * s));
            v[i + 1] = std::fma(a, s, b * c);
        }
    }
}

void matmul_rows(Simd s, WeightType t, const uint8_t *w, int K, const Q8Rows &xq, int n_tok, int r0, int r1, float *y,
                 int64_t ldy) {
    if ((t != WeightType::Q4_1 && t != WeightType::Q8_0) || K % 32 != 0 || xq.K != K)
        throw Error(MS_ERR_INTERNAL, std::string("ggml_ops::matmul_rows: ") + weight_type_name(t) + " is not emulated");
    const int nb = K / 32;
    const int64_t rb = weight_row_bytes(t, K);
    const bool q41 = t == WeightType::Q4_1;
    if (q41 && s == Simd::Avx512 && quant_vnni_available())
        return q4_1_tiled<4, 4>(MS_GGML_TILE_DISPATCH(q4_1_tile_vnni, 4, 4), w, rb, nb, xq, n_tok, r0, r1, y, ldy);
    if (q41 && s != Simd::Scalar)
        return q4_1_tiled<4, 2>(MS_GGML_TILE_DISPATCH(q4_1_tile_avx2, 4, 2), w, rb, nb, xq, n_tok, r0, r1, y, ldy);
    for (int tk = 0; tk < n_tok; ++tk) {
        const int8_t *qa = xq.qs + int64_t(tk) * K;
        const float *da = xq.d + int64_t(tk) * nb, *sa = xq.s + int64_t(tk) * nb;
        float *yt = y + int64_t(tk) * ldy;
        int r = r0;
        if (s != Simd::Scalar) {
            for (; r + 4 <= r1; r += 4) q8_0_rows_avx2<4>(w + r * rb, rb, nb, qa, da, yt + r, 1);
            for (; r < r1; ++r) q8_0_rows_avx2<1>(w + r * rb, rb, nb, qa, da, yt + r, 1);
        }
        for (; r < r1; ++r) yt[r] = q41 ? dot_q4_1_scalar(w + r * rb, qa, da, sa, nb) : dot_q8_0_scalar(w + r * rb, qa, da, nb);
    }
}

void attend_paged(Simd s, GgmlBuild build, const float *q, int n_q_heads, int head_dim, float scale, const PagedKvView &kv,
                  int last, bool batched, float *out) {
    if (head_dim % head_dim_multiple(build) != 0 || head_dim > 256)
        throw Error(MS_ERR_INTERNAL, "ggml_ops::attend_paged: head_dim " + std::to_string(head_dim) + " is not supported");
    for (int b = 0; b <= last / kv.block_size; ++b)
        if (b >= kv.n_blocks || kv.block_table[b] < 0)
            throw Error(MS_ERR_INTERNAL, "ggml_ops::attend_paged: block " + std::to_string(b) + " of the sequence is missing");
    const bool w8 = build == GgmlBuild::Avx2;
    if (s != Simd::Scalar && w8) attend_avx2<8>(q, n_q_heads, head_dim, scale, kv, last, batched, out);
    else if (s != Simd::Scalar) attend_avx2<16>(q, n_q_heads, head_dim, scale, kv, last, batched, out);
    else if (w8) attend_scalar<8>(q, n_q_heads, head_dim, scale, kv, last, batched, out);
    else attend_scalar<16>(q, n_q_heads, head_dim, scale, kv, last, batched, out);
}

}  // namespace ggml_ops
}  // namespace ms
