#include "cpu/matmul_f16dot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "cpu/aligned_vector.h"
#include "cpu/matmul_mxfp4.h"

#if defined(__x86_64__)
#include "cpu/x86_intrinsics.h"
#include "cpu/avx512_reduce.h"

#include "cpu/prefetch.h"
#endif

namespace ms {

bool f16_dot_supported() {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512fp16") && __builtin_cpu_supports("avx512vbmi");
#else
    return false;
#endif
}

uint16_t f32_to_f16(float f) {
    uint32_t x;
    std::memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, a = x & 0x7fffffffu;
    if (a >= 0x7f800000u) return uint16_t(sign | (a > 0x7f800000u ? 0x7e00u : 0x7c00u));
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // >= 65520 rounds to inf
    if (a < 0x38800000u) {                                   // below 2^-14: an fp16 subnormal (or 0)
        if (a <= 0x33000000u) return uint16_t(sign);         // <= 2^-25: 0 (2^-25 itself ties to even 0)
        const int exp = int(a >> 23);
        const uint32_t m = (a & 0x7fffffu) | 0x800000u;
        const int shift = 126 - exp;  // m * 2^(exp - 150) in units of 2^-24
        uint32_t r = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) ++r;
        return uint16_t(sign | r);
    }
    uint32_t r = (a - 0x38000000u) >> 13;  // exponent rebiased by 112, 10 mantissa bits
    const uint32_t rem = a & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1))) ++r;  // a carry into the exponent is the right result
    return uint16_t(sign | r);
}

float f16_to_f32(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 31, m = h & 0x3ffu;
    float v;
    if (e == 0) v = std::ldexp(float(m), -24);
    else if (e == 31) v = m ? NAN : INFINITY;
    else v = std::ldexp(float(m | 0x400u), int(e) - 25);
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    bits |= sign;
    std::memcpy(&v, &bits, 4);
    return v;
}

namespace {

// ---- what the SIMD and scalar paths share: the scalings and the exact fp16 weights --------------------------------

// 2^e, by its bits where it is a normal fp32 number (the kernels call it per row: no libm call there).
float pow2f(int e) {
    if (e < -126 || e > 127) return std::ldexp(1.0f, e);
    const uint32_t bits = uint32_t(e + 127) << 23;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

// Activation row: the exponent e with max |x| * 2^-e in [16, 32), from the largest |x| as fp32 bits. A row whose
// largest value is below 2^-122 (zero in practice) is left unscaled: its fp16 copy is all zeros. So 2^e and 2^-e
// are normal fp32 numbers (e in [-126, 124]).
int activation_exponent(uint32_t max_abs_bits) { return (max_abs_bits >> 23) >= 5 ? int(max_abs_bits >> 23) - 127 - 4 : 0; }

// Dense bf16 row: with its largest exponent field e_max, fp16 exponent = bf16 exponent - bias, bias = e_max - 19
// (the largest |w| lands in [16, 32)); the row's results are multiplied by 2^(bias - 112).
int dense_bias(int e_max) { return std::max(e_max - 19, 0); }
// One weight: sign | (exponent - bias, the 7 mantissa bits) as fp16 (exact), or a signed 0 below fp16's normal range.
uint16_t dense_w16(uint16_t b, int bias) {
    const uint16_t a = b & 0x7fff;
    const uint16_t mag = a >= ((bias + 1) << 7) ? uint16_t((a - (bias << 7)) << 3) : 0;
    return uint16_t((b & 0x8000) | mag);
}

// MXFP4: fp16 of kE2M1[c] * 2^(2 + d) for block exponent - row's largest block exponent d = 0, -1, ..., -40 (below
// -40 all round to 0), each table twice (vpermw reads 5 index bits; the decode leaves bit 4 undefined).
constexpr int kMinBlockDelta = -40;
struct Mxfp4F16Tables {
    alignas(64) uint16_t t[-kMinBlockDelta + 1][32];
    Mxfp4F16Tables() {
        for (int d = 0; d <= -kMinBlockDelta; ++d)
            for (int c = 0; c < 32; ++c) t[d][c] = f32_to_f16(std::ldexp(kE2M1[c & 15], 2 - d));
    }
};
const Mxfp4F16Tables kTables;
// For block deltas 0..kMaxByteDelta every table entry is 0 in its low byte (E2M1 has one mantissa bit: an fp16 with
// only its top mantissa bit, or a subnormal that is a multiple of 2^-16), so the decode can look up the high bytes
// alone (vpermb, 64 entries: the 16 values four times, index bits 4-5 are don't-cares) and leave the low bytes 0.
// Rows with a block further below their largest take the word tables.
constexpr int kMaxByteDelta = 17;
struct Mxfp4F16HighBytes {
    alignas(64) uint8_t t[kMaxByteDelta + 1][64];
    Mxfp4F16HighBytes() {
        for (int d = 0; d <= kMaxByteDelta; ++d)
            for (int c = 0; c < 64; ++c) {
                const uint16_t h = kTables.t[d][c & 15];
                if (h & 0xff) std::abort();  // not reached: the condition above
                t[d][c] = uint8_t(h >> 8);
            }
    }
};
const Mxfp4F16HighBytes kHighBytes;
static_assert(sizeof(kHighBytes.t[0]) == sizeof(kTables.t[0]), "a block's table offset indexes both tables");
int block_delta(int e, int e_max) { return std::min(e_max - e, -kMinBlockDelta); }  // table index
float mxfp4_row_factor(int e_max) { return pow2f(e_max - 129); }      // 2^(e_max - 127) / 2^2

// ---- scalar references ---------------------------------------------------------------------------------------------

bool row_scaled_scalar(const float *in, int64_t n, uint16_t *out, float *scale) {
    uint32_t mx = 0;
    for (int64_t i = 0; i < n; ++i) {
        uint32_t b;
        std::memcpy(&b, &in[i], 4);
        mx = std::max(mx, b & 0x7fffffffu);
    }
    if (mx >= 0x7f800000u) return false;
    const int e = activation_exponent(mx);
    const float f = std::ldexp(1.0f, -e);
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i] * f);
    *scale = std::ldexp(1.0f, e);
    return true;
}

void dense_scalar(const uint16_t *x, const float *xs, int n_tok, int64_t ldx, const uint16_t *w, const float *bias, int K,
                  int r0, int r1, float *y, int64_t ldy) {
    std::vector<float> wr(K);
    for (int r = r0; r < r1; ++r) {
        const uint16_t *row = w + int64_t(r) * K;
        int e_max = 0;
        for (int k = 0; k < K; ++k) e_max = std::max(e_max, (row[k] & 0x7f80) >> 7);
        const int bias_e = dense_bias(e_max);
        for (int k = 0; k < K; ++k) wr[k] = f16_to_f32(dense_w16(row[k], bias_e));
        const double f = std::ldexp(1.0, bias_e - 112);
        for (int t = 0; t < n_tok; ++t) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(wr[k]) * f16_to_f32(x[t * ldx + k]);
            y[t * ldy + r] = float(s * f * xs[t] + (bias ? bias[r] : 0.0f));
        }
    }
}

void convert_dense_scalar(const uint16_t *w, int K, int r0, int r1, uint16_t *out, int64_t ld, float *factor) {
    for (int r = r0; r < r1; ++r) {
        const uint16_t *row = w + int64_t(r) * K;
        int e_max = 0;
        for (int k = 0; k < K; ++k) e_max = std::max(e_max, (row[k] & 0x7f80) >> 7);
        const int bias_e = dense_bias(e_max);
        uint16_t *o = out + int64_t(r) * ld;
        for (int k = 0; k < K; ++k) o[k] = dense_w16(row[k], bias_e);
        std::fill(o + K, o + ld, uint16_t(0));
        factor[r] = std::ldexp(1.0f, bias_e - 112);
    }
}

void dense_converted_scalar(const uint16_t *x, const float *xs, int n_tok, int64_t ldx, const uint16_t *w16, int64_t ld,
                            const float *factor, const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    for (int r = r0; r < r1; ++r) {
        const uint16_t *row = w16 + int64_t(r) * ld;
        const double f = factor[r];
        for (int t = 0; t < n_tok; ++t) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(f16_to_f32(row[k])) * f16_to_f32(x[t * ldx + k]);
            y[t * ldy + r] = float(s * f * xs[t] + (bias ? bias[r] : 0.0f));
        }
    }
}

void mxfp4_scalar(const uint16_t *x, const float *xs, int n_tok, int64_t ldx, const uint8_t *blocks, const uint8_t *scales,
                  const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    const int nb = K / 32;
    std::vector<float> wr(K);
    for (int r = r0; r < r1; ++r) {
        const uint8_t *sc = scales + int64_t(r) * nb;
        int e_max = 0;
        for (int b = 0; b < nb; ++b) e_max = std::max<int>(e_max, sc[b]);
        for (int b = 0; b < nb; ++b) {
            const uint16_t *table = kTables.t[block_delta(sc[b], e_max)];
            const uint8_t *blk = blocks + (int64_t(r) * nb + b) * 16;
            for (int j = 0; j < 16; ++j) {
                wr[b * 32 + 2 * j] = f16_to_f32(table[blk[j] & 15]);
                wr[b * 32 + 2 * j + 1] = f16_to_f32(table[blk[j] >> 4]);
            }
        }
        const double f = mxfp4_row_factor(e_max);
        for (int t = 0; t < n_tok; ++t) {
            double s = 0;
            for (int k = 0; k < K; ++k) s += double(wr[k]) * f16_to_f32(x[t * ldx + k]);
            y[t * ldy + r] = float(s * f * xs[t] + (bias ? bias[r] : 0.0f));
        }
    }
}

#if defined(__x86_64__)

// ---- AVX512-FP16 ---------------------------------------------------------------------------------------------------

#define MS_F16DOT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512fp16,avx512vbmi")))
// The conversions need no FP16 arithmetic (vcvtps2ph is AVX512F): they run on any AVX-512 CPU.
#define MS_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))

MS_AVX512 bool row_scaled_avx512(const float *in, int64_t n, uint16_t *out, float *scale) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i mx = _mm512_setzero_si512();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_loadu_si512(in + i), abs_mask));
    const __mmask16 tail = __mmask16((1u << (n - i)) - 1);
    if (i < n) mx = _mm512_max_epu32(mx, _mm512_and_si512(_mm512_maskz_loadu_epi32(tail, in + i), abs_mask));
    const uint32_t m = _mm512_reduce_max_epu32(mx);
    if (m >= 0x7f800000u) return false;
    const int e = activation_exponent(m);
    const __m512 f = _mm512_set1_ps(pow2f(-e));
    for (i = 0; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i),
                            _mm512_cvtps_ph(_mm512_mul_ps(_mm512_loadu_ps(in + i), f), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n)
        _mm256_mask_storeu_epi16(out + i, tail,
                                 _mm512_cvtps_ph(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, in + i), f),
                                                 _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    *scale = pow2f(e);
    return true;
}

MS_AVX512 void f32_to_f16_avx512(const float *in, uint16_t *out, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) out[i] = f32_to_f16(in[i]);
}


// k-steps (of 32 elements) an fp16 lane accumulates before it is folded into fp32.
constexpr int kFoldSteps = 32;

// Prefetch of the next row block's weights, spread evenly over the k-steps of the block's token tiles: the lines
// from cur until end, rate / 2^16 lines per k-step (the credit accumulates in due). Issued all at once before the
// tiles (as before), the 32-128 lines filled the core's line fill buffers, and the prefetch instructions themselves
// then waited on DRAM with the tiles' arithmetic queued behind them (perf annotate put ~45 % of mxfp4_avx512's
// samples on that loop); spread over the first tile only, they still stalled it where it was short (dense rows at
// 32 tokens: 4 lines per k-step; ~19 % of tile<4, 5>'s samples).
struct Prefetch {
    const char *cur = nullptr, *end = nullptr;
    int64_t rate = 0, due = 0;
};

// The two 16-lane halves of an fp16 accumulator widened to fp32 and added (lane j + lane j + 16). Through memory:
// vcvtph2ps from a register takes a p5 shuffle besides its p0 uop and the upper half another p5 extract, where the
// FMAs need p0 and p5; from memory it is a p0 uop and a load (the asm keeps GCC from turning it back into the
// register form). ~1 % in the kernel, the results the same.
MS_F16DOT inline __m512 widen_sum(__m512h acc) {
    alignas(64) uint16_t h[32];
    _mm512_store_si512(h, _mm512_castph_si512(acc));
    __m512 lo, hi;
    asm("vcvtph2ps %1, %0" : "=v"(lo) : "m"(*reinterpret_cast<const uint16_t(*)[16]>(h)));
    asm("vcvtph2ps %1, %0" : "=v"(hi) : "m"(*reinterpret_cast<const uint16_t(*)[16]>(h + 16)));
    return _mm512_add_ps(lo, hi);
}

// One MXFP4 block (16 bytes) to 32 fp16 through its table, in the "shuffled" element order below: two vector uops
// (vpmultishiftqb, vpermb) and a broadcast load, where natural order through a word table took three uops of which
// one (vpermw) takes two issue slots of ports 0/5: at ~8 tokens per expert the decode competes with the FMAs for
// those ports (a loop of 16 vfmadd231ph took 1.50x as long with 4 vpermw added, 1.25x with 4 vpermb, vpmultishiftqb,
// vpmaddwd or vpmovzxbd).
// The block broadcast to the four 128-bit lanes puts bytes 0-7 (elements 0-15) in the even qwords and bytes 8-15
// (elements 16-31) in the odd ones; vpmultishiftqb copies into both bytes of each word the 8 bits at its element's
// nibble (bit 4e of its qword; bits 0-3 are the index, the bits above don't-cares of the tables). Word w = 4q + p
// (qword q, position p) so holds element shuffled_element(w) = 16 (q % 2) + 4 (q / 2) + p: whole qwords move, so the
// activations are put in the same order (to_shuffled) and each fp16 accumulator back into natural order before it
// is widened (to_natural) by one vpermq each. Lane sums, their pairing and the fp32 reduction are then exactly
// those of natural order, so the results are bit for bit what the natural-order decode gave (the lanes cannot be
// paired in the shuffled order itself: words w and w + 16 always read the same half of the block).
constexpr int shuffled_element(int w) { return 16 * ((w / 4) % 2) + 4 * (w / 8) + w % 4; }
struct ShuffleConstants {
    alignas(64) uint8_t ctrl[64];                           // vpmultishiftqb bit offsets
    alignas(64) uint64_t to_shuffled[8], to_natural[8];     // vpermq indices
    ShuffleConstants() {
        for (int w = 0; w < 32; ++w) ctrl[2 * w] = ctrl[2 * w + 1] = uint8_t(4 * (shuffled_element(w) % 16));
        for (int q = 0; q < 8; ++q) {
            to_shuffled[q] = uint64_t(shuffled_element(4 * q) / 4);
            to_natural[shuffled_element(4 * q) / 4] = uint64_t(q);
        }
    }
};
const ShuffleConstants kShuffle;
MS_F16DOT inline __m512i shuffle_ctrl() { return _mm512_load_si512(kShuffle.ctrl); }

// One MXFP4 block to 32 fp16 in natural element order through its kTables row: dword j = byte j | byte j << 12, so
// word 2j indexes with the low nibble (bit 4, the high nibble's bit 0, is a don't-care: the table is doubled) and word
// 2j + 1 with the high nibble; the dword is byte j * 0x1001 (the two copies do not overlap), one vpmaddwd. The
// scratch path (calls of more than kFusedMaxTokens tokens) decodes this way: there the shuffled decode measured
// 0.98-1.02x (its separate decode loop waits on the blocks' loads rather than on ports 0/5, and the accumulators'
// vpermq is extra work in the tiles).
MS_F16DOT inline __m512i decode_block_natural(const uint8_t *blk, const uint16_t *table) {
    const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk)));
    return _mm512_permutexvar_epi16(_mm512_madd_epi16(v, _mm512_set1_epi32(0x1001)), _mm512_load_si512(table));
}

// table: the block's row of kHighBytes (kBytes: vpermb, the even bytes zeroed by the mask) or of kTables (rows with a
// block more than kMaxByteDelta below their largest: vpermw, the index in each word's low byte).
template <bool kBytes>
MS_F16DOT inline __m512i decode_block(const uint8_t *blk, const void *table, __m512i ctrl) {
    const __m512i idx = _mm512_multishift_epi64_epi8(ctrl, _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i *>(blk))));
    if constexpr (kBytes) {
        // As asm: GCC wrote the intrinsic as a merge into a zeroed register and then kept some tiles' decoded rows on
        // the stack, FMAs reading them from memory (tile<4, 3>: 0.82x).
        __m512i w;
        asm("vpermb %2, %1, %0%{%3%}%{z%}" : "=v"(w) : "v"(idx), "m"(*static_cast<const uint8_t(*)[64]>(table)),
            "Yk"(__mmask64(0xAAAAAAAAAAAAAAAAull)));
        return w;
    } else {
        return _mm512_permutexvar_epi16(idx, _mm512_load_si512(table));
    }
}

// Where a tile's weight vectors come from: fp16 rows already converted into scratch (dense weights, and MXFP4
// weights decoded ahead of several token tiles) ...
struct F16Rows {
    const uint16_t *w;
    int64_t ldw;
    MS_F16DOT __m512h load(int i, int k) const { return _mm512_castsi512_ph(_mm512_loadu_si512(w + i * ldw + k)); }
    MS_F16DOT __m512h load_tail(int i, int k, __mmask32 m) const {
        return _mm512_castsi512_ph(_mm512_maskz_loadu_epi16(m, w + i * ldw + k));
    }
};
// ... or MXFP4 blocks decoded inside the tile's k loop, where one token tile covers all the call's tokens (up to 12):
// each row is still decoded once, and the decode's store to scratch, its reload and its own loop are gone.
// kBytes: every row's blocks within kMaxByteDelta of its largest.
template <int R, bool kBytes>
struct Mxfp4Rows {
    const uint8_t *blk[R];  // row i's blocks
    const int32_t *tof[R];  // row i's per-block table offsets (bytes into kTables.t and kHighBytes.t)
    __m512i ctrl;           // shuffle_ctrl()
    MS_F16DOT __m512h load(int i, int k) const {
        const char *tables = kBytes ? reinterpret_cast<const char *>(kHighBytes.t) : reinterpret_cast<const char *>(kTables.t);
        return _mm512_castsi512_ph(decode_block<kBytes>(blk[i] + k / 2, tables + tof[i][k / 32], ctrl));
    }
};

// R weight rows (fp16, scaled; row i at w + i * ldw, its factor wf[i]) x NT tokens (fp16 rows, factors xf[t]).
// acc[i][t] lane j sums the products of elements k = j mod 32 in fp16 for up to kFoldSteps steps; then the two
// halves are widened and added into part[i][t] (fp32). y points at column r of token 0; bias at bias[r] (or null).
// kShuffled: weights and activations in decode_block's shuffled element order; each accumulator is put back into
// natural order before it is widened (one vpermq per accumulator per fold).
template <int R, int NT, class Src, bool kPackedX = false, bool kShuffled = false>
MS_F16DOT void tile(const Src &ws, const float *wf, const uint16_t *x, int64_t ldx, const float *xf,
                    int K, const float *bias, float *y, int64_t ldy, Prefetch &pf_state) {
    Prefetch pf = pf_state;
    __m512 part[R][NT];
    for (int k = 0; k < K;) {
        const int kend = std::min(K, k + 32 * kFoldSteps);
        __m512h acc[R][NT];
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
            for (int t = 0; t < NT; ++t) acc[i][t] = _mm512_setzero_ph();
        for (; k + 32 <= kend; k += 32) {
            for (pf.due += pf.rate; pf.due >= 65536 && pf.cur < pf.end; pf.due -= 65536, pf.cur += 64)
                prefetch_line(pf.cur);
            __m512h wv[R];
#pragma GCC unroll 4
            for (int i = 0; i < R; ++i) wv[i] = ws.load(i, k);
#pragma GCC unroll 12
            for (int t = 0; t < NT; ++t) {
                __m512h xv = _mm512_castsi512_ph(_mm512_loadu_si512(kPackedX ? x + k * NT + t * 32 : x + t * ldx + k));
                // One load per token for the R rows: without this GCC folds it into each of the R FMAs (R loads).
                asm("" : "+v"(xv));
#pragma GCC unroll 4
                for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ph(wv[i], xv, acc[i][t]);
            }
        }
        if constexpr (kPackedX) {
            // MXFP4 only: K is a multiple of 32 (checked at load), there is no tail.
        } else if (k < kend) {  // zero-filled tail (dense K % 32): adds exact zeros
            const __mmask32 m = __mmask32((1ull << (kend - k)) - 1);
            __m512h wv[R];
            for (int i = 0; i < R; ++i) wv[i] = ws.load_tail(i, k, m);
            for (int t = 0; t < NT; ++t) {
                const __m512h xv = _mm512_castsi512_ph(_mm512_maskz_loadu_epi16(m, x + t * ldx + k));
                for (int i = 0; i < R; ++i) acc[i][t] = _mm512_fmadd_ph(wv[i], xv, acc[i][t]);
            }
            k = kend;
        }
        const bool first = kend <= 32 * kFoldSteps;
        [[maybe_unused]] __m512i to_natural;
        if constexpr (kShuffled) to_natural = _mm512_load_si512(kShuffle.to_natural);
#pragma GCC unroll 4
        for (int i = 0; i < R; ++i)
#pragma GCC unroll 12
            for (int t = 0; t < NT; ++t) {
                if constexpr (kShuffled)
                    acc[i][t] = _mm512_castsi512_ph(_mm512_permutexvar_epi64(to_natural, _mm512_castph_si512(acc[i][t])));
                const __m512 f = widen_sum(acc[i][t]);
                part[i][t] = first ? f : _mm512_add_ps(part[i][t], f);
            }
    }
    pf_state = pf;
    const __m512 z = _mm512_setzero_ps();
    const __mmask8 rows = __mmask8((1u << R) - 1);
    const __m128 b4 = bias ? _mm_maskz_loadu_ps(rows, bias) : _mm_setzero_ps();
    const __m128 w4 = _mm_maskz_loadu_ps(rows, wf);
#pragma GCC unroll 12
    for (int t = 0; t < NT; ++t) {
        const __m128 s = hsum4_avx512(part[0][t], R > 1 ? part[R > 1 ? 1 : 0][t] : z, R > 2 ? part[R > 2 ? 2 : 0][t] : z,
                               R > 3 ? part[R > 3 ? 3 : 0][t] : z);
        const __m128 v = _mm_add_ps(_mm_mul_ps(_mm_mul_ps(s, w4), _mm_set1_ps(xf[t])), b4);
        _mm_mask_storeu_ps(y + t * ldy, rows, v);
    }
}

using TileFn = void (*)(const F16Rows &, const float *, const uint16_t *, int64_t, const float *, int,
                        const float *, float *, int64_t, Prefetch &);
template <int R>
constexpr TileFn kTilesOf[6] = {tile<R, 1, F16Rows>, tile<R, 2, F16Rows>, tile<R, 3, F16Rows>, tile<R, 4, F16Rows>,
                                tile<R, 5, F16Rows>, tile<R, 6, F16Rows>};
// kTiles[R - 1][NT - 1] = tile<R, NT>
constexpr const TileFn *kTiles[4] = {kTilesOf<1>, kTilesOf<2>, kTilesOf<3>, kTilesOf<4>};

// Rows per block of converted (or decoded) weights: groups of 4 rows (one tile's rows) that each token tile runs
// in turn, so a token tile's activations are read from L2 once per block rather than once per 4 rows. At 32 tokens
// of K = 1024 the activations (64 KB) do not fit in L1 (48 KB) and every tile streamed its 6 rows from L2; the 8
// weight rows (16 KB) and one tile's activations (12 KB) do fit.
constexpr int kBlockRows = 8;

// n_rows (<= kBlockRows) rows for all n_tok tokens, in token tiles of at most 6 as even as possible (8 tokens: 4 + 4),
// each tile over the block's row groups. 6 tokens x 4 rows: 24 accumulators + 4 weight vectors + 1 activation vector
// of the 32 registers.
MS_F16DOT void rows_of(int n_rows, const uint16_t *w, int64_t ldw, const float *wf, const uint16_t *x, const float *xf,
                       int n_tok, int64_t ldx, int K, const float *bias, float *y, int64_t ldy, Prefetch pf) {
    const int tiles = (n_tok + 5) / 6, groups = (n_rows + 3) / 4;
    if (pf.cur < pf.end) {
        // Over all tile runs but the last (one: over it): the lines have landed by the time the next block's
        // decode reads them, which requests issued in the last steps had not.
        const int64_t lines = (pf.end - pf.cur + 63) / 64,
                      steps = int64_t(std::max(1, tiles * groups - 1)) * std::max(1, K / 32);
        pf.rate = (lines * 65536 + steps - 1) / steps;
    }
    for (int i = 0, t = 0; i < tiles; ++i) {
        const int nt = (n_tok - t) / (tiles - i);
        for (int g = 0; g < groups; ++g) {
            const int r = 4 * g, R = std::min(4, n_rows - r);
            kTiles[R - 1][nt - 1](F16Rows{w + r * ldw, ldw}, wf + r, x + t * ldx, ldx, xf + t, K, bias ? bias + r : nullptr,
                                  y + t * ldy + r, ldy, pf);
        }
        t += nt;
    }
}

// The next row block's `bytes` at p (rows_of sets how many lines per k-step).
Prefetch next_block(const void *p, int64_t bytes) {
    Prefetch pf;
    if (bytes <= 0) return pf;
    pf.cur = static_cast<const char *>(p);
    pf.end = pf.cur + bytes;
    return pf;
}

// Scratch row stride: K rounded up to 32 plus one cache line, so rows a power of two apart do not share L1 sets.
int64_t scratch_stride(int K) { return int64_t(K + 31) / 32 * 32 + 32; }

// dense_w16 on 32 lanes: keep_from = (bias + 1) << 7, rebias = bias << 7.
MS_F16DOT inline __m512i dense_w16_x32(__m512i v, __m512i keep_from, __m512i rebias) {
    const __m512i a = _mm512_and_si512(v, _mm512_set1_epi16(0x7fff));
    const __m512i mag = _mm512_slli_epi16(_mm512_maskz_sub_epi16(_mm512_cmpge_epu16_mask(a, keep_from), a, rebias), 3);
    return _mm512_ternarylogic_epi32(mag, v, _mm512_set1_epi16(int16_t(0x8000)), 0xF8);  // mag | (v & sign)
}

// One bf16 row to scaled fp16 (dense_w16 on 32 lanes: integer exponent rebias, no rounding needed); returns the
// row's factor 2^(bias - 112).
MS_F16DOT float convert_dense_row(const uint16_t *w, int K, uint16_t *out) {
    const __m512i exp_mask = _mm512_set1_epi16(0x7f80);
    __m512i mx = _mm512_setzero_si512();
    int k = 0;
    for (; k + 32 <= K; k += 32) mx = _mm512_max_epu16(mx, _mm512_and_si512(_mm512_loadu_si512(w + k), exp_mask));
    const __mmask32 tail = __mmask32((1ull << (K - k)) - 1);
    if (k < K) mx = _mm512_max_epu16(mx, _mm512_and_si512(_mm512_maskz_loadu_epi16(tail, w + k), exp_mask));
    const __m256i m16 = _mm256_max_epu16(_mm512_castsi512_si256(mx), _mm512_extracti64x4_epi64(mx, 1));
    const int e_max = _mm512_reduce_max_epu32(_mm512_cvtepu16_epi32(m16)) >> 7;
    const int bias = dense_bias(e_max);
    const __m512i keep_from = _mm512_set1_epi16(int16_t((bias + 1) << 7)), rebias = _mm512_set1_epi16(int16_t(bias << 7));
    for (k = 0; k + 32 <= K; k += 32) _mm512_storeu_si512(out + k, dense_w16_x32(_mm512_loadu_si512(w + k), keep_from, rebias));
    if (k < K) _mm512_mask_storeu_epi16(out + k, tail, dense_w16_x32(_mm512_maskz_loadu_epi16(tail, w + k), keep_from, rebias));
    return pow2f(bias - 112);
}

// The weights of a row block are converted once (L1-resident scratch) and reused by every token tile; the next
// block's rows stream in from DRAM meanwhile.
MS_F16DOT void dense_avx512(const uint16_t *x, const float *xf, int n_tok, int64_t ldx, const uint16_t *w,
                            const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local AlignedVector<uint16_t> scratch;
    const int64_t lds = scratch_stride(K);
    constexpr int B = kBlockRows;
    if (scratch.size() < size_t(B * lds)) scratch.resize(size_t(B * lds));
    uint16_t *sw = scratch.data();
    for (int r = r0; r < r1; r += B) {
        const int n = std::min(B, r1 - r);
        float wf[B];
        std::fill(wf, wf + B, 1.0f);
        for (int i = 0; i < n; ++i) wf[i] = convert_dense_row(w + int64_t(r + i) * K, K, sw + i * lds);
        rows_of(n, sw, lds, wf, x, xf, n_tok, ldx, K, bias ? bias + r : nullptr, y + r, ldy,
                next_block(w + int64_t(r + B) * K, r + B < r1 ? int64_t(std::min(B, r1 - r - B)) * K * 2 : 0));
    }
}

MS_F16DOT void convert_dense_avx512(const uint16_t *w, int K, int r0, int r1, uint16_t *out, int64_t ld, float *factor) {
    for (int r = r0; r < r1; ++r) {
        uint16_t *o = out + int64_t(r) * ld;
        factor[r] = convert_dense_row(w + int64_t(r) * K, K, o);
        std::fill(o + K, o + ld, uint16_t(0));
    }
}

// Rows converted ahead of time (f16_dense_convert): the tiles read them where they are, the next block prefetched
// while the current one runs, as dense_avx512 does with the bf16 rows.
MS_F16DOT void dense_converted_avx512(const uint16_t *x, const float *xf, int n_tok, int64_t ldx, const uint16_t *w16,
                                      int64_t ld, const float *factor, const float *bias, int K, int r0, int r1, float *y,
                                      int64_t ldy) {
    constexpr int B = kBlockRows;
    for (int r = r0; r < r1; r += B) {
        const int n = std::min(B, r1 - r);
        rows_of(n, w16 + int64_t(r) * ld, ld, factor + r, x, xf, n_tok, ldx, K, bias ? bias + r : nullptr, y + r, ldy,
                next_block(w16 + int64_t(r + B) * ld, r + B < r1 ? int64_t(std::min(B, r1 - r - B)) * ld * 2 : 0));
    }
}

// Tokens up to which an MXFP4 call decodes inside its one token tile (Mxfp4Rows: fused_rows(n) rows x n tokens, at
// most 24 accumulators); beyond, the blocks are decoded into scratch and shared by several tiles. With the two-uop
// decode and the vector row tables (kernel A/B, one thread, weights from DRAM): one tile of 4 rows x 1-6 tokens runs
// 1.15-1.37x session 9's, 3 rows x 7-8 tokens 1.13-1.19x two tiles on scratch (with session 9's decode it had
// measured 0.97-1.08x), 2 rows x 9-12 tokens 1.01-1.05x (each activation load feeds only two FMAs there).
constexpr int kFusedMaxTokens = 12;
constexpr int fused_rows(int n_tok) { return n_tok <= 6 ? 4 : n_tok <= 8 ? 3 : 2; }

// A tile shape the in-tile path has no kernel for (more than 24 accumulators, or more than kFusedMaxTokens tokens):
// only a caller that ignored fused_rows / kFusedMaxTokens gets here, and skipping the tile would leave y unwritten.
[[noreturn]] void no_fused_tile(int rows, int n_tok) {
    std::fprintf(stderr, "matmul_f16dot: no in-tile MXFP4 kernel for %d rows x %d tokens\n", rows, n_tok);
    std::abort();
}

#define MS_F16_TILE_CASE(NT)                                                                                            \
    case NT:                                                                                                          \
        if constexpr (R * NT <= 24) tile<R, NT, Mxfp4Rows<R, kBytes>, true, true>(ws, wf, x, ldx, xf, K, bias, y, ldy, pf); \
        else no_fused_tile(R, NT);                                                                                    \
        break;
template <int R, bool kBytes>
MS_F16DOT void fused_tile(const Mxfp4Rows<R, kBytes> &ws, int n_tok, const float *wf, const uint16_t *x, int64_t ldx,
                          const float *xf, int K, const float *bias, float *y, int64_t ldy, Prefetch &pf) {
    switch (n_tok) {
        MS_F16_TILE_CASE(1) MS_F16_TILE_CASE(2) MS_F16_TILE_CASE(3) MS_F16_TILE_CASE(4) MS_F16_TILE_CASE(5) MS_F16_TILE_CASE(6)
        MS_F16_TILE_CASE(7) MS_F16_TILE_CASE(8) MS_F16_TILE_CASE(9) MS_F16_TILE_CASE(10) MS_F16_TILE_CASE(11) MS_F16_TILE_CASE(12)
        default: no_fused_tile(R, n_tok);
    }
}
#undef MS_F16_TILE_CASE

template <int R, bool kBytes>
MS_F16DOT void fused_rows_of(const uint8_t *blocks, const int32_t *tof, int nb, int n_tok, const float *wf, const uint16_t *x,
                             int64_t ldx, const float *xf, int K, const float *bias, float *y, int64_t ldy, Prefetch &pf) {
    Mxfp4Rows<R, kBytes> ws;
    ws.ctrl = shuffle_ctrl();
    for (int i = 0; i < R; ++i) {
        ws.blk[i] = blocks + int64_t(i) * nb * 16;
        ws.tof[i] = tof + i * nb;
    }
    fused_tile<R, kBytes>(ws, n_tok, wf, x, ldx, xf, K, bias, y, ldy, pf);
}
template <int R>
MS_F16DOT void fused_rows_of(bool bytes, const uint8_t *blocks, const int32_t *tof, int nb, int n_tok, const float *wf,
                             const uint16_t *x, int64_t ldx, const float *xf, int K, const float *bias, float *y, int64_t ldy,
                             Prefetch &pf) {
    if (bytes) fused_rows_of<R, true>(blocks, tof, nb, n_tok, wf, x, ldx, xf, K, bias, y, ldy, pf);
    else fused_rows_of<R, false>(blocks, tof, nb, n_tok, wf, x, ldx, xf, K, bias, y, ldy, pf);
}

// Entries mxfp4_row_tables may write past a row's nb offsets.
constexpr int kRowTablesPad = 16;
// Scales b .. b + 15 (those below nb; m says which) as dwords, 0 past nb.
MS_F16DOT inline __m512i scales16(const uint8_t *sc, int nb, int b, __mmask16 &m) {
    m = nb - b >= 16 ? __mmask16(0xffff) : __mmask16((1u << (nb - b)) - 1);
    return _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, sc + b));
}
// The largest block exponent of an MXFP4 row (returned) and each block's table offset (bytes into kTables.t and
// kHighBytes.t), in a separate vector pass, 16 blocks at a time: computed inside the decode loop they were ~6 scalar
// instructions per 32-element block against its 5 vector ones; as plain loops, GCC's code for them (ymm, remainder
// handling) took ~3-4 % of a batch-32 step's samples, ~1/8 of an in-tile-decode call's time at 4 tokens.
// *bytes: whether every block is within kMaxByteDelta of the largest (the high-byte tables apply).
MS_F16DOT inline int mxfp4_row_tables(const uint8_t *sc, int nb, int32_t *tof, bool *bytes = nullptr) {
    __m512i mx = _mm512_setzero_si512(), mn = _mm512_set1_epi32(255);
    __mmask16 m;
    for (int b = 0; b < nb; b += 16) {
        const __m512i v = scales16(sc, nb, b, m);
        mx = _mm512_max_epi32(mx, v);  // lanes past nb are 0
        mn = _mm512_mask_min_epi32(mn, m, mn, v);
    }
    const int e_max = _mm512_reduce_max_epi32(mx);
    const __m512i e = _mm512_set1_epi32(e_max), lim = _mm512_set1_epi32(-kMinBlockDelta);
    static_assert(sizeof(kTables.t[0]) == 64, "table offset = delta << 6");
    // Whole vectors, also past nb (tof has room: kRowTablesPad): the tiles load single offsets right after, and a load
    // from a masked store's bytes is not forwarded from it (perf put the most samples of the in-tile path's setup
    // right after the masked store; unmasked: 1.00-1.09x on the in-tile calls).
    for (int b = 0; b < nb; b += 16) {
        const __m512i v = scales16(sc, nb, b, m);
        _mm512_storeu_si512(tof + b, _mm512_slli_epi32(_mm512_min_epi32(_mm512_sub_epi32(e, v), lim), 6));
    }
    if (bytes) *bytes = e_max - _mm512_reduce_min_epi32(mn) <= kMaxByteDelta;
    return e_max;
}

MS_F16DOT void mxfp4_fused(const uint16_t *x, const float *xf, int n_tok, int64_t ldx, const uint8_t *blocks,
                           const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    thread_local std::vector<int32_t> table_of;  // [row of the block][block]
    thread_local AlignedVector<uint16_t> packed;
    const int nb = K / 32, R = fused_rows(n_tok);
    if (table_of.size() < size_t(4 * nb + kRowTablesPad)) table_of.resize(size_t(4 * nb + kRowTablesPad));
    int32_t *tof = table_of.data();
    // The activations k-step by k-step, [K / 32][n_tok][32], each k-step in the decode's shuffled order: the tile then
    // reads token t at one pointer + t * 64 bytes, where n_tok rows of a runtime stride took n_tok address registers
    // and spilled.
    if (packed.size() < size_t(n_tok) * K) packed.resize(size_t(n_tok) * K);
    uint16_t *xp = packed.data();
    const __m512i to_shuffled = _mm512_load_si512(kShuffle.to_shuffled);
    for (int b = 0; b < nb; ++b)
        for (int t = 0; t < n_tok; ++t)
            _mm512_store_si512(xp + (b * n_tok + t) * 32, _mm512_permutexvar_epi64(to_shuffled, _mm512_loadu_si512(x + t * ldx + b * 32)));
    x = xp;
    for (int r = r0; r < r1; r += R) {
        const int n = std::min(R, r1 - r);
        float wf[4] = {1, 1, 1, 1};
        bool bytes = true;
        for (int i = 0; i < n; ++i) {
            bool row_bytes;
            wf[i] = mxfp4_row_factor(mxfp4_row_tables(scales + int64_t(r + i) * nb, nb, tof + i * nb, &row_bytes));
            bytes = bytes && row_bytes;
        }
        Prefetch pf;
        if (r + R < r1) {  // the next rows' blocks, spread over this tile's k-steps
            const int m = std::min(R, r1 - r - R);
            prefetch_bytes(scales + int64_t(r + R) * nb, int64_t(m) * nb);
            pf = next_block(blocks + int64_t(r + R) * nb * 16, int64_t(m) * nb * 16);
            pf.rate = ((pf.end - pf.cur + 63) / 64 * 65536 + nb - 1) / nb;
        }
        const uint8_t *blk = blocks + int64_t(r) * nb * 16;
        const float *b = bias ? bias + r : nullptr;
        switch (n) {
            case 4: fused_rows_of<4>(bytes, blk, tof, nb, n_tok, wf, x, ldx, xf, K, b, y + r, ldy, pf); break;
            case 3: fused_rows_of<3>(bytes, blk, tof, nb, n_tok, wf, x, ldx, xf, K, b, y + r, ldy, pf); break;
            case 2: fused_rows_of<2>(bytes, blk, tof, nb, n_tok, wf, x, ldx, xf, K, b, y + r, ldy, pf); break;
            default: fused_rows_of<1>(bytes, blk, tof, nb, n_tok, wf, x, ldx, xf, K, b, y + r, ldy, pf); break;
        }
    }
}

MS_F16DOT void mxfp4_avx512(const uint16_t *x, const float *xf, int n_tok, int64_t ldx, const uint8_t *blocks,
                            const uint8_t *scales, const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    if (n_tok <= kFusedMaxTokens) return mxfp4_fused(x, xf, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
    thread_local AlignedVector<uint16_t> scratch;
    thread_local std::vector<int32_t> table_of;  // per block of a row: its table's byte offset in kTables.t
    const int64_t lds = scratch_stride(K);
    constexpr int B = 4;  // kBlockRows (8) measured 2-4 % slower here
    if (scratch.size() < size_t(B * lds)) scratch.resize(size_t(B * lds));
    uint16_t *sw = scratch.data();
    const int nb = K / 32;
    if (table_of.size() < size_t(nb + kRowTablesPad)) table_of.resize(size_t(nb + kRowTablesPad));
    int32_t *tof = table_of.data();
    const char *tables = reinterpret_cast<const char *>(kTables.t);
    for (int r = r0; r < r1; r += B) {
        const int n = std::min(B, r1 - r);
        float wf[B];
        std::fill(wf, wf + B, 1.0f);
        for (int i = 0; i < n; ++i) {
            const uint8_t *blk = blocks + int64_t(r + i) * nb * 16;
            const int e_max = mxfp4_row_tables(scales + int64_t(r + i) * nb, nb, tof);
            for (int b = 0; b < nb; ++b) {
                const uint16_t *table = reinterpret_cast<const uint16_t *>(tables + tof[b]);
                _mm512_store_si512(sw + i * lds + b * 32, decode_block_natural(blk + b * 16, table));
            }
            wf[i] = mxfp4_row_factor(e_max);
        }
        Prefetch pf;
        if (r + B < r1) {
            const int m = std::min(B, r1 - r - B);
            prefetch_bytes(scales + int64_t(r + B) * nb, int64_t(m) * nb);  // a line or a few
            pf = next_block(blocks + int64_t(r + B) * nb * 16, int64_t(m) * nb * 16);
        }
        rows_of(n, sw, lds, wf, x, xf, n_tok, ldx, K, bias ? bias + r : nullptr, y + r, ldy, pf);
    }
}

bool use_fast(Simd s) {
    static const bool ok = f16_dot_supported();
    return s == Simd::Avx512 && ok;
}

#endif

}  // namespace

void f32_to_f16_n(Simd s, const float *in, uint16_t *out, int64_t n) {
#if defined(__x86_64__)
    if (s == Simd::Avx512 && simd_supported(Simd::Avx512)) return f32_to_f16_avx512(in, out, n);
#endif
    (void)s;
    for (int64_t i = 0; i < n; ++i) out[i] = f32_to_f16(in[i]);
}

bool f32_to_f16_row_scaled(Simd s, const float *in, int64_t n, uint16_t *out, float *scale) {
#if defined(__x86_64__)
    if (s == Simd::Avx512 && simd_supported(Simd::Avx512)) return row_scaled_avx512(in, n, out, scale);
#endif
    (void)s;
    return row_scaled_scalar(in, n, out, scale);
}

void matmul_bf16_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx, const uint16_t *w,
                           const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
#if defined(__x86_64__)
    if (use_fast(s)) return dense_avx512(x, x_scale, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
#endif
    (void)s;
    dense_scalar(x, x_scale, n_tok, ldx, w, bias, K, r0, r1, y, ldy);
}

int64_t f16_dense_stride(int K) { return scratch_stride(K); }

void f16_dense_convert(Simd s, const uint16_t *w, int K, int r0, int r1, uint16_t *out, float *factor) {
    const int64_t ld = f16_dense_stride(K);
#if defined(__x86_64__)
    if (use_fast(s)) return convert_dense_avx512(w, K, r0, r1, out, ld, factor);
#endif
    (void)s;
    convert_dense_scalar(w, K, r0, r1, out, ld, factor);
}

void matmul_f16w_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx, const uint16_t *w16,
                           const float *factor, const float *bias, int K, int r0, int r1, float *y, int64_t ldy) {
    const int64_t ld = f16_dense_stride(K);
#if defined(__x86_64__)
    if (use_fast(s)) return dense_converted_avx512(x, x_scale, n_tok, ldx, w16, ld, factor, bias, K, r0, r1, y, ldy);
#endif
    (void)s;
    dense_converted_scalar(x, x_scale, n_tok, ldx, w16, ld, factor, bias, K, r0, r1, y, ldy);
}

void matmul_mxfp4_f16x_rows(Simd s, const uint16_t *x, const float *x_scale, int n_tok, int64_t ldx,
                            const uint8_t *blocks, const uint8_t *scales, const float *bias, int K, int r0, int r1,
                            float *y, int64_t ldy) {
#if defined(__x86_64__)
    if (use_fast(s)) return mxfp4_avx512(x, x_scale, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
#endif
    (void)s;
    mxfp4_scalar(x, x_scale, n_tok, ldx, blocks, scales, bias, K, r0, r1, y, ldy);
}

}  // namespace ms
